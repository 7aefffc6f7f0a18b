"""The ranges of the values an inode keeps, as POSIX and the Linux kernel use them.

Checked before anything is stored: a value a mount cannot show (a uid of -1, a mode
with no file type) made every listing of its directory fail with EIO on every mount, and
an integer past SQLite's range came back as INTERNAL with a traceback. Each check raises
INVALID_ARGUMENT naming the value and its range.
"""

from __future__ import annotations

import stat
from typing import Any

from ..rpc.errors import InvalidArgument

ID_MAX = (1 << 32) - 2  # uid_t/gid_t; (uid_t)-1 means "unchanged" to chown(2)
RDEV_MAX = (1 << 32) - 1  # the kernel's dev_t
MODE_BITS = 0o177777  # file type and permission bits, nothing above
SIZE_MAX = (1 << 63) - 1  # off_t
TIME_MIN, TIME_MAX = -(1 << 63), (1 << 63) - 1  # nanoseconds, signed 64-bit
FILE_TYPES = frozenset(
    {
        stat.S_IFREG,
        stat.S_IFDIR,
        stat.S_IFLNK,
        stat.S_IFIFO,
        stat.S_IFSOCK,
        stat.S_IFCHR,
        stat.S_IFBLK,
    }
)


def _within(name: str, value: Any, low: int, high: int) -> None:
    if type(value) is not int or not low <= value <= high:
        raise InvalidArgument(f"{name} must be an integer in {low}..{high}, got {value!r}")


def check_new_node(mode: int, uid: int, gid: int, rdev: int) -> None:
    """A create's values: exactly one valid file type, ids and device in range."""
    _within("mode", mode, 0, MODE_BITS)
    if stat.S_IFMT(mode) not in FILE_TYPES:
        raise InvalidArgument(f"mode {mode:#o} has no valid file type")
    _within("uid", uid, 0, ID_MAX)
    _within("gid", gid, 0, ID_MAX)
    _within("rdev", rdev, 0, RDEV_MAX)


def check_changes(changes: dict[str, Any]) -> None:
    """A setattr's values (the keys are checked by files.setattr_): permission bits (a
    file type sent along is ignored there), ids, size, times (-1: now)."""
    for key, value in changes.items():
        if key == "mode":
            _within(key, value, 0, MODE_BITS)
        elif key in ("uid", "gid"):
            _within(key, value, 0, ID_MAX)
        elif key == "size":
            _within(key, value, 0, SIZE_MAX)
        elif key in ("atime_ns", "mtime_ns"):
            _within(key, value, TIME_MIN, TIME_MAX)
