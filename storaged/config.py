"""storaged settings: defaults, overlaid by a TOML config file, overlaid by flags.

The config file holds the same names as the flags (with ``_`` or ``-``)::

    [storaged]
    listen = ["tcp://0.0.0.0:7700", "unix:///run/shoalfs/chunk.sock"]
    data_dir = "/var/lib/shoalfs/chunk"
    secret_file = "/etc/shoalfs/secret"
    capacity = "500GiB"
"""

from __future__ import annotations

import re
import tomllib
from dataclasses import dataclass, fields
from pathlib import Path
from typing import Any

from .logs import FORMATS, LEVELS
from .rpc.address import parse_address
from .rpc.server import Limits
from .settings import setting

_UNITS = {
    "": 1,
    "k": 10**3,
    "m": 10**6,
    "g": 10**9,
    "t": 10**12,
    "ki": 2**10,
    "mi": 2**20,
    "gi": 2**30,
    "ti": 2**40,
}
_SIZE_RE = re.compile(r"\s*(\d+(?:\.\d+)?)\s*([kmgt]i?)?b?\s*", re.IGNORECASE)


class ConfigError(ValueError):
    """A setting is missing or wrong; the message says which and how to fix it."""


def parse_size(value: str | int) -> int:
    """``"10GiB"``, ``"512M"``, ``4096`` → bytes (K/M/G/T are powers of 10, Ki/Mi/Gi/Ti of 2)."""
    if isinstance(value, int) and not isinstance(value, bool):
        return value
    match = _SIZE_RE.fullmatch(str(value))
    if not match:
        raise ConfigError(f"not a size: {value!r} (examples: 4096, 512MiB, 10G)")
    number, unit = match.groups()
    return int(float(number) * _UNITS[(unit or "").lower()])


ROLES = ("chunk", "meta")


@dataclass
class StoragedConfig:
    """Every storaged setting, declared once: its default, its flag's help, how it is read.
    The TOML [storaged] table uses the same names."""

    roles: list[str] = setting(  # noqa: RUF009 (setting() is a dataclasses.field)
        help="chunk, meta, or chunk,meta", metavar="ROLES", kind="comma", factory=lambda: ["chunk"]
    )
    listen: list[str] = setting(  # noqa: RUF009 (setting() is a dataclasses.field)
        help="tcp://HOST:PORT or unix:///PATH; repeat for several (default {default}; port 0 "
        "lets the kernel pick)",
        metavar="ADDR",
        kind="append",
        factory=lambda: ["tcp://127.0.0.1:7700"],
    )
    advertise: str = setting(
        "",
        "the address clients should use for this chunk server",
        metavar="ADDR",
        default_text="the first --listen address as bound",
    )
    data_dir: str = setting(
        "", "where chunks (and, by default, the meta database) are stored (required)", metavar="DIR"
    )
    meta_db: str = setting(
        "", "the meta role's SQLite database", metavar="FILE", default_text="DATA_DIR/meta.db"
    )
    meta: str = setting(
        "", "the meta role's address: a chunk server sends it heartbeats", metavar="ADDR"
    )
    heartbeat_interval: float = setting(
        2.0, "seconds between heartbeats to the meta role", metavar="SECONDS", kind="seconds"
    )
    heartbeat_timeout: float = setting(
        10.0,
        "meta role: a chunk server silent this long is down",
        metavar="SECONDS",
        kind="seconds",
    )
    session_timeout: float = setting(
        60.0,
        "meta role: a mount silent this long has crashed; its open files are released",
        metavar="SECONDS",
        kind="seconds",
    )
    gc_interval: float = setting(
        3600.0,
        "meta role: seconds between garbage collection passes (default {default}; 0: "
        "only when 'shoal gc' asks)",
        metavar="SECONDS",
        kind="seconds",
    )
    gc_grace: float = setting(
        3600.0,
        "meta role: unreferenced chunks younger than this are kept (default "
        "{default}, at least 10)",
        metavar="SECONDS",
        kind="seconds",
    )
    repair_interval: float = setting(
        600.0,
        "meta role: seconds between repair passes (default {default}; 0: only when "
        "'shoal repair --now' asks)",
        metavar="SECONDS",
        kind="seconds",
    )
    repair_down_grace: float = setting(
        900.0,
        "meta role: a server down this long no longer counts as holding its copies; "
        "repair copies them elsewhere",
        metavar="SECONDS",
        kind="seconds",
    )
    repair_rate: int = setting(
        50 * 2**20,
        "meta role: most bytes per second repair copies (default {default}; 0: no limit)",
        metavar="SIZE",
        kind="size",
    )
    rebalance: bool = setting(
        True,
        "meta role: let repair passes also move chunks to where placement puts them "
        "now, e.g. onto a new server",
        kind="bool",
    )
    rebalance_min_age: float = setting(
        600.0,
        "meta role: rebalancing never removes a copy younger than this",
        metavar="SECONDS",
        kind="seconds",
    )
    scrub_rate: int = setting(
        20 * 2**20,
        "chunk role: bytes per second the scrubber re-reads and verifies "
        "(default {default}; 0 turns scrubbing off)",
        metavar="SIZE",
        kind="size",
    )
    scrub_interval: float = setting(
        86400.0, "chunk role: pause between full scrub passes", metavar="SECONDS", kind="seconds"
    )
    sync_interval: float = setting(
        0.25,
        "chunk role: small chunks put buffered (by a close) reach the disk within this, "
        "together (one syncfs); an fsync or unmount asks for them at once "
        "(default {default})",
        metavar="SECONDS",
        kind="seconds",
    )
    secret_file: str = setting(
        "", "the cluster secret, mode 600 (required; see 'shoal secret generate')", metavar="FILE"
    )
    capacity: int | None = setting(
        None,
        "most bytes chunks may use, e.g. 500GiB",
        metavar="SIZE",
        kind="size",
        default_text="the disk's size",
    )
    reserve: int = setting(
        64 * 2**20, "disk space always left free for the system", metavar="SIZE", kind="size"
    )
    direct_io: bool = setting(
        True,
        "chunk role: write chunks with O_DIRECT, past the page cache (default {default}; "
        "falls back by itself where the filesystem refuses it)",
        kind="bool",
    )
    zone: str = setting("", "failure domain (rack, host) this server is in")
    address_file: str = setting(
        "", "write the bound addresses here once listening (JSON)", metavar="FILE"
    )
    max_frame: int = setting(
        Limits.max_frame, "largest message accepted", metavar="SIZE", kind="size"
    )
    max_in_flight: int = setting(
        Limits.max_in_flight,
        "requests in flight per connection before BUSY",
        metavar="N",
        kind="count",
    )
    max_connections: int = setting(
        Limits.max_connections,
        "authenticated connections served at once",
        metavar="N",
        kind="count",
    )
    max_request_memory: int = setting(
        Limits.max_request_memory,
        "bytes all requests in progress may hold together; past "
        "it the server stops reading until some finish",
        metavar="SIZE",
        kind="size",
    )
    max_unauthenticated: int = setting(
        Limits.max_unauthenticated,
        "connections not yet authenticated (TLS handshake "
        "included) held at once; past it new ones are closed at once",
        metavar="N",
        kind="count",
    )
    max_unauthenticated_per_peer: int = setting(
        Limits.max_unauthenticated_per_peer,
        "of those, from one TCP peer address",
        metavar="N",
        kind="count",
    )
    handshake_timeout: float = setting(
        Limits.handshake_timeout,
        "time a connection has to authenticate",
        metavar="SECONDS",
        kind="seconds",
    )
    log_level: str = setting(
        "info",
        "debug adds a line per RPC request; requests slower than 2 s are logged at info",
        choices=LEVELS,
    )
    log_format: str = setting(
        "text", "text is key=value per line, json one object per line", choices=FORMATS
    )
    metrics_listen: str = setting(
        "",
        "serve Prometheus /metrics and the /healthz and /readyz probes over HTTP here, "
        "e.g. 0.0.0.0:9180 (docs/operations.md)",
        metavar="HOST:PORT",
        default_text="off",
    )  # "" = off

    def limits(self) -> Limits:
        return Limits(
            max_frame=self.max_frame,
            max_in_flight=self.max_in_flight,
            max_connections=self.max_connections,
            max_request_memory=self.max_request_memory,
            max_unauthenticated=self.max_unauthenticated,
            max_unauthenticated_per_peer=self.max_unauthenticated_per_peer,
            handshake_timeout=self.handshake_timeout,
        )

    def apply(self, values: dict[str, Any], origin: str) -> None:
        """Overlay ``values`` (from a file or flags; None means 'not given')."""
        known = {f.name for f in fields(self)}
        for raw_key, value in values.items():
            key = raw_key.replace("-", "_")
            if key not in known:
                raise ConfigError(f"{origin}: unknown setting {raw_key!r}")
            if value is None:
                continue
            if key in (
                "capacity",
                "reserve",
                "max_frame",
                "max_request_memory",
                "repair_rate",
                "scrub_rate",
            ):
                value = parse_size(value)
            if key == "listen" and isinstance(value, str):
                value = [value]
            if key == "roles" and isinstance(value, str):
                value = [r.strip() for r in value.split(",") if r.strip()]
            setattr(self, key, value)

    def validate(self) -> None:
        if not self.data_dir:
            raise ConfigError("data_dir is required (--data-dir or data_dir in the config file)")
        if not self.secret_file:
            raise ConfigError(
                "secret_file is required (--secret-file); "
                "create one with: shoal secret generate FILE"
            )
        if not self.listen:
            raise ConfigError("listen needs at least one address")
        for address in self.listen:
            try:
                parse_address(address)
            except ValueError as exc:
                raise ConfigError(str(exc)) from None
        if not self.roles or set(self.roles) - set(ROLES):
            raise ConfigError(f"roles must be a non-empty subset of {', '.join(ROLES)}")
        for address in filter(None, (self.meta, self.advertise)):
            try:
                parse_address(address)
            except ValueError as exc:
                raise ConfigError(str(exc)) from None
        if self.heartbeat_interval <= 0 or self.heartbeat_timeout <= 0:
            raise ConfigError(
                "heartbeat_interval and heartbeat_timeout must be positive "
                "(the timeout should be several intervals of the chunk servers)"
            )
        if self.gc_interval < 0 or self.gc_grace < 10:
            raise ConfigError(
                "gc_interval must be >= 0 (0 turns periodic collection off) and "
                "gc_grace at least 10 seconds"
            )
        if self.rebalance_min_age < 1:
            raise ConfigError(
                "rebalance_min_age must be at least 1 second (a copy younger "
                "than it may be a write in progress)"
            )
        if self.repair_interval < 0 or self.repair_down_grace < 0 or self.repair_rate < 0:
            raise ConfigError("repair_interval, repair_down_grace and repair_rate must be >= 0")
        if self.scrub_rate < 0 or self.scrub_interval < 0:
            raise ConfigError("scrub_rate (0 turns scrubbing off) and scrub_interval must be >= 0")
        if not 0 < self.sync_interval <= 60:
            raise ConfigError("sync_interval must be above 0 and at most 60 seconds")
        if self.log_format not in FORMATS:
            raise ConfigError("log_format must be text or json")
        if self.max_frame < 1 << 20:
            raise ConfigError("max_frame must be at least 1MiB")
        if (
            self.max_connections < 1
            or self.max_unauthenticated < 1
            or not 1 <= self.max_unauthenticated_per_peer <= self.max_unauthenticated
            or self.handshake_timeout <= 0
        ):
            raise ConfigError(
                "max_connections and max_unauthenticated must be at least 1, "
                "max_unauthenticated_per_peer 1..max_unauthenticated, and "
                "handshake_timeout positive"
            )
        if self.metrics_listen:
            self.metrics_address()

    def metrics_address(self) -> tuple[str, int]:
        from .metrics import parse_listen

        try:
            return parse_listen(self.metrics_listen)
        except ValueError as exc:
            raise ConfigError(f"metrics_listen: {exc}") from None


def load_config(path: str | None, flags: dict[str, Any]) -> StoragedConfig:
    config = StoragedConfig()
    if path:
        try:
            document = tomllib.loads(Path(path).read_text())
        except FileNotFoundError:
            raise ConfigError(f"config file {path} does not exist") from None
        except tomllib.TOMLDecodeError as exc:
            raise ConfigError(f"config file {path}: {exc}") from None
        section = document.get("storaged", document)
        if not isinstance(section, dict):
            raise ConfigError(f"config file {path}: [storaged] must be a table")
        config.apply(section, path)
    config.apply(flags, "flags")
    config.validate()
    return config
