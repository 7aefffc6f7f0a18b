"""Mount sessions and the inodes they hold open, so an unlinked file lives while open anywhere.

POSIX says an unlinked file stays readable until its last close. Within one mount the
mount itself knows; across mounts (two nodes sharing a volume) only the meta role can: each
mount opens a session, takes a hold on an inode when it first opens it, and drops the hold
on its last close. An orphan (nlink 0) is deleted only when nobody holds it.

Holds live in memory, not in SQLite, because taking one on every open must not cost a
disk sync. What that costs instead: a restarted meta role has forgotten them. So mounts
re-register their holds when a heartbeat finds their session unknown, and the orphan sweep
waits ``grace`` seconds after start-up before deleting anything. A session that stops
sending heartbeats (its mount crashed) expires and its holds go with it.

Sessions also hold *pending chunks*: chunks a mount has stored (or is storing) but not yet
committed to a file's chunk map. Garbage collection must never take those; they are
registered while the chunk is sent and dropped after the commit, and a mount whose
session was forgotten registers them again with its holds.
"""

from __future__ import annotations

import time
import uuid
from dataclasses import dataclass, field


@dataclass
class Session:
    id: str
    description: str
    last_seen: float
    holds: set[int] = field(default_factory=set)
    pending: set[str] = field(default_factory=set)


class Sessions:
    def __init__(self, timeout: float = 60.0, grace: float | None = None) -> None:
        self.timeout = timeout
        self.grace = timeout * 2 if grace is None else grace
        self.started = time.monotonic()
        self._sessions: dict[str, Session] = {}
        self._holders: dict[int, set[str]] = {}

    def open(self, description: str) -> str:
        session_id = uuid.uuid4().hex
        self._sessions[session_id] = Session(session_id, description, time.monotonic())
        return session_id

    def heartbeat(self, session_id: str) -> bool:
        """False when the session is unknown (expired, or the meta role restarted)."""
        session = self._sessions.get(session_id)
        if session is None:
            return False
        session.last_seen = time.monotonic()
        return True

    def _get(self, session_id: str) -> Session | None:
        session = self._sessions.get(session_id)
        if session is not None:
            session.last_seen = time.monotonic()
        return session

    def hold(self, session_id: str, ino: int) -> bool:
        session = self._get(session_id)
        if session is None:
            return False
        session.holds.add(ino)
        self._holders.setdefault(ino, set()).add(session_id)
        return True

    def release(self, session_id: str, ino: int) -> None:
        session = self._sessions.get(session_id)
        if session is not None:
            session.holds.discard(ino)
        holders = self._holders.get(ino)
        if holders is not None:
            holders.discard(session_id)
            if not holders:
                del self._holders[ino]

    def close(self, session_id: str) -> set[int]:
        """End a session; returns the inodes it held."""
        session = self._sessions.pop(session_id, None)
        if session is None:
            return set()
        for ino in session.holds:
            self.release(session_id, ino)
        return session.holds

    def expire(self) -> set[int]:
        """End sessions silent for longer than the timeout; returns the inodes they held."""
        cutoff = time.monotonic() - self.timeout
        released: set[int] = set()
        for session in [s for s in self._sessions.values() if s.last_seen < cutoff]:
            released |= self.close(session.id)
        return released

    def set_pending(self, session_id: str, add: list[str], drop: list[str]) -> bool:
        """Register chunks as pending for the session, and drop others; False if unknown."""
        session = self._get(session_id)
        if session is None:
            return False
        session.pending.difference_update(drop)
        session.pending.update(add)
        return True

    def pending_chunks(self) -> set[str]:
        """Every chunk some live mount has stored but not committed yet."""
        out: set[str] = set()
        for session in self._sessions.values():
            out |= session.pending
        return out

    def is_held(self, ino: int) -> bool:
        return ino in self._holders

    def sweep_allowed(self) -> bool:
        """After a restart, give mounts time to re-register their holds first."""
        return time.monotonic() - self.started > self.grace

    def count(self) -> int:
        return len(self._sessions)
