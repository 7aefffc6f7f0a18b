from __future__ import annotations

import errno
import itertools
import random

import pytest
import trio
from hypothesis import given, settings
from hypothesis import strategies as st

from fusefs.pieces import (
    MAX_SLICES,
    SLICE_SHARE,
    DirtyPiece,
    Piece,
    ShortChunk,
    Slice,
    assemble,
    read_range,
    zero_trimmed,
)

PIECE = 1 << 16


def test_zero_trimming_keeps_only_the_aligned_nonzero_span():
    assert zero_trimmed(bytes(10000)) == (0, b"")
    data = bytes(9000) + b"x" + bytes(9000)
    start, stored = zero_trimmed(data)
    assert start == 8192 and start % 4096 == 0 and len(stored) == 12288 - 8192
    assert (bytes(start) + stored + bytes(len(data)))[: len(data)] == data
    assert zero_trimmed(b"abc") == (0, b"abc")


class Store:
    """A chunk server stand-in that counts fetches."""

    def __init__(self, chunks: dict[str, bytes]) -> None:
        self.chunks = chunks
        self.fetches = 0

    async def fetch(self, cid: str) -> bytes:
        self.fetches += 1
        await trio.lowlevel.checkpoint()
        return self.chunks[cid]


writes = st.lists(st.tuples(st.integers(0, PIECE - 1), st.integers(1, 9000)), max_size=40)


@settings(max_examples=300, deadline=None)
@given(
    base_start=st.integers(0, 4).map(lambda k: k * 4096),
    base_length=st.integers(1, PIECE - 4 * 4096),
    ops=writes,
    seed=st.integers(0, 255),
)
def test_patched_piece_reads_and_merges_as_the_writes_over_the_stored_piece(
    base_start, base_length, ops, seed
):
    stored = bytes((seed + i) % 251 for i in range(base_length))
    model = bytearray(base_start) + bytearray(stored)  # the piece's valid bytes
    store = Store({"c": stored + b"tail beyond the map's length"})
    piece = DirtyPiece(Piece("c", base_start, base_length))
    for n, (inner, size) in enumerate(ops):
        size = min(size, PIECE - inner)
        data = bytes([n % 256]) * size
        piece.write(inner, data)
        if len(model) < inner:
            model.extend(bytes(inner - len(model)))
        model[inner : inner + size] = data
        assert piece.length == len(model)
        kept = piece.content if piece.content is not None else b"".join(piece._extents)
        assert piece.memory == len(kept)  # (kept as a running sum)
    written = sum(min(s, PIECE - i) for i, s in ops)
    assert piece.memory <= max(written, len(model))  # no more than the writes (or the piece)
    assert trio.run(piece.view, store.fetch) == model
    assert piece.content is None or piece.base is None  # a view does not make it whole
    assert trio.run(piece.merge, store.fetch) == model
    assert piece.base is None and piece.content == model
    assert trio.run(piece.view, store.fetch) == model


def test_small_writes_into_a_stored_piece_take_their_own_size_and_no_read():
    store = Store({"c": bytes(range(256)) * (PIECE // 256)})
    piece = DirtyPiece(Piece("c", 0, PIECE), held="c")
    for k in range(10):
        piece.write(k * 5000, b"x" * 100)
    piece.write(20, b"y" * 50)  # inside the first extent: changed in place
    piece.write(5100, b"z" * 4900)  # joins the second and third extents
    assert piece.memory == 8 * 100 + 5100 and store.fetches == 0 and piece.base is not None
    merged = trio.run(piece.merge, store.fetch)
    assert store.fetches == 1 and len(merged) == PIECE
    assert (
        merged[:100] == b"x" * 20 + b"y" * 50 + b"x" * 30
        and merged[5000:10100] == b"x" * 100 + b"z" * 4900 + b"x" * 100
        and merged[20000:20100] == b"x" * 100
        and merged[200:4000] == store.chunks["c"][200:4000]
    )


def test_a_piece_written_over_entirely_needs_no_base():
    store = Store({"c": b"s" * 10000})
    piece = DirtyPiece(Piece("c", 4096, 10000), held="c")
    piece.write(8192, b"b" * 8000)
    piece.write(0, b"a" * 8192)  # now [0, 16192) covers the stored [4096, 14096)
    assert piece.base is None and piece.content == b"a" * 8192 + b"b" * 8000
    assert trio.run(piece.merge, store.fetch) == b"a" * 8192 + b"b" * 8000
    assert store.fetches == 0


def test_a_stored_chunk_shorter_than_the_map_is_eio_not_zeros():
    piece = DirtyPiece(Piece("c", 0, 5000))
    piece.write(10, b"x")
    with pytest.raises(ShortChunk) as info:
        trio.run(piece.merge, Store({"c": b"short"}).fetch)
    assert info.value.errno == errno.EIO and piece.base is not None  # nothing lost


def _apply(dirty: DirtyPiece, model: bytearray, ops, mark: int) -> None:
    for n, (inner, size) in enumerate(ops):
        size = min(size, PIECE - inner)
        data = bytes([(mark * 41 + n) % 256 or 1]) * size
        dirty.write(inner, data)
        if len(model) < inner:
            model.extend(bytes(inner - len(model)))
        model[inner : inner + size] = data


@settings(max_examples=200, deadline=None)
@given(
    rounds=st.lists(
        st.lists(st.tuples(st.integers(0, PIECE - 1), st.integers(1, 3000)), max_size=12),
        min_size=1,
        max_size=5,
    ),
    base_length=st.integers(1, PIECE),
    seed=st.integers(0, 10_000),
)
def test_flushes_stored_as_slices_read_back_as_the_writes(rounds, base_length, seed):
    """Each round is a flush of writes into the piece as stored: its extents become slices
    over the piece (what the meta role commits), or the piece is written whole. After every
    round, assembling the piece and reading any range of it give the model's bytes."""
    rng = random.Random(seed)
    chunks = {"base": bytes(rng.randrange(1, 256) for _ in range(base_length))}
    store = Store(chunks)

    async def read(cid: str, offset: int, length: int) -> bytes:
        return chunks[cid][offset : offset + length]

    piece, model = Piece("base", 0, base_length), bytearray(chunks["base"])
    for r, ops in enumerate(rounds):
        dirty = DirtyPiece(piece)
        _apply(dirty, model, ops, r)
        extents = dirty.as_slices()
        if extents is None:
            whole = trio.run(dirty.merge, store.fetch)
            chunks[f"w{r}"] = bytes(whole)
            piece = Piece(f"w{r}", 0, len(whole))
        else:
            assert len(piece.slices) + len(extents) <= MAX_SLICES
            chunks[f"s{r}"] = b"".join(e for _, e in extents)
            offsets = itertools.accumulate((len(e) for _, e in extents), initial=0)
            piece = piece.overlaid(
                tuple(Slice(f"s{r}", start, len(e), o) for (start, e), o in zip(extents, offsets))
            )
        assert piece.end == len(model)
        assert trio.run(assemble, piece, store.fetch) == model
        for _ in range(5):
            lo = rng.randrange(len(model))
            hi = rng.randrange(lo, len(model)) + 1
            assert trio.run(read_range, piece, lo, hi, read) == model[lo:hi]


def test_few_small_writes_become_slices_and_many_make_the_piece_whole():
    base = Piece("c", 0, PIECE)
    few = DirtyPiece(base)
    for k in range(8):
        few.write(k * 8000, b"x" * 100)
    assert [(s, bytes(e)) for s, e in few.as_slices()] == [(k * 8000, b"x" * 100) for k in range(8)]
    crowded = DirtyPiece(
        base.overlaid(tuple(Slice("s", k * 100, 10, 0) for k in range(MAX_SLICES - 1)))
    )
    crowded.write(60000, b"a")
    assert crowded.as_slices() is not None
    crowded.write(62000, b"b")  # one slice too many
    assert crowded.as_slices() is None
    big = DirtyPiece(base)
    big.write(0, b"y" * (PIECE // SLICE_SHARE + 1))  # more than a share of the piece
    assert big.as_slices() is None
    held = DirtyPiece(base, held="c")  # an uncommitted base: only a whole piece replaces it
    held.write(10, b"z")
    assert held.as_slices() is None


def test_a_slice_chunk_shorter_than_the_map_is_eio():
    piece = Piece("c", 0, 100, (Slice("s", 10, 50, 20),))
    store = Store({"c": bytes(100), "s": bytes(60)})
    with pytest.raises(ShortChunk) as info:
        trio.run(assemble, piece, store.fetch)
    assert info.value.errno == errno.EIO


def test_a_piece_from_the_chunk_map_with_slices_and_no_chunk():
    piece = Piece.from_row([3, None, 0, 0, [["s", 100, 10, 0], ["t", 105, 10, 5]]])
    assert piece.cid is None and not piece.empty and piece.end == 115
    store = Store({"s": b"a" * 10, "t": b"-----" + b"b" * 10})
    assert trio.run(assemble, piece, store.fetch) == bytes(100) + b"aaaaa" + b"b" * 10
    assert Piece.from_row([3, "c", 0, 9]) == Piece("c", 0, 9)


def test_patches_are_packed_into_chunks_of_at_most_a_piece():
    from fusefs.filedata import _packed

    sizes = {1: 300, 2: 500, 5: 300, 7: 1000, 9: 1}
    assert _packed(list(sizes), sizes.__getitem__, 1000) == [[1, 2], [5], [7], [9]]
    assert _packed([], sizes.__getitem__, 1000) == []
