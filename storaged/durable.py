"""Making a directory's changes durable, for every package that writes files of its own (the
chunk store, the meta role's backups, the CSI node plugin's records, the benchmarks)."""

from __future__ import annotations

import os
from pathlib import Path


def fsync_dir(path: Path | str) -> None:
    """Make a directory's entries (a rename, a new name) durable."""
    fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)
