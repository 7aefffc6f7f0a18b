"""Which inodes the meta role keeps for this mount: an inode lives until the kernel forgets it.

The kernel references an inode from the reply that handed it over (LOOKUP, CREATE, MKNOD,
MKDIR, SYMLINK, LINK, each entry of a READDIRPLUS) until FORGET brings its lookup count back
to 0: through a cached dentry, a bind mount, a process's working directory, with or without
an open file. Until then it may ask for the inode's attributes, and POSIX programs expect an
answer even when the inode's last name is gone (kubelet stats a subPath bind mount whose
directory was deleted before it unmounts it; a shell whose cwd was removed runs `stat .`).
So the meta role keeps an orphan (nlink 0) while any mount session holds it, and this mount
holds what its kernel references:

- with the reply that creates the reference, where one round trip carries it anyway: an
  open (``fs.open``), a create of any kind (``fs.mknod`` with the session), and the victim
  of an unlink, rmdir or rename through this mount (held in the deleting transaction: the
  kernel looked its name up, so this mount references it);
- everything else in batches (``session.hold`` with what to add and what to drop), at most
  ``SYNC_SECONDS`` after the change: the kernel looks up far more inodes than anything ever
  deletes, and a hold per LOOKUP would put work on the hottest path for a rare case.

Invariants: ``held`` is what the meta role holds for the current session, as far as this
mount knows (a batch is applied to it when its answer arrives, and it is emptied when a new
session starts); an inode whose referenced state may differ from ``held`` is in ``dirty``.
An inode that turns referenced again while its drop is on the way is marked dirty again, so
the next batch adds it back.

What the batching costs, stated: an inode that this mount's kernel looked up less than
``SYNC_SECONDS`` ago, and that another mount deletes within that window, is deleted as
before this module (stat here answers ENOENT). Deletions through this mount never are.
"""

from __future__ import annotations

from collections.abc import Callable

from storaged.metaclient import MetaFeatures

SYNC_SECONDS = 0.5


class KernelHolds:
    """The bookkeeping; the mount (operations.py) sends the batches."""

    def __init__(
        self, referenced: Callable[[int], bool], features: MetaFeatures | None = None
    ) -> None:
        self.referenced = referenced  # does the kernel (or an open file) still use ino?
        self.held: set[int] = set()
        self.dirty: set[int] = set()
        # what the meta role can do: holds are off against one without session.hold
        self.features = features if features is not None else MetaFeatures()

    @property
    def enabled(self) -> bool:
        return self.features.holds

    @enabled.setter
    def enabled(self, value: bool) -> None:
        self.features.holds = value

    def changed(self, ino: int) -> None:
        """``ino`` became referenced, or stopped being: the next batch looks at it."""
        self.dirty.add(ino)

    def took(self, ino: int) -> None:
        """The meta role holds ``ino`` for us now (a reply that carried the hold)."""
        self.held.add(ino)

    def dropped(self, inos: list[int]) -> None:
        """The meta role no longer holds these for us (a release or forget answered)."""
        self.held.difference_update(inos)

    def batch(self) -> tuple[list[int], list[int]]:
        """(add, drop) to send now; the dirty set is taken. Give it back with ``failed``
        if the batch was not applied."""
        dirty, self.dirty = self.dirty, set()
        add = [i for i in dirty if i not in self.held and self.referenced(i)]
        drop = [i for i in dirty if i in self.held and not self.referenced(i)]
        return add, drop

    def applied(self, add: list[int], drop: list[int]) -> None:
        self.held.update(add)
        self.held.difference_update(drop)

    def failed(self, add: list[int], drop: list[int]) -> None:
        self.dirty.update(add)
        self.dirty.update(drop)

    def new_session(self, referenced: list[int]) -> None:
        """A new session was given ``referenced`` (what the kernel used when it began);
        what changed since is still in ``dirty``."""
        self.held = set(referenced)
