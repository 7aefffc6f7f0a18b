"""A last close's release of the mount's hold goes to the meta role without the kernel
waiting for it; what would see it out of order waits for it instead: an open of the same
inode (a hold taken before an older release is answered would be dropped by it), and the
flush before unmounting."""

from __future__ import annotations

import errno
import os
import stat
from typing import Any

import pyfuse3
import pytest
import trio
import trio.testing

from storaged.rpc import FsError
from tests.unit.meta_rpc import MetaOverRpc, meta_service, operations


class GatedRelease(MetaOverRpc):
    """fs.release is answered only once ``gate`` is set."""

    def __init__(self, service: Any) -> None:
        super().__init__(service)
        self.gate = trio.Event()

    async def call(self, address: str, method: str, *params: Any, **options: Any) -> Any:
        if method == "fs.release":
            await self.gate.wait()
        return await super().call(address, method, *params, **options)


def run(test) -> None:
    async def main() -> None:
        service, vol = await meta_service()
        session = await service.session_open("test mount")
        f = await service.fs_mknod(vol["root"], b"f", stat.S_IFREG | 0o644, 0, 0)
        rpc = GatedRelease(service)
        async with trio.open_nursery() as nursery:
            ops = operations(rpc, vol, nursery)
            ops.session = session
            await test(ops, rpc, service, f["ino"])
            nursery.cancel_scope.cancel()

    trio.run(main)


def held(service: Any, session: str, ino: int) -> bool:
    return session in service.sessions._holders.get(ino, set())


def test_a_release_does_not_wait_and_a_reopen_waits_for_it() -> None:
    async def test(ops, rpc, service, ino) -> None:
        fi = await ops.open(ino, os.O_RDONLY, None)
        assert held(service, ops.session, ino)
        with trio.fail_after(5):
            await ops.release(fi.fh)  # answered although fs.release is not
        assert held(service, ops.session, ino) and ino in ops.releasing
        reopened: list[Any] = []

        async def reopen() -> None:
            reopened.append(await ops.open(ino, os.O_RDONLY, None))

        async with trio.open_nursery() as nursery:
            nursery.start_soon(reopen)
            await trio.testing.wait_all_tasks_blocked()
            assert not reopened  # waiting for the release on its way
            rpc.gate.set()
        assert reopened and not ops.releasing
        # the new hold came after the release: it is there
        assert held(service, ops.session, ino)
        assert [m for m, _ in rpc.calls if m in ("fs.open", "fs.release")] == [
            "fs.open",
            "fs.release",
            "fs.open",
        ]

    run(test)


def test_flush_all_waits_for_releases_on_their_way() -> None:
    async def test(ops, rpc, service, ino) -> None:
        fi = await ops.open(ino, os.O_RDONLY, None)
        await ops.release(fi.fh)
        flushed = trio.Event()

        async def flush_all() -> None:
            await ops.flush_all()
            flushed.set()

        async with trio.open_nursery() as nursery:
            nursery.start_soon(flush_all)
            await trio.testing.wait_all_tasks_blocked()
            assert not flushed.is_set()
            rpc.gate.set()
        assert flushed.is_set() and not held(service, ops.session, ino)

    run(test)


def test_an_orphan_is_deleted_when_its_release_is_answered() -> None:
    async def test(ops, rpc, service, ino) -> None:
        fi = await ops.open(ino, os.O_RDONLY, None)
        await ops.unlink(pyfuse3.ROOT_INODE, b"f", None)  # held here: kept as an orphan
        assert (await service.fs_getattr(ino))["nlink"] == 0
        await ops.release(fi.fh)
        rpc.gate.set()
        await ops.releasing.wait(ino)
        assert ino not in ops.orphans
        with pytest.raises(FsError) as gone:
            await service.fs_getattr(ino)
        assert gone.value.errno == errno.ENOENT

    run(test)
