"""Extended attributes, with setxattr's XATTR_CREATE and XATTR_REPLACE flags."""

from __future__ import annotations

import errno
import sqlite3

from ..rpc.errors import FsError
from .namespace import getattr_, now_ns

XATTR_CREATE, XATTR_REPLACE = 1, 2
NAME_MAX, VALUE_MAX = 255, 64 * 1024
ENOATTR = errno.ENODATA
# the namespaces Linux filesystems know; any other is EOPNOTSUPP there, and here
NAMESPACES = (b"user.", b"trusted.", b"security.", b"system.")


def get(conn: sqlite3.Connection, ino: int, name: bytes) -> bytes:
    getattr_(conn, ino)
    row = conn.execute("SELECT value FROM xattrs WHERE inode=? AND name=?", (ino, name)).fetchone()
    if row is None:
        raise FsError(ENOATTR, f"no attribute {name!r}")
    return bytes(row[0])


def set_(conn: sqlite3.Connection, ino: int, name: bytes, value: bytes, flags: int = 0) -> None:
    getattr_(conn, ino)
    if not name or len(name) > NAME_MAX:
        raise FsError(errno.ERANGE, "attribute names are 1..255 bytes")
    if not name.startswith(NAMESPACES) or name in NAMESPACES:
        raise FsError(
            errno.EOPNOTSUPP,
            f"attribute {name!r}: the namespace must be one of user., trusted., security., system.",
        )
    if len(value) > VALUE_MAX:
        raise FsError(errno.E2BIG, f"attribute values are at most {VALUE_MAX} bytes")
    exists = conn.execute("SELECT 1 FROM xattrs WHERE inode=? AND name=?", (ino, name)).fetchone()
    if flags & XATTR_CREATE and exists:
        raise FsError(errno.EEXIST, f"attribute {name!r} exists")
    if flags & XATTR_REPLACE and not exists:
        raise FsError(ENOATTR, f"no attribute {name!r} to replace")
    conn.execute(
        "INSERT OR REPLACE INTO xattrs (inode, name, value) VALUES (?,?,?)", (ino, name, value)
    )
    conn.execute("UPDATE inodes SET ctime_ns=? WHERE id=?", (now_ns(), ino))


def list_(conn: sqlite3.Connection, ino: int) -> list[bytes]:
    getattr_(conn, ino)
    return [
        bytes(r[0])
        for r in conn.execute("SELECT name FROM xattrs WHERE inode=? ORDER BY name", (ino,))
    ]


def remove(conn: sqlite3.Connection, ino: int, name: bytes) -> None:
    getattr_(conn, ino)
    if conn.execute("DELETE FROM xattrs WHERE inode=? AND name=?", (ino, name)).rowcount == 0:
        raise FsError(ENOATTR, f"no attribute {name!r}")
    conn.execute("UPDATE inodes SET ctime_ns=? WHERE id=?", (now_ns(), ino))
