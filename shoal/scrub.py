"""``shoal scrub``: where each chunk server's scrubber is, and a pass on demand.

Each chunk server scrubs its own disk at ``--scrub-rate``; the CLI asks them directly
(addresses from the meta role's map), so the figures are current rather than a heartbeat
old. ``--now`` ends every scrubber's pause and follows the passes to the end.
"""

from __future__ import annotations

import time
from typing import Any

import trio

from storaged.metaclient import MetaClient
from storaged.rpc import RpcClient, RpcError

from . import display


async def _poll(client: RpcClient, servers: list[dict[str, Any]], method: str) -> None:
    async def one(row: dict[str, Any]) -> None:
        try:
            row["scrub"] = await client.call(row["address"], method, timeout=10, retries=0)
            row.pop("error", None)
        except RpcError as exc:
            row["error"] = str(exc)

    async with trio.open_nursery() as nursery:
        for row in servers:
            nursery.start_soon(one, row)


def run(
    meta: str, secret: bytes, *, now: bool, timeout: float | None, progress: display.ProgressLine
) -> list[dict[str, Any]]:
    """Rows of {id, address, scrub | error}; with ``now``, after every pass started has
    finished (TimeoutError past ``timeout``, with the rows so far in its args[1])."""

    async def main() -> list[dict[str, Any]]:
        async with RpcClient(secret) as client:
            rows: list[dict[str, Any]] = [
                {"id": r["id"], "address": r["address"]}
                for r in await MetaClient(client, meta).cluster_servers()
                if r["state"] == "up"
            ]
            await _poll(client, rows, "scrub.status")
            if not now:
                return rows
            asked = [r for r in rows if "error" not in r and r["scrub"]["enabled"]]
            for row in asked:
                row["before"] = row["scrub"]["passes"]
                row["bad_before"] = row["scrub"]["bad_found"]
            await _poll(client, asked, "scrub.run")
            deadline = time.monotonic() + (timeout if timeout else float("inf"))
            while True:
                await _poll(client, asked, "scrub.status")
                waiting = [
                    r for r in asked if "error" not in r and r["scrub"]["passes"] <= r["before"]
                ]
                if not waiting:
                    return rows
                if time.monotonic() > deadline:
                    raise TimeoutError(
                        f"{len(waiting)} servers are still scrubbing after "
                        f"{timeout:g}s; 'shoal scrub' shows where they are",
                        rows,
                    )
                progress.show(progress_text(waiting))
                await trio.sleep(1.0)

    try:
        return trio.run(main)
    finally:
        progress.done()


def progress_text(rows: list[dict[str, Any]]) -> str:
    checked = sum(r["scrub"]["checked"] for r in rows)
    total = sum(max(r["scrub"]["total"], r["scrub"]["checked"]) for r in rows)
    started = min(r["scrub"]["started"] for r in rows)
    return (
        f"scrubbing: {checked}/{total} chunks on {len(rows)} servers"
        f"{display.eta(checked, total, started)}"
    )


def render(rows: list[dict[str, Any]]) -> str:
    now = time.time()
    lines = [
        (
            f"{'SERVER':<12} {'ADDRESS':<22} {'STATE':<8} {'PASSES':>6} {'CHECKED':>15} "
            f"{'BAD':>4}  LAST FULL PASS"
        )
    ]
    for r in rows:
        if "error" in r:
            lines.append(f"{r['id'][:12]:<12} {r['address']:<22} no answer: {r['error']}")
            continue
        s = r["scrub"]
        state = "off" if not s["enabled"] else "running" if s["running"] else "paused"
        checked = f"{s['checked']}/{max(s['total'], s['checked'])}" if s["running"] else "-"
        last = f"{display.age(now - s['last_full_pass'])} ago" if s["last_full_pass"] else "never"
        lines.append(
            f"{r['id'][:12]:<12} {r['address']:<22} {state:<8} {s['passes']:>6} "
            f"{checked:>15} {s['bad_found']:>4}  {last}"
        )
    if not rows:
        lines.append("(no chunk server is up)")
    return "\n".join(lines)


def bad_found_now(rows: list[dict[str, Any]]) -> int:
    """Corrupted chunks found by the passes this command started."""
    return sum(
        r["scrub"]["bad_found"] - r["bad_before"]
        for r in rows
        if "bad_before" in r and "scrub" in r
    )
