"""The meta role in a real process: volumes over RPC, chunk servers' heartbeats and liveness."""

from __future__ import annotations

import errno
import time

import pytest

from storaged.rpc import FsError
from tests.helpers import StoragedProcess, call


def wait_for(predicate, timeout: float = 20.0, what: str = "condition"):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(0.1)
    raise AssertionError(f"timed out waiting for {what}")


def test_volumes_over_rpc_with_errno_errors(storaged, secret):
    meta = storaged("meta", extra=["--roles", "meta"])
    vol = call(meta.address, secret, "volume.create", "v1", 1 << 30, 2, 1 << 22)
    assert call(meta.address, secret, "volume.get", "v1") == vol
    with pytest.raises(FsError) as info:
        call(meta.address, secret, "volume.create", "v1", 1 << 30, 2, 1 << 22)
    assert info.value.errno == errno.EEXIST
    attr = call(meta.address, secret, "fs.mknod", vol["root"], b"file", 0o100644, 0, 0)
    parent = attr.pop("parent")  # the directory as the create left it
    assert call(meta.address, secret, "fs.lookup", vol["root"], b"file") == attr
    assert call(meta.address, secret, "fs.getattr", vol["root"]) == parent
    assert parent["mtime_ns"] == attr["ctime_ns"]
    with pytest.raises(FsError) as info:
        call(meta.address, secret, "fs.rmdir", vol["root"], b"file")
    assert info.value.errno == errno.ENOTDIR
    assert call(meta.address, secret, "health")["roles"] == ["meta"]


def test_chunk_servers_register_go_down_when_silent_and_come_back(storaged, secret, tmp_path):
    meta = storaged("meta", extra=["--roles", "meta", "--heartbeat-timeout", "1.5"])
    beat = ["--meta", meta.address, "--heartbeat-interval", "0.3"]
    chunks = [storaged(f"chunk{i}", extra=[*beat, "--zone", f"z{i}"]) for i in range(3)]

    def states() -> dict[str, str]:
        return {s["zone"]: s["state"] for s in call(meta.address, secret, "cluster.servers")}

    wait_for(lambda: states() == {"z0": "up", "z1": "up", "z2": "up"}, what="3 servers up")
    listed = call(meta.address, secret, "cluster.servers")
    assert {s["address"] for s in listed} == {c.address for c in chunks}
    assert all(s["capacity"] > 0 for s in listed)

    chunks[1].kill()
    wait_for(lambda: states()["z1"] == "down", what="z1 marked down")
    assert states()["z0"] == "up"
    assert "is down" in meta.read_log()

    back = StoragedProcess(
        chunks[1].data_dir, chunks[1].secret_file, extra=[*beat, "--zone", "z1"]
    ).start()
    try:
        wait_for(lambda: states()["z1"] == "up", what="z1 back up")
        assert len(call(meta.address, secret, "cluster.servers")) == 3  # same id, not a 4th
    finally:
        back.stop()
