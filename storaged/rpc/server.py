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
from .tlsstream import accept_tls
from .budget import ByteBudget, payload_size
from .buffers import BufferPool
from .errors import (AuthFailed, Busy, Internal, InvalidArgument, InvalidRequest, RpcError,
                     Unauthenticated)
from .farewell import LINGER_SECONDS, close, drain, say_goodbye
from .methods import MethodTable
from .protocol import (InvalidMessage, MessageReader, Notification, Request, Response,
                       StreamError, encode, encode_parts)

SLOW_REQUEST_SECONDS = 2.0   # answered later than this: worth a line at the default level

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
    """

    max_frame: int = 65 * MiB
    max_in_flight: int = 32
    max_connections: int = 256
    handshake_timeout: float = 10.0
    max_request_memory: int = 512 * MiB


class RpcServer:
    def __init__(self, methods: MethodTable, secret: bytes, limits: Limits = Limits(),
                 observer: RequestObserver | None = None) -> None:
        self.methods = methods
        self.secret = secret
        self.limits = limits
        self.observer = observer
        self.connections = 0
        self.budget = ByteBudget(limits.max_request_memory)
        self.buffers = BufferPool()  # large requests' bytes, reused (buffers.py)

    async def serve(self, listeners: list[trio.SocketListener], *,
                    task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        """Serve until cancelled; ``task_status.started()`` once listening."""
        async with trio.open_nursery() as nursery:
            for listener in listeners:
                nursery.start_soon(trio.serve_listeners, self.handle_stream, [listener])
            task_status.started()

    async def handle_stream(self, stream: trio.abc.Stream) -> None:
        self.connections += 1  # one still in its TLS handshake counts too
        try:
            secured = await accept_tls(stream, self.limits.handshake_timeout)
            if secured is None:
                return
            stream = secured
            if self.connections > self.limits.max_connections:
                notice = Busy(f"server has reached its limit of {self.limits.max_connections} "
                              "connections")
                await say_goodbye(stream, notice.to_wire(), linger=1)
                return
            await _ServerConnection(self, stream).run()
        except Exception:  # noqa: BLE001 - one connection's failure must not end the server
            log.exception("a connection failed unexpectedly; closing it")
        finally:
            self.connections -= 1
            await close(stream)


class _ServerConnection:
    def __init__(self, server: RpcServer, stream: trio.abc.Stream) -> None:
        self.server = server
        self.stream = stream
        self.reader = MessageReader(server.limits.max_frame, allocate=server.buffers.take)
        self.send_lock = trio.Lock()
        self.in_flight = 0
        self.authenticated = False
        self.server_nonce: bytes | None = None
        self.closing = False
        self.next_rid: str | None = None   # from an rpc.context notification, for the next request
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
                    while self.in_flight:
                        await trio.sleep(0.005)
                await self._hang_up()
                nursery.cancel_scope.cancel()

    async def _handshake_deadline(self, scope: trio.CancelScope) -> None:
        with self.deadline_scope:
            await trio.sleep(self.server.limits.handshake_timeout)
        if not self.authenticated and not self.deadline_scope.cancelled_caught:
            log.info("closing connection: no authentication within %.0fs",
                     self.server.limits.handshake_timeout)
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
                await self._reply_error(event.msgid, Unauthenticated(
                    "authenticate first: call auth.challenge, then auth.login"))
            elif self.in_flight >= self.server.limits.max_in_flight:
                await self._reply_error(event.msgid, Busy(
                    f"more than {self.server.limits.max_in_flight} requests in flight on one connection"))
            else:
                size = payload_size(event.params)
                await self.server.budget.acquire(size)  # stops reading while memory is spent
                self.in_flight += 1
                nursery.start_soon(self._dispatch, event, size, self.next_rid)
            self.next_rid = None
        elif isinstance(event, InvalidMessage) and event.msgid is not None:
            await self._reply_error(event.msgid, InvalidRequest(event.reason))
        elif isinstance(event, (InvalidMessage, StreamError)):
            log.warning("closing connection: %s", event.reason)
            await self._notify_error(InvalidRequest(event.reason))
            self.closing = True
        elif isinstance(event, Notification):
            if event.method == requestid.CONTEXT_METHOD and len(event.params) == 1 \
                    and requestid.valid(event.params[0]):
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
                await self._reply_error(request.msgid, InvalidArgument(
                    "auth.challenge([client_nonce: bin])"))
                return
            self.server_nonce = auth.new_nonce()
            proof = auth.server_proof(secret, params[0], self.server_nonce) if params else None
            await self._reply(request.msgid, {"nonce": self.server_nonce, "server_proof": proof})
        elif request.method == "auth.login":
            nonce, self.server_nonce = self.server_nonce, None  # one attempt per nonce
            params = request.params
            if nonce is None:
                await self._reply_error(request.msgid, Unauthenticated(
                    "call auth.challenge before auth.login"))
                return
            if (len(params) != 1 or not isinstance(params[0], bytes)
                    or not auth.proofs_equal(params[0], auth.client_proof(secret, nonce))):
                log.warning("authentication failed; closing connection")
                await self._reply_error(request.msgid, AuthFailed(
                    "proof does not match: the client does not hold this cluster's secret"))
                self.closing = True
                return
            self.authenticated = True
            self.reader.big_requests = True
            self.deadline_scope.cancel()
            await self._reply(request.msgid, True)
        else:
            await self._reply_error(request.msgid, InvalidRequest(
                f"unknown handshake method {request.method!r}"))

    async def _dispatch(self, request: Request, size: int, rid: str | None) -> None:
        requestid.set_current(rid)   # this task's log lines, and the calls it makes, carry it
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
        try:
            await self._send(*parts)
        finally:
            self.in_flight -= 1
            self.server.budget.release(size)
            if request.params:
                self.server.buffers.give_back(request.params, -1)
            seconds = trio.current_time() - started
            if seconds >= SLOW_REQUEST_SECONDS:
                log.info("slow request: method=%s code=%s seconds=%.2f", name, code, seconds)
            elif log.isEnabledFor(logging.DEBUG):
                log.debug("request: method=%s code=%s seconds=%.4f", name, code, seconds)
            if self.server.observer is not None:
                self.server.observer(name, seconds, code, size, sum(len(p) for p in parts))

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
