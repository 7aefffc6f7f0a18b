"""A mount raises the kernel's readahead window of its own device (so sequential reads come
in 1 MiB FUSE requests, not 128 KiB ones), as asked by --readahead, and reads stay right."""

from __future__ import annotations

import os
from pathlib import Path

from tests.conftest import Mounted
from tests.helpers import mounted_volume, remount, wait_until


def window_kib(mnt: Path) -> int:
    device = os.stat(mnt).st_dev
    path = Path("/sys/class/bdi") / f"{os.major(device)}:{os.minor(device)}" / "read_ahead_kb"
    return int(path.read_text())


def test_shoal_up_mounts_with_a_4_mib_window(mounted: Mounted) -> None:
    # Set once the kernel has taken the mount's init reply, just after the mount is ready.
    assert wait_until(lambda: window_kib(mounted.mnt) == 4096, timeout=10)
    assert "readahead window 4096 KiB" in mounted.mount_log()


def test_the_window_follows_the_flag_and_sequential_reads_are_right(tmp_path: Path) -> None:
    expected = os.urandom(9 * (1 << 20) + 4321)  # 1 MiB chunks: 10 pieces, the last short
    with mounted_volume(tmp_path, [], mount_extra=["--readahead", "2MiB"]) as (cluster, mnt):
        assert wait_until(lambda: window_kib(mnt) == 2048, timeout=10)
        (mnt / "file").write_bytes(expected)
        remount(cluster, mnt, tmp_path / "mount2.log")  # the default window again
        assert wait_until(lambda: window_kib(mnt) == 4096, timeout=10)
        with open(mnt / "file", "rb") as f:
            got = b"".join(iter(lambda: f.read(1 << 20), b""))
        assert got == expected
