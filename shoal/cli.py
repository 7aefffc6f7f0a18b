"""``shoal``: the command line of shoalfs: the top-level parser and the dispatch. Each
command lives in ``shoal/commands/`` with its parser, by theme: ``serving`` (daemons,
mounts, the CSI driver), ``lab`` (``up``/``down``), ``volumes``, ``care`` (status, scrub,
fsck, repair, gc, node) and ``keys`` (secret, TLS, meta backups).

Exit codes (stable, for scripts):
    0  done, and the cluster is healthy where that was checked
    1  the operation failed (the message says why)
    2  wrong usage or configuration (the message says what to change)
    3  the operation worked but the cluster is not healthy (a server is down)
"""

from __future__ import annotations

import argparse
import os
import sys

from .commands import care, keys, lab, serving, volumes
from .commands.common import EPILOG, EXIT_FAILURE, EXIT_OK, EXIT_USAGE

DESCRIPTION = """\
shoalfs: replicated storage for self-hosted Kubernetes.

Start a local lab cluster with a mounted volume with 'shoal up', check it with
'shoal status', stop it with 'shoal down'. 'shoal storaged' runs one daemon (what 'shoal up' and the Kubernetes
manifests start). Run 'shoal COMMAND --help' for each command's options.
"""


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="shoal",
        description=DESCRIPTION,
        epilog=EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    serving.add_storaged(sub)
    lab.add_up(sub)
    lab.add_down(sub)
    serving.add_mount(sub)
    serving.add_umount(sub)
    volumes.add_volume(sub)
    serving.add_csi(sub)
    care.add_gc(sub)
    care.add_repair(sub)
    care.add_node(sub)
    care.add_fsck(sub)
    keys.add_meta(sub)
    serving.add_mounter(sub)
    care.add_status(sub)
    care.add_scrub(sub)
    keys.add_secret(sub)
    keys.add_tls(sub)
    sub.add_parser("version", help="print the version").set_defaults(handler=cmd_version)
    for command in sub.choices.values():
        command.add_argument(
            "--tls-dir",
            metavar="DIR",
            help="turn TLS on for every TCP connection, with DIR/ca.pem, cert.pem and key.pem "
            "(default $SHOAL_TLS_DIR; off when neither is set; see 'shoal tls --help')",
        )
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    handler = args.handler
    if args.command != "tls":
        from storaged.rpc import tls

        try:
            tls.configure(args.tls_dir)
        except tls.TlsConfigError as exc:
            print(f"shoal {args.command}: {exc}", file=sys.stderr)
            return EXIT_USAGE
    if args.command not in ("storaged", "csi", "mounter") and not getattr(
        args, "foreground", False
    ):
        from storaged.rpc import requestid

        requestid.begin("cli")  # the servers' log lines for what this command asked carry it
    try:
        return int(handler(args))
    except KeyboardInterrupt:
        return EXIT_FAILURE
    except BrokenPipeError:
        # 'shoal status | head': the reader has gone, which is no error of ours. Point
        # stdout at /dev/null so the interpreter's final flush raises nothing either.
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return EXIT_FAILURE


def cmd_version(args: argparse.Namespace) -> int:
    from storaged import __version__

    print(f"shoalfs {__version__}")
    return EXIT_OK


if __name__ == "__main__":
    sys.exit(main())
