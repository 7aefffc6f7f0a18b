"""Namespace operations: inodes and directory entries, with POSIX's rules and error codes.

Every function runs inside the caller's transaction and raises FsError(errno) to refuse;
the transaction then rolls back, so a refused operation changes nothing. Permission bits
are not checked here: the kernel does that (mounts use ``default_permissions``).
"""

from __future__ import annotations

import errno
import sqlite3
import stat
import time
from typing import Any

from ..metaclient.results import ATTR_KEYS
from ..rpc.errors import FsError

NAME_MAX = 255
RENAME_NOREPLACE = 1
RENAME_EXCHANGE = 2

# The columns of ATTR_KEYS (the wire's order of attributes, also a listing row's)
ATTR_COLUMNS = "id, mode, nlink, uid, gid, rdev, size, stored, atime_ns, mtime_ns, ctime_ns"

# A page of a directory, in cookie order; the index on dentries(parent) makes it start
# where the last page ended (tests/unit/test_meta.py checks the plan).
LISTING_QUERY = (
    "SELECT d.name, d.id, "
    + ", ".join("i." + c.strip() for c in ATTR_COLUMNS.split(","))
    + " FROM dentries d JOIN inodes i ON i.id = d.inode"
    " WHERE d.parent=? AND d.id>? ORDER BY d.id LIMIT ?"
)

Attr = dict[str, int]


def now_ns() -> int:
    return time.time_ns()


def _attr(row: tuple[Any, ...]) -> Attr:
    return dict(zip(ATTR_KEYS, row))


def check_name(name: bytes) -> None:
    if len(name) > NAME_MAX:
        raise FsError(errno.ENAMETOOLONG, f"name of {len(name)} bytes; the limit is {NAME_MAX}")
    if not name or b"/" in name or b"\0" in name or name in (b".", b".."):
        raise FsError(errno.EINVAL, f"invalid name {name!r}")


def getattr_(conn: sqlite3.Connection, ino: int) -> Attr:
    row = conn.execute(f"SELECT {ATTR_COLUMNS} FROM inodes WHERE id=?", (ino,)).fetchone()
    if row is None:
        raise FsError(errno.ENOENT, f"no inode {ino}")
    return _attr(row)


def exists(conn: sqlite3.Connection, ino: int) -> bool:
    """Is there an inode ``ino`` (in any volume)?"""
    return conn.execute("SELECT 1 FROM inodes WHERE id=?", (ino,)).fetchone() is not None


def _volume_of(conn: sqlite3.Connection, ino: int) -> int:
    row = conn.execute("SELECT volume FROM inodes WHERE id=?", (ino,)).fetchone()
    if row is None:
        raise FsError(errno.ENOENT, f"no inode {ino}")
    return int(row[0])


def _dir(conn: sqlite3.Connection, ino: int) -> Attr:
    attr = getattr_(conn, ino)
    if not stat.S_ISDIR(attr["mode"]):
        raise FsError(errno.ENOTDIR, f"inode {ino} is not a directory")
    if attr["nlink"] == 0:
        raise FsError(errno.ENOENT, f"directory {ino} was removed")
    return attr


def _entry(conn: sqlite3.Connection, parent: int, name: bytes) -> int | None:
    row = conn.execute(
        "SELECT inode FROM dentries WHERE parent=? AND name=?", (parent, name)
    ).fetchone()
    return None if row is None else int(row[0])


def entry_inode(conn: sqlite3.Connection, parent: int, name: bytes) -> int | None:
    """The inode ``name`` in ``parent`` names, or None (no checks: for bookkeeping)."""
    return _entry(conn, parent, name)


def _touch_dir(conn: sqlite3.Connection, ino: int, t: int, nlink_delta: int = 0) -> None:
    conn.execute(
        "UPDATE inodes SET mtime_ns=?, ctime_ns=?, nlink=nlink+? WHERE id=?",
        (t, t, nlink_delta, ino),
    )


def lookup(conn: sqlite3.Connection, parent: int, name: bytes) -> Attr:
    if len(name) > NAME_MAX:
        raise FsError(errno.ENAMETOOLONG, f"name of {len(name)} bytes; the limit is {NAME_MAX}")
    _dir(conn, parent)
    ino = _entry(conn, parent, name)
    if ino is None:
        raise FsError(errno.ENOENT, f"no entry {name!r} in directory {parent}")
    return getattr_(conn, ino)


def make_node(
    conn: sqlite3.Connection,
    parent: int,
    name: bytes,
    mode: int,
    uid: int,
    gid: int,
    rdev: int = 0,
    target: bytes | None = None,
    *,
    ino: int | None = None,
    t: int | None = None,
) -> Attr:
    """mkdir, create, mknod and symlink: a new inode and its entry in ``parent``. A
    delegated directory's batch (storaged/meta/delegations.py) names the inode number, from
    a range reserved for it (``reserve_inodes``), and the time its mount answered."""
    check_name(name)
    parent_attr = _dir(conn, parent)
    if _entry(conn, parent, name) is not None:
        raise FsError(errno.EEXIST, f"{name!r} exists")
    is_dir = stat.S_ISDIR(mode)
    if parent_attr["mode"] & stat.S_ISGID:  # setgid directory: group and bit are inherited
        gid = parent_attr["gid"]
        if is_dir:
            mode |= stat.S_ISGID
    volume = _volume_of(conn, parent)
    t = now_ns() if t is None else t
    size = len(target) if target is not None else 0
    if ino is not None and exists(conn, ino):
        raise FsError(errno.EEXIST, f"inode {ino} exists")
    cur = conn.execute(
        "INSERT INTO inodes (id, volume, mode, uid, gid, nlink, size, atime_ns, mtime_ns,"
        " ctime_ns, rdev, target) VALUES (?,?,?,?,?,?,?,?,?,?,?,?)",
        (ino, volume, mode, uid, gid, 2 if is_dir else 1, size, t, t, t, rdev, target),
    )
    ino = int(cur.lastrowid or 0)
    conn.execute("INSERT INTO dentries (parent, name, inode) VALUES (?,?,?)", (parent, name, ino))
    _touch_dir(conn, parent, t, 1 if is_dir else 0)
    conn.execute("UPDATE volumes SET used_inodes=used_inodes+1 WHERE id=?", (volume,))
    return getattr_(conn, ino)


def reserve_inodes(conn: sqlite3.Connection, count: int) -> tuple[int, int]:
    """``count`` inode numbers nobody else will be given, first and last: AUTOINCREMENT
    hands out numbers above the largest it recorded, so raising that record reserves the
    numbers below it. A number reserved and never used is only a gap."""
    conn.execute("UPDATE sqlite_sequence SET seq=seq+? WHERE name='inodes'", (count,))
    row = conn.execute("SELECT seq FROM sqlite_sequence WHERE name='inodes'").fetchone()
    if row is None:  # (the root inode is made with the schema: the record exists)
        raise FsError(errno.EIO, "no inode number record to reserve from")
    last = int(row[0])
    return last - count + 1, last


def check_reserved(conn: sqlite3.Connection, inos: list[int]) -> None:
    """EINVAL unless every one of ``inos`` was handed out (is at most AUTOINCREMENT's
    record): a batch from before a restart may only use numbers reserved for it."""
    row = conn.execute("SELECT seq FROM sqlite_sequence WHERE name='inodes'").fetchone()
    top = int(row[0]) if row is not None else 0
    for ino in inos:
        if ino > top:
            raise FsError(errno.EINVAL, f"inode number {ino} was never reserved")


def dir_attr(conn: sqlite3.Connection, ino: int) -> Attr:
    """A live directory's attributes (ENOTDIR, ENOENT otherwise)."""
    return _dir(conn, ino)


def link(conn: sqlite3.Connection, ino: int, new_parent: int, new_name: bytes) -> Attr:
    check_name(new_name)
    attr = getattr_(conn, ino)
    if stat.S_ISDIR(attr["mode"]):
        raise FsError(errno.EPERM, "hard links to directories are not allowed")
    _dir(conn, new_parent)
    if _volume_of(conn, new_parent) != _volume_of(conn, ino):
        raise FsError(errno.EXDEV, "hard links cannot cross volumes")
    if _entry(conn, new_parent, new_name) is not None:
        raise FsError(errno.EEXIST, f"{new_name!r} exists")
    t = now_ns()
    conn.execute(
        "INSERT INTO dentries (parent, name, inode) VALUES (?,?,?)", (new_parent, new_name, ino)
    )
    conn.execute("UPDATE inodes SET nlink=nlink+1, ctime_ns=? WHERE id=?", (t, ino))
    _touch_dir(conn, new_parent, t)
    return getattr_(conn, ino)


def _drop_link(conn: sqlite3.Connection, ino: int, t: int) -> int:
    """One link fewer; a directory or a file with no links left becomes an orphan (nlink 0)."""
    attr = getattr_(conn, ino)
    nlink = 0 if stat.S_ISDIR(attr["mode"]) else attr["nlink"] - 1
    conn.execute("UPDATE inodes SET nlink=?, ctime_ns=? WHERE id=?", (nlink, t, ino))
    return nlink


def unlink(conn: sqlite3.Connection, parent: int, name: bytes, *, t: int | None = None) -> Attr:
    """Remove a non-directory entry; returns the inode's attributes after (nlink may be 0).
    ``t``: when (a delegated directory's batch says when its mount answered)."""
    _dir(conn, parent)
    ino = _entry(conn, parent, name)
    if ino is None:
        raise FsError(errno.ENOENT, f"no entry {name!r}")
    if stat.S_ISDIR(getattr_(conn, ino)["mode"]):
        raise FsError(errno.EISDIR, f"{name!r} is a directory (use rmdir)")
    t = now_ns() if t is None else t
    conn.execute("DELETE FROM dentries WHERE parent=? AND name=?", (parent, name))
    _drop_link(conn, ino, t)
    _touch_dir(conn, parent, t)
    return getattr_(conn, ino)


def _require_empty(conn: sqlite3.Connection, ino: int) -> None:
    if conn.execute("SELECT 1 FROM dentries WHERE parent=? LIMIT 1", (ino,)).fetchone():
        raise FsError(errno.ENOTEMPTY, f"directory {ino} is not empty")


def rmdir(conn: sqlite3.Connection, parent: int, name: bytes) -> Attr:
    _dir(conn, parent)
    ino = _entry(conn, parent, name)
    if ino is None:
        raise FsError(errno.ENOENT, f"no entry {name!r}")
    if not stat.S_ISDIR(getattr_(conn, ino)["mode"]):
        raise FsError(errno.ENOTDIR, f"{name!r} is not a directory")
    _require_empty(conn, ino)
    t = now_ns()
    conn.execute("DELETE FROM dentries WHERE parent=? AND name=?", (parent, name))
    _drop_link(conn, ino, t)
    _touch_dir(conn, parent, t, -1)
    return getattr_(conn, ino)


def _is_ancestor(conn: sqlite3.Connection, ancestor: int, ino: int) -> bool:
    """True if ``ancestor`` is ``ino`` or above it (walks '..' up to the root)."""
    seen = 0
    while True:
        if ino == ancestor:
            return True
        row = conn.execute("SELECT parent FROM dentries WHERE inode=? LIMIT 1", (ino,)).fetchone()
        if row is None:
            return False
        ino = int(row[0])
        seen += 1
        if seen > 100_000:
            raise FsError(errno.ELOOP, "directory tree is deeper than 100,000 levels")


def rename(
    conn: sqlite3.Connection,
    old_parent: int,
    old_name: bytes,
    new_parent: int,
    new_name: bytes,
    flags: int = 0,
    *,
    t: int | None = None,
) -> Attr | None:
    """rename(2) with RENAME_NOREPLACE and RENAME_EXCHANGE (``t``: as for unlink).

    Returns the attributes of an inode that lost its entry by being replaced (so the client
    can tell if it became an orphan), or None.
    """
    check_name(new_name)
    if flags & ~(RENAME_NOREPLACE | RENAME_EXCHANGE) or flags == RENAME_NOREPLACE | RENAME_EXCHANGE:
        raise FsError(errno.EINVAL, f"unsupported rename flags {flags}")
    _dir(conn, old_parent)
    _dir(conn, new_parent)
    if _volume_of(conn, old_parent) != _volume_of(conn, new_parent):
        raise FsError(errno.EXDEV, "rename across volumes")
    src = _entry(conn, old_parent, old_name)
    if src is None:
        raise FsError(errno.ENOENT, f"no entry {old_name!r}")
    dst = _entry(conn, new_parent, new_name)
    src_is_dir = stat.S_ISDIR(getattr_(conn, src)["mode"])
    t = now_ns() if t is None else t
    if flags & RENAME_EXCHANGE:
        if dst is None:
            raise FsError(errno.ENOENT, f"no entry {new_name!r} to exchange with")
        dst_is_dir = stat.S_ISDIR(getattr_(conn, dst)["mode"])
        if old_parent != new_parent:
            if src_is_dir and _is_ancestor(conn, src, new_parent):
                raise FsError(errno.EINVAL, "cannot move a directory inside itself")
            if dst_is_dir and _is_ancestor(conn, dst, old_parent):
                raise FsError(errno.EINVAL, "cannot move a directory inside itself")
        conn.execute(
            "UPDATE dentries SET inode=? WHERE parent=? AND name=?", (dst, old_parent, old_name)
        )
        conn.execute(
            "UPDATE dentries SET inode=? WHERE parent=? AND name=?", (src, new_parent, new_name)
        )
        shift = int(src_is_dir) - int(dst_is_dir)  # directories moving change '..' counts
        if old_parent != new_parent and shift:
            _touch_dir(conn, old_parent, t, -shift)
            _touch_dir(conn, new_parent, t, shift)
        else:
            _touch_dir(conn, old_parent, t)
            _touch_dir(conn, new_parent, t)
        conn.execute("UPDATE inodes SET ctime_ns=? WHERE id IN (?, ?)", (t, src, dst))
        return None
    if dst is not None and flags & RENAME_NOREPLACE:
        raise FsError(errno.EEXIST, f"{new_name!r} exists")
    if dst == src:
        return None  # two names of one file: POSIX says do nothing
    if src_is_dir and _is_ancestor(conn, src, new_parent):
        raise FsError(errno.EINVAL, "cannot move a directory inside itself")
    replaced: Attr | None = None
    if dst is not None:
        dst_is_dir = stat.S_ISDIR(getattr_(conn, dst)["mode"])
        if src_is_dir and not dst_is_dir:
            raise FsError(errno.ENOTDIR, f"{new_name!r} is not a directory")
        if dst_is_dir and not src_is_dir:
            raise FsError(errno.EISDIR, f"{new_name!r} is a directory")
        if dst_is_dir:
            _require_empty(conn, dst)
            _touch_dir(conn, new_parent, t, -1)
        conn.execute("DELETE FROM dentries WHERE parent=? AND name=?", (new_parent, new_name))
        _drop_link(conn, dst, t)
        replaced = getattr_(conn, dst)
    conn.execute(
        "UPDATE dentries SET parent=?, name=? WHERE parent=? AND name=?",
        (new_parent, new_name, old_parent, old_name),
    )
    if src_is_dir and old_parent != new_parent:
        _touch_dir(conn, old_parent, t, -1)
        _touch_dir(conn, new_parent, t, 1)
    else:
        _touch_dir(conn, old_parent, t)
        _touch_dir(conn, new_parent, t)
    conn.execute("UPDATE inodes SET ctime_ns=? WHERE id=?", (t, src))
    return replaced


def _listing(conn: sqlite3.Connection, ino: int, after: int, limit: int) -> list[tuple[Any, ...]]:
    """(name, cookie, ino, mode, ...attributes in ATTR_COLUMNS order) per entry."""
    attr = getattr_(conn, ino)
    if not stat.S_ISDIR(attr["mode"]):
        raise FsError(errno.ENOTDIR, f"inode {ino} is not a directory")
    return conn.execute(LISTING_QUERY, (ino, after, limit)).fetchall()


def readdir(conn: sqlite3.Connection, ino: int, after: int, limit: int) -> list[list[Any]]:
    """Entries with a cookie greater than ``after``: [[name, attr, cookie], ...] in cookie order."""
    return [[row[0], _attr(row[2:]), row[1]] for row in _listing(conn, ino, after, limit)]


def readdir_rows(
    conn: sqlite3.Connection, ino: int, after: int, limit: int
) -> list[tuple[Any, ...]]:
    """As ``readdir``, each entry one flat row: (name, cookie, ino, mode, nlink, uid, gid,
    rdev, size, stored, atime_ns, mtime_ns, ctime_ns). A listing costs per entry, and a
    map of eleven named attributes per entry cost more to build, send and read back than
    the query that found it; the rows go out as SQLite returns them."""
    return _listing(conn, ino, after, limit)


def readlink(conn: sqlite3.Connection, ino: int) -> bytes:
    row = conn.execute("SELECT target FROM inodes WHERE id=?", (ino,)).fetchone()
    if row is None:
        raise FsError(errno.ENOENT, f"no inode {ino}")
    if row[0] is None:
        raise FsError(errno.EINVAL, f"inode {ino} is not a symlink")
    return bytes(row[0])


def forget(conn: sqlite3.Connection, ino: int) -> bool:
    """Delete an orphan (nlink 0) and what it owns; True if deleted. Live inodes stay."""
    row = conn.execute("SELECT volume, nlink, stored FROM inodes WHERE id=?", (ino,)).fetchone()
    if row is None or row[1] != 0:
        return False
    volume, _, stored = row
    conn.execute("DELETE FROM inodes WHERE id=?", (ino,))
    conn.execute("DELETE FROM chunks WHERE inode=?", (ino,))
    conn.execute("DELETE FROM slices WHERE inode=?", (ino,))
    conn.execute("DELETE FROM xattrs WHERE inode=?", (ino,))
    conn.execute(
        "UPDATE volumes SET used_bytes=used_bytes-?, used_inodes=used_inodes-1 WHERE id=?",
        (stored, volume),
    )
    return True


def orphans(conn: sqlite3.Connection, limit: int = 1000) -> list[int]:
    """Inodes with no links left (candidates for deletion when nobody holds them)."""
    return [r[0] for r in conn.execute("SELECT id FROM inodes WHERE nlink=0 LIMIT ?", (limit,))]
