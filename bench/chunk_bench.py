"""Chunk store throughput and latency over loopback, beside the raw disk, in one run.

    .venv/bin/python -m bench.chunk_bench [--dir DIR] [--total-mib 512] [--chunk-mib 4]
                                          [--clients 4] [--rounds 3]

Each round runs, interleaved so that the disk's mood affects both alike:
  raw put   C threads write the same chunks as files in DIR: write, fsync, rename, fsync dir
            (exactly the durability a put promises)
  put       C concurrent clients (one connection each) chunk.put the same chunks to one
            storaged on 127.0.0.1 whose data directory is in DIR
  raw get   C threads read the files back         (page cache dropped before, as root)
  get       C clients chunk.get them (hash-verified) (page cache dropped before, as root)
  latency   one client, one connection, sequential chunk.has: p50 and p99
  small/s   C clients, chunk.has as fast as they can
Prints the medians over rounds and storaged/raw ratios.
"""

from __future__ import annotations

import argparse
import os
import shutil
import statistics
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import trio

from bench.procstats import drop_caches, process_stats
from storaged.chunk.ids import chunk_id
from storaged.durable import fsync_dir
from storaged.rpc import RpcClient, auth
from tests.helpers import StoragedProcess

MiB = 1 << 20


def raw_put(directory: Path, chunks: list[tuple[str, bytes]], clients: int) -> float:
    directory.mkdir(parents=True, exist_ok=True)

    def write(item: tuple[str, bytes]) -> None:
        cid, data = item
        tmp = directory / f"{cid}.tmp"
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        try:
            os.write(fd, data)
            os.fsync(fd)
        finally:
            os.close(fd)
        os.rename(tmp, directory / cid)
        fsync_dir(directory)

    start = time.perf_counter()
    with ThreadPoolExecutor(clients) as pool:
        list(pool.map(write, chunks))
    return time.perf_counter() - start


def raw_get(directory: Path, chunks: list[tuple[str, bytes]], clients: int) -> float:
    start = time.perf_counter()
    with ThreadPoolExecutor(clients) as pool:
        list(pool.map(lambda item: (directory / item[0]).read_bytes(), chunks))
    return time.perf_counter() - start


async def rpc_many(
    address: str, secret: bytes, clients: int, jobs: list[tuple[str, tuple]]
) -> float:
    """Run ``jobs`` (method, params) over ``clients`` connections; wall time in seconds."""
    queue = list(reversed(jobs))
    async with RpcClient(secret, connections_per_server=clients, timeout=120) as client:
        await client.call(address, "health")  # connect before timing

        async def worker() -> None:
            while queue:
                method, params = queue.pop()
                await client.call(address, method, *params)

        start = time.perf_counter()
        async with trio.open_nursery() as nursery:
            for _ in range(clients):
                nursery.start_soon(worker)
        return time.perf_counter() - start


async def latency(address: str, secret: bytes, cid: str, count: int) -> list[float]:
    samples = []
    async with RpcClient(secret, connections_per_server=1) as client:
        await client.call(address, "health")
        for _ in range(count):
            t0 = time.perf_counter()
            await client.call(address, "chunk.has", cid)
            samples.append(time.perf_counter() - t0)
    return samples


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument(
        "--dir",
        type=Path,
        default=Path("/var/tmp"),
        help="a directory on the disk to measure (default /var/tmp)",
    )
    parser.add_argument("--total-mib", type=int, default=512)
    parser.add_argument("--chunk-mib", type=int, default=4)
    parser.add_argument("--clients", type=int, default=4)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--small-requests", type=int, default=3000)
    args = parser.parse_args()

    work = Path(tempfile.mkdtemp(prefix="shoalfs-bench-", dir=args.dir))
    secret_file = work / "secret"
    auth.write_secret_file(secret_file)
    secret = auth.load_secret(secret_file)
    count = max(1, args.total_mib // args.chunk_mib)
    results: dict[str, list[float]] = {
        k: [] for k in ("raw_put", "put", "raw_get", "get", "p50", "p99", "small")
    }
    dropped = False
    cpu: dict[str, float] = {}
    try:
        for round_no in range(args.rounds):
            chunks = []
            for _ in range(count):
                data = os.urandom(args.chunk_mib * MiB)
                chunks.append((chunk_id(data), data))
            total = count * args.chunk_mib

            raw_dir = work / f"raw{round_no}"
            results["raw_put"].append(total / raw_put(raw_dir, chunks, args.clients))

            server = StoragedProcess(
                work / f"store{round_no}", secret_file, extra=["--log-level", "warning"]
            ).start()
            try:
                puts = [("chunk.put", (cid, data)) for cid, data in chunks]
                results["put"].append(
                    total / trio.run(rpc_many, server.address, secret, args.clients, puts)
                )
                dropped = drop_caches()
                results["raw_get"].append(total / raw_get(raw_dir, chunks, args.clients))
                dropped = drop_caches()
                gets = [("chunk.get", (cid,)) for cid, _ in chunks]
                results["get"].append(
                    total / trio.run(rpc_many, server.address, secret, args.clients, gets)
                )
                samples = trio.run(
                    latency, server.address, secret, chunks[0][0], args.small_requests
                )
                results["p50"].append(percentile(samples, 0.50) * 1e6)
                results["p99"].append(percentile(samples, 0.99) * 1e6)
                has = [("chunk.has", (chunks[0][0],))] * args.small_requests
                results["small"].append(
                    args.small_requests
                    / trio.run(rpc_many, server.address, secret, args.clients, has)
                )
                cpu["storaged"] = process_stats(server.pid)[0]
            finally:
                server.stop()
            shutil.rmtree(raw_dir)
            shutil.rmtree(work / f"store{round_no}")
            print(f"round {round_no + 1}/{args.rounds} done", file=sys.stderr)
    finally:
        shutil.rmtree(work, ignore_errors=True)

    med = {k: statistics.median(v) for k, v in results.items()}
    print(
        f"\nchunk store benchmark: {args.rounds} rounds, {count} chunks of {args.chunk_mib} MiB "
        f"per round, {args.clients} concurrent clients, disk under {args.dir}, "
        f"page cache {'dropped' if dropped else 'NOT dropped (not root)'} before reads"
    )
    print(f"{'':<32}{'raw disk':>12}{'storaged':>12}{'ratio':>8}")
    print(
        f"{'put MB/s (fsync each chunk)':<32}{med['raw_put']:>12.0f}{med['put']:>12.0f}"
        f"{med['put'] / med['raw_put']:>8.2f}"
    )
    print(
        f"{'get MB/s (cold cache)':<32}{med['raw_get']:>12.0f}{med['get']:>12.0f}"
        f"{med['get'] / med['raw_get']:>8.2f}"
    )
    print(f"{'small request p50 / p99 (us)':<32}{'':>12}{med['p50']:>6.0f}/{med['p99']:<5.0f}")
    print(f"{'small requests/s':<32}{'':>12}{med['small']:>12.0f}")
    print(f"storaged CPU seconds in the last round: {cpu.get('storaged', 0):.1f}")
    print("per-round values:", {k: [round(x) for x in v] for k, v in results.items()})


if __name__ == "__main__":
    main()
