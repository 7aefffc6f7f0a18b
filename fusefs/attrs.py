"""Meta-role attributes to what the kernel wants, and the inode numbering between them.

The kernel calls the mount's root inode 1 (pyfuse3.ROOT_INODE); the meta role gives every
inode of every volume a number of its own. Only the root needs translating: inode numbers
are never reused (AUTOINCREMENT), and number 1 in the database is the root of the first
volume ever created, so it can never be a non-root inode of the mounted volume.
"""

from __future__ import annotations

import operator
import stat
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import pyfuse3

from storaged.metaclient import ATTR_KEYS

BLOCK_SIZE = 1 << 20  # st_blksize: tools size their buffers by it; the kernel sends <= 1 MiB


@dataclass(frozen=True)
class InodeMap:
    root: int  # the volume's root inode in the meta role

    def to_meta(self, ino: int) -> int:
        return self.root if ino == pyfuse3.ROOT_INODE else ino

    def to_kernel(self, ino: int) -> int:
        return pyfuse3.ROOT_INODE if ino == self.root else ino


values_of = operator.itemgetter(*ATTR_KEYS)  # a meta-role attribute map -> those values


def entry_attributes(
    attr: Mapping[str, Any],
    inodes: InodeMap,
    *,
    entry_timeout: float,
    attr_timeout: float,
    size: int | None = None,
) -> pyfuse3.EntryAttributes:
    return entry_from_values(
        values_of(attr), inodes, entry_timeout=entry_timeout, attr_timeout=attr_timeout, size=size
    )


def entry_from_values(
    values: Sequence[int],
    inodes: InodeMap,
    *,
    entry_timeout: float,
    attr_timeout: float,
    size: int | None = None,
    first: int = 0,
) -> pyfuse3.EntryAttributes:
    """``values``: the attributes in ATTR_KEYS order, from index ``first`` (a listing's
    rows carry them flat, without a map per entry; see fs.readdir in docs/rpc.md)."""
    (ino, mode, nlink, uid, gid, rdev, stored_size, stored, atime_ns, mtime_ns, ctime_ns) = values[
        first : first + 11
    ]
    e = pyfuse3.EntryAttributes()
    e.st_ino = inodes.to_kernel(ino)
    e.generation = 0
    e.entry_timeout = entry_timeout
    e.attr_timeout = attr_timeout
    e.st_mode = mode
    e.st_nlink = nlink
    e.st_uid = uid
    e.st_gid = gid
    e.st_rdev = rdev
    if stat.S_ISDIR(mode):
        e.st_size = 4096
    else:
        e.st_size = stored_size if size is None else size
    e.st_blksize = BLOCK_SIZE
    e.st_blocks = (stored + 511) // 512
    e.st_atime_ns = atime_ns
    e.st_mtime_ns = mtime_ns
    e.st_ctime_ns = ctime_ns
    return e
