"""The mount command: its flags, made from MountOptions' fields, and running a mount in the
foreground.

``python -m fusefs VOLUME MOUNTPOINT --meta ADDR --secret-file FILE [flags]`` is what
``shoal mount`` (in the background), the lab cluster and the CSI mounter start; ``shoal
mount --foreground`` runs the same. The flags are declared once, on MountOptions
(storaged/settings.py), so this entry point needs nothing of the CLI above it.
"""

from __future__ import annotations

import argparse
import logging
import sys
from typing import Any

from storaged import settings
from storaged.config import ConfigError, parse_size
from storaged.logs import FORMATS, LEVELS

from .mount import MountOptions

EXIT_OK, EXIT_FAILURE, EXIT_USAGE = 0, 1, 2


def add_flags(parser: argparse.ArgumentParser) -> None:
    """The mount's settings as flags; --ready-file (how a parent learns the mount is live)
    is for the programs that start mounts, not for people."""
    settings.add_flags(parser, MountOptions)
    parser.add_argument("--ready-file", help=argparse.SUPPRESS)


def options(args: argparse.Namespace, meta: str, secret_file: str) -> MountOptions:
    """The MountOptions the flags in ``args`` say (ConfigError for a bad size)."""
    values: dict[str, Any] = {}
    for f in settings.flagged(MountOptions):
        value = getattr(args, f.name, None)
        if value is not None:
            values[f.name] = parse_size(value) if f.metadata.get("kind") == "size" else value
    return MountOptions(
        volume=args.volume,
        mountpoint=args.mountpoint,
        meta=meta,
        secret_file=secret_file,
        ready_file=args.ready_file or "",
        **values,
    )


def passed_on(args: argparse.Namespace) -> list[str]:
    """The mount flags given in ``args``, as they came: for the mount process a command
    starts in the background (what was not given keeps MountOptions' default there too)."""
    out: list[str] = []
    for f in settings.flagged(MountOptions):
        value = getattr(args, f.name, None)
        if value is None:
            continue
        name = settings.flag_name(f)
        if f.metadata.get("kind") == "bool":  # --flag / --no-flag
            out.append(name if value else "--no-" + name[2:])
        else:
            out += [name, str(value)]
    return out


def run(mount_options: MountOptions, log_level: str, log_format: str) -> int:
    """Mount and serve until unmounted or SIGTERM; the exit code."""
    from storaged.logs import setup_logging
    from storaged.rpc import RpcError

    from .mount import run as serve

    setup_logging(log_level, log_format)
    try:
        serve(mount_options)
    except (RpcError, ValueError, RuntimeError, OSError) as exc:
        logging.getLogger("fusefs").error("cannot mount: %s", exc)
        return EXIT_FAILURE
    return EXIT_OK


def main(argv: list[str] | None = None) -> int:
    """``python -m fusefs``: mount in the foreground."""
    from storaged.rpc import tls

    parser = argparse.ArgumentParser(
        prog="python -m fusefs",
        description="Mount VOLUME at MOUNTPOINT in the foreground, "
        "logging to stderr, until unmounted or sent SIGTERM (which flushes open files, then "
        "unmounts). 'shoal mount' is the command for people.",
    )
    parser.add_argument("volume")
    parser.add_argument("mountpoint")
    parser.add_argument("--meta", required=True, metavar="ADDR", help="the meta role's address")
    parser.add_argument("--secret-file", required=True, metavar="FILE", help="the cluster secret")
    add_flags(parser)
    parser.add_argument("--log-level", choices=LEVELS, default="info")
    parser.add_argument("--log-format", choices=FORMATS, default="text")
    parser.add_argument(
        "--tls-dir",
        metavar="DIR",
        help="turn TLS on, with DIR/ca.pem, cert.pem and key.pem (default $SHOAL_TLS_DIR)",
    )
    args = parser.parse_args(argv)
    try:
        tls.configure(args.tls_dir)
        mount_options = options(args, args.meta, args.secret_file)
    except (tls.TlsConfigError, ConfigError) as exc:
        print(f"python -m fusefs: {exc}", file=sys.stderr)
        return EXIT_USAGE
    try:
        return run(mount_options, args.log_level, args.log_format)
    except KeyboardInterrupt:
        return EXIT_FAILURE
