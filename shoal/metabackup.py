"""``shoal meta backup`` and ``shoal meta restore``: the meta database, copied safely.

A backup is streamed from the running meta role in pieces into FILE.partial, fsynced,
checked with SQLite's integrity check, and only then renamed to FILE: an interrupted
backup never leaves a FILE that looks complete. A restore refuses a database that fails
the check, refuses to run while something holds the target database open for writing,
and replaces it in one rename (removing the old write-ahead log, which belongs to the
database being replaced).
"""

from __future__ import annotations

import os
import sqlite3
from pathlib import Path

import trio

from storaged.durable import fsync_dir
from storaged.meta.backup import MAX_READ
from storaged.metaclient import MetaClient
from storaged.rpc import RpcClient, auth


def _check(path: Path) -> str:
    """Integrity check and a summary; raise ValueError if the file is not a good database."""
    conn = sqlite3.connect(f"file:{path}?mode=ro", uri=True)
    try:
        result = conn.execute("PRAGMA integrity_check").fetchone()[0]
        if result != "ok":
            raise ValueError(f"{path} fails SQLite's integrity check: {result}")
        volumes = conn.execute("SELECT count(*) FROM volumes").fetchone()[0]
        inodes = conn.execute("SELECT count(*) FROM inodes").fetchone()[0]
    except sqlite3.DatabaseError as exc:
        raise ValueError(f"{path} is not a shoalfs meta database: {exc}") from None
    finally:
        conn.close()
    return f"{volumes} volumes and snapshots, {inodes} inodes"


def backup(meta: str, secret_file: str, target: Path) -> str:
    secret = auth.load_secret(secret_file)
    partial = target.with_name(target.name + ".partial")

    async def go() -> int:
        async with RpcClient(secret, timeout=300) as rpc:
            client = MetaClient(rpc, meta)
            info = await client.meta_backup_open()
            try:
                async with await trio.open_file(partial, "wb") as f:
                    offset = 0
                    while offset < info["size"]:
                        piece = await client.meta_backup_read(info["id"], offset, MAX_READ)
                        if not piece:
                            raise RuntimeError("the backup ended early")
                        await f.write(piece)
                        offset += len(piece)
                    await f.flush()
                    await trio.to_thread.run_sync(os.fsync, f.fileno())
            finally:
                await client.meta_backup_close(info["id"])
            return int(info["size"])

    try:
        size = trio.run(go)
        summary = _check(partial)
    except BaseException:
        partial.unlink(missing_ok=True)
        raise
    os.replace(partial, target)
    fsync_dir(target.parent if str(target.parent) else Path("."))
    return f"backed up {size} bytes to {target}: {summary}"


def restore(source: Path, meta_db: Path) -> str:
    if not source.exists():
        raise FileNotFoundError(f"backup {source} does not exist")
    summary = _check(source)
    if meta_db.exists():
        conn = sqlite3.connect(meta_db, timeout=0.5, isolation_level=None)
        try:
            # A running meta role keeps its connection open, which holds a shared lock on
            # the file (WAL mode): an exclusive lock is only granted when nobody uses it.
            conn.execute("PRAGMA locking_mode=EXCLUSIVE")
            conn.execute("BEGIN EXCLUSIVE")
            conn.execute("ROLLBACK")
        except sqlite3.OperationalError:
            raise RuntimeError(f"{meta_db} is in use: stop the meta role first") from None
        finally:
            conn.close()
    meta_db.parent.mkdir(parents=True, exist_ok=True)
    staged = meta_db.with_name(meta_db.name + ".restoring")
    with open(source, "rb") as src, open(staged, "wb") as dst:
        while block := src.read(1 << 20):
            dst.write(block)
        dst.flush()
        os.fsync(dst.fileno())
    for leftover in (
        meta_db.with_name(meta_db.name + "-wal"),
        meta_db.with_name(meta_db.name + "-shm"),
    ):
        leftover.unlink(missing_ok=True)
    os.replace(staged, meta_db)
    fsync_dir(meta_db.parent)
    return f"restored {meta_db} from {source}: {summary}"
