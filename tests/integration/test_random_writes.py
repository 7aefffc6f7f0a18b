"""Small writes at random places of a stored file, through a real mount: each touched piece
is stored once (at fsync), not once per handful of writes, and every byte reads back right
before the fsync, after it and after a remount."""

from __future__ import annotations

import os
import random
import sys
from pathlib import Path

from tests.helpers import mounted_volume, remount

MiB = 1 << 20


def stored_chunks(cluster) -> set[tuple[int, str]]:
    return {(i, name) for i, c in enumerate(cluster.chunks)
            for _, _, names in os.walk(c.data_dir / "chunks") for name in names
            if not name.endswith(".blocks")}


def test_random_small_writes_store_each_piece_once_and_read_back(tmp_path: Path) -> None:
    seed = random.randrange(1 << 30)
    print(f"seed {seed}", file=sys.stderr)
    rng = random.Random(seed)
    model = bytearray(os.urandom(40 * MiB + 777))  # 1 MiB chunks: 41 pieces
    with mounted_volume(tmp_path, ["--gc-interval", "0"]) as (cluster, mnt):
        (mnt / "file").write_bytes(model)
        remount(cluster, mnt, tmp_path / "mount2.log")  # nothing of it in the mount's memory
        before = stored_chunks(cluster)
        touched = set()
        fd = os.open(mnt / "file", os.O_RDWR)
        try:
            for n in range(400):
                off = rng.randrange(len(model) + 5000)
                data = os.urandom(rng.choice([4096, 1, rng.randrange(1, 20_000)]))
                assert os.pwrite(fd, data, off) == len(data)
                if len(model) < off:
                    model.extend(bytes(off - len(model)))
                model[off:off + len(data)] = data
                touched.update(range(off // MiB, (off + len(data) - 1) // MiB + 1))
                if n % 20 == 0:  # reads of pieces written but not stored
                    at = rng.randrange(len(model))
                    size = rng.randrange(1, 3 * MiB)
                    assert os.pread(fd, size, at) == model[at:at + size], f"seed {seed}"
            os.fsync(fd)
        finally:
            os.close(fd)
        new = stored_chunks(cluster) - before
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
                model[off:off + 5] = b"patch"
            assert os.pread(fd, len(model) + 10, 0) == model
            os.fsync(fd)
        finally:
            os.close(fd)
        remount(cluster, mnt, tmp_path / "mount2.log")
        assert (mnt / "file").read_bytes() == model
