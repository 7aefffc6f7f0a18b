"""The chunk maps a mount keeps of files read and closed (fusefs/keptmaps.py): handed out
only for the same version, dropped when told, bounded in count and in rows."""

from __future__ import annotations

from fusefs.keptmaps import KeptMaps
from fusefs.pieces import Piece

ROWS = {0: Piece("a" * 64, 0, 100), 1: None}


def test_a_map_is_handed_out_only_for_the_version_it_was_kept_with() -> None:
    maps = KeptMaps()
    maps.keep(5, 100, 7, ROWS)
    assert maps.take(5, 100, 8) == {}  # another mtime
    assert maps.take(5, 101, 7) == {}  # another size
    assert maps.take(6, 100, 7) == {}  # another file
    taken = maps.take(5, 100, 7)
    assert taken == ROWS
    taken[0] = None  # the taker's copy: the kept map is unchanged
    assert maps.take(5, 100, 7) == ROWS


def test_a_dropped_or_cleared_map_is_gone_and_an_empty_or_large_one_is_not_kept() -> None:
    maps = KeptMaps(rows_max=2)
    maps.keep(5, 100, 7, ROWS)
    maps.drop(5)
    assert maps.take(5, 100, 7) == {}
    maps.keep(5, 100, 7, ROWS)
    maps.clear()
    assert len(maps) == 0
    maps.keep(5, 100, 7, {})
    maps.keep(6, 100, 7, {0: None, 1: None, 2: None})
    assert len(maps) == 0
    maps.keep(5, 100, 7, ROWS)
    maps.keep(5, 100, 7, {0: None, 1: None, 2: None})  # grown past the bound: dropped
    assert maps.take(5, 100, 7) == {}


def test_the_oldest_maps_go_first_past_the_limit() -> None:
    maps = KeptMaps(limit=3)
    for ino in range(3):
        maps.keep(ino, 1, 1, ROWS)
    assert maps.take(0, 1, 1)  # used: now the newest
    maps.keep(3, 1, 1, ROWS)
    assert len(maps) == 3
    assert maps.take(1, 1, 1) == {}  # the oldest went
    assert maps.take(0, 1, 1) and maps.take(3, 1, 1)
