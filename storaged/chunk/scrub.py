"""The scrubber: a chunk server re-reads and verifies its chunks in the background.

Bit rot is silent until something reads the chunk; a chunk nobody reads for a year could
lose its last good copy unnoticed. The scrubber reads every chunk at a bounded rate
(``--scrub-rate`` bytes per second, so clients keep the disk), with a pause of
``--scrub-interval`` between full passes. A chunk that fails its hash is quarantined by
the read itself; the scrubber reports it to the meta role and asks for a repair pass, so
a good copy replaces it without waiting for the next scheduled one.

``shoal scrub --now`` ends the pause early (``scrub.run``); the status it and ``shoal
status`` show carries what an ETA needs: chunks and bytes checked of the pass's total.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass, field
from typing import Any

import trio

from ..metaclient import MetaClient
from ..rpc import Corrupted, NotFound, RpcClient, RpcError
from .store import ChunkStore

log = logging.getLogger("storaged.scrub")


@dataclass
class ScrubStatus:
    enabled: bool = False  # a scrubber runs on this server (--scrub-rate > 0)
    running: bool = False  # in a pass now (else pausing until next_pass)
    passes: int = 0  # full passes finished
    last_full_pass: float = 0.0  # when the last one finished (epoch seconds; 0: never)
    started: float = 0.0  # when the current (or last) pass began
    next_pass: float = 0.0  # when the pause ends (epoch seconds)
    total: int = 0  # chunks on the server when the pass began
    checked: int = 0  # chunks verified in the current pass
    bytes_checked: int = 0  # their bytes
    rate: float = 0.0  # the configured bytes per second
    bad_found: int = 0  # corrupted chunks found, all passes
    wanted: trio.Event = field(default_factory=trio.Event, repr=False)  # scrub.run

    def as_dict(self) -> dict[str, Any]:
        return {k: v for k, v in vars(self).items() if k != "wanted"}


async def scrub_loop(
    store: ChunkStore,
    status: ScrubStatus,
    *,
    rate: float,
    interval: float,
    secret: bytes,
    meta: str,
    server_id: str,
) -> None:
    status.enabled, status.rate = True, rate
    async with RpcClient(secret) as client:
        while True:
            await _one_pass(store, status, rate, client, meta, server_id)
            status.passes += 1
            status.last_full_pass = time.time()
            status.running = False
            status.next_pass = status.last_full_pass + interval
            log.info("scrub pass done: %s", status.as_dict())
            with trio.move_on_after(interval):
                await status.wanted.wait()  # set during the pass: the next one starts now
            status.wanted = trio.Event()


async def _one_pass(
    store: ChunkStore,
    status: ScrubStatus,
    rate: float,
    client: RpcClient,
    meta: str,
    server_id: str,
) -> None:
    status.running, status.started = True, time.time()
    status.checked = status.bytes_checked = 0
    status.total = (await trio.to_thread.run_sync(store.usage)).chunks
    after = None
    while True:
        ids, after = await trio.to_thread.run_sync(store.list, after, 1000)
        for cid in ids:
            started = time.monotonic()
            try:
                data = await trio.to_thread.run_sync(store.get, cid)
                size = len(data)
            except NotFound:
                continue  # deleted meanwhile
            except Corrupted:
                size = 0
                status.bad_found += 1
                log.error("scrub: chunk %s is corrupted on this server (quarantined)", cid)
                await _report(client, meta, cid, server_id)
            status.checked += 1
            status.bytes_checked += size
            status.total = max(status.total, status.checked)  # chunks written meanwhile
            if rate > 0:  # bytes per second: sleep off what this read used
                await trio.sleep(max(0.0, size / rate - (time.monotonic() - started)))
        if after is None:
            return


async def _report(client: RpcClient, meta: str, cid: str, server_id: str) -> None:
    if not meta:
        return
    try:
        meta_client = MetaClient(client, meta)
        await meta_client.cluster_report_bad(cid, server_id, "CORRUPTED: found by scrub")
        await meta_client.repair_run()
    except RpcError as exc:  # the next pass, or a client read, reports it again
        log.warning("scrub: could not report chunk %s: %s", cid[:12], exc)
