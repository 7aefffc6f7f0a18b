"""The receive-buffer pool: reuse only what nobody holds, within its byte bound."""

from __future__ import annotations

from storaged.rpc.buffers import BufferPool


def test_a_buffer_nobody_holds_comes_back_for_the_same_size_only():
    pool = BufferPool(keep=100)
    first = pool.take(10)
    holder = ["x", first]
    del first
    assert pool.give_back(holder, -1) and holder == ["x", None]
    assert len(pool.take(20)) == 20 and pool.reused == 0  # another size: a new one
    again = pool.take(10)
    assert len(again) == 10 and (pool.reused, pool.allocated, pool.kept) == (1, 2, 0)


def test_a_buffer_still_referenced_elsewhere_is_not_kept():
    pool = BufferPool(keep=100)
    buffer = pool.take(10)
    holder = [buffer]
    assert not pool.give_back(holder, 0) and pool.kept == 0  # `buffer` still names it
    assert pool.give_back([b"bytes"], 0) is False  # not a bytearray: nothing to keep


def test_the_bound_holds_and_other_sizes_make_room():
    pool = BufferPool(keep=30)
    for size in (10, 10, 5):
        assert pool.give_back([bytearray(size)], 0)
    assert pool.kept == 25
    assert pool.give_back([bytearray(15)], 0)  # evicts the 10s and the 5 as needed
    assert pool.kept <= 30 and pool.take(15) is not None and pool.reused == 1
    assert not pool.give_back([bytearray(31)], 0)  # larger than the whole bound
