"""Repair: bring every chunk that files and snapshots reference back to R good copies.

A pass, run by the meta role (every ``--repair-interval``, or at once when ``shoal repair``
asks):

1. take the referenced chunks from the meta role, each with the largest R of the volumes
   that use it (first, so every chunk it names was written before the servers are listed);
2. list the chunks of every live chunk server: where the copies are;
3. copies reported bad by clients are checked on their server (a read verifies and
   quarantines), and count only if they pass;
4. a server that has been down for less than ``down_grace`` is presumed to still hold the
   chunks placement gives it (a restart must not set off a storm of copies);
5. every chunk with fewer good copies than R is read from a good copy (hash-verified) and
   written to the next servers in its placement order that lack it, at no more than
   ``rate`` bytes per second, so repair does not starve clients.

A chunk with no good copy anywhere is counted as missing and logged; nothing can be done
for it but bring back the server that has it.
"""

from __future__ import annotations

import logging
import time

import trio

from .chunk.ids import chunk_id
from .data.placement import Server, placement_order
from .meta.repairstate import AT_RISK_KEPT, RepairState, RepairStatus
from .metaclient import MetaClient
from .rpc import Corrupted, NotFound, RpcClient, RpcError

log = logging.getLogger("storaged.repair")

PAGE = 1000


async def repair_loop(
    rpc: RpcClient,
    meta: MetaClient,
    state: RepairState,
    *,
    interval: float,
    down_grace: float,
    rate: float,
    rebalance_min_age: float | None = None,
) -> None:
    """A pass every ``interval`` seconds (0: only when asked), or at once when asked."""
    while True:
        with trio.move_on_after(interval if interval > 0 else float("inf")):
            await state.wanted.wait()
        state.wanted = trio.Event()
        await repair_pass(
            rpc, meta, state, down_grace=down_grace, rate=rate, rebalance_min_age=rebalance_min_age
        )


async def repair_pass(
    rpc: RpcClient,
    meta: MetaClient,
    state: RepairState,
    *,
    down_grace: float,
    rate: float,
    rebalance_min_age: float | None = None,
) -> RepairStatus:
    status = state.status = RepairStatus(
        running=True, passes=state.status.passes + 1, started=time.time()
    )
    unresolved: set[str] = set()
    missing: set[str] = set()

    def at_risk(into: set[str], cid: str) -> None:
        if len(into) < AT_RISK_KEPT:
            into.add(cid)

    try:
        referenced = await _referenced(meta)
        status.total = len(referenced)
        rows = await meta.cluster_servers()
        now_ns = time.time_ns()
        servers = [Server.from_row(r) for r in rows]
        presumed = {
            r["id"]
            for r in rows
            if r["state"] != "up"
            and not r.get("draining")
            and (now_ns - r["last_seen_ns"]) / 1e9 < down_grace
        }
        draining = {r["id"] for r in rows if r.get("draining")}
        holders = await locations(rpc, [s for s in servers if s.up])
        bad = {(b["chunk_id"], b["server_id"]) for b in await meta.cluster_bad_copies()}
        throttle = _Throttle(rate)
        by_id = {s.id: s for s in servers}
        for cid, replicas in referenced:
            status.checked += 1
            good = holders.get(cid, set())
            for server_id in [s for s in good if (cid, s) in bad]:
                if not await _verify(rpc, by_id[server_id], cid):
                    good = good - {server_id}
            order = placement_order(cid, servers)
            counted = good - draining  # copies on a draining server are on their way out
            assumed = {s.id for s in order[:replicas] if s.id in presumed} - good
            if len(counted) + len(assumed) >= replicas:
                await _clear_reports(meta, cid, bad)
                if rebalance_min_age is not None and not presumed:
                    await _rebalance(
                        rpc, cid, replicas, order, good, by_id, throttle, rebalance_min_age, status
                    )
                continue
            status.under_replicated += 1
            if not good:
                status.missing += 1
                at_risk(missing, cid)
                if len(status.missing_examples) < 20:
                    status.missing_examples.append(cid)
                log.error("chunk %s has no good copy on any live server", cid)
                continue
            needed = replicas - len(counted) - len(assumed)
            targets = [s for s in order if s.up and not s.draining and s.id not in good][:needed]
            try:
                made = len(await _copy(rpc, cid, [by_id[i] for i in good], targets, throttle))
            except RpcError as exc:
                status.failed += 1
                status.last_error = f"{cid[:12]}: {exc}"
                log.warning("repair of chunk %s failed: %s", cid[:12], exc)
                at_risk(unresolved, cid)
                continue
            status.copies_made += made
            status.bytes_copied += made * throttle.last_size
            if made >= needed:
                status.repaired += 1
                await _clear_reports(meta, cid, bad)
            else:
                status.failed += 1
                status.last_error = f"{cid[:12]}: only {made} of {needed} servers took a copy"
                at_risk(unresolved, cid)
    except RpcError as exc:
        status.last_error = str(exc)
        log.warning("repair pass stopped: %s", exc)
    finally:
        status.running = False
        status.finished = time.time()
        state.last, state.unresolved, state.missing = status, unresolved, missing
    log.info(
        "repair pass: %s", {k: v for k, v in status.as_dict().items() if k != "missing_examples"}
    )
    return status


async def _rebalance(
    rpc: RpcClient,
    cid: str,
    replicas: int,
    order: list[Server],
    good: set[str],
    by_id: dict[str, Server],
    throttle: _Throttle,
    min_age: float,
    status: RepairStatus,
) -> None:
    """Move a healthy chunk towards where placement now puts it (a server was added, or a
    write fell through to another server while one was down): copy it to its placement
    servers that lack it, and only once all of them hold it, remove the copies elsewhere.
    Only runs while no server is down (a restart must not move data around); a copy
    younger than ``min_age`` is never removed (it may be a write in progress)."""
    homes = [s for s in order if s.up and not s.draining][:replicas]
    if len(homes) < replicas:
        return
    lacking = [s for s in homes if s.id not in good]
    if lacking:
        took = await _copy(rpc, cid, [by_id[i] for i in good], lacking, throttle)
        status.moved += len(took)
        status.bytes_copied += len(took) * throttle.last_size
        if len(took) < len(lacking):
            return  # not all homes hold it: keep every other copy
    home_ids = {s.id for s in homes}
    for server_id in sorted(good - home_ids):
        try:
            if await rpc.call(by_id[server_id].address, "chunk.delete", cid, min_age):
                status.extras_removed += 1
        except RpcError as exc:
            log.info(
                "rebalance: could not remove chunk %s from %s: %s",
                cid[:12],
                by_id[server_id].address,
                exc,
            )


async def _referenced(meta: MetaClient) -> list[tuple[str, int]]:
    out: list[tuple[str, int]] = []
    after: str | None = None
    while True:
        page = await meta.repair_referenced(after, PAGE)
        out.extend((cid, int(r)) for cid, r in page)
        if len(page) < PAGE:
            return out
        after = page[-1][0]


async def locations(rpc: RpcClient, servers: list[Server]) -> dict[str, set[str]]:
    """chunk id -> ids of the given servers that hold a copy (from their listings)."""
    holders: dict[str, set[str]] = {}
    for server in servers:
        after = None
        while True:
            page = await rpc.call(server.address, "chunk.list", after, PAGE)
            for cid in page["ids"]:
                holders.setdefault(cid, set()).add(server.id)
            after = page["next"]
            if after is None:
                break
    return holders


async def _verify(rpc: RpcClient, server: Server, cid: str) -> bool:
    """Read the reported copy: the server checks its hash and quarantines a bad one."""
    try:
        data = await rpc.call(server.address, "chunk.get", cid)
    except (NotFound, Corrupted):
        return False
    except RpcError:
        return True  # unreachable now: not evidence against the copy
    return isinstance(data, bytes) and chunk_id(data) == cid


async def _copy(
    rpc: RpcClient, cid: str, sources: list[Server], targets: list[Server], throttle: _Throttle
) -> list[Server]:
    """Read a verified copy from a source and put it on each target; the targets that
    took it (their put returns only once the copy is durable)."""
    data = None
    for source in sources:
        try:
            candidate = await rpc.call(source.address, "chunk.get", cid)
        except RpcError as exc:
            log.info("repair: %s could not give chunk %s: %s", source.address, cid[:12], exc)
            continue
        if isinstance(candidate, bytes) and chunk_id(candidate) == cid:
            data = candidate
            break
    if data is None:
        raise NotFound(f"no source gave a good copy of {cid[:12]}")
    took: list[Server] = []
    for target in targets:
        await throttle.wait(len(data))
        try:
            await rpc.call(target.address, "chunk.put", cid, data)
            took.append(target)
        except RpcError as exc:
            log.warning("repair: %s refused chunk %s: %s", target.address, cid[:12], exc)
    return took


async def _clear_reports(meta: MetaClient, cid: str, bad: set[tuple[str, str]]) -> None:
    for chunk, server_id in [b for b in bad if b[0] == cid]:
        await meta.cluster_clear_bad(chunk, server_id)


class _Throttle:
    """At most ``rate`` bytes per second of copies (0: unlimited)."""

    def __init__(self, rate: float) -> None:
        self.rate = rate
        self.next_free = time.monotonic()
        self.last_size = 0

    async def wait(self, size: int) -> None:
        self.last_size = size
        if self.rate <= 0:
            return
        now = time.monotonic()
        start = max(now, self.next_free)
        self.next_free = start + size / self.rate
        await trio.sleep(start - now)


async def unsafe_to_remove(rpc: RpcClient, meta: MetaClient, server_id: str) -> int:
    """How many referenced chunks held by ``server_id`` lack R good copies on the other
    live, non-draining servers: 0 means it can be removed without losing anything.
    ``rpc`` calls the chunk servers (the meta client's own pool, passed in)."""
    referenced = dict(await _referenced(meta))
    rows = await meta.cluster_servers()
    others = [
        Server(r["id"], r["address"], r["zone"], r["capacity"], r["free"], True)
        for r in rows
        if r["state"] == "up" and not r.get("draining") and r["id"] != server_id
    ]
    target = next((r for r in rows if r["id"] == server_id), None)
    if target is None:
        raise NotFound(f"no chunk server {server_id}")
    elsewhere = await locations(rpc, others)
    if target["state"] == "up":
        mine = await locations(
            rpc, [Server(target["id"], target["address"], target["zone"], 0, 0, True)]
        )
        held = [c for c in mine if c in referenced]
    else:  # it cannot be listed: judge every referenced chunk
        held = list(referenced)
    return sum(1 for c in held if len(elsewhere.get(c, ())) < referenced[c])
