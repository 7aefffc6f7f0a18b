"""An inode lives until the kernel forgets it: a deleted file or directory that a bind mount,
a working directory or another mount still references answers stat (issue: kubelet's subPath
clean-up stats a bind mount whose directory was deleted), and is gone once nothing does."""

from __future__ import annotations

import contextlib
import errno
import json
import os
import stat
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from fusefs.holds import SYNC_SECONDS
from storaged.rpc import FsError
from tests.helpers import LocalCluster, call, mount, mounted_volume


@pytest.fixture
def env(tmp_path: Path) -> Iterator[tuple[LocalCluster, Path]]:
    with mounted_volume(tmp_path, []) as pair:
        yield pair


def bind(source: Path, target: Path) -> None:
    subprocess.run(["mount", "--bind", str(source), str(target)], check=True)


def unbind(target: Path) -> None:
    subprocess.run(["umount", str(target)], check=True)


@contextlib.contextmanager
def bound_directory(source: Path, target: Path) -> Iterator[int]:
    """Make the directory ``source``, bind-mount it on ``target`` (as kubelet does a
    subPath) and yield its inode number; unmount afterwards."""
    source.mkdir()
    target.mkdir()
    bind(source, target)
    try:
        yield os.stat(target).st_ino
    finally:
        unbind(target)


def meta_has(cluster: LocalCluster, ino: int) -> bool:
    try:
        call(cluster.meta.address, cluster.secret, "fs.getattr", ino)
        return True
    except FsError as exc:
        assert exc.errno == errno.ENOENT
        return False


def gone_eventually(cluster: LocalCluster, ino: int, timeout: float = 10.0) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if not meta_has(cluster, ino):
            return True
        time.sleep(0.1)
    return False


def fsck_clean(cluster: LocalCluster) -> None:
    result = cluster.shoal("fsck", "v", "--json")
    assert result.returncode == 0, result.stdout + result.stderr
    assert json.loads(result.stdout)["problems"] == [], result.stdout


def test_a_removed_directory_under_a_bind_mount_answers_stat(env, tmp_path):
    cluster, mnt = env
    target = tmp_path / "b"
    with bound_directory(mnt / "d", target) as ino:
        (mnt / "d").rmdir()
        st = os.stat(target)  # was ENOENT: kubelet could not clean the subPath up
        assert stat.S_ISDIR(st.st_mode) and st.st_nlink == 0 and st.st_ino == ino
        assert os.listdir(target) == []
        with pytest.raises(FileNotFoundError):  # nothing can be made in a removed directory
            (target / "new").write_bytes(b"x")
        assert meta_has(cluster, ino)
    assert gone_eventually(cluster, ino)  # the kernel forgot it: the orphan went
    fsck_clean(cluster)


def test_a_deleted_file_under_a_bind_mount_answers_stat_and_reads(env, tmp_path):
    cluster, mnt = env
    (mnt / "f").write_bytes(b"still here")
    target = tmp_path / "bf"
    target.touch()
    bind(mnt / "f", target)
    try:
        (mnt / "f").unlink()
        st = os.stat(target)
        assert stat.S_ISREG(st.st_mode) and st.st_nlink == 0 and st.st_size == 10
        assert target.read_bytes() == b"still here"
        os.chmod(target, 0o600)  # setattr of an orphan
        os.utime(target, ns=(1_000_000_000, 2_000_000_000))
        st = os.stat(target)
        assert stat.S_IMODE(st.st_mode) == 0o600 and st.st_mtime_ns == 2_000_000_000
        assert os.listxattr(target) == []
        ino = st.st_ino
    finally:
        unbind(target)
    assert gone_eventually(cluster, ino)
    fsck_clean(cluster)


def test_a_process_whose_cwd_was_removed_can_stat_dot(env):
    cluster, mnt = env
    (mnt / "cwd").mkdir()
    child = subprocess.Popen(
        [
            sys.executable,
            "-c",
            (
                "import os, stat, sys\n"
                "sys.stdin.readline()\n"  # the directory is removed now
                "st = os.stat('.')\n"
                "print(stat.S_ISDIR(st.st_mode), st.st_nlink)\n"
            ),
        ],
        cwd=mnt / "cwd",
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        time.sleep(0.2)  # it has its cwd
        (mnt / "cwd").rmdir()
        out, err = child.communicate("go\n", timeout=30)
    finally:
        child.kill()
    assert child.returncode == 0, err
    assert out.split() == ["True", "0"]
    fsck_clean(cluster)


def test_a_deletion_by_another_mount_spares_what_this_one_references(env, tmp_path):
    """Mount A references a file (a bind mount over it) and a directory (a bind mount);
    mount B deletes both: A still stats and reads them. After A lets go and unmounts, the
    orphans are gone and fsck is clean."""
    cluster, mnt = env
    (mnt / "f").write_bytes(b"from A")
    (mnt / "d").mkdir()
    other = tmp_path / "other"
    other.mkdir()
    mount(cluster, "v", other, tmp_path / "other.log")
    file_target, dir_target = tmp_path / "bf", tmp_path / "bd"
    file_target.touch()
    dir_target.mkdir()
    bind(mnt / "f", file_target)
    bind(mnt / "d", dir_target)
    inos = [os.stat(file_target).st_ino, os.stat(dir_target).st_ino]
    try:
        time.sleep(SYNC_SECONDS * 4)  # A's holds reach the meta role (the stated window)
        (other / "f").unlink()
        (other / "d").rmdir()
        assert not (other / "f").exists() and not (other / "d").exists()
        assert os.stat(file_target).st_size == 6
        assert file_target.read_bytes() == b"from A"
        assert stat.S_ISDIR(os.stat(dir_target).st_mode)
        assert all(meta_has(cluster, ino) for ino in inos)
    finally:
        unbind(file_target)
        unbind(dir_target)
        subprocess.run(["fusermount3", "-u", str(other)], check=True)
    subprocess.run(["fusermount3", "-u", str(mnt)], check=True)  # A's session ends
    for ino in inos:
        assert gone_eventually(cluster, ino), ino
    mount(cluster, "v", mnt, tmp_path / "again.log")  # (the fixture unmounts it)
    fsck_clean(cluster)


def test_an_unreferenced_deleted_file_goes_at_once(env):
    """What nothing references is deleted with the unlink, as before: space comes back."""
    cluster, mnt = env
    (mnt / "big").write_bytes(os.urandom(3 << 20))
    ino = os.stat(mnt / "big").st_ino
    (mnt / "big").unlink()
    assert gone_eventually(cluster, ino, timeout=5)
    used = call(cluster.meta.address, cluster.secret, "volume.get", "v")
    assert used["used_bytes"] == 0, used


def test_what_a_bind_mount_references_survives_a_meta_restart(env, tmp_path):
    """The holds live in the meta role's memory: after a SIGKILL it deletes nothing until
    the mount has registered again, and the mount registers everything its kernel
    references (not only open files), so the removed directory under the bind mount
    outlives the restart and the orphan sweep that follows it."""
    cluster, mnt = env
    target = tmp_path / "b"
    with bound_directory(mnt / "kept", target) as ino:
        (mnt / "kept").rmdir()
        cluster.restart_meta()  # SIGKILL: every hold forgotten
        log = cluster.meta.log_path
        # the mount registers again with its next heartbeat (1 s here), then the meta role
        # deletes again: unheld orphans go in its sweep, this one must not
        deadline = time.monotonic() + 30
        while "deleting again" not in log.read_text(errors="replace"):
            assert time.monotonic() < deadline, "the mount did not register again"
            time.sleep(0.2)
        time.sleep(2.5)  # a liveness pass (orphan sweep) or two
        st = os.stat(target)
        assert stat.S_ISDIR(st.st_mode) and st.st_nlink == 0
        assert meta_has(cluster, ino)
    assert gone_eventually(cluster, ino)
    fsck_clean(cluster)
