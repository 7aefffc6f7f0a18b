"""How many meta role round trips the common file operations cost, as the meta role's own
request counters see them on a real cluster and a real mount.

Metadata speed is mostly a count of round trips (docs/performance.md); timings on a busy
2-core machine are too noisy to catch one coming back, counts are exact.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.helpers import LocalCluster, free_port, mounted_volume, scrape, wait_until

FILES = 20


@pytest.fixture
def counted(tmp_path: Path) -> Iterator[tuple[LocalCluster, Path, int]]:
    """A mount that sends every change at once (no delegated directories: their counts
    are test_delegations.py's), so each count here is of the synchronous path."""
    port = free_port()
    metrics = ["--metrics-listen", f"127.0.0.1:{port}"]
    with mounted_volume(tmp_path, metrics, mount_extra=["--no-delegate"]) as (cluster, mnt):
        yield cluster, mnt, port


def _requests(port: int) -> dict[str, float]:
    """Requests answered so far, by method (any result)."""
    out: dict[str, float] = {}
    for labels, value in scrape(port).get("shoalfs_rpc_requests_total", {}).items():
        method = dict(labels)["method"]
        out[method] = out.get(method, 0) + value
    return out


def _after(port: int, method: str, before: dict[str, float]) -> dict[str, float]:
    """The counters once ``method``, sent since ``before``, is counted (a request is
    counted before its answer goes out, but one the mount sends in the background, a
    batch or a release, can still be on its way when the caller is back)."""
    return wait_until(
        lambda: (now := _requests(port)).get(method, 0) > before.get(method, 0) and now, timeout=10
    )


def _delta(port: int, before: dict[str, float], expect: dict[str, int]) -> dict[str, float]:
    """Requests since ``before``, once the counters settled (requests the mount sends
    in the background can trail the caller's last answer by a moment)."""

    def settled() -> dict[str, float] | None:
        now = _requests(port)
        delta = {m: now[m] - before.get(m, 0) for m in now if now[m] != before.get(m, 0)}
        return delta if all(delta.get(m, 0) >= n for m, n in expect.items()) else None

    try:
        delta = wait_until(settled, timeout=10)
    except TimeoutError:
        raise AssertionError(f"counters never reached {expect}: {_requests(port)}") from None
    return delta


def test_small_files_unlinks_and_renames_cost_only_the_round_trips_they_need(
    counted: tuple[LocalCluster, Path, int],
) -> None:
    _, mnt, port = counted
    d = mnt / "small"
    made_dir = _requests(port)
    d.mkdir()
    before = _after(port, "fs.mknod", made_dir)
    for i in range(FILES):
        fd = os.open(d / f"f{i}", os.O_CREAT | os.O_WRONLY, 0o644)
        os.write(fd, os.urandom(16384))
        os.close(fd)
    made = _delta(port, before, {"fs.commit": FILES})
    # Per new file: the create (which also answers the directory's next GETATTR), one
    # commit at close. The create's hold stays after the close: the kernel still
    # references the inode (fusefs/holds.py), so no release.
    for method in ("fs.mknod", "fs.commit"):
        assert made.get(method) == FILES, (method, made)
    # Known without asking: the kernel's lookup of each new name (this mount made the
    # directory and every name in it: fusefs/dirnames.py), a new file's xattrs
    # (security.capability before the first write), its chunk map (nothing stored yet),
    # and the volume's usage (the commit tells it).
    for method in (
        "fs.lookup",
        "fs.getxattr",
        "fs.chunks",
        "fs.getattr",
        "fs.forget",
        "fs.release",
        "session.hold",
    ):
        assert method not in made, (method, made)
    assert made.get("volume.statfs", 0) <= 3, made  # the once-a-second refresh only
    # Each file's chunk is committed within REGISTER_AFTER (2 s) of its put: never
    # registered as pending (garbage collection spares anything younger than its grace
    # period; fusefs/filedata.py hold_chunk). (At most 2: a close stalled for 2 s.)
    assert made.get("session.pending", 0) <= 2, made

    before = _requests(port)
    for i in range(FILES):
        os.unlink(d / f"f{i}")
    gone = _delta(port, before, {"fs.unlink": FILES, "fs.forget": 1})
    # An unlink keeps the inode for this mount's kernel, which references it until it
    # forgets it, usually as the unlink returns: then one fs.forget deletes it (several,
    # when the kernel forgets them together), off the unlinking caller's path.
    assert gone.get("fs.unlink") == FILES and gone.get("fs.forget", 0) <= FILES, gone
    assert gone.get("fs.lookup", 0) <= FILES, gone
    assert not os.listdir(d)

    # Saving by renaming a new copy over the file: the replaced inode goes when the kernel
    # forgets it, as with an unlink.
    (d / "target").write_bytes(b"old")
    before = _requests(port)
    for i in range(FILES):
        (d / "tmp").write_bytes(b"version %d" % i)
        os.rename(d / "tmp", d / "target")
    saved = _delta(port, before, {"fs.rename": FILES, "fs.forget": 1})
    assert saved.get("fs.rename") == FILES and saved.get("fs.forget", 0) <= FILES, saved
    assert (d / "target").read_bytes() == b"version %d" % (FILES - 1)


def test_reading_a_small_file_asks_for_its_map_with_the_lookup(
    counted: tuple[LocalCluster, Path, int],
) -> None:
    _, mnt, port = counted
    d = mnt / "read"
    d.mkdir()
    contents = [os.urandom(16384 + i) for i in range(FILES)]
    for i, data in enumerate(contents):
        (d / f"f{i}").write_bytes(data)
    with open(d / "holes", "wb") as f:  # a file of holes: a map without rows
        f.truncate(10 << 20)
    # Closed, so the mount keeps nothing of them; the kernel's caches dropped, so every
    # read reaches the mount.
    Path("/proc/sys/vm/drop_caches").write_text("3")
    before = _requests(port)
    for i, data in enumerate(contents):
        assert (d / f"f{i}").read_bytes() == data
    assert (d / "holes").read_bytes() == bytes(10 << 20)
    read = _delta(port, before, {"fs.lookup": FILES + 2, "fs.open": 1})
    # Per file read: the name's lookup, which answers what an open would (the map of the
    # file's first pieces, and a hold on the inode), so the mount answers the open
    # itself (fusefs/keptmaps.py). No request of its own for the map, no release at
    # close (the kernel still references the inode: the hold stays, fusefs/holds.py).
    # (One lookup more: the directory's, which the kernel forgot too.) The file of holes
    # has more pieces (ten of 1 MiB here) than a lookup brings the map of (four): the
    # meta role opens it, and its answer brings the rest.
    assert read.get("fs.lookup") == FILES + 2 and read.get("fs.open") == 1, read
    for method in ("fs.chunks", "fs.release", "fs.getattr"):
        assert method not in read, (method, read)


def test_close_waits_for_no_disk_and_fsync_waits_for_it_once(
    counted: tuple[LocalCluster, Path, int],
) -> None:
    """Group commit (storaged/meta/groupcommit.py): a close needs its commit to have reached
    the meta role, not its disk, so it sends no fs.sync; an fsync and an fsync of a
    directory need the disk, and send exactly one each."""
    _, mnt, port = counted
    d = mnt / "sync"
    d.mkdir()
    before = _requests(port)
    for i in range(FILES):
        (d / f"f{i}").write_bytes(os.urandom(4096))
    closed = _delta(port, before, {"fs.commit": FILES})
    assert "fs.sync" not in closed, closed
    before = _requests(port)
    fd = os.open(d / "f0", os.O_WRONLY)
    try:
        os.write(fd, b"durable")
        os.fsync(fd)
    finally:
        os.close(fd)
    synced = _delta(port, before, {"fs.sync": 1})
    assert synced.get("fs.sync") == 1 and synced.get("fs.commit", 0) >= 1, synced
    before = _requests(port)
    dfd = os.open(d, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(dfd)
    finally:
        os.close(dfd)
    assert _delta(port, before, {"fs.sync": 1}).get("fs.sync") == 1
