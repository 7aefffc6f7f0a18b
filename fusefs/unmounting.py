"""The one way shoalfs takes a mount off the mount table. ``shoal umount``, the lab cluster's
start and stop, and the CSI node plugin (its staging FUSE mounts and the pods' bind mounts of
them) all call ``unmount``.

Why one function: there were two, and they disagreed — one ran fusermount3 and raised on a
busy mount, the other ran umount(8) and fell back to a lazy detach — so the same busy mount
ended differently depending on who asked. The choices, once:

- **The tool.** root runs umount(8), which takes bind mounts as well as FUSE mounts (the node
  plugin unmounts both); anyone else runs ``fusermount3 -u``, the setuid helper that lets a
  user unmount a FUSE mount they made (``shoal mount`` as a user).
- **Busy.** A mount with open files or a working directory in it is busy. ``if_busy="fail"``
  raises (a person asked, and can choose ``--lazy``); ``if_busy="detach"`` detaches it
  lazily (the CSI node plugin: the pod is going away, and kubelet retries forever on an error).
  A lazily detached mount is gone from the table at once; processes that still hold files in
  it keep them until they close, then the FUSE process ends.
- **Paths** are made absolute, never resolved: resolving a path that crosses a broken mount
  fails (fusefs/mounttable.py). Callers that take a path a person typed resolve it first.
- **Done means gone**: it returns once the entry has left the mount table (bounded), so a
  caller may remove or reuse the directory at once.
"""

from __future__ import annotations

import os
import subprocess
import time
from typing import Literal

from .mounttable import mount_entry

__all__ = ["UnmountError", "unmount"]

_COMMAND_TIMEOUT = 60.0  # umount of a FUSE mount waits for the FUSE process's DESTROY


class UnmountError(OSError):
    """The tool refused (not a mount we may unmount, busy with ``if_busy="fail"``, ...)."""


def unmount(
    path: str,
    lazy: bool = False,
    if_busy: Literal["fail", "detach"] = "fail",
    timeout: float = 30.0,
) -> bool:
    """Unmount what is mounted at ``path`` (the topmost mount); with ``lazy`` detach it at once.
    Returns False when nothing was mounted there. Raises UnmountError when it could not."""
    target = os.path.abspath(path)
    if mount_entry(target) is None:
        return False
    if lazy:
        error = _run(target, lazy=True)
    else:
        error = _run(target, lazy=False)
        if error and if_busy == "detach":
            error = _run(target, lazy=True)
    if error and mount_entry(target) is not None:
        raise UnmountError(error)
    deadline = time.monotonic() + timeout
    while mount_entry(target) is not None:
        if time.monotonic() >= deadline:
            raise UnmountError(f"{target} is still mounted {timeout:g} s after it was unmounted")
        time.sleep(0.05)
    return True


def _run(target: str, lazy: bool) -> str:
    """Run the tool; '' on success, else what it said."""
    if os.geteuid() == 0:
        command = ["umount", *(["-l"] if lazy else []), target]
    else:
        command = ["fusermount3", "-u", *(["-z"] if lazy else []), target]
    try:
        result = subprocess.run(
            command, capture_output=True, text=True, timeout=_COMMAND_TIMEOUT, check=False
        )
    except (OSError, subprocess.TimeoutExpired) as exc:
        return f"{command[0]}: {exc}"
    if result.returncode == 0:
        return ""
    return (
        result.stderr.strip()
        or result.stdout.strip()
        or f"{' '.join(command)} failed with exit code {result.returncode}"
    )
