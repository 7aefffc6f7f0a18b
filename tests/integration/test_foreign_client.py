"""A msgpack-rpc client that knows nothing of shoalfs can authenticate and store chunks.

pynvim's msgpack-RPC session is a general client (Neovim's remote API rides on it); using
it proves the handshake is made of ordinary requests and the wire format is the standard.
"""

from __future__ import annotations

import hashlib
import hmac

import pytest
from pynvim.msgpack_rpc import tcp_session

from storaged.chunk.ids import chunk_id


class RpcFailure(Exception):
    pass


@pytest.fixture
def session(storaged):
    server = storaged()
    host, port = server.address.removeprefix("tcp://").rsplit(":", 1)
    s = tcp_session(host, int(port))
    # pynvim's default assumes Neovim's [type, message] errors; this hook is how a pynvim
    # user reads another server's error shape, here {"code", "message"}.
    s.error_wrapper = lambda err: RpcFailure(f"{err['code']}: {err['message']}")
    yield s
    s.close()


@pytest.mark.plaintext
def test_a_generic_msgpack_rpc_client_authenticates_and_uses_the_chunk_role(session, secret):
    with pytest.raises(RpcFailure, match="UNAUTHENTICATED"):
        session.request("chunk.usage")
    nonce = session.request("auth.challenge")["nonce"]
    proof = hmac.new(secret, b"shoalfs-v1 client" + nonce, hashlib.sha256).digest()
    assert session.request("auth.login", proof) is True

    data = b"written by somebody else's client" * 1000
    cid = chunk_id(data)
    assert session.request("chunk.put", cid, data) == {"size": len(data), "created": True}
    assert session.request("chunk.get", cid) == data
    assert session.request("chunk.get", cid, 8, 2) == data[8:10]
    assert session.request("chunk.usage")["chunks"] == 1
    with pytest.raises(RpcFailure, match="HASH_MISMATCH"):
        session.request("chunk.put", cid, b"other bytes")
    with pytest.raises(RpcFailure, match="NOT_FOUND"):
        session.request("chunk.get", chunk_id(b"never stored"))
