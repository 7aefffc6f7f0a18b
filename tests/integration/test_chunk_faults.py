"""Losing more than R-1 chunk servers, and a full disk, through a real mount: failures are
clear and quick, and no byte read back is ever wrong."""

from __future__ import annotations

import errno
import hashlib
import os
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.helpers import LocalCluster, StoragedProcess, call, mount, mounted_volume
from tests.helpers import write_synced as write

MiB = 1 << 20


@pytest.fixture
def env(tmp_path: Path) -> Iterator[tuple[LocalCluster, Path]]:
    # a small chunk cache, so reads after the loss go to the servers
    with mounted_volume(
        tmp_path, ["--repair-interval", "0"], mount_extra=["--cache-size", "2MiB"]
    ) as pair:
        yield pair


def test_two_of_three_servers_lost_with_r2(env: tuple[LocalCluster, Path]) -> None:
    cluster, mnt = env
    files = {f"f{i}": write(mnt / f"f{i}", os.urandom(3 * MiB + i)) for i in range(8)}
    survivor = 0
    for i in (1, 2):
        cluster.chunks[i].kill()

    # writes fail, clearly and quickly (a fresh file: nothing cached for it)
    started = time.monotonic()
    with pytest.raises(OSError) as info:
        write(mnt / "new", os.urandom(2 * MiB))
    assert info.value.errno == errno.EIO and time.monotonic() - started < 30
    log = (cluster.root.parent / "mount.log").read_text()
    assert "required servers" in log  # the mount's log says why: not enough replicas

    # reads: exactly the right bytes, or EIO; never anything else
    subprocess.run(["sh", "-c", "echo 3 > /proc/sys/vm/drop_caches"], check=False)
    outcome = {}
    for name, digest in files.items():
        try:
            data = (mnt / name).read_bytes()
        except OSError as exc:
            assert exc.errno == errno.EIO
            outcome[name] = "EIO"
            continue
        assert hashlib.sha256(data).hexdigest() == digest, f"{name} read back wrong"
        outcome[name] = "ok"
    # every file whose chunks all have a copy on the survivor reads (others may still come
    # from the mount's own chunk cache, which is right too)
    for name in files:
        ino = os.stat(mnt / name).st_ino
        rows = call(cluster.meta.address, cluster.secret, "fs.chunks", ino, 0, 100)
        if all(survivor in cluster.holders(r[1]) for r in rows):
            assert outcome[name] == "ok", name
    print("outcomes:", sorted(outcome.values()))
    assert "EIO" in outcome.values()  # (8 files of 4 chunks, R=2 over 3 servers: some
    #                                    chunks are surely not on the survivor)

    # the servers come back: everything reads, new writes work, nothing was lost
    for i in (1, 2):
        cluster.chunks[i] = StoragedProcess(
            cluster.chunks[i].data_dir, cluster.secret_file, extra=cluster.chunk_args(i)
        ).start()
    cluster.wait_registered()
    for name, digest in files.items():
        assert hashlib.sha256((mnt / name).read_bytes()).hexdigest() == digest
    assert write(mnt / "new", b"x" * 100) == hashlib.sha256(b"x" * 100).hexdigest()


def test_a_full_chunk_server_sends_writes_to_the_others(tmp_path: Path) -> None:
    """One of three chunk servers sits on a real 8 MiB filesystem that fills up: writes
    through the mount fall through to the other servers and all succeed, every byte reads
    back, and the full server holds no half-written chunk."""
    small = tmp_path / "cluster" / "chunk0"
    small.mkdir(parents=True)
    subprocess.run(["mount", "-t", "tmpfs", "-o", "size=8m", "tmpfs", str(small)], check=True)
    try:
        # every server claims 1 GiB, so placement weighs them alike; server 0's disk is
        # really 8 MiB and fills up (a disk smaller than its configured capacity)
        with mounted_volume(
            tmp_path,
            ["--repair-interval", "0"],
            chunk_extra=["--capacity", "1GiB"],
            mount_extra=["--cache-size", "2MiB"],
        ) as (cluster, mnt):
            files = {f"g{i}": write(mnt / f"g{i}", os.urandom(4 * MiB)) for i in range(10)}
            usage = call(cluster.chunks[0].address, cluster.secret, "chunk.usage")
            # it took copies until its disk (with copies in flight) was full, then refused
            assert MiB <= usage["used"] <= 8 * MiB, usage
            for name, digest in files.items():
                assert hashlib.sha256((mnt / name).read_bytes()).hexdigest() == digest
            assert list((small / "tmp").iterdir()) == []  # no partial chunk left behind
            log = (tmp_path / "mount.log").read_text()
            assert "NO_SPACE" in log  # it did fill, and was skipped
    finally:
        subprocess.run(["umount", "-l", str(small)], check=False)


def test_a_read_whose_tail_has_no_reachable_copy_is_short_or_eio_never_wrong(
    tmp_path: Path,
) -> None:
    """What an application sees when the last piece of a large read cannot be served (its
    only copy, R=1, is on a dead server): the kernel answers the pieces before it (a short
    read, from its page-cache read path) or EIO, and the next read at the short read's end
    is EIO. Never a wrong byte, never a short read that a retry would not expose. The
    figure printed is what docs/operations.md quotes."""
    with mounted_volume(tmp_path, ["--repair-interval", "0"]) as (cluster, _mnt):
        call(cluster.meta.address, cluster.secret, "volume.create", "one", 1 << 30, 1, MiB)
        single = tmp_path / "single"
        single.mkdir()
        mount(cluster, "one", single, tmp_path / "single.log")
        try:
            servers = {s["id"]: s for s in cluster.servers()}
            victim = None
            for attempt in range(30):  # a file whose last piece alone is on one server
                data = os.urandom(3 * MiB)
                write(single / f"f{attempt}", data)
                ino = os.stat(single / f"f{attempt}").st_ino
                rows = call(cluster.meta.address, cluster.secret, "fs.chunks", ino, 0, 2, True)
                holders = [
                    [
                        i
                        for i, c in enumerate(cluster.chunks)
                        if (c.data_dir / "chunks" / r[1][:2] / r[1][2:4] / r[1]).exists()
                    ]
                    for r in rows
                ]
                if holders[2][0] not in holders[0] + holders[1]:
                    victim, name = holders[2][0], f"f{attempt}"
                    break
            assert victim is not None and len(servers) == 3
            subprocess.run(["fusermount3", "-u", str(single)], check=True)
            cluster.chunks[victim].kill()
            mount(cluster, "one", single, tmp_path / "single2.log")  # nothing cached
            fd = os.open(single / name, os.O_RDONLY)
            try:
                try:
                    got = os.pread(fd, 3 * MiB, 0)
                except OSError as exc:
                    assert exc.errno == errno.EIO
                    outcome = "EIO"
                else:
                    assert len(got) < 3 * MiB and got == data[: len(got)], len(got)
                    with pytest.raises(OSError) as again:
                        os.pread(fd, 3 * MiB - len(got), len(got))
                    assert again.value.errno == errno.EIO
                    outcome = f"short read of {len(got)} bytes, then EIO"
            finally:
                os.close(fd)
            print(f"\npread(3 MiB) with the last 1 MiB piece unreachable: {outcome}")
        finally:
            subprocess.run(["fusermount3", "-u", str(single)], capture_output=True, check=False)
