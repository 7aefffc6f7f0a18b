"""msgpack-RPC for shoalfs: a sans-I/O protocol, a trio server and a pooled trio client.

The wire protocol, methods and error codes are documented in docs/rpc.md.
"""

from .address import Address, parse_address
from .client import Patience, RpcClient, open_client
from .errors import (
    AuthFailed,
    Busy,
    Corrupted,
    FsError,
    HashMismatch,
    Internal,
    InvalidArgument,
    InvalidRequest,
    MethodNotFound,
    NoSpace,
    NotDelivered,
    NotFound,
    RemoteError,
    RpcError,
    Timeout,
    Unauthenticated,
    Unavailable,
)
from .methods import MethodTable
from .server import Limits, RpcServer

__all__ = [
    "Address",
    "AuthFailed",
    "Busy",
    "Corrupted",
    "FsError",
    "HashMismatch",
    "Internal",
    "InvalidArgument",
    "InvalidRequest",
    "Limits",
    "MethodNotFound",
    "MethodTable",
    "NoSpace",
    "NotDelivered",
    "NotFound",
    "Patience",
    "RemoteError",
    "RpcClient",
    "RpcError",
    "RpcServer",
    "Timeout",
    "Unauthenticated",
    "Unavailable",
    "open_client",
    "parse_address",
]
