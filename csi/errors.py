"""CSI errors: the spec's gRPC status codes, and the one place exceptions become them.

Every servicer method is wrapped by ``rpc_method``: a CsiError aborts the call with its code,
an error from the meta role is translated (ENOENT -> NOT_FOUND, ...), and anything else is
logged with its traceback and reported as INTERNAL, so a bug never kills a gRPC thread
silently and the CO always gets a status it can act on.
"""

from __future__ import annotations

import errno
import functools
import logging
import time
from collections.abc import Callable
from typing import Any, TypeVar

import grpc

from storaged.rpc import FsError, RpcError, Unavailable, requestid

from .observe import observe

log = logging.getLogger("csi")

Code = grpc.StatusCode


class CsiError(Exception):
    def __init__(self, code: grpc.StatusCode, message: str) -> None:
        super().__init__(message)
        self.code = code
        self.message = message


def invalid(message: str) -> CsiError:
    return CsiError(Code.INVALID_ARGUMENT, message)


def not_found(message: str) -> CsiError:
    return CsiError(Code.NOT_FOUND, message)


_ERRNO_CODES = {
    errno.ENOENT: Code.NOT_FOUND,
    errno.EEXIST: Code.ALREADY_EXISTS,
    errno.EINVAL: Code.INVALID_ARGUMENT,
    errno.ERANGE: Code.OUT_OF_RANGE,
    errno.ENOSPC: Code.RESOURCE_EXHAUSTED,
}


def from_rpc_error(exc: RpcError) -> CsiError:
    if isinstance(exc, FsError):
        return CsiError(_ERRNO_CODES.get(exc.errno, Code.INTERNAL), exc.message)
    if isinstance(exc, Unavailable):
        return CsiError(Code.UNAVAILABLE, f"the meta role does not answer: {exc.message}")
    return CsiError(Code.INTERNAL, f"meta role error {exc.code}: {exc.message}")


F = TypeVar("F", bound=Callable[..., Any])

# Calls that change nothing and that kubelet and the sidecars repeat every few seconds or
# minutes: a line each at info would bury the ones that matter.
ASKED_OFTEN = frozenset(
    {
        "Probe",
        "GetPluginInfo",
        "GetPluginCapabilities",
        "ControllerGetCapabilities",
        "NodeGetCapabilities",
        "NodeGetInfo",
        "NodeGetVolumeStats",
        "GetCapacity",
        "ListVolumes",
        "ListSnapshots",
        "ControllerGetVolume",
        "ValidateVolumeCapabilities",
    }
)


def rpc_method(fn: F) -> F:
    """Wrap a servicer method (self, request, context) with error translation and a log line."""

    @functools.wraps(fn)
    def wrapper(self: Any, request: Any, context: grpc.ServicerContext) -> Any:
        start = time.monotonic()
        name = fn.__name__
        requestid.begin("csi")  # carried into every RPC this call makes, and their logs
        code = Code.OK
        try:
            response = fn(self, request, context)
        except CsiError as exc:
            code, message = exc.code, exc.message
        except RpcError as exc:
            err = from_rpc_error(exc)
            code, message = err.code, err.message
        except Exception as exc:
            log.exception("%s failed unexpectedly", name)
            code, message = Code.INTERNAL, f"{type(exc).__name__}: {exc}"
        seconds = time.monotonic() - start
        observe(name, code.name, seconds)
        if code is not Code.OK:
            log.info("%s failed: %s %s (%.0f ms)", name, code.name, message, seconds * 1e3)
            context.abort(code, message)
        log.log(
            logging.DEBUG if name in ASKED_OFTEN else logging.INFO,
            "%s ok (%.0f ms)",
            name,
            seconds * 1e3,
        )
        return response

    return wrapper  # type: ignore[return-value]
