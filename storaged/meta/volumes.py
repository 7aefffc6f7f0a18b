"""Volumes and snapshots: a quota, a replica count, a chunk size, and a tree under one root.

A snapshot is a row of the same table with kind 'snapshot': the volume's tree copied in one
transaction (see copy_tree). Chunks are content-addressed and immutable, so the copy shares
every chunk with its source; writes after the snapshot make new chunks and new chunk rows
in the volume, never touching the snapshot's rows. A restore or a clone is the same copy in
the other direction, into a new volume.
"""

from __future__ import annotations

import errno
import json
import sqlite3
import stat
from typing import Any

from ..rpc.errors import FsError
from ..volumerules import MAX_CHUNK, MIN_CHUNK, NAME_RE
from .namespace import now_ns

VOLUME, SNAPSHOT = "volume", "snapshot"

_COLUMNS = (
    "id, name, capacity, replicas, chunk_size, root, used_bytes, used_inodes, created_ns, "
    "params, kind, source"
)
_KEYS = [c.strip() for c in _COLUMNS.split(",")]


def _as_dict(row: tuple[Any, ...]) -> dict[str, Any]:
    out = dict(zip(_KEYS, row))
    out["params"] = json.loads(out["params"])
    return out


def validate(name: str, capacity: int, replicas: int, chunk_size: int) -> None:
    if not NAME_RE.fullmatch(name):
        raise FsError(
            errno.EINVAL,
            f"volume name {name!r}: 1-128 of A-Z a-z 0-9 . _ -, starting with a letter or digit",
        )
    if capacity <= 0:
        raise FsError(errno.EINVAL, "capacity must be positive")
    validate_replicas(replicas)
    if not MIN_CHUNK <= chunk_size <= MAX_CHUNK or chunk_size & (chunk_size - 1):
        raise FsError(
            errno.EINVAL, f"chunk size must be a power of two in {MIN_CHUNK}..{MAX_CHUNK}"
        )


def validate_replicas(replicas: int) -> None:
    if not 1 <= replicas <= 16:
        raise FsError(errno.EINVAL, "replicas must be 1..16")


def _find(conn: sqlite3.Connection, name: str) -> dict[str, Any] | None:
    row = conn.execute(f"SELECT {_COLUMNS} FROM volumes WHERE name=?", (name,)).fetchone()
    return None if row is None else _as_dict(row)


def create(
    conn: sqlite3.Connection,
    name: str,
    capacity: int,
    replicas: int,
    chunk_size: int,
    params: dict[str, Any] | None = None,
    source: str = "",
) -> dict[str, Any]:
    """Create an empty volume, or with ``source`` ('snapshot:NAME' or 'volume:NAME') a
    volume holding a copy of that tree (which must use the same chunk size)."""
    validate(name, capacity, replicas, chunk_size)
    existing = _find(conn, name)
    if existing:
        raise FsError(errno.EEXIST, f"a {existing['kind']} named {name} exists")
    origin = _source_row(conn, source) if source else None
    if origin is not None:
        if origin["chunk_size"] != chunk_size:
            raise FsError(
                errno.EINVAL,
                f"{source} has chunk size {origin['chunk_size']}; a copy "
                f"of it must use the same (asked for {chunk_size})",
            )
        if capacity < origin["used_bytes"]:
            raise FsError(
                errno.ERANGE,
                f"{source} holds {origin['used_bytes']} bytes; the new "
                f"volume's capacity {capacity} is smaller",
            )
    t = now_ns()
    cur = conn.execute(
        "INSERT INTO volumes (name, capacity, replicas, chunk_size, root, used_inodes, created_ns,"
        " params, kind, source) VALUES (?,?,?,?,0,1,?,?,?,?)",
        (name, capacity, replicas, chunk_size, t, json.dumps(params or {}), VOLUME, source),
    )
    volume = int(cur.lastrowid or 0)
    if origin is None:
        cur = conn.execute(
            "INSERT INTO inodes (volume, mode, uid, gid, nlink, atime_ns, mtime_ns, ctime_ns) "
            "VALUES (?,?,0,0,2,?,?,?)",
            (volume, stat.S_IFDIR | 0o755, t, t, t),
        )
        conn.execute("UPDATE volumes SET root=? WHERE id=?", (cur.lastrowid, volume))
    else:
        copy_tree(conn, origin["id"], volume)
    return get(conn, name)


def _source_row(conn: sqlite3.Connection, source: str) -> dict[str, Any]:
    kind, _, name = source.partition(":")
    if kind not in (VOLUME, SNAPSHOT) or not name:
        raise FsError(errno.EINVAL, f"source {source!r}: expected 'snapshot:NAME' or 'volume:NAME'")
    row = _find(conn, name)
    if row is None or row["kind"] != kind:
        raise FsError(errno.ENOENT, f"no {kind} named {name}")
    return row


def snapshot(conn: sqlite3.Connection, name: str, volume_name: str) -> dict[str, Any]:
    """Freeze ``volume_name``'s committed tree as snapshot ``name`` (one transaction)."""
    source = get(conn, volume_name)
    if not NAME_RE.fullmatch(name):
        raise FsError(
            errno.EINVAL,
            f"snapshot name {name!r}: 1-128 of A-Z a-z 0-9 . _ -, starting with a letter or digit",
        )
    existing = _find(conn, name)
    if existing:
        raise FsError(errno.EEXIST, f"a {existing['kind']} named {name} exists")
    cur = conn.execute(
        "INSERT INTO volumes (name, capacity, replicas, chunk_size, root, created_ns, params, kind,"
        " source) VALUES (?,?,?,?,0,?,?,?,?)",
        (
            name,
            source["capacity"],
            source["replicas"],
            source["chunk_size"],
            now_ns(),
            json.dumps(source["params"]),
            SNAPSHOT,
            volume_name,
        ),
    )
    copy_tree(conn, source["id"], int(cur.lastrowid or 0))
    return get(conn, name, kind=SNAPSHOT)


def copy_tree(conn: sqlite3.Connection, src: int, dst: int) -> None:
    """Copy volume ``src``'s linked inodes (with their dentries, xattrs and chunk rows) into
    volume ``dst`` and make the copy of its root dst's root.

    New inode numbers are the old ones shifted past every number ever used, so the whole
    copy is a handful of INSERT ... SELECT statements rather than a loop per inode, and the
    numbers stay unique (inodes uses AUTOINCREMENT, which records the largest id inserted).
    Orphans (nlink 0: unlinked, still open somewhere) are not part of the tree; not copied.
    """
    lo, hi = conn.execute(
        "SELECT min(id), max(id) FROM inodes WHERE volume=? AND nlink>0", (src,)
    ).fetchone()
    top = conn.execute("SELECT seq FROM sqlite_sequence WHERE name='inodes'").fetchone()
    shift = int(top[0] if top else hi) + 1 - int(lo)
    linked = "SELECT id FROM inodes WHERE volume=:src AND nlink>0"
    args = {"src": src, "dst": dst, "shift": shift}
    conn.execute(
        "INSERT INTO inodes (id, volume, mode, uid, gid, nlink, size, stored, atime_ns, mtime_ns,"
        " ctime_ns, rdev, target) SELECT id+:shift, :dst, mode, uid, gid, nlink, size, stored,"
        " atime_ns, mtime_ns, ctime_ns, rdev, target FROM inodes WHERE volume=:src AND nlink>0"
        " ORDER BY id",
        args,
    )
    conn.execute(
        f"INSERT INTO dentries (parent, name, inode) SELECT parent+:shift, name, inode+:shift"
        f" FROM dentries WHERE parent IN ({linked}) ORDER BY id",
        args,
    )
    conn.execute(
        f"INSERT INTO xattrs SELECT inode+:shift, name, value FROM xattrs"
        f" WHERE inode IN ({linked})",
        args,
    )
    conn.execute(
        f"INSERT INTO chunks SELECT inode+:shift, idx, chunk_id, start, length"
        f" FROM chunks WHERE inode IN ({linked})",
        args,
    )
    conn.execute(
        f"INSERT INTO slices SELECT inode+:shift, idx, seq, chunk_id, start, length,"
        f" offset FROM slices WHERE inode IN ({linked})",
        args,
    )
    used_bytes, used_inodes = conn.execute(
        "SELECT coalesce(sum(stored), 0), count(*) FROM inodes WHERE volume=?", (dst,)
    ).fetchone()
    conn.execute(
        "UPDATE volumes SET root=(SELECT root FROM volumes WHERE id=:src)+:shift, "
        "used_bytes=:bytes, used_inodes=:inodes WHERE id=:dst",
        {**args, "bytes": used_bytes, "inodes": used_inodes},
    )


def get(conn: sqlite3.Connection, name: str, kind: str = VOLUME) -> dict[str, Any]:
    row = _find(conn, name)
    if row is None or row["kind"] != kind:
        raise FsError(errno.ENOENT, f"no {kind} named {name}")
    return row


def list_all(conn: sqlite3.Connection, kind: str = VOLUME) -> list[dict[str, Any]]:
    return [
        _as_dict(r)
        for r in conn.execute(f"SELECT {_COLUMNS} FROM volumes WHERE kind=? ORDER BY name", (kind,))
    ]


def delete(conn: sqlite3.Connection, name: str, kind: str = VOLUME) -> bool:
    """Remove the volume (or snapshot) and its whole tree from the metadata; False if there
    was none. Copies made from it are independent and stay. Its chunks become unreferenced
    (unless a copy shares them) and are for garbage collection to remove later."""
    row = conn.execute("SELECT id FROM volumes WHERE name=? AND kind=?", (name, kind)).fetchone()
    if row is None:
        return False
    volume = row[0]
    inodes = "SELECT id FROM inodes WHERE volume=?"
    conn.execute(f"DELETE FROM dentries WHERE inode IN ({inodes})", (volume,))
    conn.execute(f"DELETE FROM chunks WHERE inode IN ({inodes})", (volume,))
    conn.execute(f"DELETE FROM slices WHERE inode IN ({inodes})", (volume,))
    conn.execute(f"DELETE FROM xattrs WHERE inode IN ({inodes})", (volume,))
    conn.execute("DELETE FROM inodes WHERE volume=?", (volume,))
    conn.execute("DELETE FROM volumes WHERE id=?", (volume,))
    return True


def resize(conn: sqlite3.Connection, name: str, capacity: int) -> dict[str, Any]:
    volume = get(conn, name)
    if capacity < volume["used_bytes"]:
        raise FsError(
            errno.EINVAL, f"capacity {capacity} is below what is used ({volume['used_bytes']})"
        )
    conn.execute("UPDATE volumes SET capacity=? WHERE id=?", (capacity, volume["id"]))
    return get(conn, name)


def set_replicas(conn: sqlite3.Connection, name: str, replicas: int) -> dict[str, Any]:
    """Change R for the volume's future writes (mounts pick it up within a heartbeat).
    Chunks already written keep their copies until repair brings them to the new R."""
    volume = get(conn, name)
    validate_replicas(replicas)
    conn.execute("UPDATE volumes SET replicas=? WHERE id=?", (replicas, volume["id"]))
    return get(conn, name)


def statfs(conn: sqlite3.Connection, volume_id: int) -> dict[str, int]:
    row = conn.execute(
        "SELECT capacity, used_bytes, used_inodes, chunk_size FROM volumes WHERE id=?", (volume_id,)
    ).fetchone()
    if row is None:
        raise FsError(errno.ENOENT, f"no volume {volume_id}")
    capacity, used, inodes, chunk_size = row
    return {"capacity": capacity, "used": used, "inodes": inodes, "chunk_size": chunk_size}


def health(conn: sqlite3.Connection, name: str, kind: str = VOLUME) -> dict[str, Any]:
    """What a volume's condition depends on: live servers against R, and copies clients
    reported bad (not yet replaced) among the chunks it references."""
    volume = get(conn, name, kind)
    up = conn.execute("SELECT count(*) FROM servers WHERE state='up'").fetchone()[0]
    return {
        "replicas": volume["replicas"],
        "servers_up": up,
        "chunks_with_bad_copies": bad_copy_count(conn, volume["id"]),
    }


def bad_copy_count(conn: sqlite3.Connection, volume_id: int) -> int:
    """Chunks of the volume with a copy reported bad that repair has not replaced yet."""
    return conn.execute(
        "SELECT count(DISTINCT b.chunk_id) FROM bad_copies b JOIN (SELECT inode, chunk_id FROM"
        " chunks UNION ALL SELECT inode, chunk_id FROM slices) c ON c.chunk_id=b.chunk_id"
        " JOIN inodes i ON i.id=c.inode WHERE i.volume=?",
        (volume_id,),
    ).fetchone()[0]
