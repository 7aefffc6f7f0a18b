"""msgpack-RPC client: authenticated connections with many calls in flight, pooled per server.

``RpcClient`` is an async context manager because each connection needs a reader task, and
trio wants every task to live in a nursery somebody owns. Leaving the block closes all
connections and fails the calls still waiting.
"""

from __future__ import annotations

import contextlib
import itertools
import logging
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from types import TracebackType
from typing import Any

import trio

from . import auth, fastio, requestid
from .address import Address, open_stream, parse_address
from .errors import AuthFailed, NotDelivered, RpcError, Timeout, Unavailable, error_from_wire
from .protocol import (
    MAX_MSGID,
    InvalidMessage,
    MessageReader,
    Notification,
    ProtocolError,
    Request,
    Response,
    StreamError,
    encode,
    encode_parts,
)
from .server import RECEIVE_SIZE, Limits

log = logging.getLogger("storaged.rpc.client")


@dataclass
class _Pending:
    done: trio.Event = field(default_factory=trio.Event)
    response: Response | None = None
    failure: RpcError | None = None


class RpcConnection:
    """One stream to one server. Not reopened: the pool replaces it when it breaks."""

    def __init__(self, stream: trio.abc.Stream, address: Address, max_frame: int) -> None:
        self.stream = stream
        self.address = address
        self.reader = MessageReader(max_frame)
        self.send_lock = trio.Lock()
        self.pending: dict[int, _Pending] = {}
        self.broken: RpcError | None = None
        self._ids = itertools.count(1)

    @property
    def load(self) -> int:
        return len(self.pending)

    async def read_loop(self) -> None:
        """Deliver responses until the stream ends; then fail whoever still waits."""
        reason: RpcError = Unavailable(f"connection to {self.address} closed by the server")
        told: RpcError | None = None  # the server's own reason, when it gave one
        try:
            while told is None:
                data = await fastio.receive_some(self.stream, RECEIVE_SIZE)
                if not data:
                    break
                for event in self.reader.feed(data):
                    if isinstance(event, Response):
                        waiter = self.pending.pop(event.msgid, None)
                        if waiter is not None:  # else: a late answer to a timed-out call
                            waiter.response = event
                            waiter.done.set()
                    elif isinstance(event, Notification) and event.method == "error":
                        # The server hangs up after this; closing now lets it stop waiting.
                        notice = error_from_wire(event.params[0] if event.params else None)
                        told = reason = Unavailable(f"{self.address} hung up: {notice}")
                    elif isinstance(event, StreamError):
                        raise ProtocolError(event.reason)
                    elif isinstance(event, (InvalidMessage, Request)):
                        raise ProtocolError(
                            f"server sent something that is not a response: {event}"
                        )
        except ProtocolError as exc:
            reason = told or Unavailable(f"protocol error from {self.address}: {exc}")
        except (trio.BrokenResourceError, trio.ClosedResourceError, OSError) as exc:
            reason = told or Unavailable(f"connection to {self.address} lost: {exc or 'reset'}")
        finally:
            self._fail_all(reason)
            await trio.aclose_forcefully(self.stream)

    def _fail_all(self, reason: RpcError) -> None:
        self.broken = self.broken or reason
        for waiter in self.pending.values():
            waiter.failure = self.broken
            waiter.done.set()
        self.pending.clear()

    def _next_msgid(self) -> int:
        while True:
            msgid = next(self._ids) & MAX_MSGID
            if msgid not in self.pending:
                return msgid

    async def call(self, method: str, params: list[Any], timeout: float) -> Any:
        """Raises NotDelivered when the request never left whole (the server cannot have
        acted on it), plain Unavailable when the connection broke after it was sent."""
        if self.broken is not None:
            raise NotDelivered(self.broken.message)
        msgid = self._next_msgid()
        waiter = _Pending()
        self.pending[msgid] = waiter
        parts = encode_parts(Request(msgid, method, params))
        rid = requestid.current()
        if rid is not None:  # just ahead of the request, in the same send (one syscall)
            parts[0] = encode(Notification(requestid.CONTEXT_METHOD, [rid])) + parts[0]
        sent = False
        with trio.move_on_after(timeout) as scope:
            await fastio.take(self.send_lock)  # no scheduler pass when free (see fastio)
            try:
                for part in parts:
                    await fastio.send_all(self.stream, part)
                sent = True
            except (trio.BrokenResourceError, trio.ClosedResourceError) as exc:
                self._fail_all(Unavailable(f"connection to {self.address} lost: {exc}"))
            finally:
                self.send_lock.release()
            await waiter.done.wait()
        if scope.cancelled_caught:
            self.pending.pop(msgid, None)
            if not sent:  # a request cut mid-write leaves the stream out of sync
                self._fail_all(Unavailable(f"connection to {self.address} stalled while sending"))
                await trio.aclose_forcefully(self.stream)
            raise Timeout(f"{method} on {self.address}: no answer within {timeout:g}s")
        if waiter.failure is not None:
            if not sent:
                raise NotDelivered(waiter.failure.message)
            raise waiter.failure
        assert waiter.response is not None
        if waiter.response.error is not None:
            raise error_from_wire(waiter.response.error)
        return waiter.response.result

    async def authenticate(self, secret: bytes, timeout: float) -> None:
        """Prove we hold the secret, and check that the server does too."""
        client_nonce = auth.new_nonce()
        hello = await self.call("auth.challenge", [client_nonce], timeout)
        if not isinstance(hello, dict) or not isinstance(hello.get("nonce"), bytes):
            raise AuthFailed(f"{self.address} sent a malformed challenge")
        expected = auth.server_proof(secret, client_nonce, hello["nonce"])
        proof = hello.get("server_proof")
        if not isinstance(proof, bytes) or not auth.proofs_equal(proof, expected):
            raise AuthFailed(f"{self.address} does not hold this cluster's secret")
        await self.call("auth.login", [auth.client_proof(secret, hello["nonce"])], timeout)

    async def aclose(self) -> None:
        self._fail_all(Unavailable(f"connection to {self.address} closed by the client"))
        await trio.aclose_forcefully(self.stream)


@dataclass(frozen=True)
class Patience:
    """How calls to one server ride out its restart: a call that cannot reach it waits and
    tries again for up to ``seconds``, instead of failing at once. Only what is safe to send
    again is sent again: a call that never reached the server (NotDelivered), or one of the
    ``repeatable`` methods (reads, and changes that come out the same when made twice). A
    call of any other method lost after it was sent fails: the server may have acted on it,
    and sending it again could turn a create that happened into EEXIST."""

    seconds: float
    repeatable: frozenset[str]


class RpcClient:
    """Calls to any number of servers over pooled, authenticated connections.

    Up to ``connections_per_server`` connections are opened per server, lazily, as calls
    pile up; a broken connection is dropped and the next call opens a fresh one. Calls that
    fail because the connection broke are retried ``retries`` times (chunk servers' methods
    are idempotent: chunks are content-addressed), unless the server was given a
    ``Patience`` (``be_patient``), whose rules then decide.
    """

    def __init__(
        self,
        secret: bytes,
        *,
        timeout: float = 30.0,
        connect_timeout: float = 5.0,
        connections_per_server: int = 2,
        max_frame: int = Limits().max_frame,
    ) -> None:
        self.secret = secret
        self.timeout = timeout
        self.connect_timeout = connect_timeout
        self.connections_per_server = connections_per_server
        self.max_frame = max_frame
        self._pools: dict[Address, list[RpcConnection]] = {}
        self._connecting: dict[Address, trio.Lock] = {}
        self._connect_failures: dict[Address, tuple[float, RpcError]] = {}
        self._parsed: dict[str, Address] = {}
        self._patience: dict[Address, Patience] = {}
        self._waiting: dict[Address, float] = {}  # server -> since when calls wait for it
        self._stack = contextlib.AsyncExitStack()
        self._nursery: trio.Nursery | None = None

    async def __aenter__(self) -> RpcClient:
        self._nursery = await self._stack.enter_async_context(trio.open_nursery())
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> bool | None:
        # The connections are closed shielded: a client left because its caller was
        # cancelled (a daemon stopping on SIGTERM) must still exit its own nursery, or trio
        # reports a corrupted nursery stack and the process dies with exit code 1.
        conns = [conn for pool in self._pools.values() for conn in pool]
        self._pools.clear()
        assert self._nursery is not None
        self._nursery.cancel_scope.cancel()
        with trio.CancelScope(shield=True):
            for conn in conns:
                await conn.aclose()
        try:
            return await self._stack.__aexit__(exc_type, exc, tb)
        except BaseExceptionGroup as group:
            # The nursery only holds reader tasks, which never raise; so a group here just
            # wraps the caller's own exception. Let it out as it was raised: a caller wrote
            # 'except NotFound', not 'except* NotFound'.
            if exc is not None and group.exceptions == (exc,):
                return False
            raise

    async def call(
        self,
        address: Address | str,
        method: str,
        *params: Any,
        timeout: float | None = None,
        retries: int = 1,
    ) -> Any:
        """Call ``method`` on the server at ``address`` and return its result.

        Raises the RpcError subclass matching the server's error code, Timeout when no
        answer came in time, Unavailable when the server could not be reached.
        """
        if isinstance(address, str):
            address = self._parsed.get(address) or self._parse(address)
        timeout = self.timeout if timeout is None else timeout
        for attempt in itertools.count():
            try:
                conn = await self._connection(address)
            except Unavailable as exc:
                if address not in self._patience or not await self._wait(address, exc):
                    raise
                continue
            try:
                result = await conn.call(method, list(params), timeout)
            except Timeout:
                raise
            except Unavailable as exc:
                self._drop(address, conn)
                patience = self._patience.get(address)
                if patience is None:
                    if attempt >= retries:
                        raise
                    log.debug("retrying %s on %s after a lost connection", method, address)
                elif not (
                    (isinstance(exc, NotDelivered) or method in patience.repeatable)
                    and await self._wait(address, exc)
                ):
                    raise
                continue
            if self._waiting and address in self._waiting:
                log.warning(
                    "%s answers again after %.1fs",
                    address,
                    trio.current_time() - self._waiting.pop(address),
                )
            return result
        raise AssertionError("unreachable")

    def be_patient(self, address: Address | str, patience: Patience) -> None:
        """From now on, calls to ``address`` wait for it as ``patience`` says."""
        if isinstance(address, str):
            address = self._parse(address)
        self._patience[address] = patience

    async def _wait(self, address: Address, exc: Unavailable) -> bool:
        """Sleep a little before the next try; False once the server's patience is spent.
        The wait is counted from when calls to it first failed (not per call): a server
        gone for good fails every call once its patience is out, not each after its own."""
        now = trio.current_time()
        since = self._waiting.setdefault(address, now)
        if since == now:
            log.warning(
                "%s does not answer (%s); calls wait for it up to %gs",
                address,
                exc,
                self._patience[address].seconds,
            )
        left = since + self._patience[address].seconds - now
        if left <= 0:
            return False
        await trio.sleep(min(left, 0.05 + 0.2 * min(now - since, 4)))
        return True

    def _parse(self, text: str) -> Address:
        """Callers pass the same few addresses as text on every call: parse each once."""
        address = parse_address(text)
        if len(self._parsed) >= 1024:
            self._parsed.clear()
        self._parsed[text] = address
        return address

    async def _connection(self, address: Address) -> RpcConnection:
        pool = [c for c in self._pools.get(address, []) if c.broken is None]
        self._pools[address] = pool
        if pool:
            best = min(pool, key=lambda c: c.load)
            if best.load == 0 or len(pool) >= self.connections_per_server:
                return best
        lock = self._connecting.setdefault(address, trio.Lock())
        waiting_since = trio.current_time()
        async with lock:
            pool = self._pools[address]
            if pool and len(pool) >= self.connections_per_server:
                return min(pool, key=lambda c: c.load)
            failed = self._connect_failures.get(address)
            if failed is not None and failed[0] >= waiting_since:
                # It failed while we queued for the lock: an unreachable server would
                # otherwise cost every queued caller a full connect timeout, one by one.
                raise failed[1]
            try:
                conn = await self._open(address)
            except RpcError as exc:
                self._connect_failures[address] = (trio.current_time(), exc)
                raise
            self._connect_failures.pop(address, None)
            self._pools[address].append(conn)
            return conn

    async def _open(self, address: Address) -> RpcConnection:
        assert self._nursery is not None, "use RpcClient as 'async with RpcClient(...)'"
        try:
            with trio.fail_after(self.connect_timeout):
                stream = await open_stream(address)
        except (OSError, trio.TooSlowError) as exc:
            raise NotDelivered(f"cannot connect to {address}: {exc or 'timed out'}") from None
        conn = RpcConnection(stream, address, self.max_frame)
        self._nursery.start_soon(conn.read_loop)
        try:
            await conn.authenticate(self.secret, self.connect_timeout)
        except BaseException:
            await conn.aclose()
            raise
        return conn

    def _drop(self, address: Address, conn: RpcConnection) -> None:
        pool = self._pools.get(address, [])
        if conn in pool:
            pool.remove(conn)


@contextlib.asynccontextmanager
async def open_client(secret: bytes, **options: Any) -> AsyncIterator[RpcClient]:
    """``async with open_client(secret) as client: await client.call(addr, "health")``."""
    async with RpcClient(secret, **options) as client:
        yield client
