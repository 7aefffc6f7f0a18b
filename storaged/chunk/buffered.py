"""Small chunks stored at once and put on disk together: the chunk role's group sync.

Why: a close of a small written file waited for a durable put on each of two chunk
servers: a write, an ``fsync`` of the file, a rename and an ``fsync`` of its directory,
~0.9 ms of disk waits on this project's test machine for a 16 KiB chunk (0.1 ms without
the fsyncs), on the path of every close, and a worker thread's hop to do it. The
durability rules ask a close for its data *on R chunk servers*; only ``fsync`` (and its
kin, and unmount) ask for it on their disks. So a small chunk may be written to the page
cache and renamed into place (``ChunkStore.put(durable=False)``), and made durable
together with every other one by one ``syncfs`` of the store's filesystem:

- within ``SYNC_SECONDS`` (``--sync-interval``) by the chunk server's own loop (the bound
  the README states: a power loss of the machine inside it can take those chunks, as
  ext4's commit interval can take a file's data; a SIGKILL of the process cannot: the
  pages are the kernel's);
- at once when a client asks (``chunk.sync``): every buffered put this server answered
  before the call is on its disk when the answer comes. A mount's ``fsync`` asks every
  server it sent buffered puts to since it last asked.

Invariants:

1. A put's chunk is named in ``pending`` from before its answer until a ``syncfs`` that
   began after it was named has returned without error (``sync`` swaps the set out first:
   a put named meanwhile waits for the next pass).
2. A durable put of bytes already here from a buffered put (deduplicated) makes that file
   durable itself (``ChunkStore.put``): it cannot wait for a pass. Likewise a fan-out
   directory made for a buffered put (made without fsyncing its parent: on a fresh
   store nearly every put makes one, and two fsyncs on the event loop cost more than
   the put) has its name fsynced by the first durable put into it before the pass.
3. ``boot`` is the kernel's boot id: pages written before it changed may be gone (the
   machine restarted before a pass). A client whose buffered puts were answered under
   another boot than its ``chunk.sync``'s cannot know they reached the disk, and says so
   (storaged/data/client.py). Under the same boot, a process that died (SIGKILL) left
   its pages to the kernel: its successor makes them durable with one ``syncfs`` when it
   opens the store, before it answers anything.
4. A ``syncfs`` that fails (EIO, a disk gone) puts its chunks back into ``pending`` and
   raises: the ``chunk.sync`` caller hears it; the loop logs it and tries again.

Large chunks are not buffered (``BUFFERED_MAX``): their writes go past the page cache
(direct.py) and are made durable one by one as before.
"""

from __future__ import annotations

import ctypes
import os
import threading
from pathlib import Path

SYNC_SECONDS = 0.25  # a buffered put is on disk at most this long after its answer (default)
BUFFERED_MAX = 128 * 1024  # larger chunks are always put durably

_libc = ctypes.CDLL(None, use_errno=True)


def syncfs(fd: int) -> None:
    """syncfs(2): everything written to the filesystem holding ``fd`` reaches its disk
    (Python's os module has sync and fsync, not this)."""
    if _libc.syncfs(fd) != 0:
        err = ctypes.get_errno()
        raise OSError(err, os.strerror(err))


def boot_id() -> str:
    """The kernel's boot id: changes when the machine restarts (invariant 3)."""
    try:
        return Path("/proc/sys/kernel/random/boot_id").read_text().strip()
    except OSError:
        return ""


class BufferedPuts:
    """The chunks put without their own fsync, until a pass makes them durable.
    Thread-safe: puts run on the event loop, passes in worker threads."""

    def __init__(self) -> None:
        self.boot = boot_id()
        self.passes = 0  # syncfs calls made
        self._lock = threading.Lock()
        self._pass_lock = threading.Lock()  # one pass at a time
        # chunk ids buffered, and fan-out directories made for them, names not fsynced
        # (paths: with a "/", never a chunk id; a durable put into one fsyncs its
        # parent, invariant 2): none since a pass began, and those of the pass under way
        self._pending: set[str] = set()
        self._syncing: set[str] = set()

    def added(self, name: str) -> None:
        """A chunk id, or a directory's path, whose name is not on disk yet."""
        with self._lock:
            self._pending.add(name)

    def waiting(self, name: str) -> bool:
        """Is the chunk (or directory) ``name`` possibly not on disk yet?"""
        with self._lock:
            return name in self._pending or name in self._syncing

    def __len__(self) -> int:
        """Chunks waiting for a pass (directories not counted)."""
        with self._lock:
            return sum("/" not in name for name in self._pending)

    def sync(self, fd: int) -> int:
        """Every chunk buffered before this call is on disk when it returns; the number
        this pass covered (0 when a pass under way at the call covered them all)."""
        with self._pass_lock:
            with self._lock:
                self._syncing, self._pending = self._pending, set()
            if not self._syncing:
                return 0
            covered = sum("/" not in name for name in self._syncing)
            try:
                syncfs(fd)
                self.passes += 1
            except OSError:
                with self._lock:
                    self._pending |= self._syncing
                raise
            finally:
                with self._lock:
                    self._syncing = set()
            return covered
