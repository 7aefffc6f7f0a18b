"""Random reads through a real mount fetch only the blocks they need from the chunk servers
(chunk.read) and return the right bytes; sequential reads still fetch whole chunks."""

from __future__ import annotations

import os
import random
import sys
from pathlib import Path

from tests.helpers import mounted_volume, remount

MiB = 1 << 20


def table_paths(cluster) -> list[Path]:
    return [
        Path(top) / name
        for c in cluster.chunks
        for top, _, names in os.walk(c.data_dir / "chunks")
        for name in names
        if name.endswith(".blocks")
    ]


def block_tables(cluster) -> int:
    return len(table_paths(cluster))


def test_random_reads_of_a_file_not_in_memory_are_right(tmp_path: Path) -> None:
    seed = random.randrange(1 << 30)
    print(f"seed {seed}", file=sys.stderr)
    rng = random.Random(seed)
    expected = os.urandom(6 * MiB + 12_345)  # 1 MiB chunks: 7 pieces, the last short
    with mounted_volume(tmp_path, []) as (cluster, mnt):
        (mnt / "file").write_bytes(expected)
        remount(cluster, mnt, tmp_path / "mount2.log")
        # chunk.put wrote a table beside each chunk of more than one block (6 full 1 MiB
        # pieces, R=2; the short last piece is one block and needs none). Take them away,
        # and the copies the servers keep in memory (a restart): tables that come back
        # were made by ranged reads (chunk.read rebuilds them).
        assert block_tables(cluster) == 12
        for path in table_paths(cluster):
            path.unlink()
        for index in range(len(cluster.chunks)):
            cluster.restart_chunk(index)
        cluster.wait_registered()
        fd = os.open(mnt / "file", os.O_RDONLY)
        try:
            for _ in range(300):
                off = rng.randrange(len(expected) + 100)
                size = rng.choice([1, 4096, rng.randrange(1, 300_000)])
                assert os.pread(fd, size, off) == expected[off : off + size], (
                    f"pread({size}, {off}) differs (seed {seed})"
                )
        finally:
            os.close(fd)
        # the random reads were answered from block tables: a chunk server made them
        assert block_tables(cluster) >= 1
        remount(cluster, mnt, tmp_path / "mount3.log")
        tables = block_tables(cluster)
        assert (mnt / "file").read_bytes() == expected  # sequential: whole chunks
        assert block_tables(cluster) == tables
