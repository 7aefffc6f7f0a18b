"""The rules a volume's name and chunk size follow, in one place.

The meta role enforces them (storaged/meta/volumes.py); the CSI driver checks a request
against them before it asks, so a bad StorageClass parameter is INVALID_ARGUMENT with a
reason, not an error from deep inside; and the node plugin names its records after volume
names, which these rules keep safe as file names (no '/', no '..'). A module of its own,
importable by every package, so that no client reaches into the meta role for them.
"""

from __future__ import annotations

import re

NAME_RE = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,127}")
MIN_CHUNK, MAX_CHUNK = 64 * 1024, 64 * 1024 * 1024
DEFAULT_CHUNK_SIZE = 4 * 1024 * 1024


def is_valid_name(name: str) -> bool:
    """A name volumes and snapshots may have (also safe as a file name: no '/', no '..')."""
    return NAME_RE.fullmatch(name) is not None
