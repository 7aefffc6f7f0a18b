"""The typed meta client: one method per meta-role RPC, sent in the form the meta role's
signature takes, its fallbacks for an older meta role, and nobody else naming a method."""

from __future__ import annotations

import ast
import inspect
import stat
from pathlib import Path
from typing import Any

import pytest
import trio

from storaged.meta.db import open_database
from storaged.meta.service import MetaService
from storaged.metaclient import LEAVES_DIRECTORIES_ALONE, REPEATABLE, MetaClient
from storaged.rpc.errors import MethodNotFound
from storaged.rpc.methods import MethodTable
from tests.unit.meta_rpc import MetaOverRpc, meta_service

ROOT = Path(__file__).resolve().parents[2]


def meta_methods() -> list[str]:
    table = MethodTable()
    MetaService(open_database(":memory:")).register(table)
    return table.names()


def test_every_meta_method_has_one_client_method_and_no_other() -> None:
    wire = set(meta_methods())
    client = {
        name.replace("_", ".", 1)
        for name, _ in inspect.getmembers(MetaClient)
        if inspect.iscoroutinefunction(getattr(MetaClient, name)) and not name.startswith("_")
    }
    assert client == wire
    assert wire >= REPEATABLE and wire >= LEAVES_DIRECTORIES_ALONE


def test_client_parameters_follow_the_meta_roles_signatures() -> None:
    """Each client method takes the service method's parameters in the same order (the
    client may add keyword-only call options, and leave off ones it chooses itself:
    fs.readdir always asks for rows), so a call is bound as the server binds it."""
    service = MetaService(open_database(":memory:"))
    for name in meta_methods():
        attr = name.replace(".", "_", 1)
        served = list(inspect.signature(getattr(service, attr)).parameters.values())
        asked = [
            p
            for p in inspect.signature(getattr(MetaClient, attr)).parameters.values()
            if p.name != "self" and p.kind is not p.KEYWORD_ONLY
        ]
        chosen = {"rows"} if name == "fs.readdir" else set()  # always rows, from the client
        assert [p.name for p in asked] == [p.name for p in served if p.name not in chosen], name


def test_no_module_outside_the_meta_role_and_its_client_spells_a_method_name() -> None:
    names = set(meta_methods())
    found = []
    for package in ("storaged", "fusefs", "csi", "shoal", "bench"):
        for path in (ROOT / package).rglob("*.py"):
            relative = path.relative_to(ROOT).as_posix()
            if relative.startswith(("storaged/meta/", "storaged/metaclient/")):
                continue
            for node in ast.walk(ast.parse(path.read_text(), str(path))):
                if isinstance(node, ast.Constant) and node.value in names:
                    found.append(f"{relative}:{node.lineno}: {node.value!r}")
    assert found == []


def run(test: Any, old: dict[str, int] | None = None) -> None:
    async def main() -> None:
        service, vol = await meta_service()
        rpc = MetaOverRpc(service, old)
        await test(MetaClient(rpc, "meta"), rpc, service, vol)

    trio.run(main)


def test_a_round_of_namespace_calls_through_the_client() -> None:
    async def test(meta: MetaClient, rpc: MetaOverRpc, service: MetaService, vol: Any) -> None:
        session = await meta.session_open("test")
        made = await meta.fs_mknod(vol["root"], b"f", stat.S_IFREG | 0o600, 1, 2, session=session)
        assert made["parent"]["ino"] == vol["root"] and made["uid"] == 1
        assert (await meta.fs_lookup(vol["root"], b"f"))["ino"] == made["ino"]
        rows = await meta.fs_readdir(vol["root"], 0, 10)
        assert [r[0] for r in rows] == [b"f"] and rows[0][2] == made["ino"]
        gone = await meta.fs_unlink(vol["root"], b"f", session)
        assert gone["nlink"] == 0 and not gone.get("deleted")  # held for the session
        assert await meta.fs_release(made["ino"], session) is True  # the last hold: deleted

    run(test)


def test_an_older_meta_role_gets_the_forms_it_knows_and_features_remember() -> None:
    """fs.readdir without rows (maps made into rows), fs.open and fs.lookup without
    pieces, fs.unlink without a session: each refused once, then sent in the old form
    straight away."""
    old = {"fs.readdir": 3, "fs.open": 2, "fs.unlink": 2, "fs.lookup": 3}

    async def test(meta: MetaClient, rpc: MetaOverRpc, service: MetaService, vol: Any) -> None:
        session = await meta.session_open("test")
        f = await meta.fs_mknod(vol["root"], b"f", stat.S_IFREG | 0o600, 0, 0)
        for _ in range(2):
            rows = await meta.fs_readdir(vol["root"], 0, 10)
            assert rows[0][:3] == [b"f", rows[0][1], f["ino"]]
            assert rows[0][3] == stat.S_IFREG | 0o600
            attr = await meta.fs_open(f["ino"], session, 4)
            assert "chunks" not in attr
            found = await meta.fs_lookup(vol["root"], b"f", session, 4)
            assert found["ino"] == f["ino"] and "held" not in found
        assert [n for m, n in rpc.calls if m == "fs.lookup"] == [4, 3, 3]
        assert not meta.features.map_with_lookup
        assert [n for m, n in rpc.calls if m == "fs.readdir"] == [4, 3, 3]
        assert [n for m, n in rpc.calls if m == "fs.open"] == [3, 2, 2]
        assert not meta.features.rows_listing and not meta.features.map_with_open
        await meta.fs_unlink(vol["root"], b"f", session)
        assert [n for m, n in rpc.calls if m == "fs.unlink"] == [3, 2]
        assert not meta.features.holds

    run(test, old)


def test_a_meta_role_without_holds_turns_them_off() -> None:
    class NoHolds(MetaOverRpc):
        async def call(self, address: str, method: str, *params: Any, **options: Any) -> Any:
            if method in ("session.hold", "session.orphans"):
                raise MethodNotFound(f"no method {method}")
            return await super().call(address, method, *params, **options)

    async def main() -> None:
        service, vol = await meta_service()
        meta = MetaClient(NoHolds(service), "meta")
        session = await meta.session_open("test")
        assert await meta.session_orphans(session) == []
        assert meta.features.holds
        assert await meta.session_hold(session, [vol["root"]], []) is False
        assert not meta.features.holds

    trio.run(main)


@pytest.mark.parametrize(
    "method, changes", [("fs_getattr", False), ("fs_setattr", True), ("fs_commit", False)]
)
def test_on_change_is_told_before_a_call_that_may_change_a_directory(
    method: str, changes: bool
) -> None:
    async def test(meta: MetaClient, rpc: MetaOverRpc, service: MetaService, vol: Any) -> None:
        told: list[int] = []
        meta.on_change = lambda: told.append(len(rpc.calls))
        f = await service.fs_mknod(vol["root"], b"f", stat.S_IFREG | 0o600, 0, 0)
        args = {
            "fs_getattr": (f["ino"],),
            "fs_setattr": (f["ino"], {"mode": 0o644}),
            "fs_commit": (f["ino"], 0, []),
        }[method]
        await getattr(meta, method)(*args)
        assert told == ([0] if changes else [])  # before the request left

    run(test)
