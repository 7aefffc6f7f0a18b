"""TLS between shoalfs processes: on with one directory, refusing everyone outside it.

The rest of the suite runs a second time with TLS on (scripts/test.sh); these tests show
what that pass cannot: that the bytes on the wire are really encrypted, and that a plain
client, a client of another CA and a TLS client of a plain server all fail fast with a
message that says what to fix.
"""

from __future__ import annotations

import os
import stat
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
import trio

from storaged.chunk.ids import chunk_id
from storaged.rpc import RpcClient, Unavailable, tls
from storaged.rpc.address import bound_address, open_listener, parse_address
from tests.helpers import StoragedProcess, mounted_volume, shoal

MARKER = b"shoalfs-plaintext-marker-" * 64


@pytest.fixture(scope="module")
def certs(tmp_path_factory: pytest.TempPathFactory) -> Path:
    directory = tmp_path_factory.mktemp("tls") / "certs"
    result = shoal("tls", "generate", str(directory))
    assert result.returncode == 0, result.stderr
    return directory


@pytest.fixture(scope="module")
def other_certs(tmp_path_factory: pytest.TempPathFactory) -> Path:
    directory = tmp_path_factory.mktemp("tls-other") / "certs"
    assert shoal("tls", "generate", str(directory)).returncode == 0
    return directory


@pytest.fixture
def tls_server(tmp_path: Path, secret_file: Path, certs: Path) -> Iterator[StoragedProcess]:
    proc = StoragedProcess(tmp_path / "chunk", secret_file, env={tls.ENV: str(certs)})
    try:
        yield proc.start()
    finally:
        proc.stop()


def put_and_get(address: str, secret: bytes, data: bytes) -> bytes:
    async def go() -> bytes:
        async with RpcClient(secret, connect_timeout=5, timeout=10) as client:
            cid = chunk_id(data)
            await client.call(address, "chunk.put", cid, data)
            return await client.call(address, "chunk.get", cid)

    return trio.run(go)


def wait_for_log(server: StoragedProcess, text: str, timeout: float = 10) -> bool:
    """The server logs after the client has already given up: give it a moment."""
    deadline = time.monotonic() + timeout
    while text not in server.read_log():
        if time.monotonic() > deadline:
            return False
        time.sleep(0.05)
    return True


def test_generate_writes_private_files_and_never_overwrites(certs: Path) -> None:
    for name in tls.FILES:
        assert stat.S_IMODE((certs / name).stat().st_mode) == 0o600
    again = shoal("tls", "generate", str(certs))
    assert again.returncode == 1 and "refusing to overwrite" in again.stderr


def test_a_bad_tls_directory_is_a_usage_error_before_anything_runs(tmp_path: Path) -> None:
    result = shoal("status", "--workdir", str(tmp_path), "--tls-dir", str(tmp_path / "none"))
    assert result.returncode == 2
    assert (
        "lacks ca.pem, cert.pem, key.pem" in result.stderr and "shoal tls generate" in result.stderr
    )
    from_env = shoal("status", "--workdir", str(tmp_path), env={tls.ENV: str(tmp_path)})
    assert from_env.returncode == 2 and "lacks" in from_env.stderr


def test_data_crosses_the_wire_encrypted(
    tls_server: StoragedProcess,
    secret: bytes,
    certs: Path,
    secret_file: Path,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """A recording proxy between client and server: the chunk's bytes never appear in it
    with TLS on, and do with it off (so the check itself can fail)."""
    plain = StoragedProcess(tmp_path / "plain", secret_file, env={tls.ENV: ""}).start()
    try:
        monkeypatch.setenv(tls.ENV, str(certs))
        seen_tls = through_recording_proxy(tls_server.address, secret)
        monkeypatch.setenv(tls.ENV, "")
        seen_plain = through_recording_proxy(plain.address, secret)
    finally:
        plain.stop()
    assert len(seen_tls) > len(MARKER) and MARKER[:64] not in seen_tls
    assert MARKER in seen_plain


def through_recording_proxy(target: str, secret: bytes) -> bytes:
    captured = bytearray()

    async def pump(src: trio.abc.Stream, dst: trio.abc.Stream) -> None:
        try:
            while data := await src.receive_some(65536):
                captured.extend(data)
                await dst.send_all(data)
        except (trio.BrokenResourceError, trio.ClosedResourceError):
            pass
        finally:
            await trio.aclose_forcefully(dst)

    async def go() -> None:
        listener = await open_listener(parse_address("tcp://127.0.0.1:0"))
        address = str(bound_address(listener, parse_address("tcp://127.0.0.1:0")))
        host, port = target.removeprefix("tcp://").rsplit(":", 1)

        async def relay(client: trio.SocketStream) -> None:
            upstream = await trio.open_tcp_stream(host, int(port))  # raw: the proxy sees bytes
            async with trio.open_nursery() as nursery:
                nursery.start_soon(pump, client, upstream)
                nursery.start_soon(pump, upstream, client)

        async with trio.open_nursery() as nursery:
            nursery.start_soon(trio.serve_listeners, relay, [listener])
            async with RpcClient(secret, connect_timeout=5, timeout=10) as client:
                cid = chunk_id(MARKER)
                await client.call(address, "chunk.put", cid, MARKER)
                assert await client.call(address, "chunk.get", cid) == MARKER
            nursery.cancel_scope.cancel()

    trio.run(go)
    return bytes(captured)


def test_a_plain_client_is_told_to_use_tls_at_once(
    tls_server: StoragedProcess, secret: bytes, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv(tls.ENV, "")
    started = time.monotonic()
    with pytest.raises(Unavailable, match="this server requires TLS"):
        put_and_get(tls_server.address, secret, b"x")
    assert time.monotonic() - started < 4  # not a hang until the client's timeout
    assert wait_for_log(tls_server, "refusing a plaintext connection")


def test_a_certificate_of_another_ca_is_refused_both_ways(
    tls_server: StoragedProcess, secret: bytes, other_certs: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv(tls.ENV, str(other_certs))
    with pytest.raises(Unavailable, match="CERTIFICATE_VERIFY_FAILED"):
        put_and_get(tls_server.address, secret, b"x")
    assert wait_for_log(tls_server, "TLS handshake from")


def test_a_tls_client_of_a_plain_server_says_tls_is_not_on_at_both_ends(
    tmp_path: Path, secret_file: Path, secret: bytes, certs: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    plain = StoragedProcess(tmp_path / "plain", secret_file, env={tls.ENV: ""}).start()
    try:
        monkeypatch.setenv(tls.ENV, str(certs))
        with pytest.raises(Unavailable, match="is TLS on at both ends"):
            put_and_get(plain.address, secret, b"x")
    finally:
        plain.stop()


def test_a_whole_cluster_with_a_mount_runs_on_tls(
    tmp_path: Path, certs: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Meta, chunk servers, heartbeats, the mount's reads and writes: all over TLS, and
    every one of those servers refuses a plain client."""
    monkeypatch.setenv(tls.ENV, str(certs))
    with mounted_volume(tmp_path, []) as (cluster, mnt):
        data = os.urandom(5 << 20)
        (mnt / "f").write_bytes(data)
        os.sync()
        assert (mnt / "f").read_bytes() == data
        servers = [cluster.meta, *cluster.chunks]
        monkeypatch.setenv(tls.ENV, "")
        for server in servers:
            with pytest.raises(Unavailable, match="this server requires TLS"):
                put_and_get(server.address, cluster.secret, b"x")
        logs = "".join(server.read_log() for server in servers)
    assert "TLS handshake from" not in logs  # no member of the cluster failed its handshake
