"""Background work per inode that some requests must not overtake.

A release's hold drop and the kernel's forgetting of dropped pages run in tasks of their
own, so the request that started them does not wait (it may even hold what they need);
the few requests that would see them out of order (an open of the same inode, unmounting)
wait for them instead. One registry per kind of work: the newest piece of work per inode
is the one waited for.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Iterator

import trio


class InFlight:
    def __init__(self, nursery: trio.Nursery) -> None:
        self._nursery = nursery
        self._running: dict[int, trio.Event] = {}

    def start(self, ino: int, work: Callable[[], Awaitable[None]]) -> None:
        """Run ``work`` in the background as this inode's newest piece of work."""
        done = self._running[ino] = trio.Event()
        self._nursery.start_soon(self._run, ino, work, done)

    async def _run(self, ino: int, work: Callable[[], Awaitable[None]], done: trio.Event) -> None:
        try:
            await work()
        finally:
            done.set()
            if self._running.get(ino) is done:
                del self._running[ino]

    async def wait(self, ino: int) -> None:
        """Return once no work for ``ino`` started before this call is running."""
        done = self._running.get(ino)
        if done is not None:
            await done.wait()

    def __iter__(self) -> Iterator[int]:
        return iter(list(self._running))

    def __contains__(self, ino: object) -> bool:
        return ino in self._running

    def __len__(self) -> int:
        return len(self._running)
