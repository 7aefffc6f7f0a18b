"""Calls to a storaged-protocol server (the meta role, the mounter) from gRPC's threads.

grpcio has no trio support (grpc/grpc#25050) and our RPC client is trio-based, so one
thread runs a trio loop that owns an RpcClient, and gRPC threads hand it calls through
``trio.from_thread.run``. The trio loop never runs gRPC code and gRPC never runs trio code:
each stays on its own threads, as FIELD-NOTES asks.
"""

from __future__ import annotations

import threading
from collections.abc import Awaitable, Callable
from typing import Any, TypeVar

import trio

from storaged.metaclient import MetaClient
from storaged.rpc import RpcClient, Unavailable

T = TypeVar("T")


class RpcBridge:
    def __init__(self, address: str, secret: bytes, timeout: float = 30.0) -> None:
        self.address = address
        self._secret = secret
        self._timeout = timeout
        self._token: trio.lowlevel.TrioToken | None = None
        self._client: RpcClient | None = None
        self._stop: trio.Event | None = None
        self._ready = threading.Event()
        self._thread = threading.Thread(target=self._run, name=f"rpc-{address}", daemon=True)
        self._failure: BaseException | None = None

    def start(self) -> RpcBridge:
        self._thread.start()
        self._ready.wait()
        if self._failure is not None:
            raise RuntimeError(f"the RPC client thread could not start: {self._failure}")
        return self

    def _run(self) -> None:
        try:
            trio.run(self._main)
        except BaseException as exc:
            self._failure = exc
            self._ready.set()

    async def _main(self) -> None:
        async with RpcClient(self._secret, timeout=self._timeout) as client:
            self._client = client
            self._token = trio.lowlevel.current_trio_token()
            self._stop = trio.Event()
            self._ready.set()
            await self._stop.wait()

    @property
    def running(self) -> bool:
        """The trio thread is up and taking calls."""
        return self._token is not None and self._thread.is_alive()

    def call(self, method: str, *params: Any, timeout: float | None = None) -> Any:
        """Call ``method`` on the server; raises the RpcError subclass it answered with."""
        return self.run(lambda client: client.call(self.address, method, *params, timeout=timeout))

    def ask(self, fn: Callable[[MetaClient], Awaitable[T]]) -> T:
        """``fn`` with the typed client of the meta role at this bridge's address:
        ``bridge.ask(lambda meta: meta.volume_get(name))``."""
        return self.run(lambda client: fn(MetaClient(client, self.address)))

    def run(self, fn: Callable[[RpcClient], Awaitable[T]]) -> T:
        """``fn(client)`` on the trio thread; raises what it raises."""
        if not self.running or self._client is None:
            raise Unavailable("the RPC client thread is not running")
        client = self._client

        async def go() -> T:
            return await fn(client)

        try:
            return trio.from_thread.run(go, trio_token=self._token)
        except trio.RunFinishedError:
            raise Unavailable("the RPC client thread has stopped") from None

    def close(self) -> None:
        if self._token is not None and self._stop is not None:
            try:
                trio.from_thread.run_sync(self._stop.set, trio_token=self._token)
            except trio.RunFinishedError:
                pass
        self._thread.join(timeout=10)
