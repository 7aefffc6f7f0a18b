"""The cluster map: chunk servers, what they report in heartbeats, and whether they are up."""

from __future__ import annotations

import errno
import logging
import re
import sqlite3
from typing import Any

from ..rpc.address import parse_address
from ..rpc.errors import FsError, InvalidArgument
from .namespace import now_ns

log = logging.getLogger("storaged.meta")
_WARNED: set[str] = set()  # servers whose unusable address was logged

_COLUMNS = "id, address, zone, capacity, used, free, chunks, last_seen_ns, state, draining"


SERVER_ID_RE = re.compile(r"[A-Za-z0-9._-]{1,64}")  # uuid4().hex in practice
ZONE_RE = re.compile(r"[\x21-\x7e]{0,253}")  # a node name, a rack: no spaces
USAGE_KEYS = ("capacity", "used", "free", "chunks")
SCRUB_KEYS_MAX = 32


def check_heartbeat(server_id: object, address: object, zone: object, usage: object) -> None:
    """INVALID_ARGUMENT unless the heartbeat can be kept in the map and used as it is: an
    id of 1-64 of A-Z a-z 0-9 . _ -, an address a client can dial (tcp://HOST:PORT or
    unix:///PATH), a zone of printable characters, usage figures 0..2^63-1."""
    if not isinstance(server_id, str) or not SERVER_ID_RE.fullmatch(server_id):
        raise InvalidArgument("server id: 1-64 of A-Z a-z 0-9 . _ -")
    if not isinstance(address, str) or len(address) > 300:
        raise InvalidArgument("address: tcp://HOST:PORT or unix:///PATH")
    try:
        parsed = parse_address(address)
    except ValueError as exc:
        raise InvalidArgument(str(exc)) from None
    if parsed.scheme == "tcp" and parsed.port == 0:
        raise InvalidArgument(f"address {address!r}: port 0 cannot be dialled")
    if not isinstance(zone, str) or not ZONE_RE.fullmatch(zone):
        raise InvalidArgument("zone: at most 253 printable characters, no spaces")
    if not isinstance(usage, dict):
        raise InvalidArgument("usage must be a map")
    for key in USAGE_KEYS:
        value = usage.get(key, 0)
        if type(value) is not int or not 0 <= value < 1 << 63:
            raise InvalidArgument(f"usage {key}: an integer 0..2^63-1")
    scrub = usage.get("scrub")
    if scrub is not None and not (isinstance(scrub, dict) and len(scrub) <= SCRUB_KEYS_MAX):
        raise InvalidArgument(f"usage scrub: a map of at most {SCRUB_KEYS_MAX} entries")


def heartbeat(
    conn: sqlite3.Connection, server_id: str, address: str, zone: str, usage: dict[str, int]
) -> bool:
    """Record a heartbeat; True if the server was unknown or down until now."""
    row = conn.execute("SELECT state FROM servers WHERE id=?", (server_id,)).fetchone()
    conn.execute(  # an upsert, so the administrator's 'draining' survives heartbeats
        "INSERT INTO servers (id, address, zone, capacity, used, free, chunks, last_seen_ns, "
        "state) VALUES (?,?,?,?,?,?,?,?, 'up') ON CONFLICT(id) DO UPDATE SET "
        "address=excluded.address, zone=excluded.zone, capacity=excluded.capacity, "
        "used=excluded.used, free=excluded.free, chunks=excluded.chunks, "
        "last_seen_ns=excluded.last_seen_ns, state='up'",
        (
            server_id,
            address,
            zone,
            int(usage.get("capacity", 0)),
            int(usage.get("used", 0)),
            int(usage.get("free", 0)),
            int(usage.get("chunks", 0)),
            now_ns(),
        ),
    )
    return row is None or row[0] != "up"


def mark_silent_down(conn: sqlite3.Connection, timeout_ns: int) -> list[str]:
    """Servers whose last heartbeat is older than the timeout become down; returns their ids."""
    cutoff = now_ns() - timeout_ns
    ids = [
        r[0]
        for r in conn.execute(
            "SELECT id FROM servers WHERE state='up' AND last_seen_ns < ?", (cutoff,)
        )
    ]
    conn.executemany("UPDATE servers SET state='down' WHERE id=?", [(i,) for i in ids])
    return ids


def list_all(conn: sqlite3.Connection) -> list[dict[str, Any]]:
    """The cluster map, without rows nobody could use: a heartbeat is checked before it is
    stored (check_heartbeat), but a release before that check stored whatever it got, and
    one unusable address took down whoever dialled it."""
    keys = [c.strip() for c in _COLUMNS.split(",")]
    rows = []
    for values in conn.execute(f"SELECT {_COLUMNS} FROM servers ORDER BY id"):
        row = dict(zip(keys, values))
        try:
            parse_address(str(row["address"]))
        except ValueError:
            if row["id"] not in _WARNED:  # once per server: the map is read every second
                _WARNED.add(row["id"])
                log.warning(
                    "chunk server %r has an unusable address %r: left out of the "
                    "cluster map until it sends a heartbeat with a good one",
                    row["id"],
                    row["address"],
                )
            continue
        row["draining"] = bool(row["draining"])
        rows.append(row)
    return rows


def set_draining(conn: sqlite3.Connection, server_id: str, draining: bool) -> dict[str, Any]:
    if not conn.execute(
        "UPDATE servers SET draining=? WHERE id=?", (int(draining), server_id)
    ).rowcount:
        raise FsError(errno.ENOENT, f"no chunk server {server_id}")
    return next(r for r in list_all(conn) if r["id"] == server_id)


def remove(conn: sqlite3.Connection, server_id: str) -> bool:
    """Forget a drained server that is down (a running one would register again)."""
    row = conn.execute("SELECT state, draining FROM servers WHERE id=?", (server_id,)).fetchone()
    if row is None:
        return False
    if not row[1] or row[0] == "up":
        raise FsError(
            errno.EBUSY,
            f"server {server_id} must be drained ('shoal node drain') "
            "and stopped before it is removed",
        )
    conn.execute("DELETE FROM servers WHERE id=?", (server_id,))
    return True


def report_bad_copy(conn: sqlite3.Connection, chunk_id: str, server_id: str, reason: str) -> None:
    """Remember a copy a client could not use, so repair replaces it."""
    conn.execute(
        "INSERT OR REPLACE INTO bad_copies VALUES (?,?,?,?)",
        (chunk_id, server_id, reason[:200], now_ns()),
    )


def bad_copies(conn: sqlite3.Connection) -> list[dict[str, Any]]:
    return [
        {"chunk_id": r[0], "server_id": r[1], "reason": r[2], "reported_ns": r[3]}
        for r in conn.execute("SELECT * FROM bad_copies ORDER BY reported_ns")
    ]


def clear_bad_copy(conn: sqlite3.Connection, chunk_id: str, server_id: str) -> bool:
    """Forget a report once repair has dealt with it."""
    return (
        conn.execute(
            "DELETE FROM bad_copies WHERE chunk_id=? AND server_id=?", (chunk_id, server_id)
        ).rowcount
        > 0
    )
