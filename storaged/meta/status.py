"""The cluster's condition in one answer: what ``shoal status`` shows and judges by.

The meta role is the only process that sees the whole cluster: the servers' heartbeats
(usage, and the scrubber's progress, kept in memory), the volumes, and what the last repair
pass left below R copies. Judging health here, not in the CLI, gives the table and
``--json`` the same verdict, and lets any client ask.

A volume's health, worst first:
    missing           some chunk it references has no copy on any live server
    under-replicated  some chunk has fewer than R copies and repair could not make more
    degraded          nothing is lost, but a server is down (its copies are not there), too
                      few servers are up for R, or a copy was reported bad and not yet replaced
    ok                every chunk at R copies as of the last repair pass, every server up
The first two come from the last repair pass (``verified_at``): a server that has just
died shows as 'degraded' at once, and as 'under-replicated' once a pass has counted.
"""

from __future__ import annotations

import sqlite3
import time
from typing import Any

from . import servers, volumes
from .repairstate import RepairState

OK, DEGRADED, UNDER_REPLICATED, MISSING = "ok", "degraded", "under-replicated", "missing"


def build(
    conn: sqlite3.Connection, repair: RepairState, scrub: dict[str, dict[str, Any]]
) -> dict[str, Any]:
    now = time.time()
    server_rows = servers.list_all(conn)
    for row in server_rows:
        row["last_seen_seconds"] = round(max(0.0, now - row["last_seen_ns"] / 1e9), 1)
        row["scrub"] = scrub.get(row["id"])
    serving = [r for r in server_rows if r["state"] == "up" and not r["draining"]]
    down = [r for r in server_rows if r["state"] != "up" and not r["draining"]]
    at_risk = _chunks_at_risk(conn, repair)
    reasons = [
        f"chunk server {r['id'][:12]} at {r['address']} is down "
        f"(no heartbeat for {r['last_seen_seconds']:.0f}s): the copies it holds are "
        "not available"
        for r in down
    ]
    out_volumes = []
    for kind in (volumes.VOLUME, volumes.SNAPSHOT):
        for v in volumes.list_all(conn, kind):
            under, missing = at_risk.get(v["id"], (0, 0))
            bad = volumes.bad_copy_count(conn, v["id"])
            worries = []
            if v["replicas"] > len(serving):
                worries.append(f"wants {v['replicas']} copies but {len(serving)} servers are up")
            if bad:
                worries.append(f"{bad} chunks have a copy reported bad, not yet replaced")
            health = (
                MISSING
                if missing
                else UNDER_REPLICATED
                if under
                else DEGRADED
                if down or worries
                else OK
            )
            if missing:
                worries.append(f"{missing} chunks have no copy on any live server")
            if under:
                worries.append(f"{under} chunks are below {v['replicas']} copies")
            reasons += [f"{kind} {v['name']}: {w}" for w in worries]
            out_volumes.append(
                {
                    "name": v["name"],
                    "kind": kind,
                    "capacity": v["capacity"],
                    "used_bytes": v["used_bytes"],
                    "used_inodes": v["used_inodes"],
                    "replicas": v["replicas"],
                    "under_replicated": under,
                    "missing": missing,
                    "bad_copies": bad,
                    "health": health,
                }
            )
    last = repair.last
    return {
        "healthy": not reasons,
        "reasons": reasons,
        "time": now,
        "servers": server_rows,
        "volumes": out_volumes,
        "repair": repair.status.as_dict(),
        "verified_at": last.finished if last else 0.0,
    }


BATCH = 500  # ids per query: well under SQLite's limit on bound parameters


def _chunks_at_risk(conn: sqlite3.Connection, repair: RepairState) -> dict[int, tuple[int, int]]:
    """{volume id: (under-replicated, missing)} from the last pass's chunk ids; a chunk
    shared by a volume and its snapshots counts for each of them. Batched: up to 100k ids
    of each kind must not hold the database (and every mount's next call) for long."""
    counts: dict[int, list[int]] = {}
    for slot, ids in ((0, sorted(repair.unresolved)), (1, sorted(repair.missing))):
        for start in range(0, len(ids), BATCH):
            batch = ids[start : start + BATCH]
            for volume, chunks in conn.execute(
                "SELECT i.volume, count(DISTINCT c.chunk_id) FROM (SELECT inode, chunk_id "
                "FROM chunks UNION ALL SELECT inode, chunk_id FROM slices) c "
                "JOIN inodes i ON i.id=c.inode "
                f"WHERE c.chunk_id IN ({','.join('?' * len(batch))}) GROUP BY i.volume",
                batch,
            ):
                counts.setdefault(volume, [0, 0])[slot] += chunks
    return {k: (v[0], v[1]) for k, v in counts.items()}
