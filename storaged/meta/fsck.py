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
    inodes = {r[0]: (r[1], r[2], r[3]) for r in conn.execute(
        "SELECT id, mode, nlink, stored FROM inodes WHERE volume=?", (vid,))}
    entries = conn.execute(
        "SELECT d.parent, d.name, d.inode FROM dentries d JOIN inodes p ON p.id = d.parent "
        "WHERE p.volume=?", (vid,)).fetchall()
    problems: list[str] = []

    def problem(text: str) -> None:
        if len(problems) < MAX_PROBLEMS:
            problems.append(text)

    for ino, mode, uid, gid in conn.execute(
            "SELECT id, mode, uid, gid FROM inodes WHERE volume=?", (vid,)):
        if not 0 <= mode <= ranges.MODE_BITS or stat.S_IFMT(mode) not in ranges.FILE_TYPES:
            problem(f"inode {ino} has mode {mode:#o}, with no valid file type (a mount shows "
                    "it, and its directory's listings, as EIO)")
        if not (0 <= uid <= ranges.ID_MAX and 0 <= gid <= ranges.ID_MAX):
            problem(f"inode {ino} has uid {uid} / gid {gid}, outside 0..{ranges.ID_MAX} (its "
                    "directory's listings fail with EIO on every mount)")

    links: Counter[int] = Counter()
    subdirs: Counter[int] = Counter()
    children: dict[int, list[int]] = {}
    for parent, entry, ino in entries:
        shown = entry.decode(errors="replace")
        if not stat.S_ISDIR(inodes[parent][0]):
            problem(f"entry {shown!r} is in inode {parent}, which is not a directory")
        if ino not in inodes:
            problem(f"entry {shown!r} in directory {parent} names inode {ino}, which does not "
                    "exist in this volume")
            continue
        links[ino] += 1
        children.setdefault(parent, []).append(ino)
        if stat.S_ISDIR(inodes[ino][0]):
            subdirs[parent] += 1
    orphans = 0
    for ino, (mode, nlink, _stored) in inodes.items():
        expected = links[ino] + ((1 + subdirs[ino] + (1 if ino == root else 0))
                                 if stat.S_ISDIR(mode) else 0)
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
                "WHERE i.volume=? GROUP BY c.inode", (vid,)):
            held[ino] += total
    for ino, (_mode, _nlink, stored) in inodes.items():
        if stored != held[ino]:
            problem(f"inode {ino} records {stored} bytes stored; its chunk rows and slices "
                    f"hold {held[ino]}")
    stored = sum(s for _m, _n, s in inodes.values())
    if stored != volume["used_bytes"]:
        problem(f"the volume records {volume['used_bytes']} bytes used; its files hold {stored}")
    if len(inodes) != volume["used_inodes"]:
        problem(f"the volume records {volume['used_inodes']} inodes; it has {len(inodes)}")
    return {"volume": name, "inodes": len(inodes), "entries": len(entries), "orphans": orphans,
            "problems": problems}


def chunk_ids(conn: sqlite3.Connection, name: str, after: str | None,
              limit: int) -> list[str]:
    """The volume's referenced chunk ids (rows and slices), in id order after ``after``
    (paged)."""
    vid = volumes.get(conn, name)["id"]
    pages = [conn.execute(
        f"SELECT DISTINCT c.chunk_id FROM {table} c JOIN inodes i ON i.id = c.inode "
        "WHERE i.volume=? AND c.chunk_id > ? ORDER BY c.chunk_id LIMIT ?",
        (vid, after or "", limit)).fetchall() for table in ("chunks", "slices")]
    return [r[0] for r in first_of_union(pages, limit)]
