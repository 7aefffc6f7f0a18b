"""``shoal up`` / ``down`` / ``status``: a whole local cluster on loopback, for labs and tests."""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import trio

from storaged.rpc import RpcClient, RpcError, auth

from .clusterfile import FILENAME, ChunkServerEntry, ClusterFile
from .processes import is_our_process, spawn_daemon, stop_process, wait_for_address_file


def default_workdir() -> Path:
    if os.geteuid() == 0:
        return Path("/var/lib/shoalfs")
    return Path(os.environ.get("XDG_DATA_HOME", Path.home() / ".local/share")) / "shoalfs"


def up(workdir: Path, chunk_servers: int) -> ClusterFile:
    """Start what is not running yet and return the cluster's description."""
    workdir.mkdir(parents=True, exist_ok=True)
    secret_file = workdir / "secret"
    if not secret_file.exists():
        auth.write_secret_file(secret_file)
    cluster = ClusterFile(workdir=str(workdir), secret_file=str(secret_file))
    previous = _load_or_none(workdir / FILENAME)
    for index in range(1, chunk_servers + 1):
        name = f"chunk{index}"
        old = next((s for s in previous.chunk_servers if s.name == name), None) if previous else None
        if old is not None and is_our_process(old.pid, old.data_dir):
            cluster.chunk_servers.append(old)
            continue
        cluster.chunk_servers.append(_start_chunk_server(workdir, name, secret_file))
    cluster.save(workdir / FILENAME)
    return cluster


def _start_chunk_server(workdir: Path, name: str, secret_file: Path) -> ChunkServerEntry:
    data_dir = workdir / name
    log_path = workdir / "logs" / f"{name}.log"
    address_file = workdir / "run" / f"{name}.json"
    address_file.parent.mkdir(parents=True, exist_ok=True)
    address_file.unlink(missing_ok=True)
    proc = spawn_daemon(["--listen", "tcp://127.0.0.1:0", "--data-dir", str(data_dir),
                         "--secret-file", str(secret_file), "--address-file", str(address_file),
                         "--zone", name], log_path)
    info = wait_for_address_file(address_file, proc, log_path)
    addresses = info["addresses"]
    assert isinstance(addresses, list)
    return ChunkServerEntry(name=name, address=str(addresses[0]), data_dir=str(data_dir),
                            pid=proc.pid, log=str(log_path), server_id=str(info["server_id"]))


def down(workdir: Path) -> list[str]:
    """Stop every process of the cluster; data stays on disk. Returns the names stopped."""
    cluster = ClusterFile.load(workdir / FILENAME)
    stopped = [s.name for s in cluster.chunk_servers if stop_process(s.pid, s.data_dir)]
    (workdir / FILENAME).unlink()
    return stopped


def _load_or_none(path: Path) -> ClusterFile | None:
    try:
        return ClusterFile.load(path)
    except FileNotFoundError:
        return None


@dataclass
class ServerStatus:
    name: str
    address: str
    healthy: bool
    detail: dict[str, Any]
    error: str = ""


def status(cluster: ClusterFile, timeout: float = 3.0) -> list[ServerStatus]:
    """Ask every server for its health and usage, in parallel."""
    secret = auth.load_secret(cluster.secret_file)
    results: list[ServerStatus] = []

    async def probe(client: RpcClient, server: ChunkServerEntry) -> None:
        try:
            health = await client.call(server.address, "health", timeout=timeout, retries=0)
            usage = await client.call(server.address, "chunk.usage", timeout=timeout, retries=0)
            results.append(ServerStatus(server.name, server.address, True, {**health, **usage}))
        except RpcError as exc:
            results.append(ServerStatus(server.name, server.address, False, {}, str(exc)))

    async def main() -> None:
        async with RpcClient(secret, connect_timeout=timeout) as client:
            async with trio.open_nursery() as nursery:
                for server in cluster.chunk_servers:
                    nursery.start_soon(probe, client, server)

    trio.run(main)
    order = {s.name: i for i, s in enumerate(cluster.chunk_servers)}
    return sorted(results, key=lambda r: order[r.name])
