"""Writing a new chunk file with O_DIRECT: past the page cache, from an aligned buffer.

Why: on this project's test machine (ext4 on a virtual disk) a buffered ``write`` of 4 MiB
and its ``fsync`` cost the writing process 1.3-10 ms of CPU — the copy into the page cache,
the dirty-page bookkeeping and the writeback that ``fsync`` then performs — against 0.4 ms
for the same write with O_DIRECT, plus 0.1 ms to copy the bytes into the aligned buffer
(docs/performance.md, "Large files"). That copy is the chunk servers' largest single cost
in a large write. Nothing is lost by skipping the cache: a chunk server does not read back
what it just stored (mounts cache what they write), and reads of cold chunks went to the
disk anyway.

Durability is unchanged: the caller still ``fsync``s, which writes the file's size and
extents and flushes the disk's own cache; O_DIRECT alone promises neither.

O_DIRECT wants the buffer's address, the length and the file offset aligned to the
device's logical block size. Page-aligned anonymous memory and lengths rounded up to
4 KiB satisfy every common device; the file is then cut back to the chunk's length. A
filesystem that refuses O_DIRECT (EINVAL) gets buffered writes from then on, with one
warning.
"""

from __future__ import annotations

import errno
import fcntl
import logging
import mmap
import os
import threading

log = logging.getLogger("storaged.chunk")

ALIGN = 4096
MiB = 1024 * 1024
# A thread keeps its buffer for its next write up to this size (8 write at a time, and
# trio's idle worker threads end after 10 s, freeing theirs); larger chunks get a buffer of
# their own, released after the write.
KEEP_BUFFER = 16 * MiB


class ChunkWriter:
    """Writes whole files, O_DIRECT where the filesystem takes it; thread-safe."""

    def __init__(self, direct: bool = True) -> None:
        self.direct = direct
        self.direct_writes = 0  # how the files were written: for tests and metrics
        self.buffered_writes = 0
        self._local = threading.local()
        self._count_lock = threading.Lock()

    def write(self, fd: int, data: bytes | bytearray) -> None:
        """Write ``data`` at offset 0 of the empty file ``fd`` (opened for writing, without
        O_DIRECT or O_APPEND). No fsync: the caller's."""
        if not (self.direct and len(data) and self._write_direct(fd, data)):
            _write_from(fd, memoryview(data), 0)
            with self._count_lock:
                self.buffered_writes += 1

    def _write_direct(self, fd: int, data: bytes | bytearray) -> bool:
        """True if written; False if this filesystem refused O_DIRECT (nothing written)."""
        flags = fcntl.fcntl(fd, fcntl.F_GETFL)
        try:
            fcntl.fcntl(fd, fcntl.F_SETFL, flags | os.O_DIRECT)
        except OSError as exc:
            if exc.errno != errno.EINVAL:
                raise
            self._refused(exc)
            return False
        size = len(data)
        padded = -(-size // ALIGN) * ALIGN
        buffer, own = self._buffer(padded)
        try:
            buffer[:size] = data
            buffer[size:padded] = bytes(padded - size)
            with memoryview(buffer)[:padded] as view:
                try:
                    done = _write_from(fd, view, 0, aligned_only=True)
                except OSError as exc:
                    if exc.errno != errno.EINVAL:
                        raise
                    done = None
                finally:
                    fcntl.fcntl(fd, fcntl.F_SETFL, flags)
                if done is None:  # the filesystem took the flag but not the write
                    self._refused(OSError(errno.EINVAL, "O_DIRECT write refused"))
                    os.ftruncate(fd, 0)
                    return False
                if done < padded:  # a short write left off unaligned: finish it buffered
                    _write_from(fd, view, done)
        finally:
            if own:
                buffer.close()
        if padded != size:
            os.ftruncate(fd, size)
        with self._count_lock:
            self.direct_writes += 1
        return True

    def _buffer(self, size: int) -> tuple[mmap.mmap, bool]:
        """An aligned buffer of at least ``size`` bytes, and whether it is this call's own."""
        if size > KEEP_BUFFER:
            return mmap.mmap(-1, size), True
        kept: mmap.mmap | None = getattr(self._local, "buffer", None)
        if kept is None or len(kept) < size:
            if kept is not None:
                kept.close()
            kept = self._local.buffer = mmap.mmap(-1, -(-size // MiB) * MiB)
        return kept, False

    def _refused(self, exc: OSError) -> None:
        if self.direct:
            self.direct = False
            log.warning(
                "this filesystem does not take O_DIRECT writes (%s); chunks are "
                "written through the page cache from now on",
                exc,
            )


def _write_from(fd: int, view: memoryview, offset: int, *, aligned_only: bool = False) -> int:
    """Write ``view[offset:]`` at that offset of the file; where it stopped. With
    ``aligned_only`` (O_DIRECT), it stops early where a short write left the offset
    unaligned: the rest must then go through the page cache."""
    while offset < len(view):
        written = os.pwrite(fd, view[offset:], offset)
        if written <= 0:
            raise OSError(errno.EIO, "the disk wrote nothing")
        offset += written
        if aligned_only and offset % ALIGN:
            break
    return offset
