"""Sends and receives on a plain TCP stream with fewer passes through trio's scheduler.

An RPC round trip on loopback cost about 370 microseconds of which the kernel's part is
about 100: the rest was Python, and much of that trio's run loop. ``SocketStream`` yields to
the scheduler after every send and every receive that succeeds at once, and tries each
receive before waiting, so one request and its answer cost each side several passes of the
run loop (an ``epoll_wait`` and its bookkeeping each). For metadata calls, a chain of such
round trips per file operation, that overhead is most of the cost.

Here a send writes to the socket at once and yields only if the kernel cannot take all of
it; a receive waits for the socket to be readable and then reads, instead of trying,
waiting, trying again and yielding once more. Counted with cProfile, a client's round
trip went from four passes of the run loop to two. A receive always waits in the
scheduler, so a connection that never stops sending
cannot starve the other tasks. Errors become trio's stream errors, as ``SocketStream``
raises them. Other streams (TLS, trio's in-memory streams in tests) take their own path.

Callers keep the streams' rule of one sender and one receiver at a time (both the client
and the server hold a send lock; each connection has one reading task).
"""

from __future__ import annotations

import errno
import os
from collections.abc import Callable
from typing import TypeVar

import trio

T = TypeVar("T")

_BROKEN = (BrokenPipeError, ConnectionResetError, ConnectionAbortedError)


def _socket_fd(stream: trio.abc.Stream) -> int | None:
    """The stream's socket, when it is a plain TCP stream; -1 once it is closed."""
    if type(stream) is trio.SocketStream:
        return stream.socket.fileno()
    return None


async def send_all(stream: trio.abc.SendStream, data: bytes | bytearray | memoryview) -> None:
    fd = _socket_fd(stream)  # type: ignore[arg-type]
    if fd is None:
        await stream.send_all(data)
        return
    if fd < 0:
        raise trio.ClosedResourceError("the connection was closed")
    view = memoryview(data).cast("B")
    try:
        sent = os.write(fd, view)
    except BlockingIOError:
        sent = 0
    except OSError as exc:
        raise _stream_error(exc) from exc
    if sent < len(view):  # the kernel's buffer is full: wait for room the usual way
        await stream.send_all(view[sent:])


async def receive_some(stream: trio.abc.ReceiveStream, max_bytes: int) -> bytes | bytearray:
    """Up to ``max_bytes``; b"" at the end of the stream."""
    if _socket_fd(stream) is None:  # type: ignore[arg-type]
        return await stream.receive_some(max_bytes)
    return await _when_readable(stream, lambda fd: os.read(fd, max_bytes))


async def receive_into(stream: trio.abc.ReceiveStream, buffer: memoryview) -> int:
    """Bytes read into ``buffer`` (at most its length); 0 at the end of the stream. On a
    plain TCP stream the kernel copies them there directly; other streams' bytes are copied
    once."""
    if _socket_fd(stream) is None:  # type: ignore[arg-type]
        data = await stream.receive_some(len(buffer))
        buffer[: len(data)] = data
        return len(data)
    return await _when_readable(stream, lambda fd: os.readv(fd, [buffer]))


async def _when_readable(stream: trio.abc.ReceiveStream, read: Callable[[int], T]) -> T:
    """``read(fd)`` once the socket has data (or its end) to read."""
    sock = stream.socket  # type: ignore[attr-defined]
    fd = sock.fileno()
    while True:
        if fd < 0:
            raise trio.ClosedResourceError("the connection was closed")
        await trio.lowlevel.wait_readable(sock)  # ClosedResourceError if closed meanwhile
        fd = sock.fileno()
        if fd < 0:
            raise trio.ClosedResourceError("the connection was closed")
        try:
            return read(fd)
        except BlockingIOError:
            continue  # woken without data (it can happen): wait again
        except OSError as exc:
            raise _stream_error(exc) from exc


async def take(lock: trio.Lock) -> None:
    """Acquire ``lock``; when it is free (nearly always), without a pass through the
    scheduler, which ``async with lock`` always makes."""
    try:
        lock.acquire_nowait()
    except trio.WouldBlock:
        await lock.acquire()


def _stream_error(exc: OSError) -> Exception:
    """The error trio's SocketStream raises for this socket error."""
    if exc.errno == errno.EBADF:
        return trio.ClosedResourceError("the connection was closed")
    if isinstance(exc, _BROKEN):
        return trio.BrokenResourceError(f"the peer closed or reset the connection: {exc}")
    return trio.BrokenResourceError(str(exc))
