"""A server-wide cap on the bytes held by requests in progress.

Frame and in-flight limits are per connection; with many connections their product is far
more memory than a chunk server has. This budget is what actually bounds memory: when it is
spent, connections stop reading, TCP pushes back on the senders, and nobody gets an error
for being merely one of many. A single request larger than the whole budget still runs
(alone), so a budget smaller than a chunk cannot wedge the server.
"""

from __future__ import annotations

from typing import Any

import trio


class ByteBudget:
    def __init__(self, limit: int) -> None:
        self.limit = limit
        self.in_use = 0
        self._changed = trio.Condition()

    async def acquire(self, size: int) -> None:
        async with self._changed:
            while self.in_use and self.in_use + size > self.limit:
                await self._changed.wait()
            self.in_use += size

    async def release(self, size: int) -> None:
        async with self._changed:
            self.in_use -= size
            self._changed.notify_all()


def payload_size(params: list[Any]) -> int:
    """What a request holds in memory, roughly: its top-level bytes and str parameters."""
    return sum(len(p) for p in params if isinstance(p, (bytes, str))) + 64
