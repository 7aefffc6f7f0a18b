"""Where a server listens: ``tcp://HOST:PORT`` (or plain ``HOST:PORT``) and ``unix:///PATH``."""

from __future__ import annotations

import errno
import os
import socket
from dataclasses import dataclass

import trio

from .tlsstream import secure_client_stream


@dataclass(frozen=True, slots=True)
class Address:
    scheme: str  # "tcp" or "unix"
    host: str = ""
    port: int = 0
    path: str = ""

    def __str__(self) -> str:
        if self.scheme == "unix":
            return f"unix://{self.path}"
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"tcp://{host}:{self.port}"


def parse_address(text: str) -> Address:
    """Parse an address, raising ValueError with the accepted forms when it is not one."""
    if text.startswith("unix://"):
        path = text[len("unix://"):]
        if not path.startswith("/"):
            raise ValueError(f"unix address needs an absolute path: {text!r} (unix:///run/x.sock)")
        return Address("unix", path=path)
    rest = text[len("tcp://"):] if text.startswith("tcp://") else text
    host, sep, port_text = rest.rpartition(":")
    host = host.strip("[]")
    if not sep or not host or not port_text.isdigit() or not 0 <= int(port_text) <= 65535:
        raise ValueError(f"not an address: {text!r} (use tcp://HOST:PORT or unix:///PATH)")
    return Address("tcp", host=host, port=int(port_text))


async def open_stream(address: Address) -> trio.abc.Stream:
    """Connect; over TCP with TLS on, the stream returned has finished its handshake."""
    if address.scheme == "unix":
        return await trio.open_unix_socket(address.path)
    stream = await trio.open_tcp_stream(address.host, address.port)
    return await secure_client_stream(stream, str(address), address.host)


async def open_listener(address: Address, backlog: int = 512) -> trio.SocketListener:
    """Bind a listener; a stale unix socket file left by a dead server is replaced."""
    if address.scheme == "tcp":
        listeners = await trio.open_tcp_listeners(address.port, host=address.host, backlog=backlog)
        if len(listeners) != 1:
            for extra in listeners[1:]:
                await extra.aclose()
        return listeners[0]
    sock = trio.socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    try:
        if os.path.exists(address.path):
            await _remove_stale_socket(address.path)
        await sock.bind(address.path)
        sock.listen(backlog)
    except BaseException:
        sock.close()
        raise
    return trio.SocketListener(sock)


async def _remove_stale_socket(path: str) -> None:
    probe = trio.socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    try:
        await probe.connect(path)
    except OSError as exc:
        if exc.errno in (errno.ECONNREFUSED, errno.ENOENT):
            os.unlink(path)
            return
        raise
    finally:
        probe.close()
    raise OSError(errno.EADDRINUSE, f"another server is listening on {path}")


def bound_address(listener: trio.SocketListener, requested: Address) -> Address:
    """The address actually bound (the kernel picks the port when 0 was asked for)."""
    if requested.scheme == "unix":
        return requested
    host, port = listener.socket.getsockname()[:2]
    return Address("tcp", host=host, port=port)
