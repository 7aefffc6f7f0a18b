"""A restarted meta role has forgotten what each mount holds open (holds live in memory).
Until every mount from before the restart has registered again, it must delete nothing:
a file open on a mount whose heartbeat has not come round yet is still that mount's file,
whoever unlinks it meanwhile. And a mount's writes must not fail because its session is
one the meta role no longer knows, nor because the meta role is down for the moment a
restart takes: file operations wait for it."""

from __future__ import annotations

import errno
import os
import threading
import time
from pathlib import Path

from storaged.rpc import FsError
from tests.helpers import call, mounted_volume, remount, wait_until, write_synced

HEARTBEAT = 30  # the mount does not heartbeat during the test: only its requests renew


def _gone(cluster, ino: int) -> bool:
    try:
        call(cluster.meta.address, cluster.secret, "fs.getattr", ino)
    except FsError as exc:
        return exc.errno == errno.ENOENT
    return False


def test_a_file_open_across_a_meta_restart_survives_an_unlink_elsewhere(tmp_path: Path) -> None:
    with mounted_volume(
        tmp_path,
        ["--session-timeout", str(HEARTBEAT * 3)],
        mount_extra=["--session-heartbeat", str(HEARTBEAT)],
    ) as (cluster, mnt):
        data = os.urandom(3 << 20)
        write_synced(mnt / "kept", data)
        remount(cluster, mnt, tmp_path / "mount.log")  # nothing cached in the mount or kernel
        started = time.monotonic()
        ino = os.stat(mnt / "kept").st_ino
        fd = os.open(mnt / "kept", os.O_RDONLY | os.O_DIRECT)  # held; reads go to the mount
        try:
            cluster.restart_meta()  # SIGKILL: every hold forgotten
            volume = call(cluster.meta.address, cluster.secret, "volume.get", "v")
            # another client unlinks the file while this mount has not registered again
            gone = call(cluster.meta.address, cluster.secret, "fs.unlink", volume["root"], b"kept")
            assert time.monotonic() - started < HEARTBEAT, "the mount may have re-registered"
            assert gone["nlink"] == 0 and not gone.get("deleted"), gone
            read = b"".join(iter(lambda: os.read(fd, 1 << 20), b""))
            assert read == data
            # a write needs a session the meta role knows: the mount registers again on the
            # refusal instead of failing the write
            write_synced(mnt / "after", b"written after the restart")
            assert (mnt / "after").read_bytes() == b"written after the restart"
            assert not _gone(cluster, ino)  # still held, now by the new session
        finally:
            os.close(fd)
        # the last close releases it: with every mount back, it is deleted
        assert wait_until(lambda: _gone(cluster, ino), timeout=10)
        stats = call(cluster.meta.address, cluster.secret, "volume.get", "v")
        assert stats["used_bytes"] == len(b"written after the restart")


def test_file_operations_wait_for_a_meta_role_that_is_restarting(tmp_path: Path) -> None:
    with mounted_volume(tmp_path, []) as (cluster, mnt):
        write_synced(mnt / "before", b"x" * 5000)
        (mnt / "d").mkdir()
        cluster.kill_meta()
        results: dict[str, object] = {}

        def work() -> None:
            try:
                time.sleep(1.5)  # past the kernel's attribute and entry timeouts (1 s)
                results["size"] = os.stat(mnt / "before").st_size
                write_synced(mnt / "d" / "during", b"written while the meta role was down")
                results["names"] = sorted(os.listdir(mnt / "d"))
            except OSError as exc:
                results["error"] = exc

        worker = threading.Thread(target=work)
        worker.start()
        worker.join(4)
        assert worker.is_alive() and not results, results  # waiting, not failed
        cluster.start_meta()
        worker.join(60)
        assert not worker.is_alive()
        assert results == {"size": 5000, "names": ["during"]}, results
        assert (mnt / "d" / "during").read_bytes() == b"written while the meta role was down"
