"""Errors that cross the wire: a stable code string and a human message.

On the wire an error is the map ``{"code": CODE, "message": TEXT}`` in the response's error
slot. Each code has one exception class here, so a caller writes ``except NotFound`` and
never compares strings. Codes are part of the protocol: add new ones, never rename.
"""

from __future__ import annotations

import errno
import os
from typing import Any


class RpcError(Exception):
    """Base of every error a call can raise; ``code`` is what travels on the wire."""

    code = "INTERNAL"

    def __init__(self, message: str = "") -> None:
        super().__init__(message or self.code)
        self.message = message or self.code

    def to_wire(self) -> dict[str, str]:
        return {"code": self.code, "message": self.message}

    def __str__(self) -> str:
        return f"{self.code}: {self.message}"


class Internal(RpcError):
    """The server failed in a way that is its own fault; details are in its log."""

    code = "INTERNAL"


class InvalidRequest(RpcError):
    """The message was msgpack but not a valid msgpack-RPC request."""

    code = "INVALID_REQUEST"


class MethodNotFound(RpcError):
    code = "METHOD_NOT_FOUND"


class InvalidArgument(RpcError):
    """Wrong number or types of parameters, or a value out of range."""

    code = "INVALID_ARGUMENT"


class Unauthenticated(RpcError):
    """A method other than the handshake was called before authenticating."""

    code = "UNAUTHENTICATED"


class AuthFailed(RpcError):
    """The proof did not match: the peer does not hold the cluster secret."""

    code = "AUTH_FAILED"


class NotFound(RpcError):
    code = "NOT_FOUND"


class HashMismatch(RpcError):
    """``put`` data whose hash is not the chunk id it was sent under; nothing was stored."""

    code = "HASH_MISMATCH"


class Corrupted(RpcError):
    """The stored copy no longer matches its hash; it was quarantined, read another replica."""

    code = "CORRUPTED"


class NoSpace(RpcError):
    """The disk or the configured capacity is full; reads still work."""

    code = "NO_SPACE"


class Busy(RpcError):
    """A limit (requests in flight, connections) was reached; retry later or elsewhere."""

    code = "BUSY"


class Unavailable(RpcError):
    """Raised locally: the server could not be reached or the connection was lost."""

    code = "UNAVAILABLE"


class NotDelivered(Unavailable):
    """Raised locally: the call never reached the server whole (no connection, or the
    connection broke before the request was sent), so the server did not act on it and
    sending it again is safe for any method. A plain Unavailable after sending says
    nothing about whether the server acted."""


class Timeout(Unavailable):
    """Raised locally: no answer within the call's timeout."""

    code = "TIMEOUT"


class FsError(RpcError):
    """A filesystem error with a POSIX errno; the wire code is the errno's name ("ENOENT").

    The FUSE layer hands ``errno`` straight to the kernel, so the application sees exactly
    what the meta role decided.
    """

    def __init__(self, errno_value: int, message: str = "") -> None:
        self.errno = errno_value
        self.code = errno.errorcode.get(errno_value, "EIO")
        super().__init__(message or os.strerror(errno_value))


class RemoteError(RpcError):
    """An error whose code this client does not know (a newer server, a foreign peer)."""

    def __init__(self, code: str, message: str) -> None:
        super().__init__(message)
        self.code = code


_BY_CODE: dict[str, type[RpcError]] = {
    cls.code: cls
    for cls in (
        Internal,
        InvalidRequest,
        MethodNotFound,
        InvalidArgument,
        Unauthenticated,
        AuthFailed,
        NotFound,
        HashMismatch,
        Corrupted,
        NoSpace,
        Busy,
        Unavailable,
        Timeout,
    )
}


_ERRNO_BY_NAME = {name: value for value, name in errno.errorcode.items()}


def error_from_wire(error: Any) -> RpcError:
    """Rebuild the matching exception from a response's error slot (any peer's shape)."""
    if isinstance(error, dict) and isinstance(error.get("code"), str):
        code, message = error["code"], str(error.get("message", ""))
        cls = _BY_CODE.get(code)
        if cls is not None:
            return cls(message)
        if code in _ERRNO_BY_NAME:
            return FsError(_ERRNO_BY_NAME[code], message)
        return RemoteError(code, message)
    return RemoteError("REMOTE", repr(error))
