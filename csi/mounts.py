"""The node's view of mounts: what is mounted where, whether it is alive, bind and unmount.

A FUSE mount whose process died stays in the mount table, but every access to it fails
with ENOTCONN ("transport endpoint is not connected"). Such a mount is *broken*: it must be
detected and lazily unmounted, or pods stay stuck on it (ceph-csi PR #2634). Paths are
compared as given (normalised, never resolved), because resolving a path that crosses a
broken mount fails too.
"""

from __future__ import annotations

import errno
import os
import subprocess
from dataclasses import dataclass
from enum import Enum

FSNAME_PREFIX = "shoalfs:"  # fusefs mounts with fsname=shoalfs:VOLUME
_DEAD = {errno.ENOTCONN, errno.ECONNABORTED}


class MountState(Enum):
    ABSENT = "absent"     # nothing mounted at the path
    OK = "ok"             # a live shoalfs mount of the volume
    BROKEN = "broken"     # a shoalfs mount of the volume whose process is gone
    OTHER = "other"       # something else is mounted there


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
                found = MountEntry(target, _unescape(fields[sep + 2]), fields[sep + 1],
                                   frozenset(fields[5].split(",")))
    return found


def is_dead(path: str) -> bool:
    """statvfs, not stat: the kernel may answer a stat from its attribute cache for a while
    after the mount process died, but it always asks the filesystem for a statfs."""
    try:
        os.statvfs(path)
    except OSError as exc:
        return exc.errno in _DEAD
    return False


def state(path: str, volume: str) -> MountState:
    entry = mount_entry(path)
    if entry is None:
        return MountState.ABSENT
    if entry.source != FSNAME_PREFIX + volume:
        return MountState.OTHER
    return MountState.BROKEN if is_dead(path) else MountState.OK


def _run(command: list[str]) -> subprocess.CompletedProcess[str]:
    return subprocess.run(command, capture_output=True, text=True, timeout=60)


def bind(source: str, target: str, readonly: bool, flags: list[str]) -> None:
    """Bind-mount ``source`` on ``target``; then apply read-only and the flags, which a
    bind mount only takes on a remount."""
    result = _run(["mount", "--bind", source, target])
    if result.returncode != 0:
        raise OSError(f"mount --bind {source} {target}: {result.stderr.strip()}")
    options = [f for f in flags if f not in ("ro", "rw")] + (["ro"] if readonly else [])
    if options:
        result = _run(["mount", "-o", ",".join(["remount", "bind", *options]), target])
        if result.returncode != 0:
            _run(["umount", target])
            raise OSError(f"remount {target} with {options}: {result.stderr.strip()}")


def unmount(path: str, lazy: bool = False) -> bool:
    """Unmount; if the mount is busy (or ``lazy``), detach it lazily: processes that still
    hold files in it keep them until they close, new lookups no longer reach it.
    Returns False when nothing was mounted there."""
    if mount_entry(path) is None:
        return False
    if not lazy and _run(["umount", path]).returncode == 0:
        return True
    result = _run(["umount", "-l", path])
    if result.returncode != 0 and mount_entry(path) is not None:
        raise OSError(f"umount -l {path}: {result.stderr.strip()}")
    return True
