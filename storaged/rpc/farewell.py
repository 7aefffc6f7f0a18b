"""Ending a connection so that the peer learns why, over plain TCP and over TLS alike.

Two traps sit between "send the reason, then close" and the peer reading the reason:
- closing a socket with unread input makes the kernel send a reset, which can destroy the
  last message before the peer reads it: so read (and discard) what the peer still sends,
  for a bounded time and amount, until it hangs up;
- a TLS stream closed without ``close_notify`` looks to the peer like an attack (a
  truncated stream), not an end: so a TLS stream is closed gracefully, within a bound.
"""

from __future__ import annotations

import contextlib

import trio

from .protocol import Notification, encode

LINGER_SECONDS = 2.0
LINGER_DRAIN_BYTES = 128 * 1024 * 1024
RECEIVE_SIZE = 1024 * 1024
_GONE = (trio.BrokenResourceError, trio.ClosedResourceError)


async def say_goodbye(
    stream: trio.abc.Stream, error_wire: dict, *, linger: float = LINGER_SECONDS
) -> None:
    """Send an ``error`` notification, let the peer read it, close the stream."""
    with trio.move_on_after(linger):
        with contextlib.suppress(*_GONE):
            await stream.send_all(encode(Notification("error", [error_wire])))
            await drain(stream)
    await close(stream)


async def drain(stream: trio.abc.Stream, max_bytes: int = LINGER_DRAIN_BYTES) -> None:
    """Say we are done sending, then read until the peer closes (callers bound it in time).

    A peer that has read our last message and sees our end closes its side; that ends
    this. Plain TCP says "done" with a half-close; TLS with ``close_notify``, after which
    what the peer still sends is discarded undecrypted.
    """
    if isinstance(stream, trio.SSLStream):
        stream = await _end_tls(stream)
    elif isinstance(stream, trio.abc.HalfCloseableStream):
        with contextlib.suppress(*_GONE):
            await stream.send_eof()
    drained = 0
    with contextlib.suppress(*_GONE):
        while drained < max_bytes:
            data = await stream.receive_some(RECEIVE_SIZE)
            if not data:
                return
            drained += len(data)


async def _end_tls(stream: trio.SSLStream) -> trio.abc.Stream:
    """Send close_notify and return the transport underneath, to drain it raw."""
    try:
        transport, _ = await stream.unwrap()
        return transport
    except (*_GONE, trio.BusyResourceError):
        return stream.transport_stream


async def close(stream: trio.abc.Stream) -> None:
    """Close; a TLS stream sends close_notify first (bounded: a stuck peer cannot hold us)."""
    if isinstance(stream, trio.SSLStream):
        with trio.move_on_after(1):
            with contextlib.suppress(*_GONE):
                await stream.aclose()
        stream = stream.transport_stream  # unwrapped streams are left open by aclose
    await trio.aclose_forcefully(stream)
