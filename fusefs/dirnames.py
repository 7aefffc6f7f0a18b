"""Every name in a few directories, known while the meta role watches them for this mount:
a lookup of a name that is not there is answered ENOENT without a round trip.

Why: the kernel looks a name up before it creates it, and a new name has no negative
entry to be found, so every create (`cp -r`, `tar x`, a build writing its outputs) cost a
round trip that can only answer ENOENT, as many as the creates themselves. A directory
this mount made, or listed whole, is a directory whose every name it knows.

Invariants (KnownNames):

1. A directory's names are learnt only from an answer the meta role watched for this mount
   (``Ask.session`` set): the mkdir that made it (no names), or a whole listing read while
   nothing changed (dircache.py's stamp).
2. They are believed only while the coherent cache trusts that answer
   (``KernelCache.left(ask) > 0``: nothing arrived since, the lease runs, polls are
   answered; see coherence.py). Any invalidation, about anything, ends every directory's
   knowledge at once; no per-directory bookkeeping can be wrong that way.
3. Changes through this mount keep the names exact: a create, link or rename into the
   directory adds its name, an unlink, rmdir or rename out of it removes it, once the meta
   role has answered. A change whose outcome is not known (an error, a cancelled request)
   forgets the directory.
4. A create's answer watches the directory again for this mount (storaged/meta/service.py
   ``fs_mknod``), so when nothing arrived in between, the knowledge is renewed with the
   create's Ask: a directory being filled stays known for as long as it is filled.
5. A directory delegated to this mount (fusefs/delegation.py) is *pinned* while it is
   held: no other mount can change its names then (it must recall the directory first),
   so its knowledge outlives invalidations about anything else, and ends with the
   delegation (or with a change whose outcome is not known, as in 3).

The answer given is the negative entry a lookup would have brought (coherence.py bounds
how long the kernel keeps it), a moment sooner.
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Iterable
from dataclasses import dataclass, field

from .coherence import Ask, KernelCache

DIRS_MAX = 256  # directories known at once (least recently used go first)
NAMES_MAX = 200_000  # names known in all of them


@dataclass
class _Known:
    ask: Ask
    names: set[bytes] = field(default_factory=set)


class KnownNames:
    def __init__(self, cache: KernelCache) -> None:
        self._cache = cache
        self._dirs: OrderedDict[int, _Known] = OrderedDict()
        self._pinned: set[int] = set()  # held by a delegation: see invariant 5
        self._names = 0

    def learn(self, ino: int, names: Iterable[bytes], ask: Ask) -> None:
        """Directory ``ino`` has exactly ``names``, as the answer to ``ask`` said."""
        if ask.session is None:
            return
        self.forget(ino)
        known = self._dirs[ino] = _Known(ask, set(names))
        self._names += len(known.names)
        self._trim()

    def missing(self, ino: int, name: bytes) -> Ask | None:
        """The Ask under which ``name`` is surely not in directory ``ino`` (answer ENOENT
        with it), or None: ask the meta role."""
        known = self._believed(ino)
        if known is None:
            return None
        self._dirs.move_to_end(ino)
        return None if name in known.names else known.ask

    def knows(self, ino: int) -> bool:
        """Is every name of directory ``ino`` known (and still believed)?"""
        return self._believed(ino) is not None

    def pin(self, ino: int) -> bool:
        """Keep what is known of directory ``ino`` while it is delegated to this mount
        (invariant 5); False when nothing is known of it now."""
        if self._believed(ino) is None:
            return False
        self._pinned.add(ino)
        return True

    def unpin(self, ino: int) -> None:
        self._pinned.discard(ino)

    def _believed(self, ino: int) -> _Known | None:
        known = self._dirs.get(ino)
        if known is not None and ino not in self._pinned and self._cache.left(known.ask) <= 0:
            self.forget(ino)
            return None
        return known

    def has(self, ino: int, name: bytes) -> bool:
        """``name`` is in directory ``ino`` (only meaningful where ``knows``)."""
        known = self._dirs.get(ino)
        return known is not None and name in known.names

    def added(self, ino: int, name: bytes, renew: Ask | None = None) -> None:
        """``name`` was made in ``ino`` through this mount; ``renew``: the Ask of an answer
        that watched the directory again (invariant 4)."""
        known = self._dirs.get(ino)
        if known is None:
            return
        if name not in known.names:
            known.names.add(name)
            self._names += 1
        if (
            renew is not None
            and renew.session == known.ask.session
            and renew.changes == known.ask.changes
            and renew.sent > known.ask.sent
        ):
            known.ask = renew
        self._trim()

    def removed(self, ino: int, name: bytes) -> None:
        known = self._dirs.get(ino)
        if known is not None and name in known.names:
            known.names.discard(name)
            self._names -= 1

    def forget(self, ino: int) -> None:
        self._pinned.discard(ino)
        known = self._dirs.pop(ino, None)
        if known is not None:
            self._names -= len(known.names)

    def _trim(self) -> None:
        while len(self._dirs) > len(self._pinned) and (
            len(self._dirs) > DIRS_MAX or self._names > NAMES_MAX
        ):
            self.forget(next(ino for ino in self._dirs if ino not in self._pinned))

    def __len__(self) -> int:
        return len(self._dirs)
