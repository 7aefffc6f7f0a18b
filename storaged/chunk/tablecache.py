"""Block hash tables kept in memory, so a ranged read need not read one from disk.

Why: a random 4 KiB read of a file reaches a chunk server as a ``chunk.read`` of one
64 KiB block, and each one opened and read the chunk's ``.blocks`` file before the block
itself: a second file read per request, and a second disk read when the page cache had
dropped it (py-spy of random reads, docs/performance.md). A 4 MiB chunk's table is 64
digests of 32 bytes; ``TABLES_MAX`` of them take at most a few MiB.

Invariants:

1. An entry is the table of the chunk of that id *and size* (looked up by both): the
   file under an id never changes content (content addressing), only whether it is there.
2. Whatever removes or replaces a chunk or its table (delete, quarantine, a rebuilt
   table) drops or replaces the entry under the store's lock, as it changes the file.
3. An entry is never trusted more than the file was: every block read is still checked
   against its digest, and a mismatch sends the read to the whole chunk (store.py).
"""

from __future__ import annotations

import threading
from collections import OrderedDict

TABLES_MAX = 4096  # chunks whose tables are kept (least recently used dropped first)


class BlockTables:
    """Thread-safe LRU of (size, block size, digests) by chunk id."""

    def __init__(self, limit: int = TABLES_MAX) -> None:
        self.limit = limit
        self._lock = threading.Lock()
        self._tables: OrderedDict[str, tuple[int, int, list[bytes]]] = OrderedDict()

    def get(self, cid: str, size: int) -> tuple[int, list[bytes]] | None:
        """(block size, digests) of chunk ``cid`` of ``size`` bytes, if kept."""
        with self._lock:
            entry = self._tables.get(cid)
            if entry is None or entry[0] != size:
                return None
            self._tables.move_to_end(cid)
            return entry[1], entry[2]

    def put(self, cid: str, size: int, block_size: int, digests: list[bytes]) -> None:
        with self._lock:
            self._tables[cid] = (size, block_size, digests)
            self._tables.move_to_end(cid)
            while len(self._tables) > self.limit:
                self._tables.popitem(last=False)

    def drop(self, cid: str) -> None:
        with self._lock:
            self._tables.pop(cid, None)

    def __len__(self) -> int:
        with self._lock:
            return len(self._tables)
