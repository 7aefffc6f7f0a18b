"""Faults under a real mount: a chunk server SIGKILLed mid-write, the mount SIGKILLed after fsync."""

from __future__ import annotations

import hashlib
import json
import os
import random
import signal
import threading
import time

MiB = 1 << 20


def blocks(seed: int, count: int):
    rng = random.Random(seed)
    for _ in range(count):
        yield rng.randbytes(MiB)


def test_sigkill_of_a_chunk_server_during_a_large_write_loses_nothing(here, mounted):
    victim = mounted.cluster["chunk_servers"][1]
    path = here / "large"
    expected = hashlib.blake2b()
    killed = threading.Event()

    def kill_soon() -> None:
        while path.exists() is False or path.stat().st_size < 40 * MiB:
            time.sleep(0.01)
        os.kill(victim["pid"], signal.SIGKILL)
        killed.set()

    killer = threading.Thread(target=kill_soon, daemon=True)
    killer.start()
    with open(path, "wb") as f:
        for block in blocks(7, 160):
            f.write(block)
            expected.update(block)
        f.flush()
        os.fsync(f.fileno())  # must succeed: two servers are still up
    killer.join(30)
    assert killed.is_set(), "the chunk server was not killed during the write"
    with open("/proc/sys/vm/drop_caches", "w") as f:  # read from the servers, not the cache
        f.write("3\n")
    actual = hashlib.blake2b()
    with open(path, "rb") as f:
        while chunk := f.read(4 * MiB):
            actual.update(chunk)
    assert actual.hexdigest() == expected.hexdigest()
    assert path.stat().st_size == 160 * MiB
    # the killed server comes back with 'shoal up'; the file still reads right
    mounted.shoal("up", "--workdir", str(mounted.workdir))
    mounted.cluster = json.loads((mounted.workdir / "cluster.json").read_text())


def test_sigkill_of_the_mount_after_fsync_keeps_the_fsynced_data(here, mounted):
    name = here.name
    payload = os.urandom(9 * MiB + 12345)
    fd = os.open(here / "durable", os.O_WRONLY | os.O_CREAT, 0o644)
    os.write(fd, payload)
    os.fsync(fd)
    os.write(fd, b"written after the fsync, may be lost")
    os.kill(mounted.cluster["mount_pid"], signal.SIGKILL)
    time.sleep(0.2)
    try:
        os.close(fd)  # the mount is gone: close reports it (ENOTCONN), and that is all
    except OSError as exc:
        assert exc.errno == 107
    try:
        os.stat(here)
        raise AssertionError("the mount should be broken after its process was killed")
    except OSError as exc:
        assert exc.errno == 107  # ENOTCONN: transport endpoint is not connected
    mounted.shoal("up", "--workdir", str(mounted.workdir))  # cleans the dead mount, remounts
    mounted.cluster = json.loads((mounted.workdir / "cluster.json").read_text())
    data = (mounted.mnt / name / "durable").read_bytes()
    assert data[: len(payload)] == payload


def test_sigterm_flushes_open_files_before_unmounting(here, mounted):
    payload = os.urandom(5 * MiB + 7)
    fd = os.open(here / "open-at-sigterm", os.O_WRONLY | os.O_CREAT, 0o644)
    os.write(fd, payload)  # neither closed nor fsynced
    os.kill(mounted.cluster["mount_pid"], signal.SIGTERM)
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        try:
            os.kill(mounted.cluster["mount_pid"], 0)
            time.sleep(0.05)
        except ProcessLookupError:
            break
    try:
        os.close(fd)
    except OSError:
        pass  # the mount is gone; what matters is what it stored before leaving
    mounted.shoal("up", "--workdir", str(mounted.workdir))
    mounted.cluster = json.loads((mounted.workdir / "cluster.json").read_text())
    assert (mounted.mnt / here.name / "open-at-sigterm").read_bytes() == payload
