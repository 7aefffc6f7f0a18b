"""The filesystem suite on shoalfs, MooseFS, the Python-FUSE floor and the local disk, side
by side, in one run.

    .venv/bin/python -m bench.fs_bench [--rounds 3] [--systems local,floor,shoalfs,moosefs]
                                       [--chart docs/fs-bench.png] [--json FILE]
    .venv/bin/python -m bench.fs_bench --from-json FILE [--chart PNG]

Brings up shoalfs (``shoal up``: 3 chunk servers, R=2) and MooseFS (Debian's packages,
installed on first use: 3 chunk servers, goal 2, in a network namespace of its own) and
the Python-FUSE floor (bench/floorfs.py: a pyfuse3 passthrough of ours over the local
disk, no RPC, no replication), runs every workload of bench/workloads.py on each system
and on a directory of the local disk, interleaved (local, floor, shoalfs, moosefs, local,
...) so all see the same machine over the same minutes, and prints the median of the
rounds, the ratios shoalfs/MooseFS, shoalfs/floor and shoalfs/local, the CPU seconds each system's processes used over the whole run, and the
peak memory of each FUSE client. Everything it made is stopped and removed at the end.

``--from-json`` prints the table (and draws the chart) of an earlier run's ``--json`` file
without running anything, also of a run cut short: its file holds the rounds it finished.
"""

from __future__ import annotations

import argparse
import json
import shutil
import statistics
import sys
import tempfile
from pathlib import Path

from bench.moosefs import MooseFs
from bench.procstats import process_stats
from bench.systems import LocalDisk, PythonFuseFloor, Shoalfs, System
from bench.workloads import SourceTree, SuiteSize, run_suite

MiB = 1 << 20
SYSTEMS = ("local", "floor", "shoalfs", "moosefs")


def build(names: list[str], work: Path, size: SuiteSize) -> list[System]:
    made: dict[str, System] = {
        "local": LocalDisk(work),
        "floor": PythonFuseFloor(work),
        "shoalfs": Shoalfs(work / "shoalfs", capacity_mib=max(4096, size.size_mib * 4)),
        "moosefs": MooseFs(work / "moosefs"),
    }
    return [made[n] for n in names]


def usage(system: System) -> dict[str, float]:
    """CPU seconds per role over the system's life so far, and its client's peak memory."""
    out: dict[str, float] = {}
    for role, pids in system.pids().items():
        stats = [process_stats(p) for p in pids]
        out[f"cpu {role}"] = sum(cpu for cpu, _ in stats)
        if role == "client" and stats:
            out["client peak MiB"] = max(peak for _, peak in stats) / MiB
    return out


def run(args: argparse.Namespace) -> dict:
    size = SuiteSize(args.size_mib, args.random_ops, args.files, args.small_files)
    work = Path(tempfile.mkdtemp(prefix="shoalfs-fsbench-", dir=args.dir))
    systems = build(args.systems, work, size)
    results: dict[str, dict[str, list[float]]] = {s.name: {} for s in systems}
    resources: dict[str, dict[str, float]] = {}
    tree = None
    started: list[System] = []
    try:
        tree = None if args.no_tree else SourceTree(work)
        for system in systems:
            print(f"starting {system.name}", file=sys.stderr)
            started.append(system)
            system.start()
        for round_no in range(args.rounds):
            for system in systems:
                print(f"round {round_no + 1}/{args.rounds}: {system.name}", file=sys.stderr)
                target = system.mountpoint / f"round{round_no}"
                target.mkdir()
                for key, value in run_suite(target, size, tree).items():
                    results[system.name].setdefault(key, []).append(value)
                shutil.rmtree(target)
            if args.json:  # a run cut short still leaves the rounds it finished
                args.json.write_text(json.dumps({"partial": True, "samples": results}) + "\n")
        resources = {s.name: usage(s) for s in systems}
    finally:
        for system in reversed(started):
            try:
                system.stop()
            except Exception as exc:
                print(f"stopping {system.name}: {exc}", file=sys.stderr)
        shutil.rmtree(work, ignore_errors=True)
    return {
        "rounds": args.rounds,
        "size": vars(size),
        "tree": {"files": tree.files, "bytes": tree.bytes} if tree else None,
        "medians": {
            name: {k: statistics.median(v) for k, v in rows.items()}
            for name, rows in results.items()
        },
        "samples": results,
        "resources": resources,
    }


def from_samples(saved: dict) -> dict:
    """A result to report from a --json file: a whole run's as it is, a cut-short run's
    (samples of the rounds it finished, nothing else) with medians of those rounds."""
    if not saved.get("partial"):
        return saved
    samples = saved["samples"]
    rounds = min(len(v) for rows in samples.values() for v in rows.values())
    return {
        "rounds": rounds,
        "tree": None,
        "resources": {},
        "samples": samples,
        "medians": {
            name: {k: statistics.median(v[:rounds]) for k, v in rows.items()}
            for name, rows in samples.items()
        },
    }


def report(result: dict) -> str:
    medians = result["medians"]
    names = list(medians)
    rows = list(next(iter(medians.values())))
    ratios = [
        (a, b)
        for a, b in (("shoalfs", "moosefs"), ("shoalfs", "floor"), ("shoalfs", "local"))
        if a in names and b in names
    ]
    lines = [f"filesystem benchmark: medians of {result['rounds']} interleaved rounds"]
    if result["tree"]:
        lines.append(
            f"source tree: {result['tree']['files']} files, {result['tree']['bytes'] / MiB:.0f} MiB"
        )
    header = (
        f"{'workload':<22}"
        + "".join(f"{n:>11}" for n in names)
        + "".join(f"{a[:6] + '/' + b[:5]:>15}" for a, b in ratios)
    )
    lines += [header, "-" * len(header)]
    for row in rows:
        line = f"{row:<22}" + "".join(f"{medians[n][row]:>11.0f}" for n in names)
        line += "".join(f"{medians[a][row] / medians[b][row]:>15.2f}" for a, b in ratios)
        lines.append(line)
    lines.append("")
    for name, figures in result["resources"].items():
        if figures:
            lines.append(
                f"{name}: "
                + ", ".join(
                    f"{k} {v:.0f}" if k.endswith("MiB") else f"{k} {v:.1f} s"
                    for k, v in figures.items()
                )
            )
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument(
        "--dir",
        type=Path,
        default=Path("/var/tmp"),
        help="where the local-disk runs, and everything else, live",
    )
    parser.add_argument(
        "--systems",
        default=",".join(SYSTEMS),
        type=lambda v: [s for s in v.split(",") if s],
        help=f"which of {', '.join(SYSTEMS)}, in this order per round",
    )
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--size-mib", type=int, default=1024)
    parser.add_argument("--random-ops", type=int, default=2000)
    parser.add_argument("--files", type=int, default=5000)
    parser.add_argument("--small-files", type=int, default=2000)
    parser.add_argument("--no-tree", action="store_true", help="skip cp -r and tar x")
    parser.add_argument("--json", type=Path, help="write every figure here")
    parser.add_argument("--chart", type=Path, help="draw the ratios into this PNG")
    parser.add_argument(
        "--from-json",
        type=Path,
        metavar="FILE",
        help="run nothing: report (and chart) the figures of an earlier --json",
    )
    args = parser.parse_args(argv)
    unknown = set(args.systems) - set(SYSTEMS)
    if unknown or not args.systems:
        parser.error(f"--systems: choose from {', '.join(SYSTEMS)}")
    if args.from_json:
        result = from_samples(json.loads(args.from_json.read_text()))
    else:
        result = run(args)
    print(report(result))
    if args.json and not args.from_json:
        args.json.write_text(json.dumps(result, indent=1) + "\n")
    if args.chart:
        from bench.chart import draw_ratios

        draw_ratios(result, args.chart)
        print(f"chart: {args.chart}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
