"""Run a storaged process: open its roles' state, listen, serve until SIGTERM or SIGINT.

A process runs the chunk role, the meta role, or both (``--roles chunk,meta``). Stopping is
clean: listeners close, requests already running finish (disk and database work in worker
threads cannot be interrupted half-way anyway), then the stores are closed.
"""

from __future__ import annotations

import contextlib
import functools
import json
import logging
import os
import signal
import time
from pathlib import Path
from typing import Any

import trio

from . import __version__
from .chunk.scrub import scrub_loop
from .chunk.service import ChunkService
from .chunk.store import ChunkStore
from .config import StoragedConfig
from .gc import collect as collect_garbage
from .meta.db import open_database
from .meta.service import MetaService
from .metaclient import MetaClient
from .metrics import serve_http
from .observe import StoragedObserver
from .repair import repair_loop
from .rpc import RpcClient, RpcError, auth
from .rpc.address import bound_address, open_listener, parse_address
from .rpc.methods import MethodTable
from .rpc.server import RpcServer

log = logging.getLogger("storaged")


def run(config: StoragedConfig) -> None:
    secret = auth.load_secret(config.secret_file)
    Path(config.data_dir).mkdir(parents=True, exist_ok=True)
    with contextlib.ExitStack() as stack:
        chunk = meta = None
        if "chunk" in config.roles:
            store = ChunkStore(
                config.data_dir,
                capacity=config.capacity,
                reserve=config.reserve,
                direct_io=config.direct_io,
            )
            store.open()
            stack.callback(store.close)
            chunk = ChunkService(store, zone=config.zone)
        if "meta" in config.roles:
            db_path = Path(config.meta_db or Path(config.data_dir) / "meta.db")
            conn = open_database(db_path)
            stack.callback(conn.close)
            meta = MetaService(
                conn,
                heartbeat_timeout=config.heartbeat_timeout,
                session_timeout=config.session_timeout,
                backup_dir=db_path.parent / "meta-backups",
            )
        trio.run(_serve, config, secret, chunk, meta)
    log.info("stopped")


async def _serve(
    config: StoragedConfig, secret: bytes, chunk: ChunkService | None, meta: MetaService | None
) -> None:
    table = MethodTable()
    started = time.monotonic()
    for service in (chunk, meta):
        if service is not None:
            service.register(table)

    async def health() -> dict[str, Any]:
        info: dict[str, Any] = {
            "status": "ok",
            "roles": config.roles,
            "version": __version__,
            "uptime_seconds": round(time.monotonic() - started, 3),
        }
        if chunk is not None:
            info.update(chunk.health_info())
        return info

    table.add("health", health)
    observer = StoragedObserver(chunk, meta)
    server = RpcServer(table, secret, config.limits(), observer=observer.rpc.observe)
    if config.metrics_listen:
        http = serve_http(*config.metrics_address(), observer.registry, observer.health)
        log.info("metrics and health on http://%s:%d/metrics", *http.server_address[:2])
    with trio.open_signal_receiver(signal.SIGTERM, signal.SIGINT) as signals:
        requested = [parse_address(a) for a in config.listen]
        listeners = [await open_listener(a) for a in requested]
        addresses = [str(bound_address(listener, a)) for listener, a in zip(listeners, requested)]
        async with trio.open_nursery() as nursery:
            await nursery.start(server.serve, listeners)
            server_id = chunk.store.server_id if chunk is not None else ""
            if config.address_file:
                _write_address_file(config.address_file, addresses, server_id)
            log.info("serving roles %s on %s", ",".join(config.roles), " ".join(addresses))
            observer.listening = True
            if config.metrics_listen:
                nursery.start_soon(observer.refresh_loop)
            if meta is not None:
                nursery.start_soon(meta.run_liveness)
                nursery.start_soon(meta.commits.run)
                if config.gc_interval > 0:
                    nursery.start_soon(_collect_garbage, config, secret, addresses[0])
                nursery.start_soon(_repair, config, secret, addresses[0], meta)
            if chunk is not None and config.meta:
                advertised = config.advertise or addresses[0]
                nursery.start_soon(_send_heartbeats, config, secret, chunk, advertised, observer)
            if chunk is not None:
                nursery.start_soon(chunk.sync_loop, config.sync_interval)
            if chunk is not None and config.scrub_rate > 0:
                nursery.start_soon(
                    functools.partial(
                        scrub_loop,
                        chunk.store,
                        chunk.scrub,
                        rate=config.scrub_rate,
                        interval=config.scrub_interval,
                        secret=secret,
                        meta=config.meta,
                        server_id=chunk.store.server_id,
                    )
                )
            async for signum in signals:
                log.info("received %s, stopping", signal.Signals(signum).name)
                if meta is not None:  # what was answered goes to disk before we go
                    await meta.commits.durable()
                if chunk is not None:
                    await trio.to_thread.run_sync(chunk.store.sync)
                nursery.cancel_scope.cancel()
                break


async def _collect_garbage(config: StoragedConfig, secret: bytes, own_address: str) -> None:
    """Meta role: a garbage collection pass every gc_interval seconds (the first one after
    an interval too, so a restart does not start with a sweep)."""
    async with RpcClient(secret) as client:
        while True:
            await trio.sleep(config.gc_interval)
            try:
                await collect_garbage(MetaClient(client, own_address), config.gc_grace)
            except (RpcError, ValueError) as exc:
                log.warning("garbage collection pass failed: %s", exc)


async def _repair(
    config: StoragedConfig, secret: bytes, own_address: str, meta: MetaService
) -> None:
    async with RpcClient(secret) as client:
        await repair_loop(
            client,
            MetaClient(client, own_address),
            meta.repair,
            interval=config.repair_interval,
            down_grace=config.repair_down_grace,
            rate=config.repair_rate,
            rebalance_min_age=config.rebalance_min_age if config.rebalance else None,
        )


async def _send_heartbeats(
    config: StoragedConfig,
    secret: bytes,
    chunk: ChunkService,
    address: str,
    observer: StoragedObserver,
) -> None:
    """Tell the meta role we are alive, how full we are, and where to reach us."""
    registered = False
    async with RpcClient(secret, timeout=config.heartbeat_interval * 2) as client:
        meta = MetaClient(client, config.meta)
        while True:
            try:
                usage = await chunk.usage_report()
                await meta.cluster_heartbeat(chunk.store.server_id, address, config.zone, usage)
                if not registered:
                    log.info("registered with the meta role at %s", config.meta)
                registered = observer.registered = True
            except RpcError as exc:
                if registered:
                    log.warning("heartbeat to %s failed: %s", config.meta, exc)
                registered = observer.registered = False
            await trio.sleep(config.heartbeat_interval)


def _write_address_file(path: str, addresses: list[str], server_id: str) -> None:
    """Tell whoever started us where we listen (the port may have been picked by the kernel)."""
    target = Path(path)
    tmp = target.with_name(target.name + ".tmp")
    tmp.write_text(
        json.dumps({"addresses": addresses, "server_id": server_id, "pid": os.getpid()}) + "\n"
    )
    os.replace(tmp, target)
