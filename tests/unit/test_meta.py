"""The meta role's rules on a real SQLite database: one transaction per call, as served."""

from __future__ import annotations

import errno
import stat

import pytest

from storaged.chunk.ids import chunk_id
from storaged.meta import files, namespace, servers, volumes, xattrs

from .metadb import CS, DIR, FILE, Meta, fails, mk


def test_volume_life_cycle_and_validation(meta, vol):
    root = meta(namespace.getattr_, vol["root"])
    assert stat.S_ISDIR(root["mode"]) and root["nlink"] == 2
    assert vol["capacity"] == 10 * CS and vol["replicas"] == 2 and vol["used_inodes"] == 1
    fails(errno.EEXIST, meta, volumes.create, "vol1", CS, 1, CS)
    for bad in [("bad name", CS, 1, CS), ("v", 0, 1, CS), ("v", CS, 0, CS), ("v", CS, 1, 3000)]:
        fails(errno.EINVAL, meta, volumes.create, *bad)
    assert [v["name"] for v in meta(volumes.list_all)] == ["vol1"]
    assert meta(volumes.resize, "vol1", 20 * CS)["capacity"] == 20 * CS
    mk(meta, vol["root"], b"f")
    assert meta(volumes.delete, "vol1") is True
    assert meta(volumes.delete, "vol1") is False
    fails(errno.ENOENT, meta, volumes.get, "vol1")
    assert meta.conn.execute("SELECT COUNT(*) FROM inodes").fetchone()[0] == 0


def test_create_lookup_and_directory_link_counts(meta, vol):
    root = vol["root"]
    before = meta(namespace.getattr_, root)
    d = mk(meta, root, b"dir", DIR)
    f = mk(meta, d["ino"], b"file", FILE, 1000, 1000)
    assert meta(namespace.lookup, d["ino"], b"file") == f
    assert f["uid"] == 1000 and f["nlink"] == 1 and f["size"] == 0
    after = meta(namespace.getattr_, root)
    assert after["nlink"] == 3 and after["mtime_ns"] >= before["mtime_ns"]
    fails(errno.EEXIST, mk, meta, root, b"dir")
    fails(errno.ENOENT, meta, namespace.lookup, root, b"nope")
    fails(errno.ENOTDIR, mk, meta, f["ino"], b"x")
    fails(errno.ENAMETOOLONG, mk, meta, root, b"n" * 256)
    assert mk(meta, root, b"n" * 255)["nlink"] == 1
    fails(errno.ENAMETOOLONG, meta, namespace.lookup, root, b"n" * 256)
    assert meta(volumes.get, "vol1")["used_inodes"] == 4


def test_setgid_directories_pass_on_their_group(meta, vol):
    d = mk(meta, vol["root"], b"shared", DIR | stat.S_ISGID, 0, 500)
    f = mk(meta, d["ino"], b"f", FILE, 1000, 1000)
    sub = mk(meta, d["ino"], b"sub", DIR, 1000, 1000)
    assert f["gid"] == 500 and sub["gid"] == 500 and sub["mode"] & stat.S_ISGID
    assert not f["mode"] & stat.S_ISGID


def test_unlink_makes_an_orphan_that_forget_removes(meta, vol):
    root = vol["root"]
    f = mk(meta, root, b"f")
    meta(namespace.link, f["ino"], root, b"g")
    assert meta(namespace.getattr_, f["ino"])["nlink"] == 2
    assert meta(namespace.unlink, root, b"f")["nlink"] == 1
    assert meta(namespace.forget, f["ino"]) is False  # still linked
    assert meta(namespace.unlink, root, b"g")["nlink"] == 0
    assert meta(namespace.getattr_, f["ino"])["nlink"] == 0  # open files keep working
    assert meta(namespace.forget, f["ino"]) is True
    fails(errno.ENOENT, meta, namespace.getattr_, f["ino"])
    d = mk(meta, root, b"d", DIR)
    fails(errno.EISDIR, meta, namespace.unlink, root, b"d")
    fails(errno.EPERM, meta, namespace.link, d["ino"], root, b"d2")
    fails(errno.ENOENT, meta, namespace.unlink, root, b"f")


def test_rmdir_rules(meta, vol):
    root = vol["root"]
    d = mk(meta, root, b"d", DIR)
    mk(meta, d["ino"], b"inner")
    fails(errno.ENOTEMPTY, meta, namespace.rmdir, root, b"d")
    meta(namespace.unlink, d["ino"], b"inner")
    mk(meta, root, b"file")
    fails(errno.ENOTDIR, meta, namespace.rmdir, root, b"file")
    assert meta(namespace.rmdir, root, b"d")["nlink"] == 0
    assert meta(namespace.getattr_, root)["nlink"] == 2
    fails(errno.ENOENT, mk, meta, d["ino"], b"late")  # a removed directory takes no entries


def test_rename_over_files_and_directories(meta, vol):
    root = vol["root"]
    a, b = mk(meta, root, b"a"), mk(meta, root, b"b")
    replaced = meta(namespace.rename, root, b"a", root, b"b")
    assert replaced["ino"] == b["ino"] and replaced["nlink"] == 0
    assert meta(namespace.lookup, root, b"b")["ino"] == a["ino"]
    fails(errno.ENOENT, meta, namespace.lookup, root, b"a")

    mk(meta, root, b"d1", DIR)
    d2 = mk(meta, root, b"d2", DIR)
    mk(meta, d2["ino"], b"x")
    fails(errno.ENOTEMPTY, meta, namespace.rename, root, b"d1", root, b"d2")
    fails(errno.ENOTDIR, meta, namespace.rename, root, b"d1", root, b"b")
    fails(errno.EISDIR, meta, namespace.rename, root, b"b", root, b"d1")
    fails(errno.EINVAL, meta, namespace.rename, root, b"d2", d2["ino"], b"inside")
    meta(namespace.unlink, d2["ino"], b"x")
    assert meta(namespace.rename, root, b"d1", root, b"d2")["ino"] == d2["ino"]
    assert meta(namespace.getattr_, root)["nlink"] == 3  # d2 replaced by d1: one subdir

    sub = mk(meta, root, b"sub", DIR)
    meta(namespace.rename, root, b"d2", sub["ino"], b"moved")
    assert meta(namespace.getattr_, root)["nlink"] == 3
    assert meta(namespace.getattr_, sub["ino"])["nlink"] == 3


def test_rename_noreplace_exchange_and_hard_link_noop(meta, vol):
    root = vol["root"]
    f, d = mk(meta, root, b"f"), mk(meta, root, b"d", DIR)
    fails(errno.EEXIST, meta, namespace.rename, root, b"f", root, b"d", namespace.RENAME_NOREPLACE)
    other = mk(meta, root, b"other", DIR)
    meta(namespace.rename, root, b"f", root, b"d", namespace.RENAME_EXCHANGE)
    assert meta(namespace.lookup, root, b"d")["ino"] == f["ino"]
    assert meta(namespace.lookup, root, b"f")["ino"] == d["ino"]
    # exchanging a directory into another parent moves a '..' with it
    meta(namespace.rename, root, b"f", other["ino"], b"z", 0)
    g = mk(meta, root, b"g")
    meta(namespace.rename, root, b"g", other["ino"], b"z", namespace.RENAME_EXCHANGE)
    assert meta(namespace.getattr_, other["ino"])["nlink"] == 2  # its subdir left
    assert meta(namespace.getattr_, root)["nlink"] == 4  # 'other' and the directory that came
    fails(
        errno.ENOENT,
        meta,
        namespace.rename,
        root,
        b"d",
        root,
        b"missing",
        namespace.RENAME_EXCHANGE,
    )
    meta(namespace.link, g["ino"], root, b"g2")  # g now lives in other/z and root/g2
    assert meta(namespace.rename, other["ino"], b"z", root, b"g2") is None
    assert meta(namespace.getattr_, g["ino"])["nlink"] == 2


def test_readdir_cookies_survive_changes_during_a_listing(meta, vol):
    root = vol["root"]
    names = [f"f{i:03d}".encode() for i in range(50)]
    for n in names:
        mk(meta, root, n)
    page = meta(namespace.readdir, root, 0, 20)
    assert [e[0] for e in page] == names[:20]
    assert page[0][1]["mode"] == FILE  # attributes come with the entries (readdirplus)
    meta(namespace.unlink, root, b"f030")
    meta(namespace.unlink, root, b"f005")  # already listed
    mk(meta, root, b"late")
    rest, after = [], page[-1][2]
    while batch := meta(namespace.readdir, root, after, 7):
        rest.extend(e[0] for e in batch)
        after = batch[-1][2]
    seen = [e[0] for e in page] + rest
    assert len(seen) == len(set(seen))
    assert b"f030" not in rest and b"late" in rest
    assert set(seen) == set(names) - {b"f030"} | {b"late"}


def test_a_readdir_page_starts_where_the_last_one_ended(meta, vol):
    """Without an index ordered by cookie within a directory, SQLite reads and sorts the
    whole directory for every page: listing n entries costs n * n / page."""
    plan = meta.conn.execute(
        "EXPLAIN QUERY PLAN " + namespace.LISTING_QUERY, (vol["root"], 0, 10)
    ).fetchall()
    steps = " / ".join(row[-1] for row in plan)
    assert "dentries_by_parent" in steps and "rowid>?" in steps, steps
    assert "TEMP B-TREE" not in steps, steps


def test_commit_quota_truncate_and_rollback(meta, vol):
    root = vol["root"]
    f = mk(meta, root, b"f")
    ino = f["ino"]
    c1, c2 = chunk_id(b"one"), chunk_id(b"two")
    attr = meta(files.commit, ino, 2 * CS, [[0, c1, 0, CS], [1, c2, 0, CS]])
    assert attr["size"] == 2 * CS and attr["stored"] == 2 * CS
    assert meta(volumes.get, "vol1")["used_bytes"] == 2 * CS
    assert meta(files.chunk_map, ino, 0, 10) == [[0, c1, 0, CS], [1, c2, 0, CS]]
    # the size never shrinks through commit
    assert meta(files.commit, ino, 10, [[0, c2, 0, CS]])["size"] == 2 * CS
    # a commit past the quota changes nothing at all
    fails(errno.ENOSPC, meta, files.commit, ino, 11 * CS, [[i, c1, 0, CS] for i in range(2, 11)])
    assert meta(files.chunk_map, ino, 0, 20) == [[0, c2, 0, CS], [1, c2, 0, CS]]
    # a malformed piece after a good one rolls the good one back too
    fails(errno.EINVAL, meta, files.commit, ino, 3 * CS, [[2, c1, 0, CS], [3, "nope", 0, 1]])
    fails(errno.EINVAL, meta, files.commit, ino, 3 * CS, [[2, c1, CS - 10, 20]])
    assert meta(files.chunk_map, ino, 2, 3) == []
    # a piece that became all zeros is a hole again, and frees its space
    assert meta(files.commit, ino, 2 * CS, [[1, None, 0, 0]])["stored"] == CS
    assert meta(files.commit, ino, 2 * CS, [[1, c2, 0, CS]])["stored"] == 2 * CS
    # truncate into the middle of piece 0: piece 1 dropped, piece 0 shortened, space freed
    attr = meta(files.setattr_, ino, {"size": 100})
    assert attr["size"] == 100 and attr["stored"] == 100
    assert meta(files.chunk_map, ino, 0, 10) == [[0, c2, 0, 100]]
    assert meta(volumes.get, "vol1")["used_bytes"] == 100
    attr = meta(files.setattr_, ino, {"size": 5 * CS})  # a hole: no space used
    assert attr["size"] == 5 * CS and attr["stored"] == 100
    assert meta(files.setattr_, ino, {"size": 0})["stored"] == 0
    fails(errno.EISDIR, meta, files.setattr_, root, {"size": 0})
    # a chunk that starts inside its piece: truncating below its start drops it
    meta(files.commit, ino, CS, [[0, c1, 4096, 1000]])
    assert meta(files.setattr_, ino, {"size": 5000})["stored"] == 5000 - 4096
    assert meta(files.setattr_, ino, {"size": 4000})["stored"] == 0
    assert meta(files.chunk_map, ino, 0, 0) == []


def test_setattr_modes_owners_times(meta, vol):
    f = mk(meta, vol["root"], b"f")
    attr = meta(
        files.setattr_,
        f["ino"],
        {"mode": 0o4711, "uid": 7, "gid": 8, "atime_ns": 1_000_000_001, "mtime_ns": 2_000_000_002},
    )
    assert attr["mode"] == stat.S_IFREG | 0o4711 and (attr["uid"], attr["gid"]) == (7, 8)
    assert (attr["atime_ns"], attr["mtime_ns"]) == (1_000_000_001, 2_000_000_002)
    assert attr["ctime_ns"] > f["ctime_ns"]
    fails(errno.EINVAL, meta, files.setattr_, f["ino"], {"nlink": 5})
    fails(errno.EINVAL, meta, files.setattr_, f["ino"], {"uid": "root"})


def test_xattr_flags(meta, vol):
    ino = mk(meta, vol["root"], b"f")["ino"]
    meta(xattrs.set_, ino, b"user.a", b"1", 0)
    fails(errno.EEXIST, meta, xattrs.set_, ino, b"user.a", b"2", xattrs.XATTR_CREATE)
    fails(errno.ENODATA, meta, xattrs.set_, ino, b"user.b", b"2", xattrs.XATTR_REPLACE)
    meta(xattrs.set_, ino, b"user.a", b"3", xattrs.XATTR_REPLACE)
    assert meta(xattrs.get, ino, b"user.a") == b"3"
    assert meta(xattrs.list_, ino) == [b"user.a"]
    meta(xattrs.remove, ino, b"user.a")
    fails(errno.ENODATA, meta, xattrs.get, ino, b"user.a")
    fails(errno.ENODATA, meta, xattrs.remove, ino, b"user.a")


def test_heartbeats_and_silence(meta):
    assert (
        meta(servers.heartbeat, "s1", "tcp://127.0.0.1:1", "z1", {"capacity": 10, "free": 5})
        is True
    )
    assert meta(servers.heartbeat, "s1", "tcp://127.0.0.1:1", "z1", {"capacity": 10}) is False
    assert meta(servers.mark_silent_down, 10**12) == []
    assert meta(servers.mark_silent_down, 0) == ["s1"]
    assert meta(servers.list_all)[0]["state"] == "down"
    assert meta(servers.heartbeat, "s1", "tcp://127.0.0.1:1", "z1", {}) is True  # back up
    assert meta(servers.list_all)[0]["state"] == "up"


def test_database_survives_reopen(tmp_path):
    first = Meta(tmp_path / "m.db")
    vol = first(volumes.create, "v", CS, 1, CS)
    mk(first, vol["root"], b"kept")
    first.conn.close()
    again = Meta(tmp_path / "m.db")
    assert again(namespace.lookup, vol["root"], b"kept")["nlink"] == 1
    assert again.conn.execute("PRAGMA journal_mode").fetchone()[0] == "wal"


def test_queries_served_outside_a_transaction_change_nothing(meta, vol):
    """The meta role runs these without BEGIN/COMMIT (service._read); a write there would be
    committed statement by statement, so _unwritten refuses it."""
    from storaged.meta.service import _unwritten
    from storaged.rpc.errors import Internal

    root = vol["root"]
    f = mk(meta, root, b"f")
    link = meta(namespace.make_node, root, b"l", stat.S_IFLNK | 0o777, 0, 0, 0, b"f")
    meta(xattrs.set_, f["ino"], b"user.a", b"1")
    cid = chunk_id(b"x" * 100)
    meta(files.commit, f["ino"], 100, [[0, cid, 0, 100]])
    assert _unwritten(meta.conn, namespace.lookup, root, b"f")["ino"] == f["ino"]
    assert _unwritten(meta.conn, namespace.getattr_, f["ino"])["size"] == 100
    assert _unwritten(meta.conn, namespace.readlink, link["ino"]) == b"f"
    assert _unwritten(meta.conn, xattrs.get, f["ino"], b"user.a") == b"1"
    assert _unwritten(meta.conn, xattrs.list_, f["ino"]) == [b"user.a"]
    assert _unwritten(meta.conn, files.chunk_map, f["ino"], 0, 5) == [[0, cid, 0, 100]]
    assert _unwritten(meta.conn, files.opened, f["ino"], 5)["chunks"] == [[0, cid, 0, 100]]
    with pytest.raises(Internal, match="outside a transaction"):
        _unwritten(meta.conn, xattrs.remove, f["ino"], b"user.a")


def test_slices_lie_over_a_piece_until_it_is_written_whole(meta, vol, monkeypatch):
    from storaged.meta import fsck

    f = mk(meta, vol["root"], b"f")
    ino = f["ino"]
    base, s1, s2, whole = (chunk_id(x) for x in (b"base", b"s1", b"s2", b"whole"))
    meta(files.commit, ino, CS, [[0, base, 0, CS]])
    attr = meta(
        files.commit, ino, CS, [[0, s1, 100, 10, 0], [0, s1, 5000, 20, 10], [1, s2, 7, 3, 0]]
    )
    assert attr["stored"] == CS + 33 and attr["size"] == CS  # a slice past the size: no growth
    assert meta(files.chunk_map, ino, 0, 5) == [
        [0, base, 0, CS, [[s1, 100, 10, 0], [s1, 5000, 20, 10]]],
        [1, None, 0, 0, [[s2, 7, 3, 0]]],
    ]  # slices over a hole have no chunk row
    # a caller that does not read slices (a mount older than them) gets EIO, not a map it
    # would misread; pieces without slices it still gets
    fails(errno.EIO, meta, files.chunk_map, ino, 0, 5, False)
    assert meta(files.chunk_map, ino, 2, 5, False) == []
    meta(files.commit, ino, CS, [[0, s2, 50, 100, 0]])  # a later flush lies over the earlier
    assert meta(files.chunk_map, ino, 0, 0)[0][4][-1] == [s2, 50, 100, 0]
    assert meta(volumes.get, "vol1")["used_bytes"] == CS + 133
    # every place that asks which chunks are in use sees the slices' chunks
    assert meta(files.referenced, [s1, s2, whole]) == {s1, s2}
    assert {c for c, _r in meta(files.referenced_with_replicas, None, 100)} == {base, s1, s2}
    assert set(meta(fsck.chunk_ids, "vol1", None, 100)) == {base, s1, s2}
    assert meta(fsck.check, "vol1")["problems"] == []
    # the piece written whole again drops its slices and their bytes
    assert meta(files.commit, ino, CS, [[0, whole, 0, CS]])["stored"] == CS + 3
    assert meta(files.chunk_map, ino, 0, 0) == [[0, whole, 0, CS]]
    # malformed slices change nothing
    for bad in (
        [0, s1, 0, 0, 0],
        [0, s1, -1, 5, 0],
        [0, s1, 0, 5, CS - 4],
        [0, "x", 0, 5, 0],
        [0, s1, 0, 5, "0"],
        [0, s1, CS - 1, 2, 0],
    ):
        fails(errno.EINVAL, meta, files.commit, ino, CS, [bad])
    fails(errno.ENOSPC, meta, files.commit, ino, CS, [[2, s1, 0, CS, 0]] * 9)
    assert meta(namespace.getattr_, ino)["stored"] == CS + 3
    monkeypatch.setattr(files, "MAX_SLICES_PER_PIECE", 2)
    meta(files.commit, ino, CS, [[0, s1, 0, 1, 0], [0, s1, 1, 1, 0]])
    fails(errno.EINVAL, meta, files.commit, ino, CS, [[0, s1, 2, 1, 0]])
    assert meta(fsck.check, "vol1")["problems"] == []


def test_truncate_cuts_slices_and_forget_drops_them(meta, vol):
    from storaged.meta import fsck

    f = mk(meta, vol["root"], b"f")
    ino = f["ino"]
    base, s = chunk_id(b"base"), chunk_id(b"s")
    meta(
        files.commit,
        ino,
        2 * CS,
        [
            [0, base, 0, CS],
            [1, base, 0, CS],
            [0, s, 100, 50, 0],
            [0, s, 1000, 50, 50],
            [0, s, 3000, 50, 100],
            [1, s, 0, 10, 0],
        ],
    )
    attr = meta(files.setattr_, ino, {"size": 1020})
    # piece 1 and its slice gone; the slice from 3000 gone; the one across 1020 cut to 20
    assert meta(files.chunk_map, ino, 0, 5) == [
        [0, base, 0, 1020, [[s, 100, 50, 0], [s, 1000, 20, 50]]]
    ]
    assert attr["stored"] == 1020 + 70 == meta(volumes.get, "vol1")["used_bytes"]
    assert meta(fsck.check, "vol1")["problems"] == []
    meta(namespace.unlink, vol["root"], b"f")
    assert meta(namespace.forget, ino) is True
    assert meta(files.referenced, [base, s]) == set()
    assert meta(volumes.get, "vol1")["used_bytes"] == 0


def test_paging_over_rows_and_slices_gives_every_chunk_once_in_order(meta, vol):
    f = mk(meta, vol["root"], b"f")
    ids = sorted(chunk_id(bytes([i])) for i in range(30))
    rows = [[i, c, 0, 10] for i, c in enumerate(ids[:20])]
    slices = [[i, c, 0, 5, 0] for i, c in enumerate(ids[10:])]  # 10 shared, 10 only sliced
    meta(files.commit, f["ino"], 20 * CS, rows + slices)
    seen, after = [], None
    while page := meta(files.referenced_with_replicas, after, 4):
        seen += page
        after = page[-1][0]
    assert seen == [[c, 2] for c in ids]


def test_fsck_reports_inodes_a_mount_cannot_show(meta, vol):
    """Rows an earlier release stored without range checks (a uid of -1, a mode without a
    file type) made their directory's listings fail with EIO on every mount."""
    from storaged.meta import fsck

    good = mk(meta, vol["root"], b"good")
    bad_owner = mk(meta, vol["root"], b"owner")
    bad_mode = mk(meta, vol["root"], b"mode")
    assert meta(fsck.check, "vol1")["problems"] == []
    meta.conn.execute("UPDATE inodes SET uid=-1 WHERE id=?", (bad_owner["ino"],))
    meta.conn.execute("UPDATE inodes SET mode=? WHERE id=?", (0o644, bad_mode["ino"]))
    problems = meta(fsck.check, "vol1")["problems"]
    assert len(problems) == 2, problems
    assert f"inode {bad_owner['ino']} has uid -1" in problems[0] + problems[1]
    assert f"inode {bad_mode['ino']} has mode 0o644" in problems[0] + problems[1]
    assert f"inode {good['ino']} " not in " ".join(problems)


def test_fsck_repair_mends_each_kind_of_out_of_range_value(meta, vol):
    """What a kernel would show for each: the overflow id, the type the rows say, 0, the
    stored extent; values in range, and the other inodes, are left as they were."""
    from storaged.meta import fsck

    owner = mk(meta, vol["root"], b"owner")
    typeless_dir = mk(meta, vol["root"], b"dir", stat.S_IFDIR | 0o750)
    mk(meta, typeless_dir["ino"], b"child")
    typeless_link = meta(
        namespace.make_node, vol["root"], b"link", stat.S_IFLNK | 0o777, 0, 0, 0, b"owner"
    )
    device = mk(meta, vol["root"], b"dev", stat.S_IFCHR | 0o600)
    sized = mk(meta, vol["root"], b"sized")
    good = mk(meta, vol["root"], b"good", FILE, 1000, 1000)
    cid = "ab" * 32
    meta.conn.execute(
        "INSERT INTO chunks (inode, idx, chunk_id, start, length) VALUES (?, 1, ?, 10, 90)",
        (sized["ino"], cid),
    )
    meta.conn.execute("UPDATE inodes SET uid=-1, gid=? WHERE id=?", (1 << 40, owner["ino"]))
    meta.conn.execute("UPDATE inodes SET mode=? WHERE id=?", (0o750, typeless_dir["ino"]))
    meta.conn.execute("UPDATE inodes SET mode=-1 WHERE id=?", (typeless_link["ino"],))
    meta.conn.execute("UPDATE inodes SET rdev=? WHERE id=?", (1 << 40, device["ino"]))
    meta.conn.execute("UPDATE inodes SET size=-5 WHERE id=?", (sized["ino"],))
    problems = meta(fsck.check, "vol1")["problems"]
    assert len([p for p in problems if "--repair mends it" in p]) == 5, problems
    result = meta(fsck.repair_ranges, "vol1")
    assert len(result["repaired"]) == 5, result
    assert result["inodes"][owner["ino"]] == [[vol["root"], b"owner"]]
    after = {
        ino: meta(namespace.getattr_, ino)
        for ino in (
            owner["ino"],
            typeless_dir["ino"],
            typeless_link["ino"],
            device["ino"],
            sized["ino"],
            good["ino"],
        )
    }
    assert (after[owner["ino"]]["uid"], after[owner["ino"]]["gid"]) == (65534, 65534)
    assert after[typeless_dir["ino"]]["mode"] == stat.S_IFDIR | 0o750
    assert after[typeless_link["ino"]]["mode"] == stat.S_IFLNK | 0o777
    assert after[device["ino"]]["rdev"] == 0
    assert after[sized["ino"]]["size"] == CS + 100
    assert (after[good["ino"]]["uid"], after[good["ino"]]["mode"]) == (1000, FILE)
    assert meta(fsck.repair_ranges, "vol1")["repaired"] == []
    # (the chunk row was put in without its stored bytes: reported, and left for a person)
    assert [p for p in meta(fsck.check, "vol1")["problems"] if "stored" not in p] == []
