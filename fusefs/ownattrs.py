"""Attributes of files this mount made under a delegation, known exactly while nothing
else can have changed them.

`tar x` sets the owner, the mode and the times of every file it writes (fchown, fchmod
and futimens on the open descriptor), and the kernel refreshes the file's attributes
before the chown: four round trips to the meta role per file on top of its close
(counted: 120 fs.setattr and 40 fs.getattr for 40 files). For a file made under a grant
this mount holds (fusefs/delegation.py, invariant 3), nobody else can see or change it
until the grant is recalled, so the mount can answer those itself, exactly as the meta
role would, and send the changes in the directory's batch ahead of the file's commit:
one round trip per file for all.

Invariants:

1. An entry is kept under a *stamp*, Operations' count of this mount's own changes
   (``_changes``: every change sent to the meta role and every commit moves it), and
   is used only while the count has not moved since: a truncate, an xattr, a link, any
   change through the meta role may have changed what it holds (a ctime at least).
   Coarse, and right; what a file made by `tar x` or `cp -p` needs lasts from its
   create to its close, with no other change of this mount in between.
2. Entries are kept only from what describes the inode exactly as the meta role has it,
   or will have it once the batch is applied: a create answered from the grant; a
   commit's answer, if the entry kept before the commit went out was still good when
   the answer came (nothing sent to the meta role meanwhile could have changed the file
   after the commit: a chmod sent while it was out might be applied after it), the
   file's flush lock held throughout it (so no change of the file can be answered here
   while it is out: ``Operations._setattr_here`` checks that); and a change answered
   here, applied to the entry by ``changed``, which does exactly what
   storaged/meta/files.py ``setattr_`` does in the meta role.
3. An entry is used only while ``Delegator.settable`` holds for its inode (made under a
   grant still usable, its only name in the directory). The size of a file open here
   is the FileData's (Operations._entry), never the entry's.
4. At most ``LIMIT`` entries (emptied when full: they are short-lived anyway).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

LIMIT = 4096


class OwnAttrs:
    def __init__(self, limit: int = LIMIT) -> None:
        self.limit = limit
        self._known: dict[int, tuple[dict[str, Any], int]] = {}

    def __len__(self) -> int:
        return len(self._known)

    def keep(self, ino: int, attr: Mapping[str, Any], stamp: int) -> None:
        """``attr`` describe ``ino`` exactly as of ``stamp`` (invariant 2 is the caller's)."""
        if len(self._known) >= self.limit and ino not in self._known:
            self._known.clear()
        self._known[ino] = (dict(attr), stamp)

    def get(self, ino: int, stamp: int) -> dict[str, Any] | None:
        """The attributes of ``ino`` if they were kept under ``stamp`` (a copy)."""
        known = self._known.get(ino)
        if known is None:
            return None
        if known[1] != stamp:
            del self._known[ino]
            return None
        return dict(known[0])


def changed(attr: Mapping[str, Any], changes: Mapping[str, int], t: int) -> dict[str, Any]:
    """``attr`` after a chmod, chown or utimens of ``changes`` made at ``t``: what the
    meta role's setattr_ leaves (permission bits into the mode, its type kept; ids;
    times, -1 meaning ``t``; the ctime ``t``)."""
    new = dict(attr)
    if "mode" in changes:
        new["mode"] = (attr["mode"] & ~0o7777) | (changes["mode"] & 0o7777)
    for key in ("uid", "gid"):
        if key in changes:
            new[key] = changes[key]
    for key in ("atime_ns", "mtime_ns"):
        if key in changes:
            new[key] = t if changes[key] == -1 else changes[key]
    new["ctime_ns"] = t
    return new
