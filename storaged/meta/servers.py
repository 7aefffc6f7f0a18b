"""The cluster map: chunk servers, what they report in heartbeats, and whether they are up."""

from __future__ import annotations

import errno
import sqlite3
from typing import Any

from ..rpc.errors import FsError
from .namespace import now_ns

_COLUMNS = "id, address, zone, capacity, used, free, chunks, last_seen_ns, state, draining"


def heartbeat(conn: sqlite3.Connection, server_id: str, address: str, zone: str,
              usage: dict[str, int]) -> bool:
    """Record a heartbeat; True if the server was unknown or down until now."""
    row = conn.execute("SELECT state FROM servers WHERE id=?", (server_id,)).fetchone()
    conn.execute(  # an upsert, so the administrator's 'draining' survives heartbeats
        "INSERT INTO servers (id, address, zone, capacity, used, free, chunks, last_seen_ns, "
        "state) VALUES (?,?,?,?,?,?,?,?, 'up') ON CONFLICT(id) DO UPDATE SET "
        "address=excluded.address, zone=excluded.zone, capacity=excluded.capacity, "
        "used=excluded.used, free=excluded.free, chunks=excluded.chunks, "
        "last_seen_ns=excluded.last_seen_ns, state='up'",
        (server_id, address, zone, int(usage.get("capacity", 0)), int(usage.get("used", 0)),
         int(usage.get("free", 0)), int(usage.get("chunks", 0)), now_ns()))
    return row is None or row[0] != "up"


def mark_silent_down(conn: sqlite3.Connection, timeout_ns: int) -> list[str]:
    """Servers whose last heartbeat is older than the timeout become down; returns their ids."""
    cutoff = now_ns() - timeout_ns
    ids = [r[0] for r in conn.execute(
        "SELECT id FROM servers WHERE state='up' AND last_seen_ns < ?", (cutoff,))]
    conn.executemany("UPDATE servers SET state='down' WHERE id=?", [(i,) for i in ids])
    return ids


def list_all(conn: sqlite3.Connection) -> list[dict[str, Any]]:
    keys = [c.strip() for c in _COLUMNS.split(",")]
    rows = [dict(zip(keys, r)) for r in conn.execute(f"SELECT {_COLUMNS} FROM servers ORDER BY id")]
    for row in rows:
        row["draining"] = bool(row["draining"])
    return rows


def set_draining(conn: sqlite3.Connection, server_id: str, draining: bool) -> dict[str, Any]:
    if not conn.execute("UPDATE servers SET draining=? WHERE id=?",
                        (int(draining), server_id)).rowcount:
        raise FsError(errno.ENOENT, f"no chunk server {server_id}")
    return next(r for r in list_all(conn) if r["id"] == server_id)


def remove(conn: sqlite3.Connection, server_id: str) -> bool:
    """Forget a drained server that is down (a running one would register again)."""
    row = conn.execute("SELECT state, draining FROM servers WHERE id=?", (server_id,)).fetchone()
    if row is None:
        return False
    if not row[1] or row[0] == "up":
        raise FsError(errno.EBUSY, f"server {server_id} must be drained ('shoal node drain') "
                                   "and stopped before it is removed")
    conn.execute("DELETE FROM servers WHERE id=?", (server_id,))
    return True


def report_bad_copy(conn: sqlite3.Connection, chunk_id: str, server_id: str, reason: str) -> None:
    """Remember a copy a client could not use, so repair replaces it."""
    conn.execute("INSERT OR REPLACE INTO bad_copies VALUES (?,?,?,?)",
                 (chunk_id, server_id, reason[:200], now_ns()))


def bad_copies(conn: sqlite3.Connection) -> list[dict[str, Any]]:
    return [{"chunk_id": r[0], "server_id": r[1], "reason": r[2], "reported_ns": r[3]}
            for r in conn.execute("SELECT * FROM bad_copies ORDER BY reported_ns")]


def clear_bad_copy(conn: sqlite3.Connection, chunk_id: str, server_id: str) -> bool:
    """Forget a report once repair has dealt with it."""
    return conn.execute("DELETE FROM bad_copies WHERE chunk_id=? AND server_id=?",
                        (chunk_id, server_id)).rowcount > 0
