"""Writing a chunk to R chunk servers, reading it back from any of them.

A write succeeds once R servers acknowledged the chunk (each fsynced it before answering,
or, for a small chunk put buffered, wrote it and will fsync it within its sync period:
``sync`` waits for that);
a server that is down, full or failing is passed over for the next one in the placement
order, and the write fails only when fewer than R usable servers remain. A read tries the
servers in placement order, verifies the hash itself (a copy can also be damaged on the
wire or in memory), and reports every bad copy it met to the meta role for repair.

A ranged read (``read``) gets whole 64 KiB blocks with their digests from the server's block
table, which the server built from bytes that matched the chunk id and checks its disk
against; the client checks the blocks against those digests (damage on the wire or in
memory), not against the id itself, which would take the whole chunk.
"""

from __future__ import annotations

import logging
import math
import time
from collections.abc import Awaitable, Callable, Sequence
from typing import TYPE_CHECKING, Any

import trio

from ..chunk.blocks import block_digest
from ..chunk.buffered import BUFFERED_MAX
from ..chunk.ids import chunk_id as compute_chunk_id
from ..rpc import Corrupted, NotDelivered, NotFound, RpcError, Unavailable
from ..rpc.errors import MethodNotFound
from .placement import Server, placement_order

if TYPE_CHECKING:
    from ..metaclient import MetaClient

log = logging.getLogger("storaged.data")

HASH_IN_THREAD_ABOVE = 256 * 1024
SUSPECT_SECONDS = 10.0  # how long a server that just failed is tried last
RESTART_WAIT = 5.0  # how long a failed request waits for an unreachable server the
#                         meta role still counts as up to register again (a restart)
RESTART_POLL = 0.25  # how often the map is fetched while waiting for that


class NotEnoughReplicas(Unavailable):
    """Fewer than R chunk servers could take the chunk; nothing was acknowledged."""


class ChunkUnavailable(Unavailable):
    """No server returned a good copy of the chunk."""


class NotDurable(Unavailable):
    """Chunks put buffered could not be confirmed on a server's disk (the server cannot be
    reached, or its machine restarted since: storaged/chunk/buffered.py)."""


async def hash_chunk(data: bytes) -> str:
    """BLAKE3 off the event loop for large chunks (it releases the GIL)."""
    if len(data) > HASH_IN_THREAD_ABOVE:
        return await trio.to_thread.run_sync(compute_chunk_id, data)
    return compute_chunk_id(data)


class DataClient:
    def __init__(
        self,
        meta: MetaClient,
        *,
        refresh_seconds: float = 5.0,
        put_timeout: float = 10.0,
        put_rate: float = 4 * 1024 * 1024,
        get_timeout: float = 15.0,
        restart_wait: float = RESTART_WAIT,
        buffered: bool = False,
    ) -> None:
        """``buffered``: small chunks are put with chunk.put_buffered (on the servers'
        disks within their sync period, or at ``sync``); a mount's ``fsync`` then calls
        ``sync`` (storaged/chunk/buffered.py)."""
        self.rpc = meta.rpc  # the chunk servers are called over the meta client's connections' pool
        self.restart_wait = restart_wait
        self.meta = meta
        self.refresh_seconds = refresh_seconds
        self.put_timeout = put_timeout
        self.put_rate = put_rate
        self.get_timeout = get_timeout
        self._servers: list[Server] = []
        self._refreshed = -math.inf
        self._generation = 0  # how many maps have been fetched: tells a caller whether the
        #                       map changed since it chose its servers
        self._suspect: dict[str, float] = {}
        self._refresh_lock = trio.Lock()
        self.buffered = buffered
        # server id -> {the server's boot id: buffered puts it answered, not yet synced}
        self._unsynced: dict[str, dict[str, int]] = {}
        self._unbuffered: set[str] = set()  # addresses without chunk.put_buffered

    # -- the cluster map ----------------------------------------------------------------

    async def servers(self, force: bool = False) -> list[Server]:
        async with self._refresh_lock:
            if force or self._map_age() > self.refresh_seconds:
                await self._fetch_map()
        return self._servers

    async def _fetch_map(self) -> None:
        rows = await self.meta.cluster_servers()
        self._servers = [Server.from_row(r) for r in rows]
        self._refreshed = time.monotonic()
        self._generation += 1

    def _map_age(self) -> float:
        return time.monotonic() - self._refreshed

    async def _retry_map(
        self,
        seen: int,
        fresh: Callable[[list[Server]], list[Server]],
        unreachable: set[str],
        deadline: float,
    ) -> list[Server]:
        """Servers worth trying after every server chosen from map generation ``seen``
        failed: ``fresh`` picks them from a newer map; [] when there are none.

        The failure may be the map's: a server restarted on a new address, or one joined.
        So the map is fetched again, unless a concurrent request that failed the same way
        fetched one since ``seen`` (then that one is used, so a burst of failures costs the
        meta role one call, and every request of the burst still looks again). When the
        new map offers nothing new but still counts as up a server we could not connect
        to, that server is probably restarting: its new instance registers with its first
        heartbeat, so the map is polled for up to ``restart_wait`` (until ``deadline``) before
        the request fails. A server the meta role has marked down is not waited for.
        """
        while True:
            try:
                async with self._refresh_lock:
                    if self._generation == seen:
                        await self._fetch_map()
            except RpcError as exc:  # the meta role is away: the request fails as it was
                log.info("cluster map could not be fetched again: %s", exc)
                return []
            seen = self._generation
            candidates = fresh(self._servers)
            if candidates:
                return candidates
            restarting = any(s.up and s.id in unreachable for s in self._servers)
            if not restarting or time.monotonic() + RESTART_POLL > deadline:
                return []
            await trio.sleep(RESTART_POLL)

    def _usable_first(self, order: Sequence[Server]) -> list[Server]:
        """Up and unsuspected servers first (keeping placement order), then the others."""
        now = time.monotonic()
        good = [s for s in order if s.up and self._suspect.get(s.id, 0) < now]
        return good + [s for s in order if s not in good]

    def _suspect_server(self, server: Server) -> None:
        self._suspect[server.id] = time.monotonic() + SUSPECT_SECONDS

    # -- writes -------------------------------------------------------------------------

    def _put_deadline(self, size: int) -> float:
        """How long one server may take to store a chunk before the next one is asked.

        Short on purpose: a server cut off by the network answers nothing, and every write
        waits for this before falling through. A slow but healthy server that misses it
        costs one extra copy elsewhere (garbage collection removes its late one), never
        data. The size term keeps a large chunk on a slow link from timing out.
        """
        return self.put_timeout + size / self.put_rate

    async def put(
        self, data: bytes, replicas: int, cid: str | None = None, durable: bool = True
    ) -> str:
        """Store ``data`` on ``replicas`` distinct servers; returns its chunk id.

        ``durable`` False (with ``buffered``): a small chunk may reach the servers' disks
        within their sync period; ``sync`` makes sure.

        Servers are asked in placement order, up and unsuspected ones first; each failure
        passes the copy to the next. When the map runs out, a newer map is asked for
        (``_retry_map``) and its servers at addresses not tried yet take the rest.
        """
        cid = cid or await hash_chunk(data)
        servers = await self.servers()
        if sum(s.up and not s.draining for s in servers) < replicas:
            servers = await self.servers(force=True)
        stored: list[Server] = []
        failures: list[str] = []
        unreachable: set[str] = set()
        tried: set[str] = set()
        deadline = time.monotonic() + self.restart_wait

        def fresh(servers: list[Server]) -> list[Server]:
            done = {s.id for s in stored}
            return [
                s
                for s in self._usable_first(placement_order(cid, servers))
                if s.up and not s.draining and s.address not in tried and s.id not in done
            ]

        candidates = fresh(servers)
        while True:
            seen = self._generation
            await self._put_to(
                cid,
                data,
                candidates,
                replicas - len(stored),
                stored,
                failures,
                unreachable,
                durable or not self.buffered or len(data) > BUFFERED_MAX,
            )
            if len(stored) >= replicas:
                return cid
            tried.update(s.address for s in candidates)  # each was asked, or not enough
            candidates = await self._retry_map(seen, fresh, unreachable, deadline)
            if not candidates:
                raise NotEnoughReplicas(
                    f"chunk {cid[:12]} is on {len(stored)} of {replicas} required servers; "
                    f"{len(tried)} servers were tried. Failures: "
                    f"{'; '.join(failures) or 'none'}"
                )

    async def _put_to(
        self,
        cid: str,
        data: bytes,
        candidates: list[Server],
        wanted: int,
        stored: list[Server],
        failures: list[str],
        unreachable: set[str],
        durable: bool = True,
    ) -> None:
        """``wanted`` copies on ``candidates``, asked in order by ``wanted`` writers at once;
        when fewer succeed, every candidate has been asked."""
        next_candidate = 0
        goal = len(stored) + wanted

        async def writer() -> None:
            nonlocal next_candidate
            while len(stored) < goal and next_candidate < len(candidates):
                server = candidates[next_candidate]
                next_candidate += 1
                try:
                    if durable or server.address in self._unbuffered:
                        await self._put_durably(server, cid, data)
                    else:
                        await self._put_buffered(server, cid, data)
                    stored.append(server)
                    return
                except RpcError as exc:  # down, full, failing: the next server takes it
                    failures.append(f"{server.address}: {exc}")
                    self._suspect_server(server)
                    if isinstance(exc, NotDelivered):
                        unreachable.add(server.id)
                    log.info(
                        "chunk %s: %s failed (%s); trying the next server",
                        cid[:12],
                        server.address,
                        exc,
                    )

        async with trio.open_nursery() as nursery:
            for _ in range(wanted):
                nursery.start_soon(writer)

    async def _put_durably(self, server: Server, cid: str, data: bytes) -> None:
        await self.rpc.call(
            server.address, "chunk.put", cid, data, timeout=self._put_deadline(len(data))
        )

    async def _put_buffered(self, server: Server, cid: str, data: bytes) -> None:
        try:
            answer = await self.rpc.call(
                server.address,
                "chunk.put_buffered",
                cid,
                data,
                timeout=self._put_deadline(len(data)),
            )
        except MethodNotFound:  # a server from before buffered puts
            self._unbuffered.add(server.address)
            await self._put_durably(server, cid, data)
            return
        if isinstance(answer, dict) and not answer.get("synced", True):
            boots = self._unsynced.setdefault(server.id, {})
            boot = str(answer.get("boot", ""))
            boots[boot] = boots.get(boot, 0) + 1

    async def sync(self) -> None:
        """Every chunk put buffered so far is on its servers' disks, or raise NotDurable.

        One ``chunk.sync`` per server that answered buffered puts since the last sync, in
        parallel. A server whose machine restarted since (another boot id) may have lost
        them: said once, by raising (their other copies are what repair works from)."""
        if not self._unsynced:
            return
        asked = {sid: dict(boots) for sid, boots in self._unsynced.items()}
        problems: list[str] = []

        async def one(sid: str, boots: dict[str, int]) -> None:
            try:
                answer = await self._sync_server(sid)
            except RpcError as exc:
                problems.append(f"server {sid[:12]}: {exc}")
                return
            now = self._unsynced.get(sid, {})
            for boot, count in boots.items():
                if boot != str(answer.get("boot", "")):
                    problems.append(
                        f"server {sid[:12]} restarted its machine before {count} buffered "
                        "chunks were confirmed on its disk"
                    )
                    now.pop(boot, None)
                elif now.get(boot, 0) <= count:
                    now.pop(boot, None)
                else:
                    now[boot] -= count
            if not now:
                self._unsynced.pop(sid, None)

        async with trio.open_nursery() as nursery:
            for sid, boots in asked.items():
                nursery.start_soon(one, sid, boots)
        if problems:
            raise NotDurable("; ".join(problems))

    async def _sync_server(self, sid: str) -> dict[str, Any]:
        """chunk.sync on server ``sid`` wherever the map puts it now (a restarted server
        may be on a new address: the map is asked again, for up to ``restart_wait``)."""
        deadline = time.monotonic() + self.restart_wait
        servers = await self.servers()
        while True:
            server = next((s for s in servers if s.id == sid), None)
            if server is not None:
                try:
                    answer = await self.rpc.call(
                        server.address, "chunk.sync", timeout=self.put_timeout
                    )
                    return answer if isinstance(answer, dict) else {}
                except RpcError:
                    if time.monotonic() + RESTART_POLL > deadline:
                        raise
            elif time.monotonic() + RESTART_POLL > deadline:
                raise Unavailable(f"server {sid[:12]} is not in the cluster map")
            await trio.sleep(RESTART_POLL)
            servers = await self.servers(force=True)

    # -- reads --------------------------------------------------------------------------

    async def get(self, cid: str) -> bytes:
        """The chunk's bytes from the first server with a good copy."""

        async def whole(server: Server) -> bytes | None:
            return await self._whole(server, cid)

        return await self._from_replicas(cid, whole)

    async def read(self, cid: str, offset: int, length: int) -> bytes:
        """Bytes [offset, offset+length) of the chunk (clipped at its end), reading only the
        64 KiB blocks that hold them."""
        if length <= 0:
            return b""

        async def ranged(server: Server) -> bytes | None:
            return await self._range(server, cid, offset, length)

        return await self._from_replicas(cid, ranged)

    async def _whole(self, server: Server, cid: str) -> bytes | None:
        """The chunk from ``server``; None when the bytes received fail its id."""
        data = await self.rpc.call(server.address, "chunk.get", cid, timeout=self.get_timeout)
        if not isinstance(data, bytes) or await hash_chunk(data) != cid:
            return None
        return data

    async def _range(self, server: Server, cid: str, offset: int, length: int) -> bytes | None:
        """The range from ``server``'s checked blocks; None when a block received fails its
        digest or the answer is malformed."""
        try:
            answer = await self.rpc.call(
                server.address, "chunk.read", cid, offset, length, timeout=self.get_timeout
            )
        except MethodNotFound:  # a server from before chunk.read: the whole chunk, then
            data = await self._whole(server, cid)
            return None if data is None else data[offset : offset + length]
        large = isinstance(answer, dict) and len(answer.get("data") or b"") > HASH_IN_THREAD_ABOVE
        blocks = (
            await trio.to_thread.run_sync(_checked_blocks, answer)
            if large
            else _checked_blocks(answer)
        )
        if blocks is None:
            return None
        start, data = blocks
        if not data or length == 0:
            return b""  # the range is empty or past the chunk's end
        if not start <= offset <= start + len(data):
            return None
        return data[offset - start : offset - start + length]

    async def _from_replicas(
        self, cid: str, fetch: Callable[[Server], Awaitable[bytes | None]]
    ) -> bytes:
        """The first good answer of the chunk's servers, asked in placement order; when
        none has one, a newer map's servers at addresses not asked yet (``_retry_map``)."""
        problems: list[str] = []
        unreachable: set[str] = set()
        tried: set[str] = set()
        deadline = time.monotonic() + self.restart_wait

        def fresh(servers: list[Server]) -> list[Server]:
            return [
                s
                for s in self._usable_first(placement_order(cid, servers))
                if s.address not in tried
            ]

        order = fresh(await self.servers())
        while order:
            seen = self._generation
            data = await self._first_good(cid, order, problems, fetch, unreachable)
            if data is not None:
                return data
            tried.update(s.address for s in order)
            order = await self._retry_map(seen, fresh, unreachable, deadline)
        if not self._servers:
            problems.append("the cluster map has no chunk servers")
        raise ChunkUnavailable(f"no good copy of chunk {cid[:12]}: {'; '.join(problems)}")

    async def _first_good(
        self,
        cid: str,
        order: Sequence[Server],
        problems: list[str],
        fetch: Callable[[Server], Awaitable[bytes | None]],
        unreachable: set[str],
    ) -> bytes | None:
        for server in order:
            try:
                data = await fetch(server)
            except NotFound:
                problems.append(f"{server.address}: not there")
                continue  # not necessarily bad: the copy may live elsewhere in the order
            except Corrupted as exc:
                problems.append(f"{server.address}: corrupted")
                await self._report(cid, server, f"CORRUPTED: {exc.message}")
                continue
            except RpcError as exc:
                problems.append(f"{server.address}: {exc}")
                self._suspect_server(server)
                if isinstance(exc, NotDelivered):
                    unreachable.add(server.id)
                continue
            if data is None:
                problems.append(f"{server.address}: returned bytes that fail the hash")
                await self._report(cid, server, "CORRUPTED: bad bytes received")
                continue
            if problems:
                # A copy not where placement says is routine (written while a server was
                # away, not yet rebalanced): only real trouble is worth a line per chunk.
                routine = all(p.endswith(": not there") for p in problems)
                log.log(
                    logging.DEBUG if routine else logging.INFO,
                    "chunk %s read from %s after: %s",
                    cid[:12],
                    server.address,
                    "; ".join(problems),
                )
            return data
        return None

    async def _report(self, cid: str, server: Server, reason: str) -> None:
        try:
            await self.meta.cluster_report_bad(cid, server.id, reason)
        except RpcError as exc:  # reporting is best effort; the read goes on
            log.warning("could not report bad copy of %s on %s: %s", cid[:12], server.id, exc)


def _checked_blocks(answer: Any) -> tuple[int, bytes] | None:
    """(start, bytes) of a chunk.read answer whose every block matches its digest."""
    if not isinstance(answer, dict):
        return None
    start, data = answer.get("offset"), answer.get("data")
    digests, size = answer.get("digests"), answer.get("block_size")
    if not (
        type(start) is int
        and isinstance(data, bytes)
        and isinstance(digests, list)
        and type(size) is int
        and size > 0
        and start >= 0
        and start % size == 0
        and len(digests) == -(-len(data) // size)
    ):
        return None
    view = memoryview(data)
    for i, digest in enumerate(digests):
        if block_digest(view[i * size : (i + 1) * size]) != digest:
            return None
    return start, data
