"""The chunk store on a real directory: durability layout, verification, space, paging."""

from __future__ import annotations

import os
import stat
import time

import pytest

from storaged.chunk import buffered as buffered_module
from storaged.chunk import store as store_module
from storaged.chunk.buffered import BUFFERED_MAX
from storaged.chunk.ids import chunk_id, is_chunk_id
from storaged.chunk.store import ChunkStore
from storaged.chunk.tablecache import BlockTables
from storaged.rpc.errors import Corrupted, HashMismatch, InvalidArgument, NoSpace, NotFound


@pytest.fixture
def store(tmp_path):
    s = ChunkStore(tmp_path / "data", reserve=0)
    s.open()
    yield s
    s.close()


def put(store: ChunkStore, data: bytes) -> str:
    cid = chunk_id(data)
    store.put(cid, data)
    return cid


def test_ids_are_blake3_hex():
    assert chunk_id(b"") == "af1349b9f5f9a1a6a0404dea36dcc9499bcb25c9adc112b7cc9a93cae41f3262"
    assert is_chunk_id(chunk_id(b"x")) and not is_chunk_id("../" + "a" * 61)
    big = os.urandom(3 << 20)  # the threaded path must give the same answer
    from blake3 import blake3

    assert chunk_id(big) == blake3(big).hexdigest()


def test_put_get_round_trip_and_ranges(store):
    data = os.urandom(100_000)
    cid = chunk_id(data)
    assert store.put(cid, data) is True
    assert store.put(cid, data) is False  # a good copy is already there
    assert store.get(cid) == data
    assert store.get(cid, 10, 20) == data[10:30]
    assert store.get(cid, 99_990) == data[99_990:]
    assert store.get(cid, 200_000, 5) == b""
    assert store.has(cid) and store.stat(cid)["size"] == 100_000
    with pytest.raises(InvalidArgument):
        store.get(cid, -1)


def test_chunks_fan_out_into_two_directory_levels(store):
    cid = put(store, b"hello")
    assert (store.chunk_dir / cid[:2] / cid[2:4] / cid).read_bytes() == b"hello"


def test_hash_mismatch_stores_nothing(store):
    with pytest.raises(HashMismatch):
        store.put(chunk_id(b"one"), b"two")
    assert not store.has(chunk_id(b"one"))
    assert list(store.tmp_dir.iterdir()) == []
    assert store.usage().chunks == 0


@pytest.mark.parametrize("bad", ["../../etc/passwd", "A" * 64, "a" * 63, "", "g" * 64])
def test_ids_that_are_not_hashes_never_reach_the_filesystem(store, bad):
    with pytest.raises(InvalidArgument):
        store.get(bad)
    with pytest.raises(InvalidArgument):
        store.put(bad, b"x")


def test_a_corrupted_copy_is_detected_quarantined_and_replaceable(store):
    data = os.urandom(5000)
    cid = put(store, data)
    path = store.chunk_dir / cid[:2] / cid[2:4] / cid
    raw = bytearray(path.read_bytes())
    raw[1234] ^= 0x01
    path.write_bytes(raw)
    with pytest.raises(Corrupted):
        store.get(cid, 0, 10)  # even a range read verifies the whole chunk
    assert not store.has(cid)
    assert store.corrupted_found == 1
    assert len(list(store.quarantine_dir.iterdir())) == 1
    assert store.put(cid, data) is True
    assert store.get(cid) == data


def test_put_over_a_silently_corrupted_copy_rewrites_it(store):
    data = b"precious" * 100
    cid = put(store, data)
    path = store.chunk_dir / cid[:2] / cid[2:4] / cid
    path.write_bytes(b"rotten!!" * 100)  # same length, other bytes: bit rot
    assert store.put(cid, data) is True
    assert path.read_bytes() == data
    assert store.usage().used == len(data)


def test_delete_is_idempotent_and_updates_usage(store):
    cid = put(store, b"a" * 1000)
    assert store.usage().as_dict()["used"] == 1000
    assert store.delete(cid) is True
    assert store.delete(cid) is False
    assert store.usage().used == 0 and store.usage().chunks == 0
    with pytest.raises(NotFound):
        store.get(cid)
    with pytest.raises(NotFound):
        store.stat(cid)


def test_list_pages_through_every_chunk_in_order(store):
    ids = sorted(put(store, f"chunk {i}".encode()) for i in range(60))
    seen, after = [], None
    while True:
        page, after = store.list(after, 7)
        seen.extend(page)
        assert len(page) <= 7
        if after is None:
            break
    assert seen == ids
    assert store.list(None, 60) == (ids, None)
    with pytest.raises(InvalidArgument):
        store.list(None, 0)
    with pytest.raises(InvalidArgument):
        store.list("nonsense", 5)


def test_configured_capacity_refuses_new_chunks_cleanly_and_reads_go_on(tmp_path):
    store = ChunkStore(tmp_path / "d", capacity=10_000, reserve=0)
    store.open()
    kept = put(store, b"k" * 6000)
    with pytest.raises(NoSpace, match="does not fit"):
        put(store, b"n" * 6000)
    assert list(store.tmp_dir.iterdir()) == []
    assert store.usage().chunks == 1 and store.usage().free == 4000
    assert store.get(kept) == b"k" * 6000
    store.close()


def test_open_cleans_unfinished_writes_and_recounts(tmp_path):
    store = ChunkStore(tmp_path / "d", reserve=0)
    store.open()
    cid = put(store, b"z" * 321)
    (store.tmp_dir / "half-written").write_bytes(b"partial")
    server_id = store.server_id
    store.close()
    again = ChunkStore(tmp_path / "d", reserve=0)
    again.open()
    assert list(again.tmp_dir.iterdir()) == []
    assert again.usage().chunks == 1 and again.usage().used == 321
    assert again.server_id == server_id and again.get(cid) == b"z" * 321
    again.close()


def test_two_stores_cannot_share_a_directory(tmp_path):
    first = ChunkStore(tmp_path / "d")
    first.open()
    with pytest.raises(RuntimeError, match="in use"):
        ChunkStore(tmp_path / "d").open()
    first.close()


def test_a_re_put_refreshes_a_chunk_so_a_collector_cannot_take_it(store: ChunkStore) -> None:
    """The garbage collector's fence: delete(min_age) only removes chunks last written (or
    put again, deduplicated) longer ago than min_age, checked under the store's lock."""
    data = b"shared bytes" * 1000
    cid = chunk_id(data)
    store.put(cid, data)
    path = store._path(cid)
    old = time.time() - 3600
    os.utime(path, (old, old))
    assert store.ages([cid])[cid][0] > 3500 and store.ages([cid])[cid][1] == len(data)
    assert store.put(cid, data) is False  # deduplicated, and made young again
    assert store.ages([cid])[cid][0] < 60
    assert store.delete(cid, min_age=60) is False
    assert store.has(cid)
    os.utime(path, (old, old))
    assert store.delete(cid, min_age=60) is True
    assert not store.has(cid) and store.ages([cid]) == {}


# -- ranged reads through the block hash table ----------------------------------------------

BLOCK = 64 * 1024


def table_of(store: ChunkStore, cid: str):
    return store.chunk_dir / cid[:2] / cid[2:4] / (cid + ".blocks")


def test_a_ranged_read_returns_the_checked_blocks_that_hold_the_range(store):
    data = os.urandom(5 * BLOCK + 1000)
    cid = put(store, data)
    assert table_of(store, cid).exists()  # made by put, from the bytes that matched the id
    start, got, digests, size = store.read_blocks(cid, BLOCK + 10, BLOCK)
    assert (start, size) == (BLOCK, BLOCK)
    assert got == data[BLOCK : 3 * BLOCK] and len(digests) == 2
    from blake3 import blake3

    assert digests == [
        blake3(data[BLOCK : 2 * BLOCK]).digest(),
        blake3(data[2 * BLOCK : 3 * BLOCK]).digest(),
    ]
    assert table_of(store, cid).exists()
    start, got, digests, _ = store.read_blocks(cid, 5 * BLOCK + 500, 10_000)  # the short tail
    assert (start, got) == (5 * BLOCK, data[5 * BLOCK :]) and len(digests) == 1
    assert store.read_blocks(cid, len(data) + 5, 10)[1:3] == (b"", [])
    with pytest.raises(InvalidArgument):
        store.read_blocks(cid, 0, 17 << 20)
    with pytest.raises(NotFound):
        store.read_blocks(chunk_id(b"absent"), 0, 10)


def test_a_bad_block_fails_a_ranged_read_and_quarantines_the_chunk(store):
    data = os.urandom(4 * BLOCK)
    cid = put(store, data)
    store.read_blocks(cid, 0, 10)  # the table now exists
    path = store.chunk_dir / cid[:2] / cid[2:4] / cid
    raw = bytearray(path.read_bytes())
    raw[3 * BLOCK + 7] ^= 0x01
    path.write_bytes(raw)
    assert store.read_blocks(cid, 0, 10)[1] == data[:BLOCK]  # a good block is still good
    with pytest.raises(Corrupted):
        store.read_blocks(cid, 3 * BLOCK, 10)
    assert not store.has(cid) and not table_of(store, cid).exists()
    assert store.corrupted_found == 1


@pytest.mark.parametrize("damage", ["flip a digest", "truncate", "garbage", "other size"])
def test_a_damaged_block_table_is_rebuilt_and_the_read_is_right(store, damage):
    data = os.urandom(3 * BLOCK)
    cid = put(store, data)
    store.read_blocks(cid, 0, 1)
    table = table_of(store, cid)
    good = table.read_bytes()
    bad = {
        "flip a digest": good[:-1] + bytes([good[-1] ^ 1]),
        "truncate": good[:30],
        "garbage": os.urandom(len(good)),
        "other size": good[:8] + (0).to_bytes(4, "big") + good[12:],
    }[damage]
    table.write_bytes(bad)
    store.tables = BlockTables()  # as after a restart: the file is all there is
    assert store.read_blocks(cid, 2 * BLOCK, 100)[1] == data[2 * BLOCK :]
    assert table.read_bytes() == good
    assert store.has(cid) and store.corrupted_found == 0


def test_delete_takes_the_table_and_open_removes_orphaned_ones(tmp_path):
    s = ChunkStore(tmp_path / "data", reserve=0)
    s.open()
    kept, gone = put(s, os.urandom(BLOCK * 2)), put(s, os.urandom(BLOCK * 2))
    s.read_blocks(kept, 0, 1)
    s.read_blocks(gone, 0, 1)
    assert s.delete(gone) and not table_of(s, gone).exists()
    orphan = table_of(s, gone)
    orphan.write_bytes(table_of(s, kept).read_bytes())  # as a crash mid-delete could leave
    s.close()
    s = ChunkStore(tmp_path / "data", reserve=0)
    s.open()
    assert not orphan.exists() and table_of(s, kept).exists()
    assert s.usage().chunks == 1 and s.list() == ([kept], None)
    s.close()


def test_a_ranged_read_of_a_fresh_chunk_reads_only_its_blocks(store, monkeypatch):
    """The table comes with the put: the first ranged read does not read the chunk whole."""
    data = os.urandom(64 * BLOCK)
    cid = put(store, data)

    def whole(*_args):
        raise AssertionError("read the whole chunk")

    monkeypatch.setattr(store, "_verified_whole", whole)
    assert store.read_blocks(cid, 40 * BLOCK + 3, 4096)[1] == data[40 * BLOCK : 41 * BLOCK]


def test_a_one_block_chunk_needs_no_table_and_still_fails_when_bad(store):
    data = os.urandom(BLOCK - 100)
    cid = put(store, data)
    assert store.read_blocks(cid, 100, 50) == (0, data, [bytes.fromhex(cid)], BLOCK)
    assert not table_of(store, cid).exists()
    empty = put(store, b"")
    assert store.read_blocks(empty, 0, 10)[1:3] == (b"", [])
    path = store.chunk_dir / cid[:2] / cid[2:4] / cid
    raw = bytearray(path.read_bytes())
    raw[5] ^= 0x01
    path.write_bytes(raw)
    with pytest.raises(Corrupted):
        store.read_blocks(cid, 0, 10)
    assert not store.has(cid) and store.corrupted_found == 1


def fsyncs_of_files(monkeypatch) -> list[int]:
    """The fsyncs of regular files from now on (a new fan-out directory's are not counted)."""
    synced: list[int] = []
    real_fsync = os.fsync

    def counting(fd: int) -> None:
        if stat.S_ISREG(os.fstat(fd).st_mode):
            synced.append(fd)
        real_fsync(fd)

    monkeypatch.setattr(os, "fsync", counting)
    return synced


def test_a_buffered_put_is_served_at_once_and_made_durable_by_one_pass(store, monkeypatch):
    """A small chunk put buffered is there (read back, counted) before any fsync; one
    syncfs covers every chunk buffered before it; a failed pass keeps them waiting."""
    files_synced = fsyncs_of_files(monkeypatch)
    chunks = [os.urandom(16384 + i) for i in range(3)]
    ids = [chunk_id(c) for c in chunks]
    for cid, data in zip(ids, chunks):
        assert store.put(cid, data, durable=False) is True
    assert not files_synced
    assert [store.get(cid) for cid in ids] == chunks
    assert store.usage().chunks == 3 and len(store.buffered) == 3
    assert all(store.buffered.waiting(cid) for cid in ids)

    def failing(fd: int) -> None:
        raise OSError(5, "Input/output error")

    monkeypatch.setattr(buffered_module, "syncfs", failing)
    with pytest.raises(OSError):
        store.sync()
    assert len(store.buffered) == 3  # still waiting for a pass that works
    monkeypatch.undo()
    assert store.sync() == 3
    assert store.sync() == 0 and not any(store.buffered.waiting(cid) for cid in ids)


def test_a_durable_put_of_a_buffered_copy_makes_that_copy_durable(store, monkeypatch):
    data = os.urandom(5000)
    cid = chunk_id(data)
    store.put(cid, data, durable=False)
    files_synced = fsyncs_of_files(monkeypatch)
    assert store.put(cid, data) is False  # deduplicated, and that copy fsynced
    assert len(files_synced) == 1
    files_synced.clear()
    store.sync()
    assert store.put(cid, data) is False and not files_synced  # durable already


def test_only_small_chunks_are_buffered(store):
    data = os.urandom(BUFFERED_MAX + 1)
    with pytest.raises(InvalidArgument, match="buffered"):
        store.put(chunk_id(data), data, durable=False)
    assert store.usage().chunks == 0


def test_a_buffered_put_makes_its_directories_without_fsyncs_and_a_durable_one_catches_up(
    store, monkeypatch
):
    """On a fresh store nearly every put makes a fan-out directory: a buffered one does
    not fsync their parents (the pass covers them); a durable put into such a directory
    before the pass fsyncs them itself; after the pass, nothing extra."""
    synced: list[str] = []
    real = store_module.fsync_dir
    monkeypatch.setattr(store_module, "fsync_dir", lambda p: (synced.append(str(p)), real(p)))
    data = os.urandom(3000)
    cid = chunk_id(data)
    store.put(cid, data, durable=False)
    assert not synced
    level2 = store.chunk_dir / cid[:2] / cid[2:4]
    sibling = bytes_filed_beside(cid)
    store.put(chunk_id(sibling), sibling)  # durable, into the directories just made
    assert synced == [str(store.chunk_dir), str(level2.parent), str(level2)], synced
    store.sync()
    synced.clear()
    again = bytes_filed_beside(cid)
    store.put(chunk_id(again), again)
    assert synced == [str(level2)]  # only its own rename's directory


def bytes_filed_beside(cid: str) -> bytes:
    """Random bytes whose chunk goes into ``cid``'s fan-out directories (1 in 65,536)."""
    for _ in range(2_000_000):
        data = os.urandom(64)
        if chunk_id(data)[:4] == cid[:4]:
            return data
    raise AssertionError("no chunk id with that prefix found")


def test_a_read_from_memory_and_page_cache_answers_what_the_disk_read_does(store):
    """read_blocks_now (the event loop's try): the table kept in memory since put, the
    blocks in the page cache; the same answer as read_blocks, even with the .blocks file
    gone. Pages dropped: None (the caller goes to a worker thread), never a wait."""
    data = os.urandom(5 * BLOCK + 1000)
    cid = put(store, data)
    table_of(store, cid).unlink()  # only the memory has it now
    # (put wrote past the page cache: a read from the disk first brings the blocks in)
    for offset, length in ((BLOCK + 10, BLOCK), (0, 1), (5 * BLOCK + 500, 10_000)):
        from_disk = store.read_blocks(cid, offset, length)
        assert store.read_blocks_now(cid, offset, length) == from_disk
    small = os.urandom(3000)  # one block: its digest is the id, no table at all
    small_id = put(store, small)
    from_disk = store.read_blocks(small_id, 100, 50)
    assert store.read_blocks_now(small_id, 100, 50) == from_disk
    path = store.chunk_dir / cid[:2] / cid[2:4] / cid
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
        os.posix_fadvise(fd, 0, 0, os.POSIX_FADV_DONTNEED)  # its pages leave the cache
    finally:
        os.close(fd)
    assert store.read_blocks_now(cid, 2 * BLOCK, 10) is None
    assert store.read_blocks(cid, 2 * BLOCK, 10)[1] == data[2 * BLOCK : 3 * BLOCK]
    with pytest.raises(NotFound):
        store.read_blocks_now(chunk_id(b"absent"), 0, 10)


def test_a_bad_block_is_left_to_the_disk_read_and_a_deleted_chunk_forgets_its_table(store):
    data = os.urandom(3 * BLOCK)
    cid = put(store, data)
    assert store.tables.get(cid, len(data)) is not None
    path = store.chunk_dir / cid[:2] / cid[2:4] / cid
    with open(path, "r+b") as f:
        f.seek(BLOCK + 7)
        f.write(b"\xff" if data[BLOCK + 7] != 0xFF else b"\x00")
    assert store.read_blocks_now(cid, BLOCK, 10) is None  # not answered, not judged here
    with pytest.raises(Corrupted):
        store.read_blocks(cid, BLOCK, 10)  # judged there: quarantined
    assert store.tables.get(cid, len(data)) is None
    other = os.urandom(2 * BLOCK)
    other_id = put(store, other)
    assert store.delete(other_id) and store.tables.get(other_id, len(other)) is None


def test_kept_tables_are_bounded_and_matched_by_size():
    tables = BlockTables(limit=3)
    for i in range(5):
        tables.put(f"c{i}", 100 + i, BLOCK, [bytes([i])])
    assert len(tables) == 3 and tables.get("c0", 100) is None
    assert tables.get("c4", 104) == (BLOCK, [b"\x04"])
    assert tables.get("c4", 999) is None  # another size: not that chunk's table
    tables.get("c2", 102)  # used: kept over c3
    tables.put("c5", 105, BLOCK, [])
    assert tables.get("c3", 103) is None and tables.get("c2", 102) is not None
    tables.drop("c2")
    assert tables.get("c2", 102) is None
