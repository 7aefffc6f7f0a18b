"""Group commit: the meta database's changes reach the disk together, within a bound.

Until this, every mutating call was committed with an fsync of the WAL before it was
answered (``synchronous=FULL``): ~0.4 ms of the meta role's event loop per create, unlink,
rename or close, each on its own. The durability rules of shoalfs do not ask for that:

- ``fsync``, ``fdatasync``, ``fsync`` of a directory and unmount must find everything they
  cover durable before they return: the mount then calls ``fs.sync``, which answers once
  every change committed before it is on disk;
- the close of a written file must have its metadata *reached* the meta role: committed
  to the database (its WAL frames written to the file, so they survive a SIGKILL of the
  meta role or of the mount), and on disk within ``PERIOD``: only a power loss inside that
  window can take it, as ext4's commit interval can;
- the answers an administrator or Kubernetes acts on (a volume or snapshot created or
  deleted, a server drained or removed, fsck's repairs) wait for the disk, as before.

So the database runs with ``synchronous=NORMAL`` (in WAL mode: commits write the WAL but do
not fsync it; checkpoints fsync), and this class makes the WAL durable at most ``PERIOD``
after a change, and at once when someone waits for it: all changes committed before a
sync started are covered by it (an fsync covers the whole file), so one sync serves every
waiter that arrived before it began.

Invariants: ``written`` counts commits; ``synced`` is the value ``written`` had when the
last completed sync began, so every commit numbered ``<= synced`` is on disk. A waiter for
commit ``n`` returns once ``synced >= n``. Only one sync runs at a time.
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable

import trio

log = logging.getLogger("storaged.meta")

PERIOD = 0.05  # seconds: a committed change is on disk at most this long after its commit


class GroupCommit:
    def __init__(self, sync: Callable[[], Awaitable[None]]) -> None:
        self._sync = sync  # makes every commit so far durable (the database's WAL fsync)
        self.written = 0  # commits so far
        self.synced = 0  # commits known durable
        self.syncs = 0  # syncs done
        self._done = trio.Event()  # set when a sync ends; replaced when the next begins
        self._running = False
        self._wanted = trio.Event()  # someone waits: sync now rather than at the period

    def committed(self) -> int:
        """A transaction that wrote has committed; its number, for ``durable``."""
        self.written += 1
        return self.written

    async def durable(self, upto: int | None = None) -> None:
        """Return once commit ``upto`` (default: every commit so far) is on disk."""
        target = self.written if upto is None else upto
        while self.synced < target:
            if not self._running:
                await self._sync_once()
            else:
                self._wanted.set()
                await self._done.wait()

    async def _sync_once(self) -> None:
        self._running = True
        self._done = trio.Event()
        covers = self.written  # every commit up to here was written before the fsync starts
        try:
            await self._sync()
            self.synced = max(self.synced, covers)
            self.syncs += 1
        finally:
            self._running = False
            self._done.set()

    async def run(self, period: float = PERIOD) -> None:
        """The bound: a change is on disk at most ``period`` after its commit (plus the
        fsync's own time). A failed sync is retried at the next period; waiters keep
        waiting meanwhile (nothing is reported durable that is not)."""
        while True:
            with trio.move_on_after(period):
                await self._wanted.wait()
            self._wanted = trio.Event()
            if self.synced < self.written and not self._running:
                try:
                    await self._sync_once()
                except Exception:
                    log.exception("the meta database could not be synced; trying again")
