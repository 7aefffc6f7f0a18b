"""A server-wide cap on the bytes held by requests in progress.

Frame and in-flight limits are per connection; with many connections their product is far
more memory than a chunk server has. This budget is what actually bounds memory: when it is
spent, connections stop reading, TCP pushes back on the senders, and nobody gets an error
for being merely one of many. A single request larger than the whole budget still runs
(alone), so a budget smaller than a chunk cannot wedge the server.

Every request passes through here, so taking bytes that are there costs no scheduling: no
lock and no yield (trio runs one task at a time; nothing interleaves without an await).
Only a request that must wait parks, until a release wakes the waiters to look again.
"""

from __future__ import annotations

from typing import Any

import trio


class ByteBudget:
    def __init__(self, limit: int) -> None:
        self.limit = limit
        self.in_use = 0
        self._waiting = trio.lowlevel.ParkingLot()

    async def acquire(self, size: int) -> None:
        while self.in_use and self.in_use + size > self.limit:
            await self._waiting.park()
        self.in_use += size

    def release(self, size: int) -> None:
        self.in_use -= size
        self._waiting.unpark_all()


def payload_size(params: list[Any]) -> int:
    """What a request holds in memory, roughly: its top-level bytes and str parameters."""
    return sum(len(p) for p in params if isinstance(p, (bytes, bytearray, str))) + 64
