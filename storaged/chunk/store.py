"""Chunks on a local disk, durable before acknowledged, verified on every read.

Layout under the data directory::

    server-id                 this server's identity, created once
    LOCK                      held (flock) while a storaged process owns the directory
    chunks/ab/cd/<id>         a chunk, named by its id; two levels of 256-way fan-out keep a
                              hundred million chunks at ~1,500 per directory
    chunks/ab/cd/<id>.blocks  its block hash table, for ranged reads (blocks.py): a cache,
                              written without fsync, rebuilt whenever it does not check out
    tmp/                      chunks being written; anything here at start-up is debris
    quarantine/<id>.<time>    copies that failed their hash, kept for a post-mortem

A ``put`` writes a temp file (with O_DIRECT where the filesystem allows: direct.py), fsyncs
it, renames it into place and fsyncs the directory:
after a crash at any point a chunk is either whole under its name or absent. A small
chunk may instead be put *buffered* (written and renamed, made durable with others by
one syncfs within buffered.SYNC_SECONDS, or at once on ``sync``): a power loss inside
that window can leave its name with fewer bytes, which its hash check then refuses to
serve (a verified read goes to another copy; the scrubber quarantines it). Every method
is blocking and thread-safe; the RPC service runs them in worker threads.
"""

from __future__ import annotations

import errno
import fcntl
import logging
import os
import threading
import time
import uuid
from dataclasses import dataclass
from pathlib import Path

from .. import failpoints
from ..durable import fsync_dir
from ..rpc.errors import Corrupted, HashMismatch, InvalidArgument, NoSpace, NotFound
from . import blocks
from .buffered import BUFFERED_MAX, BufferedPuts, syncfs
from .direct import ChunkWriter
from .ids import chunk_id, is_chunk_id
from .tablecache import BlockTables

log = logging.getLogger("storaged.chunk")

MiB = 1024 * 1024
MAX_CHUNK_SIZE = 64 * MiB
MAX_LIST_LIMIT = 10_000
MAX_READ = 16 * MiB


@dataclass(frozen=True)
class Usage:
    capacity: int
    used: int
    free: int
    chunks: int

    def as_dict(self) -> dict[str, int]:
        return {
            "capacity": self.capacity,
            "used": self.used,
            "free": self.free,
            "chunks": self.chunks,
        }


class ChunkStore:
    def __init__(
        self,
        root: str | os.PathLike[str],
        *,
        capacity: int | None = None,
        reserve: int = 64 * MiB,
        direct_io: bool = True,
    ) -> None:
        """``capacity`` caps what chunks may use (default: the filesystem's size);
        ``reserve`` is disk space always left free for the rest of the system;
        ``direct_io`` writes chunks past the page cache where the filesystem allows
        (direct.py)."""
        self.root = Path(root)
        self.chunk_dir = self.root / "chunks"
        self.tmp_dir = self.root / "tmp"
        self.quarantine_dir = self.root / "quarantine"
        self.capacity = capacity
        self.reserve = reserve
        self.server_id = ""
        self.corrupted_found = 0
        self._lock = threading.Lock()
        self._used = 0
        self._count = 0
        self._reserved = 0  # bytes promised to puts in progress
        self._known_dirs: set[str] = set()
        self._lock_fd: int | None = None
        self.writer = ChunkWriter(direct_io)
        self.buffered = BufferedPuts()  # small chunks not on disk yet (buffered.py)
        self.tables = BlockTables()  # block hash tables in memory (tablecache.py)
        self._nowait = hasattr(os, "RWF_NOWAIT")  # reads that never wait (read_blocks_now)

    # -- life cycle ---------------------------------------------------------------------

    def open(self) -> None:
        """Take ownership of the directory, clean debris, and count what is stored."""
        for d in (self.root, self.chunk_dir, self.tmp_dir, self.quarantine_dir):
            d.mkdir(parents=True, exist_ok=True)
        self._lock_fd = os.open(self.root / "LOCK", os.O_RDWR | os.O_CREAT, 0o600)
        try:
            fcntl.flock(self._lock_fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(self._lock_fd)
            self._lock_fd = None
            raise RuntimeError(f"{self.root} is in use by another storaged process") from None
        self.server_id = self._load_server_id()
        removed = 0
        for leftover in self.tmp_dir.iterdir():
            leftover.unlink()
            removed += 1
        if removed:
            fsync_dir(self.tmp_dir)
            log.info("removed %d unfinished chunk writes left by a crash", removed)
        # what a process before this one put buffered is on disk before this one answers
        # a chunk.sync for it (buffered.py, invariant 3: the same boot, the same pages)
        fd = os.open(self.root, os.O_RDONLY | os.O_DIRECTORY)
        try:
            syncfs(fd)
        finally:
            os.close(fd)
        self._used, self._count = self._scan()
        log.info("chunk store %s: %d chunks, %d bytes", self.root, self._count, self._used)

    def close(self) -> None:
        if self._lock_fd is not None:
            os.close(self._lock_fd)
            self._lock_fd = None

    def _load_server_id(self) -> str:
        path = self.root / "server-id"
        try:
            return path.read_text().strip()
        except FileNotFoundError:
            pass
        new_id = uuid.uuid4().hex
        tmp = self.root / "server-id.tmp"
        with open(tmp, "w") as f:
            f.write(new_id + "\n")
            f.flush()
            os.fsync(f.fileno())
        os.rename(tmp, path)
        fsync_dir(self.root)
        return new_id

    def _scan(self) -> tuple[int, int]:
        used = count = 0
        for level1 in os.scandir(self.chunk_dir):
            for level2 in os.scandir(level1.path):
                self._known_dirs.add(level2.path)
                names = set(os.listdir(level2.path))
                for name in names:
                    path = os.path.join(level2.path, name)
                    if is_chunk_id(name):
                        used += os.stat(path).st_size
                        count += 1
                    elif name.endswith(blocks.SUFFIX) and is_chunk_id(name[: -len(blocks.SUFFIX)]):
                        if name[: -len(blocks.SUFFIX)] not in names:
                            os.unlink(path)  # its chunk was deleted: the table is debris
                    else:
                        log.warning("ignoring stray file %s", path)
        return used, count

    # -- paths --------------------------------------------------------------------------

    def _path(self, cid: str) -> Path:
        if not is_chunk_id(cid):
            raise InvalidArgument(f"not a chunk id: {cid[:80]!r} (64 lowercase hex digits)")
        return self.chunk_dir / cid[:2] / cid[2:4] / cid

    def _ensure_dir(self, directory: Path, durable: bool = True) -> None:
        """The chunk's two fan-out directories exist, their names on disk when ``durable``
        (else by the next pass: buffered.py, invariant 2)."""
        key = str(directory)
        known = key in self._known_dirs
        for d in (directory.parent, directory):
            if not known:
                if not durable and not d.exists():
                    # named before it exists: a durable put (a worker thread) that finds
                    # it made a moment later must see that its name is not on disk yet
                    self.buffered.added(str(d))
                try:
                    d.mkdir()
                except FileExistsError:
                    pass
                else:
                    if durable:  # the new directory's name must survive a crash too
                        fsync_dir(d.parent)
                    continue
            if durable and self.buffered.waiting(str(d)):
                fsync_dir(d.parent)
        self._known_dirs.add(key)

    # -- operations ---------------------------------------------------------------------

    def put(self, cid: str, data: bytes, durable: bool = True) -> bool:
        """Store ``data`` under ``cid``; True if newly stored, False if a good copy existed.

        ``durable``: on disk when this returns. Otherwise (only for chunks of at most
        ``BUFFERED_MAX`` bytes) written to the page cache and named in ``buffered``, on
        disk by the next pass (``sync``; buffered.py)."""
        final = self._path(cid)
        if len(data) > MAX_CHUNK_SIZE:
            raise InvalidArgument(f"chunk of {len(data)} bytes exceeds {MAX_CHUNK_SIZE}")
        if not durable and len(data) > BUFFERED_MAX:
            raise InvalidArgument(f"only chunks up to {BUFFERED_MAX} bytes are buffered")
        actual = chunk_id(data)
        if actual != cid:
            raise HashMismatch(f"data hashes to {actual}, not {cid}; nothing stored")
        if self._existing_copy_is_good(cid, final):
            with self._lock:
                try:
                    # Wanted again (a deduplicated write): make it young, so a garbage
                    # collector that found it unreferenced a moment ago cannot delete it
                    # now (delete(min_age=...) checks the age under the same lock).
                    os.utime(final)
                    if durable and self.buffered.waiting(cid):
                        self._make_durable(final)  # (buffered.py, invariant 2)
                    return False
                except FileNotFoundError:
                    pass  # collected just now: store it again below
        self._reserve(len(data))
        tmp = self.tmp_dir / f"{cid}.{uuid.uuid4().hex}"
        try:
            self._write(tmp, data, durable)
            failpoints.hit("chunk.put.before_rename")
            self._ensure_dir(final.parent, durable)
            with self._lock:
                existed = final.exists()
                old_size = final.stat().st_size if existed else 0
                os.rename(tmp, final)
                self._used += len(data) - old_size
                self._count += 0 if existed else 1
                if not durable:
                    self.buffered.added(cid)  # before the answer (buffered.py, invariant 1)
            if durable:
                fsync_dir(final.parent)
        finally:
            with self._lock:
                self._reserved -= len(data)
            if tmp.exists():
                tmp.unlink()
        if len(data) > blocks.BLOCK_SIZE:
            # While the bytes are at hand (and matched the id): otherwise the first ranged
            # read of the chunk reads and hashes all of it to make the table, which was
            # the whole cost of random reads over freshly written files.
            self._write_block_table(final, data)
        return True

    def _existing_copy_is_good(self, cid: str, final: Path) -> bool:
        try:
            current = final.read_bytes()
        except FileNotFoundError:
            return False
        if chunk_id(current) == cid:
            return True
        self._quarantine(cid, final, "found corrupted while a new copy was written")
        return False

    def _reserve(self, size: int) -> None:
        with self._lock:
            free = self._free_locked()
            if size > free:
                raise NoSpace(
                    f"chunk of {size} bytes does not fit: {free} bytes free "
                    f"(capacity {self._capacity()}, reserve {self.reserve})"
                )
            self._reserved += size

    def _write(self, tmp: Path, data: bytes, durable: bool) -> None:
        """A new temp file with ``data``: through ``writer`` (O_DIRECT) and fsynced when
        ``durable``, else a plain write to the page cache (buffered.py)."""
        try:
            fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        except OSError as exc:
            raise _no_space_or(exc) from exc
        try:
            if durable:
                self.writer.write(fd, data)
                os.fsync(fd)
            else:
                view = memoryview(data)
                while view:
                    view = view[os.write(fd, view) :]
        except OSError as exc:
            raise _no_space_or(exc) from exc
        finally:
            os.close(fd)

    def _make_durable(self, path: Path) -> None:
        fd = os.open(path, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)
        fsync_dir(path.parent)

    def sync(self) -> int:
        """Every chunk put with ``durable=False`` before this call is on disk when it
        returns (one syncfs of the store's filesystem); how many this pass covered."""
        fd = os.open(self.root, os.O_RDONLY | os.O_DIRECTORY)
        try:
            return self.buffered.sync(fd)
        finally:
            os.close(fd)

    def get(self, cid: str, offset: int = 0, length: int | None = None) -> bytes:
        """The chunk's bytes (or a range), only after the whole chunk matched its hash."""
        path = self._path(cid)
        if offset < 0 or (length is not None and length < 0):
            raise InvalidArgument("offset and length must not be negative")
        data = self._verified_whole(cid, path)
        if offset == 0 and (length is None or length >= len(data)):
            return data
        end = len(data) if length is None else offset + length
        return data[offset:end]

    def _verified_whole(self, cid: str, path: Path) -> bytes:
        try:
            data = path.read_bytes()
        except FileNotFoundError:
            raise NotFound(f"chunk {cid} is not on this server") from None
        if chunk_id(data) != cid:
            self._quarantine(cid, path, "failed its hash on read")
            raise Corrupted(f"chunk {cid} is corrupted on this server; read another replica")
        return data

    def read_blocks(
        self, cid: str, offset: int, length: int
    ) -> tuple[int, bytes, list[bytes], int]:
        """The whole blocks covering [offset, offset+length), each checked against the
        chunk's block hash table: (where they start, their bytes, their digests, block size).

        Only those blocks are read and hashed. A block that disagrees with the table sends
        the read to the whole chunk and its id, which tells a bad block (quarantine, like
        ``get``) from a bad table (rebuilt).
        """
        path = self._path(cid)
        if offset < 0 or length < 0:
            raise InvalidArgument("offset and length must not be negative")
        if length > MAX_READ:
            raise InvalidArgument(f"at most {MAX_READ} bytes per read, not {length}")
        fd = _open_chunk(cid, path)
        try:
            size = os.fstat(fd).st_size
            block_size, digests, whole = self._block_table(cid, path, size)
            end = min(size, offset + length)
            if offset >= end:
                return min(offset, size) // block_size * block_size, b"", [], block_size
            first, last, start, stop = _blocks_of(offset, end, size, block_size)
            if whole is not None:  # just read and checked against the id: nothing to redo
                return start, whole[start:stop], digests[first : last + 1], block_size
            data = os.pread(fd, stop - start, start)
            if len(data) != stop - start or not _blocks_match(
                data, first, last, digests, block_size
            ):
                whole = self._verified_whole(cid, path)  # raises if the chunk is bad
                log.warning("chunk %s: its block hash table was wrong; rebuilt", cid)
                digests = self._write_block_table(path, whole)
                data = whole[start:stop]
            return start, data, digests[first : last + 1], block_size
        finally:
            os.close(fd)

    def read_blocks_now(
        self, cid: str, offset: int, length: int
    ) -> tuple[int, bytes, list[bytes], int] | None:
        """``read_blocks``, when it can be answered without waiting for the disk: the
        table in memory (tablecache.py) and the blocks in the page cache (a read with
        RWF_NOWAIT); else None, and the caller runs ``read_blocks`` in a worker thread.
        For the event loop: the thread's hop and back cost more than such a read. A
        block that disagrees with its digest is also left to ``read_blocks``, which
        tells a bad block from a bad table."""
        path = self._path(cid)
        if offset < 0 or length < 0 or length > MAX_READ or not self._nowait:
            return None
        fd = _open_chunk(cid, path)
        try:
            size = os.fstat(fd).st_size
            if size <= blocks.BLOCK_SIZE:
                table: tuple[int, list[bytes]] | None = (
                    blocks.BLOCK_SIZE,
                    [bytes.fromhex(cid)] if size else [],
                )
            else:
                table = self.tables.get(cid, size)
            end = min(size, offset + length)
            if table is None or offset >= end:
                return None
            block_size, digests = table
            first, last, start, stop = _blocks_of(offset, end, size, block_size)
            data = bytearray(stop - start)
            try:
                got = os.preadv(fd, [data], start, os.RWF_NOWAIT)
            except BlockingIOError:
                return None  # not all in the page cache
            except OSError as exc:
                if exc.errno not in (errno.EOPNOTSUPP, errno.EINVAL):
                    raise
                self._nowait = False  # (a filesystem or kernel without RWF_NOWAIT)
                return None
            if got != len(data) or not _blocks_match(data, first, last, digests, block_size):
                return None
            return start, bytes(data), digests[first : last + 1], block_size
        finally:
            os.close(fd)

    def _block_table(
        self, cid: str, path: Path, size: int
    ) -> tuple[int, list[bytes], bytes | None]:
        """(block size, digests, the whole chunk if it had to be read to make the table)."""
        if size <= blocks.BLOCK_SIZE:  # one block: its digest is the chunk's id
            return blocks.BLOCK_SIZE, [bytes.fromhex(cid)] if size else [], None
        kept = self.tables.get(cid, size)
        if kept is not None:
            return (*kept, None)
        try:
            table = blocks.decode(_table_path(path).read_bytes(), size)
        except FileNotFoundError:
            table = None
        if table is not None:
            self.tables.put(cid, size, *table)
            return (*table, None)
        whole = self._verified_whole(cid, path)
        return blocks.BLOCK_SIZE, self._write_block_table(path, whole), whole

    def _write_block_table(self, path: Path, data: bytes) -> list[bytes]:
        """Digests of ``data``'s blocks, also kept beside the chunk if the disk lets us (a
        table is only a cache: failing to write one is logged, not raised), and in
        memory (tablecache.py)."""
        digests = blocks.digests_of(data)
        self.tables.put(path.name, len(data), blocks.BLOCK_SIZE, digests)
        tmp = self.tmp_dir / f"{path.name}{blocks.SUFFIX}.{uuid.uuid4().hex}"
        try:
            tmp.write_bytes(blocks.encode(len(data), digests))
            os.rename(tmp, _table_path(path))
        except OSError as exc:
            log.warning("could not keep the block table of %s: %s", path.name, exc)
            tmp.unlink(missing_ok=True)
        return digests

    def stat(self, cid: str) -> dict[str, object]:
        path = self._path(cid)
        try:
            st = path.stat()
        except FileNotFoundError:
            raise NotFound(f"chunk {cid} is not on this server") from None
        return {"id": cid, "size": st.st_size, "mtime": st.st_mtime}

    def has(self, cid: str) -> bool:
        return self._path(cid).exists()

    def delete(self, cid: str, min_age: float | None = None) -> bool:
        """Remove a chunk; False (not an error) when it was not here: deletes are retried.

        With ``min_age`` (seconds), only a chunk last written (or re-put) longer ago than
        that is removed, judged under the lock that put's refresh takes: the garbage
        collector's fence against a write that reuses the chunk after it was judged garbage.
        """
        path = self._path(cid)
        with self._lock:
            try:
                st = path.stat()
                if min_age is not None and time.time() - st.st_mtime < min_age:
                    return False
                size = st.st_size
                path.unlink()
            except FileNotFoundError:
                return False
            self.tables.drop(cid)
            _table_path(path).unlink(missing_ok=True)
            self._used -= size
            self._count -= 1
        fsync_dir(path.parent)
        return True

    def ages(self, ids: list[str]) -> dict[str, list[float]]:
        """[seconds since last written or re-put, size] per chunk (absent ones left out)."""
        now = time.time()
        out: dict[str, list[float]] = {}
        for cid in ids:
            try:
                st = self._path(cid).stat()
            except FileNotFoundError:
                continue
            out[cid] = [max(0.0, now - st.st_mtime), st.st_size]
        return out

    def list(self, after: str | None = None, limit: int = 1000) -> tuple[list[str], str | None]:
        """Ids in ascending order after ``after``; the second value resumes the listing."""
        if after is not None and not is_chunk_id(after):
            raise InvalidArgument("after must be a chunk id or nil")
        if not 1 <= limit <= MAX_LIST_LIMIT:
            raise InvalidArgument(f"limit must be in 1..{MAX_LIST_LIMIT}")
        start = after or ""
        found: list[str] = []
        for level1 in sorted(os.listdir(self.chunk_dir)):
            if level1 < start[:2]:
                continue
            for level2 in sorted(os.listdir(self.chunk_dir / level1)):
                if level1 + level2 < start[:4]:
                    continue
                names = os.listdir(self.chunk_dir / level1 / level2)
                found.extend(sorted(n for n in names if n > start and is_chunk_id(n)))
                if len(found) > limit:
                    return found[:limit], found[limit - 1]
        return found, None

    def usage(self) -> Usage:
        with self._lock:
            return Usage(self._capacity(), self._used, self._free_locked(), self._count)

    # -- helpers ------------------------------------------------------------------------

    def _capacity(self) -> int:
        if self.capacity is not None:
            return self.capacity
        st = os.statvfs(self.root)
        return st.f_blocks * st.f_frsize

    def _free_locked(self) -> int:
        st = os.statvfs(self.root)
        disk_free = st.f_bavail * st.f_frsize - self.reserve - self._reserved
        quota_free = self._capacity() - self._used - self._reserved
        return max(0, min(disk_free, quota_free))

    def _quarantine(self, cid: str, path: Path, why: str) -> None:
        target = self.quarantine_dir / f"{cid}.{int(time.time())}"
        with self._lock:
            try:
                size = path.stat().st_size
                os.rename(path, target)
            except FileNotFoundError:
                return
            self.tables.drop(cid)
            _table_path(path).unlink(missing_ok=True)
            self._used -= size
            self._count -= 1
            self.corrupted_found += 1
        log.error("chunk %s %s; moved to %s", cid, why, target)


def _open_chunk(cid: str, path: Path) -> int:
    try:
        return os.open(path, os.O_RDONLY)
    except FileNotFoundError:
        raise NotFound(f"chunk {cid} is not on this server") from None


def _blocks_match(
    data: bytes | bytearray, first: int, last: int, digests: list[bytes], size: int
) -> bool:
    """Do blocks ``first``..``last`` (of ``size`` bytes) of a chunk, read into ``data``,
    match their digests?"""
    view = memoryview(data)
    return all(
        blocks.block_digest(view[(i - first) * size : (i - first + 1) * size]) == digests[i]
        for i in range(first, last + 1)
    )


def _blocks_of(offset: int, end: int, size: int, block_size: int) -> tuple[int, int, int, int]:
    """The blocks holding [offset, end) of a chunk of ``size`` bytes: (first, last, where
    the first starts, where the last stops)."""
    first, last = offset // block_size, (end - 1) // block_size
    return first, last, first * block_size, min(size, (last + 1) * block_size)


def _table_path(chunk_path: Path) -> Path:
    return chunk_path.with_name(chunk_path.name + blocks.SUFFIX)


def _no_space_or(exc: OSError) -> Exception:
    if exc.errno in (errno.ENOSPC, errno.EDQUOT):
        return NoSpace(f"disk full while writing a chunk: {exc.strerror}")
    return exc
