"""The kernel's readahead window for this mount.

A FUSE mount's device starts with the kernel's default window (128 KiB), and the FUSE init
reply can only lower it. A sequential reader then reaches the mount in 128 KiB requests:
eight trips through Python per MiB. Root can raise the window through sysfs once the kernel
has taken the init reply; with a window of several MiB the kernel asks in 1 MiB requests
(the largest this mount negotiates) and keeps more than one in flight. Random small reads
are not widened by it: the kernel reads ahead only for a reader it sees going forward.

Not being allowed to (not root, or a read-only /sys in a container) is not an error: the
mount works as before, with the kernel's default, and says so in its log.
"""

from __future__ import annotations

import logging
import os

import trio

log = logging.getLogger("fusefs")

SYSFS_BDI = "/sys/class/bdi"


def set_readahead(device: int, size: int, *, sysfs: str = SYSFS_BDI) -> bool:
    """Set the readahead window of the filesystem on ``device`` (an st_dev) to ``size``
    bytes, rounded down to KiB; 0 leaves the kernel's default. True when it was set."""
    if size <= 0:
        return False
    path = os.path.join(sysfs, f"{os.major(device)}:{os.minor(device)}", "read_ahead_kb")
    try:
        with open(path, "w", encoding="ascii") as f:
            f.write(f"{size // 1024}\n")
    except OSError as exc:
        log.warning("readahead left at the kernel's default: cannot write %s: %s", path, exc)
        return False
    log.info("readahead window %d KiB (%s)", size // 1024, path)
    return True


async def raise_readahead(mountpoint: str, size: int) -> None:
    """Set the window once the kernel has taken the init reply (which would lower a window
    set before it back to 128 KiB). A stat of the mountpoint returns only after that, and
    tells the mount's device; it is a request to this mount, so it is made from a thread
    while the mount serves (and abandoned if the mount stops first)."""
    if size <= 0:
        return
    try:
        st = await trio.to_thread.run_sync(os.stat, mountpoint, abandon_on_cancel=True)
    except OSError as exc:
        log.warning("readahead left at the kernel's default: cannot stat %s: %s", mountpoint, exc)
        return
    set_readahead(st.st_dev, size)
