"""Checking what the CO sends: names, capabilities, StorageClass parameters, capacity, paging.

Everything here raises CsiError with the spec's code and a message that says what to fix.
"""

from __future__ import annotations

import base64
import binascii
import re

from blake3 import blake3

from protos import csi_pb2 as pb
from storaged.config import ConfigError, parse_size
from storaged.volumerules import DEFAULT_CHUNK_SIZE, MAX_CHUNK, MIN_CHUNK, is_valid_name

from .errors import Code, CsiError, invalid

Mode = pb.VolumeCapability.AccessMode.Mode
SUPPORTED_MODES = {
    Mode.SINGLE_NODE_WRITER,
    Mode.SINGLE_NODE_READER_ONLY,
    Mode.MULTI_NODE_READER_ONLY,
    Mode.MULTI_NODE_SINGLE_WRITER,
    Mode.MULTI_NODE_MULTI_WRITER,
    Mode.SINGLE_NODE_SINGLE_WRITER,
    Mode.SINGLE_NODE_MULTI_WRITER,
}
READ_ONLY_MODES = {Mode.SINGLE_NODE_READER_ONLY, Mode.MULTI_NODE_READER_ONLY}
# Modes that allow one target per node only (the spec's table for a second NodePublish).
ONE_TARGET_MODES = {
    Mode.SINGLE_NODE_WRITER,
    Mode.SINGLE_NODE_READER_ONLY,
    Mode.SINGLE_NODE_SINGLE_WRITER,
}
FS_TYPES = {"", "shoalfs", "fuse.shoalfs"}
# Mount flags that mean something on a bind mount of a FUSE filesystem; anything else is
# refused rather than silently ignored.
MOUNT_FLAGS = {"ro", "rw", "noatime", "relatime", "nodiratime", "nosuid", "nodev", "noexec"}

DEFAULT_CAPACITY = 1 << 30
DEFAULT_REPLICAS = 2
# Keys Kubernetes' sidecars add to parameters on their own (--extra-create-metadata).
_PASSED_THROUGH = "csi.storage.k8s.io/"
MUTABLE_KEYS = {"replicas"}
CREATE_KEYS = {"replicas", "chunkSize"}

_BANNED = re.compile("[\u0000-\u0008\u000b\u000c\u000e-\u001f\u007f-\u009f]")


def require(value: str, field: str) -> str:
    if not value:
        raise invalid(f"{field} is required")
    return value


def storage_name(co_name: str, field: str = "name") -> str:
    """The volume (or snapshot) name in shoalfs for the CO's name: the name itself when it
    is one of ours (pvc-..., snapshot-...), else a stable hash of it. Same input, same id,
    which is what makes CreateVolume and CreateSnapshot idempotent."""
    require(co_name, field)
    if _BANNED.search(co_name):
        raise invalid(f"{field} contains a control character")
    if is_valid_name(co_name):
        return co_name
    return "csi-" + blake3(co_name.encode()).hexdigest()[:40]


def check_capabilities(caps: list[pb.VolumeCapability], field: str = "volume_capabilities") -> None:
    if not caps:
        raise invalid(f"{field} is required")
    for cap in caps:
        check_capability(cap)


def check_capability(cap: pb.VolumeCapability, field: str = "volume_capability") -> None:
    reason = unsupported(cap, field)
    if reason:
        raise invalid(reason)


def unsupported(cap: pb.VolumeCapability, field: str = "volume_capability") -> str:
    """Why this capability cannot be served, or '' when it can."""
    kind = cap.WhichOneof("access_type")
    if kind is None:
        return f"{field}: access_type (mount or block) is required"
    if kind == "block":
        return "block access is not supported: shoalfs volumes are filesystems (use mount)"
    if cap.mount.fs_type not in FS_TYPES:
        return f"fs_type {cap.mount.fs_type!r} is not supported: shoalfs mounts its own filesystem"
    bad = [f for f in cap.mount.mount_flags if f not in MOUNT_FLAGS]
    if bad:
        return f"mount flags {bad} are not supported; allowed: {sorted(MOUNT_FLAGS)}"
    if not cap.HasField("access_mode") or cap.access_mode.mode == Mode.UNKNOWN:
        return f"{field}: access_mode is required"
    if cap.access_mode.mode not in SUPPORTED_MODES:
        return f"access mode {cap.access_mode.mode} is not supported"
    return ""


def capacity(rng: pb.CapacityRange | None, default: int = DEFAULT_CAPACITY) -> int:
    """Pick a capacity inside the range: the required size, else the default capped by the
    limit. A range that cannot be met is OUT_OF_RANGE; a malformed one INVALID_ARGUMENT."""
    if rng is None:
        return default
    required, limit = rng.required_bytes, rng.limit_bytes
    if required < 0 or limit < 0:
        raise invalid("capacity_range values must not be negative")
    if required and limit and required > limit:
        raise CsiError(Code.OUT_OF_RANGE, f"required_bytes {required} > limit_bytes {limit}")
    if required:
        return required
    return min(default, limit) if limit else default


def fits(size: int, rng: pb.CapacityRange | None) -> bool:
    if rng is None:
        return True
    return size >= rng.required_bytes and (not rng.limit_bytes or size <= rng.limit_bytes)


def volume_parameters(parameters: dict[str, str], mutable: dict[str, str]) -> tuple[int, int]:
    """(replicas, chunk size) from StorageClass parameters; mutable ones take precedence."""
    unknown = [k for k in parameters if k not in CREATE_KEYS and not k.startswith(_PASSED_THROUGH)]
    if unknown:
        raise invalid(f"unknown parameters {unknown}; shoalfs knows {sorted(CREATE_KEYS)}")
    bad_mutable = [k for k in mutable if k not in MUTABLE_KEYS]
    if bad_mutable:
        raise invalid(
            f"parameters {bad_mutable} cannot be mutable; mutable: {sorted(MUTABLE_KEYS)}"
        )
    merged = {**parameters, **mutable}
    return (
        replicas(merged.get("replicas", str(DEFAULT_REPLICAS))),
        chunk_size(merged.get("chunkSize", str(DEFAULT_CHUNK_SIZE))),
    )


def replicas(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise invalid(f"replicas {text!r} is not a whole number") from None
    if not 1 <= value <= 16:
        raise invalid(f"replicas {value} is out of range 1..16")
    return value


def chunk_size(text: str) -> int:
    try:
        value = parse_size(text)
    except ConfigError as exc:
        raise invalid(f"chunkSize: {exc}") from None
    if not MIN_CHUNK <= value <= MAX_CHUNK or value & (value - 1):
        raise invalid(f"chunkSize {text!r} must be a power of two from 64KiB to 64MiB")
    return value


def modify_parameters(mutable: dict[str, str]) -> int:
    """The new replica count from ControllerModifyVolume's mutable_parameters."""
    if not mutable:
        raise invalid("mutable_parameters is required")
    bad = [k for k in mutable if k not in MUTABLE_KEYS]
    if bad:
        raise invalid(f"parameters {bad} cannot be modified; mutable: {sorted(MUTABLE_KEYS)}")
    return replicas(mutable["replicas"])


def page(names: list[str], max_entries: int, token: str) -> tuple[list[str], str]:
    """One page of sorted ``names`` and the token of the next. Tokens name the first entry
    of the next page, so entries added or removed between calls never shift a page."""
    if max_entries < 0:
        raise invalid("max_entries must not be negative")
    start = 0
    if token:
        first = _decode_token(token)
        start = next((i for i, n in enumerate(names) if n >= first), len(names))
    end = len(names) if not max_entries else min(len(names), start + max_entries)
    next_token = _encode_token(names[end]) if end < len(names) else ""
    return names[start:end], next_token


def _encode_token(name: str) -> str:
    return "n1." + base64.urlsafe_b64encode(name.encode()).decode()


def _decode_token(token: str) -> str:
    prefix, _, body = token.partition(".")
    try:
        if prefix != "n1" or not body:
            raise ValueError
        return base64.urlsafe_b64decode(body.encode()).decode()
    except (ValueError, binascii.Error, UnicodeDecodeError):
        raise CsiError(
            Code.ABORTED,
            f"starting_token {token!r} is not one this plugin issued; list again from the start",
        ) from None
