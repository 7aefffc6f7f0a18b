"""The chunk role's RPC methods: thin async wrappers running the store in worker threads.

Disk work (write + fsync, read + hash) blocks, so it runs in trio worker threads, bounded by
a limiter: enough to overlap fsyncs of several clients, few enough that memory for chunks
in flight stays predictable.
"""

from __future__ import annotations

import logging
from typing import Any

import trio

from ..rpc.errors import InvalidArgument, Unavailable
from ..rpc.methods import MethodTable
from .buffered import BUFFERED_MAX, SYNC_SECONDS
from .ids import are_chunk_ids
from .scrub import ScrubStatus
from .store import ChunkStore

log = logging.getLogger("storaged.chunk")

# a read of at most this much is tried on the event loop first (store.read_blocks_now):
# hashing 256 KiB takes ~0.1 ms, less than the hop to a worker thread and back
READ_NOW_MAX = 256 * 1024

DISK_THREADS = 8


class ChunkService:
    def __init__(self, store: ChunkStore, *, zone: str = "") -> None:
        self.store = store
        self.zone = zone
        self.scrub = ScrubStatus()  # advanced by the scrubber task, shown by health
        self._disk = trio.CapacityLimiter(DISK_THREADS)

    def register(self, table: MethodTable) -> None:
        table.add("chunk.put", self.put)
        table.add("chunk.put_buffered", self.put_buffered)
        table.add("chunk.sync", self.sync)
        table.add("chunk.get", self.get)
        table.add("chunk.read", self.read)
        table.add("chunk.stat", self.stat)
        table.add("chunk.has", self.has)
        table.add("chunk.delete", self.delete)
        table.add("chunk.list", self.list)
        table.add("chunk.ages", self.ages)
        table.add("chunk.usage", self.usage)
        table.add("scrub.status", self.scrub_status)
        table.add("scrub.run", self.scrub_run)

    async def _run(self, fn: Any, *args: Any) -> Any:
        return await trio.to_thread.run_sync(fn, *args, limiter=self._disk)

    async def put(self, chunk_id: str, data: bytes) -> dict[str, Any]:
        created = await self._run(self.store.put, chunk_id, data)
        return {"size": len(data), "created": created}

    async def put_buffered(self, chunk_id: str, data: bytes) -> dict[str, Any]:
        """As chunk.put, but a small chunk may reach the disk up to SYNC_SECONDS after the
        answer (``synced`` False; ``boot`` names the machine's boot: buffered.py). Such a
        put is a write to the page cache and a rename, done here on the event loop: the
        hop to a worker thread and back cost more than the put itself."""
        if len(data) > BUFFERED_MAX:
            created = await self._run(self.store.put, chunk_id, data)
            return {"size": len(data), "created": created, "synced": True}
        created = self.store.put(chunk_id, data, durable=False)
        return {
            "size": len(data),
            "created": created,
            "synced": False,
            "boot": self.store.buffered.boot,
        }

    async def sync(self) -> dict[str, Any]:
        """Every buffered put answered before this call is on this server's disk."""
        try:
            await self._run(self.store.sync)
        except OSError as exc:
            raise Unavailable(f"this server could not put its chunks on disk: {exc}") from exc
        return {"boot": self.store.buffered.boot}

    async def sync_loop(self, interval: float = SYNC_SECONDS) -> None:
        """Buffered puts reach the disk within ``interval`` (buffered.py)."""
        while True:
            await trio.sleep(interval)
            if not len(self.store.buffered):
                continue
            try:
                await self._run(self.store.sync)
            except OSError as exc:
                log.error(
                    "could not put buffered chunks on disk (syncfs): %s; trying again in %g s",
                    exc,
                    interval,
                )

    async def get(self, chunk_id: str, offset: int = 0, length: int | None = None) -> bytes:
        return await self._run(self.store.get, chunk_id, offset, length)

    async def read(self, chunk_id: str, offset: int, length: int) -> dict[str, Any]:
        """A range as whole blocks with their digests, checked against the block table
        rather than the whole chunk (store.read_blocks)."""
        now = (
            self.store.read_blocks_now(chunk_id, offset, length) if length <= READ_NOW_MAX else None
        )
        start, data, digests, block_size = now or await self._run(
            self.store.read_blocks, chunk_id, offset, length
        )
        return {"offset": start, "data": data, "digests": digests, "block_size": block_size}

    async def stat(self, chunk_id: str) -> dict[str, Any]:
        return await self._run(self.store.stat, chunk_id)

    async def has(self, chunk_id: str) -> bool:
        return await self._run(self.store.has, chunk_id)

    async def delete(self, chunk_id: str, min_age: float | None = None) -> bool:
        """With ``min_age``, only if the chunk was last written longer ago (seconds)."""
        if min_age is not None and min_age < 0:
            raise InvalidArgument("min_age must not be negative")
        return await self._run(self.store.delete, chunk_id, min_age)

    async def ages(self, ids: list) -> dict[str, list]:
        """[age in seconds, size] per chunk: what garbage collection judges by."""
        if not are_chunk_ids(ids):
            raise InvalidArgument("ids must be at most 10000 chunk ids")
        return await self._run(self.store.ages, ids)

    async def list(self, after: str | None = None, limit: int = 1000) -> dict[str, Any]:
        ids, next_after = await self._run(self.store.list, after, limit)
        return {"ids": ids, "next": next_after}

    async def usage(self) -> dict[str, int]:
        usage = await self._run(self.store.usage)
        return usage.as_dict()

    async def scrub_status(self) -> dict[str, Any]:
        return self.scrub.as_dict()

    async def scrub_run(self) -> dict[str, Any]:
        """End the pause between passes: a pass starts now (or right after the running one)."""
        if not self.scrub.enabled:
            raise InvalidArgument("scrubbing is off on this server (--scrub-rate 0)")
        self.scrub.wanted.set()
        return self.scrub.as_dict()

    async def usage_report(self) -> dict[str, Any]:
        """What a heartbeat carries: usage, and the scrubber's progress for 'shoal status'."""
        return {**await self.usage(), "scrub": self.scrub.as_dict()}

    def health_info(self) -> dict[str, Any]:
        return {
            "server_id": self.store.server_id,
            "zone": self.zone,
            "corrupted_found": self.store.corrupted_found,
            "scrub": self.scrub.as_dict(),
            "direct_io": self.store.writer.direct,
            # small chunks answered and not yet on disk, and the syncfs passes made so far
            "buffered": {"waiting": len(self.store.buffered), "passes": self.store.buffered.passes},
        }
