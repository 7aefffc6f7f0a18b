"""Malformed and random frames against a live storaged: it never crashes, never keeps a
partial chunk, and keeps answering a well-behaved client.

Hypothesis prints the failing example (and the seed to reproduce it with --hypothesis-seed).
"""

from __future__ import annotations

import os
import socket
import time

import msgpack
import pytest
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

from storaged.chunk.ids import chunk_id
from storaged.rpc import auth
from tests.helpers import call

METHODS = [
    "chunk.put",
    "chunk.get",
    "chunk.stat",
    "chunk.has",
    "chunk.delete",
    "chunk.list",
    "chunk.usage",
    "health",
    "auth.challenge",
    "auth.login",
]

scalars = (
    st.none()
    | st.booleans()
    | st.integers(-(2**63), 2**64 - 1)
    | st.floats()
    | st.text(max_size=80)
    | st.binary(max_size=300)
)
values = st.recursive(
    scalars,
    lambda inner: (
        st.lists(inner, max_size=5)
        | st.dictionaries(
            st.text(max_size=10) | st.integers(-(2**63), 2**64 - 1), inner, max_size=5
        )
    ),
    max_leaves=20,
)
hexid = st.text("0123456789abcdef", min_size=60, max_size=68)
params = st.lists(values | hexid | st.just(chunk_id(b"fuzz")), max_size=5)
requests = st.builds(
    lambda msgid, method, p: [0, msgid, method, p],
    st.integers(-5, 2**33) | values,
    st.sampled_from(METHODS) | st.text(max_size=20) | st.binary(max_size=20),
    params | values,
)


def pack(value: object) -> bytes:
    return msgpack.packb(value, use_bin_type=True)


frames = st.one_of(
    st.binary(max_size=2048),  # noise
    values.map(pack),  # any msgpack value
    requests.map(pack),  # request-shaped
    st.lists(requests, min_size=2, max_size=6).map(lambda rs: b"".join(map(pack, rs))),
    st.tuples(requests, st.integers(1, 40)).map(lambda t: pack(t[0])[: -t[1]]),  # truncated
    st.tuples(requests.map(pack), st.binary(min_size=1, max_size=8)).map(lambda t: t[0] + t[1]),
)


class RawClient:
    def __init__(self, address: str, secret: bytes | None) -> None:
        host, port = address.removeprefix("tcp://").rsplit(":", 1)
        for _attempt in range(50):
            # Connections the server is still closing (it lingers up to 2 s to let a peer
            # read why) count against its connection limit; when a burst of examples hits
            # it, the server answers with a BUSY notice and hangs up: try again shortly.
            self.sock = socket.create_connection((host, int(port)), timeout=10)
            if secret is None:
                return
            self.unpacker = msgpack.Unpacker(raw=False)
            try:
                nonce = self._roundtrip([0, 1, "auth.challenge", []])[3]["nonce"]
                assert self._roundtrip([0, 2, "auth.login", [auth.client_proof(secret, nonce)]])[3]
                return
            except (ConnectionError, IndexError, TypeError):
                self.sock.close()
                time.sleep(0.1)
        raise AssertionError("the server refused 50 connections in a row")

    def _roundtrip(self, message: list) -> list:
        self.sock.sendall(pack(message))
        while True:
            for reply in self.unpacker:
                return reply
            data = self.sock.recv(65536)
            if not data:
                raise ConnectionError("the server closed the connection")
            self.unpacker.feed(data)

    def send_and_drain(self, data: bytes) -> list:
        """Send, half-close, and read until the server closes: its answers to our bytes."""
        unpacker = msgpack.Unpacker(raw=False, strict_map_key=False)
        try:
            self.sock.sendall(data)
            self.sock.shutdown(socket.SHUT_WR)
            while chunk := self.sock.recv(65536):
                unpacker.feed(chunk)
        except (ConnectionResetError, BrokenPipeError):
            pass  # the server hung up on garbage: allowed
        finally:
            self.sock.close()
        return list(unpacker)


@pytest.mark.plaintext
def test_random_and_malformed_frames_never_hurt_the_server(storaged, secret):
    server = storaged(extra=["--max-frame", "2MiB"])

    outcomes: set[str] = set()

    @settings(
        max_examples=400,
        deadline=None,
        derandomize=False,
        database=None,
        suppress_health_check=list(HealthCheck),
    )
    @given(frame=frames, authenticated=st.booleans())
    # Always-run cases beside the random ones: well-formed calls mixed with garbage.
    @example(frame=pack([0, 7, "health", []]) + b"\xc1", authenticated=True)
    @example(frame=pack([0, 8, "chunk.get", [chunk_id(b"fuzz"), -1]]), authenticated=True)
    @example(frame=pack([0, 9, "chunk.no-such-method", []]), authenticated=True)
    @example(frame=b"\x81\x81\x00\x00\x00", authenticated=True)  # {{0: 0}: 0} killed it once
    def throw(frame: bytes, authenticated: bool) -> None:
        replies = RawClient(server.address, secret if authenticated else None).send_and_drain(frame)
        for reply in replies:
            if reply[0] == 1:
                outcomes.add(reply[2]["code"] if reply[2] else "ok")
        assert server.proc.poll() is None, f"storaged died:\n{server.read_log()[-3000:]}"

    throw()
    # the fuzz got past the handshake into the methods' own checks, and some calls worked
    assert {"INVALID_ARGUMENT", "UNAUTHENTICATED", "METHOD_NOT_FOUND", "ok"} <= outcomes, outcomes

    # A well-behaved client is still served, and the disk holds only whole, valid chunks.
    data = os.urandom(100_000)
    call(server.address, secret, "chunk.put", chunk_id(data), data)
    assert call(server.address, secret, "chunk.get", chunk_id(data)) == data
    assert list((server.data_dir / "tmp").iterdir()) == []
    listed = call(server.address, secret, "chunk.list", None, 10_000)["ids"]
    for cid in listed:
        call(server.address, secret, "chunk.get", cid)  # raises CORRUPTED if anything is off
    assert call(server.address, secret, "health")["corrupted_found"] == 0
    assert "Traceback" not in server.read_log()
