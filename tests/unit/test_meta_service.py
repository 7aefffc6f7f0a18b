"""The meta role's RPC methods where they add rules of their own to the namespace's:
holds taken by mount sessions decide whether an unlinked inode is deleted at once."""

from __future__ import annotations

import errno
import stat

import pytest
from trio.testing import trio_test

from storaged.meta.db import open_database
from storaged.meta.service import MetaService
from storaged.rpc.errors import FsError

FILE, DIR = stat.S_IFREG | 0o644, stat.S_IFDIR | 0o755


async def _service_with_volume() -> tuple[MetaService, int]:
    service = MetaService(open_database(":memory:"))
    vol = await service.volume_create("v", 1 << 30, 2, 1 << 20)
    return service, vol["root"]


async def _gone(service: MetaService, ino: int) -> bool:
    try:
        await service.fs_getattr(ino)
    except FsError as exc:
        assert exc.errno == errno.ENOENT
        return True
    return False


@trio_test
async def test_unlink_deletes_an_orphan_nobody_holds_in_the_same_call():
    service, root = await _service_with_volume()
    f = await service.fs_mknod(root, b"f", FILE, 0, 0)
    d = await service.fs_mknod(root, b"d", DIR, 0, 0)
    used = (await service.volume_get("v"))["used_inodes"]
    gone = await service.fs_unlink(root, b"f")
    assert gone["nlink"] == 0 and gone["deleted"] is True
    assert gone["parent"]["ino"] == root
    assert await _gone(service, f["ino"])
    removed = await service.fs_rmdir(root, b"d")
    assert removed["nlink"] == 0 and removed["deleted"] is True
    assert await _gone(service, d["ino"])
    assert (await service.volume_get("v"))["used_inodes"] == used - 2


@trio_test
async def test_unlink_keeps_a_held_orphan_until_its_release():
    service, root = await _service_with_volume()
    session = await service.session_open("test mount")
    f = await service.fs_mknod(root, b"f", FILE, 0, 0, 0, None, session)   # create: held
    g = await service.fs_mknod(root, b"g", FILE, 0, 0)
    await service.fs_open(g["ino"], session)                              # open: held
    for name, ino in ((b"f", f["ino"]), (b"g", g["ino"])):
        kept = await service.fs_unlink(root, name)
        assert kept["nlink"] == 0 and "deleted" not in kept
        assert (await service.fs_getattr(ino))["nlink"] == 0   # still readable while open
        assert await service.fs_release(ino, session) is True  # last close deletes it
        assert await _gone(service, ino)


@trio_test
async def test_unlink_of_one_of_two_names_deletes_nothing():
    service, root = await _service_with_volume()
    f = await service.fs_mknod(root, b"f", FILE, 0, 0)
    await service.fs_link(f["ino"], root, b"g")
    first = await service.fs_unlink(root, b"f")
    assert first["nlink"] == 1 and "deleted" not in first
    assert (await service.fs_getattr(f["ino"]))["nlink"] == 1
    with pytest.raises(FsError) as info:
        await service.fs_unlink(root, b"f")
    assert info.value.errno == errno.ENOENT


@trio_test
async def test_a_commit_answers_the_volumes_usage_after_it():
    service, root = await _service_with_volume()
    f = await service.fs_mknod(root, b"f", FILE, 0, 0)
    cid = "ab" * 32
    answer = await service.fs_commit(f["ino"], 1000, [[0, cid, 0, 1000]])
    assert answer["size"] == 1000
    assert answer["volume_used"] == (await service.volume_get("v"))["used_bytes"] == 1000
    many = [[i, cid, 0, 1000] for i in range(1, 40)]   # a long list: the worker thread
    answer = await service.fs_commit(f["ino"], 40 << 20, many)
    assert answer["volume_used"] == (await service.volume_get("v"))["used_bytes"] == 40_000


@trio_test
async def test_rename_over_a_file_deletes_it_unless_it_is_held():
    service, root = await _service_with_volume()
    session = await service.session_open("test mount")
    old = await service.fs_mknod(root, b"old", FILE, 0, 0)
    for i in range(2):
        await service.fs_mknod(root, b"new%d" % i, FILE, 0, 0)
    replaced = await service.fs_rename(root, b"new0", root, b"old")
    assert replaced["ino"] == old["ino"] and replaced["deleted"] is True
    assert await _gone(service, old["ino"])
    target = (await service.fs_lookup(root, b"old"))["ino"]
    await service.fs_open(target, session)
    replaced = await service.fs_rename(root, b"new1", root, b"old")
    assert replaced["ino"] == target and "deleted" not in replaced   # held: kept
    assert await service.fs_release(target, session) is True
    assert await service.fs_rename(root, b"old", root, b"again") is None   # nothing replaced
