"""TLS on a connected stream: the client's handshake and the server's acceptance.

What TLS means for shoalfs (and why host names are not checked) is in tls.py; this module
only puts streams into and out of it, and turns failures into messages a person can act on.
"""

from __future__ import annotations

import logging
import socket
from typing import TypeGuard

import trio

from . import tls
from .errors import Unauthenticated
from .farewell import say_goodbye

log = logging.getLogger("storaged.rpc")

TLS_HANDSHAKE_RECORD = 0x16


async def secure_client_stream(stream: trio.SocketStream, name: str, host: str) -> trio.abc.Stream:
    """With TLS on, wrap and handshake (a failure raises OSError naming the cause, like any
    other failure to connect); with it off, the stream as it was."""
    config = tls.active()
    if config is None:
        return stream
    secure = trio.SSLStream(stream, config.client, server_hostname=host)
    try:
        await secure.do_handshake()
    except trio.BrokenResourceError as exc:
        await trio.aclose_forcefully(secure)
        raise OSError(f"TLS handshake with {name} failed: {tls.describe(exc)}") from None
    except BaseException:
        await trio.aclose_forcefully(secure)
        raise
    return secure


async def accept_tls(stream: trio.abc.Stream, timeout: float) -> trio.abc.Stream | None:
    """The server's side of open_stream: wrap a TCP stream when TLS is on.

    Returns None (after closing the stream) when the peer fails the handshake.
    """
    config = tls.active()
    if config is None or not _is_tcp(stream):
        return stream
    with trio.move_on_after(timeout):
        if not await _starts_with_tls_record(stream):
            await _refuse_plaintext(stream)
            return None
        secure = trio.SSLStream(stream, config.server, server_side=True)
        try:
            await secure.do_handshake()
            return secure
        except trio.BrokenResourceError as exc:
            log.warning("TLS handshake from %s failed: %s", _peer(stream), tls.describe(exc))
        await trio.aclose_forcefully(secure)
        return None
    await trio.aclose_forcefully(stream)
    return None


TLS_HANDSHAKE_RECORD = 0x16


async def _starts_with_tls_record(stream: trio.SocketStream) -> bool:
    """Peek at the first byte: a TLS client opens with a handshake record.

    Without this, OpenSSL reads a msgpack request's first byte as an old SSLv2 length and
    waits for kilobytes that never come: the plain client would hang until its timeout.
    """
    try:
        first = await stream.socket.recv(1, socket.MSG_PEEK)
    except OSError:
        return False
    return first[:1] == bytes([TLS_HANDSHAKE_RECORD]) or not first


async def _refuse_plaintext(stream: trio.SocketStream) -> None:
    """Tell a plain msgpack-RPC client why, in a message it can read, then hang up."""
    log.warning("refusing a plaintext connection from %s: TLS is on", _peer(stream))
    notice = Unauthenticated(
        "this server requires TLS: give the client the cluster's TLS "
        "directory (--tls-dir or SHOAL_TLS_DIR)"
    )
    await say_goodbye(stream, notice.to_wire(), linger=1)


def _is_tcp(stream: trio.abc.Stream) -> TypeGuard[trio.SocketStream]:
    sock = getattr(stream, "socket", None)
    return sock is not None and sock.family in (socket.AF_INET, socket.AF_INET6)


def _peer(stream: trio.abc.Stream) -> str:
    try:
        return str(stream.socket.getpeername())  # type: ignore[attr-defined]
    except (OSError, AttributeError):
        return "a peer"
