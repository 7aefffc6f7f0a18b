"""Consistent copies of the meta database while it runs, handed out in pieces.

SQLite's online backup copies the database page by page into a new file as one
consistent snapshot, while the meta role keeps serving (it runs in the database thread,
between transactions). The copy is then read by the client in pieces (frames are limited
in size), and removed when the client closes it or when the meta role restarts.
"""

from __future__ import annotations

import os
import sqlite3
import uuid
from pathlib import Path

from ..rpc.errors import InvalidArgument, NotFound

MAX_READ = 16 * 1024 * 1024


class Backups:
    def __init__(self, directory: Path) -> None:
        self.dir = directory
        self.dir.mkdir(parents=True, exist_ok=True)
        for stale in self.dir.glob("backup-*.db"):  # left by a previous run
            stale.unlink()

    def _path(self, backup_id: str) -> Path:
        if len(backup_id) != 32 or not all(c in "0123456789abcdef" for c in backup_id):
            raise InvalidArgument("not a backup id")
        path = self.dir / f"backup-{backup_id}.db"
        if not path.exists():
            raise NotFound(f"no backup {backup_id} (closed, or the meta role restarted)")
        return path

    def create(self, conn: sqlite3.Connection) -> dict[str, object]:
        """Snapshot the database (call between transactions, in the database thread)."""
        backup_id = uuid.uuid4().hex
        path = self.dir / f"backup-{backup_id}.db"
        target = sqlite3.connect(path)
        try:
            conn.backup(target)
        finally:
            target.close()
        return {"id": backup_id, "size": path.stat().st_size}

    def read(self, backup_id: str, offset: int, length: int) -> bytes:
        if offset < 0 or not 0 < length <= MAX_READ:
            raise InvalidArgument(f"offset must be >= 0 and length in 1..{MAX_READ}")
        with open(self._path(backup_id), "rb") as f:
            f.seek(offset)
            return f.read(length)

    def close(self, backup_id: str) -> bool:
        try:
            os.unlink(self._path(backup_id))
        except NotFound:
            return False
        return True
