"""Meta-role attributes to what the kernel wants, and the inode numbering between them.

The kernel calls the mount's root inode 1 (pyfuse3.ROOT_INODE); the meta role gives every
inode of every volume a number of its own. Only the root needs translating: inode numbers
are never reused (AUTOINCREMENT), and number 1 in the database is the root of the first
volume ever created, so it can never be a non-root inode of the mounted volume.
"""

from __future__ import annotations

import stat
from dataclasses import dataclass
from typing import Any

import pyfuse3

BLOCK_SIZE = 1 << 20  # st_blksize: tools size their buffers by it; the kernel sends <= 1 MiB


@dataclass(frozen=True)
class InodeMap:
    root: int  # the volume's root inode in the meta role

    def to_meta(self, ino: int) -> int:
        return self.root if ino == pyfuse3.ROOT_INODE else ino

    def to_kernel(self, ino: int) -> int:
        return pyfuse3.ROOT_INODE if ino == self.root else ino


def entry_attributes(attr: dict[str, Any], inodes: InodeMap, *, entry_timeout: float,
                     attr_timeout: float, size: int | None = None) -> pyfuse3.EntryAttributes:
    e = pyfuse3.EntryAttributes()
    e.st_ino = inodes.to_kernel(attr["ino"])
    e.generation = 0
    e.entry_timeout = entry_timeout
    e.attr_timeout = attr_timeout
    e.st_mode = attr["mode"]
    e.st_nlink = attr["nlink"]
    e.st_uid = attr["uid"]
    e.st_gid = attr["gid"]
    e.st_rdev = attr["rdev"]
    e.st_size = attr["size"] if size is None else size
    if stat.S_ISDIR(attr["mode"]):
        e.st_size = 4096
    e.st_blksize = BLOCK_SIZE
    e.st_blocks = (attr["stored"] + 511) // 512
    e.st_atime_ns = attr["atime_ns"]
    e.st_mtime_ns = attr["mtime_ns"]
    e.st_ctime_ns = attr["ctime_ns"]
    return e
