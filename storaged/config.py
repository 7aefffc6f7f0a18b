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
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any

from .rpc.address import parse_address
from .rpc.server import Limits

_UNITS = {"": 1, "k": 10**3, "m": 10**6, "g": 10**9, "t": 10**12,
          "ki": 2**10, "mi": 2**20, "gi": 2**30, "ti": 2**40}
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
    roles: list[str] = field(default_factory=lambda: ["chunk"])
    listen: list[str] = field(default_factory=lambda: ["tcp://127.0.0.1:7700"])
    advertise: str = ""
    data_dir: str = ""
    meta_db: str = ""
    meta: str = ""
    heartbeat_interval: float = 2.0
    heartbeat_timeout: float = 10.0
    session_timeout: float = 60.0
    gc_interval: float = 3600.0
    gc_grace: float = 3600.0
    repair_interval: float = 600.0
    repair_down_grace: float = 900.0
    repair_rate: int = 50 * 2**20
    rebalance: bool = True
    rebalance_min_age: float = 600.0
    scrub_rate: int = 20 * 2**20
    scrub_interval: float = 86400.0
    secret_file: str = ""
    capacity: int | None = None
    reserve: int = 64 * 2**20
    direct_io: bool = True
    zone: str = ""
    address_file: str = ""
    max_frame: int = Limits.max_frame
    max_in_flight: int = Limits.max_in_flight
    max_connections: int = Limits.max_connections
    max_request_memory: int = Limits.max_request_memory
    max_unauthenticated: int = Limits.max_unauthenticated
    max_unauthenticated_per_peer: int = Limits.max_unauthenticated_per_peer
    handshake_timeout: float = Limits.handshake_timeout
    log_level: str = "info"
    log_format: str = "text"
    metrics_listen: str = ""   # HOST:PORT of /metrics, /healthz, /readyz ("" = off)

    def limits(self) -> Limits:
        return Limits(max_frame=self.max_frame, max_in_flight=self.max_in_flight,
                      max_connections=self.max_connections,
                      max_request_memory=self.max_request_memory,
                      max_unauthenticated=self.max_unauthenticated,
                      max_unauthenticated_per_peer=self.max_unauthenticated_per_peer,
                      handshake_timeout=self.handshake_timeout)

    def apply(self, values: dict[str, Any], origin: str) -> None:
        """Overlay ``values`` (from a file or flags; None means 'not given')."""
        known = {f.name for f in fields(self)}
        for raw_key, value in values.items():
            key = raw_key.replace("-", "_")
            if key not in known:
                raise ConfigError(f"{origin}: unknown setting {raw_key!r}")
            if value is None:
                continue
            if key in ("capacity", "reserve", "max_frame", "max_request_memory", "repair_rate",
                       "scrub_rate"):
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
            raise ConfigError("secret_file is required (--secret-file); "
                              "create one with: shoal secret generate FILE")
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
            raise ConfigError("heartbeat_interval and heartbeat_timeout must be positive "
                              "(the timeout should be several intervals of the chunk servers)")
        if self.gc_interval < 0 or self.gc_grace < 10:
            raise ConfigError("gc_interval must be >= 0 (0 turns periodic collection off) and "
                              "gc_grace at least 10 seconds")
        if self.rebalance_min_age < 1:
            raise ConfigError("rebalance_min_age must be at least 1 second (a copy younger "
                              "than it may be a write in progress)")
        if self.repair_interval < 0 or self.repair_down_grace < 0 or self.repair_rate < 0:
            raise ConfigError("repair_interval, repair_down_grace and repair_rate must be >= 0")
        if self.scrub_rate < 0 or self.scrub_interval < 0:
            raise ConfigError("scrub_rate (0 turns scrubbing off) and scrub_interval must be >= 0")
        if self.log_format not in ("text", "json"):
            raise ConfigError("log_format must be text or json")
        if self.max_frame < 1 << 20:
            raise ConfigError("max_frame must be at least 1MiB")
        if (self.max_connections < 1 or self.max_unauthenticated < 1
                or not 1 <= self.max_unauthenticated_per_peer <= self.max_unauthenticated
                or self.handshake_timeout <= 0):
            raise ConfigError("max_connections and max_unauthenticated must be at least 1, "
                              "max_unauthenticated_per_peer 1..max_unauthenticated, and "
                              "handshake_timeout positive")
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
