from __future__ import annotations

import trio
from trio.testing import trio_test

from storaged.rpc.budget import ByteBudget, payload_size


@trio_test
async def test_waits_until_bytes_are_released_and_lets_a_huge_request_run_alone():
    budget = ByteBudget(100)
    await budget.acquire(60)
    order: list[str] = []

    async def second() -> None:
        await budget.acquire(60)
        order.append("second")

    async with trio.open_nursery() as nursery:
        nursery.start_soon(second)
        await trio.sleep(0.05)
        assert order == []  # 60 + 60 > 100: waits
        order.append("release")
        budget.release(60)
    assert order == ["release", "second"]
    budget.release(60)
    await budget.acquire(1000)  # bigger than everything, but alone: allowed
    assert budget.in_use == 1000


def test_payload_size_counts_top_level_bytes_and_strings():
    assert payload_size(["ab", b"xyz", 5, [b"ignored"]]) == 2 + 3 + 64
