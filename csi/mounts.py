"""The node plugin's view of its mounts: is a staging or target path a live mount of the
volume, a broken one, or something else; bind mounts for pods. The mount table itself is
read by fusefs/mounttable.py, and fusefs/unmounting.py takes mounts off it."""

from __future__ import annotations

import subprocess
from enum import Enum

from fusefs.mounttable import FSNAME_PREFIX, MountEntry, is_dead, mount_entry

__all__ = ["MountEntry", "MountState", "bind", "mount_entry", "state"]


class MountState(Enum):
    ABSENT = "absent"  # nothing mounted at the path
    OK = "ok"  # a live shoalfs mount of the volume
    BROKEN = "broken"  # a shoalfs mount of the volume whose process is gone
    OTHER = "other"  # something else is mounted there


def state(path: str, volume: str) -> MountState:
    entry = mount_entry(path)
    if entry is None:
        return MountState.ABSENT
    if entry.source != FSNAME_PREFIX + volume:
        return MountState.OTHER
    return MountState.BROKEN if is_dead(path) else MountState.OK


def _run(command: list[str]) -> subprocess.CompletedProcess[str]:
    return subprocess.run(command, capture_output=True, text=True, timeout=60, check=False)


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
