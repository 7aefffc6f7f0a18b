"""The storaged command: its flags, made from StoragedConfig's fields, and running it.

``shoal storaged`` and ``python -m storaged`` are the same command. Its flags used to be
declared in the shoal CLI beside the fields of StoragedConfig, each setting twice (a
default here, a help text and a "(default ...)" there, drifting apart); now each field
says its help and how its flag is read (``config.setting``), and this module makes the
flags from them, so the daemon's own entry point needs nothing of the CLI above it.
"""

from __future__ import annotations

import argparse
import logging
import sys

from . import settings
from .config import ConfigError, StoragedConfig, load_config

DESCRIPTION = (
    "Run a storage daemon (chunk role) in the foreground, logging to stderr. "
    "Settings come from --config (TOML, a [storaged] table with the same names as "
    "these flags) and are overridden by flags. Stops cleanly on SIGTERM or SIGINT: "
    "requests in progress finish first."
)
TLS_HELP = (
    "turn TLS on for every TCP connection, with DIR/ca.pem, cert.pem and key.pem "
    "(default $SHOAL_TLS_DIR; off when neither is set; see 'shoal tls --help')"
)
EXIT_OK, EXIT_FAILURE, EXIT_USAGE = 0, 1, 2


def add_flags(parser: argparse.ArgumentParser) -> None:
    """--config, then one flag per StoragedConfig field (storaged/settings.py)."""
    parser.add_argument("--config", metavar="FILE", help="TOML config file")
    settings.add_flags(parser, StoragedConfig)


def run(args: argparse.Namespace, prog: str = "shoal storaged") -> int:
    """Load the settings (defaults, then --config, then the flags given) and run the
    daemon until it is stopped; the exit code."""
    from . import daemon
    from .logs import setup_logging

    flags = settings.given(args, StoragedConfig)
    try:
        config = load_config(args.config, flags)
    except ConfigError as exc:
        print(f"{prog}: {exc}", file=sys.stderr)
        return EXIT_USAGE
    setup_logging(config.log_level, config.log_format)
    try:
        daemon.run(config)
    except (ValueError, RuntimeError, OSError) as exc:
        logging.getLogger("storaged").error("cannot start: %s", exc)
        return EXIT_FAILURE
    return EXIT_OK


def main(argv: list[str] | None = None) -> int:
    """``python -m storaged``: the same flags, and --tls-dir as every shoal command has."""
    from .rpc import tls

    parser = argparse.ArgumentParser(prog="python -m storaged", description=DESCRIPTION)
    add_flags(parser)
    parser.add_argument("--tls-dir", metavar="DIR", help=TLS_HELP)
    args = parser.parse_args(argv)
    try:
        tls.configure(args.tls_dir)
    except tls.TlsConfigError as exc:
        print(f"python -m storaged: {exc}", file=sys.stderr)
        return EXIT_USAGE
    try:
        return run(args, "python -m storaged")
    except KeyboardInterrupt:
        return EXIT_FAILURE
