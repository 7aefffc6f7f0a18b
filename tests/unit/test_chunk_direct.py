"""Chunk files written with O_DIRECT: every length comes back exact, and a filesystem or a
disk that refuses O_DIRECT still gets whole, correct files (through the page cache)."""

from __future__ import annotations

import errno
import fcntl
import logging
import os

import pytest

from storaged.chunk import direct
from storaged.chunk.direct import ALIGN, ChunkWriter
from storaged.chunk.ids import chunk_id
from storaged.chunk.store import ChunkStore

LENGTHS = [1, ALIGN - 1, ALIGN, ALIGN + 1, 3 * ALIGN + 17, (4 << 20) - 1, 4 << 20, (4 << 20) + 1]


def takes_o_direct(directory) -> bool:
    """Whether this filesystem opens files with O_DIRECT (asked of the kernel directly)."""
    probe = directory / "probe"
    try:
        fd = os.open(probe, os.O_WRONLY | os.O_CREAT | os.O_DIRECT, 0o600)
    except OSError as exc:
        assert exc.errno == errno.EINVAL
        return False
    os.close(fd)
    probe.unlink()
    return True


def write_file(writer: ChunkWriter, path, data: bytes) -> None:
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    try:
        writer.write(fd, data)
        assert not fcntl.fcntl(fd, fcntl.F_GETFL) & os.O_DIRECT  # left as it was found
        os.fsync(fd)
    finally:
        os.close(fd)


@pytest.mark.parametrize("length", LENGTHS)
def test_every_length_comes_back_exact(tmp_path, length):
    writer = ChunkWriter()
    data = os.urandom(length)
    write_file(writer, tmp_path / "f", data)
    assert (tmp_path / "f").read_bytes() == data
    assert os.stat(tmp_path / "f").st_size == length  # the padding is cut off
    if takes_o_direct(tmp_path):
        assert (writer.direct_writes, writer.buffered_writes) == (1, 0)


def test_a_thread_reuses_its_buffer_and_a_shorter_chunk_after_a_longer_one_is_exact(tmp_path):
    writer = ChunkWriter()
    long, short = os.urandom(3 * ALIGN + 5), os.urandom(ALIGN + 1)
    write_file(writer, tmp_path / "long", long)
    write_file(writer, tmp_path / "short", short)  # no bytes of "long" after its end
    assert (tmp_path / "long").read_bytes() == long
    assert (tmp_path / "short").read_bytes() == short


def test_a_chunk_larger_than_the_kept_buffer_is_written_from_its_own(tmp_path, monkeypatch):
    monkeypatch.setattr(direct, "KEEP_BUFFER", 2 * ALIGN)
    writer = ChunkWriter()
    data = os.urandom(5 * ALIGN + 3)
    write_file(writer, tmp_path / "f", data)
    assert (tmp_path / "f").read_bytes() == data
    assert getattr(writer._local, "buffer", None) is None  # not kept


def test_a_filesystem_refusing_the_flag_gets_buffered_writes_and_one_warning(
    tmp_path, monkeypatch, caplog
):
    real_fcntl = fcntl.fcntl

    def refusing(fd, cmd, arg=0):
        if cmd == fcntl.F_SETFL and arg & os.O_DIRECT:
            raise OSError(errno.EINVAL, "Invalid argument")
        return real_fcntl(fd, cmd, arg)

    monkeypatch.setattr(direct.fcntl, "fcntl", refusing)
    writer = ChunkWriter()
    with caplog.at_level(logging.WARNING, logger="storaged.chunk"):
        for name in ("a", "b"):
            data = os.urandom(ALIGN + 7)
            write_file(writer, tmp_path / name, data)
            assert (tmp_path / name).read_bytes() == data
    assert (writer.direct, writer.direct_writes, writer.buffered_writes) == (False, 0, 2)
    assert len([r for r in caplog.records if "O_DIRECT" in r.getMessage()]) == 1


def test_a_refused_direct_write_is_redone_buffered_from_the_start(tmp_path, monkeypatch):
    real_pwrite = os.pwrite
    calls = []

    def refusing_second(fd, data, offset):
        if not fcntl.fcntl(fd, fcntl.F_GETFL) & os.O_DIRECT:
            return real_pwrite(fd, data, offset)
        calls.append(offset)
        if len(calls) == 2:
            raise OSError(errno.EINVAL, "Invalid argument")  # after one piece got through
        return real_pwrite(fd, data[:ALIGN], offset)

    monkeypatch.setattr(direct.os, "pwrite", refusing_second)
    writer = ChunkWriter()
    data = os.urandom(3 * ALIGN + 1)
    write_file(writer, tmp_path / "f", data)
    assert (tmp_path / "f").read_bytes() == data
    assert (writer.direct, writer.buffered_writes) == (False, 1)


def test_a_short_unaligned_direct_write_is_finished_through_the_page_cache(tmp_path, monkeypatch):
    if not takes_o_direct(tmp_path):
        pytest.skip("this filesystem has no O_DIRECT: the direct path cannot be exercised")
    real_pwrite = os.pwrite
    modes = []

    def short_once(fd, data, offset):
        modes.append(bool(fcntl.fcntl(fd, fcntl.F_GETFL) & os.O_DIRECT))
        if len(modes) == 1:
            return real_pwrite(fd, data[:ALIGN], offset) and 100  # as if cut short
        return real_pwrite(fd, data, offset)

    monkeypatch.setattr(direct.os, "pwrite", short_once)
    writer = ChunkWriter()
    data = os.urandom(2 * ALIGN + 9)
    write_file(writer, tmp_path / "f", data)
    assert (tmp_path / "f").read_bytes() == data
    assert modes == [True, False] and writer.direct_writes == 1


def test_a_store_with_direct_io_off_writes_through_the_page_cache(tmp_path):
    store = ChunkStore(tmp_path / "data", reserve=0, direct_io=False)
    store.open()
    try:
        data = os.urandom(ALIGN * 2 + 1)
        cid = chunk_id(data)
        assert store.put(cid, data) is True
        assert store.get(cid) == data
        assert (store.writer.direct_writes, store.writer.buffered_writes) == (0, 1)
    finally:
        store.close()


def test_a_store_writes_its_chunks_directly_where_the_disk_allows(tmp_path):
    store = ChunkStore(tmp_path / "data", reserve=0)
    store.open()
    try:
        data = os.urandom(1 << 20)
        cid = chunk_id(data)
        store.put(cid, data)
        assert store.get(cid) == data and store.read_blocks(cid, 5000, 10)[1]
        expected = (1, 0) if takes_o_direct(tmp_path) else (0, 1)
        assert (store.writer.direct_writes, store.writer.buffered_writes) == expected
    finally:
        store.close()
