"""Chunk maps of files this mount read and closed, or looked up, kept for the next open of
the same version of the file.

A file read again while nothing changed is opened by the mount itself (Operations.
_open_here) and its bytes come from the kernel's page cache. But the kernel may drop
those pages at any time — memory pressure, or an inode evicted when its entry expired
and its last user closed it — and the next read then reaches the mount, whose new
FileData has no chunk map: one ``fs.chunks`` round trip, and the meta role involved in
a read of a file the mount knows to be unchanged. Keeping the map of such a file here
makes that read need the chunk servers (or the chunk cache) only. A lookup that reached
the meta role brings the map of a regular file's first pieces and a hold on it (fs.lookup
with pieces): kept here too, it lets the open that follows be answered by the mount.

Invariants:

1. A map is kept only from a FileData that wrote nothing (its rows are the meta role's
   map of the committed file) and heard of no change while open (``rows_stale``), or
   from a lookup's answer (read with the attributes in one transaction), under the
   attributes the mount knows to be current then (Operations._known: no invalidation
   arrived while the request was out), by their *version*: (size, mtime_ns, ctime_ns).
2. A map is handed out only for attributes the mount knows to be current, of the same
   version. The ctime moves with every change of the file (a commit, a truncate, a
   utimens) and nobody can set it back, so a file changed while this mount did not
   watch it (no invalidation could reach it) never gets an old map: not even after a
   write of equal length and a utimens that put the mtime back.
3. Any invalidation naming the inode, and any reset of the coherent cache, drops its map
   (memory: the next answer has a new version anyway).
4. At most ``limit`` maps of at most ``rows_max`` rows each (the first pieces of a file:
   what a small file, or the start of a large one, needs); the oldest go first.
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Mapping
from typing import Any

from .pieces import Piece

Version = tuple[int, int, int]  # (size, mtime_ns, ctime_ns): see invariant 2
KEPT_MAPS = 4096  # files (each at most ROWS_MAX rows of a few hundred bytes)
ROWS_MAX = 64


class KeptMaps:
    def __init__(self, limit: int = KEPT_MAPS, rows_max: int = ROWS_MAX) -> None:
        self.limit = limit
        self.rows_max = rows_max
        self._maps: OrderedDict[int, tuple[Version, dict[int, Piece | None]]] = OrderedDict()

    def __len__(self) -> int:
        return len(self._maps)

    def keep(self, ino: int, version: Version, rows: dict[int, Piece | None]) -> None:
        """The map of ``ino`` as of ``version`` (invariant 1 is the caller's)."""
        if not rows or len(rows) > self.rows_max:
            self._maps.pop(ino, None)
            return
        self._maps[ino] = (version, dict(rows))
        self._maps.move_to_end(ino)
        while len(self._maps) > self.limit:
            self._maps.popitem(last=False)

    def take(self, ino: int, version: Version) -> dict[int, Piece | None]:
        """The kept map of ``ino`` if it is of ``version``, else {} (a copy: the FileData
        that takes it may change its rows)."""
        kept = self._maps.get(ino)
        if kept is None or kept[0] != version:
            return {}
        self._maps.move_to_end(ino)
        return dict(kept[1])

    def covers(self, ino: int, version: Version, chunk_size: int) -> bool:
        """Is a map of ``version`` of ``ino`` kept, with every piece of the file in it?"""
        kept = self._maps.get(ino)
        if kept is None or kept[0] != version:
            return False
        return all(i in kept[1] for i in range(-(-version[0] // chunk_size)))

    def drop(self, ino: int) -> None:
        self._maps.pop(ino, None)

    def clear(self) -> None:
        self._maps.clear()


def map_from_answer(
    fetched: list[list[Any]], count: int, size: int, chunk_size: int
) -> dict[int, Piece | None]:
    """Pieces 0..count-1 of a file of ``size`` bytes as an fs.open or fs.lookup answered
    them (``chunks``): the rows it sent, and holes (None) for the others within the file
    (the meta role sends no row for a hole; pieces past the end are not in the map)."""
    rows: dict[int, Piece | None] = dict.fromkeys(range(min(count, -(-size // chunk_size))))
    for row in fetched:
        rows[row[0]] = Piece.from_row(row)
    return rows


def version_of(attr: Mapping[str, Any]) -> Version:
    """The version of a file that ``attr`` describe (invariant 2)."""
    return attr["size"], attr["mtime_ns"], attr["ctime_ns"]
