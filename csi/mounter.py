"""``shoal mounter``: the process that owns a node's fusefs processes.

It answers one request, ``mounter.mount(volume, mountpoint)``, over an authenticated unix
socket (the storaged protocol and the cluster secret), starts the mount with the same
LocalSpawner the node plugin uses on plain hosts, and reaps the processes as they exit.
It holds no other state: the node plugin keeps the record of what is staged, and unmounts
with umount, after which the fusefs process commits what it has and exits by itself.
"""

from __future__ import annotations

import errno
import logging
import os
import signal
from pathlib import Path
from typing import Any

import trio
from prometheus_client import CollectorRegistry
from prometheus_client.process_collector import ProcessCollector

from storaged import __version__
from storaged.metrics import Health, parse_listen, serve_http
from storaged.rpc import FsError, auth
from storaged.rpc.address import open_listener, parse_address
from storaged.rpc.methods import MethodTable
from storaged.rpc.server import RpcServer

from .mountmetrics import merged_registry
from .spawner import LocalSpawner

log = logging.getLogger("csi.mounter")


async def _serve(socket_path: str, secret: bytes, spawner: LocalSpawner, probes: Health) -> None:
    table = MethodTable()

    async def mount(volume: str, mountpoint: str) -> int:
        if not os.path.isabs(mountpoint):
            raise FsError(errno.EINVAL, f"mountpoint {mountpoint!r} must be an absolute path")
        try:
            pid = await trio.to_thread.run_sync(spawner.mount, volume, mountpoint)
        except RuntimeError as exc:
            raise FsError(errno.EIO, str(exc)) from None
        log.info("mounted %s at %s (fusefs pid %d)", volume, mountpoint, pid)
        return pid

    async def health() -> dict[str, Any]:
        return {"status": "ok", "role": "mounter", "version": __version__}

    table.add("mounter.mount", mount)
    table.add("health", health)
    server = RpcServer(table, secret)
    if await trio.Path(socket_path).exists():
        await trio.Path(socket_path).unlink()
    Path(socket_path).parent.mkdir(parents=True, exist_ok=True)
    listener = await open_listener(parse_address(f"unix://{socket_path}"))
    os.chmod(socket_path, 0o600)
    with trio.open_signal_receiver(signal.SIGTERM, signal.SIGINT) as signals:
        async with trio.open_nursery() as nursery:
            await nursery.start(server.serve, [listener])
            nursery.start_soon(_reap, spawner, probes)
            log.info("mounter listening on unix://%s", socket_path)
            async for signum in signals:
                # Mounts stay: the processes are in their own sessions. (In a container
                # they end with it; see docs/deploy.md on upgrading the mounter.)
                log.info(
                    "received %s, stopping (mounts are left running)", signal.Signals(signum).name
                )
                nursery.cancel_scope.cancel()
                break


async def _reap(spawner: LocalSpawner, health: Health) -> None:
    """Also the liveness clock: a loop that stops turning stops reaping and answering."""
    while True:
        health.beat()
        await trio.to_thread.run_sync(spawner.reap)  # reads /proc/self/mountinfo
        await trio.sleep(2)


def run(
    socket_path: str,
    secret_file: str,
    meta: str,
    log_dir: Path,
    mount_args: list[str],
    metrics_listen: str = "",
) -> None:
    """Serve until SIGTERM. With ``metrics_listen``, every mount gets a loopback metrics
    endpoint, and this process serves its own metrics and all of theirs (a ``volume`` and
    ``mountpoint`` label on each), plus /healthz and /readyz."""
    secret = auth.load_secret(secret_file)
    spawner = LocalSpawner(meta, secret_file, log_dir, mount_args, metrics=bool(metrics_listen))

    def listening() -> tuple[bool, str]:
        if os.path.exists(socket_path):
            return True, f"listening on {socket_path}"
        return False, "not listening yet"

    health = Health(listening)
    if metrics_listen:
        own = CollectorRegistry()
        ProcessCollector(registry=own)
        http = serve_http(
            *parse_listen(metrics_listen), merged_registry(own, spawner.mounts), health
        )
        log.info(
            "metrics (its own and its mounts') on http://%s:%d/metrics", *http.server_address[:2]
        )
    trio.run(_serve, socket_path, secret, spawner, health)
