"""Real storaged processes on loopback: durability across kills, corruption, full disks."""

from __future__ import annotations

import os
import random
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import msgpack
import pytest
import trio

from storaged.chunk.ids import chunk_id
from storaged.rpc import AuthFailed, Corrupted, NoSpace, NotFound, RpcClient, Unavailable, auth
from tests.helpers import StoragedProcess, call, raw_connection, wait_until


def chunk_path(data_dir: Path, cid: str) -> Path:
    return data_dir / "chunks" / cid[:2] / cid[2:4] / cid


def test_put_and_get_across_processes_and_servers(storaged, secret):
    servers = [storaged(f"chunk{i}") for i in range(3)]
    blobs = [os.urandom(random.randint(1, 1 << 20)) for _ in range(9)]

    async def go() -> None:
        async with RpcClient(secret) as client:
            async with trio.open_nursery() as nursery:
                for i, blob in enumerate(blobs):
                    nursery.start_soon(
                        client.call, servers[i % 3].address, "chunk.put", chunk_id(blob), blob
                    )
            for i, blob in enumerate(blobs):
                address = servers[i % 3].address
                assert await client.call(address, "chunk.get", chunk_id(blob)) == blob
                assert await client.call(address, "chunk.get", chunk_id(blob), 1, 3) == blob[1:4]
            usage = await client.call(servers[0].address, "chunk.usage")
            assert usage["chunks"] == 3
            assert usage["used"] == sum(len(b) for b in blobs[0::3])
            with pytest.raises(NotFound):
                await client.call(servers[1].address, "chunk.get", chunk_id(blobs[0]))

    trio.run(go)


@pytest.mark.parametrize("flag, direct", [([], True), (["--no-direct-io"], False)])
def test_direct_io_is_on_by_default_and_can_be_turned_off(storaged, secret, flag, direct):
    server = storaged(extra=flag)
    blob = os.urandom((1 << 20) + 3)  # not a whole number of disk blocks
    call(server.address, secret, "chunk.put", chunk_id(blob), blob)
    assert call(server.address, secret, "chunk.get", chunk_id(blob)) == blob
    assert chunk_path(server.data_dir, chunk_id(blob)).stat().st_size == len(blob)
    assert call(server.address, secret, "health")["direct_io"] is direct


def test_sigkill_between_fsync_and_rename_leaves_no_half_chunk(storaged, secret, tmp_path):
    server = storaged(env={"SHOALFS_FAILPOINTS": "chunk.put.before_rename=sleep:60"})
    data = os.urandom(3 << 20)
    cid = chunk_id(data)
    # The put blocks in the failpoint; run it in a subprocess we can abandon.
    putter = (
        subprocess.Popen(
            [
                sys.executable,
                "-c",
                (
                    "import sys, trio; from tests.helpers import call; "
                    f"call({server.address!r}, {secret!r}, 'chunk.put', {cid!r}, open({str(tmp_path / 'blob')!r}, 'rb').read())"
                ),
            ],
            cwd=Path(__file__).parents[2],
        )
        if (tmp_path / "blob").write_bytes(data)
        else None
    )
    tmp_dir = server.data_dir / "tmp"
    deadline = time.monotonic() + 20
    while [p.stat().st_size for p in tmp_dir.iterdir()] != [len(data)]:  # written, in failpoint
        assert time.monotonic() < deadline, "the put never reached its temp file"
        time.sleep(0.02)
    server.kill()
    putter.kill()
    putter.wait()
    assert not chunk_path(server.data_dir, cid).exists()
    assert [p.stat().st_size for p in tmp_dir.iterdir()] == [len(data)]  # whole, but unnamed

    restarted = StoragedProcess(server.data_dir, server.secret_file).start()
    try:
        assert list(tmp_dir.iterdir()) == []  # debris removed at start-up
        assert call(restarted.address, secret, "chunk.has", cid) is False
        with pytest.raises(NotFound):
            call(restarted.address, secret, "chunk.get", cid)
        assert call(restarted.address, secret, "chunk.usage")["chunks"] == 0
        call(restarted.address, secret, "chunk.put", cid, data)
        assert call(restarted.address, secret, "chunk.get", cid) == data
    finally:
        restarted.stop()


def test_sigkill_during_a_stream_of_puts_loses_nothing_acknowledged(storaged, secret):
    server = storaged()
    acknowledged: list[bytes] = []

    async def writer() -> None:
        async with RpcClient(secret, timeout=10) as client:
            for i in range(10_000):
                blob = os.urandom(256 * 1024) + i.to_bytes(4, "big")
                try:
                    await client.call(server.address, "chunk.put", chunk_id(blob), blob, retries=0)
                except Unavailable:
                    return
                acknowledged.append(blob)

    async def killer() -> None:
        await trio.sleep(1.0 + random.random())
        server.kill()

    async def go() -> None:
        async with trio.open_nursery() as nursery:
            nursery.start_soon(writer)
            nursery.start_soon(killer)

    trio.run(go)
    assert acknowledged, "no put completed before the kill"
    restarted = StoragedProcess(server.data_dir, server.secret_file).start()
    try:

        async def verify() -> None:
            async with RpcClient(secret) as client:
                for blob in acknowledged:
                    assert await client.call(restarted.address, "chunk.get", chunk_id(blob)) == blob
                listed = await client.call(restarted.address, "chunk.list", None, 10_000)
                for cid in listed["ids"]:  # anything present, acknowledged or not, is whole
                    await client.call(restarted.address, "chunk.get", cid)
                assert len(listed["ids"]) in (len(acknowledged), len(acknowledged) + 1)

        trio.run(verify)
        assert list((server.data_dir / "tmp").iterdir()) == []
    finally:
        restarted.stop()


def _raw_exchange(address: str, *messages: list) -> list:
    """Send msgpack messages over a plain socket; return every reply until the server hangs up."""
    with raw_connection(address) as sock:
        unpacker = msgpack.Unpacker(raw=False)
        replies: list = []
        for message in messages:
            if callable(message):
                message = message(replies)
            sock.sendall(msgpack.packb(message, use_bin_type=True))
            wanted = len(replies) + 1
            while len(replies) < wanted:
                try:
                    data = sock.recv(65536)
                except ConnectionResetError:
                    data = b""
                if not data:
                    return replies + ["<closed>"]
                unpacker.feed(data)
                replies.extend(unpacker)
        return replies


def test_a_client_without_the_secret_or_with_a_wrong_one_can_do_nothing(storaged, secret):
    server = storaged()
    cid = chunk_id(b"x")
    # no authentication at all
    replies = _raw_exchange(
        server.address,
        [0, 1, "chunk.put", [cid, b"x"]],
        [0, 2, "chunk.list", []],
        [0, 3, "health", []],
    )
    assert [r[2]["code"] for r in replies] == ["UNAUTHENTICATED"] * 3

    # a wrong proof: refused, and the connection is closed before anything else is read
    def wrong_proof(replies: list[Any]) -> list[Any]:
        return [
            0,
            2,
            "auth.login",
            [auth.client_proof(b"wrong-secret-0123456789", replies[0][3]["nonce"])],
        ]

    replies = _raw_exchange(
        server.address, [0, 1, "auth.challenge", []], wrong_proof, [0, 3, "chunk.put", [cid, b"x"]]
    )
    assert replies[1][2]["code"] == "AUTH_FAILED" and replies[2] == "<closed>"
    # our own client with a wrong secret stops at the server's proof
    with pytest.raises(AuthFailed):
        call(server.address, b"n" * 32, "chunk.put", cid, b"x")
    assert not any((server.data_dir / "chunks").iterdir())
    assert "authentication failed" in server.read_log()

    # and with the right one, the same request works
    def right(replies: list[Any]) -> list[Any]:
        return [0, 2, "auth.login", [auth.client_proof(secret, replies[0][3]["nonce"])]]

    replies = _raw_exchange(
        server.address, [0, 1, "auth.challenge", []], right, [0, 3, "chunk.put", [cid, b"x"]]
    )
    assert replies[2] == [1, 3, None, {"size": 1, "created": True}]


def test_a_corrupted_chunk_file_is_detected_and_never_served(storaged, secret):
    # no scrubber: its first pass, slow on a loaded machine, could find the damage first
    # and quarantine the chunk (then the get says NOT_FOUND); scrub.py has its own tests
    server = storaged(extra=["--scrub-rate", "0"])
    data = os.urandom(100_000)
    cid = chunk_id(data)
    call(server.address, secret, "chunk.put", cid, data)
    path = chunk_path(server.data_dir, cid)
    raw = bytearray(path.read_bytes())
    raw[50_000] ^= 0x80
    path.write_bytes(raw)
    with pytest.raises(Corrupted):
        call(server.address, secret, "chunk.get", cid, 0, 10)
    assert call(server.address, secret, "health")["corrupted_found"] == 1
    assert call(server.address, secret, "chunk.has", cid) is False
    assert list((server.data_dir / "quarantine").iterdir())
    call(server.address, secret, "chunk.put", cid, data)  # a repair re-puts it
    assert call(server.address, secret, "chunk.get", cid) == data


@pytest.mark.parametrize("signum", [signal.SIGTERM, signal.SIGINT])
def test_sigterm_and_sigint_stop_cleanly_and_release_the_directory(storaged, secret, signum):
    server = storaged()
    call(server.address, secret, "chunk.put", chunk_id(b"kept"), b"kept")
    server.proc.send_signal(signum)
    assert server.proc.wait(20) == 0
    assert f"received {signum.name}, stopping" in server.read_log()
    assert "stopped" in server.read_log()
    again = StoragedProcess(server.data_dir, server.secret_file).start()
    try:
        assert call(again.address, secret, "chunk.get", chunk_id(b"kept")) == b"kept"
    finally:
        again.stop()


def test_second_process_on_the_same_directory_refuses_to_start(storaged):
    server = storaged()
    with pytest.raises(RuntimeError, match="in use by another storaged"):
        StoragedProcess(server.data_dir, server.secret_file).start(timeout=10)


def test_config_file_with_flags_overriding_it(tmp_path, secret_file, secret):
    sock = tmp_path / "chunk.sock"
    config = tmp_path / "storaged.toml"
    config.write_text(
        f'[storaged]\nlisten = ["unix://{sock}"]\ncapacity = "1MiB"\n'
        f'data_dir = "{tmp_path / "from-file"}"\nlog_format = "json"\n'
    )
    proc = StoragedProcess(
        tmp_path / "from-flag",
        secret_file,
        extra=["--config", str(config)],
        listen=f"unix://{sock}",
    ).start()
    try:
        assert proc.address == f"unix://{sock}"
        assert call(proc.address, secret, "chunk.usage")["capacity"] == 1 << 20
        assert (tmp_path / "from-flag" / "server-id").exists()  # the flag won over the file
        assert not (tmp_path / "from-file").exists()
        assert '"level": "info"' in proc.read_log()
    finally:
        proc.stop()


@pytest.mark.parametrize(
    "args, message",
    [
        (["--data-dir", "/tmp/x"], "secret_file is required"),
        (["--secret-file", "/x", "--data-dir", "/tmp/x", "--listen", "nowhere"], "not an address"),
        (["--secret-file", "/x", "--data-dir", "/tmp/x", "--capacity", "lots"], "not a size"),
    ],
)
def test_bad_configuration_exits_2_with_a_message(args, message):
    result = subprocess.run(
        [sys.executable, "-m", "storaged", *args],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert result.returncode == 2 and message in result.stderr


@pytest.fixture
def small_disk(tmp_path):
    """A real 8 MiB filesystem (tmpfs), so the disk really fills."""
    mount = tmp_path / "small"
    mount.mkdir()
    subprocess.run(["mount", "-t", "tmpfs", "-o", "size=8m", "tmpfs", str(mount)], check=True)
    yield mount
    subprocess.run(["umount", "-l", str(mount)], check=True)


def test_a_full_disk_refuses_new_chunks_and_keeps_serving_reads(small_disk, secret_file, secret):
    server = StoragedProcess(small_disk / "data", secret_file, extra=["--reserve", "0"]).start()
    server.log_path = small_disk.parent / "small.log"
    try:
        stored: list[bytes] = []
        with pytest.raises(NoSpace):
            for _ in range(20):
                blob = os.urandom(1 << 20)
                call(server.address, secret, "chunk.put", chunk_id(blob), blob)
                stored.append(blob)
        assert 3 <= len(stored) < 8
        assert list((small_disk / "data" / "tmp").iterdir()) == []  # no partial file
        for blob in stored:
            assert call(server.address, secret, "chunk.get", chunk_id(blob)) == blob
        assert call(server.address, secret, "chunk.usage")["free"] < 1 << 20
        call(server.address, secret, "chunk.delete", chunk_id(stored[0]))
        blob = os.urandom(1 << 20)
        call(server.address, secret, "chunk.put", chunk_id(blob), blob)  # room again
    finally:
        server.stop()


def test_writes_that_hit_enospc_mid_file_leave_nothing(small_disk, secret_file, secret):
    """Lie about free space (a huge --capacity, no reserve) so the disk itself says ENOSPC."""
    server = StoragedProcess(
        small_disk / "data", secret_file, extra=["--reserve", "0", "--capacity", "1TiB"]
    ).start()
    try:
        filler = small_disk / "filler"
        filler.write_bytes(b"\0" * (7 << 20))  # someone else fills the disk under us
        blob = os.urandom(2 << 20)
        with pytest.raises(NoSpace):
            call(server.address, secret, "chunk.put", chunk_id(blob), blob)
        assert list((small_disk / "data" / "tmp").iterdir()) == []
        assert call(server.address, secret, "chunk.has", chunk_id(blob)) is False
        assert call(server.address, secret, "health")["status"] == "ok"
    finally:
        server.stop()


def test_sigterm_after_real_traffic_stops_every_role_cleanly(storaged, secret):
    """A chunk server heartbeating to a meta role, and a meta role after a repair pass, both
    hold open RPC clients; SIGTERM must still end them with exit code 0 and 'stopped' (it
    ended in 'Nursery stack corrupted', exit 1, every time: issue 24)."""
    meta = storaged("meta", extra=["--roles", "meta"])
    chunk = storaged("chunk", extra=["--meta", meta.address, "--heartbeat-interval", "0.2"])
    wait_until(
        lambda: [s for s in call(meta.address, secret, "cluster.servers") if s["state"] == "up"]
    )
    for i in range(5):
        data = os.urandom(10_000 + i)
        call(chunk.address, secret, "chunk.put", chunk_id(data), data)
    call(meta.address, secret, "repair.run")
    wait_until(lambda: call(meta.address, secret, "repair.status")["passes"] >= 1)
    for server in (chunk, meta):
        server.proc.send_signal(signal.SIGTERM)
        assert server.proc.wait(20) == 0, server.read_log()[-3000:]
        log = server.read_log()
        assert "stopped" in log and "Traceback" not in log, log[-3000:]
