"""The processes: a storage daemon (``shoal storaged``), a mount (``shoal mount``,
``shoal umount``), the CSI driver and the node's mounter; each runs in the foreground
until stopped, or starts one in the background.

Each command: ``add_NAME(sub)`` declares its parser (``shoal/cli.py`` calls them in the
order ``shoal --help`` lists them) and ``cmd_NAME(args)`` runs it."""

from __future__ import annotations

import argparse
import logging
import os
import sys
from pathlib import Path
from typing import Any

from csi import DEFAULT_INSTALLATION

from .common import (
    EPILOG,
    EXIT_FAILURE,
    EXIT_OK,
    EXIT_USAGE,
    access_flags,
    log_flags,
    meta_access,
    mount_memory_args,
    mount_memory_flags,
)


def add_storaged(sub: Any) -> None:
    from storaged import command  # the flags come from StoragedConfig (storaged/command.py)

    p = sub.add_parser(
        "storaged",
        help="run a storage daemon in the foreground",
        description=command.DESCRIPTION,
        epilog=EPILOG,
    )
    command.add_flags(p)
    p.set_defaults(handler=cmd_storaged)


def cmd_storaged(args: argparse.Namespace) -> int:
    from storaged import command

    return command.run(args)


def add_mount(sub: Any) -> None:
    from fusefs import command  # the flags come from MountOptions (fusefs/command.py)

    p = sub.add_parser(
        "mount",
        help="mount a volume",
        description="Mount VOLUME at MOUNTPOINT. By default the mount runs as a background "
        "process and this command returns once the mount is ready; with "
        "--foreground it runs here, logging to stderr, until unmounted or sent "
        "SIGTERM (which flushes open files, then unmounts).",
        epilog=EPILOG,
    )
    p.add_argument("volume")
    p.add_argument("mountpoint")
    access_flags(p)
    p.add_argument("--foreground", action="store_true", help="run in this process")
    p.add_argument(
        "--log-file",
        type=Path,
        metavar="FILE",
        help="background mode: where the mount process logs "
        "(default /var/log/shoalfs-mount-VOLUME.log or /tmp/...)",
    )
    command.add_flags(p)
    log_flags(p)
    p.set_defaults(handler=cmd_mount)


def cmd_mount(args: argparse.Namespace) -> int:
    from fusefs import command
    from storaged.config import ConfigError

    try:
        meta, secret_file = meta_access(args)
        options = command.options(args, meta, secret_file)  # (a bad size: a usage error now)
    except (FileNotFoundError, ConfigError) as exc:
        print(f"shoal mount: {exc}", file=sys.stderr)
        return EXIT_USAGE
    if args.foreground:
        return command.run(options, args.log_level, args.log_format)
    from fusefs.launch import mount_background

    log_dir = Path("/var/log") if os.access("/var/log", os.W_OK) else Path("/tmp")
    log_path = args.log_file or log_dir / f"shoalfs-mount-{args.volume}.log"
    try:
        pid = mount_background(
            args.volume,
            args.mountpoint,
            meta,
            secret_file,
            log_path,
            [
                *command.passed_on(args),
                "--log-level",
                args.log_level,
                "--log-format",
                args.log_format,
            ],
        )
    except RuntimeError as exc:
        print(f"shoal mount: {exc}", file=sys.stderr)
        return EXIT_FAILURE
    print(f"mounted volume {args.volume} at {args.mountpoint} (process {pid}, log {log_path})")
    return EXIT_OK


def add_umount(sub: Any) -> None:
    p = sub.add_parser(
        "umount",
        help="unmount a volume",
        description="Unmount MOUNTPOINT. Fails while files are open there, "
        "unless --lazy (detach now, finish when they close).",
        epilog=EPILOG,
    )
    p.add_argument("mountpoint")
    p.add_argument("--lazy", action="store_true")
    p.set_defaults(handler=cmd_umount)


def cmd_umount(args: argparse.Namespace) -> int:
    from fusefs.unmounting import unmount

    try:
        if not unmount(os.path.realpath(args.mountpoint), lazy=args.lazy):
            print(f"shoal umount: nothing is mounted at {args.mountpoint}", file=sys.stderr)
            return EXIT_FAILURE
    except OSError as exc:
        print(f"shoal umount: {exc}", file=sys.stderr)
        return EXIT_FAILURE
    return EXIT_OK


def add_csi(sub: Any) -> None:
    p = sub.add_parser(
        "csi",
        help="run the CSI driver (controller, node plugin, or both)",
        description="Serve the Container Storage Interface on --endpoint: the controller "
        "(volumes, snapshots) in one Deployment, the node plugin (stage and "
        "publish) on every node. The node plugin starts one fusefs process per "
        "staged volume, apart from itself, so restarting the plugin never breaks "
        "mounted volumes. The cluster comes from --meta and --secret-file, or "
        "from --cluster (the cluster.json 'shoal up' writes).",
        epilog=EPILOG,
    )
    p.add_argument("--mode", choices=["controller", "node", "all"], required=True)
    p.add_argument(
        "--endpoint",
        default=os.environ.get("CSI_ENDPOINT", ""),
        metavar="unix:///PATH",
        help="where to listen: unix:///PATH or tcp://HOST:PORT (default: $CSI_ENDPOINT)",
    )
    p.add_argument(
        "--node-id",
        default="",
        metavar="ID",
        help="this node's id (node and all modes; Kubernetes: the node name)",
    )
    p.add_argument(
        "--state-dir",
        type=Path,
        default=Path("/var/lib/shoalfs-csi"),
        metavar="DIR",
        help="the node plugin's record of staged volumes, and mount logs "
        "(default /var/lib/shoalfs-csi; keep it on the host)",
    )
    mount_memory_flags(p, "the node plugin starts")
    p.add_argument(
        "--mounter",
        default="",
        metavar="unix:///PATH",
        help="node mode: ask this 'shoal mounter' to run the fusefs processes "
        "(Kubernetes); without it the plugin starts them itself",
    )
    p.add_argument("--workers", type=int, default=16, help="gRPC worker threads")
    p.add_argument(
        "--installation",
        default=DEFAULT_INSTALLATION,
        metavar="NAME",
        help="this installation's name: the value of the topology segment "
        "csi.shoalfs.dev/installation that every node plugin reports and "
        "every volume is accessible from; the same on the controller and "
        "every node, and never changed once nodes registered (Kubernetes: "
        "the namespace; default shoalfs)",
    )
    p.add_argument(
        "--metrics-listen",
        metavar="HOST:PORT",
        help="serve Prometheus /metrics (CSI calls by method and gRPC code, "
        "latency; in node mode without --mounter, also the metrics of every "
        "mount it runs, labelled by volume) and /healthz, /readyz here "
        "(default: off)",
    )
    p.add_argument("--ready-file", help=argparse.SUPPRESS)
    log_flags(p)
    access_flags(p)
    p.set_defaults(handler=cmd_csi)


def cmd_csi(args: argparse.Namespace) -> int:
    from csi.server import CsiOptions, run
    from storaged.config import ConfigError
    from storaged.logs import setup_logging

    try:
        if not args.endpoint:
            raise ConfigError("--endpoint (or $CSI_ENDPOINT) is required")
        if args.mode != "controller" and not args.node_id:
            raise ConfigError(f"--mode {args.mode} needs --node-id")
        meta, secret_file = meta_access(args)
        mount_args = mount_memory_args(args)
        options = CsiOptions(
            mode=args.mode,
            endpoint=args.endpoint,
            meta=meta,
            secret_file=secret_file,
            node_id=args.node_id,
            state_dir=args.state_dir,
            workers=args.workers,
            mount_args=mount_args,
            mounter=args.mounter,
            ready_file=args.ready_file or "",
            metrics_listen=args.metrics_listen or "",
            installation=args.installation,
        )
    except (FileNotFoundError, ConfigError, ValueError) as exc:
        print(f"shoal csi: {exc}", file=sys.stderr)
        return EXIT_USAGE
    setup_logging(args.log_level, args.log_format)
    try:
        run(options)
    except (ValueError, OSError, RuntimeError) as exc:
        logging.getLogger("csi").error("cannot start: %s", exc)
        return EXIT_FAILURE
    return EXIT_OK


def add_mounter(sub: Any) -> None:
    p = sub.add_parser(
        "mounter",
        help="run a node's fusefs processes for the CSI node plugin",
        description="Listen on --socket for the CSI node plugin's requests to mount volumes, "
        "and run those fusefs processes. In Kubernetes it is its own DaemonSet, "
        "so restarting or upgrading the node plugin never touches a mount.",
        epilog=EPILOG,
    )
    p.add_argument(
        "--socket",
        required=True,
        metavar="PATH",
        help="unix socket path the node plugin connects to",
    )
    p.add_argument(
        "--log-dir",
        type=Path,
        default=Path("/var/lib/shoalfs-csi/logs"),
        metavar="DIR",
        help="one log per mounted volume (default /var/lib/shoalfs-csi/logs)",
    )
    mount_memory_flags(p, "this mounter runs")
    p.add_argument(
        "--metrics-listen",
        metavar="HOST:PORT",
        help="serve Prometheus /metrics here: this process's own and those of "
        "every mount it runs (each labelled with its volume and mountpoint, "
        "plus shoalfs_mount_up), and /healthz, /readyz (default: off)",
    )
    log_flags(p)
    access_flags(p)
    p.set_defaults(handler=cmd_mounter)


def cmd_mounter(args: argparse.Namespace) -> int:
    from csi.mounter import run
    from storaged.config import ConfigError
    from storaged.logs import setup_logging

    try:
        meta, secret_file = meta_access(args)
        mount_args = mount_memory_args(args)
    except (FileNotFoundError, ConfigError, ValueError) as exc:
        print(f"shoal mounter: {exc}", file=sys.stderr)
        return EXIT_USAGE
    setup_logging(args.log_level, args.log_format)
    try:
        run(args.socket, secret_file, meta, args.log_dir, mount_args, args.metrics_listen or "")
    except (ValueError, OSError, RuntimeError) as exc:
        logging.getLogger("csi.mounter").error("cannot start: %s", exc)
        return EXIT_FAILURE
    return EXIT_OK
