"""One line per event on stderr, as ``key=value`` pairs or JSON, for people and for grep.

A line written while a request is being handled carries its id (``rid``, see
storaged/rpc/requestid.py), in whichever process the request reached.
"""

from __future__ import annotations

import json
import logging
import sys
import time

from .rpc import requestid

LEVELS = ("debug", "info", "warning", "error")  # --log-level, everywhere
FORMATS = ("text", "json")  # --log-format


class KeyValueFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        ts = time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(record.created))
        line = (
            f"ts={ts}.{int(record.msecs):03d}Z level={record.levelname.lower()} "
            f"logger={record.name} msg={json.dumps(record.getMessage())}"
        )
        rid = requestid.current()
        if rid is not None:
            line += f" rid={rid}"
        if record.exc_info:
            line += f" exc={json.dumps(self.formatException(record.exc_info))}"
        return line


class JsonFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        doc = {
            "ts": record.created,
            "level": record.levelname.lower(),
            "logger": record.name,
            "msg": record.getMessage(),
        }
        rid = requestid.current()
        if rid is not None:
            doc["rid"] = rid
        if record.exc_info:
            doc["exc"] = self.formatException(record.exc_info)
        return json.dumps(doc)


def setup_logging(level: str = "info", fmt: str = "text") -> None:
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(JsonFormatter() if fmt == "json" else KeyValueFormatter())
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level.upper())
