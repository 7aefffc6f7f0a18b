"""``shoal status``: is my data safe? One screen from the meta role's view of the cluster.

The meta role judges health (storaged/meta/status.py). What it cannot see is a server that
died less than a heartbeat timeout ago, so the CLI also asks every server the map calls up
for its health, with a short timeout: one that does not answer counts against health too.
"""

from __future__ import annotations

from typing import Any

import trio

from storaged.metaclient import MetaClient
from storaged.rpc import RpcClient, RpcError

from . import display

PROBE_TIMEOUT = 2.0


def gather(meta: str, secret: bytes, probe_timeout: float = PROBE_TIMEOUT) -> dict[str, Any]:
    """The meta role's cluster status, with each up server's answer to a probe added.
    Raises RpcError when the meta role itself does not answer."""

    async def probe(client: RpcClient, row: dict[str, Any]) -> None:
        try:
            await client.call(row["address"], "health", timeout=probe_timeout, retries=0)
            row["answers"] = True
        except RpcError as exc:
            row["answers"], row["probe_error"] = False, str(exc)

    async def main() -> dict[str, Any]:
        async with RpcClient(secret, connect_timeout=probe_timeout) as client:
            report = await MetaClient(client, meta).cluster_status(timeout=30, retries=0)
            async with trio.open_nursery() as nursery:
                for row in report["servers"]:
                    if row["state"] == "up":
                        nursery.start_soon(probe, client, row)
            return report

    report = trio.run(main)
    report["meta"] = meta
    for row in report["servers"]:
        if row.get("answers") is False:
            report["healthy"] = False
            for volume in report["volumes"]:
                if volume["health"] == "ok":
                    volume["health"] = "degraded"
            report["reasons"].append(
                f"chunk server {row['id'][:12]} at {row['address']} does not answer "
                f"({row['probe_error']}); the meta role will mark it down after its "
                "heartbeat timeout"
            )
    return report


def render(report: dict[str, Any]) -> str:
    now = report["time"]
    lines = [
        f"meta role at {report['meta']}",
        "",
        (
            f"{'SERVER':<12} {'ADDRESS':<22} {'ZONE':<8} {'STATE':<9} {'CHUNKS':>7} "
            f"{'USED':>9} {'FREE':>9} {'CAPACITY':>9} {'SEEN':>5}  SCRUB"
        ),
    ]
    for r in report["servers"]:
        state = r["state"]
        if r.get("answers") is False:
            state = "no-answer"
        elif r["draining"]:
            state = f"{state},drain"
        lines.append(
            f"{r['id'][:12]:<12} {r['address']:<22} {r['zone'] or '-':<8} {state:<9} "
            f"{r['chunks']:>7} {display.size(r['used']):>9} {display.size(r['free']):>9} "
            f"{display.size(r['capacity']):>9} {display.age(r['last_seen_seconds']):>5}  "
            f"{_scrub_cell(r.get('scrub'), now)}"
        )
    if not report["servers"]:
        lines.append("(no chunk server has registered)")
    lines += [
        "",
        (f"{'VOLUME':<24} {'KIND':<8} {'CAPACITY':>9} {'USED':>9} {'FILES':>8} {'R':>2}  HEALTH"),
    ]
    for v in report["volumes"]:
        lines.append(
            f"{v['name']:<24} {v['kind']:<8} {display.size(v['capacity']):>9} "
            f"{display.size(v['used_bytes']):>9} {v['used_inodes']:>8} "
            f"{v['replicas']:>2}  {v['health']}"
        )
    if not report["volumes"]:
        lines.append("(no volumes)")
    lines += ["", repair_line(report["repair"], report["verified_at"], now), ""]
    if report["healthy"] and report["verified_at"]:
        lines.append("healthy: every server up, every chunk at its volume's R copies")
    elif report["healthy"]:
        lines.append("healthy: every server up (chunk copies are counted by the first repair pass)")
    else:
        lines.append("NOT HEALTHY:")
        lines += [f"  - {reason}" for reason in report["reasons"]]
    return "\n".join(lines)


def repair_line(repair: dict[str, Any], verified_at: float, now: float) -> str:
    if repair["running"]:
        return (
            f"repair: pass running, checked {repair['checked']}/{repair['total']} chunks"
            f"{display.eta(repair['checked'], repair['total'], repair['started'])}"
        )
    if not verified_at:
        return (
            "repair: no pass since the meta role started; chunk health is known after "
            "one ('shoal repair --now')"
        )
    return (
        f"repair: last pass {display.age(now - verified_at)} ago checked "
        f"{repair['total']} chunks: {repair['repaired']} repaired, {repair['failed']} "
        f"failed, {repair['missing']} missing"
    )


def _scrub_cell(scrub: dict[str, Any] | None, now: float) -> str:
    if scrub is None:
        return "?"
    if not scrub["enabled"]:
        return "off"
    bad = f", {scrub['bad_found']} bad found" if scrub["bad_found"] else ""
    if scrub["running"]:
        pct = 100 * scrub["checked"] / max(1, scrub["total"])
        return (
            f"{pct:.0f}% of pass {scrub['passes'] + 1}"
            f"{display.eta(scrub['checked'], scrub['total'], scrub['started'])}{bad}"
        )
    last = scrub["last_full_pass"]
    return (
        f"pass {scrub['passes']} done {display.age(now - last)} ago{bad}"
        if last
        else f"waiting{bad}"
    )
