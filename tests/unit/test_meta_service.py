"""The meta role's RPC methods where they add rules of their own to the namespace's:
holds taken by mount sessions decide whether an unlinked inode is deleted at once, and
sessions recorded before a restart keep every deletion waiting until they are back."""

from __future__ import annotations

import errno
import stat

import pytest
import trio
from trio.testing import trio_test

from storaged.meta.db import open_database
from storaged.meta.service import MetaService
from storaged.rpc.errors import Busy, FsError, InvalidArgument
from storaged.rpc.methods import MethodTable

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
    with pytest.raises(FsError) as info:  # a mount still reading it gets an error, not zeros
        await service.fs_chunks(f["ino"], 0, 10, True)
    assert info.value.errno == errno.ESTALE
    removed = await service.fs_rmdir(root, b"d")
    assert removed["nlink"] == 0 and removed["deleted"] is True
    assert await _gone(service, d["ino"])
    assert (await service.volume_get("v"))["used_inodes"] == used - 2


@trio_test
async def test_unlink_keeps_a_held_orphan_until_its_release():
    service, root = await _service_with_volume()
    session = await service.session_open("test mount")
    f = await service.fs_mknod(root, b"f", FILE, 0, 0, 0, None, session)  # create: held
    g = await service.fs_mknod(root, b"g", FILE, 0, 0)
    await service.fs_open(g["ino"], session)  # open: held
    for name, ino in ((b"f", f["ino"]), (b"g", g["ino"])):
        kept = await service.fs_unlink(root, name)
        assert kept["nlink"] == 0 and "deleted" not in kept
        assert (await service.fs_getattr(ino))["nlink"] == 0  # still readable while open
        assert await service.fs_release(ino, session) is True  # last close deletes it
        assert await _gone(service, ino)


@trio_test
async def test_a_lookup_with_pieces_answers_what_an_open_would_and_holds_the_file():
    """fs.lookup with a session and pieces: a regular file comes with the map of its first
    pieces and a hold (an unlink elsewhere keeps it); a directory, a lookup without a
    session or an unknown session's gets neither."""
    service, root = await _service_with_volume()
    session = await service.session_open("test mount")
    f = await service.fs_mknod(root, b"f", FILE, 0, 0)
    cid = "ab" * 32
    await service.fs_commit(f["ino"], 100, [[0, cid, 0, 100]], 5)
    await service.fs_mknod(root, b"d", stat.S_IFDIR | 0o755, 0, 0)
    found = await service.fs_lookup(root, b"f", session, 4)
    assert found["held"] is True and found["ino"] == f["ino"]
    assert [row[:4] for row in found["chunks"]] == [[0, cid, 0, 100]]
    assert found == {**await service.fs_open(f["ino"], session, 4), "held": True}
    plain = await service.fs_lookup(root, b"f", session)
    assert "chunks" not in plain and "held" not in plain
    assert "held" not in await service.fs_lookup(root, b"f", None, 4)
    assert "held" not in await service.fs_lookup(root, b"f", "nobody", 4)
    directory = await service.fs_lookup(root, b"d", session, 4)
    assert "held" not in directory and "chunks" not in directory
    with pytest.raises(InvalidArgument):
        await service.fs_lookup(root, b"f", session, "4")
    kept = await service.fs_unlink(root, b"f")  # elsewhere: the lookup's hold keeps it
    assert kept["nlink"] == 0 and "deleted" not in kept
    assert await service.fs_release(f["ino"], session) is True
    assert await _gone(service, f["ino"])


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
    many = [[i, cid, 0, 1000] for i in range(1, 40)]  # a long list: the worker thread
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
    assert replaced["ino"] == target and "deleted" not in replaced  # held: kept
    assert await service.fs_release(target, session) is True
    assert await service.fs_rename(root, b"old", root, b"again") is None  # nothing replaced


def _restart(service: MetaService, path: str, session_timeout: float = 60.0) -> MetaService:
    """What a SIGKILL and a new start leave: the database, nothing from memory."""
    service.conn.close()
    return MetaService(open_database(path), session_timeout=session_timeout)


@trio_test
async def test_after_a_restart_nothing_is_deleted_until_the_mounts_from_before_are_back(tmp_path):
    path = str(tmp_path / "meta.db")
    service = MetaService(open_database(path))
    root = (await service.volume_create("v", 1 << 30, 2, 1 << 20))["root"]
    before = await service.session_open("mount a")
    held = await service.fs_mknod(root, b"held", FILE, 0, 0, 0, None, before)
    loose = await service.fs_mknod(root, b"loose", FILE, 0, 0)

    service = _restart(service, path)
    assert service.sessions.restored_count() == 1
    # the session is known but not what it holds: it must register again
    assert await service.session_heartbeat(before) is False
    for refused in (
        service.fs_open(held["ino"], before),
        service.fs_mknod(root, b"new", FILE, 0, 0, 0, None, before),
        service.session_pending(before, ["ab" * 32], []),
    ):
        with pytest.raises(FsError) as info:
            await refused
        assert info.value.errno == errno.ESTALE
    with pytest.raises(FsError):
        await service.fs_lookup(root, b"new")  # refused before anything was made
    # another mount unlinks both: neither is deleted, since mount a may hold either
    for name in (b"held", b"loose"):
        kept = await service.fs_unlink(root, name)
        assert kept["nlink"] == 0 and "deleted" not in kept
    assert await service.fs_forget([loose["ino"]]) == 0
    with pytest.raises(Busy):
        await service.gc_unreferenced(["ab" * 32])

    # mount a registers again with what it holds, then closes the old session
    again = await service.session_open("mount a")
    await service.fs_open(held["ino"], again)
    await service.session_close(before)
    assert service.sessions.deletions_allowed()
    assert await service.fs_forget([loose["ino"], held["ino"]]) == 1  # only the unheld one
    assert await _gone(service, loose["ino"]) and not await _gone(service, held["ino"])
    assert await service.fs_release(held["ino"], again) is True
    assert await _gone(service, held["ino"])
    assert await service.gc_unreferenced(["ab" * 32]) == ["ab" * 32]


@trio_test
async def test_a_session_from_before_a_restart_that_never_comes_back_expires(tmp_path):
    path = str(tmp_path / "meta.db")
    service = MetaService(open_database(path))
    root = (await service.volume_create("v", 1 << 30, 2, 1 << 20))["root"]
    await service.session_open("a mount that crashed with the meta role")
    await service.fs_mknod(root, b"f", FILE, 0, 0)
    service = _restart(service, path, session_timeout=0.05)
    assert "deleted" not in await service.fs_unlink(root, b"f")
    await trio.sleep(0.1)
    await service._expire_sessions()
    assert service.sessions.deletions_allowed()
    assert service.conn.execute("SELECT count(*) FROM mount_sessions").fetchone()[0] == 0


@trio_test
async def test_sessions_closed_before_a_restart_leave_nothing_to_wait_for(tmp_path):
    path = str(tmp_path / "meta.db")
    service = MetaService(open_database(path))
    root = (await service.volume_create("v", 1 << 30, 2, 1 << 20))["root"]
    await service.session_close(await service.session_open("a mount that stopped cleanly"))
    await service.fs_mknod(root, b"f", FILE, 0, 0)
    service = _restart(service, path)
    assert service.sessions.deletions_allowed()
    assert (await service.fs_unlink(root, b"f"))["deleted"] is True


@trio_test
async def test_a_database_from_before_recorded_sessions_waits_like_after_a_restart(tmp_path):
    """Schema 4 kept sessions in memory only: its mounts are unknown, so the first start
    after the upgrade waits for them as for a restored session."""
    path = str(tmp_path / "meta.db")
    conn = open_database(path)
    conn.execute("DROP TABLE mount_sessions")
    conn.execute("UPDATE meta_info SET value = '4' WHERE key = 'schema_version'")
    conn.close()
    service = MetaService(open_database(path), session_timeout=0.05)
    assert not service.sessions.deletions_allowed()
    await trio.sleep(0.1)
    await service._expire_sessions()
    assert service.sessions.deletions_allowed()


@trio_test
async def test_readdir_answers_rows_in_the_order_the_mount_reads_them():
    """fs.readdir with rows: [name, cookie, *attributes in storaged.metaclient.ATTR_KEYS order],
    the same entries as the maps an older mount asks for."""
    from storaged.metaclient import ATTR_KEYS

    service, root = await _service_with_volume()
    for i in range(5):
        await service.fs_mknod(root, f"f{i}".encode(), FILE | 0o10 * i, 7 + i, 70 + i)
    await service.fs_mknod(root, b"d", DIR, 0, 0)
    maps = await service.fs_readdir(root, 0, 4)
    rows = await service.fs_readdir(root, 0, 4, True)
    assert len(rows) == 4
    assert [list(r) for r in rows] == [
        [name, cookie, *(attr[k] for k in ATTR_KEYS)] for name, attr, cookie in maps
    ]
    rest = await service.fs_readdir(root, rows[-1][1], 4, True)
    assert [r[0] for r in rest] == [b"f4", b"d"]
    with pytest.raises(FsError) as info:
        await service.fs_readdir(rest[0][2], 0, 4, True)
    assert info.value.errno == errno.ENOTDIR


@trio_test
async def test_a_session_holds_what_its_kernel_references_until_it_drops_it():
    """session.hold: an inode referenced by a mount's kernel (no open file) survives an
    unlink and an rmdir elsewhere, is listed as a kept orphan for that session, and goes
    when the hold is dropped."""
    service, root = await _service_with_volume()
    mine = await service.session_open("referencing mount")
    f = await service.fs_mknod(root, b"f", FILE, 0, 0)
    d = await service.fs_mknod(root, b"d", DIR, 0, 0)
    assert await service.session_hold(mine, [f["ino"], d["ino"]], []) == 0
    assert "deleted" not in await service.fs_unlink(root, b"f")  # another mount deletes
    assert "deleted" not in await service.fs_rmdir(root, b"d")
    assert (await service.fs_getattr(d["ino"]))["nlink"] == 0  # stat still answers
    assert sorted(await service.session_orphans(mine)) == sorted([f["ino"], d["ino"]])
    assert await service.session_hold(mine, [], [f["ino"], d["ino"]]) == 2
    assert await _gone(service, f["ino"]) and await _gone(service, d["ino"])
    assert await service.session_orphans(mine) == []


@trio_test
async def test_an_unlink_with_the_session_holds_the_victim_for_that_mount():
    service, root = await _service_with_volume()
    mine = await service.session_open("unlinking mount")
    f = await service.fs_mknod(root, b"f", FILE, 0, 0)
    kept = await service.fs_unlink(root, b"f", mine)
    assert kept["nlink"] == 0 and "deleted" not in kept
    assert await service.fs_forget([f["ino"]], mine) == 1  # its kernel forgot it
    assert await _gone(service, f["ino"])
    g = await service.fs_mknod(root, b"g", FILE, 0, 0)
    with pytest.raises(FsError) as info:  # refused, nothing done
        await service.fs_unlink(root, b"g", "no-such-session")
    assert info.value.errno == errno.ESTALE
    assert (await service.fs_getattr(g["ino"]))["nlink"] == 1


@trio_test
async def test_session_hold_refuses_what_is_not_a_list_of_inodes():
    service, _ = await _service_with_volume()
    mine = await service.session_open("m")
    for add, drop in (([0], []), (["1"], []), ([], [1.5]), ("1", []), ([True], [])):
        with pytest.raises(InvalidArgument):
            await service.session_hold(mine, add, drop)
    with pytest.raises(FsError) as info:
        await service.session_hold("unknown", [1], [])
    assert info.value.errno == errno.ESTALE


@trio_test
async def test_a_heartbeat_the_cluster_map_cannot_use_is_refused():
    """One bad entry in the map reached the repair pass (it died of it), the mounts'
    placement and every CLI listing servers: heartbeats are checked first (issue 24)."""
    service, _ = await _service_with_volume()
    good = (
        "5e63623e122d4fd7b84032a54ffa22ca",
        "tcp://10.0.0.7:7700",
        "node-1",
        {
            "capacity": 1 << 40,
            "used": 0,
            "free": 1 << 40,
            "chunks": 0,
            "scrub": {"enabled": True, "passes": 1},
        },
    )
    assert await service.cluster_heartbeat(*good) is True
    bad = [
        ("x" * 10_000, *good[1:]),
        ("id\nwith newline", *good[1:]),
        ("ünï", *good[1:]),
        (good[0], "not-an-address", *good[2:]),
        (good[0], "tcp://host:99999", *good[2:]),
        (good[0], "unix://relative.sock", *good[2:]),
        (good[0], good[1], "a zone", good[3]),
        (good[0], "http://10.0.0.7:80", *good[2:]),
        (good[0], "tcp://10.0.0.7:0", *good[2:]),
        (good[0], "tcp://10.0.0.7:7700\n", *good[2:]),
        (good[0], "tcp://a b:1", *good[2:]),
        (good[0], "tcp://[not-v6]:1", *good[2:]),
        (good[0], "tcp://host/x:1", *good[2:]),
        (*good[:3], {**good[3], "used": -1}),
        (*good[:3], {**good[3], "free": 1 << 64}),
        (*good[:3], {**good[3], "chunks": "7"}),
        (*good[:3], {**good[3], "scrub": [1]}),
        (*good[:3], "usage"),
    ]
    for args in bad:
        with pytest.raises(InvalidArgument):
            await service.cluster_heartbeat(*args)
    assert [s["address"] for s in await service.cluster_servers()] == ["tcp://10.0.0.7:7700"]


@trio_test
async def test_a_server_row_with_an_unusable_address_is_left_out_of_the_map():
    """A row an older release stored without checking must not reach those who dial it."""
    service, _ = await _service_with_volume()
    usage = {"capacity": 1 << 30, "used": 0, "free": 1 << 30, "chunks": 0}
    await service.cluster_heartbeat("good", "tcp://127.0.0.1:7700", "", usage)
    await service.cluster_heartbeat("bad", "tcp://127.0.0.1:7701", "", usage)
    service.conn.execute("UPDATE servers SET address='not-an-address' WHERE id='bad'")
    assert [s["id"] for s in await service.cluster_servers()] == ["good"]
    await service.cluster_heartbeat("bad", "tcp://127.0.0.1:7702", "", usage)  # fixed
    assert [s["id"] for s in await service.cluster_servers()] == ["bad", "good"]


@trio_test
async def test_values_a_mount_cannot_show_are_refused_before_they_are_stored():
    """uid -1 or gid 2^40 made every listing of the directory fail with EIO on every mount;
    a mode without a file type gave an entry answering EIO; integers past 2^63 came back
    as INTERNAL with a traceback; an unknown xattr namespace was stored (issue 24)."""
    service, root = await _service_with_volume()
    table = MethodTable()
    service.register(table)
    f = await service.fs_mknod(root, b"f", FILE, 0, 0)
    for changes in (
        {"uid": -1},
        {"gid": 1 << 40},
        {"mode": 1 << 20},
        {"size": -5},
        {"mtime_ns": 1 << 63},
    ):
        with pytest.raises(InvalidArgument):
            await service.fs_setattr(f["ino"], changes)
    for mode, uid, rdev in (
        (0, 0, 0),
        (0o170644, 0, 0),
        (FILE, 1 << 32, 0),
        (stat.S_IFCHR | 0o600, 0, 1 << 33),
    ):
        with pytest.raises(InvalidArgument):
            await service.fs_mknod(root, b"bad", mode, uid, 0, rdev)
    with pytest.raises(InvalidArgument, match="2\\^63"):
        table.get("fs.getattr").bind([1 << 64])
    with pytest.raises(FsError) as info:
        await service.fs_setxattr(f["ino"], b"bogus.name", b"v")
    assert info.value.errno == errno.EOPNOTSUPP
    await service.fs_setxattr(f["ino"], b"user.fine", b"v")
    st = await service.fs_setattr(f["ino"], {"uid": 1000, "gid": (1 << 32) - 2, "mode": FILE})
    assert (st["uid"], st["gid"]) == (1000, (1 << 32) - 2)
    assert [e[0] for e in await service.fs_readdir(root)] == [b"f"]
