"""FileData (the mount's view of one file's bytes) against the real meta role's chunk map
(SQLite in memory) and an in-memory chunk store that can be made to fail: random writes,
reads, flushes (some failing) and reopenings, compared with a model after every step."""

from __future__ import annotations

import errno
import random
import stat
from collections.abc import Awaitable, Callable
from typing import Any

import pytest
import trio

from fusefs.chunkcache import ChunkCache
from fusefs.filedata import FileData, VolumeIO
from storaged.meta import files, namespace, volumes
from storaged.meta.db import open_database, transaction
from storaged.metaclient import MetaClient
from storaged.rpc import FsError, Unavailable

PIECE = 64 * 1024


class Meta:
    """The meta role's fs.chunks and fs.commit, one transaction per call."""

    def __init__(self) -> None:
        self.conn = open_database(":memory:")
        with transaction(self.conn):
            vol = volumes.create(self.conn, "v", 1 << 40, 2, PIECE)
            self.ino = namespace.make_node(
                self.conn, vol["root"], b"f", stat.S_IFREG | 0o644, 0, 0
            )["ino"]
        self.slices_committed = 0
        self.calls: list[str] = []

    def be_patient(self, address: str, patience: Any) -> None:
        pass  # no connection to wait for

    async def call(self, address: str, method: str, *args: Any, **options: Any) -> Any:
        await trio.lowlevel.checkpoint()
        self.calls.append(method)
        if method == "session.pending":
            return True
        if method == "fs.commit":
            self.slices_committed += sum(len(item) == 5 for item in args[2])
        table: dict[str, Callable[..., Any]] = {
            "fs.chunks": files.chunk_map,
            "fs.commit": files.commit,
        }
        fn = table[method]
        with transaction(self.conn):
            return fn(self.conn, *args)


class Chunks:
    """Chunk servers in memory; ``failing`` makes every put fail as if none were up. A put
    takes a random number of scheduler turns, so uploads finish in any order."""

    def __init__(self, rng: random.Random) -> None:
        self.chunks: dict[str, bytes] = {}
        self.unsynced: set[str] = set()
        self.syncs = 0
        self.failing = False
        self.rng = rng

    async def put(self, data: bytes, _replicas: int, cid: str, durable: bool = True) -> None:
        for _ in range(self.rng.randrange(1, 40)):
            await trio.lowlevel.checkpoint()
        if self.failing:
            raise Unavailable("fewer live servers than the required replicas")
        self.chunks[cid] = bytes(data)
        if not durable:
            self.unsynced.add(cid)  # answered, on a server's disk at its next sync

    async def sync(self) -> None:
        """DataClient.sync: every put answered before the call is on disk after it."""
        self.syncs += 1
        covered = set(self.unsynced)
        await trio.lowlevel.checkpoint()
        self.unsynced -= covered

    async def get(self, cid: str) -> bytes:
        await trio.lowlevel.checkpoint()
        return self.chunks[cid]

    async def read(self, cid: str, offset: int, length: int) -> bytes:
        await trio.lowlevel.checkpoint()
        return self.chunks[cid][offset : offset + length]


def _check_memory(data: FileData) -> None:
    assert data.dirty_bytes == sum(p.memory for p in data.dirty.values())


@pytest.mark.parametrize("seed", range(16))
def test_random_writes_reads_and_flushes_match_a_model(seed: int) -> None:
    """Odd seeds also flush from a second task meanwhile, as fsync and the kernel's flush
    do: pieces are then written while their upload runs."""
    rng = random.Random(seed)
    meta, chunks = Meta(), Chunks(random.Random(seed))
    model = bytearray()
    failures = [False]  # a put failed since the last flush that succeeded

    async def flush(data: FileData) -> None:
        try:
            await data.flush()
        except FsError as exc:
            assert failures[0] and exc.errno == errno.EIO, exc
        else:
            failures[0] = chunks.failing = False

    async def flusher(data: FileData, done: trio.Event) -> None:
        while not done.is_set():
            for _ in range(rng.randrange(1, 20)):
                await trio.lowlevel.checkpoint()
            await flush(data)

    async def main() -> None:
        async with trio.open_nursery() as nursery:
            io = small_io(meta, chunks, nursery, 6 * PIECE, 10 * PIECE)
            data = FileData(meta.ino, io, size=0, committed_size=0)
            done = trio.Event()
            if seed % 2:
                nursery.start_soon(flusher, data, done)
            for step in range(300):
                op = rng.random()
                if op < 0.6:
                    off = rng.randrange(12 * PIECE)
                    size = rng.choice([1, 100, 4096, PIECE, rng.randrange(1, 3 * PIECE)])
                    buf = rng.randbytes(size)
                    try:
                        await data.write(off, buf)
                    except FsError as exc:  # an earlier upload failed: this write did not
                        assert failures[0] and exc.errno == errno.EIO, exc  # happen
                        continue
                    if len(model) < off + size:
                        model.extend(bytes(off + size - len(model)))
                    model[off : off + size] = buf
                elif op < 0.8:
                    off = rng.randrange(len(model) + 1)
                    size = rng.randrange(1, 2 * PIECE)
                    assert await data.read(off, size) == model[off : off + size], (seed, step)
                elif op < 0.9:
                    chunks.failing = rng.random() < 0.3
                    failures[0] |= chunks.failing
                    await flush(data)
                    chunks.failing = False
                elif seed % 2 == 0:  # what another opener sees: the committed file
                    await flush(data)
                    io.cache = ChunkCache(3 * PIECE)
                    data = FileData(meta.ino, io, size=len(model), committed_size=len(model))
                _check_memory(data)
            done.set()
            for _ in range(3):  # (the first may report an earlier failed upload)
                await flush(data)
                if not failures[0]:
                    break
            assert not failures[0] and not data.dirty and data.dirty_bytes == 0
            fresh = FileData(meta.ino, io, size=len(model), committed_size=len(model))
            assert await fresh.read(0, len(model) + 1) == model, seed
            nursery.cancel_scope.cancel()

    trio.run(main)
    assert meta.slices_committed > 0  # (the path under test was taken)


def small_io(
    meta: Meta,
    chunks: Chunks,
    nursery: trio.Nursery,
    max_dirty_bytes: int = VolumeIO.max_dirty_bytes,
    max_unsaved_bytes: int = VolumeIO.max_unsaved_bytes,
) -> VolumeIO:
    """A VolumeIO over the fakes (the bounds default to the mount's)."""
    return VolumeIO(
        meta=MetaClient(meta, "meta"),
        data=chunks,  # type: ignore[arg-type]
        cache=ChunkCache(3 * PIECE),
        chunk_size=PIECE,
        replicas=2,
        uploads=trio.CapacityLimiter(2),
        nursery=nursery,
        max_dirty_bytes=max_dirty_bytes,
        max_unsaved_bytes=max_unsaved_bytes,
    )


def with_new_file(
    seed: int, body: Callable[[Meta, Chunks, VolumeIO, FileData], Awaitable[None]]
) -> None:
    """Run ``body`` on an empty file over the fakes (its io's tasks cancelled after)."""
    meta, chunks = Meta(), Chunks(random.Random(seed))

    async def main() -> None:
        async with trio.open_nursery() as nursery:
            io = small_io(meta, chunks, nursery)
            await body(meta, chunks, io, FileData(meta.ino, io, size=0, committed_size=0))
            nursery.cancel_scope.cancel()

    trio.run(main)


def test_pieces_past_the_committed_size_are_holes_without_asking() -> None:
    """A new file's first write, and an appending writer's, need no chunk-map round trip:
    the meta role keeps no rows past a file's size. Pieces within it are still asked for."""

    async def body(meta: Meta, chunks: Chunks, io: VolumeIO, data: FileData) -> None:
        await data.write(100, b"new")
        await data.flush()
        await data.write(PIECE + 5, b"appended")  # past the committed size (103)
        await data.flush()
        assert "fs.chunks" not in meta.calls, meta.calls
        reopened = FileData(meta.ino, io, size=PIECE + 13, committed_size=PIECE + 13)
        await reopened.write(101, b"X")  # into a stored piece: asks
        assert meta.calls.count("fs.chunks") == 1
        await reopened.write(3 * PIECE, b"far")  # past the end again: does not
        await reopened.flush()
        assert meta.calls.count("fs.chunks") == 1
        fresh = FileData(meta.ino, io, size=3 * PIECE + 3, committed_size=3 * PIECE + 3)
        expected = bytearray(3 * PIECE + 3)
        expected[100:103] = b"nXw"
        expected[PIECE + 5 : PIECE + 13] = b"appended"
        expected[3 * PIECE :] = b"far"
        assert await fresh.read(0, len(expected)) == expected

    with_new_file(0, body)


def test_a_close_may_leave_chunks_buffered_and_an_fsync_leaves_none() -> None:
    """A flush for a close lets the servers put small chunks on disk later (buffered);
    a durable flush (fsync, unmount) syncs every buffered put, those of earlier flushes
    included, even when it has nothing new to store."""

    async def body(meta: Meta, chunks: Chunks, io: VolumeIO, data: FileData) -> None:
        await data.write(0, b"a" * 5000)
        await data.flush()  # a close
        assert len(chunks.unsynced) == 1 and chunks.syncs == 0
        await data.flush(durable=True)  # an fsync with nothing new to store
        assert not chunks.unsynced and chunks.syncs == 1
        await data.write(PIECE, b"b" * 7000)
        await data.write(3 * PIECE, b"c" * 100)
        await data.flush(durable=True)  # its own puts are durable ones
        assert not chunks.unsynced and chunks.syncs == 2
        assert len(chunks.chunks) == 3

    with_new_file(1, body)


def test_an_mtime_set_after_the_writes_is_what_their_commit_leaves() -> None:
    """utimens on the open file after writing it (tar x, cp -p): the commit at close
    keeps that time; a write after it makes the commit take its own time again."""

    async def body(meta: Meta, chunks: Chunks, io: VolumeIO, data: FileData) -> None:
        await data.write(0, b"a" * 5000)
        data.mtime_set = 1_234_567_890_123_456_789
        await data.flush()
        with transaction(meta.conn):
            attr = namespace.getattr_(meta.conn, meta.ino)
        assert attr["mtime_ns"] == 1_234_567_890_123_456_789
        assert attr["ctime_ns"] > attr["mtime_ns"]
        await data.write(5000, b"b")
        assert data.mtime_set is None
        await data.flush()
        with transaction(meta.conn):
            later = namespace.getattr_(meta.conn, meta.ino)
        assert later["mtime_ns"] >= attr["ctime_ns"]

    with_new_file(2, body)
