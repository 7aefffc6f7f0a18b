"""Whole listings of directories, kept by the mount while nothing can have changed them.

The kernel does not keep a FUSE directory's listing (pyfuse3 cannot ask it to), so every
`ls` of a directory reaches the mount, and without this the meta role too: a page of 1,000
rows per request, read from SQLite. A listing read while the mount listens for
invalidations (fusefs/coherence.py) is watched by the meta role for this mount, entries
and every inode listed; so the mount may answer the next listing of that directory from
memory, for as long as nothing has happened that could change it.

Invariant: a kept listing is used only if, since the request for its first page was sent,
(1) this mount has sent no change of its own (``Operations._changes``: the author of a
change gets no invalidation for it), (2) no invalidation or reset has arrived
(``KernelCache.changes``), (3) the mount has listened under one session throughout, and
(4) its lease has more than ``MARGIN`` left. Any of those moving drops every kept listing
at once: coarse, and right, since a change anywhere is rare next to the listings a
`find`, `ls -R` or build tool reads. Memory: at most ``ROWS_MAX`` rows over all listings,
the least recently used listing dropped first.
"""

from __future__ import annotations

import bisect
import time
from collections import OrderedDict
from dataclasses import dataclass, field

from .coherence import Ask
from .listing import Page, Row

ROWS_MAX = 200_000  # about 40 MB of rows
MARGIN = 1.0  # seconds of lease a kept listing must have left to be used

Stamp = tuple[int, int, str | None]  # (own changes, invalidations received, session)


@dataclass
class _Kept:
    ask: Ask  # of its first page: the earliest, so the most careful
    stamp: Stamp
    rows: list[Row] = field(default_factory=list)
    cookies: list[int] = field(default_factory=list)
    complete: bool = False


class ListingCache:
    def __init__(self, lease: float) -> None:
        self.lease = lease
        self._kept: OrderedDict[int, _Kept] = OrderedDict()
        self._rows = 0

    def page(self, ino: int, after: int, limit: int, stamp: Stamp) -> Page | None:
        """The rows after cookie ``after``, at most ``limit``, from a kept listing that is
        still good; None when there is none (ask the meta role)."""
        kept = self._kept.get(ino)
        if kept is None or not kept.complete:
            return None
        if kept.stamp != stamp or kept.ask.sent + self.lease - MARGIN <= time.monotonic():
            self.clear()
            return None
        self._kept.move_to_end(ino)
        start = bisect.bisect_right(kept.cookies, after)
        page = Page(kept.rows[start : start + limit])
        page.token = kept.ask
        return page

    def fetched(
        self, ino: int, after: int, rows: list[Row], limit: int, ask: Ask, stamp: Stamp
    ) -> None:
        """A page the meta role answered (asked with ``ask``, when the mount's state was
        ``stamp``): the start or the continuation of a listing to keep."""
        if ask.session is None:
            return
        kept = self._kept.get(ino)
        if after == 0:
            self._drop(ino)
            kept = self._kept[ino] = _Kept(ask, stamp)
        elif (
            kept is None
            or kept.complete
            or kept.stamp != stamp
            or not kept.cookies
            or kept.cookies[-1] != after
        ):
            return  # not the next page of a listing being read from its start
        assert kept is not None
        kept.rows.extend(rows)
        kept.cookies.extend(row[1] for row in rows)
        self._rows += len(rows)
        if len(rows) < limit:
            kept.complete = True
        while self._rows > ROWS_MAX and self._kept:
            self._drop(next(iter(self._kept)))

    def names(self, ino: int) -> tuple[list[bytes], Ask] | None:
        """Every name of directory ``ino`` and the Ask of the listing's first page, if a
        whole listing of it is kept (dirnames.py learns them)."""
        kept = self._kept.get(ino)
        if kept is None or not kept.complete:
            return None
        return [row[0] for row in kept.rows], kept.ask

    def _drop(self, ino: int) -> None:
        kept = self._kept.pop(ino, None)
        if kept is not None:
            self._rows -= len(kept.rows)

    def clear(self) -> None:
        self._kept.clear()
        self._rows = 0

    def __len__(self) -> int:
        return len(self._kept)

    def rows(self) -> int:
        return self._rows
