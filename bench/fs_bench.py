"""A filesystem suite against a shoalfs mount and the local disk, in one run.

    .venv/bin/python -m bench.fs_bench [--dir /var/tmp] [--size-mib 1024] [--rounds 2]

Starts its own cluster with 'shoal up' (3 chunk servers, R=2, 4 MiB chunks) under --dir,
runs every workload on the local directory and on the mount, alternating (local, shoalfs,
local, shoalfs, ...) so both see the same machine, and prints the median of the rounds
with the ratio shoalfs/local. It stops the cluster and removes everything it made.

Workloads:
  seq write     SIZE in 1 MiB writes, fsync at the end               MB/s
  seq read      the same file, page cache dropped first               MB/s
  rand read     4 KiB preads at random offsets, cache dropped first   IOPS
  rand write    4 KiB pwrites at random offsets, fsync at the end     IOPS
  create/stat/unlink   N empty files                                  ops/s
  small write/read     M files of 16 KiB (read with the cache dropped)  files/s
"""

from __future__ import annotations

import argparse
import json
import os
import random
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

from bench.procstats import drop_caches, process_stats

MiB = 1 << 20


def timed(fn: Callable[[], None]) -> float:
    start = time.perf_counter()
    fn()
    return time.perf_counter() - start


class UniqueBlocks:
    """Distinct blocks, cheaply: a random pool with a counter stamped into each block.

    Repeating one block would flatter any content-addressed store (identical chunks are
    stored once), so every block a workload writes differs from every other.
    """

    def __init__(self, size: int) -> None:
        self.size = size
        self.pool = os.urandom(16 * MiB + size)
        self.count = 0

    def next(self) -> bytes:
        self.count += 1
        start = (self.count * 7919 * 4096) % (16 * MiB)
        block = bytearray(self.pool[start:start + self.size])
        block[:16] = self.count.to_bytes(8, "big") + os.getpid().to_bytes(8, "big")
        return bytes(block)


def seq_write(d: Path, size: int) -> float:
    blocks = UniqueBlocks(MiB)
    prepared = [blocks.next() for _ in range(min(size // MiB, 64))]

    def run() -> None:
        fd = os.open(d / "big", os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
        for i in range(size // MiB):
            block = prepared[i] if i < len(prepared) else blocks.next()
            os.write(fd, block)
        os.fsync(fd)
        os.close(fd)
    return size / MiB / timed(run)


def seq_read(d: Path, size: int) -> float:
    drop_caches()

    def run() -> None:
        with open(d / "big", "rb", buffering=0) as f:
            while f.read(MiB):
                pass
    return size / MiB / timed(run)


def rand_read(d: Path, size: int, count: int) -> float:
    drop_caches()
    rng = random.Random(1)
    offsets = [rng.randrange(0, size // 4096) * 4096 for _ in range(count)]

    def run() -> None:
        fd = os.open(d / "big", os.O_RDONLY)
        for off in offsets:
            os.pread(fd, 4096, off)
        os.close(fd)
    return count / timed(run)


def rand_write(d: Path, size: int, count: int) -> float:
    rng = random.Random(2)
    offsets = [rng.randrange(0, size // 4096) * 4096 for _ in range(count)]
    blocks = UniqueBlocks(4096)
    data = [blocks.next() for _ in offsets]

    def run() -> None:
        fd = os.open(d / "big", os.O_WRONLY)
        for off, block in zip(offsets, data):
            os.pwrite(fd, block, off)
        os.fsync(fd)
        os.close(fd)
    return count / timed(run)


def metadata(d: Path, files: int) -> tuple[float, float, float]:
    sub = d / "meta"
    sub.mkdir()
    names = [sub / f"f{i:06d}" for i in range(files)]

    def create() -> None:
        for n in names:
            os.close(os.open(n, os.O_CREAT | os.O_WRONLY, 0o644))

    def stat() -> None:
        for n in names:
            os.stat(n)

    def unlink() -> None:
        for n in names:
            os.unlink(n)
    rates = files / timed(create), files / timed(stat), files / timed(unlink)
    sub.rmdir()
    return rates


def small_files(d: Path, count: int) -> tuple[float, float]:
    sub = d / "small"
    sub.mkdir()
    blocks = UniqueBlocks(16 * 1024)
    payloads = [blocks.next() for _ in range(count)]
    names = [sub / f"s{i:05d}" for i in range(count)]

    def write() -> None:
        for n, payload in zip(names, payloads):
            with open(n, "wb") as f:
                f.write(payload)

    def read() -> None:
        for n in names:
            with open(n, "rb") as f:
                f.read()
    w = count / timed(write)
    drop_caches()
    r = count / timed(read)
    shutil.rmtree(sub)
    return w, r


def run_suite(d: Path, args: argparse.Namespace) -> dict[str, float]:
    size = args.size_mib * MiB
    out = {"seq write MB/s": seq_write(d, size), "seq read MB/s": seq_read(d, size),
           "rand 4K read IOPS": rand_read(d, size, args.random_ops),
           "rand 4K write IOPS": rand_write(d, size, args.random_ops)}
    os.unlink(d / "big")
    c, s, u = metadata(d, args.files)
    out.update({"create/s": c, "stat/s": s, "unlink/s": u})
    w, r = small_files(d, args.small_files)
    out.update({"16K files written/s": w, "16K files read/s": r})
    return out


def shoal(*args: str) -> str:
    result = subprocess.run([sys.executable, "-m", "shoal.cli", *args], capture_output=True,
                            text=True, timeout=300)
    if result.returncode != 0:
        raise SystemExit(f"shoal {' '.join(args)} failed:\n{result.stdout}{result.stderr}")
    return result.stdout


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--dir", type=Path, default=Path("/var/tmp"))
    parser.add_argument("--size-mib", type=int, default=1024)
    parser.add_argument("--random-ops", type=int, default=2000)
    parser.add_argument("--files", type=int, default=5000)
    parser.add_argument("--small-files", type=int, default=2000)
    parser.add_argument("--rounds", type=int, default=2)
    args = parser.parse_args()

    work = Path(tempfile.mkdtemp(prefix="shoalfs-fsbench-", dir=args.dir))
    local, mnt = work / "local", work / "mnt"
    local.mkdir()
    shoal("up", "--workdir", str(work / "cluster"), "--mountpoint", str(mnt),
          "--capacity", f"{args.size_mib * 4}MiB", "--replicas", "2")
    cluster = json.loads((work / "cluster" / "cluster.json").read_text())
    results: dict[str, dict[str, list[float]]] = {"local": {}, "shoalfs": {}}
    try:
        for round_no in range(args.rounds):
            for name, d in (("local", local), ("shoalfs", mnt)):
                target = d / f"round{round_no}"
                target.mkdir()
                for key, value in run_suite(target, args).items():
                    results[name].setdefault(key, []).append(value)
                shutil.rmtree(target)
                print(f"round {round_no + 1}/{args.rounds}: {name} done", file=sys.stderr)
        cpu_mount, peak_mount = process_stats(cluster["mount_pid"])
        cpu_servers = sum(process_stats(s["pid"])[0] for s in cluster["chunk_servers"])
        cpu_meta = process_stats(cluster["meta_process"]["pid"])[0]
    finally:
        shoal("down", "--workdir", str(work / "cluster"))
        shutil.rmtree(work, ignore_errors=True)

    print(f"\nfilesystem benchmark: {args.rounds} rounds, medians; shoalfs = 3 chunk servers, "
          f"R=2, 4 MiB chunks, all on this machine; local = a directory under {args.dir}")
    print(f"{'workload':<24}{'local':>12}{'shoalfs':>12}{'ratio':>8}")
    for key in results["local"]:
        a = statistics.median(results["local"][key])
        b = statistics.median(results["shoalfs"][key])
        print(f"{key:<24}{a:>12.0f}{b:>12.0f}{b / a:>8.2f}")
    print(f"CPU seconds, whole run: mount {cpu_mount:.1f}, chunk servers {cpu_servers:.1f}, "
          f"meta {cpu_meta:.1f}; mount process peak memory {peak_mount / MiB:.0f} MiB")


if __name__ == "__main__":
    main()
