"""A close stores a small file's chunks on R servers without waiting for their disks; an
fsync, an unmount and the servers' own pass put them there (storaged/chunk/buffered.py).

Seen from the chunk servers (their ``health``: small chunks answered and not yet on
disk), through a real mount.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import pytest

from fusefs.launch import unmount
from tests.helpers import LocalCluster, call, mounted_volume, wait_until

FILES = 20


def waiting(cluster: LocalCluster) -> list[int]:
    return [
        call(c.address, cluster.secret, "health")["buffered"]["waiting"] for c in cluster.chunks
    ]


@pytest.fixture
def slow_pass(tmp_path: Path) -> Iterator[tuple[LocalCluster, Path]]:
    """Chunk servers whose own pass is a minute away: what is on disk is what was asked."""
    with mounted_volume(tmp_path, [], chunk_extra=["--sync-interval", "60"]) as mounted:
        yield mounted


def test_closes_wait_for_no_disk_and_an_fsync_puts_every_buffered_chunk_on_disk(
    slow_pass: tuple[LocalCluster, Path],
) -> None:
    cluster, mnt = slow_pass
    files = {f"f{i}": os.urandom(16384 - i) for i in range(FILES)}
    for name, data in files.items():
        (mnt / name).write_bytes(data)  # each close: stored on 2 servers, not synced
    assert sum(waiting(cluster)) == 2 * FILES
    assert all((mnt / name).read_bytes() == data for name, data in files.items())
    fd = os.open(mnt / "f0", os.O_RDONLY)
    try:
        os.fsync(fd)  # nothing of its own to store: it syncs what the closes left
    finally:
        os.close(fd)
    assert waiting(cluster) == [0, 0, 0]
    with open(mnt / "late", "wb") as f:  # written and fsynced: durable puts, no sync
        f.write(os.urandom(5000))
        f.flush()
        os.fsync(f.fileno())
    assert waiting(cluster) == [0, 0, 0]


def test_an_unmount_puts_every_buffered_chunk_on_disk(
    slow_pass: tuple[LocalCluster, Path],
) -> None:
    cluster, mnt = slow_pass
    for i in range(FILES):
        (mnt / f"g{i}").write_bytes(os.urandom(3000 + i))
    assert sum(waiting(cluster)) == 2 * FILES
    unmount(str(mnt))
    # (the kernel lets go first; the mount process then syncs, commits and exits: the
    # servers' own pass is a minute away, so only the unmount can have done it)
    assert wait_until(lambda: waiting(cluster) == [0, 0, 0], timeout=10)


def test_the_chunk_servers_own_pass_puts_them_on_disk_within_its_interval(
    tmp_path: Path,
) -> None:
    with mounted_volume(tmp_path, []) as (cluster, mnt):  # the default: 0.25 s
        for i in range(FILES):
            (mnt / f"h{i}").write_bytes(os.urandom(4096 + i))
        assert wait_until(lambda: waiting(cluster) == [0, 0, 0], timeout=3)
        assert all(
            call(c.address, cluster.secret, "health")["buffered"]["passes"] >= 1
            for c in cluster.chunks
            if any((c.data_dir / "chunks").rglob("*"))
        )
