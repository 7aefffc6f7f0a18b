"""The local lab cluster: ``shoal up`` starts a meta role, chunk servers and a mount on
this machine; ``shoal down`` stops them.

Each command: ``add_NAME(sub)`` declares its parser (``shoal/cli.py`` calls them in the
order ``shoal --help`` lists them) and ``cmd_NAME(args)`` runs it."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any

from storaged.rpc import RpcError

from .common import EPILOG, EXIT_FAILURE, EXIT_OK, EXIT_UNHEALTHY, EXIT_USAGE, workdir_flag


def add_up(sub: Any) -> None:
    p = sub.add_parser(
        "up",
        help="start a local cluster on loopback and mount a volume",
        description="Start a local cluster on 127.0.0.1 — a meta role, N chunk servers (each "
        "with its own data directory and port) and a cluster secret, all under "
        "--workdir — create the volume 'default' and mount it. Writes "
        "WORKDIR/cluster.json describing it all. Running it again starts only what "
        "is not running. Returns once the mount is ready.",
        epilog=EPILOG,
    )
    workdir_flag(p)
    p.add_argument(
        "--mountpoint",
        type=Path,
        metavar="DIR",
        help="where to mount the volume (default /mnt/shoalfs as root, else ~/shoalfs)",
    )
    p.add_argument(
        "--chunk-servers",
        type=int,
        default=3,
        metavar="N",
        help="number of chunk servers (default 3)",
    )
    p.add_argument(
        "--replicas",
        type=int,
        default=2,
        metavar="R",
        help="copies of each chunk, on distinct servers (default 2)",
    )
    p.add_argument(
        "--capacity",
        default="10GiB",
        metavar="SIZE",
        help="the volume's quota, created only if it does not exist (default 10GiB)",
    )
    p.add_argument(
        "--chunk-size",
        default="4MiB",
        metavar="SIZE",
        help="the volume's chunk size, a power of two (default 4MiB)",
    )
    p.set_defaults(handler=cmd_up)


def cmd_up(args: argparse.Namespace) -> int:
    from storaged.config import ConfigError, parse_size

    from .. import cluster as local

    if args.chunk_servers < 1 or not 1 <= args.replicas <= args.chunk_servers:
        print(
            "shoal up: need --chunk-servers >= 1 and 1 <= --replicas <= --chunk-servers",
            file=sys.stderr,
        )
        return EXIT_USAGE
    try:
        options = local.UpOptions(
            workdir=args.workdir,
            chunk_servers=args.chunk_servers,
            replicas=args.replicas,
            mountpoint=args.mountpoint,
            capacity=parse_size(args.capacity),
            chunk_size=parse_size(args.chunk_size),
        )
    except ConfigError as exc:
        print(f"shoal up: {exc}", file=sys.stderr)
        return EXIT_USAGE
    try:
        described = local.up(options)
    except (RuntimeError, OSError, ValueError, RpcError) as exc:
        print(f"shoal up: {exc}", file=sys.stderr)
        return EXIT_FAILURE
    from storaged.rpc import auth

    from .. import status

    print(f"cluster is up; described in {args.workdir / 'cluster.json'}")
    if not described.meta:  # (up records the meta role's address before anything else)
        print("shoal up: cluster.json names no meta role", file=sys.stderr)
        return EXIT_FAILURE
    report = status.gather(described.meta, auth.load_secret(described.secret_file))
    print(status.render(report))
    print(f"volume '{described.volume}' is mounted at {described.mountpoint}")
    return EXIT_OK if report["healthy"] else EXIT_UNHEALTHY


def add_down(sub: Any) -> None:
    p = sub.add_parser(
        "down",
        help="unmount and stop the local cluster (data is kept)",
        description="Unmount the volume (open files are flushed first) and stop "
        "every process 'shoal up' started in --workdir. Data "
        "directories and the secret stay, so 'shoal up' brings the "
        "same data back.",
        epilog=EPILOG,
    )
    workdir_flag(p)
    p.set_defaults(handler=cmd_down)


def cmd_down(args: argparse.Namespace) -> int:
    from .. import cluster as local

    try:
        stopped = local.down(args.workdir)
    except (FileNotFoundError, RuntimeError) as exc:
        print(f"shoal down: {exc}", file=sys.stderr)
        return EXIT_FAILURE
    print(f"stopped: {', '.join(stopped) or 'nothing was running'}; data kept in {args.workdir}")
    return EXIT_OK
