"""Garbage collection: remove chunks that nothing references any more.

Mark and sweep, driven from the meta role (or ``shoal gc``). For each chunk server: page
through its chunk ids; ask the meta role which of them no chunk map row uses (any volume,
any snapshot) and no mount holds as pending (stored, not yet committed); ask the server
their ages; delete those older than the grace period, with the server checking the age
again under its own lock at delete time.

Why that is safe:
- a chunk referenced when the meta role is asked is never a candidate;
- a chunk a mount is writing and has not committed 2 s after it began sending it is
  registered as pending then, until committed (fusefs/filedata.py REGISTER_AFTER; the
  registration lands well within the grace period, at least 10 s, during which nothing
  is deleted; a chunk committed sooner is referenced from then on);
- a chunk that becomes wanted again after being judged garbage (a write of the same bytes
  deduplicated against it) is refreshed by that put, and a refreshed chunk is younger than
  the grace period, so the server's delete refuses it;
- nothing younger than the grace period is ever deleted, which also covers a mount whose
  pending registration has not reached a freshly restarted meta role yet (the meta role
  also refuses to answer until every mount session from before its start has registered
  again, with its pending chunks, or expired).
What it does not cover: a mount cut off from the meta role for longer than its session
timeout *and* the grace period loses the chunks it had stored but not committed.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from typing import Any

from .metaclient import MetaClient
from .rpc import RpcError

log = logging.getLogger("storaged.gc")

MIN_GRACE = 10.0  # the fence against a deduplicating put needs some time to work with
BATCH = 1000


@dataclass
class GcReport:
    servers: int = 0
    listed: int = 0
    unreferenced: int = 0
    kept_young: int = 0
    deleted: int = 0
    bytes_freed: int = 0
    failed_servers: list[str] = field(default_factory=list)

    def as_dict(self) -> dict[str, Any]:
        return dict(vars(self))


async def collect(meta: MetaClient, grace: float, dry_run: bool = False) -> GcReport:
    """One full pass over every live chunk server."""
    if grace < MIN_GRACE:
        raise ValueError(f"the grace period must be at least {MIN_GRACE:g} seconds")
    report = GcReport()
    for server in await meta.cluster_servers():
        if server["state"] != "up":
            continue  # a down server is swept when it is back
        report.servers += 1
        try:
            await _sweep_server(meta, server["address"], grace, dry_run, report)
        except RpcError as exc:
            log.warning("garbage collection on %s stopped: %s", server["address"], exc)
            report.failed_servers.append(f"{server['address']}: {exc}")
    log.info("garbage collection: %s", report.as_dict())
    return report


async def _sweep_server(
    meta: MetaClient, address: str, grace: float, dry_run: bool, report: GcReport
) -> None:
    rpc = meta.rpc
    after = None
    while True:
        page = await rpc.call(address, "chunk.list", after, BATCH)
        ids = page["ids"]
        report.listed += len(ids)
        if ids:
            garbage = await meta.gc_unreferenced(ids)
            report.unreferenced += len(garbage)
            if garbage:
                ages = await rpc.call(address, "chunk.ages", garbage)
                for cid in garbage:
                    if cid not in ages:
                        continue
                    age, size = ages[cid]
                    if age < grace:
                        report.kept_young += 1
                        continue
                    if dry_run:
                        report.deleted += 1
                        continue
                    if await rpc.call(address, "chunk.delete", cid, grace):
                        report.deleted += 1
                        report.bytes_freed += int(size)
                    else:
                        report.kept_young += 1
        after = page["next"]
        if after is None:
            return
