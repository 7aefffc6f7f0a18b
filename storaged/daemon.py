"""Run a storaged process: open the store, listen, serve until SIGTERM or SIGINT.

Stopping is clean: listeners close, requests already running finish (disk work in worker
threads cannot be interrupted half-way anyway), then the store's lock is released.
"""

from __future__ import annotations

import json
import logging
import os
import signal
from pathlib import Path

import trio

from .chunk.service import ChunkService
from .chunk.store import ChunkStore
from .config import StoragedConfig
from .rpc import auth
from .rpc.address import bound_address, open_listener, parse_address
from .rpc.methods import MethodTable
from .rpc.server import RpcServer

log = logging.getLogger("storaged")


def run(config: StoragedConfig) -> None:
    secret = auth.load_secret(config.secret_file)
    store = ChunkStore(config.data_dir, capacity=config.capacity, reserve=config.reserve)
    store.open()
    try:
        trio.run(_serve, config, store, secret)
    finally:
        store.close()
    log.info("stopped")


async def _serve(config: StoragedConfig, store: ChunkStore, secret: bytes) -> None:
    table = MethodTable()
    ChunkService(store, zone=config.zone).register(table)
    server = RpcServer(table, secret, config.limits())
    with trio.open_signal_receiver(signal.SIGTERM, signal.SIGINT) as signals:
        requested = [parse_address(a) for a in config.listen]
        listeners = [await open_listener(a) for a in requested]
        addresses = [str(bound_address(l, a)) for l, a in zip(listeners, requested)]
        async with trio.open_nursery() as nursery:
            await nursery.start(server.serve, listeners)
            if config.address_file:
                _write_address_file(config.address_file, addresses, store.server_id)
            log.info("serving chunk role id=%s on %s", store.server_id, " ".join(addresses))
            async for signum in signals:
                log.info("received %s, stopping", signal.Signals(signum).name)
                nursery.cancel_scope.cancel()
                break


def _write_address_file(path: str, addresses: list[str], server_id: str) -> None:
    """Tell whoever started us where we listen (the port may have been picked by the kernel)."""
    target = Path(path)
    tmp = target.with_name(target.name + ".tmp")
    tmp.write_text(json.dumps({"addresses": addresses, "server_id": server_id,
                               "pid": os.getpid()}) + "\n")
    os.replace(tmp, target)
