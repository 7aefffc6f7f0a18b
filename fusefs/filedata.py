"""A file's bytes as the mount sees them: committed chunks plus writes not yet committed.

Invariants (between checkpoints a task has this state to itself; trio is cooperative):

- ``rows`` caches the meta role's chunk map: idx -> Piece, or None for a known hole. It is
  dropped when another mount may have changed the file (open revalidates).
- ``dirty[idx]`` holds what this mount wrote into piece idx (a DirtyPiece: the piece's
  whole content, or the written extents over the stored piece, merged when it is stored).
- A piece whose buffer filled up is uploaded in the background right away (a sequential
  writer keeps writing meanwhile); ``uploading[idx]`` keeps its bytes for readers until it
  is durable, then ``uploaded[idx]`` records the chunk until the next commit (a Piece
  written whole, or a Patch: slices to lay over the stored piece).
- ``generation[idx]`` grows with every write to idx. An upload only counts if the piece
  was not written again while it ran, so a commit never records stale bytes.
- ``flush`` uploads what is dirty, waits for every upload, then commits the chunk map and
  size in one meta transaction. Only then do fsync() and close() return: the data is on R
  servers and in the metadata. A commit sets the file's mtime to its own time, unless an
  mtime was set (utimens) since the last write (``mtime_set``): then it keeps that one,
  since it is the later word on the writes it stores.
- A flush that fails for good (the meta role refuses the commit: the volume is full, the
  file is gone) drops every unstored byte of the file (``drop_unsaved``): the file reads
  as committed again, as a local filesystem's pages do after a failed writeback, and
  ``failures`` counts it so every handle open for writing then is told once (see
  Operations). A flush that fails for now (servers unreachable) keeps the bytes for the
  next one.
- A file's dirty bytes are bounded by ``VolumeIO.max_dirty_bytes`` (past it the file is
  flushed): what a crash of the mount can lose of it. ``dirty_memory`` is their sum, kept
  as pieces enter and leave ``dirty`` and as writes change them (a random writer has
  hundreds of dirty pieces, and the sum is asked on every write). Memory for written-but-not-stored
  bytes (``dirty`` plus ``uploading``, over every file of the mount) is bounded by
  ``VolumeIO.max_unsaved_bytes``: a write that leaves more waits while dirty pieces of the
  fullest files are uploaded (``VolumeIO.make_room``). Without it, each of a hundred open
  files could hold its own bound and the mount would grow without a limit anyone
  configured.
"""

from __future__ import annotations

import errno
import logging
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass, field
from functools import partial
from typing import Any

import trio

from storaged.data.client import DataClient, hash_chunk
from storaged.metaclient import MetaClient
from storaged.rpc import FsError, RpcError

from .chunkcache import ChunkCache
from .keptmaps import map_from_answer
from .pieces import DirtyPiece, Patch, Piece, Slice, assemble, read_range, zero_trimmed

log = logging.getLogger("fusefs.data")

ROWS_AHEAD = 63
READ_AHEAD_PIECES = 4
# How long committed chunks may stay marked pending when no registration carries their drop
DROP_DELAY = 1.0
# A chunk stored and not committed by this many seconds after it was held is registered as
# pending (see VolumeIO.hold_chunk); the garbage collector's grace period is at least 10 s
REGISTER_AFTER = 2.0
REGISTER_RETRY = 1.0  # after a registration that failed
# A commit refused with one of these can never succeed for these bytes: they are dropped
LOST_FOR_GOOD = frozenset({errno.ENOSPC, errno.EDQUOT, errno.EFBIG, errno.ENOENT, errno.ESTALE})
# A read that does not continue the previous one, of a stored piece larger than this whose
# chunk is not cached, fetches only the blocks it needs (chunk.read) instead of the chunk.
RANGED_READ_ABOVE = 256 * 1024


@dataclass
class VolumeIO:
    """What every open file of one mount shares."""

    meta: MetaClient
    data: DataClient
    cache: ChunkCache
    chunk_size: int
    replicas: int
    uploads: trio.CapacityLimiter
    nursery: trio.Nursery
    max_dirty_bytes: int = 64 << 20  # per file
    max_unsaved_bytes: int = 128 << 20
    after_commit: Callable[[Mapping[str, Any]], None] | None = None  # with fs.commit's answer
    # sends a close's commit along with a batch of a delegated directory this mount owes
    # (Operations: fusefs/delegation.py), one round trip for both; None when it owes none
    commit_with_batch: (
        Callable[[int, int, list[list[Any]], int | None], Awaitable[Mapping[str, Any] | None]]
        | None
    ) = None
    # with the inode whose unstored bytes were dropped: its kernel pages must go (Operations)
    after_drop: Callable[[int], None] | None = None
    session: str = ""  # this mount's session in the meta role (set by Operations)
    # registers the mount again when the meta role no longer knows ``session`` (Operations)
    renew_session: Callable[[str], Awaitable[None]] | None = None
    # the session to send with a change (so it is not sent back to this mount as an
    # invalidation), or None while the mount is not listening (see coherence.py)
    author: Callable[[], str | None] = lambda: None
    # chunks stored but not committed yet -> how many pieces use them; registered with the
    # session so garbage collection never takes them
    pending: dict[str, int] = field(default_factory=dict)
    # chunks no longer pending here (committed or given up) that the meta role still keeps
    # as pending under ``dropped_session``: told with the next registration, or after
    # DROP_DELAY (see release_chunks)
    dropped: set[str] = field(default_factory=set)
    dropped_session: str = ""
    _drop_timer: bool = False
    # pending chunks not registered yet -> when they were held (trio's clock): registered
    # REGISTER_AFTER later if still pending (see hold_chunk)
    unregistered: dict[str, float] = field(default_factory=dict)
    _register_timer: bool = False
    # every file with open handles or unsaved data (Operations keeps it): inode -> FileData
    files: dict[int, FileData] = field(default_factory=dict)
    upload_failures: int = 0
    upload_finished: trio.Event = field(default_factory=trio.Event)

    def unsaved_bytes(self) -> int:
        return sum(f.unsaved_bytes for f in self.files.values())

    def note_upload_finished(self, failed: bool) -> None:
        self.upload_failures += failed
        self.upload_finished.set()
        self.upload_finished = trio.Event()

    async def make_room(self, incoming: int) -> None:
        """Wait until ``incoming`` more bytes fit beside the mount's unsaved bytes in
        ``max_unsaved_bytes`` (or nothing more can be freed: one write larger than the bound
        still goes through).

        Dirty pieces of the files holding the most are sent first (a piece being uploaded
        still takes memory until it is durable, so the wait is for uploads to finish). If an
        upload fails meanwhile, the write fails with it before taking its bytes: the failed
        pieces stay dirty, and while storage is failing the mount refuses more instead of
        growing without end.
        """
        while (unsaved := self.unsaved_bytes() + incoming) > self.max_unsaved_bytes:
            finished, failures = self.upload_finished, self.upload_failures
            uploading = sum(f.unsaved_bytes - f.dirty_bytes for f in self.files.values())
            needed = unsaved - self.max_unsaved_bytes - uploading  # beyond what is on its way
            for data in sorted(self.files.values(), key=lambda f: f.dirty_bytes, reverse=True):
                if needed <= 0 or not data.dirty:
                    break
                needed -= await data.upload_dirty(needed)
            if not any(f.in_flight for f in self.files.values()):
                return  # nothing will free memory; never wait for nothing
            await finished.wait()
            if self.upload_failures != failures:
                raise FsError(
                    errno.EIO,
                    "could not store data (the mount's memory for "
                    "unsaved writes is full and an upload failed)",
                )

    async def commit(
        self, ino: int, size: int, items: list[list[Any]], mtime_ns: int | None = None
    ) -> Mapping[str, Any]:
        """Record a file's written pieces and size in the meta role (fs.commit, or along
        with a batch this mount owes: ``commit_with_batch``); its mtime becomes
        ``mtime_ns``, or the commit's time."""
        if self.commit_with_batch is not None:
            attr = await self.commit_with_batch(ino, size, items, mtime_ns)
            if attr is not None:
                return attr
        return await self.meta.fs_commit(ino, size, items, mtime_ns, self.author())

    async def chunk(self, cid: str) -> bytes:
        return await self.cache.fetch(cid, self.data.get)

    def hold_chunk(self, cid: str) -> None:
        """Count ``cid`` as pending here, before it is sent; the meta role hears of it only
        if it is still pending REGISTER_AFTER later.

        Why not at once: garbage collection never deletes a chunk younger than its grace
        period (at least 10 s; the server judges the age from the chunk's file, refreshed
        by every put of it), so a chunk committed within that needs no registration: it is
        referenced from then on. A small file's close commits its chunk within
        milliseconds, and the registration was one meta round trip per file for nothing.
        A chunk kept longer (a large file written between commits, a commit that waits for
        a meta role that restarts) is registered 2 s after it was held, well within the
        grace period: the margin the registration sent with the put had, less 2 s."""
        count = self.pending.get(cid, 0)
        self.pending[cid] = count + 1
        if count:
            return
        if cid in self.dropped and self.dropped_session == self.session:
            self.dropped.discard(cid)  # never dropped: the meta role still has it pending
            return
        self.unregistered[cid] = trio.current_time()
        if not self._register_timer:
            self._register_timer = True
            self.nursery.start_soon(self._register_later)

    async def _register_later(self) -> None:
        """Register the chunks still pending REGISTER_AFTER after they were held, in one
        request per round (with the drops owed, as release_chunks says)."""
        try:
            while self.unregistered:
                due_at = min(self.unregistered.values()) + REGISTER_AFTER
                await trio.sleep_until(due_at)
                now = trio.current_time()
                due = [c for c, t in self.unregistered.items() if t + REGISTER_AFTER <= now]
                for cid in due:
                    del self.unregistered[cid]
                if not due:
                    continue
                try:
                    await self._register_pending(due)
                except RpcError as exc:
                    log.warning(
                        "could not register %d stored, uncommitted chunks with the meta "
                        "role (trying again in %g s): %s",
                        len(due),
                        REGISTER_RETRY,
                        exc,
                    )
                    again = now - REGISTER_AFTER + REGISTER_RETRY
                    for cid in due:
                        if cid in self.pending:
                            self.unregistered.setdefault(cid, again)
        finally:
            self._register_timer = False

    def registered(self, cids: list[str]) -> None:
        """These pending chunks were registered by someone else (a new session's)."""
        for cid in cids:
            self.unregistered.pop(cid, None)

    async def _register_pending(self, cids: list[str]) -> None:
        """A restarted meta role refuses our session until the mount registers again; do
        that, then register ``cids`` under the new session (a write must not fail because
        the meta role restarted between two heartbeats)."""
        session = self.session
        drop = self._take_dropped(session)
        try:
            await self.meta.session_pending(session, cids, drop)
        except FsError as exc:
            if exc.errno != errno.ESTALE or self.renew_session is None:
                raise
            await self.renew_session(session)
            still = [cid for cid in cids if cid in self.pending]
            if still:
                await self.meta.session_pending(self.session, still, [])

    async def release_chunks(self, cids: list[str], tell: bool = True) -> None:
        """The pieces using these chunks were committed or superseded."""
        gone = []
        for cid in cids:
            count = self.pending.get(cid, 0) - 1
            if count > 0:
                self.pending[cid] = count
            elif cid in self.pending:
                del self.pending[cid]
                if self.unregistered.pop(cid, None) is None:  # (else never registered)
                    gone.append(cid)
        if not gone or not tell:
            return
        # Told later, with the next chunk's registration (the same request) or after
        # DROP_DELAY: a written file's close costs no round trip of its own for it. A chunk
        # kept pending a little longer is only kept from garbage collection a little longer:
        # a committed one is referenced anyway, a superseded one is collected a second later.
        if self.dropped_session != self.session:
            self.dropped.clear()  # those went with the session they were pending in
            self.dropped_session = self.session
        self.dropped.update(gone)
        if not self._drop_timer:
            self._drop_timer = True
            self.nursery.start_soon(self._drop_later)

    def _take_dropped(self, session: str) -> list[str]:
        """The chunks to drop in a request for ``session`` (and no longer to remember)."""
        if not self.dropped or self.dropped_session != session:
            return []
        drop = list(self.dropped)
        self.dropped.clear()
        return drop

    async def _drop_later(self) -> None:
        try:
            await trio.sleep(DROP_DELAY)
        finally:
            self._drop_timer = False
        session = self.dropped_session
        drop = self._take_dropped(session)
        if drop:
            try:
                await self.meta.session_pending(session, [], drop)
            except RpcError as exc:  # harmless: they go with the session at the latest
                log.info("could not drop %d pending chunks: %s", len(drop), exc)


@dataclass
class FileData:
    ino: int
    io: VolumeIO
    size: int  # as this mount sees it, uncommitted writes included
    committed_size: int
    rows: dict[int, Piece | None] = field(default_factory=dict)
    # a change of the file elsewhere was heard while it was open here: ``rows`` may be of
    # an older version (close-to-open keeps showing it); not kept past the close
    rows_stale: bool = False
    dirty: dict[int, DirtyPiece] = field(default_factory=dict)
    uploading: dict[int, DirtyPiece] = field(default_factory=dict)
    uploaded: dict[int, Piece | Patch] = field(default_factory=dict)
    generation: dict[int, int] = field(default_factory=dict)
    in_flight: int = 0
    dirty_memory: int = 0  # sum of dirty pieces' memory, kept as they change (asked per write)
    next_sequential: int = -1
    upload_error: BaseException | None = None
    failures: int = 0  # flushes that failed for good, their bytes dropped (drop_unsaved)
    failure: FsError | None = None  # the last of them
    handles: int = 0
    # an mtime set (utimens) since the last write: the next commit keeps it instead of
    # taking its own time (tar x, cp -p and rsync -t write a file, set its times on the
    # open descriptor, then close it)
    mtime_set: int | None = None
    write_lock: trio.Lock = field(default_factory=trio.Lock)
    flush_lock: trio.Lock = field(default_factory=trio.Lock)
    idle: trio.Event = field(default_factory=trio.Event)

    @property
    def dirty_bytes(self) -> int:
        return self.dirty_memory

    @property
    def unsaved_bytes(self) -> int:
        """Memory this file's written-but-not-stored bytes take."""
        return self.dirty_bytes + sum(d.memory for d in self.uploading.values())

    @property
    def has_unsaved(self) -> bool:
        return bool(
            self.dirty
            or self.uploading
            or self.uploaded
            or self.in_flight
            or self.size != self.committed_size
        )

    # -- the committed chunk map ----------------------------------------------------------

    async def _rows(self, first: int, last: int) -> None:
        """Make sure rows first..last are cached (one meta call for the missing range).

        Pieces wholly past the committed size have no rows (the meta role keeps none
        beyond a file's size): known without asking, which spares every new file's and
        every appending writer's first write into a piece a round trip."""
        cs = self.io.chunk_size
        stored_end = -(-self.committed_size // cs)  # pieces from here on are holes
        missing = []
        for i in range(first, last + 1):
            if i in self.rows:
                continue
            if i >= stored_end:
                self.rows[i] = None
            else:
                missing.append(i)
        if not missing:
            return
        lo, hi = missing[0], missing[-1]
        if self.size:  # read the map ahead: a sequential reader needs the next rows soon
            hi = max(hi, min(lo + ROWS_AHEAD, (self.size - 1) // cs, stored_end - 1))
        fetched = await self.io.meta.fs_chunks(self.ino, lo, hi, slices=True)
        for i in range(lo, hi + 1):
            self.rows.setdefault(i, None)
        for row in fetched:
            self.rows[row[0]] = Piece.from_row(row)

    def know_rows(self, fetched: list[list[Any]], count: int) -> None:
        """The map of pieces 0..count-1 as fs.open answered it: what ``_rows`` would ask
        for at the first read (callers make sure it is not older than what is here)."""
        answered = map_from_answer(fetched, count, self.committed_size, self.io.chunk_size)
        for i, piece in answered.items():
            if piece is not None:
                self.rows[i] = piece
            else:
                self.rows.setdefault(i, None)

    def forget_rows(self) -> None:
        """Another mount may have changed the file: re-read its chunk map when needed."""
        self.rows.clear()
        self.rows_stale = False

    async def _piece_content(self, idx: int) -> bytes:
        """The valid bytes of piece idx from its start (for a read-modify-write)."""
        await self._rows(idx, idx)
        start, data = await self._piece_view(idx)
        return bytes(start) + data if data else b""

    # -- reads ----------------------------------------------------------------------------

    def _stored(self, idx: int) -> Piece | None:
        """Piece idx as stored: uploaded by this mount, else as the chunk map says."""
        piece = self.uploaded.get(idx) or self.rows.get(idx)
        return piece.committed() if isinstance(piece, Patch) else piece

    async def _piece_view(self, idx: int) -> tuple[int, bytes]:
        """(start, bytes) of piece idx: the piece is zeros outside them (stored pieces come
        from the chunk cache without a copy)."""
        written = self.dirty.get(idx) or self.uploading.get(idx)
        if written is not None:
            return 0, await written.view(self.io.chunk)
        piece = self._stored(idx)
        if piece is None or piece.empty:
            return 0, b""
        if piece.slices:
            return 0, bytes(await assemble(piece, self.io.chunk))
        assert piece.cid is not None
        data = await self.io.chunk(piece.cid)
        return piece.start, data[: piece.length] if piece.length < len(data) else data

    def _read_ahead(self, last: int) -> None:
        """A sequential reader will want the next pieces: fetch them in the background."""
        for idx in range(last + 1, last + 1 + READ_AHEAD_PIECES):
            piece = self.rows.get(idx)
            if piece is not None and piece.cid is not None and self.io.cache.get(piece.cid) is None:
                self.io.nursery.start_soon(self._prefetch, piece.cid)

    async def _prefetch(self, cid: str) -> None:
        try:
            await self.io.chunk(cid)
        except RpcError as exc:  # the reader will try (and report) for itself
            log.debug("read-ahead of chunk %s failed: %s", cid[:12], exc)

    def _read_in_place(self, idx: int, sequential: bool) -> Piece | None:
        """The stored piece if a read should take only the bytes it needs from it rather
        than the whole piece: a piece with slices (assembling it would copy it whole for
        every read), or a random read of a large piece not in memory (a ranged read)."""
        if idx in self.dirty or idx in self.uploading:
            return None
        piece = self._stored(idx)
        if piece is None or piece.empty:
            return None
        if piece.slices:
            return piece
        if (
            sequential
            or piece.length <= RANGED_READ_ABOVE
            or (piece.cid is not None and self.io.cache.get(piece.cid) is not None)
        ):
            return None
        return piece

    async def _chunk_range(self, cid: str, offset: int, length: int, whole: bool) -> bytes:
        """Bytes of a piece's chunk: from the cache if there, else the whole chunk (``whole``:
        a sequential reader wants all of it) or a ranged read."""
        cached = self.io.cache.get(cid)
        if cached is None and whole:
            cached = await self.io.chunk(cid)
        if cached is not None:
            return cached[offset : offset + length]
        return await self.io.data.read(cid, offset, length)

    async def read(self, off: int, size: int) -> bytes | memoryview:
        """The bytes at [off, off + size) as far as the file goes. An answer lying within one
        piece's bytes (a sequential reader's 1 MiB requests inside 4 MiB chunks) is a view of
        them, not a copy: pyfuse3 takes any buffer and copies it to the kernel at once."""
        end = min(off + size, self.size)
        if off >= end:
            return b""
        cs = self.io.chunk_size
        first, last = off // cs, (end - 1) // cs
        await self._rows(first, last)
        sequential = off in (0, self.next_sequential)
        if sequential:
            self._read_ahead(last)
        self.next_sequential = end
        chunk_range = partial(self._chunk_range, whole=sequential)
        out: bytearray | None = None  # zeros: holes and piece borders need no work
        for idx in range(first, last + 1):
            base = idx * cs
            piece = self._read_in_place(idx, sequential)
            if piece is not None:
                lo, hi = max(off, base), min(end, base + piece.end)
                if lo < hi:
                    out = bytearray(end - off) if out is None else out
                    out[lo - off : hi - off] = await read_range(
                        piece, lo - base, hi - base, chunk_range
                    )
                continue
            start, data = await self._piece_view(idx)
            lo = max(off, base + start)
            hi = min(end, base + start + len(data))
            if lo == off and hi == end:  # all of it, from this piece alone
                return memoryview(data)[lo - base - start : hi - base - start]
            if lo < hi:
                out = bytearray(end - off) if out is None else out
                out[lo - off : hi - off] = memoryview(data)[lo - base - start : hi - base - start]
        return bytes(end - off) if out is None else bytes(out)

    # -- writes ---------------------------------------------------------------------------

    async def write(self, off: int, buf: bytes) -> None:
        if self.upload_error is not None:
            error, self.upload_error = self.upload_error, None
            raise _as_fs_error(error)
        await self.io.make_room(len(buf))
        cs = self.io.chunk_size
        async with self.write_lock:
            self.mtime_set = None  # (see mtime_set) a write after it moves the mtime again
            pos = 0
            while pos < len(buf):
                idx, inner = divmod(off + pos, cs)
                take = min(cs - inner, len(buf) - pos)
                if idx not in self.dirty:
                    await self._start_piece(idx, whole=inner == 0 and take == cs)
                piece = self.dirty[idx]
                before = piece.memory
                piece.write(inner, memoryview(buf)[pos : pos + take])
                self.dirty_memory += piece.memory - before
                if piece.held is not None and piece.base is None:
                    await self._release_base(piece)  # written over: its base is not needed
                self.generation[idx] = self.generation.get(idx, 0) + 1
                superseded = self.uploaded.pop(idx, None)
                if superseded is not None and superseded.cid is not None:
                    await self.io.release_chunks([superseded.cid])
                pos += take
                if inner + take == cs and piece.content is not None and piece.length == cs:
                    await self._start_upload(idx)  # full: send it while the writer goes on
            self.size = max(self.size, off + len(buf))
        if self.dirty_bytes > self.io.max_dirty_bytes:
            await self.flush()  # commit now and then: bounds what a crash of the mount loses

    async def _start_piece(self, idx: int, whole: bool) -> None:
        """Make ``dirty[idx]`` for a write into piece idx that is not dirty yet.

        A write into a stored piece keeps only its own bytes, over the stored piece (read
        once, when the piece is stored). Only a piece being uploaded right now is read into
        memory first: its bytes are this mount's, not stored yet.
        """
        piece = DirtyPiece()
        if not whole:
            await self._rows(idx, idx)
            if idx in self.uploading:
                piece = DirtyPiece.whole(await self._piece_content(idx))
            else:
                base = self._stored(idx)
                if base is not None and not base.empty:
                    # An uploaded, uncommitted base is kept from garbage collection only by
                    # this session: hold it (again) until the piece no longer needs it.
                    uploaded = self.uploaded.get(idx)
                    held = uploaded.cid if uploaded is not None else None
                    if held is not None:
                        self.io.hold_chunk(held)
                    piece = DirtyPiece(base, held)
                # else a hole: the piece starts empty
        if self._add_dirty(idx, piece) is not piece and piece.held is not None:
            await self._release_base(piece)  # (a failed upload put the piece back meanwhile)

    def _add_dirty(self, idx: int, piece: DirtyPiece) -> DirtyPiece:
        """``dirty.setdefault(idx, piece)``, counting the piece's memory if it went in."""
        current = self.dirty.setdefault(idx, piece)
        if current is piece:
            self.dirty_memory += piece.memory
        return current

    async def _release_base(self, piece: DirtyPiece) -> None:
        held, piece.held = piece.held, None
        if held is not None:
            await self.io.release_chunks([held])

    async def upload_dirty(self, at_least: int) -> int:
        """Start uploading dirty pieces, fullest first, until ``at_least`` bytes are on their
        way (or none are left); returns how many bytes were started."""
        started = 0
        async with self.write_lock:
            for idx in sorted(self.dirty, key=lambda i: self.dirty[i].memory, reverse=True):
                if started >= at_least:
                    break
                started += self.dirty[idx].memory
                await self._start_upload(idx)
        return started

    async def _start_upload(self, idx: int, durable: bool = False) -> None:
        """``durable``: for an fsync (each server puts it on disk before answering);
        otherwise a small chunk may be put buffered (storaged/chunk/buffered.py)."""
        if self.dirty[idx].as_slices() is not None:
            await self._start_patches([idx], durable)
            return
        [(_, written, generation)] = self._take_for_upload([idx])
        token = ("upload", self.ino, idx, id(written))
        await self.io.uploads.acquire_on_behalf_of(token)
        self.io.nursery.start_soon(self._upload, idx, written, generation, token, durable)

    async def _start_patches(self, indices: list[int], durable: bool = False) -> None:
        """Upload the slices of these patched pieces, packed together in one chunk."""
        items = self._take_for_upload(indices)
        token = ("patches", self.ino, id(items))
        await self.io.uploads.acquire_on_behalf_of(token)
        self.io.nursery.start_soon(self._upload_patches, items, token, durable)

    def _take_for_upload(self, indices: list[int]) -> list[tuple[int, DirtyPiece, int]]:
        """Move pieces from dirty to uploading: [(idx, piece, generation)], one upload."""
        items = []
        for idx in indices:
            written = self.dirty.pop(idx)
            self.dirty_memory -= written.memory
            self.uploading[idx] = written
            items.append((idx, written, self.generation[idx]))
        self.in_flight += 1
        self.idle = trio.Event() if self.idle.is_set() else self.idle
        return items

    def _upload_done(
        self, items: list[tuple[int, DirtyPiece, int]], token: object, failed: bool
    ) -> None:
        for idx, written, _ in items:
            if self.uploading.get(idx) is written:
                del self.uploading[idx]
        self.io.uploads.release_on_behalf_of(token)
        self.in_flight -= 1
        if self.in_flight == 0:
            self.idle.set()
        self.io.note_upload_finished(failed)

    def _upload_failed(self, items: list[tuple[int, DirtyPiece, int]], exc: BaseException) -> None:
        log.error(
            "upload of inode %d pieces %s failed: %s",
            self.ino,
            ",".join(str(idx) for idx, _, _ in items),
            exc,
        )
        for idx, written, generation in items:
            if self.generation.get(idx) == generation:
                self._add_dirty(idx, written)  # keep it for the next flush
        self.upload_error = exc

    async def _upload(
        self, idx: int, written: DirtyPiece, generation: int, token: object, durable: bool
    ) -> None:
        failed = False
        try:
            data = bytes(await written.merge(self.io.chunk))  # (a patched piece's base now)
            await self._release_base(written)
            start, stored = zero_trimmed(data)
            if stored:
                piece = Piece(await self._store(stored, durable), start, len(stored))
            else:
                piece = Piece(None, 0, 0)  # all zeros: nothing to store
            if self.generation.get(idx) == generation:
                self.uploaded[idx] = piece
            elif piece.cid is not None:
                await self.io.release_chunks([piece.cid])  # rewritten meanwhile
        except (RpcError, OSError) as exc:
            self._upload_failed([(idx, written, generation)], exc)
            failed = True
        finally:
            if self.dirty.get(idx) is not written and written.held is not None:
                with trio.CancelScope(shield=True):
                    await self._release_base(written)  # (a newer write holds what it needs)
            self._upload_done([(idx, written, generation)], token, failed)

    async def _upload_patches(
        self, items: list[tuple[int, DirtyPiece, int]], token: object, durable: bool
    ) -> None:
        """A few small writes per piece: stored beside the pieces, not in them. One chunk
        holds the extents of every piece in ``items``; each piece gets a Patch naming its
        slices of it (and one pending count of the chunk, released by its commit)."""
        failed = False
        try:
            packed = bytearray()
            layouts = []
            for _, written, _ in items:
                extents = written.as_slices()
                assert extents is not None and written.base is not None
                layout = []  # (where in the piece, length, where in the chunk)
                for start, extent in extents:
                    layout.append((start, len(extent), len(packed)))
                    packed += extent
                layouts.append(layout)
            cid = await self._store(bytes(packed), durable)
            kept = [
                (idx, written, layout)
                for (idx, written, generation), layout in zip(items, layouts)
                if self.generation.get(idx) == generation
            ]
            for _ in kept[1:]:
                self.io.hold_chunk(cid)  # (already pending: counts)
            for idx, written, layout in kept:
                assert written.base is not None
                self.uploaded[idx] = Patch(
                    written.base, cid, tuple(Slice(cid, *where) for where in layout)
                )
            if not kept:
                await self.io.release_chunks([cid])  # all rewritten meanwhile
        except (RpcError, OSError) as exc:
            self._upload_failed(items, exc)
            failed = True
        finally:
            self._upload_done(items, token, failed)

    async def _store(self, data: bytes, durable: bool) -> str:
        """Put ``data`` as a chunk on R servers, pending in this session until committed."""
        cid = await hash_chunk(data)
        self.io.hold_chunk(cid)  # (registered with the meta role only if kept: hold_chunk)
        try:
            await self.io.data.put(data, self.io.replicas, cid, durable=durable)
        except BaseException:
            with trio.CancelScope(shield=True):
                await self.io.release_chunks([cid])
            raise
        self.io.cache.put(cid, data)
        return cid

    # -- flush, fsync, close ----------------------------------------------------------------

    async def flush(self, durable: bool = False) -> None:
        """Store everything written so far on R servers and commit it, or raise.
        ``durable`` (fsync, unmount): on the servers' disks too, buffered puts included
        (this mount's, of any file: DataClient.sync); otherwise small chunks may reach
        the disks within the servers' sync period (storaged/chunk/buffered.py)."""
        async with self.flush_lock:
            async with self.write_lock:
                patched = [i for i in sorted(self.dirty) if self.dirty[i].as_slices() is not None]
                for group in _packed(patched, lambda i: self.dirty[i].memory, self.io.chunk_size):
                    await self._start_patches(group, durable)
                for idx in list(self.dirty):
                    await self._start_upload(idx, durable)
                size, mtime = self.size, self.mtime_set
            if self.in_flight:
                await self.idle.wait()
            if self.upload_error is not None:
                error, self.upload_error = self.upload_error, None
                raise _as_fs_error(error)
            if durable:
                await self._synced()
            pieces = dict(self.uploaded)
            if not pieces and size == self.committed_size:
                return
            try:
                attr = await self.io.commit(self.ino, size, _commit_items(pieces), mtime)
            except FsError as exc:
                if exc.errno in LOST_FOR_GOOD:
                    await self.drop_unsaved(exc)
                raise
            for idx, piece in pieces.items():
                if isinstance(piece, Patch):
                    self.rows[idx] = piece.committed()
                else:
                    self.rows[idx] = piece if piece.cid is not None else None
                if self.uploaded.get(idx) == piece:
                    del self.uploaded[idx]
            # committed: no longer pending (late is harmless, so nobody waits for it)
            self.io.nursery.start_soon(
                self.io.release_chunks, [p.cid for p in pieces.values() if p.cid is not None]
            )
            self.committed_size = attr["size"]
            self.size = max(self.size, attr["size"])
            if self.io.after_commit is not None:
                self.io.after_commit(attr)

    async def _synced(self) -> None:
        """Every buffered put of this mount is on its servers' disks (for an fsync)."""
        try:
            await self.io.data.sync()
        except RpcError as exc:
            raise _as_fs_error(exc) from exc

    async def drop_unsaved(self, error: FsError) -> None:
        """The meta role refused to commit this file's writes for good: forget every byte
        not stored (dirty, being uploaded, uploaded and not committed; a write that came in
        while the commit was on its way too, since it lies over them) so that readers see
        the committed file, never bytes no remount would show. Uploads still running find
        their generation moved on and give their chunks back."""
        async with self.write_lock:
            log.error(
                "inode %d: writes not yet stored (%d bytes in memory, size %d of which "
                "%d committed) are dropped: %s",
                self.ino,
                self.unsaved_bytes,
                self.size,
                self.committed_size,
                error,
            )
            self.failures += 1
            self.failure = error
            for idx in set(self.dirty) | set(self.uploading) | set(self.uploaded):
                self.generation[idx] = self.generation.get(idx, 0) + 1
            dirty, self.dirty, self.dirty_memory = self.dirty, {}, 0
            uploaded, self.uploaded = self.uploaded, {}
            self.uploading.clear()
            self.size = self.committed_size
            self.upload_error = None
            with trio.CancelScope(shield=True):
                for piece in dirty.values():
                    await self._release_base(piece)
                await self.io.release_chunks(
                    [p.cid for p in uploaded.values() if p.cid is not None]
                )
        if self.io.after_drop is not None:
            self.io.after_drop(self.ino)

    async def truncate(self, size: int) -> Mapping[str, Any]:
        """Commit pending writes, then set the size in the meta role (metadata only)."""
        await self.flush()
        async with self.write_lock:
            attr = await self.io.meta.fs_setattr(self.ino, {"size": size}, self.io.author())
            self.size = self.committed_size = size
            self.forget_rows()
            return attr


def _packed(indices: list[int], size: Callable[[int], int], limit: int) -> list[list[int]]:
    """``indices`` in runs whose sizes add up to at most ``limit`` (one chunk each)."""
    groups: list[list[int]] = []
    total = limit
    for idx in indices:
        if total + size(idx) > limit:
            groups.append([])
            total = 0
        groups[-1].append(idx)
        total += size(idx)
    return groups


def _commit_items(pieces: dict[int, Piece | Patch]) -> list[list[Any]]:
    """fs.commit's items: [idx, cid, start, length] for a piece written whole,
    [idx, cid, start, length, offset] for each slice of a patch."""
    items: list[list[Any]] = []
    for idx, piece in sorted(pieces.items()):
        if isinstance(piece, Patch):
            items.extend([idx, s.cid, s.start, s.length, s.offset] for s in piece.slices)
        else:
            items.append([idx, piece.cid, piece.start, piece.length])
    return items


def _as_fs_error(exc: BaseException) -> FsError:
    if isinstance(exc, FsError):
        return exc
    return FsError(errno.EIO, f"could not store data: {exc}")
