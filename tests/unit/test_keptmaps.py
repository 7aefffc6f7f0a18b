"""The chunk maps a mount keeps of files read and closed (fusefs/keptmaps.py): handed out
only for the same version, dropped when told, bounded in count and in rows."""

from __future__ import annotations

from fusefs.keptmaps import KeptMaps, map_from_answer, version_of
from fusefs.pieces import Piece

ROWS = {0: Piece("a" * 64, 0, 100), 1: None}
V = (100, 7, 9)  # size, mtime, ctime


def test_a_map_is_handed_out_only_for_the_version_it_was_kept_with() -> None:
    maps = KeptMaps()
    maps.keep(5, V, ROWS)
    assert maps.take(5, (100, 8, 9)) == {}  # another mtime
    assert maps.take(5, (101, 7, 9)) == {}  # another size
    assert maps.take(5, (100, 7, 10)) == {}  # same size and mtime, changed since (ctime)
    assert maps.take(6, V) == {}  # another file
    taken = maps.take(5, V)
    assert taken == ROWS
    taken[0] = None  # the taker's copy: the kept map is unchanged
    assert maps.take(5, V) == ROWS
    attr = {"ino": 5, "size": 100, "mtime_ns": 7, "ctime_ns": 9, "mode": 0o100644}
    assert version_of(attr) == V


def test_a_map_covers_a_file_only_with_every_piece_in_it() -> None:
    """A lookup's map (its first pieces, holes as None) covers a file of fewer pieces."""
    maps = KeptMaps()
    small = map_from_answer([[1, "b" * 64, 0, 10]], 4, 3 * 1024 + 5, 1024)
    assert small == {0: None, 1: Piece("b" * 64, 0, 10), 2: None, 3: None}
    maps.keep(5, (3 * 1024 + 5, 1, 1), small)
    assert maps.covers(5, (3 * 1024 + 5, 1, 1), 1024)
    large = map_from_answer([], 4, 10 * 1024, 1024)  # ten pieces, four in the answer
    maps.keep(6, (10 * 1024, 1, 1), large)
    assert not maps.covers(6, (10 * 1024, 1, 1), 1024)
    assert not maps.covers(5, (3 * 1024 + 5, 2, 1), 1024)  # another version


def test_a_dropped_or_cleared_map_is_gone_and_an_empty_or_large_one_is_not_kept() -> None:
    maps = KeptMaps(rows_max=2)
    maps.keep(5, V, ROWS)
    maps.drop(5)
    assert maps.take(5, V) == {}
    maps.keep(5, V, ROWS)
    maps.clear()
    assert len(maps) == 0
    maps.keep(5, V, {})
    maps.keep(6, V, {0: None, 1: None, 2: None})
    assert len(maps) == 0
    maps.keep(5, V, ROWS)
    maps.keep(5, V, {0: None, 1: None, 2: None})  # grown past the bound: dropped
    assert maps.take(5, V) == {}


def test_the_oldest_maps_go_first_past_the_limit() -> None:
    maps = KeptMaps(limit=3)
    for ino in range(3):
        maps.keep(ino, (1, 1, 1), ROWS)
    assert maps.take(0, (1, 1, 1))  # used: now the newest
    maps.keep(3, (1, 1, 1), ROWS)
    assert len(maps) == 3
    assert maps.take(1, (1, 1, 1)) == {}  # the oldest went
    assert maps.take(0, (1, 1, 1)) and maps.take(3, (1, 1, 1))
