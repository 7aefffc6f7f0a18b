from __future__ import annotations

from fusefs.filedata import zero_trimmed


def test_zero_trimming_keeps_only_the_aligned_nonzero_span():
    assert zero_trimmed(bytes(10000)) == (0, b"")
    data = bytes(9000) + b"x" + bytes(9000)
    start, stored = zero_trimmed(data)
    assert start == 8192 and start % 4096 == 0 and len(stored) == 12288 - 8192
    assert (bytes(start) + stored + bytes(len(data)))[:len(data)] == data
    assert zero_trimmed(b"abc") == (0, b"abc")
