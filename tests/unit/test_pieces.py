from __future__ import annotations

import errno

import pytest
import trio
from hypothesis import given, settings
from hypothesis import strategies as st

from fusefs.pieces import DirtyPiece, Piece, ShortChunk, zero_trimmed

PIECE = 1 << 16


def test_zero_trimming_keeps_only_the_aligned_nonzero_span():
    assert zero_trimmed(bytes(10000)) == (0, b"")
    data = bytes(9000) + b"x" + bytes(9000)
    start, stored = zero_trimmed(data)
    assert start == 8192 and start % 4096 == 0 and len(stored) == 12288 - 8192
    assert (bytes(start) + stored + bytes(len(data)))[:len(data)] == data
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
@given(base_start=st.integers(0, 4).map(lambda k: k * 4096),
       base_length=st.integers(1, PIECE - 4 * 4096), ops=writes, seed=st.integers(0, 255))
def test_patched_piece_reads_and_merges_as_the_writes_over_the_stored_piece(
        base_start, base_length, ops, seed):
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
        model[inner:inner + size] = data
        assert piece.length == len(model)
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
    piece.write(20, b"y" * 50)            # inside the first extent: changed in place
    piece.write(5100, b"z" * 4900)        # joins the second and third extents
    assert piece.memory == 8 * 100 + 5100 and store.fetches == 0 and piece.base is not None
    merged = trio.run(piece.merge, store.fetch)
    assert store.fetches == 1 and len(merged) == PIECE
    assert merged[:100] == b"x" * 20 + b"y" * 50 + b"x" * 30 and merged[5000:10100] == b"x" * 100 + b"z" * 4900 + \
        b"x" * 100 and merged[20000:20100] == b"x" * 100 and merged[200:4000] == \
        store.chunks["c"][200:4000]


def test_a_piece_written_over_entirely_needs_no_base():
    store = Store({"c": b"s" * 10000})
    piece = DirtyPiece(Piece("c", 4096, 10000), held="c")
    piece.write(8192, b"b" * 8000)
    piece.write(0, b"a" * 8192)           # now [0, 16192) covers the stored [4096, 14096)
    assert piece.base is None and piece.content == b"a" * 8192 + b"b" * 8000
    assert trio.run(piece.merge, store.fetch) == b"a" * 8192 + b"b" * 8000
    assert store.fetches == 0


def test_a_stored_chunk_shorter_than_the_map_is_eio_not_zeros():
    piece = DirtyPiece(Piece("c", 0, 5000))
    piece.write(10, b"x")
    with pytest.raises(ShortChunk) as info:
        trio.run(piece.merge, Store({"c": b"short"}).fetch)
    assert info.value.errno == errno.EIO and piece.base is not None  # nothing lost
