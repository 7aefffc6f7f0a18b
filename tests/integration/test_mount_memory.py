"""The mount's memory for written-but-not-stored data is bounded by --max-unsaved, over all
open files together, on a real mount of a real cluster.

Each file below writes less than one chunk (1 MiB here), so without the bound nothing would
leave the mount before close(): eight open files would hold all their bytes in memory."""

from __future__ import annotations

import errno
import os
from pathlib import Path

import pytest

from tests.helpers import free_port, mounted_volume, remount, scrape, wait_until

KiB, MiB = 1 << 10, 1 << 20
FILES = 8
PER_FILE = 768 * KiB  # a partial piece: stays dirty until something sends it


def content(i: int) -> bytes:
    return bytes([i + 1]) * (PER_FILE // 2) + os.urandom(PER_FILE // 2)


def stored_chunk_files(cluster) -> int:
    return sum(len(files) for c in cluster.chunks for _, _, files in os.walk(c.data_dir / "chunks"))


def test_unsaved_writes_of_many_open_files_stay_within_the_bound(tmp_path: Path) -> None:
    port = free_port()
    with mounted_volume(
        tmp_path, [], mount_extra=["--max-unsaved", "3MiB", "--metrics-listen", f"127.0.0.1:{port}"]
    ) as (cluster, mnt):
        assert stored_chunk_files(cluster) == 0
        expected = {i: content(i) for i in range(FILES)}
        fds = [os.open(mnt / f"f{i}", os.O_CREAT | os.O_WRONLY, 0o644) for i in range(FILES)]
        try:
            for i, fd in enumerate(fds):
                assert os.write(fd, expected[i]) == PER_FILE
            # a snapshot taken after the last write: every file's growth is uncommitted
            after = wait_until(
                lambda: (
                    (s := scrape(port))["shoalfs_mount_unsaved_bytes"][()] == FILES * PER_FILE and s
                ),
                timeout=20,
            )
            assert after, "the mount's metrics never showed the writes"
            held = after["shoalfs_mount_unsaved_memory_bytes"][()]
            assert after["shoalfs_mount_unsaved_memory_limit_bytes"][()] == 3 * MiB
            assert 0 < held <= 3 * MiB, f"{held} bytes unsaved in memory, bound 3 MiB"
            # what left memory went to the chunk servers, before any file was closed
            assert stored_chunk_files(cluster) >= 2 * ((FILES * PER_FILE - 3 * MiB) // PER_FILE)
        finally:
            for fd in fds:
                os.close(fd)
        remount(cluster, mnt, tmp_path / "mount2.log")
        for i in range(FILES):
            assert (mnt / f"f{i}").read_bytes() == expected[i], f"f{i} differs"


def test_with_storage_down_writes_fail_instead_of_filling_memory(tmp_path: Path) -> None:
    with mounted_volume(tmp_path, [], mount_extra=["--max-unsaved", "2MiB"]) as (cluster, mnt):
        fds = [os.open(mnt / f"f{i}", os.O_CREAT | os.O_WRONLY, 0o644) for i in range(FILES)]
        for chunk_server in cluster.chunks:
            chunk_server.kill()
        accepted = 0
        try:
            with pytest.raises(OSError) as info:
                for i, fd in enumerate(fds):
                    os.write(fd, content(i))
                    accepted += PER_FILE
            assert info.value.errno == errno.EIO
            assert accepted <= 2 * MiB + PER_FILE, f"{accepted} bytes taken, bound 2 MiB"
        finally:
            for fd in fds:
                try:
                    os.close(fd)
                except OSError:
                    pass  # close reports the unsaved data too; the write already said so
