"""``shoal up`` / ``down`` / ``status``: a whole local cluster on loopback, for labs and tests.

``up`` starts a meta role, N chunk servers and one mount of a volume, each as a detached
process with its log under WORKDIR/logs, and returns once the mount is live. Every piece
keeps its address across restarts, so running ``up`` again restarts only what is down.
"""

from __future__ import annotations

import os
import time
from dataclasses import dataclass
from pathlib import Path

import trio

from fusefs.launch import is_mounted, mount_background, unmount
from storaged.metaclient import MetaClient
from storaged.processes import is_our_process, spawn_daemon, stop_process, wait_for_address_file
from storaged.rpc import FsError, RpcClient, auth, tls

from .clusterfile import FILENAME, ChunkServerEntry, ClusterFile, ProcessEntry

DEFAULT_VOLUME = "default"
HEARTBEAT = ["--heartbeat-interval", "1", "--heartbeat-timeout", "5"]


def default_workdir() -> Path:
    if os.geteuid() == 0:
        return Path("/var/lib/shoalfs")
    return Path(os.environ.get("XDG_DATA_HOME", Path.home() / ".local/share")) / "shoalfs"


def default_mountpoint() -> Path:
    return Path("/mnt/shoalfs") if os.geteuid() == 0 else Path.home() / "shoalfs"


@dataclass
class UpOptions:
    workdir: Path
    chunk_servers: int = 3
    replicas: int = 2
    mountpoint: Path | None = None
    capacity: int = 10 << 30
    chunk_size: int = 4 << 20


def up(o: UpOptions) -> ClusterFile:
    """Start what is not running yet and return the cluster's description."""
    workdir = o.workdir
    workdir.mkdir(parents=True, exist_ok=True)
    secret_file = workdir / "secret"
    if not secret_file.exists():
        auth.write_secret_file(secret_file)
    previous = _load_or_none(workdir / FILENAME)
    config = tls.active()
    cluster = ClusterFile(
        workdir=str(workdir),
        secret_file=str(secret_file),
        tls_dir=str(config.directory) if config else "",
    )

    old_meta = previous.meta_process if previous else None
    if previous and previous.meta and old_meta and is_our_process(old_meta.pid, old_meta.data_dir):
        meta, cluster.meta_process = previous.meta, old_meta
    else:
        listen = previous.meta if previous and previous.meta else "tcp://127.0.0.1:0"
        meta, cluster.meta_process = _start(
            workdir, "meta", secret_file, listen, ["--roles", "meta", *HEARTBEAT]
        )
    cluster.meta = meta
    cluster.save(workdir / FILENAME)

    for index in range(1, o.chunk_servers + 1):
        name = f"chunk{index}"
        old = (
            next((s for s in previous.chunk_servers if s.name == name), None) if previous else None
        )
        if old is not None and is_our_process(old.pid, old.data_dir):
            cluster.chunk_servers.append(old)
            continue
        listen = old.address if old else "tcp://127.0.0.1:0"
        address, proc = _start(
            workdir, name, secret_file, listen, ["--meta", meta, "--zone", name, *HEARTBEAT]
        )
        cluster.chunk_servers.append(
            ChunkServerEntry(name, address, proc.data_dir, proc.pid, proc.log)
        )
        cluster.save(workdir / FILENAME)

    secret = auth.load_secret(secret_file)
    ids = trio.run(_wait_and_prepare_volume, meta, secret, o)
    for entry in cluster.chunk_servers:
        entry.server_id = ids.get(entry.address, entry.server_id)
    cluster.volume = DEFAULT_VOLUME
    mountpoint = o.mountpoint or (
        Path(previous.mountpoint) if previous and previous.mountpoint else default_mountpoint()
    )
    cluster.mountpoint = str(mountpoint)
    if (
        previous
        and previous.mount_pid
        and is_our_process(previous.mount_pid, str(mountpoint))
        and is_mounted(mountpoint)
    ):
        cluster.mount_pid = previous.mount_pid
    else:
        if is_mounted(mountpoint):  # a dead mount process leaves "transport not connected"
            unmount(str(mountpoint), lazy=True)
        mountpoint.mkdir(parents=True, exist_ok=True)
        cluster.mount_pid = mount_background(
            DEFAULT_VOLUME,
            str(mountpoint),
            meta,
            str(secret_file),
            workdir / "logs" / "mount.log",
            [],
        )
    cluster.save(workdir / FILENAME)
    return cluster


def _start(
    workdir: Path, name: str, secret_file: Path, listen: str, extra: list[str]
) -> tuple[str, ProcessEntry]:
    data_dir = workdir / name
    log_path = workdir / "logs" / f"{name}.log"
    address_file = workdir / "run" / f"{name}.json"
    address_file.parent.mkdir(parents=True, exist_ok=True)
    address_file.unlink(missing_ok=True)
    args = [
        "--data-dir",
        str(data_dir),
        "--secret-file",
        str(secret_file),
        "--address-file",
        str(address_file),
        *extra,
    ]
    proc = spawn_daemon(["--listen", listen, *args], log_path)
    try:
        info = wait_for_address_file(address_file, proc, log_path, timeout=15)
    except RuntimeError:
        if listen.endswith(":0"):
            raise
        # the old port is taken by something else now: take a new one
        proc = spawn_daemon(["--listen", "tcp://127.0.0.1:0", *args], log_path)
        info = wait_for_address_file(address_file, proc, log_path)
    addresses = info["addresses"]
    assert isinstance(addresses, list)
    return str(addresses[0]), ProcessEntry(proc.pid, str(data_dir), str(log_path))


async def _wait_and_prepare_volume(meta: str, secret: bytes, o: UpOptions) -> dict[str, str]:
    """Wait until the chunk servers registered, then make sure the volume exists."""
    async with RpcClient(secret) as rpc:
        client = MetaClient(rpc, meta)
        deadline = time.monotonic() + 30
        while True:
            servers = await client.cluster_servers()
            if sum(s["state"] == "up" for s in servers) >= o.chunk_servers:
                break
            if time.monotonic() > deadline:
                raise RuntimeError(
                    f"only {len(servers)} of {o.chunk_servers} chunk servers "
                    "registered with the meta role within 30s; see the logs"
                )
            await trio.sleep(0.1)
        try:
            await client.volume_get(DEFAULT_VOLUME)
        except FsError:
            await client.volume_create(
                DEFAULT_VOLUME, o.capacity, o.replicas, o.chunk_size, {"created_by": "shoal up"}
            )
        return {s["address"]: s["id"] for s in servers}


def down(workdir: Path) -> list[str]:
    """Unmount and stop every process of the cluster; data and cluster.json stay.

    Returns the names of what was running and is stopped now.
    """
    cluster = ClusterFile.load(workdir / FILENAME)
    stopped = []
    if cluster.mount_pid and cluster.mountpoint:
        if stop_process(cluster.mount_pid, cluster.mountpoint, timeout=60):
            stopped.append("mount")
        if is_mounted(cluster.mountpoint):
            unmount(cluster.mountpoint, lazy=True)
    cluster.mount_pid = None
    for server in cluster.chunk_servers:
        if stop_process(server.pid, server.data_dir):
            stopped.append(server.name)
        server.pid = 0
    if cluster.meta_process:
        if stop_process(cluster.meta_process.pid, cluster.meta_process.data_dir):
            stopped.append("meta")
        cluster.meta_process.pid = 0
    # Keep the description: the next 'up' reuses the same ports, volume and mountpoint.
    cluster.save(workdir / FILENAME)
    return stopped


def _load_or_none(path: Path) -> ClusterFile | None:
    try:
        return ClusterFile.load(path)
    except FileNotFoundError:
        return None
