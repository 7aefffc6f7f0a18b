"""``shoal volume``: create, list, resize, snapshot, clone and delete volumes.

Each command: ``add_NAME(sub)`` declares its parser (``shoal/cli.py`` calls them in the
order ``shoal --help`` lists them) and ``cmd_NAME(args)`` runs it."""

from __future__ import annotations

import argparse
import json
import sys
from typing import Any

from storaged.metaclient import MetaClient
from storaged.rpc import RpcError

from .. import display
from .common import EPILOG, EXIT_FAILURE, EXIT_OK, EXIT_USAGE, access_flags, meta_access


def add_volume(sub: Any) -> None:
    p = sub.add_parser(
        "volume",
        help="create, list, show, resize, delete, snapshot and clone volumes",
        description="Volumes and snapshots, as the CSI driver makes them for Kubernetes:\n"
        "  create NAME --capacity SIZE [--replicas R] [--chunk-size SIZE]\n"
        "  list | show NAME | resize NAME --capacity SIZE | delete NAME\n"
        "  snapshot NAME --snapshot SNAP   a point-in-time copy of NAME's files "
        "(shares chunks: instant, no space until files change)\n"
        "  snapshots | delete-snapshot SNAP\n"
        "  clone NEW --from SOURCE   a new volume starting as a copy of volume "
        "SOURCE, or of snapshot:SNAP (capacity, R and chunk size from the source "
        "unless given)\n"
        "A volume's data is only reachable through its name: delete cannot be "
        "undone (garbage collection frees the space after its grace period).",
        epilog=EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument(
        "action",
        choices=[
            "create",
            "list",
            "show",
            "resize",
            "delete",
            "snapshot",
            "snapshots",
            "delete-snapshot",
            "clone",
        ],
    )
    p.add_argument("name", nargs="?", help="the volume (or, for delete-snapshot, snapshot)")
    p.add_argument("--capacity", metavar="SIZE", help="quota, e.g. 10GiB")
    p.add_argument(
        "--replicas",
        type=int,
        metavar="R",
        help="copies of each chunk on distinct servers (default 2; clone: the source's)",
    )
    p.add_argument(
        "--chunk-size", metavar="SIZE", help="a power of two (default 4MiB; clone: the source's)"
    )
    p.add_argument("--snapshot", metavar="SNAP", help="snapshot: the new snapshot's name")
    p.add_argument(
        "--from", dest="source", metavar="SOURCE", help="clone: a volume name, or snapshot:SNAP"
    )
    p.add_argument("--json", action="store_true")
    access_flags(p)
    p.set_defaults(handler=cmd_volume)


def cmd_volume(args: argparse.Namespace) -> int:
    import trio

    from storaged.config import ConfigError, parse_size
    from storaged.rpc import RpcClient, auth

    try:
        meta, secret_file = meta_access(args)
        secret = auth.load_secret(secret_file)
        if args.action not in ("list", "snapshots") and not args.name:
            raise ConfigError(f"'shoal volume {args.action}' needs a NAME")
        if args.action in ("create", "resize") and not args.capacity:
            raise ConfigError(f"'shoal volume {args.action}' needs --capacity SIZE")
        if args.action == "snapshot" and not args.snapshot:
            raise ConfigError("'shoal volume snapshot VOLUME' needs --snapshot NAME")
        if args.action == "clone" and not args.source:
            raise ConfigError(
                "'shoal volume clone NEW' needs --from VOLUME or --from snapshot:NAME"
            )
        capacity = parse_size(args.capacity) if args.capacity else None
        chunk_size = parse_size(args.chunk_size) if args.chunk_size else None
    except (FileNotFoundError, ConfigError, ValueError) as exc:
        print(f"shoal volume: {exc}", file=sys.stderr)
        return EXIT_USAGE

    async def clone(client: MetaClient) -> Any:
        kind, _, name = args.source.rpartition(":")
        if kind not in ("", "volume", "snapshot"):
            raise ValueError(f"--from {args.source!r}: a volume name or snapshot:NAME")
        origin = await (
            client.snapshot_get(name) if kind == "snapshot" else client.volume_get(name)
        )
        return await client.volume_create(
            args.name,
            capacity or origin["capacity"],
            args.replicas or origin["replicas"],
            chunk_size or origin["chunk_size"],
            {"created_by": "shoal volume clone"},
            f"{kind or 'volume'}:{name}",
        )

    async def act(client: MetaClient) -> Any:
        if args.action == "clone":
            return await clone(client)
        if args.action == "create":
            assert capacity is not None
            return await client.volume_create(
                args.name, capacity, args.replicas or 2, chunk_size or 4 << 20
            )
        if args.action == "list":
            return await client.volume_list()
        if args.action == "show":
            return await client.volume_get(args.name)
        if args.action == "resize":
            assert capacity is not None
            return await client.volume_resize(args.name, capacity)
        if args.action == "delete":
            return await client.volume_delete(args.name)
        if args.action == "snapshot":
            return await client.snapshot_create(args.snapshot, args.name)
        if args.action == "snapshots":
            return await client.snapshot_list()
        return await client.snapshot_delete(args.name)  # delete-snapshot

    async def go() -> Any:
        async with RpcClient(secret) as client:
            return await act(MetaClient(client, meta))

    try:
        result = trio.run(go)
    except RpcError as exc:
        print(f"shoal volume {args.action}: {exc.message} ({exc.code})", file=sys.stderr)
        return EXIT_FAILURE
    except ValueError as exc:
        print(f"shoal volume {args.action}: {exc}", file=sys.stderr)
        return EXIT_USAGE
    if args.json or args.action in ("create", "show", "resize", "snapshot", "clone"):
        print(json.dumps(result, indent=2))
    elif args.action in ("list", "snapshots"):
        print(
            f"{'NAME':<24} {'CAPACITY':>10} {'USED':>10} {'R':>2} {'CHUNK':>8} "
            f"{'INODES':>8}  {'FROM' if args.action == 'snapshots' else ''}"
        )
        for v in result:
            print(
                f"{v['name']:<24} {display.size(v['capacity']):>10} "
                f"{display.size(v['used_bytes']):>10} {v['replicas']:>2} "
                f"{display.size(v['chunk_size']):>8} {v['used_inodes']:>8}  "
                f"{v.get('source', '') if args.action == 'snapshots' else ''}"
            )
    else:
        what = "snapshot" if args.action == "delete-snapshot" else "volume"
        print("deleted" if result else f"no {what} named {args.name}")
    return EXIT_OK
