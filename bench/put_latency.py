"""How long one small chunk takes to reach R chunk servers: durable puts beside buffered
ones (storaged/chunk/buffered.py), interleaved, on a running cluster.

    .venv/bin/shoal up --workdir /var/tmp/putlat
    .venv/bin/python -m bench.put_latency --cluster /var/tmp/putlat/cluster.json
    .venv/bin/python -m bench.put_latency --store /var/tmp   # the chunk store alone

Each round puts ``--puts`` fresh chunks of ``--size`` bytes through ``DataClient.put`` (R
copies, as a mount's close does) once each way, one at a time, and prints the median and
90th percentile of every round; a ``chunk.sync`` of the buffered ones ends each round
(not counted: an fsync pays it once, not per file). With ``--store DIR``: the same with
``ChunkStore.put`` on a fresh store in a temporary directory under DIR (no RPC).
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import tempfile
import time
from pathlib import Path

import trio

from storaged.chunk.ids import chunk_id
from storaged.chunk.store import ChunkStore
from storaged.data.client import DataClient
from storaged.metaclient import MetaClient
from storaged.rpc import RpcClient


async def _timed(
    data: DataClient, puts: int, size: int, replicas: int, durable: bool
) -> list[float]:
    took = []
    for _ in range(puts):
        chunk = os.urandom(size)
        started = time.perf_counter()
        await data.put(chunk, replicas, durable=durable)
        took.append(time.perf_counter() - started)
    return took


def _line(label: str, took: list[float]) -> str:
    ordered = sorted(took)
    p90 = ordered[int(len(ordered) * 0.9)]
    return f"{label:9s} median {statistics.median(took) * 1e3:6.2f} ms   p90 {p90 * 1e3:6.2f} ms"


async def _run(meta: str, secret: bytes, puts: int, size: int, rounds: int, replicas: int) -> None:
    async with RpcClient(secret) as rpc:
        data = DataClient(MetaClient(rpc, meta), buffered=True)
        for n in range(rounds):
            for durable in (True, False):
                took = await _timed(data, puts, size, replicas, durable)
                print(f"round {n + 1}: " + _line("durable" if durable else "buffered", took))
            await data.sync()


def _store_only(under: Path, puts: int, size: int, rounds: int) -> None:
    with tempfile.TemporaryDirectory(dir=under) as root:
        store = ChunkStore(root)
        store.open()
        try:
            for n in range(rounds):
                for durable in (True, False):
                    took = []
                    for _ in range(puts):
                        chunk = os.urandom(size)
                        cid = chunk_id(chunk)
                        started = time.perf_counter()
                        store.put(cid, chunk, durable=durable)
                        took.append(time.perf_counter() - started)
                    label = "durable" if durable else "buffered"
                    print(f"round {n + 1}: store " + _line(label, took))
                store.sync()
        finally:
            store.close()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    where = parser.add_mutually_exclusive_group(required=True)
    where.add_argument("--cluster", type=Path, help="a shoal up cluster.json")
    where.add_argument("--store", type=Path, help="time a chunk store in a directory here")
    parser.add_argument("--puts", type=int, default=300)
    parser.add_argument("--size", type=int, default=16384)
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--replicas", type=int, default=2)
    args = parser.parse_args()
    if args.store is not None:
        _store_only(args.store, args.puts, args.size, args.rounds)
        return
    info = json.loads(args.cluster.read_text())
    secret = Path(info["secret_file"]).read_bytes().strip()
    trio.run(_run, info["meta"], secret, args.puts, args.size, args.rounds, args.replicas)


if __name__ == "__main__":
    main()
