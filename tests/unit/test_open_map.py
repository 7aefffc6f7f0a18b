"""A file opened to be read gets the map of its first pieces with its open (fs.open with
``pieces``), so reading a small file needs no request of its own for the map — but only
when nothing of the file is open in the mount, whose own commits an older map must never
replace; and from an older meta role, the map is asked for separately as before."""

from __future__ import annotations

import os
import stat

import pytest
import trio

from fusefs.pieces import Piece
from storaged.chunk.ids import chunk_id
from tests.unit.meta_rpc import MetaOverRpc, meta_service, operations

MiB = 1 << 20


def run(test, old: dict[str, int] | None = None) -> None:
    async def main() -> None:
        service, vol = await meta_service()
        session = await service.session_open("test mount")
        f = await service.fs_mknod(vol["root"], b"f", stat.S_IFREG | 0o644, 0, 0)
        one, two = chunk_id(b"one"), chunk_id(b"two")
        # pieces 0 and 2 stored, 1 a hole; 9 MiB long (3 pieces of 4 MiB)
        await service.fs_commit(f["ino"], 9 * MiB, [[0, one, 0, 4 * MiB], [2, two, 0, MiB]])
        rpc = MetaOverRpc(service, old)
        async with trio.open_nursery() as nursery:
            ops = operations(rpc, vol, nursery)
            ops.session = session
            await test(
                ops, rpc, f["ino"], {0: Piece(one, 0, 4 * MiB), 1: None, 2: Piece(two, 0, MiB)}
            )
            nursery.cancel_scope.cancel()

    trio.run(main)


def opens(rpc: MetaOverRpc) -> list[int]:
    return [n for method, n in rpc.calls if method == "fs.open"]


def test_a_file_opened_to_be_read_comes_with_its_map() -> None:
    async def test(ops, rpc, ino, stored) -> None:
        fi = await ops.open(ino, os.O_RDONLY, None)
        assert ops.files[ino].rows == stored
        assert opens(rpc) == [3]
        await ops.release(fi.fh)

    run(test)


@pytest.mark.parametrize("flags", [os.O_WRONLY, os.O_RDWR | os.O_TRUNC])
def test_no_map_is_asked_for_a_file_opened_to_be_written_over(flags: int, monkeypatch) -> None:
    # O_TRUNC drops the kernel's cached pages: there is no kernel here to tell
    monkeypatch.setattr("pyfuse3.invalidate_inode", lambda *args, **kwargs: None)

    async def test(ops, rpc, ino, stored) -> None:
        fi = await ops.open(ino, flags, None)
        assert opens(rpc) == [2]
        await ops.release(fi.fh)

    run(test)


def test_a_file_open_here_is_given_no_map_with_another_open() -> None:
    """Its commits may be on their way: its map is read again when needed, as before."""

    async def test(ops, rpc, ino, stored) -> None:
        first = await ops.open(ino, os.O_RDWR, None)
        data = ops.files[ino]
        second = await ops.open(ino, os.O_RDONLY, None)
        assert opens(rpc) == [3, 2]
        assert ops.files[ino] is data and data.rows == {}
        await ops.release(second.fh)
        await ops.release(first.fh)

    run(test)


def test_from_an_older_meta_role_the_map_is_asked_for_separately() -> None:
    async def test(ops, rpc, ino, stored) -> None:
        for _ in range(2):
            fi = await ops.open(ino, os.O_RDONLY, None)
            assert ops.files[ino].rows == {}  # read when needed, as before
            await ops.release(fi.fh)
        assert opens(rpc) == [3, 2, 2]  # refused once, not asked again

    run(test, old={"fs.open": 2})
