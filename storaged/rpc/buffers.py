"""Receive buffers for large requests, used again instead of allocated anew.

Why: a fresh 4 MiB bytearray is fresh memory from the kernel (glibc serves allocations
this large with mmap, or trims them back off the heap when freed), so every put paid a page
fault and a kernel zeroing per 4 KiB page, then Python's own zeroing of the whole buffer:
profiled on a chunk server, that was its largest CPU cost once the bytes themselves were
no longer copied. A buffer that comes back is already mapped and needs no zeroing — the
socket's bytes overwrite all of it before its request is handed on.

A buffer comes back only when nothing but the returning code holds it (its reference
count says so), so a handler that keeps the bytes it was given (a cache, a log record)
keeps its own copy safe: the pool simply does not get that one back.
"""

from __future__ import annotations

import sys
import threading

MiB = 1024 * 1024


class BufferPool:
    """Bytearrays of exact sizes (a request's length is its bytes' length), at most
    ``keep`` bytes of them waiting; thread-safe."""

    def __init__(self, keep: int = 32 * MiB) -> None:
        self.keep = keep
        self.kept = 0
        self.reused = 0  # counters: what the pool saved, for tests and curiosity
        self.allocated = 0
        self._free: dict[int, list[bytearray]] = {}
        self._lock = threading.Lock()

    def take(self, size: int) -> bytearray:
        """A bytearray of ``size`` bytes whose contents are arbitrary: fill it whole."""
        with self._lock:
            waiting = self._free.get(size)
            if waiting:
                self.kept -= size
                self.reused += 1
                return waiting.pop()
            self.allocated += 1
        return bytearray(size)

    def give_back(self, holder: list, index: int) -> bool:
        """Take ``holder[index]`` (a list's element, e.g. a request's last parameter) out of
        the list and keep it for reuse, if nothing else refers to it. True if kept."""
        buffer = holder[index]
        if type(buffer) is not bytearray:
            return False
        holder[index] = None
        # What may refer to it now: ``buffer`` here and getrefcount's own argument.
        if sys.getrefcount(buffer) > 2:
            return False
        size = len(buffer)
        if size > self.keep:
            return False
        with self._lock:
            while self.kept + size > self.keep:  # make room: other sizes go first
                other = next((s for s in self._free if s != size), size)
                waiting = self._free[other]
                waiting.pop()
                self.kept -= other
                if not waiting:
                    del self._free[other]
            self._free.setdefault(size, []).append(buffer)
            self.kept += size
        return True
