"""Whole directory listings kept by the mount (fusefs/dircache.py): used again only while
nothing could have changed them, dropped the moment anything might have."""

from __future__ import annotations

import stat
import time
from typing import Any

import pytest
import trio

from fusefs import dircache
from fusefs.coherence import Ask
from fusefs.dircache import ListingCache
from tests.unit.meta_rpc import MetaOverRpc, meta_service, operations

LEASE = 30.0


def rows(first: int, count: int) -> list[list[Any]]:
    return [[f"n{c}".encode(), c, 100 + c] for c in range(first, first + count)]


def ask(session: str | None = "s", changes: int = 0) -> Ask:
    return Ask(time.monotonic(), changes, session)


def test_a_listing_read_from_its_start_to_its_end_is_answered_again_from_memory() -> None:
    cache = ListingCache(LEASE)
    first, stamp = ask(), (0, 0, "s")
    cache.fetched(7, 0, rows(1, 3), 3, first, stamp)  # a full page: more may follow
    assert cache.page(7, 0, 3, stamp) is None  # not complete yet
    cache.fetched(7, 3, rows(4, 2), 3, ask(), stamp)  # the last page
    page = cache.page(7, 0, 3, stamp)
    assert page == rows(1, 3) and page.token is first
    assert cache.page(7, 3, 3, stamp) == rows(4, 2)
    assert cache.page(7, 5, 3, stamp) == []
    assert cache.rows() == 5


@pytest.mark.parametrize("later", [(1, 0, "s"), (0, 1, "s"), (0, 0, "t"), (0, 0, None)])
def test_anything_that_could_have_changed_it_drops_every_kept_listing(later: Any) -> None:
    cache = ListingCache(LEASE)
    cache.fetched(7, 0, rows(1, 2), 3, ask(), (0, 0, "s"))
    cache.fetched(8, 0, rows(1, 2), 3, ask(), (0, 0, "s"))
    assert cache.page(7, 0, 3, later) is None
    assert len(cache) == 0 and cache.rows() == 0


def test_a_listing_is_not_used_near_the_end_of_its_lease() -> None:
    cache = ListingCache(LEASE)
    old = Ask(time.monotonic() - LEASE + dircache.MARGIN / 2, 0, "s")
    cache.fetched(7, 0, rows(1, 2), 3, old, (0, 0, "s"))
    assert cache.page(7, 0, 3, (0, 0, "s")) is None


def test_only_listings_read_in_order_from_the_start_and_while_listening_are_kept() -> None:
    cache = ListingCache(LEASE)
    cache.fetched(7, 5, rows(6, 2), 3, ask(), (0, 0, "s"))  # not from the start
    cache.fetched(8, 0, rows(1, 2), 3, ask(None), (0, 0, None))  # not listening
    cache.fetched(9, 0, rows(1, 3), 3, ask(), (0, 0, "s"))
    cache.fetched(9, 2, rows(3, 1), 3, ask(), (0, 0, "s"))  # skips cookie 3
    assert len(cache) == 1 and cache.page(9, 0, 3, (0, 0, "s")) is None


def test_kept_rows_are_bounded(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(dircache, "ROWS_MAX", 5)
    cache = ListingCache(LEASE)
    cache.fetched(1, 0, rows(1, 3), 10, ask(), (0, 0, "s"))
    cache.fetched(2, 0, rows(1, 3), 10, ask(), (0, 0, "s"))
    assert cache.rows() == 3 and cache.page(1, 0, 10, (0, 0, "s")) is None
    assert cache.page(2, 0, 10, (0, 0, "s")) == rows(1, 3)


def test_the_mount_lists_a_directory_again_without_the_meta_role() -> None:
    async def main() -> None:
        service, vol = await meta_service()
        for i in range(3):
            await service.fs_mknod(vol["root"], f"f{i}".encode(), stat.S_IFREG | 0o644, 0, 0)
        rpc = MetaOverRpc(service)
        async with trio.open_nursery() as nursery:
            ops = operations(rpc, vol, nursery)
            ops.cache.lease = ops.listings.lease = LEASE
            ops.session = await service.session_open("test mount")
            await ops.meta.session_listen(ops.session, LEASE, 0)
            ops.cache.session = ops.session
            ops.cache.heard = time.monotonic()

            def readdirs() -> int:
                return sum(1 for method, _ in rpc.calls if method == "fs.readdir")

            first = await ops._listing(vol["root"], 0)
            assert [r[0] for r in first] == [b"f0", b"f1", b"f2"] and readdirs() == 1
            assert await ops._listing(vol["root"], 0) == first and readdirs() == 1
            ops._changing()  # a change of this mount's own
            await ops._listing(vol["root"], 0)
            assert readdirs() == 2
            await ops._listing(vol["root"], 0)
            assert readdirs() == 2
            ops.cache.received(1)  # an invalidation from elsewhere
            await ops._listing(vol["root"], 0)
            assert readdirs() == 3
            nursery.cancel_scope.cancel()

    trio.run(main)
