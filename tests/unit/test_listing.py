"""fusefs.listing: a directory's rows kept between the kernel's requests and read ahead, and
never used after a change through the mount (which would give the kernel older news)."""

from __future__ import annotations

import stat
from typing import Any

import pytest
import trio
import trio.testing

from fusefs.listing import KeptListings, Listing
from tests.unit.meta_rpc import MetaOverRpc, meta_service, operations

PAGE = 10


class Directory:
    """A directory of ``size`` entries with cookies 1..size, read a page at a time."""

    def __init__(self, size: int) -> None:
        self.size = size
        self.asked: list[int] = []  # the cookies pages were read after
        self.fail_after: set[int] = set()
        self.release = trio.Event()  # pages after a cookie in slow_after wait for it
        self.slow_after: set[int] = set()
        self.cancelled = 0

    async def fetch(self, after: int) -> list[list[Any]]:
        self.asked.append(after)
        try:
            await trio.lowlevel.checkpoint()
            if after in self.slow_after:
                await self.release.wait()
        except trio.Cancelled:
            self.cancelled += 1
            raise
        if after in self.fail_after:
            raise OSError("meta role unreachable")
        return [
            [f"f{c}".encode(), c, 100 + c]
            for c in range(after + 1, min(after + PAGE, self.size) + 1)
        ]


def run(test) -> None:
    async def main() -> None:
        changes = [0]
        async with trio.open_nursery() as nursery:
            kept = KeptListings(nursery, lambda: changes[0], limit=2)
            await test(kept, changes)
            nursery.cancel_scope.cancel()

    trio.run(main)


async def list_all(listing: Listing, room: int) -> list[int]:
    """What the kernel does: requests of ``room`` entries until one comes back empty."""
    cookies: list[int] = []
    after = 0
    while True:
        rows = await listing.take(after)
        if not rows:
            return cookies
        taken, rest = rows[:room], rows[room:]
        if rest:
            listing.keep(rest, taken[-1][1])
        cookies.extend(r[1] for r in taken)
        after = taken[-1][1]


@pytest.mark.parametrize("room", [1, 3, PAGE, 25])
def test_a_listing_reads_each_page_once_whatever_the_kernels_buffer(room: int) -> None:
    async def test(kept: KeptListings, changes: list[int]) -> None:
        d = Directory(35)
        assert await list_all(Listing(d.fetch, PAGE, kept), room) == list(range(1, 36))
        assert d.asked == [0, 10, 20, 30, 35]  # once each; the last short, then the end

    run(test)


def test_the_next_page_is_read_while_this_one_goes_out() -> None:
    async def test(kept: KeptListings, changes: list[int]) -> None:
        d = Directory(25)
        listing = Listing(d.fetch, PAGE, kept)
        first = await listing.take(0)
        assert [r[1] for r in first] == list(range(1, 11))
        assert d.asked == [0, 10]  # page two asked for before page one was handed on
        assert [r[1] for r in await listing.take(10)] == list(range(11, 21))
        assert d.asked == [0, 10, 20]

    run(test)


def test_a_change_through_the_mount_makes_kept_and_read_ahead_rows_be_read_again() -> None:
    async def test(kept: KeptListings, changes: list[int]) -> None:
        d = Directory(30)
        listing = Listing(d.fetch, PAGE, kept)
        rows = await listing.take(0)
        listing.keep(rows[4:], 4)
        await trio.testing.wait_all_tasks_blocked()  # page two has been read ahead
        changes[0] += 1  # e.g. an unlink or chmod of a name in the kept rows
        again = await listing.take(4)
        assert [r[1] for r in again] == list(range(5, 15))
        assert d.asked == [0, 10, 4, 14]  # kept rows and the page read ahead both dropped
        assert [r[1] for r in await listing.take(14)] == list(range(15, 25))
        assert d.asked == [0, 10, 4, 14, 24]

    run(test)


def test_a_change_while_a_page_is_read_ahead_is_not_missed() -> None:
    async def test(kept: KeptListings, changes: list[int]) -> None:
        d = Directory(30)
        d.slow_after = {10}
        listing = Listing(d.fetch, PAGE, kept)
        await listing.take(0)
        changes[0] += 1  # the change may or may not be in the page being read
        d.release.set()
        assert [r[1] for r in await listing.take(10)] == list(range(11, 21))
        assert d.asked == [0, 10, 10, 20]  # read again, not taken from the page ahead

    run(test)


def test_another_cookie_starts_afresh_and_a_closed_directory_stops_reading_ahead() -> None:
    async def test(kept: KeptListings, changes: list[int]) -> None:
        d = Directory(30)
        d.slow_after = {10}
        listing = Listing(d.fetch, PAGE, kept)
        rows = await listing.take(0)
        listing.keep(rows[3:], 3)
        assert [r[1] for r in await listing.take(0)][:3] == [1, 2, 3]  # rewinddir
        await trio.testing.wait_all_tasks_blocked()
        assert d.asked == [0, 10, 0, 10] and d.cancelled == 1
        listing.drop()  # releasedir
        await trio.testing.wait_all_tasks_blocked()
        assert d.cancelled == 2 and len(kept) == 0

    run(test)


def test_a_page_that_failed_ahead_is_read_again_and_fails_there() -> None:
    async def test(kept: KeptListings, changes: list[int]) -> None:
        d = Directory(30)
        d.fail_after = {10}
        listing = Listing(d.fetch, PAGE, kept)
        await listing.take(0)
        with pytest.raises(OSError, match="unreachable"):
            await listing.take(10)
        assert d.asked == [0, 10, 10]
        d.fail_after = set()
        assert [r[1] for r in await listing.take(10)] == list(range(11, 21))

    run(test)


def test_at_most_limit_directories_keep_rows() -> None:
    async def test(kept: KeptListings, changes: list[int]) -> None:
        dirs = [Directory(30) for _ in range(3)]
        listings = [Listing(d.fetch, PAGE, kept) for d in dirs]
        for listing in listings:
            rows = await listing.take(0)
            listing.keep(rows[5:], 5)
        assert len(kept) == 2  # the first one, used longest ago, let go of its rows
        await listings[0].take(5)
        assert dirs[0].asked == [0, 10, 5, 15]
        await listings[2].take(5)
        assert dirs[2].asked == [0, 10]  # still kept

    run(test)


@pytest.mark.parametrize("old", [False, True])
def test_the_mount_reads_rows_and_makes_the_same_attributes_as_from_a_lookup(old: bool) -> None:
    async def main() -> None:
        service, vol = await meta_service()
        root = vol["root"]
        await service.fs_mknod(root, b"f", stat.S_IFREG | 0o640, 7, 8)
        await service.fs_mknod(root, b"d", stat.S_IFDIR | 0o750, 9, 10)
        await service.fs_mknod(root, b"s", stat.S_IFLNK | 0o777, 11, 12, 0, b"f")
        rpc = MetaOverRpc(service, old={"fs.readdir": 3} if old else {})
        async with trio.open_nursery() as nursery:
            ops = operations(rpc, vol, nursery)
            rows = await ops._listing(root, 0)
            assert [r[0] for r in rows] == [b"f", b"d", b"s"]
            f, d, s = (ops._listed(row, None, 1) for row in rows)
            assert (f.st_mode, f.st_uid, f.st_gid, f.st_size) == (stat.S_IFREG | 0o640, 7, 8, 0)
            assert (d.st_mode, d.st_uid, d.st_gid, d.st_size) == (stat.S_IFDIR | 0o750, 9, 10, 4096)
            assert (s.st_mode, s.st_uid, s.st_gid, s.st_nlink) == (stat.S_IFLNK | 0o777, 11, 12, 1)
            for row in rows:
                listed = ops._listed(row, None, 1)
                looked_up = ops._entry(await service.fs_lookup(root, row[0]), None)
                for field in (
                    "st_ino",
                    "st_mode",
                    "st_nlink",
                    "st_uid",
                    "st_gid",
                    "st_rdev",
                    "st_size",
                    "st_blocks",
                    "st_atime_ns",
                    "st_mtime_ns",
                    "st_ctime_ns",
                    "entry_timeout",
                    "attr_timeout",
                ):
                    assert getattr(listed, field) == getattr(looked_up, field), field
            await ops._listing(root, 0)
            # rows asked for once; an old meta role refused them, and maps were asked for since
            readdirs = [n for method, n in rpc.calls if method == "fs.readdir"]
            assert readdirs == ([4, 3, 3] if old else [4, 4])
            nursery.cancel_scope.cancel()

    trio.run(main)
