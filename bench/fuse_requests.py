"""FUSE requests per operation that reach the shoalfs mount's Python, per workload row.

    .venv/bin/python -m bench.fuse_requests [--files 500] [--latency]

The ceiling arithmetic of docs/performance.md needs, for each row of the side-by-side
suite, how many FUSE requests one operation makes reach Python: a Python FUSE filesystem
cannot answer a row faster than that many requests at the floor's cost per request
(bench/floorfs.py). This brings up ``shoal up`` (3 chunk servers, R=2), mounts its volume a
second time with the mount's metrics on, runs each metadata and small-file row once at a
small size, and prints the requests the mount answered per operation, by FUSE operation,
from the mount's own counter (``shoalfs_fuse_operations_total``). Nothing is timed.
With ``--latency``, the milliseconds the mount spent answering them instead (its latency
histogram's sum, per operation of the row): where a row's time goes, not a figure to
compare (one round, no other system).
"""

from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

from bench.procstats import drop_caches
from bench.systems import Shoalfs
from bench.workloads import READDIR_PASSES, read_files, write_files
from tests.helpers import free_port, scrape

# What the mount's metrics say per FUSE operation: requests answered, or seconds spent
# answering them (the latency histogram's sum: from the request's arrival in Python).
COUNTS = "shoalfs_fuse_operations_total"
SECONDS = "shoalfs_fuse_operation_duration_seconds_sum"


def _totals(port: int, sample: str = COUNTS) -> dict[str, float]:
    totals: dict[str, float] = {}
    for labels, value in scrape(port).get(sample, {}).items():
        operation = dict(labels)["operation"]
        totals[operation] = totals.get(operation, 0.0) + value
    return totals


def _per_operation(
    port: int, n: int, run: Callable[[], object], sample: str = COUNTS
) -> dict[str, float]:
    before = _totals(port, sample)
    run()
    time.sleep(0.5)  # (the kernel's FORGETs and RELEASEs trail the system calls a little)
    after = _totals(port, sample)
    return {
        op: (after[op] - before.get(op, 0.0)) / n for op in after if after[op] > before.get(op, 0.0)
    }


def rows(d: Path, port: int, files: int, sample: str = COUNTS) -> dict[str, dict[str, float]]:
    """Each metadata and small-file row of bench/workloads.py, made the same way: per
    operation of the row, ``sample`` per FUSE operation."""
    names = [d / "meta" / f"f{i:06d}" for i in range(files)]
    small = [d / "small" / f"s{i:05d}" for i in range(files)]
    payload = os.urandom(16 * 1024)
    (d / "meta").mkdir()
    (d / "small").mkdir()

    def write_small() -> None:
        write_files(small, [payload] * len(small))

    def read_small() -> None:
        read_files(small)

    def create() -> None:
        for n in names:
            os.close(os.open(n, os.O_CREAT | os.O_WRONLY, 0o644))

    def unlink() -> None:
        for n in names:
            os.unlink(n)

    out = {
        "create": _per_operation(port, files, create, sample),
        "stat": _per_operation(port, files, lambda: [os.stat(n) for n in names], sample),
        "readdir (per listing)": _per_operation(
            port,
            READDIR_PASSES,
            lambda: [os.listdir(d / "meta") for _ in range(READDIR_PASSES)],
            sample,
        ),
        "unlink": _per_operation(port, files, unlink, sample),
        "16K file written": _per_operation(port, files, write_small, sample),
    }
    drop_caches()
    out["16K file read, cache dropped"] = _per_operation(port, files, read_small, sample)
    out["16K file read again"] = _per_operation(port, files, read_small, sample)
    shutil.rmtree(d / "meta")
    shutil.rmtree(d / "small")
    return out


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--files", type=int, default=500)
    parser.add_argument("--dir", type=Path, default=Path("/var/tmp"))
    parser.add_argument(
        "--latency",
        action="store_true",
        help="print milliseconds the mount spent per operation (by FUSE operation) instead",
    )
    args = parser.parse_args(argv)
    sample, scale, unit = (SECONDS, 1000.0, "ms") if args.latency else (COUNTS, 1.0, "")
    work = Path(tempfile.mkdtemp(prefix="shoalfs-requests-", dir=args.dir))
    system = Shoalfs(work, capacity_mib=4096)
    mountpoint = work / "counted"
    port = free_port()
    try:
        system.start()
        mountpoint.mkdir()
        subprocess.run(
            [
                sys.executable,
                "-m",
                "shoal.cli",
                "mount",
                "default",
                str(mountpoint),
                "--workdir",
                str(system.workdir),
                "--metrics-listen",
                f"127.0.0.1:{port}",
                "--log-file",
                str(work / "counted.log"),
            ],
            check=True,
            capture_output=True,
            timeout=120,
        )
        target = mountpoint / "counted"
        target.mkdir()
        what = "milliseconds in the mount" if args.latency else "FUSE requests"
        print(f"{what} per operation, shoalfs mount ({args.files} files)")
        for row, per_op in rows(target, port, args.files, sample).items():
            total = sum(per_op.values()) * scale
            detail = ", ".join(
                f"{op} {value * scale:.2f}{unit}" for op, value in sorted(per_op.items())
            )
            print(f"{row:<30} {total:6.2f}{unit}   {detail}")
        shutil.rmtree(target)
    finally:
        subprocess.run(["umount", str(mountpoint)], capture_output=True, check=False)
        system.stop()
        shutil.rmtree(work, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
