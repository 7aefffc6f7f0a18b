"""Request ids: one id per user-visible action, carried through every RPC it causes.

A CSI call, a FUSE operation or a CLI command picks an id (``begin``); the RPC client sends
it ahead of each request it makes as a ``rpc.context`` notification (requests stay plain
msgpack-RPC, so foreign clients and the spliced chunk bytes are untouched); the server sets
it for the handler's task, and every log line written meanwhile carries ``rid=``. One slow
``kubectl apply`` can then be followed through the CSI driver, the meta role and the chunk
servers with one grep.

The id lives in a ContextVar: trio tasks and the threads trio starts inherit it, so it
follows the work without being passed around.
"""

from __future__ import annotations

import os
import secrets
from contextvars import ContextVar

CONTEXT_METHOD = "rpc.context"
ENV = "SHOALFS_REQUEST_ID"  # a process started for a request (a mount) begins with its id
MAX_LENGTH = 64

_current: ContextVar[str | None] = ContextVar("shoalfs_request_id", default=None)


def current() -> str | None:
    return _current.get()


def set_current(rid: str | None) -> None:
    """For the task (or thread) running now and what it starts from here on."""
    _current.set(rid)


def new(prefix: str) -> str:
    return f"{prefix}-{secrets.token_hex(6)}"


def begin(prefix: str) -> str:
    """A fresh id for a new action, made current."""
    rid = new(prefix)
    _current.set(rid)
    return rid


def valid(value: object) -> bool:
    return isinstance(value, str) and 0 < len(value) <= MAX_LENGTH and value.isprintable()


def from_environment() -> None:
    """A process started on behalf of a request carries its id while it starts up."""
    value = os.environ.pop(ENV, None)
    if valid(value):
        _current.set(value)
