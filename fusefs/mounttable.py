"""The one reader of the kernel's mount table (/proc/self/mountinfo): what is mounted where,
and whether a FUSE mount is still alive.

A FUSE mount whose process died stays in the mount table, but every access to it fails
with ENOTCONN ("transport endpoint is not connected"). Such a mount is *broken*: it must be
detected and lazily unmounted, or pods stay stuck on it (ceph-csi PR #2634). Paths are
compared as given (normalised, never resolved), because resolving a path that crosses a
broken mount fails too; ``is_mounted`` resolves a path a person typed first, without
failing on a broken mount.
"""

from __future__ import annotations

import errno
import os
from dataclasses import dataclass
from pathlib import Path

FSNAME_PREFIX = "shoalfs:"  # fusefs mounts with fsname=shoalfs:VOLUME (fusefs/mount.py)
_DEAD = {errno.ENOTCONN, errno.ECONNABORTED}


@dataclass(frozen=True)
class MountEntry:
    mountpoint: str
    source: str
    fstype: str
    options: frozenset[str]


def _unescape(field: str) -> str:
    # mountinfo escapes space, tab, newline and backslash as octal
    for code, char in (("\\040", " "), ("\\011", "\t"), ("\\012", "\n"), ("\\134", "\\")):
        field = field.replace(code, char)
    return field


def mount_entry(path: str) -> MountEntry | None:
    """The topmost mount at ``path`` (the last one listed), or None."""
    target = os.path.normpath(path)
    found = None
    with open("/proc/self/mountinfo") as f:
        for line in f:
            fields = line.split()
            sep = fields.index("-")
            if _unescape(fields[4]) == target:
                found = MountEntry(
                    target,
                    _unescape(fields[sep + 2]),
                    fields[sep + 1],
                    frozenset(fields[5].split(",")),
                )
    return found


def is_mounted(mountpoint: str | Path) -> bool:
    """Is anything mounted at ``mountpoint`` (relative paths and symlinks resolved first)?"""
    return mount_entry(os.path.realpath(mountpoint)) is not None


def is_dead(path: str) -> bool:
    """statvfs, not stat: the kernel may answer a stat from its attribute cache for a while
    after the mount process died, but it always asks the filesystem for a statfs."""
    try:
        os.statvfs(path)
    except OSError as exc:
        return exc.errno in _DEAD
    return False
