"""Consistency check of one volume's metadata (the half of ``shoal fsck`` the meta role
can do alone; the CLI then checks that every referenced chunk has a copy on a live server).

Checked: every entry names an existing inode of the same volume under a directory; link
counts equal the entries pointing at each inode (plus '.' and each subdirectory's '..' for
directories); every linked inode is reachable from the root; the volume's used bytes and
inode count equal the sums they cache, and so does each file's stored bytes; every inode's
mode, uid and gid are in the ranges a mount can show (storaged/meta/ranges.py: an earlier
release stored what it was sent, and one such inode made its directory's listings fail
with EIO). Orphans (nlink 0, open somewhere) are counted, not reported: they are legal
until their last close.

``repair_ranges`` (``shoal fsck --repair``) mends those out-of-range values, and only those:
the other problems need a person's judgement, the ranges have one answer a kernel agrees
with (see its docstring).
"""

from __future__ import annotations

import sqlite3
import stat
from collections import Counter
from typing import Any

from . import ranges, volumes
from .files import first_of_union

MAX_PROBLEMS = 1000


def check(conn: sqlite3.Connection, name: str) -> dict[str, Any]:
    volume = volumes.get(conn, name)
    vid, root = volume["id"], volume["root"]
    inodes = {
        r[0]: (r[1], r[2], r[3])
        for r in conn.execute("SELECT id, mode, nlink, stored FROM inodes WHERE volume=?", (vid,))
    }
    entries = conn.execute(
        "SELECT d.parent, d.name, d.inode FROM dentries d JOIN inodes p ON p.id = d.parent "
        "WHERE p.volume=?",
        (vid,),
    ).fetchall()
    problems: list[str] = []

    def problem(text: str) -> None:
        if len(problems) < MAX_PROBLEMS:
            problems.append(text)

    for ino, mode, uid, gid, rdev, size in conn.execute(
        "SELECT id, mode, uid, gid, rdev, size FROM inodes WHERE volume=?", (vid,)
    ):
        if not _valid_mode(mode):
            problem(
                f"inode {ino} has mode {mode:#o}, with no valid file type (a mount shows "
                "it, and its directory's listings, as EIO; --repair mends it)"
            )
        if not (0 <= uid <= ranges.ID_MAX and 0 <= gid <= ranges.ID_MAX):
            problem(
                f"inode {ino} has uid {uid} / gid {gid}, outside 0..{ranges.ID_MAX} (its "
                "directory's listings fail with EIO on every mount; --repair mends it)"
            )
        if not 0 <= rdev <= ranges.RDEV_MAX:
            problem(
                f"inode {ino} has device number {rdev}, outside 0..{ranges.RDEV_MAX} "
                "(--repair mends it)"
            )
        if not 0 <= size <= ranges.SIZE_MAX:
            problem(
                f"inode {ino} has size {size}, outside 0..{ranges.SIZE_MAX} (--repair mends it)"
            )

    links: Counter[int] = Counter()
    subdirs: Counter[int] = Counter()
    children: dict[int, list[int]] = {}
    for parent, entry, ino in entries:
        shown = entry.decode(errors="replace")
        if not _is_dir(inodes[parent][0]):
            problem(f"entry {shown!r} is in inode {parent}, which is not a directory")
        if ino not in inodes:
            problem(
                f"entry {shown!r} in directory {parent} names inode {ino}, which does not "
                "exist in this volume"
            )
            continue
        links[ino] += 1
        children.setdefault(parent, []).append(ino)
        if _is_dir(inodes[ino][0]):
            subdirs[parent] += 1
    orphans = 0
    for ino, (mode, nlink, _stored) in inodes.items():
        expected = links[ino] + (
            (1 + subdirs[ino] + (1 if ino == root else 0)) if _is_dir(mode) else 0
        )
        if nlink == 0:
            orphans += 1
            if links[ino]:
                problem(f"inode {ino} has nlink 0 but {links[ino]} entries")
        elif nlink != expected:
            problem(f"inode {ino}: nlink {nlink}, but {expected} links point to it")
    reachable, todo = {root}, [root]
    while todo:
        for child in children.get(todo.pop(), []):
            if child not in reachable:
                reachable.add(child)
                todo.append(child)
    for ino, (_mode, nlink, _stored) in inodes.items():
        if nlink and ino not in reachable:
            problem(f"inode {ino} is linked (nlink {nlink}) but not reachable from the root")
    held: Counter[int] = Counter()
    for table in ("chunks", "slices"):
        for ino, total in conn.execute(
            f"SELECT c.inode, sum(c.length) FROM {table} c JOIN inodes i ON i.id = c.inode "
            "WHERE i.volume=? GROUP BY c.inode",
            (vid,),
        ):
            held[ino] += total
    for ino, (_mode, _nlink, stored) in inodes.items():
        if stored != held[ino]:
            problem(
                f"inode {ino} records {stored} bytes stored; its chunk rows and slices "
                f"hold {held[ino]}"
            )
    stored = sum(s for _m, _n, s in inodes.values())
    if stored != volume["used_bytes"]:
        problem(f"the volume records {volume['used_bytes']} bytes used; its files hold {stored}")
    if len(inodes) != volume["used_inodes"]:
        problem(f"the volume records {volume['used_inodes']} inodes; it has {len(inodes)}")
    return {
        "volume": name,
        "inodes": len(inodes),
        "entries": len(entries),
        "orphans": orphans,
        "problems": problems,
    }


def _is_dir(mode: int) -> bool:
    """stat.S_ISDIR for any integer (it refuses those outside a C unsigned int, which an
    earlier release may have stored)."""
    return mode & 0o170000 == stat.S_IFDIR


def _valid_mode(mode: int) -> bool:
    return 0 <= mode <= ranges.MODE_BITS and stat.S_IFMT(mode) in ranges.FILE_TYPES


# What the kernel shows for an id it cannot map (/proc/sys/kernel/overflowuid and
# overflowgid): the owner an out-of-range uid or gid becomes, "nobody" on most systems.
OVERFLOW_ID = 65534


def repair_ranges(conn: sqlite3.Connection, name: str) -> dict[str, Any]:
    """Mend the inodes of volume ``name`` whose values no mount can show (an earlier
    release stored what it was sent), in one transaction. Returns what was changed:
    ``repaired``, one line per change, and ``inodes``: {ino: [[parent, name], ...]} (who
    watches them must be told).

    - uid or gid outside 0..ID_MAX: OVERFLOW_ID, what the kernel itself shows for an id it
      cannot represent;
    - a mode with no valid file type: the type the inode's rows show it is (a directory if
      it is the root or has entries, a symlink if it has a target, else a regular file),
      with the permission bits it had (0o755 for a directory, 0o644 else, if it had none
      that fit);
    - a device number outside 0..RDEV_MAX: 0;
    - a size outside 0..SIZE_MAX: the end of its stored bytes (its chunk rows' and slices'
      extent).
    """
    volume = volumes.get(conn, name)
    vid, root, chunk_size = volume["id"], volume["root"], volume["chunk_size"]
    repaired: list[str] = []
    touched: set[int] = set()
    for ino, mode, uid, gid, rdev, size, target in conn.execute(
        "SELECT id, mode, uid, gid, rdev, size, target FROM inodes WHERE volume=? AND ("
        "uid NOT BETWEEN 0 AND ? OR gid NOT BETWEEN 0 AND ? OR rdev NOT BETWEEN 0 AND ? "
        "OR size NOT BETWEEN 0 AND ? OR mode NOT BETWEEN 0 AND ? OR (mode & ?) NOT IN "
        f"({','.join('?' * len(ranges.FILE_TYPES))}))",
        (
            vid,
            ranges.ID_MAX,
            ranges.ID_MAX,
            ranges.RDEV_MAX,
            ranges.SIZE_MAX,
            ranges.MODE_BITS,
            stat.S_IFMT(ranges.MODE_BITS),
            *sorted(ranges.FILE_TYPES),
        ),
    ).fetchall():
        changes: dict[str, int] = {}
        if not 0 <= uid <= ranges.ID_MAX:
            changes["uid"] = OVERFLOW_ID
        if not 0 <= gid <= ranges.ID_MAX:
            changes["gid"] = OVERFLOW_ID
        if not _valid_mode(mode):
            changes["mode"] = _mended_mode(conn, ino, mode, ino == root, target is not None)
        if not 0 <= rdev <= ranges.RDEV_MAX:
            changes["rdev"] = 0
        if not 0 <= size <= ranges.SIZE_MAX:
            changes["size"] = _stored_end(conn, ino, chunk_size)
        conn.execute(
            f"UPDATE inodes SET {', '.join(f'{k}=?' for k in changes)} WHERE id=?",
            (*changes.values(), ino),
        )
        old = {"uid": uid, "gid": gid, "mode": mode, "rdev": rdev, "size": size}
        repaired.append(
            f"inode {ino}: "
            + ", ".join(
                f"{k} {old[k]:#o} -> {v:#o}" if k == "mode" else f"{k} {old[k]} -> {v}"
                for k, v in changes.items()
            )
        )
        touched.add(ino)
    names: dict[int, list[list[Any]]] = {ino: [] for ino in touched}
    for ino in touched:
        for parent, entry in conn.execute(
            "SELECT parent, name FROM dentries WHERE inode=?", (ino,)
        ):
            names[ino].append([parent, entry])
    return {"volume": name, "repaired": repaired, "inodes": names}


def _mended_mode(
    conn: sqlite3.Connection, ino: int, mode: int, is_root: bool, has_target: bool
) -> int:
    if is_root or conn.execute("SELECT 1 FROM dentries WHERE parent=? LIMIT 1", (ino,)).fetchone():
        kind, default = stat.S_IFDIR, 0o755
    elif has_target:
        kind, default = stat.S_IFLNK, 0o777
    else:
        kind, default = stat.S_IFREG, 0o644
    bits = mode & 0o7777 if 0 <= mode <= ranges.MODE_BITS else default
    return kind | (bits or default)


def _stored_end(conn: sqlite3.Connection, ino: int, chunk_size: int) -> int:
    ends = [
        row[0]
        for table in ("chunks", "slices")
        for row in conn.execute(
            f"SELECT max(idx * ? + start + length) FROM {table} WHERE inode=?", (chunk_size, ino)
        )
        if row[0] is not None
    ]
    return max(ends, default=0)


def chunk_ids(conn: sqlite3.Connection, name: str, after: str | None, limit: int) -> list[str]:
    """The volume's referenced chunk ids (rows and slices), in id order after ``after``
    (paged)."""
    vid = volumes.get(conn, name)["id"]
    pages = [
        conn.execute(
            f"SELECT DISTINCT c.chunk_id FROM {table} c JOIN inodes i ON i.id = c.inode "
            "WHERE i.volume=? AND c.chunk_id > ? ORDER BY c.chunk_id LIMIT ?",
            (vid, after or "", limit),
        ).fetchall()
        for table in ("chunks", "slices")
    ]
    return [r[0] for r in first_of_union(pages, limit)]
