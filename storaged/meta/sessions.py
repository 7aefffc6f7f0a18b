"""Mount sessions and the inodes they hold open, so an unlinked file lives while open anywhere.

POSIX says an unlinked file stays readable until its last close. Within one mount the
mount itself knows; across mounts (two nodes sharing a volume) only the meta role can: each
mount opens a session, takes a hold on an inode when it first opens it, and drops the hold
on its last close. An orphan (nlink 0) is deleted only when nobody holds it.

Holds live in memory, not in SQLite, because taking one on every open must not cost a
disk sync. What that costs instead: a restarted meta role has forgotten them. The sessions
themselves are recorded in the database (one commit per mount start, one per clean stop),
so a restarted meta role knows *which* mounts may hold files open, only not *what* they
hold. Those sessions come back as *restored*: their holds and pending chunks unknown, they
refuse new holds and heartbeats (so the mount registers again, under a new session, with
everything it holds, then closes the old one). While any restored session remains, the
meta role deletes nothing: an unlinked file stays (the orphan sweep takes it later), and
garbage collection waits. A restored session whose mount never comes back expires after
the session timeout, like any silent one; a meta role with no restored session (a new
cluster, or every mount stopped cleanly) deletes at once.

Sessions also hold *pending chunks*: chunks a mount has stored (or is storing) but not yet
committed to a file's chunk map. Garbage collection must never take those; they are
registered while the chunk is sent and dropped after the commit, and a mount whose
session was forgotten registers them again with its holds.
"""

from __future__ import annotations

import sqlite3
import time
import uuid
from collections.abc import Iterable
from dataclasses import dataclass, field


@dataclass
class Session:
    id: str
    description: str
    last_seen: float
    holds: set[int] = field(default_factory=set)
    pending: set[str] = field(default_factory=set)
    restored: bool = False  # from the database after a restart: holds and pending unknown


class Sessions:
    def __init__(self, timeout: float = 60.0) -> None:
        self.timeout = timeout
        self._sessions: dict[str, Session] = {}
        self._holders: dict[int, set[str]] = {}
        self._restored = 0
        # orphans kept since they lost their last name because some mount held them (until
        # a restart: the orphan sweep finds older ones); see held_orphans
        self.kept_orphans: set[int] = set()

    def open(self, description: str) -> str:
        session_id = uuid.uuid4().hex
        self._sessions[session_id] = Session(session_id, description, time.monotonic())
        return session_id

    def restore(self, recorded: Iterable[tuple[str, str]]) -> int:
        """Sessions (id, description) that were open when the meta role last stopped."""
        now = time.monotonic()
        for session_id, description in recorded:
            if session_id not in self._sessions:
                self._sessions[session_id] = Session(session_id, description, now, restored=True)
                self._restored += 1
        return self._restored

    def heartbeat(self, session_id: str) -> bool:
        """False when the session is unknown (expired, or the meta role restarted)."""
        session = self._live(session_id)
        if session is None:
            return False
        session.last_seen = time.monotonic()
        return True

    def _live(self, session_id: str) -> Session | None:
        """The session if it is known with everything it holds (not restored)."""
        session = self._sessions.get(session_id)
        return None if session is None or session.restored else session

    def _get(self, session_id: str) -> Session | None:
        session = self._live(session_id)
        if session is not None:
            session.last_seen = time.monotonic()
        return session

    def is_live(self, session_id: str) -> bool:
        return self._live(session_id) is not None

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
        if session.restored:
            self._restored -= 1
        for ino in session.holds:
            self.release(session_id, ino)
        return session.holds

    def silent(self) -> list[str]:
        """Sessions silent for longer than the timeout (restored ones count from the start)."""
        cutoff = time.monotonic() - self.timeout
        return [s.id for s in self._sessions.values() if s.last_seen < cutoff]

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

    def held_orphans(self, session_id: str) -> list[int]:
        """The kept orphans this session holds: its kernel may only be caching them, and is
        asked to let go of those it does not use (see fusefs/holds.py)."""
        session = self._sessions.get(session_id)
        if session is None:
            return []
        return [ino for ino in self.kept_orphans if ino in session.holds]

    def deletions_allowed(self) -> bool:
        """False while a session from before a restart has not registered again: what it
        holds open, and which chunks it has pending, are unknown."""
        return self._restored == 0

    def restored_count(self) -> int:
        return self._restored

    def count(self) -> int:
        return len(self._sessions)


# -- the record of open sessions in the database (table mount_sessions, see schema.py) --------


def recorded(conn: sqlite3.Connection) -> list[tuple[str, str]]:
    return [
        (str(r[0]), str(r[1])) for r in conn.execute("SELECT id, description FROM mount_sessions")
    ]


def record(conn: sqlite3.Connection, session_id: str, description: str) -> None:
    conn.execute(
        "INSERT OR REPLACE INTO mount_sessions VALUES (?, ?, ?)",
        (session_id, description, time.time_ns()),
    )


def unrecord(conn: sqlite3.Connection, session_ids: list[str]) -> None:
    conn.executemany("DELETE FROM mount_sessions WHERE id = ?", [(s,) for s in session_ids])
