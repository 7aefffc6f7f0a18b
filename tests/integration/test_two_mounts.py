"""Two mounts of one volume, as on two nodes: close-to-open consistency and open-unlinked files."""

from __future__ import annotations

import errno
import fcntl
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

from tests.helpers import call


@pytest.fixture
def second(mounted, tmp_path):
    """The same volume mounted a second time, by a separate mount process."""
    mnt = Path(f"/tmp/shoalfs-second-{os.getpid()}")
    mnt.mkdir(exist_ok=True)
    mounted.shoal(
        "mount",
        "default",
        str(mnt),
        "--workdir",
        str(mounted.workdir),
        "--log-file",
        str(tmp_path / "second.log"),
        "--session-heartbeat",
        "1",
    )
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


def _try_locks(path: Path) -> subprocess.CompletedProcess[str]:
    """In another process (POSIX locks are per process): which locks on ``path`` it gets."""
    code = (
        "import fcntl, sys\n"
        "f = open(sys.argv[1], 'r+')\n"
        "got = []\n"
        "for name, take in (('flock', lambda: fcntl.flock(f, fcntl.LOCK_EX | fcntl.LOCK_NB)),\n"
        "                   ('lockf', lambda: fcntl.lockf(f, fcntl.LOCK_EX | fcntl.LOCK_NB))):\n"
        "    try:\n"
        "        take()\n"
        "        got.append(name)\n"
        "    except OSError:\n"
        "        pass\n"
        "print(' '.join(got))\n"
    )
    return subprocess.run(
        [sys.executable, "-c", code, str(path)],
        capture_output=True,
        text=True,
        timeout=30,
        check=False,
    )


def test_file_locks_hold_within_one_mount_only(here, mounted, second):
    """flock and POSIX locks are kept by each node's kernel: the containers of a pod (one
    mount) exclude each other; two nodes (two mounts) do not see each other's locks. The
    README says so; this test fails if that ever changes, so the README is kept true."""
    path = here / "locked"
    path.write_bytes(b"x")
    with open(path, "r+") as held:
        fcntl.flock(held, fcntl.LOCK_EX)
        fcntl.lockf(held, fcntl.LOCK_EX)
        same_mount = _try_locks(path)
        other_mount = _try_locks(second / here.name / "locked")
    assert same_mount.returncode == 0 and same_mount.stdout.split() == [], same_mount
    assert other_mount.returncode == 0 and other_mount.stdout.split() == ["flock", "lockf"], (
        other_mount
    )


def test_umount_refuses_a_busy_mount_and_lazy_detaches_it(here, mounted, tmp_path):
    """`shoal umount` and the CSI node plugin share one unmount (fusefs/unmounting.py): a busy
    mount is refused with the tool's words unless --lazy, which takes it off the table at once
    while an open file keeps working; a path with nothing mounted is an error that says so."""
    from fusefs.mounttable import mount_entry
    from fusefs.unmounting import unmount

    mnt = Path(f"/tmp/shoalfs-third-{os.getpid()}")
    mnt.mkdir(exist_ok=True)
    try:
        mounted.shoal(
            "mount",
            "default",
            str(mnt),
            "--workdir",
            str(mounted.workdir),
            "--log-file",
            str(tmp_path / "third.log"),
        )
        (mnt / here.name / "kept").write_bytes(b"still here")
        with open(mnt / here.name / "kept", "rb") as held:
            busy = mounted.shoal("umount", str(mnt), check=False)
            assert busy.returncode == 1 and "busy" in busy.stderr, busy
            assert mount_entry(str(mnt)) is not None
            lazy = mounted.shoal("umount", "--lazy", str(mnt), check=False)
            assert lazy.returncode == 0, lazy
            assert mount_entry(str(mnt)) is None  # off the table at once
            assert held.read() == b"still here"  # the open file keeps working
        nothing = mounted.shoal("umount", str(mnt), check=False)
        assert nothing.returncode == 1 and "nothing is mounted" in nothing.stderr, nothing
        assert unmount(str(mnt)) is False

        # the CSI node plugin's way: a busy mount is detached rather than refused
        mounted.shoal(
            "mount",
            "default",
            str(mnt),
            "--workdir",
            str(mounted.workdir),
            "--log-file",
            str(tmp_path / "third-again.log"),
        )
        with open(mnt / here.name / "kept", "rb"):
            assert unmount(str(mnt), if_busy="detach") is True
            assert mount_entry(str(mnt)) is None
    finally:
        if mount_entry(str(mnt)) is not None:
            unmount(str(mnt), lazy=True)
        mnt.rmdir()
