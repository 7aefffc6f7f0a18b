"""An open directory's entries on their way from the meta role to the kernel.

The kernel asks for a directory in buffers of its own size — one page on older kernels, so
some 25 entries a request — while the meta role answers pages of up to 1,000 entries. Were
each request to fetch a page and drop what did not fit, a listing would read forty times
the entries it lists: so a listing keeps the rows a request had no room for, with the
cookie they continue from, and the next request takes them.

And a listing is a chain of waits — the meta role reads a page, the mount hands it to the
kernel — on a machine with more than one core: while the mount hands a full page to the
kernel, the next one is already being read (``Listing.take`` starts it).

Rows read earlier must not tell the kernel something older than what it already knows: a
name unlinked through this mount would come back as a cached entry, a chmod would be
undone in the attribute cache. So kept and read-ahead rows are used only if nothing was
changed through this mount since they were read (``changes``, a counter the mount moves
with every change it sends); otherwise they are read again. (Changes made through other
mounts are seen as before: within the attribute timeout.) They are also dropped when the
directory is closed, when the kernel asks from any other cookie (``rewinddir``,
``seekdir``: the listing starts afresh), or, past ``KEPT_LISTINGS`` open directories
keeping rows, for the one used longest ago: the memory this takes is bounded by that
number, whatever programs keep open.
"""

from __future__ import annotations

import logging
from collections import OrderedDict
from collections.abc import Awaitable, Callable
from typing import Any

import trio

log = logging.getLogger("fusefs")

Row = list[Any]  # [name, cookie, ino, mode, ...]: an fs.readdir row (docs/rpc.md)


class Page(list[Row]):
    """A page of rows as fetched, with what the fetcher needs to know about them later
    (``token``: the mount's Ask, which says how long the kernel may keep them)."""

    token: Any = None


Fetch = Callable[[int], Awaitable[list[Row]]]  # the page of rows after a cookie

KEPT_LISTINGS = 16  # open directories that may keep rows at once (each at most two pages
# of 1,000 rows: about 1.1 MB)


class Listing:
    """One open directory (one opendir)."""

    def __init__(self, fetch: Fetch, page: int, kept: KeptListings) -> None:
        self._fetch = fetch
        self._page = page
        self._kept = kept
        self._rows: list[Row] = []  # rows not handed to the kernel yet ...
        self._after = -1  # ... continuing after this cookie ...
        self._stamp = -1  # ... read when kept.changes() said this
        self._next: _Ahead | None = None  # the page after the last one fetched, on its way
        self.token: Any = None  # the token of the page the rows ``take`` gave came from
        self._rows_token: Any = None  # ... and of the rows kept

    async def take(self, after: int) -> list[Row]:
        """The rows that follow cookie ``after`` (an empty list at the end). The caller
        hands them to the kernel and gives back, with ``keep``, those there was no room
        for."""
        now = self._kept.changes()
        rows: list[Row] | None
        if self._rows and after == self._after and self._stamp == now:
            rows, self._rows = self._rows, []
            self.token = self._rows_token
            return rows
        self._rows = []
        rows = None
        ahead, self._next = self._next, None
        if ahead is not None:
            if ahead.after == after and ahead.stamp == now:
                rows = await ahead.result()
            ahead.cancel()
        if rows is None or self._kept.changes() != now:
            now = self._kept.changes()
            rows = await self._fetch(after)
        self._stamp = now
        self.token = getattr(rows, "token", None)
        if len(rows) >= self._page:  # more may follow: read them while these go out
            self._next = _Ahead(self._fetch, rows[-1][1], now)
            self._kept.keeping(self)
            self._kept.nursery.start_soon(self._next.run)
            await self._next.started.wait()  # its request sent before these go out
        return rows

    def keep(self, rows: list[Row], after: int) -> None:
        """``rows`` had no room in the kernel's buffer; they follow cookie ``after``."""
        self._rows, self._after = rows, after
        self._rows_token = self.token
        if rows:
            self._kept.keeping(self)

    def drop(self) -> None:
        """Forget what was kept (the directory is closed, or others need the room)."""
        self._rows = []
        if self._next is not None:
            self._next.cancel()
            self._next = None
        self._kept.forget(self)


class _Ahead:
    """A page read before it is asked for. Its failure is nobody's yet: ``result`` then
    answers None, and the page is read again when asked for, failing there if it must."""

    def __init__(self, fetch: Fetch, after: int, stamp: int) -> None:
        self.after = after
        self.stamp = stamp  # changes() when it was started
        self._fetch = fetch
        self._done = trio.Event()
        self._rows: list[Row] | None = None
        self._scope = trio.CancelScope()
        # set as it starts: it runs on to its first wait, having sent its request by then
        # (the RPC client writes at once when it can)
        self.started = trio.Event()

    async def run(self) -> None:
        self.started.set()
        with self._scope:
            try:
                self._rows = await self._fetch(self.after)
            except Exception as exc:
                log.debug("reading a directory ahead failed: %s", exc)
        self._done.set()

    async def result(self) -> list[Row] | None:
        await self._done.wait()
        return self._rows

    def cancel(self) -> None:
        self._scope.cancel()


class KeptListings:
    """The open directories keeping rows, oldest use first, at most ``limit`` of them;
    and what they all need: where to read ahead, and the mount's count of changes."""

    def __init__(
        self, nursery: trio.Nursery, changes: Callable[[], int], limit: int = KEPT_LISTINGS
    ) -> None:
        self.nursery = nursery
        self.changes = changes
        self.limit = limit
        self._order: OrderedDict[int, Listing] = OrderedDict()

    def keeping(self, listing: Listing) -> None:
        self._order[id(listing)] = listing
        self._order.move_to_end(id(listing))
        while len(self._order) > self.limit:
            _, oldest = self._order.popitem(last=False)
            oldest.drop()

    def forget(self, listing: Listing) -> None:
        self._order.pop(id(listing), None)

    def __len__(self) -> int:
        return len(self._order)
