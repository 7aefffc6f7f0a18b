"""Block hash tables: what lets a server check a few KiB of a chunk without reading it all.

A chunk's id is the BLAKE3 hash of its whole content, so checking any part of it against the
id means reading and hashing all of it: a 4 KiB random read of a 4 MiB chunk cost a 4 MiB
read and hash on the server. Beside a chunk, a server may keep a table of the hashes of its
64 KiB blocks, made from bytes that matched the id; a ranged read then checks only the
blocks it returns.

The table is a cache, not data: it is written without fsync and rebuilt from the chunk
(after checking the chunk against its id) whenever it is missing, torn or disagrees with a
block. So a crash, a bad disk sector under the table, or a table from an older format cost
one full read, never a wrong answer.

Layout: ``MAGIC``, then block size (u32) and chunk size (u64) big-endian, then one 32-byte
BLAKE3 digest per block, the last block possibly short.
"""

from __future__ import annotations

import struct

from blake3 import blake3

BLOCK_SIZE = 64 * 1024
MAGIC = b"shoalblk"
_HEADER = struct.Struct(">IQ")
DIGEST_SIZE = 32
SUFFIX = ".blocks"


def block_digest(block: bytes | memoryview) -> bytes:
    return blake3(block).digest()


def digests_of(data: bytes | memoryview, block_size: int = BLOCK_SIZE) -> list[bytes]:
    view = memoryview(data)
    return [block_digest(view[i : i + block_size]) for i in range(0, len(view), block_size)]


def encode(size: int, digests: list[bytes], block_size: int = BLOCK_SIZE) -> bytes:
    return MAGIC + _HEADER.pack(block_size, size) + b"".join(digests)


def decode(table: bytes, size: int) -> tuple[int, list[bytes]] | None:
    """(block size, digests) if ``table`` is a whole table for a chunk of ``size`` bytes;
    None for anything else (the caller rebuilds it)."""
    head = len(MAGIC) + _HEADER.size
    if len(table) < head or not table.startswith(MAGIC):
        return None
    block_size, recorded = _HEADER.unpack_from(table, len(MAGIC))
    if block_size <= 0 or recorded != size:
        return None
    count = -(-size // block_size)
    if len(table) != head + count * DIGEST_SIZE:
        return None
    return block_size, [
        table[head + i * DIGEST_SIZE : head + (i + 1) * DIGEST_SIZE] for i in range(count)
    ]
