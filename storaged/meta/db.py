"""Opening the meta database and running one transaction per operation."""

from __future__ import annotations

import contextlib
import sqlite3
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

from .schema import DDL, MIGRATIONS, SCHEMA_VERSION


def open_database(path: str | Path) -> sqlite3.Connection:
    """Open (creating or migrating if needed) in WAL mode, with ``synchronous=NORMAL``: a
    commit writes the WAL but does not fsync it; ``make_durable`` does, for every commit so
    far at once (groupcommit.py says when).

    ``check_same_thread=False`` because the service runs every query in one dedicated worker
    thread that is not the thread which opened the connection.
    """
    conn = sqlite3.connect(str(path), isolation_level=None, check_same_thread=False)
    conn.execute("PRAGMA journal_mode=WAL")
    conn.execute("PRAGMA synchronous=NORMAL")
    conn.execute("PRAGMA foreign_keys=OFF")
    conn.execute("PRAGMA busy_timeout=10000")
    with transaction(conn):
        row = _info(conn, "schema_version")
        version = SCHEMA_VERSION if row is None else int(row)
        if version > SCHEMA_VERSION:
            raise RuntimeError(
                f"{path}: schema version {version} is newer than this storaged "
                f"({SCHEMA_VERSION}); run a newer shoalfs"
            )
        if row is not None:
            for step in range(version, SCHEMA_VERSION):
                for statement in MIGRATIONS[step]:
                    conn.execute(statement)
        for statement in filter(str.strip, DDL.split(";")):
            conn.execute(statement)
        conn.execute(
            "INSERT OR REPLACE INTO meta_info VALUES ('schema_version', ?)", (str(SCHEMA_VERSION),)
        )
        if _info(conn, "cluster_id") is None:
            conn.execute("INSERT INTO meta_info VALUES ('cluster_id', ?)", (uuid.uuid4().hex,))
    return conn


def make_durable(conn: sqlite3.Connection) -> None:
    """Every transaction committed so far, on disk. With ``synchronous=FULL`` SQLite fsyncs
    the WAL after a commit, and an fsync covers the whole file: one small write committed
    that way makes every frame before it durable (frames already checkpointed are in the
    database file, which a checkpoint fsyncs even with NORMAL)."""
    conn.execute("PRAGMA synchronous=FULL")
    try:
        with transaction(conn):
            conn.execute(
                "INSERT OR REPLACE INTO meta_info VALUES ('last_sync', ?)", (str(time.time_ns()),)
            )
    finally:
        conn.execute("PRAGMA synchronous=NORMAL")


def _info(conn: sqlite3.Connection, key: str) -> str | None:
    try:
        row = conn.execute("SELECT value FROM meta_info WHERE key=?", (key,)).fetchone()
    except sqlite3.OperationalError:  # a new database: the table does not exist yet
        return None
    return None if row is None else str(row[0])


def cluster_id(conn: sqlite3.Connection) -> str:
    return _info(conn, "cluster_id") or ""


@contextlib.contextmanager
def transaction(conn: sqlite3.Connection) -> Iterator[sqlite3.Connection]:
    """BEGIN IMMEDIATE ... COMMIT, or ROLLBACK on any exception (including FsError)."""
    conn.execute("BEGIN IMMEDIATE")
    try:
        yield conn
    except BaseException:
        conn.execute("ROLLBACK")
        raise
    conn.execute("COMMIT")
