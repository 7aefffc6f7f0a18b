"""Directories delegated to one mount: the meta role's half of delegated directory
operations (fusefs/delegation.py is the mount's; docs/delegations.md the design).

While one mount is the only user of a directory D, nobody else can observe the order or
timing of changes in it, so that mount may answer creates and unlinks in D itself and
tell the meta role afterwards, in batches (``fs.apply``), one transaction per batch. This
module keeps who holds what; storaged/meta/service.py grants, applies and recalls.

Invariants (the meta role's side):

1. One holder per directory. A grant is made only to a listening session, for a live
   directory that no other session watches (watches.py: nobody else's kernel may cache
   a name or attribute of it), that no request of another session (or of none) naming
   it is in progress for (it may be waiting for the database: its change would come
   after the grant, unknown to the holder), and that was not recalled within
   ``COOLDOWN``. Requests of the holder's own naming it that are in progress when it
   asks are waited for (``pending``; at most ``OWN_WAIT``) before the grant is made: one
   that started before another session's change is owed that change's event only when
   it ends (watches.py), and the grant's ``upto`` must count it. (Refusing instead made
   a mount creating files back to back almost never get a grant: its next create is
   nearly always in flight when it asks.)
2. Every request of another session (or of no session: the CLI, the CSI driver) that
   reads or changes D's names or attributes *recalls* D first: the holder is sent
   ``["r", D, grant]`` with its next poll, and the request waits until the holder has
   applied its last batch and given D back, at most ``RECALL_WAIT``; past that the grant
   is *revoked* (the holder stopped trusting its caches by then: coherence.py) and a
   batch for it is refused. Either way the request is answered from the database after:
   the holder's applied changes first, then it — a serial order.
3. A grant carries a range of inode numbers reserved for it on disk before it is
   answered (namespace.reserve_inodes, a DURABLE call): no number is handed out twice,
   whatever restarts. A grant made at a mkdir (the new directory, which nobody else can
   know yet, delegated to the mount that made it) takes its numbers from the session's
   *pool*, reserved on disk the same way, ``POOL`` at a time: the mkdir that refills it
   waits for the disk, the next ones do not. A holder running low asks for an
   *extension* (``dir.extend``): more numbers from the pool, added to the grant's
   ``ranges``; a batch may create with any of them.
4. Grants are soft state: a meta role that restarts has none (grant ids carry the
   meta role's life). A holder whose batch was not applied before the restart sends it
   again as a *reclaim* under its new session: applied if every operation still checks
   out and nobody holds the directory now (service.fs_apply), else refused whole.
"""

from __future__ import annotations

import secrets
import time
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

import trio

RECALL_WAIT = 3.5  # a recall waits this long for the holder (past coherence.py's 3 s)
COOLDOWN = 10.0  # a directory recalled is not delegated again for this long
OWN_WAIT = 1.0  # the longest a grant waits for the asker's own requests in progress
RANGE = 1024  # inode numbers a grant starts with (dir.delegate's, and a mkdir's from the
# session's pool); a holder that has used half of its numbers asks for more (``extend``)
# while it goes on answering, so a directory of any size stays delegated, and a grant
# given back leaves at most a few thousand numbers unused (a gap). Grants of 65,536 each
# made st_ino pass 2**32 after some 65,000 mkdirs: 32-bit programs then fail stat.
EXTEND_MAX = 16384  # an extension doubles the grant's last range, up to this
POOL = 1 << 17  # numbers reserved on disk at once for a session's grants and extensions


@dataclass(eq=False)
class Naming:
    """A request of ``session`` (None: of no session) naming an inode, not yet answered."""

    session: str | None
    answered: trio.Event = field(default_factory=trio.Event)


@dataclass
class Grant:
    """Directory ``directory`` delegated to ``session``, with inode numbers first..last
    and those of its extensions (``ranges``)."""

    id: str
    session: str
    directory: int
    first: int
    last: int
    released: trio.Event = field(default_factory=trio.Event)
    recalled: bool = False
    ranges: list[tuple[int, int]] = field(default_factory=list)

    def __post_init__(self) -> None:
        if not self.ranges:
            self.ranges.append((self.first, self.last))

    def owns(self, ino: int) -> bool:
        """Is ``ino`` one of the numbers given with this grant or its extensions?"""
        return any(first <= ino <= last for first, last in self.ranges)

    def next_extension(self) -> int:
        """How many numbers the grant's next extension carries."""
        first, last = self.ranges[-1]
        return min(EXTEND_MAX, 2 * (last - first + 1))


class Delegations:
    def __init__(self) -> None:
        self.life = secrets.token_hex(6)  # grant ids of this process's life only
        self._count = 0
        self._grants: dict[int, Grant] = {}  # directory -> its grant
        self._cooling: dict[int, float] = {}  # directory -> no new grant until (monotonic)
        # inode -> the requests naming it, not yet answered
        self._named: dict[int, list[Naming]] = {}
        # session -> [next, last]: numbers reserved on disk for its grants at mkdir
        self._pools: dict[str, list[int]] = {}

    def __len__(self) -> int:
        return len(self._grants)

    def refusal(self, session: str, directory: int, watchers: Iterable[str]) -> str:
        """Why ``directory`` may not be granted to ``session`` now ('' when it may)."""
        held = self._grants.get(directory)
        if held is not None:
            return "held" if held.session != session else "held by you"
        if any(s != session for s in watchers):
            return "watched by another mount"
        if any(n.session != session for n in self._named.get(directory, ())):
            return "named by a request of another mount in progress"
        until = self._cooling.get(directory)
        if until is not None:
            if until > time.monotonic():
                return "recalled lately"
            del self._cooling[directory]
        return ""

    def grant(self, session: str, directory: int, first: int, last: int) -> Grant:
        self._count += 1
        grant = Grant(f"{self.life}:{self._count}", session, directory, first, last)
        self._grants[directory] = grant
        return grant

    def find(self, session: str, directory: int, grant_id: str) -> Grant | None:
        grant = self._grants.get(directory)
        if grant is None or grant.session != session or grant.id != grant_id:
            return None
        return grant

    def from_before(self, grant_id: Any) -> bool:
        """Is ``grant_id`` a grant of an earlier life of the meta role (a restart since)?"""
        return isinstance(grant_id, str) and grant_id.partition(":")[0] != self.life

    def end(self, grant: Grant) -> None:
        """The holder gave ``grant`` back, or it was revoked: nothing is answered from it."""
        if self._grants.get(grant.directory) is grant:
            del self._grants[grant.directory]
        if grant.recalled:
            self._cooling[grant.directory] = time.monotonic() + COOLDOWN
        grant.released.set()

    def pool_short(self, session: str, count: int = RANGE) -> bool:
        """Has ``session`` fewer than ``count`` numbers in its pool?"""
        pool = self._pools.get(session)
        return pool is None or pool[1] - pool[0] + 1 < count

    def fill_pool(self, session: str, first: int, last: int) -> None:
        """Numbers ``first..last``, reserved on disk, are ``session``'s to grant at mkdir
        and to extend its grants with (what was left of its pool before is a gap)."""
        self._pools[session] = [first, last]

    def from_pool(self, session: str, count: int = RANGE) -> tuple[int, int] | None:
        """``count`` numbers of ``session``'s pool (None when it is short)."""
        if self.pool_short(session, count):
            return None
        pool = self._pools[session]
        first = pool[0]
        pool[0] += count
        return first, first + count - 1

    def drop_pool(self, session: str) -> None:
        self._pools.pop(session, None)

    def mark(self, ino: int, session: str | None) -> Naming:
        """A request of ``session`` naming ``ino`` is in progress (see ``refusal``)."""
        naming = Naming(session)
        self._named.setdefault(ino, []).append(naming)
        return naming

    def unmark(self, ino: int, naming: Naming) -> None:
        """The request ``naming`` stands for is answered."""
        namings = self._named.get(ino)
        if namings is not None:
            namings.remove(naming)
            if not namings:
                del self._named[ino]
        naming.answered.set()

    def pending(self, session: str, directory: int) -> list[trio.Event]:
        """The requests of ``session`` naming ``directory`` in progress now: a grant to it
        waits until each is answered (invariant 1)."""
        return [n.answered for n in self._named.get(directory, ()) if n.session == session]

    def others(self, session: str | None, inos: Iterable[int]) -> list[Grant]:
        """Grants of these inodes held by a session other than ``session``."""
        if not self._grants:
            return []
        found = []
        for ino in inos:
            grant = self._grants.get(ino)
            if grant is not None and grant.session != session:
                found.append(grant)
        return found

    def of_session(self, session: str) -> list[Grant]:
        return [g for g in self._grants.values() if g.session == session]

    def every(self) -> list[Grant]:
        return list(self._grants.values())
