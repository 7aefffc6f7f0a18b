"""Volumes: a quota, a replica count, a chunk size, and a tree under one root inode."""

from __future__ import annotations

import errno
import json
import re
import sqlite3
import stat
from typing import Any

from ..rpc.errors import FsError
from .namespace import now_ns

_NAME_RE = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,127}")
MIN_CHUNK, MAX_CHUNK = 64 * 1024, 64 * 1024 * 1024
DEFAULT_CHUNK_SIZE = 4 * 1024 * 1024

_COLUMNS = "id, name, capacity, replicas, chunk_size, root, used_bytes, used_inodes, created_ns, params"


def _as_dict(row: tuple[Any, ...]) -> dict[str, Any]:
    keys = [c.strip() for c in _COLUMNS.split(",")]
    out = dict(zip(keys, row))
    out["params"] = json.loads(out["params"])
    return out


def validate(name: str, capacity: int, replicas: int, chunk_size: int) -> None:
    if not _NAME_RE.fullmatch(name):
        raise FsError(errno.EINVAL, f"volume name {name!r}: 1-128 of A-Z a-z 0-9 . _ -, "
                                    "starting with a letter or digit")
    if capacity <= 0:
        raise FsError(errno.EINVAL, "capacity must be positive")
    if not 1 <= replicas <= 16:
        raise FsError(errno.EINVAL, "replicas must be 1..16")
    if not MIN_CHUNK <= chunk_size <= MAX_CHUNK or chunk_size & (chunk_size - 1):
        raise FsError(errno.EINVAL, f"chunk size must be a power of two in {MIN_CHUNK}..{MAX_CHUNK}")


def create(conn: sqlite3.Connection, name: str, capacity: int, replicas: int, chunk_size: int,
           params: dict[str, Any] | None = None) -> dict[str, Any]:
    validate(name, capacity, replicas, chunk_size)
    if conn.execute("SELECT 1 FROM volumes WHERE name=?", (name,)).fetchone():
        raise FsError(errno.EEXIST, f"volume {name} exists")
    t = now_ns()
    cur = conn.execute(
        "INSERT INTO volumes (name, capacity, replicas, chunk_size, root, used_inodes, created_ns,"
        " params) VALUES (?,?,?,?,0,1,?,?)",
        (name, capacity, replicas, chunk_size, t, json.dumps(params or {})))
    volume = int(cur.lastrowid or 0)
    cur = conn.execute(
        "INSERT INTO inodes (volume, mode, uid, gid, nlink, atime_ns, mtime_ns, ctime_ns) "
        "VALUES (?,?,0,0,2,?,?,?)", (volume, stat.S_IFDIR | 0o755, t, t, t))
    conn.execute("UPDATE volumes SET root=? WHERE id=?", (cur.lastrowid, volume))
    return get(conn, name)


def get(conn: sqlite3.Connection, name: str) -> dict[str, Any]:
    row = conn.execute(f"SELECT {_COLUMNS} FROM volumes WHERE name=?", (name,)).fetchone()
    if row is None:
        raise FsError(errno.ENOENT, f"no volume named {name}")
    return _as_dict(row)


def list_all(conn: sqlite3.Connection) -> list[dict[str, Any]]:
    return [_as_dict(r) for r in conn.execute(f"SELECT {_COLUMNS} FROM volumes ORDER BY name")]


def delete(conn: sqlite3.Connection, name: str) -> bool:
    """Remove the volume and its whole tree from the metadata; False if it did not exist.

    Its chunks become unreferenced and are collected by garbage collection later.
    """
    row = conn.execute("SELECT id FROM volumes WHERE name=?", (name,)).fetchone()
    if row is None:
        return False
    volume = row[0]
    inodes = "SELECT id FROM inodes WHERE volume=?"
    conn.execute(f"DELETE FROM dentries WHERE inode IN ({inodes})", (volume,))
    conn.execute(f"DELETE FROM chunks WHERE inode IN ({inodes})", (volume,))
    conn.execute(f"DELETE FROM xattrs WHERE inode IN ({inodes})", (volume,))
    conn.execute("DELETE FROM inodes WHERE volume=?", (volume,))
    conn.execute("DELETE FROM volumes WHERE id=?", (volume,))
    return True


def resize(conn: sqlite3.Connection, name: str, capacity: int) -> dict[str, Any]:
    volume = get(conn, name)
    if capacity < volume["used_bytes"]:
        raise FsError(errno.EINVAL, f"capacity {capacity} is below what is used ({volume['used_bytes']})")
    conn.execute("UPDATE volumes SET capacity=? WHERE name=?", (capacity, name))
    return get(conn, name)


def statfs(conn: sqlite3.Connection, volume_id: int) -> dict[str, int]:
    row = conn.execute("SELECT capacity, used_bytes, used_inodes, chunk_size FROM volumes "
                       "WHERE id=?", (volume_id,)).fetchone()
    if row is None:
        raise FsError(errno.ENOENT, f"no volume {volume_id}")
    capacity, used, inodes, chunk_size = row
    return {"capacity": capacity, "used": used, "inodes": inodes, "chunk_size": chunk_size}
