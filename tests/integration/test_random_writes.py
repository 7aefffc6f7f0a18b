"""Small writes at random places of a stored file, through a real mount: a touched piece is
not stored again per handful of writes (its writes become slices over it, or it is stored
once at fsync), and every byte reads back right before the fsync, after it and after a
remount."""

from __future__ import annotations

import errno
import os
import random
import sys
from pathlib import Path

import pytest

from fusefs.pieces import MAX_SLICES
from storaged.rpc import FsError
from tests.helpers import StoragedProcess, call, mounted_volume, remount

MiB = 1 << 20


def stored_chunks(cluster) -> dict[tuple[int, str], int]:
    """{(server, chunk file): size} over every chunk server."""
    return {
        (i, name): os.path.getsize(os.path.join(top, name))
        for i, c in enumerate(cluster.chunks)
        for top, _, names in os.walk(c.data_dir / "chunks")
        for name in names
        if not name.endswith(".blocks")
    }


def test_random_small_writes_store_each_piece_once_and_read_back(tmp_path: Path) -> None:
    seed = random.randrange(1 << 30)
    print(f"seed {seed}", file=sys.stderr)
    rng = random.Random(seed)
    model = bytearray(os.urandom(40 * MiB + 777))  # 1 MiB chunks: 41 pieces
    with mounted_volume(tmp_path, ["--gc-interval", "0"]) as (cluster, mnt):
        (mnt / "file").write_bytes(model)
        remount(cluster, mnt, tmp_path / "mount2.log")  # nothing of it in the mount's memory
        before = stored_chunks(cluster)
        touched: set[int] = set()
        fd = os.open(mnt / "file", os.O_RDWR)
        try:
            for n in range(400):
                off = rng.randrange(len(model) + 5000)
                data = os.urandom(rng.choice([4096, 1, rng.randrange(1, 20_000)]))
                assert os.pwrite(fd, data, off) == len(data)
                if len(model) < off:
                    model.extend(bytes(off - len(model)))
                model[off : off + len(data)] = data
                touched.update(range(off // MiB, (off + len(data) - 1) // MiB + 1))
                if n % 20 == 0:  # reads of pieces written but not stored
                    at = rng.randrange(len(model))
                    size = rng.randrange(1, 3 * MiB)
                    assert os.pread(fd, size, at) == model[at : at + size], f"seed {seed}"
            os.fsync(fd)
        finally:
            os.close(fd)
        new = stored_chunks(cluster).keys() - before.keys()
        # R=2: each touched piece stored once is two new chunk files (fewer if two pieces
        # came out the same); storing pieces again and again makes many more
        assert len(new) <= 2 * len(touched), (len(new), len(touched), seed)
        assert (mnt / "file").read_bytes() == model, f"seed {seed}"
        remount(cluster, mnt, tmp_path / "mount3.log")
        assert (mnt / "file").read_bytes() == model, f"seed {seed}"


def test_small_writes_into_pieces_uploaded_but_not_committed(tmp_path: Path) -> None:
    """A full piece is sent while the writer goes on; small writes into it before the commit
    change the piece that was sent (or is being sent), and nothing of either is lost."""
    first = os.urandom(3 * MiB)
    with mounted_volume(tmp_path, []) as (cluster, mnt):
        fd = os.open(mnt / "file", os.O_RDWR | os.O_CREAT, 0o644)
        try:
            model = bytearray(first)
            os.pwrite(fd, first, 0)
            for off in (10, MiB - 2, MiB + 4096, 2 * MiB + 5, 3 * MiB - 1):
                os.pwrite(fd, b"patch", off)
                model[off : off + 5] = b"patch"
            assert os.pread(fd, len(model) + 10, 0) == model
            os.fsync(fd)
        finally:
            os.close(fd)
        remount(cluster, mnt, tmp_path / "mount2.log")
        assert (mnt / "file").read_bytes() == model


def test_rounds_of_small_writes_become_slices_and_pieces_are_written_whole_again(
    tmp_path: Path,
) -> None:
    """Rounds of small writes, each ended by fsync: a round stores no more than its own
    bytes (slices, R times, packed in one chunk), not the pieces under them; a piece with
    too many slices is written whole again. Reads in between, in the same mount and after remounts, see every
    write."""
    seed = random.randrange(1 << 30)
    print(f"seed {seed}", file=sys.stderr)
    rng = random.Random(seed)
    pieces = 6
    model = bytearray(os.urandom(pieces * MiB))
    most_slices, compacted = 0, False
    with mounted_volume(tmp_path, ["--gc-interval", "0"]) as (cluster, mnt):
        (mnt / "file").write_bytes(model)
        remount(cluster, mnt, tmp_path / "mount.log")
        ino = os.stat(mnt / "file").st_ino
        slices_before = [0] * pieces
        for r in range(24):
            before = stored_chunks(cluster)
            written = 0
            fd = os.open(mnt / "file", os.O_RDWR)
            try:
                for _ in range(30):
                    off = rng.randrange(len(model) - 4096)
                    data = os.urandom(rng.choice([1, 512, 4096]))
                    assert os.pwrite(fd, data, off) == len(data)
                    model[off : off + len(data)] = data
                    written += len(data)
                at = rng.randrange(len(model))
                assert os.pread(fd, 100_000, at) == model[at : at + 100_000], f"seed {seed}"
                os.fsync(fd)
            finally:
                os.close(fd)
            rows = call(cluster.meta.address, cluster.secret, "fs.chunks", ino, 0, pieces, True)
            slices = [len(row[4]) if len(row) > 4 else 0 for row in rows]
            assert all(n <= MAX_SLICES for n in slices), (slices, seed)
            most_slices = max(most_slices, *slices)
            compacted |= any(n < b for n, b in zip(slices, slices_before))
            slices_before = slices
            new = stored_chunks(cluster).items() - before.items()
            if not compacted:  # (a piece written whole costs the piece)
                assert sum(size for _, size in new) <= 2 * written, (r, seed)
                assert len(new) <= 2, (r, seed)  # every piece's slices packed in one chunk
            if r % 6 == 5:
                remount(cluster, mnt, tmp_path / f"mount{r}.log")
            with open(mnt / "file", "rb") as f:
                for _ in range(20):  # random reads of pieces with slices (ranged reads)
                    at = rng.randrange(len(model))
                    f.seek(at)
                    assert f.read(5000) == model[at : at + 5000], (r, at, seed)
            assert (mnt / "file").read_bytes() == model, (r, seed)
    assert most_slices >= 10 and compacted, (most_slices, seed)


def test_small_writes_whose_upload_failed_are_kept_and_stored_by_the_next_fsync(
    tmp_path: Path,
) -> None:
    """With 2 of 3 chunk servers gone (R=2) the fsync of small writes fails with EIO and
    keeps them; once the servers are back the next fsync stores them as slices, and after a
    remount every byte is right."""
    model = bytearray(os.urandom(3 * MiB))
    with mounted_volume(tmp_path, ["--repair-interval", "0"]) as (cluster, mnt):
        (mnt / "file").write_bytes(model)
        remount(cluster, mnt, tmp_path / "mount2.log")
        fd = os.open(mnt / "file", os.O_RDWR)
        try:
            for n, off in enumerate((100, MiB + 5000, 2 * MiB + 123, 3 * MiB - 7)):
                data = bytes([n + 1]) * 7
                os.pwrite(fd, data, off)
                model[off : off + 7] = data
            for i in (1, 2):
                cluster.chunks[i].kill()
            with pytest.raises(OSError) as info:
                os.fsync(fd)
            assert info.value.errno == errno.EIO
            for i in (1, 2):
                cluster.chunks[i] = StoragedProcess(
                    cluster.chunks[i].data_dir, cluster.secret_file, extra=cluster.chunk_args(i)
                ).start()
            cluster.wait_registered()
            assert os.pread(fd, len(model), 0) == model  # nothing of it was dropped
            os.pwrite(fd, b"later", 2 * MiB)
            model[2 * MiB : 2 * MiB + 5] = b"later"
            os.fsync(fd)
        finally:
            os.close(fd)
        ino = os.stat(mnt / "file").st_ino
        rows = call(cluster.meta.address, cluster.secret, "fs.chunks", ino, 0, 2, True)
        assert [len(row[4]) for row in rows] == [1, 1, 3], rows  # (3 MiB - 7 is in piece 2)
        with pytest.raises(FsError) as refused:  # asked as a mount older than slices asks
            call(cluster.meta.address, cluster.secret, "fs.chunks", ino, 0, 2)
        assert refused.value.errno == errno.EIO
        remount(cluster, mnt, tmp_path / "mount3.log")
        assert (mnt / "file").read_bytes() == model
