"""What each mount's kernel caches, and the invalidations it is owed when another mount
changes it (the coherent cache's meta-role half; fusefs/coherence.py is the mount's).

A mount that *listens* (``session.listen``: a long poll the meta role answers with the
events queued for it, or empty after at most ``wait`` seconds) may let its kernel cache
what the meta role tells it for up to its *lease* (``lease`` seconds, stated with each
poll). Every answer the meta role gives such a mount *watches* the inodes it names for
that session until the lease is over (plus ``SLACK``: the mount counts its kernel's
timeouts from before it sent the request, so they always end first). A change through
any other session then queues an event for each session watching what it touched:

- ``["i", ino, data]``: the inode's attributes changed (``data``: its contents too);
- ``["e", parent, name]``: the entry ``name`` of directory ``parent`` appeared, went, or
  now names another inode.

A change of a file's *contents* (a commit, a truncate) is not answered to its author until
every mount owed an invalidation for it has acknowledged it (``delivered``): a mount
acknowledges with its next poll, after it stopped trusting what it knew (before its kernel
is told: that may wait on requests in flight), so its next open asks the meta role, and a
file closed on one node is seen whole by the next open on any other (close-to-open).
A mount that does not acknowledge within ``ACK_WAIT`` has stopped trusting anyway: its
poll went unanswered for longer than it allows (fusefs/coherence.py).

One key per inode serves both: a directory's watchers hear of its attributes and of its
entries (a lookup in a directory, positive or negative, and a listing of it, watch it).
Hearing more than one needs costs the mount an invalidation of something it may not have
cached; hearing less would let a kernel serve stale metadata, which must never happen.

A read answered from the database and a change committed by another session race: the
read may take its snapshot before the change while the watch is registered after the
change's events went out. So every change is also kept in a short log, numbered; a read
notes the number before it reads (``mark``) and, when it registers its watches
(``watch``), is owed the logged changes since that touch what it watched. A log too
short to tell (more than ``LOG_SIZE`` changes during one read) resets the session.

A session whose queue overflows (``QUEUE_MAX`` events), or that has not polled for
``SILENT_SECONDS``, is *reset*: its watches and events are dropped, and its next poll
answers ``reset``, telling the mount to drop everything its kernel caches from this
meta role. A meta role that restarted has no watches at all: the mount's poll fails,
which is a reset too. Memory: one dict entry per (watched inode, session) of the last
lease, at most ``WATCHES_MAX`` per session (past it, that session is reset).
"""

from __future__ import annotations

import time
from collections import deque
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

import trio

Event = list[Any]  # ["i", ino, data], ["e", parent, name] or ["r", directory, grant]

SLACK = 2.0  # seconds a watch outlives the lease the mount asked for
LEASE_MAX = 300.0  # the longest lease a mount may ask for
WAIT_MAX = 30.0  # the longest a poll may wait for events
SILENT_SECONDS = 30.0  # a listener that has not polled for this long is reset
QUEUE_MAX = 10_000  # events queued for one session before it is reset instead
WATCHES_MAX = 500_000  # watches of one session before it is reset instead
LOG_SIZE = 4096  # changes remembered for reads that raced them
ACK_WAIT = 3.5  # longest a content change waits for the mounts it invalidates: past
# a mount's own POLL_WAIT + POLL_MARGIN (3 s), it has reset itself


@dataclass
class Listener:
    """One listening session: its lease, its watches, the events it has not taken."""

    lease: float
    polled: float  # monotonic time of its last poll
    events: list[Event] = field(default_factory=list)
    reset: bool = False  # its next poll answers reset (and no events)
    arrived: trio.Event = field(default_factory=trio.Event)
    queued: int = 0  # events ever queued for it (reset ones included)
    acked: int = 0  # ... of which it said it has dealt with
    late: bool = False  # missed an acknowledgement: not waited for again
    # until it polls (see ``delivered``)
    ack_arrived: trio.Event = field(default_factory=trio.Event)
    # watched inode -> until when (monotonic); expiry order kept in ``expiring``
    watching: dict[int, float] = field(default_factory=dict)
    expiring: deque[tuple[float, int]] = field(default_factory=deque)


class Watches:
    def __init__(self) -> None:
        self._listeners: dict[str, Listener] = {}
        self._watchers: dict[int, set[str]] = {}  # inode -> sessions watching it
        self._log: deque[tuple[int, str | None, list[Event]]] = deque(maxlen=LOG_SIZE)
        self._seq = 0  # changes so far (the number of the newest in the log)

    # -- listening ------------------------------------------------------------------------

    def listen(self, session: str, lease: float, ack: int = 0) -> Listener:
        """The session polls (it is known and live: the caller checked), having dealt with
        the first ``ack`` events ever queued for it. A session that was not listening
        starts with a reset: whatever its kernel caches from before may have changed
        unheard."""
        now = time.monotonic()
        listener = self._listeners.get(session)
        if listener is None:
            listener = self._listeners[session] = Listener(lease, now, reset=True)
        listener.lease = max(0.0, min(float(lease), LEASE_MAX))
        listener.polled = now
        listener.late = False
        if listener.acked < ack <= listener.queued:
            listener.acked = ack
            listener.ack_arrived.set()
            listener.ack_arrived = trio.Event()
        return listener

    async def take(self, session: str, lease: float, wait: float, ack: int = 0) -> dict[str, Any]:
        """The events queued for ``session`` (waiting up to ``wait`` seconds for the first),
        or a reset; ``upto``: what to acknowledge with the next poll once dealt with."""
        listener = self.listen(session, lease, ack)
        self._expire(session, listener)
        if not listener.events and not listener.reset:
            with trio.move_on_after(max(0.0, min(wait, WAIT_MAX))):
                await listener.arrived.wait()
        if self._listeners.get(session) is not listener:  # ended, or reset as silent
            return {"events": [], "reset": True, "upto": listener.queued}
        listener.polled = time.monotonic()
        listener.arrived = trio.Event()
        if listener.reset:
            listener.reset = False
            listener.events = []
            return {"events": [], "reset": True, "upto": listener.queued}
        events, listener.events = listener.events, []
        return {"events": events, "reset": False, "upto": listener.queued}

    def forget(self, session: str) -> None:
        """The session ended: nothing more to watch or tell."""
        listener = self._listeners.pop(session, None)
        if listener is not None:
            self._unwatch_all(session, listener)
            listener.arrived.set()  # a poll waiting returns (its session is gone)
            listener.ack_arrived.set()  # and nobody waits for it

    def reset(self, session: str) -> None:
        """Drop what ``session`` watches and what it was owed; its next poll says reset."""
        listener = self._listeners.get(session)
        if listener is None:
            return
        self._unwatch_all(session, listener)
        listener.events = []
        listener.reset = True
        listener.arrived.set()

    def reset_silent(self) -> list[str]:
        """Reset listeners that stopped polling (their mount is gone or cut off: it resets
        on its side when its poll fails; this bounds what is kept for it)."""
        cutoff = time.monotonic() - SILENT_SECONDS
        silent = [s for s, lst in self._listeners.items() if lst.polled < cutoff]
        for session in silent:
            listener = self._listeners.pop(session)
            self._unwatch_all(session, listener)
            listener.ack_arrived.set()
        return silent

    def listening(self, session: str | None) -> bool:
        return session is not None and session in self._listeners

    def watching(self, ino: int) -> list[str]:
        """The sessions whose watch of ``ino`` runs now (their kernels may cache it)."""
        now = time.monotonic()
        return [
            s
            for s in self._watchers.get(ino, ())
            if self._listeners[s].watching.get(ino, 0.0) > now
        ]

    def queued(self, session: str) -> int:
        """Events ever queued for ``session`` (what its poll's ``upto`` counts)."""
        listener = self._listeners.get(session)
        return 0 if listener is None else listener.queued

    def tell(self, session: str, events: list[Event]) -> bool:
        """Queue ``events`` for ``session`` alone (a recall of a delegated directory:
        delegations.py); False when it does not listen."""
        listener = self._listeners.get(session)
        if listener is None:
            return False
        self._queue(session, listener, events)
        return True

    # -- watching -------------------------------------------------------------------------

    def mark(self) -> int:
        """Before a read whose answer will be watched: see ``watch``."""
        return self._seq

    def watch(self, session: str | None, inos: Iterable[int], since: int) -> None:
        """``session`` was told about ``inos`` by a read that started at ``mark() ==
        since``: watch them for its lease, and owe it the changes to them logged since."""
        listener = self._listeners.get(session) if session is not None else None
        if listener is None:
            return
        assert session is not None
        self._expire(session, listener)
        until = time.monotonic() + listener.lease + SLACK
        watched = []
        for ino in inos:
            if type(ino) is not int:
                continue
            watched.append(ino)
            if listener.watching.get(ino) is None:
                self._watchers.setdefault(ino, set()).add(session)
            listener.watching[ino] = until
            listener.expiring.append((until, ino))
        if len(listener.watching) > WATCHES_MAX:
            self.reset(session)
            return
        if since == self._seq:
            return
        if not self._log or self._log[0][0] > since + 1:
            self.reset(session)  # changes ran past the log: cannot tell which
            return
        keys = set(watched)
        # The log is in order: walk only its tail after ``since`` (usually just the caller's
        # own change), not all LOG_SIZE entries on every change that watches its answer.
        newer = []
        for logged in reversed(self._log):
            if logged[0] <= since:
                break
            newer.append(logged)
        for _seq, author, events in reversed(newer):
            if author != session:
                self._queue(session, listener, [e for e in events if _key(e) in keys])

    def _expire(self, session: str, listener: Listener) -> None:
        now = time.monotonic()
        expiring = listener.expiring
        while expiring and expiring[0][0] <= now:
            until, ino = expiring.popleft()
            if listener.watching.get(ino) == until:  # not renewed since
                del listener.watching[ino]
                self._unwatch(session, ino)

    def _unwatch(self, session: str, ino: int) -> None:
        sessions = self._watchers.get(ino)
        if sessions is not None:
            sessions.discard(session)
            if not sessions:
                del self._watchers[ino]

    def _unwatch_all(self, session: str, listener: Listener) -> None:
        for ino in listener.watching:
            self._unwatch(session, ino)
        listener.watching.clear()
        listener.expiring.clear()

    # -- changes --------------------------------------------------------------------------

    def changed(self, author: str | None, events: list[Event]) -> dict[str, int]:
        """A change by ``author`` (a session, or None) was committed: queue ``events`` for
        every other session watching what they touch, and log them for reads in flight.
        Returns, per session told, the count its acknowledgement must reach (see
        ``delivered``)."""
        self._seq += 1
        self._log.append((self._seq, author, events))
        if not self._watchers:
            return {}
        now = time.monotonic()
        owed: dict[str, list[Event]] = {}
        for event in events:
            for session in self._watchers.get(_key(event), ()):
                if session == author:
                    continue
                listener = self._listeners[session]
                if listener.watching.get(_key(event), 0.0) > now:
                    owed.setdefault(session, []).append(event)
        told = {}
        for session, mine in owed.items():
            listener = self._listeners[session]
            self._queue(session, listener, mine)
            if not listener.late:
                told[session] = listener.queued
        return told

    async def delivered(self, told: dict[str, int], timeout: float = ACK_WAIT) -> list[str]:
        """Wait until every session in ``told`` has acknowledged its events (or ended, or
        was reset and has acknowledged that), at most ``timeout`` seconds; returns the
        sessions that did not in time."""
        with trio.move_on_after(timeout):
            for session, upto in told.items():
                while True:
                    listener = self._listeners.get(session)
                    if listener is None or listener.acked >= upto:
                        break
                    await listener.ack_arrived.wait()
        missed = [
            s
            for s, upto in told.items()
            if s in self._listeners and self._listeners[s].acked < upto
        ]
        for session in missed:  # stalled: it trusts nothing until it has polled again
            self._listeners[session].late = True  # (fusefs/coherence.py), so no more waits
        return missed

    def _queue(self, session: str, listener: Listener, events: list[Event]) -> None:
        if not events:
            return
        listener.queued += len(events)  # a reset session acknowledges the reset instead
        if listener.reset:
            return
        listener.events.extend(events)
        if len(listener.events) > QUEUE_MAX:
            self.reset(session)
            return
        listener.arrived.set()

    def counts(self) -> dict[str, int]:
        """Listeners, and watches over all of them (tests use it; not yet exported as a
        metric: a gauge for it is worth adding with the console work, issue 27)."""
        return {
            "listeners": len(self._listeners),
            "watches": sum(len(lst.watching) for lst in self._listeners.values()),
        }


def _key(event: Event) -> int:
    """The inode whose watchers hear of ``event``: the inode, or the entry's directory."""
    return int(event[1])


def inode(ino: int, data: bool = False) -> Event:
    return ["i", ino, data]


def entry(parent: int, name: bytes) -> Event:
    return ["e", parent, name]
