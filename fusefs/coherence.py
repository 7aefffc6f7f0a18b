"""The kernel's caches of this mount kept coherent with the meta role, so they can be long.

Without this the kernel may keep what the mount tells it (entries, attributes) for the
attribute timeout, one second, and then asks again: every `stat` of a file more than a
second old, every path walk, reaches Python and the meta role. With it, the mount *listens*
(``session.listen``, a long poll) and the meta role watches, for this mount's session,
what it tells the mount and sends an invalidation when another mount changes it (see
storaged/meta/watches.py). The kernel may then keep entries, attributes and negative
entries for the whole *lease* (``cache_lease`` seconds, 30 by default).

Invariants (what makes a long timeout safe):

1. A long timeout is handed out only for an answer to a request sent with the session
   while this mount was listening under that session (``Ask.session``), so the meta role
   watched the answer for it.
2. The kernel's timeout ends by ``sent + lease`` (``sent``: just before the request left),
   and the meta role's watch ends at ``answered + lease + SLACK``, later: the kernel never
   keeps an answer the meta role has stopped watching.
3. An answer during whose request an invalidation (or a reset) arrived gets timeout 0: the
   invalidation may be about it and may have reached the kernel before the answer.
4. When the stream breaks — a poll fails, is refused, is not answered within ``POLL_WAIT
   + POLL_MARGIN``, or answers ``reset`` — the mount stops listening (the fallback
   timeouts apply) and tells its kernel to drop everything it may keep with a long
   timeout: the attributes of every inode the kernel references, and every entry,
   positive or negative, handed out with a long timeout (``KernelCache.entries``, which
   is why those are tracked).
5. The mount's own answers from memory (an open, an opendir, a listing: operations.py
   ``_known``, dircache.py) are used only while nothing has arrived, nothing was sent by
   this mount, and the lease has time left; an invalidation drops them before it is
   acknowledged, and a content change elsewhere is answered to its author only after that
   acknowledgement (storaged/meta/watches.py): so an open after a close elsewhere always
   asks the meta role (close-to-open, exactly as before).

What it bounds: a change through another mount reaches this kernel's caches as soon as
the invalidation arrives (a poll answer: milliseconds). If the stream stalls without
failing (a network cut), at most ``POLL_WAIT + POLL_MARGIN`` (3 s) pass before the mount
drops everything. Only if this mount's own process stops (SIGSTOP, a hang) while its
kernel keeps serving can a cached answer outlive a change elsewhere, by at most the lease.
The kernel is told in a worker thread, by a task of its own, in order: ``invalidate_entry``
waits for requests in flight on the same directory, which need the event loop to be
answered, and the polls (which carry the acknowledgements) must not wait with it.
"""

from __future__ import annotations

import errno
import logging
import time
from dataclasses import dataclass

import pyfuse3
import trio

log = logging.getLogger("fusefs")

POLL_WAIT = 1.0  # the meta role answers a poll at least this often
POLL_MARGIN = 2.0  # ... and a poll unanswered for POLL_WAIT + this means the stream broke
RETRY_SECONDS = 0.5  # between polls while the meta role cannot be reached
ENTRIES_MAX = 1_000_000  # entries tracked for a reset; past it, entries get short timeouts


@dataclass(frozen=True)
class Ask:
    """Taken just before a request to the meta role: what its answer may be trusted for."""

    sent: float  # monotonic
    changes: int  # KernelCache.changes then
    session: str | None  # the session to send, when listening (else None)


class KernelCache:
    """What this mount lets its kernel cache, and for how long."""

    def __init__(self, lease: float, entry_timeout: float, attr_timeout: float) -> None:
        self.lease = lease  # 0: never listen (the fallback timeouts only)
        self.fallback = (entry_timeout, attr_timeout)
        self.session: str | None = None  # the session whose stream is up, if any
        self.changes = 0  # invalidations and resets received so far
        # (kernel parent, name) -> until when the kernel may keep it: every entry handed
        # out with a long timeout, positive or negative, to be taken back on a reset
        self.entries: dict[tuple[int, bytes], float] = {}
        self._prune_at = 1024
        self.handed_out = False  # anything with a long timeout since the reset
        self.heard = 0.0  # monotonic time of the last poll answered
        # the meta role's count of events queued for ``session`` that this mount has dealt
        # with (a poll's ``upto``, once its events were handled): a grant of a directory is
        # used only past the events queued before it (fusefs/delegation.py)
        self.handled = 0

    def ask(self, session: str) -> Ask:
        """Before a request made for mount session ``session``."""
        listening = self.session is not None and self.session == session
        return Ask(time.monotonic(), self.changes, session if listening else None)

    def timeouts(self, ask: Ask | None) -> tuple[float, float]:
        """(entry, attribute) timeouts for an answer to ``ask``'s request."""
        if ask is None or ask.session is None or ask.session != self.session:
            return self.fallback
        left = self.left(ask)
        if left > 0:
            self.handed_out = True
        return left, left

    def left(self, ask: Ask) -> float:
        """How much longer the answer to ``ask``'s request may be believed without asking
        again: 0 unless it was watched, nothing has arrived since, and a poll was answered
        lately (a mount that stalled — CPU starved, stopped — may hold answers it has not
        dealt with yet: it trusts nothing until it has)."""
        if ask.session is None or ask.session != self.session or ask.changes != self.changes:
            return 0.0
        now = time.monotonic()
        if now - self.heard > POLL_WAIT + POLL_MARGIN:
            return 0.0
        return max(0.0, ask.sent + self.lease - now)

    def entry(self, ask: Ask | None, parent: int, name: bytes) -> tuple[float, float]:
        """As ``timeouts``, for an answer the kernel keeps as entry ``name`` of
        ``parent`` (kernel inode numbers): tracked, if long, for a reset."""
        entry_timeout, attr_timeout = self.timeouts(ask)
        if entry_timeout <= self.fallback[0]:
            return entry_timeout, attr_timeout
        if len(self.entries) >= self._prune_at:
            self._prune()
            if len(self.entries) >= ENTRIES_MAX:
                return self.fallback[0], min(attr_timeout, self.fallback[1])
        self.entries[(parent, name)] = time.monotonic() + entry_timeout
        return entry_timeout, attr_timeout

    def _prune(self) -> None:
        now = time.monotonic()
        self.entries = {k: until for k, until in self.entries.items() if until > now}
        self._prune_at = max(1024, 2 * len(self.entries))

    def stop(self) -> list[tuple[int, bytes]]:
        """The stream broke: nothing more is handed out for long, and answers on their way
        are not trusted; returns the entries to take back (see ``take_back``)."""
        self.session = None
        self.changes += 1
        now = time.monotonic()
        entries = [k for k, until in self.entries.items() if until > now]
        self.entries = {}
        self._prune_at = 1024
        return entries

    def received(self, count: int) -> None:
        self.changes += count


# What the worker thread tells the kernel: ("inode", ino, attr_only) or ("entry", parent,
# name), kernel inode numbers.
KernelCall = tuple[str, int, object]


def tell_kernel(calls: list[KernelCall]) -> None:
    """Run in a worker thread (see the module's docstring). An inode or entry the kernel
    does not have is no error: it may have dropped it on its own."""
    for kind, ino, arg in calls:
        try:
            if kind == "inode":
                pyfuse3.invalidate_inode(ino, attr_only=bool(arg))
            else:
                assert isinstance(arg, bytes)
                pyfuse3.invalidate_entry(ino, arg)
        except OSError as exc:
            if exc.errno not in (errno.ENOENT, errno.ENOTDIR, errno.EBADF):
                log.warning("could not invalidate %s %d in the kernel: %s", kind, ino, exc)


async def run_in_thread(calls: list[KernelCall]) -> None:
    if calls:
        await trio.to_thread.run_sync(tell_kernel, calls)
