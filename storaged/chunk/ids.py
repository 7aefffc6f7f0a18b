"""Chunk ids: the BLAKE3 hash of the content, as 64 lowercase hex digits.

The id is also the file name on disk, so a strict format check is what keeps a peer's
``../../etc/passwd`` from ever reaching the filesystem.
"""

from __future__ import annotations

import re

from blake3 import blake3

ID_LENGTH = 64
_ID_RE = re.compile(r"[0-9a-f]{64}")
# Large buffers are hashed with several threads (BLAKE3 is a tree hash); small ones are not
# worth the thread start-up.
_THREADED_ABOVE = 1 << 20


def chunk_id(data: bytes | memoryview) -> str:
    """The id a chunk with this content has."""
    threads = blake3.AUTO if len(data) > _THREADED_ABOVE else 1
    return blake3(data, max_threads=threads).hexdigest()


def is_chunk_id(text: object) -> bool:
    return isinstance(text, str) and _ID_RE.fullmatch(text) is not None


def are_chunk_ids(ids: object, limit: int = 10_000) -> bool:
    """A list of at most ``limit`` chunk ids (what the batch methods accept)."""
    return isinstance(ids, list) and len(ids) <= limit and all(map(is_chunk_id, ids))
