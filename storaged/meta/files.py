"""File contents in metadata: chunk maps, sizes, truncation, quota, and setattr.

A file's bytes are described by rows (idx, chunk_id, start, length): bytes
[start, start+length) of piece ``idx`` are the first ``length`` bytes of that chunk; the
rest of the piece, and any piece without a row, reads as zeros. So truncation and holes
are metadata-only changes. Over a row lie the piece's *slices* (small writes stored
without rewriting the piece; see schema.py), newest last.
"""

from __future__ import annotations

import errno
import sqlite3
import stat
from typing import Any

from ..chunk.ids import is_chunk_id
from ..rpc.errors import FsError
from .namespace import Attr, exists, getattr_, lookup, now_ns

MAX_FILE_SIZE = 1 << 50  # 1 PiB: far past anything real, well inside SQLite's integers
# Mounts write a piece whole again long before this (fusefs.pieces.MAX_SLICES); the
# limit keeps a misbehaving client from making one piece's map grow without end.
MAX_SLICES_PER_PIECE = 1024


def _volume_row(conn: sqlite3.Connection, ino: int) -> tuple[int, int, int, int]:
    row = conn.execute(
        "SELECT v.id, v.chunk_size, v.capacity, v.used_bytes FROM volumes v "
        "JOIN inodes i ON i.volume = v.id WHERE i.id=?",
        (ino,),
    ).fetchone()
    if row is None:
        raise FsError(errno.ENOENT, f"no inode {ino}")
    return row


def _charge(
    conn: sqlite3.Connection, ino: int, volume: int, capacity: int, used: int, delta: int
) -> None:
    """Move ``delta`` stored bytes onto the inode and its volume, refusing past the quota."""
    if delta > 0 and used + delta > capacity:
        raise FsError(
            errno.ENOSPC, f"volume is full: {used} of {capacity} bytes used, {delta} more needed"
        )
    conn.execute("UPDATE inodes SET stored=stored+? WHERE id=?", (delta, ino))
    conn.execute("UPDATE volumes SET used_bytes=used_bytes+? WHERE id=?", (delta, volume))


def opened(conn: sqlite3.Connection, ino: int, pieces: int) -> dict[str, Any]:
    """An inode's attributes and, for a regular file with bytes, the map of its first
    ``pieces`` pieces (``chunks``, as chunk_map answers it): read together, so the map is
    the one of the file those attributes describe."""
    return _with_map(conn, getattr_(conn, ino), pieces)


def looked_up(conn: sqlite3.Connection, parent: int, name: bytes, pieces: int) -> dict[str, Any]:
    """``name``'s attributes and, for a regular file with bytes, the map of its first
    ``pieces`` pieces, read together (as ``opened``)."""
    return _with_map(conn, lookup(conn, parent, name), pieces)


def _with_map(conn: sqlite3.Connection, attr: dict[str, Any], pieces: int) -> dict[str, Any]:
    """``attr`` with, for a regular file with bytes, the map of its first ``pieces``
    pieces under ``chunks`` (in the caller's transaction: the map of that version)."""
    if pieces > 0 and stat.S_ISREG(attr["mode"]) and attr["size"] > 0:
        attr["chunks"] = chunk_map(conn, attr["ino"], 0, pieces - 1)
    return attr


def chunk_map(
    conn: sqlite3.Connection, ino: int, first: int, last: int, slices: bool = True
) -> list[list[Any]]:
    """Pieces first..last inclusive: [[idx, chunk_id, start, length], ...], and a fifth
    item [[chunk_id, start, length, offset], ...] (in order) for a piece with slices; a
    piece with slices and no row has chunk_id nil.

    A caller that does not say it reads slices (``slices`` false: a mount older than them)
    gets EIO for a range with slices. Such a mount takes a row as the piece's whole
    content and would read the slices' bytes as the stored piece's, or fail in a way that
    leaves it reading zeros (measured: a mount of the release before slices read a file
    with one slice as all zeros); an error is the answer that loses nothing. For the same
    reason an inode that does not exist is ESTALE, not a file of holes.
    """
    rows = {
        r[0]: list(r)
        for r in conn.execute(
            "SELECT idx, chunk_id, start, length FROM chunks WHERE inode=? AND idx BETWEEN ? AND ?",
            (ino, first, last),
        )
    }
    for idx, *sliced in conn.execute(
        "SELECT idx, chunk_id, start, length, offset FROM slices "
        "WHERE inode=? AND idx BETWEEN ? AND ? ORDER BY idx, seq",
        (ino, first, last),
    ):
        if not slices:
            raise FsError(
                errno.EIO,
                f"inode {ino} piece {idx} has slices (small writes a "
                f"newer mount stored); this mount is too old to read "
                f"them: upgrade it",
            )
        row = rows.setdefault(idx, [idx, None, 0, 0])
        if len(row) == 4:
            row.append([])
        row[4].append(sliced)
    if not rows and not exists(conn, ino):
        # Not "all holes": a mount reading a file deleted under it would return zeros
        raise FsError(errno.ESTALE, f"inode {ino} no longer exists")
    return [rows[i] for i in sorted(rows)]


def commit(
    conn: sqlite3.Connection,
    ino: int,
    size: int,
    pieces: list[list[Any]],
    mtime_ns: int | None = None,
) -> Attr:
    """Record written pieces (already durable on their chunk servers) and the file's size.

    Returns the inode's attributes, and the volume's stored bytes after the commit
    (``volume_used``: a mount checks the quota against it without asking again).

    An item [idx, chunk_id, start, length] is a piece written whole: it replaces the
    piece's row and its slices. An item [idx, chunk_id, start, length, offset] is a slice
    laid over the piece as it is now. Items apply in order.

    The size only grows here (shrinking is setattr's job), so two mounts committing writes
    in either order end with the larger size, as a local filesystem would.
    """
    attr = getattr_(conn, ino)
    if not stat.S_ISREG(attr["mode"]):
        raise FsError(errno.EINVAL, f"inode {ino} is not a regular file")
    if not 0 <= size <= MAX_FILE_SIZE:
        raise FsError(errno.EFBIG, f"file size {size} is out of range")
    if not isinstance(pieces, list):
        raise FsError(errno.EINVAL, "pieces must be a list")
    volume, chunk_size, capacity, used = _volume_row(conn, ino)
    delta = 0
    for piece in pieces:
        if isinstance(piece, list) and len(piece) == 5:
            delta += _add_slice(conn, ino, _check_slice(piece, chunk_size))
            continue
        idx, cid, start, length = _check_piece(piece, chunk_size)
        delta += length - _piece_bytes(conn, ino, idx)
        conn.execute("DELETE FROM slices WHERE inode=? AND idx=?", (ino, idx))
        if cid is None:  # the piece is all zeros now: a hole
            conn.execute("DELETE FROM chunks WHERE inode=? AND idx=?", (ino, idx))
        else:
            conn.execute(
                "INSERT OR REPLACE INTO chunks (inode, idx, chunk_id, start, length) "
                "VALUES (?,?,?,?,?)",
                (ino, idx, cid, start, length),
            )
    _charge(conn, ino, volume, capacity, used, delta)
    t = now_ns()
    conn.execute(
        "UPDATE inodes SET size=MAX(size, ?), mtime_ns=?, ctime_ns=? WHERE id=?",
        (size, mtime_ns if mtime_ns is not None else t, t, ino),
    )
    return {**getattr_(conn, ino), "volume_used": used + delta}


def _piece_bytes(conn: sqlite3.Connection, ino: int, idx: int) -> int:
    """Stored bytes piece idx references now: its row's and its slices'."""
    return conn.execute(
        "SELECT (SELECT COALESCE(SUM(length), 0) FROM chunks WHERE inode=:i AND idx=:x)"
        " + (SELECT COALESCE(SUM(length), 0) FROM slices WHERE inode=:i AND idx=:x)",
        {"i": ino, "x": idx},
    ).fetchone()[0]


def _add_slice(conn: sqlite3.Connection, ino: int, piece: tuple[int, str, int, int, int]) -> int:
    """Lay a slice over piece idx; returns the stored bytes it adds."""
    idx, cid, start, length, offset = piece
    count, top = conn.execute(
        "SELECT count(*), COALESCE(MAX(seq), 0) FROM slices WHERE inode=? AND idx=?", (ino, idx)
    ).fetchone()
    if count >= MAX_SLICES_PER_PIECE:
        raise FsError(errno.EINVAL, f"piece {idx} has {count} slices already: write it whole")
    conn.execute(
        "INSERT INTO slices (inode, idx, seq, chunk_id, start, length, offset) "
        "VALUES (?,?,?,?,?,?,?)",
        (ino, idx, top + 1, cid, start, length, offset),
    )
    return length


def _check_piece(piece: Any, chunk_size: int) -> tuple[int, str | None, int, int]:
    """[idx, chunk_id, start, length], or [idx, nil, 0, 0] for a piece that became a hole."""
    if not isinstance(piece, list) or len(piece) != 4:
        raise FsError(
            errno.EINVAL,
            f"malformed piece {piece!r}: want [idx, chunk_id, start, "
            f"length] (or a slice, with an offset after them)",
        )
    idx, cid, start, length = piece
    if not all(type(v) is int for v in (idx, start, length)):
        raise FsError(errno.EINVAL, f"malformed piece {piece!r}: idx, start, length are integers")
    if not 0 <= idx <= MAX_FILE_SIZE // chunk_size:
        raise FsError(errno.EINVAL, f"piece index {idx} is out of range")
    if cid is None:
        if start or length:
            raise FsError(errno.EINVAL, f"a hole has no start or length: {piece!r}")
    elif not is_chunk_id(cid) or not 0 <= start < start + length <= chunk_size:
        raise FsError(errno.EINVAL, f"piece {idx} (start {start}, length {length}) is out of range")
    return idx, cid, start, length


def _check_slice(piece: list[Any], chunk_size: int) -> tuple[int, str, int, int, int]:
    """[idx, chunk_id, start, length, offset]: a slice of at least one byte."""
    idx, cid, start, length, offset = piece
    if not all(type(v) is int for v in (idx, start, length, offset)):
        raise FsError(
            errno.EINVAL, f"malformed slice {piece!r}: idx, start, length, offset are integers"
        )
    if not 0 <= idx <= MAX_FILE_SIZE // chunk_size:
        raise FsError(errno.EINVAL, f"piece index {idx} is out of range")
    if not is_chunk_id(cid):
        raise FsError(errno.EINVAL, f"malformed slice {piece!r}: no chunk id")
    if not (0 <= start < start + length <= chunk_size and 0 <= offset <= chunk_size - length):
        raise FsError(
            errno.EINVAL,
            f"slice of piece {idx} (start {start}, length {length}, "
            f"offset {offset}) is out of range",
        )
    return idx, cid, start, length, offset


def truncate(conn: sqlite3.Connection, ino: int, size: int) -> None:
    """Set the size; bytes past it are dropped from the chunk map (metadata only)."""
    if not 0 <= size <= MAX_FILE_SIZE:
        raise FsError(errno.EFBIG if size > 0 else errno.EINVAL, f"size {size} is out of range")
    volume, chunk_size, capacity, used = _volume_row(conn, ino)
    keep_whole = size // chunk_size  # pieces below this index are untouched
    tail = size - keep_whole * chunk_size
    freed = 0
    for table in ("chunks", "slices"):
        freed += conn.execute(
            f"SELECT COALESCE(SUM(length), 0) FROM {table} WHERE inode=? AND idx>?",
            (ino, keep_whole),
        ).fetchone()[0]
        conn.execute(f"DELETE FROM {table} WHERE inode=? AND idx>?", (ino, keep_whole))
    row = conn.execute(
        "SELECT start, length FROM chunks WHERE inode=? AND idx=?", (ino, keep_whole)
    ).fetchone()
    if row is not None:
        start, length = row
        if tail <= start:  # nothing of the chunk's bytes is left below the new size
            conn.execute("DELETE FROM chunks WHERE inode=? AND idx=?", (ino, keep_whole))
            freed += length
        elif start + length > tail:
            conn.execute(
                "UPDATE chunks SET length=? WHERE inode=? AND idx=?",
                (tail - start, ino, keep_whole),
            )
            freed += start + length - tail
    # slices of the cut piece: gone from the new size on, shortened across it
    freed += conn.execute(
        "SELECT COALESCE(SUM(length), 0) FROM slices WHERE inode=? AND idx=? AND start>=?",
        (ino, keep_whole, tail),
    ).fetchone()[0]
    conn.execute("DELETE FROM slices WHERE inode=? AND idx=? AND start>=?", (ino, keep_whole, tail))
    freed += conn.execute(
        "SELECT COALESCE(SUM(start+length-?), 0) FROM slices WHERE inode=? "
        "AND idx=? AND start+length>?",
        (tail, ino, keep_whole, tail),
    ).fetchone()[0]
    conn.execute(
        "UPDATE slices SET length=?-start WHERE inode=? AND idx=? AND start+length>?",
        (tail, ino, keep_whole, tail),
    )
    _charge(conn, ino, volume, capacity, used, -freed)
    conn.execute("UPDATE inodes SET size=? WHERE id=?", (size, ino))


SETTABLE = {"mode", "uid", "gid", "size", "atime_ns", "mtime_ns"}


def setattr_(
    conn: sqlite3.Connection, ino: int, changes: dict[str, Any], t: int | None = None
) -> Attr:
    """chmod, chown, truncate, utimens; ctime always moves. A time of -1 means "now":
    ``t`` when given (the time a mount answered the change from a delegation), else the
    meta role's clock."""
    unknown = set(changes) - SETTABLE
    if unknown:
        raise FsError(errno.EINVAL, f"cannot set {sorted(unknown)}")
    for key, value in changes.items():
        if type(value) is not int:
            raise FsError(errno.EINVAL, f"{key} must be an integer")
    attr = getattr_(conn, ino)
    t = now_ns() if t is None else t
    if "size" in changes:
        if stat.S_ISDIR(attr["mode"]):
            raise FsError(errno.EISDIR, "cannot truncate a directory")
        if not stat.S_ISREG(attr["mode"]):
            raise FsError(errno.EINVAL, "only regular files can be truncated")
        truncate(conn, ino, changes["size"])
        if changes["size"] != attr["size"]:
            conn.execute("UPDATE inodes SET mtime_ns=? WHERE id=?", (t, ino))
    if "mode" in changes:
        mode = (attr["mode"] & ~0o7777) | (changes["mode"] & 0o7777)
        conn.execute("UPDATE inodes SET mode=? WHERE id=?", (mode, ino))
    for key in ("uid", "gid"):
        if key in changes:
            conn.execute(f"UPDATE inodes SET {key}=? WHERE id=?", (changes[key], ino))
    for key in ("atime_ns", "mtime_ns"):
        if key in changes:
            value = t if changes[key] == -1 else changes[key]
            conn.execute(f"UPDATE inodes SET {key}=? WHERE id=?", (value, ino))
    conn.execute("UPDATE inodes SET ctime_ns=? WHERE id=?", (t, ino))
    return getattr_(conn, ino)


def referenced(conn: sqlite3.Connection, ids: list[str]) -> set[str]:
    """The ids among ``ids`` that some chunk map row or slice (any volume, any snapshot)
    uses."""
    out: set[str] = set()
    for start in range(0, len(ids), 500):
        batch = ids[start : start + 500]
        marks = ",".join("?" * len(batch))
        for table in ("chunks", "slices"):
            out.update(
                r[0]
                for r in conn.execute(
                    f"SELECT DISTINCT chunk_id FROM {table} WHERE chunk_id IN ({marks})", batch
                )
            )
    return out


def referenced_with_replicas(
    conn: sqlite3.Connection, after: str | None, limit: int
) -> list[list[Any]]:
    """[[chunk_id, R], ...] in id order after ``after``: every chunk some chunk map row or
    slice uses, with the largest replica count among the volumes and snapshots using it."""
    pages = [
        conn.execute(
            f"SELECT c.chunk_id, max(v.replicas) FROM {table} c JOIN inodes i ON i.id = c.inode "
            "JOIN volumes v ON v.id = i.volume WHERE c.chunk_id > ? GROUP BY c.chunk_id "
            "ORDER BY c.chunk_id LIMIT ?",
            (after or "", limit),
        ).fetchall()
        for table in ("chunks", "slices")
    ]
    return [list(r) for r in first_of_union(pages, limit)]


def first_of_union(pages: list[list[tuple[Any, ...]]], limit: int) -> list[tuple[Any, ...]]:
    """The first ``limit`` keys of several tables' pages, each in key order with ``limit``
    rows at most (keys first, values merged by max). Paging each table on its own index and
    merging here stays cheap where one ordered query over their union would sort it all."""
    merged: dict[Any, tuple[Any, ...]] = {}
    for page in pages:
        for row in page:
            seen = merged.get(row[0])
            merged[row[0]] = row if seen is None else max(seen, row)
    return [merged[k] for k in sorted(merged)[:limit]]
