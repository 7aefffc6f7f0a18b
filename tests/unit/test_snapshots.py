"""Snapshots, restores and clones in the meta database: frozen copies that share chunks."""

from __future__ import annotations

import errno
import sqlite3

from storaged.chunk.ids import chunk_id
from storaged.meta import files, namespace, volumes, xattrs
from storaged.meta.db import cluster_id, open_database

from .metadb import CS, DIR, Meta, fails, mk


def tree(meta, root):
    """{path: (mode, size, [chunk rows], {xattrs}, target)} of everything under root."""
    out = {}

    def walk(ino, path):
        for name, a, _cookie in meta(namespace.readdir, ino, 0, 1000):
            child = a["ino"]
            p = path + b"/" + name
            target = meta(namespace.readlink, child) if a["mode"] & 0o170000 == 0o120000 else None
            out[p] = (
                a["mode"],
                a["size"],
                meta(files.chunk_map, child, 0, 100),
                {n: meta(xattrs.get, child, n) for n in meta(xattrs.list_, child)},
                target,
            )
            if a["mode"] & 0o170000 == 0o040000:
                walk(child, p)

    walk(root, b"")
    return out


def populate(meta, vol):
    d = mk(meta, vol["root"], b"dir", DIR)
    f = mk(meta, d["ino"], b"file")
    c1, c2 = chunk_id(b"one"), chunk_id(b"two")
    meta(files.commit, f["ino"], CS + 10, [[0, c1, 0, CS], [1, c2, 0, 10]])
    meta(xattrs.set_, f["ino"], b"user.k", b"v", 0)
    meta(namespace.make_node, vol["root"], b"link", 0o120777, 0, 0, 0, b"dir/file")
    meta(namespace.link, f["ino"], vol["root"], b"hard")
    return f


def test_snapshot_is_a_frozen_copy_sharing_chunks(meta, vol):
    f = populate(meta, vol)
    before = tree(meta, vol["root"])
    snap = meta(volumes.snapshot, "snap1", "vol1")
    assert snap["kind"] == "snapshot" and snap["source"] == "vol1"
    assert snap["used_bytes"] == vol["used_bytes"] + CS + 10
    assert tree(meta, snap["root"]) == before
    # hard links stay hard links in the copy
    hard = meta(namespace.lookup, snap["root"], b"hard")
    assert hard["nlink"] == 2 and hard["ino"] != f["ino"]
    # writes, truncates and deletes after the snapshot do not reach it
    meta(files.commit, f["ino"], 2 * CS, [[1, chunk_id(b"three"), 0, CS]])
    meta(namespace.unlink, vol["root"], b"link")
    assert tree(meta, snap["root"]) == before
    assert tree(meta, vol["root"]) != before
    # the snapshot is not a volume: not listed, not mountable by name, not deletable as one
    assert [v["name"] for v in meta(volumes.list_all)] == ["vol1"]
    assert [s["name"] for s in meta(volumes.list_all, "snapshot")] == ["snap1"]
    fails(errno.ENOENT, meta, volumes.get, "snap1")
    assert meta(volumes.delete, "snap1") is False
    fails(errno.EEXIST, meta, volumes.snapshot, "snap1", "vol1")
    fails(errno.EEXIST, meta, volumes.snapshot, "vol1", "vol1")
    fails(errno.ENOENT, meta, volumes.snapshot, "snap2", "nope")


def test_restore_and_clone_copy_the_tree_and_stay_independent(meta, vol):
    populate(meta, vol)
    snap_tree = tree(meta, vol["root"])
    meta(volumes.snapshot, "snap1", "vol1")
    restored = meta(volumes.create, "restored", 20 * CS, 2, CS, {}, "snapshot:snap1")
    clone = meta(volumes.create, "clone", 20 * CS, 3, CS, {}, "volume:vol1")
    assert restored["source"] == "snapshot:snap1" and clone["source"] == "volume:vol1"
    assert tree(meta, restored["root"]) == snap_tree == tree(meta, clone["root"])
    assert restored["used_bytes"] == clone["used_bytes"] == vol["used_bytes"] + CS + 10
    assert restored["used_inodes"] == meta(volumes.get, "vol1")["used_inodes"]
    # a write in the clone changes neither the source nor the snapshot
    g = mk(meta, clone["root"], b"new")
    meta(files.commit, g["ino"], 5, [[0, chunk_id(b"x"), 0, 5]])
    assert b"/new" not in tree(meta, vol["root"])
    # deleting the source leaves the snapshot and the copies whole
    assert meta(volumes.delete, "vol1") is True
    assert tree(meta, restored["root"]) == snap_tree
    assert tree(meta, meta(volumes.get, "snap1", "snapshot")["root"]) == snap_tree
    # sources must exist, be of the named kind, fit the capacity, use the same chunk size
    fails(errno.ENOENT, meta, volumes.create, "x", 20 * CS, 2, CS, {}, "snapshot:nope")
    fails(errno.ENOENT, meta, volumes.create, "x", 20 * CS, 2, CS, {}, "volume:snap1")
    fails(errno.ERANGE, meta, volumes.create, "x", CS, 2, CS, {}, "snapshot:snap1")
    fails(errno.EINVAL, meta, volumes.create, "x", 20 * CS, 2, 2 * CS, {}, "snapshot:snap1")
    fails(errno.EINVAL, meta, volumes.create, "x", 20 * CS, 2, CS, {}, "bogus")


def test_set_replicas_and_health(meta, vol):
    assert meta(volumes.set_replicas, "vol1", 3)["replicas"] == 3
    fails(errno.EINVAL, meta, volumes.set_replicas, "vol1", 0)
    h = meta(volumes.health, "vol1")
    assert h == {"replicas": 3, "servers_up": 0, "chunks_with_bad_copies": 0}


def test_a_version_1_database_is_migrated_and_keeps_its_data(tmp_path):
    path = tmp_path / "old.db"
    conn = sqlite3.connect(path)
    conn.executescript("""
        CREATE TABLE meta_info (key TEXT PRIMARY KEY, value TEXT NOT NULL);
        INSERT INTO meta_info VALUES ('schema_version', '1');
        CREATE TABLE volumes (id INTEGER PRIMARY KEY, name TEXT NOT NULL UNIQUE,
            capacity INTEGER NOT NULL, replicas INTEGER NOT NULL, chunk_size INTEGER NOT NULL,
            root INTEGER NOT NULL, used_bytes INTEGER NOT NULL DEFAULT 0,
            used_inodes INTEGER NOT NULL DEFAULT 0, created_ns INTEGER NOT NULL,
            params TEXT NOT NULL DEFAULT '{}');
        INSERT INTO volumes VALUES (1, 'old', 100, 2, 65536, 7, 0, 1, 0, '{}');
        CREATE TABLE servers (id TEXT PRIMARY KEY, address TEXT NOT NULL, zone TEXT NOT NULL,
            capacity INTEGER NOT NULL, used INTEGER NOT NULL, free INTEGER NOT NULL,
            chunks INTEGER NOT NULL, last_seen_ns INTEGER NOT NULL, state TEXT NOT NULL);
        INSERT INTO servers VALUES ('s1', 'tcp://h:1', 'z', 10, 1, 9, 3, 0, 'up');
    """)
    conn.commit()
    conn.close()
    m = Meta(path)
    old = m(volumes.get, "old")
    assert old["kind"] == "volume" and old["source"] == "" and old["root"] == 7
    from storaged.meta import servers

    assert m(servers.list_all)[0]["draining"] is False  # version 3 added it
    assert len(m(cluster_id)) == 32
    ident = m(cluster_id)
    m.conn.close()
    again = open_database(path)  # reopening changes nothing, and the id stays
    assert cluster_id(again) == ident
    again.close()


def test_a_snapshot_and_a_clone_keep_the_slices_of_a_file(meta, vol):
    f = populate(meta, vol)
    s = chunk_id(b"slice")
    meta(files.commit, f["ino"], CS + 10, [[0, s, 10, 5, 0], [1, s, 20, 5, 5]])
    before = tree(meta, vol["root"])
    assert before[b"/dir/file"][2][0][4] == [[s, 10, 5, 0]]
    snap = meta(volumes.snapshot, "snap1", "vol1")
    clone = meta(volumes.create, "clone", 20 * CS, 2, CS, {}, "snapshot:snap1")
    assert tree(meta, snap["root"]) == before == tree(meta, clone["root"])
    assert clone["used_bytes"] == meta(volumes.get, "vol1")["used_bytes"]
    # writing the piece whole in the source drops its slices there only
    meta(files.commit, f["ino"], CS + 10, [[0, chunk_id(b"new"), 0, CS]])
    assert tree(meta, snap["root"]) == before == tree(meta, clone["root"])
    assert meta(volumes.delete, "vol1") and meta(files.referenced, [s]) == {s}
