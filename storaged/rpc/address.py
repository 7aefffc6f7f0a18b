"""Where a server listens: ``tcp://HOST:PORT`` (or plain ``HOST:PORT``) and ``unix:///PATH``."""

from __future__ import annotations

import errno
import ipaddress
import os
import re
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
        path = text[len("unix://") :]
        if not path.startswith("/"):
            raise ValueError(f"unix address needs an absolute path: {text!r} (unix:///run/x.sock)")
        return Address("unix", path=path)
    rest = text[len("tcp://") :] if text.startswith("tcp://") else text
    host, sep, port_text = rest.rpartition(":")
    if host.startswith("[") and host.endswith("]"):
        host = host[1:-1]
        valid_host = _is_ipv6(host)
    else:
        valid_host = _HOST_RE.fullmatch(host) is not None
    if (
        not sep
        or not valid_host
        or not port_text.isascii()
        or not port_text.isdigit()
        or not 0 <= int(port_text) <= 65535
    ):
        raise ValueError(f"not an address: {text!r} (use tcp://HOST:PORT or unix:///PATH)")
    return Address("tcp", host=host, port=int(port_text))


# A host name or IPv4 address (RFC 1123 letters, digits, hyphens and dots; underscores as
# some internal DNS names have them); IPv6 literals come in brackets. Anything else (a
# scheme other than tcp://, a path, spaces) is not an address a client can dial.
_HOST_RE = re.compile(r"[A-Za-z0-9_](?:[A-Za-z0-9_.-]{0,251}[A-Za-z0-9_.])?")


def _is_ipv6(host: str) -> bool:
    try:
        ipaddress.IPv6Address(host)
    except ValueError:
        return False
    return True


async def open_stream(address: Address) -> trio.abc.Stream:
    """Connect; over TCP with TLS on, the stream returned has finished its handshake."""
    if address.scheme == "unix":
        return await trio.open_unix_socket(address.path)
    stream = await trio.open_tcp_stream(address.host, address.port)
    detect_dead_peers(stream.socket)
    return await secure_client_stream(stream, str(address), address.host)


DEAD_PEER_SECONDS = 10


def detect_dead_peers(sock: trio.socket.SocketType) -> None:
    """Let the kernel fail a connection whose peer went silent, instead of waiting forever.

    A peer cut off by the network (a link down, a node powered off) sends no reset: without
    this, a pooled idle connection looks alive until a call on it times out, and sent data
    sits unacknowledged for the ~15 minutes of TCP's retransmission limit. Keepalives probe
    an idle connection; TCP_USER_TIMEOUT ends one whose sent data stays unacknowledged.
    Both fail every call waiting on it at once (UNAVAILABLE), and the pool opens a new one.
    """
    options = [(socket.SOL_SOCKET, socket.SO_KEEPALIVE, 1)]
    for name, value in (
        ("TCP_KEEPIDLE", 5),
        ("TCP_KEEPINTVL", 2),
        ("TCP_KEEPCNT", 3),
        ("TCP_USER_TIMEOUT", DEAD_PEER_SECONDS * 1000),
    ):
        if hasattr(socket, name):  # Linux has them all; elsewhere, keepalive's defaults
            options.append((socket.IPPROTO_TCP, getattr(socket, name), value))
    for level, option, value in options:
        sock.setsockopt(level, option, value)


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
        if await trio.Path(address.path).exists():
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
