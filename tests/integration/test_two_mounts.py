"""Two mounts of one volume, as on two nodes: close-to-open consistency and open-unlinked files."""

from __future__ import annotations

import errno
import os
import time
from pathlib import Path

import pytest

from tests.helpers import call


@pytest.fixture
def second(mounted, tmp_path):
    """The same volume mounted a second time, by a separate mount process."""
    mnt = Path(f"/tmp/shoalfs-second-{os.getpid()}")
    mnt.mkdir(exist_ok=True)
    mounted.shoal("mount", "default", str(mnt), "--workdir", str(mounted.workdir),
                  "--log-file", str(tmp_path / "second.log"))
    yield mnt
    mounted.shoal("umount", str(mnt))
    mnt.rmdir()


def eventually(predicate, timeout: float = 5.0) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return True
        time.sleep(0.05)
    return False


def drop_kernel_caches() -> None:
    """Make the kernel forget cached dentries and inodes (it then sends FUSE forgets)."""
    Path("/proc/sys/vm/drop_caches").write_text("2\n")


def test_what_one_side_closed_the_other_sees_on_its_next_open(here, mounted, second):
    there = second / here.name
    (here / "f").write_bytes(b"version one")
    assert (there / "f").read_bytes() == b"version one"
    with open(there / "f", "rb") as reader:  # the other side keeps a handle, and its cache
        assert reader.read() == b"version one"
        (here / "f").write_bytes(b"version two")  # same size, other bytes
        assert (there / "f").read_bytes() == b"version two"  # a new open sees them
    with open(here / "f", "ab") as f:
        f.write(b" and more")
    assert (there / "f").read_bytes() == b"version two and more"


def test_rename_on_one_side_is_seen_on_the_other(here, mounted, second):
    there = second / here.name
    (here / "old").write_bytes(b"moving")
    assert (there / "old").read_bytes() == b"moving"
    os.rename(here / "old", here / "new")
    assert (there / "new").read_bytes() == b"moving"
    assert eventually(lambda: not (there / "old").exists())  # within the entry timeout


def test_unlink_of_a_file_the_other_side_holds_open(here, mounted, second):
    there = second / here.name
    payload = os.urandom(300_000)
    (here / "held").write_bytes(payload)
    ino = (here / "held").stat().st_ino
    secret = Path(mounted.cluster["secret_file"]).read_bytes().strip()
    meta = mounted.cluster["meta"]
    with open(there / "held", "rb") as reader:
        os.unlink(here / "held")
        drop_kernel_caches()  # this side forgets the inode: it would delete an unheld orphan
        time.sleep(0.3)
        assert reader.read() == payload  # the other side still reads every byte
        assert call(meta, secret, "fs.getattr", ino)["nlink"] == 0
    # last close anywhere: the orphan goes
    assert eventually(lambda: _gone(meta, secret, ino))
    assert not (here / "held").exists() and not (there / "held").exists()


def _gone(meta: str, secret: bytes, ino: int) -> bool:
    from storaged.rpc import FsError
    try:
        call(meta, secret, "fs.getattr", ino)
        return False
    except FsError as exc:
        return exc.errno == errno.ENOENT
