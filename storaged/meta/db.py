"""Opening the meta database and running one transaction per operation."""

from __future__ import annotations

import contextlib
import sqlite3
from collections.abc import Iterator
from pathlib import Path

from .schema import DDL, SCHEMA_VERSION


def open_database(path: str | Path) -> sqlite3.Connection:
    """Open (creating if needed) with WAL and fsync on every commit.

    ``check_same_thread=False`` because the service runs every query in one dedicated worker
    thread that is not the thread which opened the connection.
    """
    conn = sqlite3.connect(str(path), isolation_level=None, check_same_thread=False)
    conn.execute("PRAGMA journal_mode=WAL")
    conn.execute("PRAGMA synchronous=FULL")
    conn.execute("PRAGMA foreign_keys=OFF")
    conn.execute("PRAGMA busy_timeout=10000")
    with transaction(conn):
        for statement in filter(str.strip, DDL.split(";")):
            conn.execute(statement)
        row = conn.execute("SELECT value FROM meta_info WHERE key='schema_version'").fetchone()
        if row is None:
            conn.execute("INSERT INTO meta_info VALUES ('schema_version', ?)", (str(SCHEMA_VERSION),))
        elif int(row[0]) != SCHEMA_VERSION:
            raise RuntimeError(f"{path}: schema version {row[0]}, this storaged knows {SCHEMA_VERSION}")
    return conn


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
