"""Group commit (storaged/meta/groupcommit.py): nothing is reported durable before a sync
that began after it was committed, waiters share syncs, the period bounds how long a
commit waits for the disk, and a failed sync reports nothing durable."""

from __future__ import annotations

from pathlib import Path

import pytest
import trio
import trio.testing

from storaged.meta.db import make_durable, open_database
from storaged.meta.groupcommit import GroupCommit
from storaged.meta.service import DURABLE, MetaService
from storaged.rpc.methods import MethodTable


class Disk:
    """A sync that takes a while and records what was written when it began."""

    def __init__(self, commits: list[GroupCommit]) -> None:
        self.commits = commits
        self.began_with: list[int] = []
        self.fail = False

    async def sync(self) -> None:
        self.began_with.append(self.commits[0].written)
        await trio.sleep(0.1)
        if self.fail:
            raise OSError(5, "the disk said no")


def make() -> tuple[GroupCommit, Disk]:
    holder: list[GroupCommit] = []
    disk = Disk(holder)
    commits = GroupCommit(disk.sync)
    holder.append(commits)
    return commits, disk


def test_a_commit_made_during_a_sync_waits_for_the_next_one() -> None:
    async def main() -> None:
        commits, disk = make()
        first = commits.committed()
        async with trio.open_nursery() as nursery:
            nursery.start_soon(commits.durable, first)
            await trio.testing.wait_all_tasks_blocked()  # the first sync is under way
            second = commits.committed()
            await commits.durable(second)
        assert disk.began_with == [1, 2]  # the sync that began at 1 could not cover 2
        assert commits.synced == 2

    trio.run(main, clock=trio.testing.MockClock(autojump_threshold=0))


def test_waiters_that_arrive_together_share_one_sync() -> None:
    async def main() -> None:
        commits, disk = make()
        for _ in range(5):
            commits.committed()
        async with trio.open_nursery() as nursery:
            for _ in range(10):
                nursery.start_soon(commits.durable)
        assert disk.began_with == [5] and commits.syncs == 1

    trio.run(main, clock=trio.testing.MockClock(autojump_threshold=0))


def test_the_period_bounds_a_commit_nobody_waits_for() -> None:
    async def main() -> None:
        commits, _disk = make()
        async with trio.open_nursery() as nursery:
            nursery.start_soon(commits.run, 0.05)
            commits.committed()
            committed_at = trio.current_time()
            with trio.fail_after(5):
                while commits.synced < 1:  # noqa: ASYNC110 (a poll on a mock clock)
                    await trio.sleep(0.001)
            assert trio.current_time() - committed_at <= 0.05 + 0.1 + 0.001  # period + sync
            await trio.sleep(1)
            assert commits.syncs == 1  # nothing new: no sync
            nursery.cancel_scope.cancel()

    trio.run(main, clock=trio.testing.MockClock(autojump_threshold=0))


def test_a_failed_sync_reports_nothing_durable() -> None:
    async def main() -> None:
        commits, disk = make()
        commits.committed()
        disk.fail = True
        with pytest.raises(OSError):
            await commits.durable()
        assert commits.synced == 0
        disk.fail = False
        await commits.durable()
        assert commits.synced == 1

    trio.run(main, clock=trio.testing.MockClock(autojump_threshold=0))


def test_make_durable_writes_and_leaves_the_connection_as_it_was(tmp_path: Path) -> None:
    conn = open_database(tmp_path / "meta.db")
    try:
        assert conn.execute("PRAGMA synchronous").fetchone()[0] == 1  # NORMAL
        make_durable(conn)
        make_durable(conn)
        assert conn.execute("PRAGMA synchronous").fetchone()[0] == 1
        row = conn.execute("SELECT value FROM meta_info WHERE key='last_sync'").fetchone()
        assert row is not None and int(row[0]) > 0
    finally:
        conn.close()


def test_the_service_counts_changes_not_reads_and_fs_sync_waits_for_them(tmp_path: Path) -> None:
    async def main() -> None:
        service = MetaService(open_database(tmp_path / "meta.db"))
        vol = await service.volume_create("v", 1 << 30, 2, 1 << 20)
        after_create = service.commits.written
        await service.volume_get("v")  # a read through a transaction: no change, no count
        assert service.commits.written == after_create
        await service.fs_mknod(vol["root"], b"f", 0o100644, 0, 0)
        assert service.commits.written == after_create + 1
        table = MethodTable()
        service.register(table)
        found = table.get("fs.sync")
        await found.handler(*found.bind([]))
        assert service.commits.synced >= after_create + 1

    trio.run(main)


def test_what_an_administrator_is_told_is_done_waits_for_the_disk() -> None:
    assert {"fs_sync", "volume_create", "volume_delete", "snapshot_create"} <= DURABLE
    assert not {"fs_mknod", "fs_commit", "fs_unlink", "fs_rename"} & DURABLE
