"""How shoalfs scales: directory size, concurrent writers, open files.

    .venv/bin/python -m bench.scaling [--sizes 1000,10000,100000] [--writers 1,2,4]

On one ``shoal up`` cluster (3 chunk servers, R=2):

- **directory size**: one directory grown to each size; at each, the rate of 1,000 more
  creates and of 1,000 stats of random names with the kernel's dentry and inode caches
  dropped first (so every stat is a lookup the mount answers). A cost that grows with the
  directory beyond logarithmic shows as a falling rate.
- **concurrent writers**: N processes each writing its own file of --writer-mib in 1 MiB
  writes with fsync at the end; the aggregate MB/s.
- **open files**: 100 files held open, --open-mib written to each and not yet closed (400
  MiB by default, over the mount's default --max-unsaved of 128 MiB: the rest must go to
  the chunk servers before close); the mount process's resident memory then, and its peak
  (VmHWM) over the whole run.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import random
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from bench.procstats import drop_caches, resident_memory
from bench.systems import Shoalfs
from bench.workloads import UniqueBlocks

MiB = 1 << 20
SAMPLE = 1000


def directory_rates(d: Path, sizes: list[int]) -> list[tuple[int, float, float]]:
    """(entries, creates/s, stats/s) as one directory grows through ``sizes``."""
    d.mkdir()
    count, out = 0, []
    for size in sizes:
        fill = size - SAMPLE - count
        for _ in range(max(0, fill)):
            os.close(os.open(d / f"f{count:07d}", os.O_CREAT | os.O_WRONLY, 0o644))
            count += 1
        start = time.perf_counter()
        for _ in range(SAMPLE):
            os.close(os.open(d / f"f{count:07d}", os.O_CREAT | os.O_WRONLY, 0o644))
            count += 1
        creates = SAMPLE / (time.perf_counter() - start)
        names = random.Random(size).sample(range(count), SAMPLE)
        drop_caches()
        start = time.perf_counter()
        for i in names:
            os.stat(d / f"f{i:07d}")
        stats = SAMPLE / (time.perf_counter() - start)
        out.append((count, creates, stats))
        print(f"  {count} entries: {creates:.0f} creates/s, {stats:.0f} stats/s", file=sys.stderr)
    return out


WRITER = r"""
import os, sys
path, mib = sys.argv[1], int(sys.argv[2])
pool = os.urandom(17 << 20)
fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
for i in range(mib):
    block = bytearray(pool[(i * 7919 * 4096) % (16 << 20):][:1 << 20])
    block[:16] = i.to_bytes(8, "big") + os.getpid().to_bytes(8, "big")
    os.write(fd, block)
os.fsync(fd)
os.close(fd)
"""


def writers_rate(d: Path, writers: int, mib: int) -> float:
    """Aggregate MB/s of ``writers`` processes writing ``mib`` each, all started together."""
    d.mkdir()
    start = time.perf_counter()
    procs = [
        subprocess.Popen([sys.executable, "-c", WRITER, str(d / f"w{i}"), str(mib)])
        for i in range(writers)
    ]
    if any(p.wait() != 0 for p in procs):
        raise RuntimeError("a writer failed")
    rate = writers * mib / (time.perf_counter() - start)
    shutil.rmtree(d)
    return rate


def open_files_memory(d: Path, mount_pid: int, mib: int, files: int = 100) -> tuple[int, int]:
    """Resident memory of the mount with ``files`` files open, each with ``mib`` MiB written
    (round robin, 1 MiB at a time) and not yet closed; then they are closed."""
    d.mkdir()
    blocks = UniqueBlocks(MiB)
    try:
        with contextlib.ExitStack() as stack:
            handles = [
                stack.enter_context(open(d / f"o{i:03d}", "wb", buffering=0)) for i in range(files)
            ]
            for _ in range(mib):
                for h in handles:
                    h.write(blocks.next())
            time.sleep(1)
            return resident_memory(mount_pid)
    finally:
        shutil.rmtree(d)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--dir", type=Path, default=Path("/var/tmp"))
    parser.add_argument(
        "--sizes", default="1000,10000,100000", type=lambda v: sorted(int(x) for x in v.split(","))
    )
    parser.add_argument("--writers", default="1,2,4", type=lambda v: [int(x) for x in v.split(",")])
    parser.add_argument("--writer-mib", type=int, default=512)
    parser.add_argument(
        "--open-mib",
        type=int,
        default=4,
        help="MiB written to each of the 100 open files (default 4)",
    )
    args = parser.parse_args(argv)
    if min(args.sizes) < SAMPLE:
        parser.error(f"--sizes: each at least {SAMPLE}")

    work = Path(tempfile.mkdtemp(prefix="shoalfs-scaling-", dir=args.dir))
    system = Shoalfs(work, capacity_mib=max(8192, 8 * args.writer_mib * max(args.writers)))
    try:
        system.start()
        mount_pid = system.pids()["client"][0]
        print("directory size", file=sys.stderr)
        rates = directory_rates(system.mountpoint / "dir", args.sizes)
        print("concurrent writers", file=sys.stderr)
        writers = [
            (n, writers_rate(system.mountpoint / f"w{n}", n, args.writer_mib)) for n in args.writers
        ]
        rss, _ = open_files_memory(system.mountpoint / "open", mount_pid, args.open_mib)
        _, peak = resident_memory(mount_pid)
    finally:
        system.stop()
        shutil.rmtree(work, ignore_errors=True)

    print("\nshoalfs scaling (3 chunk servers, R=2, all on this machine)")
    print(f"{'entries in the directory':<26}{'creates/s':>12}{'stats/s':>12}")
    for entries, creates, stats in rates:
        print(f"{entries:<26}{creates:>12.0f}{stats:>12.0f}")
    print(f"\n{'writers':<26}{'MB/s total':>12}")
    for n, rate in writers:
        print(f"{n:<26}{rate:>12.0f}")
    print(
        f"\nmount memory: {rss / MiB:.0f} MiB resident with 100 files open ({args.open_mib} "
        f"MiB written to each, not closed; --max-unsaved 128MiB, --cache-size 128MiB); "
        f"peak over the run {peak / MiB:.0f} MiB"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
