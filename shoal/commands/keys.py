"""Keys and backups: the cluster secret (``shoal secret``), TLS certificates
(``shoal tls``), and the meta database's backup and restore (``shoal meta``).

Each command: ``add_NAME(sub)`` declares its parser (``shoal/cli.py`` calls them in the
order ``shoal --help`` lists them) and ``cmd_NAME(args)`` runs it."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any

from storaged.rpc import RpcError

from .common import EPILOG, EXIT_FAILURE, EXIT_OK, EXIT_USAGE, access_flags, meta_access


def add_meta(sub: Any) -> None:
    p = sub.add_parser(
        "meta",
        help="back up or restore the meta role's database",
        description="'shoal meta backup FILE' writes a consistent copy of the running meta "
        "role's database to FILE (the meta role keeps serving). 'shoal meta "
        "restore FILE --meta-db PATH' puts a backup in place of a stopped meta "
        "role's database (stop it first; start it again after).",
        epilog=EPILOG,
    )
    p.add_argument("action", choices=["backup", "restore"])
    p.add_argument("file", type=Path)
    p.add_argument(
        "--meta-db",
        type=Path,
        metavar="PATH",
        help="restore: the database file the meta role uses (its --meta-db)",
    )
    access_flags(p)
    p.set_defaults(handler=cmd_meta)


def cmd_meta(args: argparse.Namespace) -> int:
    from ..metabackup import backup, restore

    try:
        if args.action == "restore":
            if args.meta_db is None:
                print("shoal meta restore: --meta-db PATH is required", file=sys.stderr)
                return EXIT_USAGE
            print(restore(args.file, args.meta_db))
            return EXIT_OK
        meta, secret_file = meta_access(args)
        print(backup(meta, secret_file, args.file))
        return EXIT_OK
    except FileNotFoundError as exc:
        print(f"shoal meta {args.action}: {exc}", file=sys.stderr)
        return EXIT_USAGE
    except (RpcError, RuntimeError, OSError, ValueError) as exc:
        print(f"shoal meta {args.action}: {exc}", file=sys.stderr)
        return EXIT_FAILURE


def add_secret(sub: Any) -> None:
    p = sub.add_parser(
        "secret",
        help="manage cluster secrets",
        description="'shoal secret generate FILE' writes a new random cluster "
        "secret to FILE with mode 600 (refuses to overwrite). "
        "'shoal secret kubernetes' (run in a pod) creates the "
        "Kubernetes Secret --name in --namespace with a new random "
        "secret under the key 'secret', unless it exists.",
        epilog=EPILOG,
    )
    p.add_argument("action", choices=["generate", "kubernetes"])
    p.add_argument("file", type=Path, nargs="?", help="generate: where to write the secret")
    p.add_argument("--name", default="shoalfs-secret", help="kubernetes: the Secret's name")
    p.add_argument(
        "--namespace", default="", help="kubernetes: its namespace (default: the pod's own)"
    )
    p.add_argument(
        "--api-server",
        default="",
        metavar="URL",
        help="kubernetes: the API server (default: the in-cluster address)",
    )
    p.add_argument(
        "--token-file",
        default="",
        metavar="FILE",
        help="kubernetes: bearer token (default: the pod's service account)",
    )
    p.set_defaults(handler=cmd_secret)


def cmd_secret(args: argparse.Namespace) -> int:
    from storaged.rpc import auth

    if args.action == "kubernetes":
        return _secret_kubernetes(args)
    if args.file is None:
        print("shoal secret generate: give the FILE to write", file=sys.stderr)
        return EXIT_USAGE
    try:
        auth.write_secret_file(args.file)
    except FileExistsError:
        print(
            f"shoal secret: {args.file} exists; not overwriting a cluster secret", file=sys.stderr
        )
        return EXIT_FAILURE
    print(f"wrote a new cluster secret to {args.file}")
    return EXIT_OK


def _secret_kubernetes(args: argparse.Namespace) -> int:
    from ..k8ssecret import SERVICE_ACCOUNT, default_api_server, ensure_secret

    try:
        api = args.api_server or default_api_server()
        token = Path(args.token_file or SERVICE_ACCOUNT / "token").read_text().strip()
        namespace = args.namespace or (SERVICE_ACCOUNT / "namespace").read_text().strip()
        ca = SERVICE_ACCOUNT / "ca.crt"
        created = ensure_secret(args.name, namespace, api, token, str(ca) if ca.exists() else None)
    except (OSError, RuntimeError) as exc:
        print(f"shoal secret kubernetes: {exc}", file=sys.stderr)
        return EXIT_FAILURE
    print(f"Secret {namespace}/{args.name} " + ("created" if created else "exists; left as it is"))
    return EXIT_OK


def add_tls(sub: Any) -> None:
    p = sub.add_parser(
        "tls",
        help="make the certificates that turn TLS on",
        description="'shoal tls generate DIR' writes a new private CA "
        "(ca.pem), a certificate it signed (cert.pem) and that "
        "certificate's key (key.pem, mode 600) into DIR; the CA's "
        "own key is not kept. Give DIR to every process of the "
        "cluster with --tls-dir (or SHOAL_TLS_DIR): all TCP "
        "connections between them are then encrypted and "
        "mutually verified against ca.pem. Your own CA and per-node "
        "certificates work too, in the same three files.",
        epilog=EPILOG,
    )
    p.add_argument("action", choices=["generate"])
    p.add_argument("directory", type=Path, help="where to write the three files")
    p.add_argument("--days", type=int, default=3650, help="validity (default 3650)")
    p.set_defaults(handler=cmd_tls)


def cmd_tls(args: argparse.Namespace) -> int:
    from ..tlsgen import generate

    try:
        written = generate(args.directory, args.days)
    except (FileExistsError, OSError) as exc:
        print(f"shoal tls: {exc}", file=sys.stderr)
        return EXIT_FAILURE
    print(f"wrote {', '.join(str(p) for p in written)}")
    print(f"turn TLS on with: --tls-dir {args.directory} (or SHOAL_TLS_DIR={args.directory})")
    return EXIT_OK
