"""The meta role's half of delegated directories (storaged/meta/delegations.py): who may
hold a directory, a batch applied all or nothing, and a recall that makes another
mount's request wait for the holder's batch, or revokes the grant past its bound."""

from __future__ import annotations

import errno
import stat

import pytest
import trio
from trio.testing import trio_test

from storaged.meta import delegations
from storaged.meta.db import open_database
from storaged.meta.service import MetaService
from storaged.rpc.errors import FsError, InvalidArgument

FILE, DIR = stat.S_IFREG | 0o644, stat.S_IFDIR | 0o755
T = 1_700_000_000_000_000_000


async def _setup() -> tuple[MetaService, int, str, str]:
    """A service, a directory, and two listening sessions (past their first poll)."""
    service = MetaService(open_database(":memory:"))
    vol = await service.volume_create("v", 1 << 30, 2, 1 << 20)
    d = await service.fs_mknod(vol["root"], b"d", DIR, 0, 0)
    a = await service.session_open("a")
    b = await service.session_open("b")
    for session in (a, b):
        await service.session_listen(session, 30.0, 0.0)  # the first poll: a reset
    return service, d["ino"], a, b


def create(name: bytes, ino: int, hold: bool = False) -> list:
    return ["c", name, ino, FILE, 1000, 1000, 0, None, T, hold]


@trio_test
async def test_a_grant_reserves_inode_numbers_nobody_else_gets():
    service, d, a, _ = await _setup()
    grant = await service.dir_delegate(a, d)
    assert grant is not None and grant["dir"]["ino"] == d
    assert grant["last"] - grant["first"] + 1 == delegations.RANGE
    root = (await service.volume_get("v"))["root"]
    other = await service.fs_mknod(root, b"x", FILE, 0, 0)
    assert other["ino"] > grant["last"]
    assert await service.dir_delegate(a, d) is None  # held already


@trio_test
async def test_a_directory_another_mount_watches_is_not_delegated():
    service, d, a, b = await _setup()
    with pytest.raises(FsError):
        await service.fs_lookup(d, b"missing", b)  # b's kernel may cache "missing"
    assert await service.dir_delegate(a, d) is None
    assert await service.dir_delegate(b, d) is not None  # its own watch is no obstacle


@trio_test
async def test_a_session_that_does_not_listen_gets_no_grant():
    service, d, _, _ = await _setup()
    quiet = await service.session_open("quiet")
    assert await service.dir_delegate(quiet, d) is None
    with pytest.raises(FsError) as info:
        await service.dir_delegate("no-such-session", d)
    assert info.value.errno == errno.ESTALE


@trio_test
async def test_a_batch_applies_in_order_in_one_transaction():
    service, d, a, _ = await _setup()
    g = await service.dir_delegate(a, d)
    first = g["first"]
    ops = [
        create(b"f1", first, hold=True),
        create(b"f2", first + 1),
        ["m", b"f2", b"f3", 0],
        ["u", b"f1"],  # held by a (the create held it): kept as an orphan
        ["f", first],  # a's kernel forgot it: deleted now
    ]
    answer = await service.fs_apply(a, d, g["grant"], ops)
    assert answer["deleted"] == [first]
    assert answer["parent"]["ino"] == d
    listing = await service.fs_readdir(d, 0, 100, False, a)
    assert [name for name, _, _ in listing] == [b"f3"]
    f3 = await service.fs_lookup(d, b"f3", a)
    assert f3["ino"] == first + 1 and f3["uid"] == 1000 and f3["mtime_ns"] == T


@trio_test
async def test_a_batch_that_fails_a_check_changes_nothing():
    service, d, a, _ = await _setup()
    g = await service.dir_delegate(a, d)
    ops = [create(b"f1", g["first"]), ["u", b"not-there"]]
    with pytest.raises(FsError) as info:
        await service.fs_apply(a, d, g["grant"], ops)
    assert info.value.errno == errno.ENOENT
    assert await service.fs_readdir(d, 0, 100, False, a) == []
    for bad in (
        [create(b"f", g["last"] + 1)],  # outside the grant's range
        [["c", b"d", g["first"], DIR, 0, 0, 0, None, T, False]],  # a directory
        [["x"]],
        [["u", "text"]],
        "not a list",
    ):
        with pytest.raises(InvalidArgument):
            await service.fs_apply(a, d, g["grant"], bad)


@trio_test
async def test_another_mounts_lookup_recalls_and_sees_every_acknowledged_change():
    """B's lookup waits while A, told of the recall with its next poll, sends its last
    batch and gives the directory back; B then sees A's changes: a serial order."""
    service, d, a, b = await _setup()
    g = await service.dir_delegate(a, d)
    seen: dict = {}

    async def b_looks() -> None:
        seen["f"] = await service.fs_lookup(d, b"f", b)

    async with trio.open_nursery() as nursery:
        nursery.start_soon(b_looks)
        poll = await service.session_listen(a, 30.0, 1.0)
        assert poll["events"] == [["r", d, g["grant"]]]
        assert "f" not in seen  # still waiting for A
        await service.fs_apply(a, d, g["grant"], [create(b"f", g["first"])], True)
    assert seen["f"]["ino"] == g["first"]
    assert await service.dir_delegate(a, d) is None  # recalled lately, and b watches it


@trio_test
async def test_a_holder_that_does_not_answer_a_recall_loses_its_grant(monkeypatch):
    monkeypatch.setattr("storaged.meta.service.RECALL_WAIT", 0.2)
    service, d, a, b = await _setup()
    g = await service.dir_delegate(a, d)
    with trio.fail_after(5):
        listing = await service.fs_readdir(d, 0, 100, False, b)  # A never answers
    assert listing == []
    with pytest.raises(FsError) as info:
        await service.fs_apply(a, d, g["grant"], [create(b"late", g["first"])])
    assert info.value.errno == errno.ESTALE
    assert await service.fs_readdir(d) == []


@trio_test
async def test_changes_by_the_holder_itself_recall_nothing():
    service, d, a, _ = await _setup()
    g = await service.dir_delegate(a, d)
    with trio.fail_after(1):
        await service.fs_mknod(d, b"sync", FILE, 0, 0, 0, None, a)
        await service.fs_lookup(d, b"sync", a)
    answer = await service.fs_apply(a, d, g["grant"], [create(b"f", g["first"])], True)
    assert answer["parent"]["nlink"] == 2
    with pytest.raises(FsError) as info:  # given back: a second batch is refused
        await service.fs_apply(a, d, g["grant"], [])
    assert info.value.errno == errno.ESTALE


@trio_test
async def test_a_snapshot_recalls_every_delegation_first():
    service, d, a, _ = await _setup()
    g = await service.dir_delegate(a, d)

    async def holder_answers() -> None:
        poll = await service.session_listen(a, 30.0, 2.0)
        assert poll["events"] == [["r", d, g["grant"]]]
        await service.fs_apply(a, d, g["grant"], [create(b"f", g["first"])], True)

    async with trio.open_nursery() as nursery:
        nursery.start_soon(holder_answers)
        await trio.sleep(0)
        snap = await service.snapshot_create("s", "v")
    root = snap["root"]
    copied = await service.fs_lookup(root, b"d")
    assert [name for name, _, _ in await service.fs_readdir(copied["ino"])] == [b"f"]


@trio_test
async def test_a_closed_session_holds_nothing():
    service, d, a, b = await _setup()
    g = await service.dir_delegate(a, d)
    await service.session_close(a)
    with trio.fail_after(1):
        assert await service.fs_readdir(d, 0, 10, False, b) == []
    assert service.delegations.find(a, d, g["grant"]) is None
