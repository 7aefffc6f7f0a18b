from __future__ import annotations

import collections

from storaged.chunk.ids import chunk_id
from storaged.data.placement import Server, placement_order


def servers(n: int, zones: int | None = None, capacity: int = 100) -> list[Server]:
    return [
        Server(f"s{i}", f"tcp://h:{i}", f"z{i % (zones or n)}", capacity, capacity, True)
        for i in range(n)
    ]


IDS = [chunk_id(str(i).encode()) for i in range(3000)]


def test_same_map_same_answer_in_any_order():
    a = servers(5)
    for cid in IDS[:100]:
        assert placement_order(cid, a) == placement_order(cid, list(reversed(a)))


def test_first_places_take_distinct_zones():
    cluster = servers(6, zones=3)
    for cid in IDS[:300]:
        first3 = placement_order(cid, cluster)[:3]
        assert len({s.zone for s in first3}) == 3


def test_load_follows_capacity():
    cluster = servers(3) + [Server("big", "tcp://h:9", "zbig", 300, 300, True)]
    counts = collections.Counter(placement_order(cid, cluster)[0].id for cid in IDS)
    share = counts["big"] / len(IDS)
    assert 0.45 < share < 0.55, counts  # 300 of 600 total capacity


def test_adding_a_server_moves_only_what_it_takes():
    before = servers(4)
    after = before + [Server("new", "tcp://h:99", "znew", 100, 100, True)]
    moved = 0
    for cid in IDS:
        old_first = placement_order(cid, before)[0]
        new_first = placement_order(cid, after)[0]
        if old_first != new_first:
            assert new_first.id == "new"  # nothing shuffles between the old servers
            moved += 1
    assert 0.15 < moved / len(IDS) < 0.25  # about 1/5 of the chunks go to the new server
