"""What the commands share: exit codes, the flags that say where the cluster is and how
to log, and resolving the meta role's address and secret from them or a cluster.json."""

from __future__ import annotations

import argparse
import functools
import sys
from collections.abc import Callable
from pathlib import Path

from storaged.logs import FORMATS, LEVELS

EXIT_OK, EXIT_FAILURE, EXIT_USAGE, EXIT_UNHEALTHY = 0, 1, 2, 3

EPILOG = "exit codes: 0 ok, 1 failed, 2 bad usage or config, 3 cluster unhealthy"


def access_flags(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--cluster",
        metavar="FILE",
        help="a cluster.json to take the meta address and secret from "
        "(default: WORKDIR/cluster.json)",
    )
    p.add_argument("--meta", metavar="ADDR", help="the meta role's address (with --secret-file)")
    p.add_argument("--secret-file", metavar="FILE", help="the cluster secret")
    workdir_flag(p)


def mount_memory_flags(p: argparse.ArgumentParser, whose: str) -> None:
    p.add_argument(
        "--mount-cache-size",
        default="128MiB",
        metavar="SIZE",
        help=f"chunk cache of each fusefs process {whose} (default 128MiB)",
    )
    p.add_argument(
        "--mount-max-unsaved",
        default="128MiB",
        metavar="SIZE",
        help=f"memory for unsaved writes of each fusefs process {whose} (default 128MiB)",
    )


def mount_memory_args(args: argparse.Namespace) -> list[str]:
    """The fusefs flags for --mount-cache-size and --mount-max-unsaved (checked here, so a
    bad size is a usage error of this command, not a failed mount later)."""
    from storaged.config import parse_size

    return [
        "--cache-size",
        str(parse_size(args.mount_cache_size)),
        "--max-unsaved",
        str(parse_size(args.mount_max_unsaved)),
    ]


def meta_access(args: argparse.Namespace) -> tuple[str, str]:
    """(meta address, secret file) from flags, or from a cluster.json."""
    from ..clusterfile import FILENAME, ClusterFile

    if args.meta and args.secret_file:
        return args.meta, args.secret_file
    cluster = ClusterFile.load(Path(args.cluster) if args.cluster else args.workdir / FILENAME)
    if not cluster.meta:
        raise FileNotFoundError("the cluster file names no meta role")
    return args.meta or cluster.meta, args.secret_file or cluster.secret_file


def with_meta_access(
    command: Callable[[argparse.Namespace, str, bytes], int],
) -> Callable[[argparse.Namespace], int]:
    """For commands that talk to the meta role: resolve its address and the secret (flags
    or cluster.json) first, and turn a missing file or a bad secret into a usage error."""

    @functools.wraps(command)
    def wrapper(args: argparse.Namespace) -> int:
        from storaged.rpc import auth

        try:
            meta, secret_file = meta_access(args)
            secret = auth.load_secret(secret_file)
        except (FileNotFoundError, ValueError) as exc:
            print(f"shoal {args.command}: {exc}", file=sys.stderr)
            return EXIT_USAGE
        return command(args, meta, secret)

    return wrapper


def log_flags(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--log-level",
        choices=LEVELS,
        default="info",
        help="debug adds a line per RPC request (default info)",
    )
    p.add_argument(
        "--log-format",
        choices=FORMATS,
        default="text",
        help="text is key=value per line (default), json one object per line; "
        "either way a line carries the request id (rid) it belongs to",
    )


def workdir_flag(p: argparse.ArgumentParser) -> None:
    from ..cluster import default_workdir

    p.add_argument(
        "--workdir",
        type=Path,
        default=default_workdir(),
        metavar="DIR",
        help=f"where the cluster's data, logs and cluster.json live (default {default_workdir()})",
    )
