"""Draining a chunk server through 'shoal node': no new writes go to it, every chunk it
holds gets its copies elsewhere, and then it can be stopped and removed losing nothing."""

from __future__ import annotations

import hashlib
import json
import os
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.helpers import LocalCluster, call, mounted_volume
from tests.helpers import write_synced as write

MiB = 1 << 20


@pytest.fixture
def env(tmp_path: Path) -> Iterator[tuple[LocalCluster, Path]]:
    with mounted_volume(
        tmp_path,
        ["--repair-interval", "0", "--repair-rate", "0"],
        mount_extra=["--cache-size", "2MiB"],
    ) as pair:
        yield pair


def node(cluster: LocalCluster, *args: str) -> subprocess.CompletedProcess[str]:
    return cluster.shoal("node", *args, timeout=300)


def test_drain_then_remove_a_server_without_loss(env: tuple[LocalCluster, Path]) -> None:
    cluster, mnt = env
    files = {f"f{i}": write(mnt / f"f{i}", os.urandom(3 * MiB + i)) for i in range(6)}
    victim = call(cluster.chunks[0].address, cluster.secret, "health")["server_id"]
    other = call(cluster.chunks[1].address, cluster.secret, "health")["server_id"]
    held_before = call(cluster.chunks[0].address, cluster.secret, "chunk.usage")["chunks"]
    assert held_before > 0

    refused = node(cluster, "remove", other)  # up and not drained: never
    assert refused.returncode == 1 and "drain" in refused.stderr

    drained = node(cluster, "drain", victim)
    assert drained.returncode == 0 and "is drained" in drained.stdout, (
        drained.stdout + drained.stderr
    )
    listed = {r["id"]: r for r in json.loads(node(cluster, "list", "--json").stdout)}
    assert listed[victim]["draining"] is True and listed[other]["draining"] is False

    time.sleep(5.5)  # mounts re-read the cluster map every 5 s; then they avoid it
    files["late"] = write(mnt / "late", os.urandom(4 * MiB))
    assert call(cluster.chunks[0].address, cluster.secret, "chunk.usage")["chunks"] == held_before

    cluster.chunks[0].stop()  # now it can go
    deadline = time.monotonic() + 20
    while next(s for s in cluster.servers() if s["id"] == victim)["state"] == "up":
        assert time.monotonic() < deadline
        time.sleep(0.1)
    subprocess.run(["sh", "-c", "echo 3 > /proc/sys/vm/drop_caches"], check=False)
    for name, digest in files.items():
        assert hashlib.sha256((mnt / name).read_bytes()).hexdigest() == digest, name
    removed = node(cluster, "remove", victim)
    assert removed.returncode == 0, removed.stderr
    assert victim not in {r["id"] for r in cluster.servers()}
