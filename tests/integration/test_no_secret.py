"""Without the cluster secret nothing is answered: every method of both roles, called over a
real socket by a peer that has not logged in (or logged in with a wrong secret), is refused,
and nothing it asked for happens."""

from __future__ import annotations

from pathlib import Path

import msgpack

from storaged.chunk.ids import chunk_id
from storaged.chunk.service import ChunkService
from storaged.chunk.store import ChunkStore
from storaged.meta.db import open_database
from storaged.meta.service import MetaService
from storaged.rpc import auth
from storaged.rpc.methods import MethodTable
from tests.helpers import call, raw_connection


def all_methods(tmp_path: Path) -> list[str]:
    """The methods a storaged with both roles serves, from the same registration code."""
    table = MethodTable()
    store = ChunkStore(tmp_path / "names", reserve=0)
    store.open()
    ChunkService(store).register(table)
    MetaService(open_database(":memory:")).register(table)
    store.close()
    return table.names()


def raw_call(address: str, method: str, params: list, login: bytes | None = None) -> list:
    with raw_connection(address) as sock:
        unpacker = msgpack.Unpacker(raw=False)

        def roundtrip(message: list) -> list:
            sock.sendall(msgpack.packb(message, use_bin_type=True))
            while True:
                for reply in unpacker:
                    return reply
                data = sock.recv(65536)
                if not data:
                    return []  # hung up
                unpacker.feed(data)

        if login is not None:
            nonce = roundtrip([0, 1, "auth.challenge", []])[3]["nonce"]
            roundtrip([0, 2, "auth.login", [auth.client_proof(login, nonce)]])
        return roundtrip([0, 3, method, params])


def test_no_method_answers_without_the_secret(storaged, secret, tmp_path: Path) -> None:
    server = storaged(extra=["--roles", "chunk,meta"])
    data = b"secret data" * 100
    cid = chunk_id(data)
    call(server.address, secret, "chunk.put", cid, data)
    call(server.address, secret, "volume.create", "v", 1 << 20, 1, 1 << 16)
    methods = all_methods(tmp_path)
    assert {
        "chunk.get",
        "chunk.put",
        "chunk.delete",
        "chunk.list",
        "volume.list",
        "fs.lookup",
        "fs.readdir",
        "meta.backup_open",
    } <= set(methods)
    wrong = b"w" * 32
    for method in methods:
        for login in (None, wrong):
            reply = raw_call(
                server.address, method, [cid] if method.startswith("chunk.") else [], login
            )
            # refused, or hung up on after a failed login; never a result
            assert reply == [] or (
                reply[0] == 1
                and reply[2]["code"] in ("UNAUTHENTICATED", "AUTH_FAILED")
                and reply[3] is None
            ), (method, login, reply)
    # and nothing happened: the chunk and the volume are still there, unchanged
    assert call(server.address, secret, "chunk.get", cid) == data
    assert [v["name"] for v in call(server.address, secret, "volume.list")] == ["v"]
