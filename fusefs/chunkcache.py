"""Recently used chunk contents, bounded in bytes.

Chunks are immutable and named by their content, so a cached chunk can never be stale:
there is nothing to invalidate, only memory to bound (the mount's memory is every pod's
availability on that volume). Concurrent readers of one chunk share a single fetch.
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Awaitable, Callable

import trio


class ChunkCache:
    def __init__(self, max_bytes: int) -> None:
        self.max_bytes = max_bytes
        self.bytes = 0
        self._items: OrderedDict[str, bytes] = OrderedDict()
        self._fetching: dict[str, trio.Event] = {}

    def get(self, cid: str) -> bytes | None:
        data = self._items.get(cid)
        if data is not None:
            self._items.move_to_end(cid)
        return data

    def put(self, cid: str, data: bytes) -> None:
        if len(data) > self.max_bytes or cid in self._items:
            return
        self._items[cid] = data
        self.bytes += len(data)
        while self.bytes > self.max_bytes:
            _, old = self._items.popitem(last=False)
            self.bytes -= len(old)

    async def fetch(self, cid: str, load: Callable[[str], Awaitable[bytes]]) -> bytes:
        """The chunk from the cache, or loaded once however many tasks ask at the same time."""
        while True:
            data = self.get(cid)
            if data is not None:
                return data
            pending = self._fetching.get(cid)
            if pending is None:
                break
            await pending.wait()  # then look again: cached now, or someone else loads, or us
        done = self._fetching[cid] = trio.Event()
        try:
            data = await load(cid)
            self.put(cid, data)
            return data
        finally:
            del self._fetching[cid]
            done.set()
