"""One mount of one volume: connect, mount, serve, and on SIGTERM flush and unmount.

Teardown order matters and is explicit: stop taking requests, commit every open file's
pending writes, unmount, then close the connections the flush needed.
"""

from __future__ import annotations

import faulthandler
import json
import logging
import os
import signal
import socket
from dataclasses import dataclass
from pathlib import Path

import pyfuse3
import trio

from storaged.data.client import DataClient
from storaged.metaclient import MetaClient
from storaged.metrics import parse_listen, serve_http
from storaged.rpc import RpcClient, RpcError, auth, requestid
from storaged.settings import setting

from .chunkcache import ChunkCache
from .filedata import VolumeIO
from .observe import MountObserver, instrument
from .operations import Operations
from .readahead import raise_readahead

log = logging.getLogger("fusefs")


@dataclass
class MountOptions:
    """One mount's settings; those with a help are ``shoal mount``'s and ``python -m
    fusefs``'s flags (made by fusefs/command.py, storaged/settings.py)."""

    volume: str
    mountpoint: str
    meta: str
    secret_file: str
    cache_bytes: int = setting(
        128 << 20,
        "memory for cached chunk contents",
        flag="cache-size",
        metavar="SIZE",
        kind="size",
    )
    readahead_bytes: int = setting(
        4 << 20,
        "the kernel's readahead window for sequential reads (default {default}; 0 "
        "keeps the kernel's 128KiB); needs root, else left as it is",
        flag="readahead",
        metavar="SIZE",
        kind="size",
    )
    entry_timeout: float = setting(
        1.0,
        "how long the kernel may cache names when the meta role sends no invalidations",
        metavar="SECONDS",
        kind="seconds",
    )
    attr_timeout: float = setting(
        1.0,
        "how long the kernel may cache attributes when the meta role sends no invalidations",
        metavar="SECONDS",
        kind="seconds",
    )
    # how long the kernel may keep entries and attributes while the meta role sends this
    # mount invalidations (fusefs/coherence.py); 0: never longer than the timeouts above
    cache_lease: float = setting(
        30.0,
        "how long the kernel may cache names and attributes while the meta role sends "
        "this mount an invalidation for every change made elsewhere (default {default}; "
        "0: only the timeouts above)",
        metavar="SECONDS",
        kind="seconds",
    )
    delegate: bool = setting(
        True,
        "answer creates, unlinks and renames in a directory this mount alone uses from "
        "its own state, sending them to the meta role in batches within 0.5s and before "
        "any close of a written file, fsync or unmount (docs/delegations.md; default "
        "{default}; needs --cache-lease above 0)",
        kind="bool",
    )
    buffered_puts: bool = setting(
        True,
        "a close of a small written file has its chunks written by the chunk servers "
        "and put on their disks together within 0.25s (one syncfs), not fsynced one by "
        "one before the close returns; fsync and unmount still wait for the disks "
        "(default {default})",
        kind="bool",
    )
    max_unsaved_bytes: int = setting(
        128 << 20,
        "memory for written data not yet stored, over all open files (default "
        "{default}); a write beyond it waits for uploads",
        flag="max-unsaved",
        metavar="SIZE",
        kind="size",
    )
    parallel_uploads: int = setting(
        4,
        "pieces uploaded at once per mount (default {default}); each holds a chunk in memory",
        metavar="N",
        kind="count",
    )
    session_heartbeat: float = setting(
        10.0,
        "how often the mount tells the meta role it is alive (default {default}; keep it "
        "well below the meta role's --session-timeout)",
        metavar="SECONDS",
        kind="seconds",
    )
    # how long calls wait for an unreachable meta role (restarts)
    meta_wait: float = setting(
        60.0,
        "how long a file operation waits for a meta role that does not answer (a "
        "restart) before failing with EIO (default {default}; 0: fail at once)",
        metavar="SECONDS",
        kind="seconds",
    )
    metrics_listen: str = setting(
        "",
        "serve Prometheus /metrics (FUSE operations by result, latency, bytes, open "
        "files, memory) and /healthz, /readyz here (docs/operations.md)",
        metavar="HOST:PORT",
        default_text="off",
    )
    ready_file: str = ""
    fuse_workers: int = 32


def fuse_options(volume: str) -> set[str]:
    options = set(pyfuse3.default_options)  # default_permissions: the kernel checks modes
    options |= {f"fsname=shoalfs:{volume}", "subtype=shoalfs"}
    if os.geteuid() == 0:
        options.add("allow_other")  # pods run as many uids; without it only root gets in
    return options


def run(options: MountOptions) -> None:
    faulthandler.enable()
    secret = auth.load_secret(options.secret_file)
    if not Path(options.mountpoint).is_dir():
        raise ValueError(f"mountpoint {options.mountpoint} is not a directory")
    requestid.from_environment()
    trio.run(_serve, options, secret)


def _start_metrics(options: MountOptions) -> tuple[MountObserver | None, str]:
    """The observer and the HOST:PORT it answers on ('' when off; the port is the one the
    kernel picked when 0 was asked for, which is how the CSI mounter runs its mounts)."""
    if not options.metrics_listen:
        return None, ""
    observer = MountObserver(options.volume)
    http = serve_http(*parse_listen(options.metrics_listen), observer.registry, observer.health)
    host, port = http.server_address[:2]
    host = host.decode() if isinstance(host, bytes) else host
    log.info("metrics and health on http://%s:%d/metrics", host, port)
    return observer, f"[{host}]:{port}" if ":" in str(host) else f"{host}:{port}"


def _write_ready_file(path: str, metrics: str) -> None:
    """Tell whoever started us that the mount is live, our pid, and where our metrics are.
    Written whole, then renamed: the reader never sees half of it."""
    target = Path(path)
    tmp = target.with_name(target.name + ".tmp")
    tmp.write_text(json.dumps({"pid": os.getpid(), "metrics": metrics}) + "\n")
    os.replace(tmp, target)


async def _serve(options: MountOptions, secret: bytes) -> None:
    observer, metrics_address = _start_metrics(options)
    async with RpcClient(secret) as rpc:
        meta = MetaClient(rpc, options.meta)
        volume = await meta.volume_get(options.volume)
        async with trio.open_nursery() as nursery:
            io = VolumeIO(
                meta=meta,
                data=DataClient(meta, buffered=options.buffered_puts),
                cache=ChunkCache(options.cache_bytes),
                chunk_size=volume["chunk_size"],
                replicas=volume["replicas"],
                uploads=trio.CapacityLimiter(options.parallel_uploads),
                nursery=nursery,
                max_unsaved_bytes=options.max_unsaved_bytes,
            )
            ops = Operations(
                io,
                volume,
                entry_timeout=options.entry_timeout,
                attr_timeout=options.attr_timeout,
                cache_lease=options.cache_lease,
                delegate=options.delegate,
            )
            instrument(ops, observer)
            description = f"{socket.gethostname()}:{options.mountpoint} pid {os.getpid()}"
            await ops.open_session(description)
            if options.meta_wait > 0:  # after start-up: a wrong address fails at once
                meta.be_patient(options.meta_wait)
            nursery.start_soon(
                _keep_session, ops, io, options.volume, options.session_heartbeat, observer
            )
            nursery.start_soon(ops.sync_holds)
            await nursery.start(ops.delegator.run)
            pyfuse3.init(ops, options.mountpoint, fuse_options(options.volume))
            ops.in_kernel = True
            nursery.start_soon(ops.listen)  # it tells the kernel: only once there is one
            if observer is not None:
                observer.mounted = observer.session_ok = True
                nursery.start_soon(observer.refresh_loop, ops)
            unmounted = False
            try:
                log.info(
                    "mounted volume %s at %s (R=%d, chunk size %d)",
                    options.volume,
                    options.mountpoint,
                    volume["replicas"],
                    volume["chunk_size"],
                )
                if options.ready_file:
                    _write_ready_file(options.ready_file, metrics_address)
                nursery.start_soon(_stop_on_signal, ops)
                nursery.start_soon(raise_readahead, options.mountpoint, options.readahead_bytes)
                await pyfuse3.main(min_tasks=4, max_tasks=options.fuse_workers)
                await ops.flush_all()
                await ops.stop_listening()
                ops.in_kernel = False  # nothing may tell the kernel anything from here on
                pyfuse3.close(unmount=True)
                unmounted = True
            finally:
                if not unmounted:
                    ops.in_kernel = False
                    pyfuse3.close(unmount=True)
            log.info("unmounted %s", options.mountpoint)
            with trio.move_on_after(10):
                try:
                    await meta.session_close(ops.session)
                except RpcError as exc:  # it expires on its own
                    log.warning("could not close the mount session: %s", exc)
            nursery.cancel_scope.cancel()


async def _keep_session(
    ops: Operations, io: VolumeIO, volume: str, interval: float, observer: MountObserver | None
) -> None:
    """Heartbeats keep our holds alive; if the meta role forgot us, register again.
    Each beat also re-reads the volume's replica count, so a change (CSI ModifyVolume)
    applies to this mount's next writes without a remount."""
    requestid.set_current(None)  # not part of the request that started the mount
    while True:
        await trio.sleep(interval)
        try:
            session = ops.session
            if not await ops.meta.session_heartbeat(session):
                await ops.renew_session(session)
            await ops.drop_orphans()
            replicas = (await ops.meta.volume_get(volume))["replicas"]
            if replicas != io.replicas:
                log.info(
                    "volume %s: replica count %d -> %d for new writes",
                    volume,
                    io.replicas,
                    replicas,
                )
                io.replicas = replicas
            if observer is not None:
                observer.session_ok = True
        except RpcError as exc:
            log.warning("session heartbeat failed: %s", exc)
            if observer is not None:
                observer.session_ok = False


async def _stop_on_signal(ops: Operations) -> None:
    with trio.open_signal_receiver(signal.SIGTERM, signal.SIGINT) as signals:
        async for signum in signals:
            log.info(
                "received %s: flushing open files, then unmounting", signal.Signals(signum).name
            )
            await ops.flush_all()
            pyfuse3.terminate()
            return
