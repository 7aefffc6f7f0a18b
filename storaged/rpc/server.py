"""The trio side of a msgpack-RPC server: accept, authenticate, dispatch, enforce limits.

Each connection reads in one task and runs each request in a task of its own, so many
requests are in flight on one connection and a slow ``put`` does not hold up a ``health``.
Responses go out whole under a per-connection send lock, in completion order (msgpack-RPC
matches them by msgid, not by order).
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import trio

from . import auth, fastio, requestid
from .budget import ByteBudget, payload_size
from .buffers import BufferPool
from .errors import (
    AuthFailed,
    Busy,
    Internal,
    InvalidArgument,
    InvalidRequest,
    RpcError,
    Unauthenticated,
)
from .farewell import LINGER_SECONDS, close, drain
from .methods import MethodTable
from .protocol import (
    InvalidMessage,
    MessageReader,
    Notification,
    Request,
    Response,
    StreamError,
    encode,
    encode_parts,
)
from .tlsstream import accept_tls

SLOW_REQUEST_SECONDS = 2.0  # answered later than this: worth a line at the default level

log = logging.getLogger("storaged.rpc")

MiB = 1024 * 1024
RECEIVE_SIZE = 1 * MiB
# A server's reads between large requests: small enough that a chunk.put's first read holds
# little of its data (the rest is read straight into its buffer), large enough for a burst
# of metadata requests.
REQUEST_RECEIVE_SIZE = 64 * 1024


# (method, seconds, result code, request payload bytes, response bytes): called once per
# request answered, e.g. to count it in metrics. Must not block.
RequestObserver = Callable[[str, float, str, int, int], None]


@dataclass(frozen=True)
class Limits:
    """Per-server protection against one peer taking everything.

    ``max_frame`` must hold the largest chunk plus its envelope. ``max_request_memory``
    bounds the bytes all requests in progress hold together (see budget.py); one
    connection's unfinished frame adds at most ``max_frame`` on top.

    Peers that have not authenticated get a budget of their own, so that they can never
    starve the ones that have: at most ``max_unauthenticated`` connections at once (a TCP
    peer address at most ``max_unauthenticated_per_peer`` of them), each closed after
    ``handshake_timeout`` and allowed messages of at most ``preauth_max_frame`` bytes (the
    handshake's are under 200). ``max_connections`` counts authenticated connections only.
    """

    max_frame: int = 65 * MiB
    max_in_flight: int = 32
    max_connections: int = 256
    handshake_timeout: float = 10.0
    max_request_memory: int = 512 * MiB
    max_unauthenticated: int = 64
    max_unauthenticated_per_peer: int = 8
    preauth_max_frame: int = 4096


class RpcServer:
    def __init__(
        self,
        methods: MethodTable,
        secret: bytes,
        limits: Limits = Limits(),
        observer: RequestObserver | None = None,
    ) -> None:
        self.methods = methods
        self.secret = secret
        self.limits = limits
        self.observer = observer
        self.connections = 0  # authenticated
        self.unauthenticated = 0  # accepted, not (yet) logged in: TLS handshake included
        self._unauthenticated_by_peer: dict[str, int] = {}
        self.refused = 0  # connections closed at once: the pre-auth budget was full
        self.timed_out = 0  # connections closed for not authenticating in time
        self.budget = ByteBudget(limits.max_request_memory)
        self.buffers = BufferPool()  # large requests' bytes, reused (buffers.py)

    async def serve(
        self,
        listeners: list[trio.SocketListener],
        *,
        task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED,
    ) -> None:
        """Serve until cancelled; ``task_status.started()`` once listening."""
        async with trio.open_nursery() as nursery:
            for listener in listeners:
                nursery.start_soon(trio.serve_listeners, self.handle_stream, [listener])
            task_status.started()

    async def handle_stream(self, stream: trio.abc.Stream) -> None:
        peer = _peer_host(stream)
        if not self._take_unauthenticated_slot(peer):
            self.refused += 1
            if self.refused & (self.refused - 1) == 0:  # the 1st, 2nd, 4th, 8th...: no flood
                log.warning(
                    "refused %d connections so far: %d unauthenticated connections "
                    "open (at most %d, %d per peer address)",
                    self.refused,
                    self.unauthenticated,
                    self.limits.max_unauthenticated,
                    self.limits.max_unauthenticated_per_peer,
                )
            await trio.aclose_forcefully(stream)
            return
        connection: _ServerConnection | None = None
        try:
            secured = await accept_tls(stream, self.limits.handshake_timeout)
            if secured is None:
                return
            stream = secured
            connection = _ServerConnection(self, stream, peer)
            await connection.run()
        except Exception:
            log.exception("a connection failed unexpectedly; closing it")
        finally:
            if connection is not None and connection.authenticated:
                self.connections -= 1
            else:
                self._give_back_unauthenticated_slot(peer)
            await close(stream)

    def _take_unauthenticated_slot(self, peer: str) -> bool:
        """A pre-authentication slot for a new connection from ``peer`` ('' for a unix
        socket: local, and not limited per peer), if the budget has one."""
        held = self._unauthenticated_by_peer.get(peer, 0)
        if self.unauthenticated >= self.limits.max_unauthenticated or (
            peer and held >= self.limits.max_unauthenticated_per_peer
        ):
            return False
        self.unauthenticated += 1
        self._unauthenticated_by_peer[peer] = held + 1
        return True

    def _give_back_unauthenticated_slot(self, peer: str) -> None:
        self.unauthenticated -= 1
        left = self._unauthenticated_by_peer[peer] - 1
        if left:
            self._unauthenticated_by_peer[peer] = left
        else:
            del self._unauthenticated_by_peer[peer]

    def admit(self, peer: str) -> bool:
        """A connection from ``peer`` has logged in: move it from the pre-authentication
        budget to ``max_connections``; False (it stays unauthenticated) when that is full."""
        if self.connections >= self.limits.max_connections:
            return False
        self._give_back_unauthenticated_slot(peer)
        self.connections += 1
        return True


def _peer_host(stream: trio.abc.Stream) -> str:
    """The peer's address without its port for TCP ('' for unix sockets and the unknown)."""
    try:
        name = stream.socket.getpeername()  # type: ignore[attr-defined]
    except (OSError, AttributeError):
        return ""
    return str(name[0]) if isinstance(name, tuple) else ""


class _ServerConnection:
    def __init__(self, server: RpcServer, stream: trio.abc.Stream, peer: str) -> None:
        self.server = server
        self.stream = stream
        self.peer = peer
        self.reader = MessageReader(server.limits.max_frame, allocate=server.buffers.take)
        # until the login, messages may be no larger than the handshake's need to be: a
        # peer without the secret cannot make the server hold a large unfinished frame
        self.reader.max_frame = server.limits.preauth_max_frame
        self.send_lock = trio.Lock()
        self.in_flight = 0
        self.idle = trio.Event()  # set whenever in_flight drops to 0 (replaced when it rises)
        self.idle.set()
        self.authenticated = False
        self.server_nonce: bytes | None = None
        self.closing = False
        self.next_rid: str | None = None  # from an rpc.context notification, for the next request
        self.deadline_scope = trio.CancelScope()

    async def run(self) -> None:
        async with trio.open_nursery() as nursery:
            nursery.start_soon(self._handshake_deadline, nursery.cancel_scope)
            await self._read_loop(nursery)
            self.deadline_scope.cancel()
            if self.closing:
                # Requests that arrived before the trouble still get their answers (within
                # a bound); then hang up. On a clean EOF they simply finish.
                with trio.move_on_after(LINGER_SECONDS):
                    await self.idle.wait()
                await self._hang_up()
                nursery.cancel_scope.cancel()

    async def _handshake_deadline(self, scope: trio.CancelScope) -> None:
        with self.deadline_scope:
            await trio.sleep(self.server.limits.handshake_timeout)
        if not self.authenticated and not self.deadline_scope.cancelled_caught:
            server = self.server
            server.timed_out += 1
            if server.timed_out & (server.timed_out - 1) == 0:  # 1st, 2nd, 4th...: no flood
                log.info(
                    "closed %d connections so far that did not authenticate within %.0fs",
                    server.timed_out,
                    server.limits.handshake_timeout,
                )
            self.closing = True
            scope.cancel()

    async def _read_loop(self, nursery: trio.Nursery) -> None:
        while not self.closing:
            target = self.reader.receive_buffer()  # a large request's data goes there
            try:
                if target is None:
                    data = await fastio.receive_some(self.stream, REQUEST_RECEIVE_SIZE)
                else:
                    count = await fastio.receive_into(self.stream, target)
            except (trio.BrokenResourceError, trio.ClosedResourceError):
                self.closing = True
                return
            finally:
                if target is not None:
                    target.release()
            if target is None:
                if not data:
                    return
                events = self.reader.feed(data)
            else:
                if not count:
                    return
                events = self.reader.received(count)
            for event in events:
                await self._on_event(event, nursery)
                if self.closing:
                    return

    async def _on_event(self, event: Any, nursery: trio.Nursery) -> None:
        if isinstance(event, Request):
            if event.method.startswith("auth."):
                await self._handshake(event)
            elif not self.authenticated and not self._is_public(event.method):
                await self._reply_error(
                    event.msgid,
                    Unauthenticated("authenticate first: call auth.challenge, then auth.login"),
                )
            elif self.in_flight >= self.server.limits.max_in_flight:
                await self._reply_error(
                    event.msgid,
                    Busy(
                        f"more than {self.server.limits.max_in_flight} requests in flight on one connection"
                    ),
                )
            else:
                size = payload_size(event.params)
                await self.server.budget.acquire(size)  # stops reading while memory is spent
                self.in_flight += 1
                if self.idle.is_set():
                    self.idle = trio.Event()
                nursery.start_soon(self._dispatch, event, size, self.next_rid)
            self.next_rid = None
        elif isinstance(event, InvalidMessage) and event.msgid is not None:
            await self._reply_error(event.msgid, InvalidRequest(event.reason))
        elif isinstance(event, (InvalidMessage, StreamError)):
            log.warning("closing connection: %s", event.reason)
            await self._notify_error(InvalidRequest(event.reason))
            self.closing = True
        elif isinstance(event, Notification):
            if (
                event.method == requestid.CONTEXT_METHOD
                and len(event.params) == 1
                and requestid.valid(event.params[0])
            ):
                self.next_rid = event.params[0]
            else:
                log.debug("ignoring notification %s", event.method)
        else:  # a Response: this server never sends requests
            await self._notify_error(InvalidRequest("unexpected response message"))
            self.closing = True

    def _is_public(self, method: str) -> bool:
        try:
            return self.server.methods.get(method).public
        except RpcError:
            return False

    async def _handshake(self, request: Request) -> None:
        """Handled inline, in arrival order, so requests pipelined after a login see it."""
        secret = self.server.secret
        if request.method == "auth.challenge":
            params = request.params
            if len(params) > 1 or (params and not isinstance(params[0], bytes)):
                await self._reply_error(
                    request.msgid, InvalidArgument("auth.challenge([client_nonce: bin])")
                )
                return
            self.server_nonce = auth.new_nonce()
            proof = auth.server_proof(secret, params[0], self.server_nonce) if params else None
            await self._reply(request.msgid, {"nonce": self.server_nonce, "server_proof": proof})
        elif request.method == "auth.login":
            nonce, self.server_nonce = self.server_nonce, None  # one attempt per nonce
            params = request.params
            if nonce is None:
                await self._reply_error(
                    request.msgid, Unauthenticated("call auth.challenge before auth.login")
                )
                return
            if (
                len(params) != 1
                or not isinstance(params[0], bytes)
                or not auth.proofs_equal(params[0], auth.client_proof(secret, nonce))
            ):
                log.warning("authentication failed; closing connection")
                await self._reply_error(
                    request.msgid,
                    AuthFailed(
                        "proof does not match: the client does not hold this cluster's secret"
                    ),
                )
                self.closing = True
                return
            if not self.server.admit(self.peer):
                await self._notify_error(
                    Busy(
                        f"server has reached its limit of {self.server.limits.max_connections} "
                        "connections"
                    )
                )
                self.closing = True
                return
            self.authenticated = True
            self.reader.max_frame = self.server.limits.max_frame
            self.reader.big_requests = True
            self.deadline_scope.cancel()
            await self._reply(request.msgid, True)
        else:
            await self._reply_error(
                request.msgid, InvalidRequest(f"unknown handshake method {request.method!r}")
            )

    async def _dispatch(self, request: Request, size: int, rid: str | None) -> None:
        requestid.set_current(rid)  # this task's log lines, and the calls it makes, carry it
        started = trio.current_time()
        name, code = "unknown", "OK"  # unknown names stay one label: clients choose them
        try:
            method = self.server.methods.get(request.method)
            name = request.method
            result = await method.handler(*method.bind(request.params))
            parts = encode_parts(Response(request.msgid, None, result))
        except RpcError as exc:
            code = exc.code
            parts = encode_parts(Response(request.msgid, exc.to_wire(), None))
        except Exception:
            log.exception("method %s failed", request.method)
            error = Internal(f"{request.method} failed on the server; see its log")
            code = error.code
            parts = encode_parts(Response(request.msgid, error.to_wire(), None))
        # Counted before the answer leaves: whoever got an answer finds it counted (a
        # test or an operator counting requests reads the metrics after the answer, and
        # the send may yield to other tasks, or to the metrics thread, before returning).
        seconds = trio.current_time() - started
        if self.server.observer is not None:
            self.server.observer(name, seconds, code, size, sum(len(p) for p in parts))
        try:
            await self._send(*parts)
        finally:
            self.in_flight -= 1
            if not self.in_flight:
                self.idle.set()
            self.server.budget.release(size)
            if request.params:
                self.server.buffers.give_back(request.params, -1)
            seconds = trio.current_time() - started
            if seconds >= SLOW_REQUEST_SECONDS:
                log.info("slow request: method=%s code=%s seconds=%.2f", name, code, seconds)
            elif log.isEnabledFor(logging.DEBUG):
                log.debug("request: method=%s code=%s seconds=%.4f", name, code, seconds)

    async def _reply(self, msgid: int, result: Any) -> None:
        await self._send(encode(Response(msgid, None, result)))

    async def _reply_error(self, msgid: int, error: RpcError) -> None:
        await self._send(encode(Response(msgid, error.to_wire(), None)))

    async def _notify_error(self, error: RpcError) -> None:
        """Tell the peer why it is about to be disconnected."""
        with trio.move_on_after(LINGER_SECONDS):
            await self._send(encode(Notification("error", [error.to_wire()])))

    async def _hang_up(self) -> None:
        """Stop sending, and read until the peer closes (bounded; see farewell.py)."""
        self.closing = True
        async with self.send_lock:  # no response may be cut in half by the half-close
            with trio.move_on_after(LINGER_SECONDS):
                await drain(self.stream)

    async def _send(self, *parts: bytes | bytearray | memoryview) -> None:
        await fastio.take(self.send_lock)  # no scheduler pass when free (see fastio)
        try:
            for part in parts:
                await fastio.send_all(self.stream, part)
        except (trio.BrokenResourceError, trio.ClosedResourceError):
            self.closing = True
        finally:
            self.send_lock.release()
