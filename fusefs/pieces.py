"""A piece of a file (one chunk's worth of bytes) as stored, and as written but not stored.

A small write into a stored piece used to read the whole piece first, to change it in memory:
4 KiB written at random cost a 4 MiB read and 4 MiB of memory per piece touched, so a
random writer could keep only a handful of pieces in hand and stored each of them over and
over. ``DirtyPiece`` keeps such writes as extents over the stored piece instead. When the
piece is stored, its extents become *slices* (packed, with other pieces' slices of the same
flush, into one chunk; laid over the stored piece by the meta role) while the piece has few
of them; past that the stored bytes are read once and the piece is written whole again,
which drops its slices.
"""

from __future__ import annotations

import errno
from bisect import bisect_left, bisect_right
from collections.abc import Awaitable, Callable
from dataclasses import dataclass

from storaged.rpc import FsError

ZERO_ALIGN = 4096


# A patched piece is stored as slices while it would have at most this many, holding at
# most 1/SLICE_SHARE of the piece; past either it is written whole. More slices make every
# later read of the piece fetch more chunks; a rewrite costs the whole piece, R times.
MAX_SLICES = 64
SLICE_SHARE = 4


@dataclass(frozen=True)
class Slice:
    """Bytes [start, start+length) of the piece are chunk ``cid``'s bytes from ``offset``."""

    cid: str
    start: int
    length: int
    offset: int


@dataclass(frozen=True)
class Piece:
    """Bytes [start, start+length) of a piece are the chunk ``cid``; the rest are zeros;
    over them lie ``slices``, in order.

    ``cid`` None (and no slices) is a piece that became all zeros: committing it makes a
    hole.
    """

    cid: str | None
    start: int
    length: int
    slices: tuple[Slice, ...] = ()

    @classmethod
    def from_row(cls, row: list) -> Piece:
        """From the meta role's chunk map: [idx, cid, start, length, slices?]."""
        slices = tuple(Slice(*s) for s in row[4]) if len(row) > 4 else ()
        return cls(row[1], row[2], row[3], slices)

    @property
    def empty(self) -> bool:
        return self.cid is None and not self.slices

    @property
    def end(self) -> int:
        """Where the piece's valid bytes end (zeros after)."""
        end = self.start + self.length if self.cid is not None else 0
        return max([end, *(s.start + s.length for s in self.slices)])

    def overlaid(self, slices: tuple[Slice, ...]) -> Piece:
        return Piece(self.cid, self.start, self.length, self.slices + slices)


@dataclass(frozen=True)
class Patch:
    """Slices stored (in the one chunk ``cid``) for one flush of a patched piece: what the
    commit lays over ``base``, the piece as this mount saw it."""

    base: Piece
    cid: str
    slices: tuple[Slice, ...]

    def committed(self) -> Piece:
        return self.base.overlaid(self.slices)


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
ReadRange = Callable[[str, int, int], Awaitable[bytes]]


async def assemble(piece: Piece, fetch: Fetch) -> bytearray:
    """The piece's bytes from its offset 0 to its end: its chunk, then its slices over it."""
    out = bytearray(piece.end)
    if piece.cid is not None:
        stored = await fetch(piece.cid)
        if len(stored) < piece.length:
            raise ShortChunk(piece.cid, len(stored), piece.length)
        out[piece.start : piece.start + piece.length] = memoryview(stored)[: piece.length]
    for s in piece.slices:
        out[s.start : s.start + s.length] = await _slice_bytes(s, fetch)
    return out


async def read_range(piece: Piece, lo: int, hi: int, read: ReadRange) -> bytearray:
    """Bytes [lo, hi) of the piece; ``read(cid, offset, length)`` gives part of a chunk (a
    ranged read, or from the cache): a slice's chunk holds the slices of many pieces."""
    out = bytearray(hi - lo)
    parts = [] if piece.cid is None else [(piece.cid, piece.start, piece.length, 0)]
    for cid, start, length, offset in parts + [
        (s.cid, s.start, s.length, s.offset) for s in piece.slices
    ]:
        a, b = max(lo, start), min(hi, start + length)
        if a < b:
            at = offset + a - start
            got = await read(cid, at, b - a)
            if len(got) != b - a:
                raise ShortChunk(cid, at + len(got), offset + length)
            out[a - lo : b - lo] = got
    return out


async def _slice_bytes(s: Slice, fetch: Fetch) -> memoryview:
    stored = await fetch(s.cid)
    if len(stored) < s.offset + s.length:
        raise ShortChunk(s.cid, len(stored), s.offset + s.length)
    return memoryview(stored)[s.offset : s.offset + s.length]


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
        self._starts: list[int] = []  # extent starts, ascending, never touching
        self._extents: list[bytearray] = []
        self._extent_bytes = 0  # sum of the extents' lengths (asked on every write)

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
        return self._extent_bytes

    @property
    def length(self) -> int:
        """Where the piece's valid bytes end."""
        if self.content is not None:
            return len(self.content)
        assert self.base is not None
        written = self._starts[-1] + len(self._extents[-1]) if self._starts else 0
        return max(self.base.end, written)

    def as_slices(self) -> list[tuple[int, bytearray]] | None:
        """The written extents [(start, bytes), ...] if the piece should be stored as slices
        over its base (patched, few and small enough); None if it should be stored whole."""
        if self.content is not None or self.held is not None or not self._extents:
            return None  # (held: an uncommitted base, which only a whole piece can replace)
        assert self.base is not None
        slices = self.base.slices
        if len(slices) + len(self._extents) > MAX_SLICES:
            return None
        piece_size = max(self.length, 1)
        if sum(s.length for s in slices) + self.memory > piece_size // SLICE_SHARE:
            return None
        return list(zip(self._starts, self._extents))

    def write(self, inner: int, data: bytes | memoryview) -> None:
        """Put ``data`` at offset ``inner`` of the piece."""
        if self.content is not None:
            content = self.content
            if len(content) < inner:
                content.extend(bytes(inner - len(content)))  # a hole inside the piece
            content[inner : inner + len(data)] = data
            return
        self._patch(inner, data)
        assert self.base is not None
        if self._starts == [0] and len(self._extents[0]) >= self.base.end:
            self.content, self.base = self._extents[0], None  # written over: base not needed
            self._starts, self._extents, self._extent_bytes = [], [], 0

    def _patch(self, inner: int, data: bytes | memoryview) -> None:
        end = inner + len(data)
        first = bisect_left(self._starts, inner)
        if first and self._starts[first - 1] + len(self._extents[first - 1]) >= inner:
            first -= 1  # the extent before reaches this write (or ends where it starts)
        last = bisect_right(self._starts, end)  # extents [first, last) touch the write
        if last - first == 1 and self._starts[first] <= inner:
            extent = self._extents[first]  # the common case, a write inside or just past
            start = self._starts[first]  # one extent: change it in place
            if end - start > len(extent):
                self._extent_bytes += end - start - len(extent)
                extent.extend(bytes(end - start - len(extent)))
            extent[inner - start : end - start] = data
            return
        start = min([inner, *self._starts[first:last]])
        stop = max(
            [
                end,
                *(s + len(e) for s, e in zip(self._starts[first:last], self._extents[first:last])),
            ]
        )
        merged = bytearray(stop - start)
        for s, e in zip(self._starts[first:last], self._extents[first:last]):
            merged[s - start : s - start + len(e)] = e
        merged[inner - start : end - start] = data
        self._extent_bytes += len(merged) - sum(map(len, self._extents[first:last]))
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
                self._starts, self._extents, self._extent_bytes = [], [], 0
        return self.content

    async def _assembled(self, fetch: Fetch) -> bytearray:
        assert self.base is not None and not self.base.empty
        out = await assemble(self.base, fetch)
        if self.content is not None:  # written over entirely while the base was fetched
            return self.content
        out.extend(bytes(self.length - len(out)))
        for start, extent in zip(self._starts, self._extents):
            out[start : start + len(extent)] = extent
        return out


class ShortChunk(FsError):
    """A stored chunk is shorter than the file map says: the piece cannot be rebuilt (EIO,
    and nothing is stored from it)."""

    def __init__(self, cid: str, got: int, expected: int) -> None:
        super().__init__(
            errno.EIO, f"chunk {cid[:12]} has {got} bytes; the file map says {expected}"
        )
