"""A piece of a file (one chunk's worth of bytes) as stored, and as written but not stored.

A small write into a stored piece used to read the whole piece first, to change it in memory:
4 KiB written at random cost a 4 MiB read and 4 MiB of memory per piece touched, so a
random writer could keep only a handful of pieces in hand and stored each of them over and
over. ``DirtyPiece`` keeps such writes as extents over the stored piece instead, and reads
the stored bytes once, when the piece is stored (or read) again.
"""

from __future__ import annotations

import errno
from bisect import bisect_left, bisect_right
from collections.abc import Awaitable, Callable
from dataclasses import dataclass

from storaged.rpc import FsError

ZERO_ALIGN = 4096


@dataclass(frozen=True)
class Piece:
    """Bytes [start, start+length) of a piece are the chunk ``cid``; the rest are zeros.

    ``cid`` None is a piece that became all zeros: committing it makes a hole.
    """

    cid: str | None
    start: int
    length: int


def zero_trimmed(data: bytes) -> tuple[int, bytes]:
    """The 4 KiB-aligned span of ``data`` outside which it is all zeros: (start, bytes).

    Storing only that span is what makes holes inside a piece (and written zeros) free.
    """
    head = len(data) - len(data.lstrip(b"\0"))
    if head == len(data):
        return 0, b""
    end = len(data.rstrip(b"\0"))
    start = head - head % ZERO_ALIGN
    end = min(len(data), end + (-end) % ZERO_ALIGN)
    return start, data[start:end]


Fetch = Callable[[str], Awaitable[bytes]]


class DirtyPiece:
    """What this mount wrote into one piece and has not stored yet.

    Two forms. *Whole*: ``content`` is the piece's valid bytes from its start (zeros beyond
    them) — what a writer builds that starts a piece or writes into a hole. *Patched*: the
    written extents over ``base``, a stored piece this mount has not read; it becomes whole
    when written over entirely, or when ``merge`` fetches the base to store the piece.

    ``held`` names a chunk the base depends on that only this mount's session keeps from
    garbage collection (an uploaded, uncommitted piece); the owner releases it once the
    piece no longer needs its base (``base is None``).
    """

    def __init__(self, base: Piece | None = None, held: str | None = None) -> None:
        self.base = base
        self.held = held
        self.content: bytearray | None = bytearray() if base is None else None
        self._starts: list[int] = []       # extent starts, ascending, never touching
        self._extents: list[bytearray] = []

    @classmethod
    def whole(cls, content: bytes) -> DirtyPiece:
        piece = cls()
        piece.content = bytearray(content)
        return piece

    @property
    def memory(self) -> int:
        """Bytes of memory the piece holds (what the mount's unsaved bound counts)."""
        if self.content is not None:
            return len(self.content)
        return sum(map(len, self._extents))

    @property
    def length(self) -> int:
        """Where the piece's valid bytes end."""
        if self.content is not None:
            return len(self.content)
        assert self.base is not None
        written = self._starts[-1] + len(self._extents[-1]) if self._starts else 0
        return max(self.base.start + self.base.length, written)

    def write(self, inner: int, data: bytes | memoryview) -> None:
        """Put ``data`` at offset ``inner`` of the piece."""
        if self.content is not None:
            content = self.content
            if len(content) < inner:
                content.extend(bytes(inner - len(content)))  # a hole inside the piece
            content[inner:inner + len(data)] = data
            return
        self._patch(inner, data)
        assert self.base is not None
        if self._starts == [0] and len(self._extents[0]) >= self.base.start + self.base.length:
            self.content, self.base = self._extents[0], None  # written over: base not needed
            self._starts, self._extents = [], []

    def _patch(self, inner: int, data: bytes | memoryview) -> None:
        end = inner + len(data)
        first = bisect_left(self._starts, inner)
        if first and self._starts[first - 1] + len(self._extents[first - 1]) >= inner:
            first -= 1  # the extent before reaches this write (or ends where it starts)
        last = bisect_right(self._starts, end)  # extents [first, last) touch the write
        if last - first == 1 and self._starts[first] <= inner:
            extent = self._extents[first]  # the common case, a write inside or just past
            start = self._starts[first]    # one extent: change it in place
            if end - start > len(extent):
                extent.extend(bytes(end - start - len(extent)))
            extent[inner - start:end - start] = data
            return
        start = min([inner, *self._starts[first:last]])
        stop = max([end, *(s + len(e) for s, e in zip(self._starts[first:last],
                                                       self._extents[first:last]))])
        merged = bytearray(stop - start)
        for s, e in zip(self._starts[first:last], self._extents[first:last]):
            merged[s - start:s - start + len(e)] = e
        merged[inner - start:end - start] = data
        self._starts[first:last] = [start]
        self._extents[first:last] = [merged]

    async def view(self, fetch: Fetch) -> bytes:
        """The piece's bytes from its start, for a reader; a patched piece stays patched (a
        reader must not turn a few KiB of writes into a whole piece of memory)."""
        if self.content is not None:
            return bytes(self.content)
        return bytes(await self._assembled(fetch))

    async def merge(self, fetch: Fetch) -> bytearray:
        """The piece's bytes from its start, making it whole (to be stored)."""
        if self.content is None:
            merged = await self._assembled(fetch)
            if self.content is None:  # (not made whole meanwhile)
                self.content, self.base = merged, None
                self._starts, self._extents = [], []
        return self.content

    async def _assembled(self, fetch: Fetch) -> bytearray:
        base = self.base
        assert base is not None and base.cid is not None
        stored = await fetch(base.cid)
        if len(stored) < base.length:
            raise ShortChunk(base.cid, len(stored), base.length)
        if self.content is not None:  # written over entirely while the base was fetched
            return self.content
        out = bytearray(self.length)
        out[base.start:base.start + base.length] = memoryview(stored)[:base.length]
        for start, extent in zip(self._starts, self._extents):
            out[start:start + len(extent)] = extent
        return out


class ShortChunk(FsError):
    """A stored chunk is shorter than the file map says: the piece cannot be rebuilt (EIO,
    and nothing is stored from it)."""

    def __init__(self, cid: str, got: int, expected: int) -> None:
        super().__init__(errno.EIO, f"chunk {cid[:12]} has {got} bytes; the file map says "
                                    f"{expected}")
