"""``shoal``: the command line of shoalfs.

Exit codes (stable, for scripts):
    0  done, and the cluster is healthy where that was checked
    1  the operation failed (the message says why)
    2  wrong usage or configuration (the message says what to change)
    3  the operation worked but the cluster is not healthy (a server is down)
"""

from __future__ import annotations

import argparse
import functools
import json
import logging
import os
import sys
import time
from pathlib import Path
from collections.abc import Callable
from typing import Any

from csi import DEFAULT_INSTALLATION
from storaged.metaclient import MetaClient
from storaged.rpc import RpcError

from . import display

EXIT_OK, EXIT_FAILURE, EXIT_USAGE, EXIT_UNHEALTHY = 0, 1, 2, 3

DESCRIPTION = """\
shoalfs: replicated storage for self-hosted Kubernetes.

Start a local lab cluster with a mounted volume with 'shoal up', check it with
'shoal status', stop it with 'shoal down'. 'shoal storaged' runs one daemon (what 'shoal up' and the Kubernetes
manifests start). Run 'shoal COMMAND --help' for each command's options.
"""

EPILOG = "exit codes: 0 ok, 1 failed, 2 bad usage or config, 3 cluster unhealthy"


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="shoal", description=DESCRIPTION, epilog=EPILOG,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)

    p = sub.add_parser(
        "storaged", help="run a storage daemon in the foreground",
        description="Run a storage daemon (chunk role) in the foreground, logging to stderr. "
                    "Settings come from --config (TOML, a [storaged] table with the same names "
                    "as these flags) and are overridden by flags. Stops cleanly on SIGTERM or "
                    "SIGINT: requests in progress finish first.", epilog=EPILOG)
    p.add_argument("--config", metavar="FILE", help="TOML config file")
    p.add_argument("--roles", metavar="ROLES",
                   help="chunk, meta, or chunk,meta (default chunk)")
    p.add_argument("--listen", action="append", metavar="ADDR",
                   help="tcp://HOST:PORT or unix:///PATH; repeat for several "
                        "(default tcp://127.0.0.1:7700; port 0 lets the kernel pick)")
    p.add_argument("--data-dir", metavar="DIR",
                   help="where chunks (and, by default, the meta database) are stored (required)")
    p.add_argument("--meta-db", metavar="FILE",
                   help="the meta role's SQLite database (default DATA_DIR/meta.db)")
    p.add_argument("--meta", metavar="ADDR",
                   help="the meta role's address: a chunk server sends it heartbeats")
    p.add_argument("--advertise", metavar="ADDR",
                   help="the address clients should use for this chunk server "
                        "(default: the first --listen address as bound)")
    p.add_argument("--heartbeat-interval", type=float, metavar="SECONDS",
                   help="seconds between heartbeats to the meta role (default 2)")
    p.add_argument("--heartbeat-timeout", type=float, metavar="SECONDS",
                   help="meta role: a chunk server silent this long is down (default 10)")
    p.add_argument("--session-timeout", type=float, metavar="SECONDS",
                   help="meta role: a mount silent this long has crashed; its open files are "
                        "released (default 60)")
    p.add_argument("--gc-interval", type=float, metavar="SECONDS",
                   help="meta role: seconds between garbage collection passes (default 3600; "
                        "0: only when 'shoal gc' asks)")
    p.add_argument("--gc-grace", type=float, metavar="SECONDS",
                   help="meta role: unreferenced chunks younger than this are kept "
                        "(default 3600, at least 10)")
    p.add_argument("--repair-interval", type=float, metavar="SECONDS",
                   help="meta role: seconds between repair passes (default 600; 0: only when "
                        "'shoal repair --now' asks)")
    p.add_argument("--repair-down-grace", type=float, metavar="SECONDS",
                   help="meta role: a server down this long no longer counts as holding its "
                        "copies; repair copies them elsewhere (default 900)")
    p.add_argument("--rebalance", action=argparse.BooleanOptionalAction, default=None,
                   help="meta role: let repair passes also move chunks to where placement "
                        "puts them now, e.g. onto a new server (default on)")
    p.add_argument("--rebalance-min-age", type=float, metavar="SECONDS",
                   help="meta role: rebalancing never removes a copy younger than this "
                        "(default 600)")
    p.add_argument("--repair-rate", metavar="SIZE",
                   help="meta role: most bytes per second repair copies (default 50MiB; 0: "
                        "no limit)")
    p.add_argument("--scrub-rate", metavar="SIZE",
                   help="chunk role: bytes per second the scrubber re-reads and verifies "
                        "(default 20MiB; 0 turns scrubbing off)")
    p.add_argument("--scrub-interval", type=float, metavar="SECONDS",
                   help="chunk role: pause between full scrub passes (default 86400)")
    p.add_argument("--secret-file", metavar="FILE",
                   help="the cluster secret, mode 600 (required; see 'shoal secret generate')")
    p.add_argument("--capacity", metavar="SIZE",
                   help="most bytes chunks may use, e.g. 500GiB (default: the disk's size)")
    p.add_argument("--reserve", metavar="SIZE",
                   help="disk space always left free for the system (default 64MiB)")
    p.add_argument("--direct-io", action=argparse.BooleanOptionalAction, default=None,
                   help="chunk role: write chunks with O_DIRECT, past the page cache (default "
                        "on; falls back by itself where the filesystem refuses it)")
    p.add_argument("--zone", help="failure domain (rack, host) this server is in")
    p.add_argument("--address-file", metavar="FILE",
                   help="write the bound addresses here once listening (JSON)")
    p.add_argument("--max-frame", metavar="SIZE", help="largest message accepted (default 65MiB)")
    p.add_argument("--max-in-flight", type=int, metavar="N",
                   help="requests in flight per connection before BUSY (default 32)")
    p.add_argument("--max-connections", type=int, metavar="N",
                   help="authenticated connections served at once (default 256)")
    p.add_argument("--max-unauthenticated", type=int, metavar="N",
                   help="connections not yet authenticated (TLS handshake included) held at "
                        "once; past it new ones are closed at once (default 64)")
    p.add_argument("--max-unauthenticated-per-peer", type=int, metavar="N",
                   help="of those, from one TCP peer address (default 8)")
    p.add_argument("--handshake-timeout", type=float, metavar="SECONDS",
                   help="time a connection has to authenticate (default 10)")
    p.add_argument("--max-request-memory", metavar="SIZE",
                   help="bytes all requests in progress may hold together; past it the server "
                        "stops reading until some finish (default 512MiB)")
    p.add_argument("--log-level", choices=["debug", "info", "warning", "error"],
                   help="debug adds a line per RPC request; requests slower than 2 s are "
                        "logged at info (default info)")
    p.add_argument("--log-format", choices=["text", "json"],
                   help="text is key=value per line (default), json one object per line")
    p.add_argument("--metrics-listen", metavar="HOST:PORT",
                   help="serve Prometheus /metrics and the /healthz and /readyz probes over "
                        "HTTP here, e.g. 0.0.0.0:9180 (default: off; docs/operations.md)")

    p = sub.add_parser(
        "up", help="start a local cluster on loopback and mount a volume",
        description="Start a local cluster on 127.0.0.1 — a meta role, N chunk servers (each "
                    "with its own data directory and port) and a cluster secret, all under "
                    "--workdir — create the volume 'default' and mount it. Writes "
                    "WORKDIR/cluster.json describing it all. Running it again starts only what "
                    "is not running. Returns once the mount is ready.", epilog=EPILOG)
    _workdir_flag(p)
    p.add_argument("--mountpoint", type=Path, metavar="DIR",
                   help="where to mount the volume (default /mnt/shoalfs as root, else ~/shoalfs)")
    p.add_argument("--chunk-servers", type=int, default=3, metavar="N",
                   help="number of chunk servers (default 3)")
    p.add_argument("--replicas", type=int, default=2, metavar="R",
                   help="copies of each chunk, on distinct servers (default 2)")
    p.add_argument("--capacity", default="10GiB", metavar="SIZE",
                   help="the volume's quota, created only if it does not exist (default 10GiB)")
    p.add_argument("--chunk-size", default="4MiB", metavar="SIZE",
                   help="the volume's chunk size, a power of two (default 4MiB)")

    p = sub.add_parser("down", help="unmount and stop the local cluster (data is kept)",
                       description="Unmount the volume (open files are flushed first) and stop "
                                   "every process 'shoal up' started in --workdir. Data "
                                   "directories and the secret stay, so 'shoal up' brings the "
                                   "same data back.", epilog=EPILOG)
    _workdir_flag(p)

    p = sub.add_parser(
        "mount", help="mount a volume",
        description="Mount VOLUME at MOUNTPOINT. By default the mount runs as a background "
                    "process and this command returns once the mount is ready; with "
                    "--foreground it runs here, logging to stderr, until unmounted or sent "
                    "SIGTERM (which flushes open files, then unmounts).", epilog=EPILOG)
    p.add_argument("volume")
    p.add_argument("mountpoint")
    _access_flags(p)
    p.add_argument("--foreground", action="store_true", help="run in this process")
    p.add_argument("--log-file", type=Path, metavar="FILE",
                   help="background mode: where the mount process logs "
                        "(default /var/log/shoalfs-mount-VOLUME.log or /tmp/...)")
    p.add_argument("--cache-size", default="128MiB", metavar="SIZE",
                   help="memory for cached chunk contents (default 128MiB)")
    p.add_argument("--readahead", default="4MiB", metavar="SIZE",
                   help="the kernel's readahead window for sequential reads (default 4MiB; "
                        "0 keeps the kernel's 128KiB); needs root, else left as it is")
    p.add_argument("--entry-timeout", type=float, default=1.0, metavar="SECONDS",
                   help="how long the kernel may cache names when the meta role sends no "
                        "invalidations (default 1)")
    p.add_argument("--attr-timeout", type=float, default=1.0, metavar="SECONDS",
                   help="how long the kernel may cache attributes when the meta role sends "
                        "no invalidations (default 1)")
    p.add_argument("--cache-lease", type=float, default=30.0, metavar="SECONDS",
                   help="how long the kernel may cache names and attributes while the meta "
                        "role sends this mount an invalidation for every change made "
                        "elsewhere (default 30; 0: only the timeouts above)")
    p.add_argument("--max-unsaved", default="128MiB", metavar="SIZE",
                   help="memory for written data not yet stored, over all open files "
                        "(default 128MiB); a write beyond it waits for uploads")
    p.add_argument("--parallel-uploads", type=int, default=4, metavar="N",
                   help="pieces uploaded at once per mount (default 4); each holds a chunk "
                        "in memory")
    p.add_argument("--session-heartbeat", type=float, default=10.0, metavar="SECONDS",
                   help="how often the mount tells the meta role it is alive (default 10; "
                        "keep it well below the meta role's --session-timeout)")
    p.add_argument("--meta-wait", type=float, default=60.0, metavar="SECONDS",
                   help="how long a file operation waits for a meta role that does not "
                        "answer (a restart) before failing with EIO (default 60; 0: fail "
                        "at once)")
    p.add_argument("--metrics-listen", metavar="HOST:PORT",
                   help="serve Prometheus /metrics (FUSE operations by result, latency, "
                        "bytes, open files, memory) and /healthz, /readyz here (default: "
                        "off; docs/operations.md)")
    p.add_argument("--ready-file", help=argparse.SUPPRESS)
    _log_flags(p)

    p = sub.add_parser("umount", help="unmount a volume",
                       description="Unmount MOUNTPOINT. Fails while files are open there, "
                                   "unless --lazy (detach now, finish when they close).",
                       epilog=EPILOG)
    p.add_argument("mountpoint")
    p.add_argument("--lazy", action="store_true")

    p = sub.add_parser(
        "volume", help="create, list, show, resize, delete, snapshot and clone volumes",
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
        epilog=EPILOG, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("action", choices=["create", "list", "show", "resize", "delete", "snapshot",
                                      "snapshots", "delete-snapshot", "clone"])
    p.add_argument("name", nargs="?", help="the volume (or, for delete-snapshot, snapshot)")
    p.add_argument("--capacity", metavar="SIZE", help="quota, e.g. 10GiB")
    p.add_argument("--replicas", type=int, metavar="R",
                   help="copies of each chunk on distinct servers (default 2; clone: the "
                        "source's)")
    p.add_argument("--chunk-size", metavar="SIZE",
                   help="a power of two (default 4MiB; clone: the source's)")
    p.add_argument("--snapshot", metavar="SNAP", help="snapshot: the new snapshot's name")
    p.add_argument("--from", dest="source", metavar="SOURCE",
                   help="clone: a volume name, or snapshot:SNAP")
    p.add_argument("--json", action="store_true")
    _access_flags(p)

    p = sub.add_parser(
        "csi", help="run the CSI driver (controller, node plugin, or both)",
        description="Serve the Container Storage Interface on --endpoint: the controller "
                    "(volumes, snapshots) in one Deployment, the node plugin (stage and "
                    "publish) on every node. The node plugin starts one fusefs process per "
                    "staged volume, apart from itself, so restarting the plugin never breaks "
                    "mounted volumes. The cluster comes from --meta and --secret-file, or "
                    "from --cluster (the cluster.json 'shoal up' writes).", epilog=EPILOG)
    p.add_argument("--mode", choices=["controller", "node", "all"], required=True)
    p.add_argument("--endpoint", default=os.environ.get("CSI_ENDPOINT", ""),
                   metavar="unix:///PATH",
                   help="where to listen: unix:///PATH or tcp://HOST:PORT "
                        "(default: $CSI_ENDPOINT)")
    p.add_argument("--node-id", default="", metavar="ID",
                   help="this node's id (node and all modes; Kubernetes: the node name)")
    p.add_argument("--state-dir", type=Path, default=Path("/var/lib/shoalfs-csi"), metavar="DIR",
                   help="the node plugin's record of staged volumes, and mount logs "
                        "(default /var/lib/shoalfs-csi; keep it on the host)")
    _mount_memory_flags(p, "the node plugin starts")
    p.add_argument("--mounter", default="", metavar="unix:///PATH",
                   help="node mode: ask this 'shoal mounter' to run the fusefs processes "
                        "(Kubernetes); without it the plugin starts them itself")
    p.add_argument("--workers", type=int, default=16, help="gRPC worker threads")
    p.add_argument("--installation", default=DEFAULT_INSTALLATION, metavar="NAME",
                   help="this installation's name: the value of the topology segment "
                        "csi.shoalfs.dev/installation that every node plugin reports and "
                        "every volume is accessible from; the same on the controller and "
                        "every node, and never changed once nodes registered (Kubernetes: "
                        "the namespace; default shoalfs)")
    p.add_argument("--metrics-listen", metavar="HOST:PORT",
                   help="serve Prometheus /metrics (CSI calls by method and gRPC code, "
                        "latency; in node mode without --mounter, also the metrics of every "
                        "mount it runs, labelled by volume) and /healthz, /readyz here "
                        "(default: off)")
    p.add_argument("--ready-file", help=argparse.SUPPRESS)
    _log_flags(p)
    _access_flags(p)

    p = sub.add_parser(
        "gc", help="remove chunks that no file, snapshot or pending write references",
        description="One garbage collection pass now: list every live chunk server's "
                    "chunks, ask the meta role which are referenced by no volume, snapshot or "
                    "write in progress, and delete those last written more than --grace "
                    "seconds ago. The meta role also runs a pass every --gc-interval.",
        epilog=EPILOG)
    p.add_argument("--grace", type=float, default=3600.0, metavar="SECONDS",
                   help="keep unreferenced chunks younger than this (default 3600, min 10)")
    p.add_argument("--dry-run", action="store_true", help="count what would go; delete nothing")
    p.add_argument("--json", action="store_true")
    _access_flags(p)

    p = sub.add_parser(
        "repair", help="show repair progress, or run a repair pass now",
        description="Repair brings every referenced chunk back to its volume's replica count "
                    "(after a server has been down longer than the meta role's "
                    "--repair-down-grace, or a copy was found bad). Without --now: the state "
                    "of the last pass. With --now: start a pass and follow it to the end. "
                    "Exit code 3 when chunks are missing (no good copy on any live server).",
        epilog=EPILOG)
    p.add_argument("--now", action="store_true", help="run a pass now and wait for it")
    p.add_argument("--timeout", type=float, default=3600.0, metavar="SECONDS",
                   help="with --now: give up waiting after this long (default 3600)")
    p.add_argument("--json", action="store_true")
    _access_flags(p)

    p = sub.add_parser(
        "node", help="list chunk servers, drain one, or remove a drained one",
        description="'list': every chunk server the meta role knows, up or down, draining "
                    "or not. 'drain ID': stop new writes to the server and copy every chunk "
                    "it holds to others until each has its R copies elsewhere (waits, with "
                    "progress), then says whether it can be removed. 'undrain ID': take it "
                    "back into service. 'remove ID': forget a drained server after it was "
                    "stopped; refused while anything would be lost.", epilog=EPILOG)
    p.add_argument("action", choices=["list", "drain", "undrain", "remove"])
    p.add_argument("server", nargs="?", help="the server id (see 'shoal node list')")
    p.add_argument("--timeout", type=float, default=3600.0, metavar="SECONDS",
                   help="drain: give up waiting after this long (default 3600)")
    p.add_argument("--json", action="store_true")
    _access_flags(p)

    p = sub.add_parser(
        "fsck", help="check a volume's metadata, and that its chunks have copies",
        description="Check VOLUME: every entry names an existing inode, link counts match, "
                    "every file is reachable from the root, the cached usage is right, and "
                    "every chunk its files use has a copy on at least one live chunk server. "
                    "Read-only unless --repair. Exit code 3 when anything is wrong.",
        epilog=EPILOG)
    p.add_argument("volume")
    p.add_argument("--repair", action="store_true",
                   help="first mend values no mount can show (uid/gid outside 0..2^32-2 "
                        "become 65534, a mode without a valid file type gets the type the "
                        "inode has, device numbers and sizes out of range); other problems "
                        "are only reported")
    p.add_argument("--json", action="store_true")
    _access_flags(p)

    p = sub.add_parser(
        "meta", help="back up or restore the meta role's database",
        description="'shoal meta backup FILE' writes a consistent copy of the running meta "
                    "role's database to FILE (the meta role keeps serving). 'shoal meta "
                    "restore FILE --meta-db PATH' puts a backup in place of a stopped meta "
                    "role's database (stop it first; start it again after).", epilog=EPILOG)
    p.add_argument("action", choices=["backup", "restore"])
    p.add_argument("file", type=Path)
    p.add_argument("--meta-db", type=Path, metavar="PATH",
                   help="restore: the database file the meta role uses (its --meta-db)")
    _access_flags(p)

    p = sub.add_parser(
        "mounter", help="run a node's fusefs processes for the CSI node plugin",
        description="Listen on --socket for the CSI node plugin's requests to mount volumes, "
                    "and run those fusefs processes. In Kubernetes it is its own DaemonSet, "
                    "so restarting or upgrading the node plugin never touches a mount.",
        epilog=EPILOG)
    p.add_argument("--socket", required=True, metavar="PATH",
                   help="unix socket path the node plugin connects to")
    p.add_argument("--log-dir", type=Path, default=Path("/var/lib/shoalfs-csi/logs"),
                   metavar="DIR", help="one log per mounted volume (default "
                                       "/var/lib/shoalfs-csi/logs)")
    _mount_memory_flags(p, "this mounter runs")
    p.add_argument("--metrics-listen", metavar="HOST:PORT",
                   help="serve Prometheus /metrics here: this process's own and those of "
                        "every mount it runs (each labelled with its volume and mountpoint, "
                        "plus shoalfs_mount_up), and /healthz, /readyz (default: off)")
    _log_flags(p)
    _access_flags(p)

    p = sub.add_parser(
        "status", help="is my data safe? servers, volumes, repair and scrub at a glance",
        description="Ask the meta role for its map of the cluster: every chunk server (up or "
                    "down, zone, chunks, use, seconds since its last heartbeat, the "
                    "scrubber's progress), every volume and snapshot (capacity, use, R and "
                    "health: ok, degraded, under-replicated or missing — see "
                    "docs/operations.md), and the repair pass. Every server the map calls up "
                    "is also asked directly, so one that died a moment ago shows at once. "
                    "Exit code 3 when any data is at risk, with the reasons listed.",
        epilog=EPILOG)
    p.add_argument("--json", action="store_true",
                   help="print the whole report as JSON (the same verdict as the table)")
    _access_flags(p)

    p = sub.add_parser(
        "scrub", help="show each chunk server's scrubber, or scrub every disk now",
        description="Every chunk server re-reads and verifies its chunks in the background "
                    "(its --scrub-rate, a pass every --scrub-interval); a corrupted copy is "
                    "quarantined and repair replaces it. Without --now: where each scrubber "
                    "is. With --now: start a pass on every up server and wait for them all "
                    "(progress and ETA on a terminal; Ctrl-C stops waiting, not the passes). "
                    "Exit code 3 when the passes this started found corrupted chunks.",
        epilog=EPILOG)
    p.add_argument("--now", action="store_true", help="start a pass on every server and wait")
    p.add_argument("--timeout", type=float, metavar="SECONDS",
                   help="with --now: give up waiting after this long (default: no limit)")
    p.add_argument("--json", action="store_true")
    _access_flags(p)

    p = sub.add_parser("secret", help="manage cluster secrets",
                       description="'shoal secret generate FILE' writes a new random cluster "
                                   "secret to FILE with mode 600 (refuses to overwrite). "
                                   "'shoal secret kubernetes' (run in a pod) creates the "
                                   "Kubernetes Secret --name in --namespace with a new random "
                                   "secret under the key 'secret', unless it exists.",
                       epilog=EPILOG)
    p.add_argument("action", choices=["generate", "kubernetes"])
    p.add_argument("file", type=Path, nargs="?", help="generate: where to write the secret")
    p.add_argument("--name", default="shoalfs-secret", help="kubernetes: the Secret's name")
    p.add_argument("--namespace", default="", help="kubernetes: its namespace "
                                                   "(default: the pod's own)")
    p.add_argument("--api-server", default="", metavar="URL",
                   help="kubernetes: the API server (default: the in-cluster address)")
    p.add_argument("--token-file", default="", metavar="FILE",
                   help="kubernetes: bearer token (default: the pod's service account)")

    p = sub.add_parser("tls", help="make the certificates that turn TLS on",
                       description="'shoal tls generate DIR' writes a new private CA "
                                   "(ca.pem), a certificate it signed (cert.pem) and that "
                                   "certificate's key (key.pem, mode 600) into DIR; the CA's "
                                   "own key is not kept. Give DIR to every process of the "
                                   "cluster with --tls-dir (or SHOAL_TLS_DIR): all TCP "
                                   "connections between them are then encrypted and "
                                   "mutually verified against ca.pem. Your own CA and per-node "
                                   "certificates work too, in the same three files.",
                       epilog=EPILOG)
    p.add_argument("action", choices=["generate"])
    p.add_argument("directory", type=Path, help="where to write the three files")
    p.add_argument("--days", type=int, default=3650, help="validity (default 3650)")

    sub.add_parser("version", help="print the version")
    for command in sub.choices.values():
        command.add_argument(
            "--tls-dir", metavar="DIR",
            help="turn TLS on for every TCP connection, with DIR/ca.pem, cert.pem and key.pem "
                 "(default $SHOAL_TLS_DIR; off when neither is set; see 'shoal tls --help')")
    return parser


def _access_flags(p: argparse.ArgumentParser) -> None:
    p.add_argument("--cluster", metavar="FILE",
                   help="a cluster.json to take the meta address and secret from "
                        "(default: WORKDIR/cluster.json)")
    p.add_argument("--meta", metavar="ADDR", help="the meta role's address (with --secret-file)")
    p.add_argument("--secret-file", metavar="FILE", help="the cluster secret")
    _workdir_flag(p)


def _mount_memory_flags(p: argparse.ArgumentParser, whose: str) -> None:
    p.add_argument("--mount-cache-size", default="128MiB", metavar="SIZE",
                   help=f"chunk cache of each fusefs process {whose} (default 128MiB)")
    p.add_argument("--mount-max-unsaved", default="128MiB", metavar="SIZE",
                   help=f"memory for unsaved writes of each fusefs process {whose} "
                        "(default 128MiB)")


def _mount_memory_args(args: argparse.Namespace) -> list[str]:
    """The fusefs flags for --mount-cache-size and --mount-max-unsaved (checked here, so a
    bad size is a usage error of this command, not a failed mount later)."""
    from storaged.config import parse_size
    return ["--cache-size", str(parse_size(args.mount_cache_size)),
            "--max-unsaved", str(parse_size(args.mount_max_unsaved))]


def _access(args: argparse.Namespace) -> tuple[str, str]:
    """(meta address, secret file) from flags, or from a cluster.json."""
    from .clusterfile import FILENAME, ClusterFile
    if args.meta and args.secret_file:
        return args.meta, args.secret_file
    cluster = ClusterFile.load(Path(args.cluster) if args.cluster else args.workdir / FILENAME)
    if not cluster.meta:
        raise FileNotFoundError("the cluster file names no meta role")
    return args.meta or cluster.meta, args.secret_file or cluster.secret_file


def _with_meta_access(command: Callable[[argparse.Namespace, str, bytes], int]
                      ) -> Callable[[argparse.Namespace], int]:
    """For commands that talk to the meta role: resolve its address and the secret (flags
    or cluster.json) first, and turn a missing file or a bad secret into a usage error."""
    @functools.wraps(command)
    def wrapper(args: argparse.Namespace) -> int:
        from storaged.rpc import auth
        try:
            meta, secret_file = _access(args)
            secret = auth.load_secret(secret_file)
        except (FileNotFoundError, ValueError) as exc:
            print(f"shoal {args.command}: {exc}", file=sys.stderr)
            return EXIT_USAGE
        return command(args, meta, secret)
    return wrapper


def _log_flags(p: argparse.ArgumentParser) -> None:
    p.add_argument("--log-level", choices=["debug", "info", "warning", "error"], default="info",
                   help="debug adds a line per RPC request (default info)")
    p.add_argument("--log-format", choices=["text", "json"], default="text",
                   help="text is key=value per line (default), json one object per line; "
                        "either way a line carries the request id (rid) it belongs to")


def _workdir_flag(p: argparse.ArgumentParser) -> None:
    from .cluster import default_workdir
    p.add_argument("--workdir", type=Path, default=default_workdir(), metavar="DIR",
                   help="where the cluster's data, logs and cluster.json live "
                        f"(default {default_workdir()})")


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    handler = globals()[f"cmd_{args.command}"]
    if args.command != "tls":
        from storaged.rpc import tls
        try:
            if args.tls_dir:
                tls.enable(args.tls_dir)
            else:
                tls.active()  # a bad $SHOAL_TLS_DIR is a usage error now, not a hang later
        except tls.TlsConfigError as exc:
            print(f"shoal {args.command}: {exc}", file=sys.stderr)
            return EXIT_USAGE
    if args.command not in ("storaged", "csi", "mounter") and not getattr(args, "foreground", False):
        from storaged.rpc import requestid
        requestid.begin("cli")   # the servers' log lines for what this command asked carry it
    try:
        return int(handler(args))
    except KeyboardInterrupt:
        return EXIT_FAILURE
    except BrokenPipeError:
        # 'shoal status | head': the reader has gone, which is no error of ours. Point
        # stdout at /dev/null so the interpreter's final flush raises nothing either.
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return EXIT_FAILURE


def cmd_storaged(args: argparse.Namespace) -> int:
    from storaged import daemon
    from storaged.config import ConfigError, load_config
    from storaged.logs import setup_logging

    flags = {k: v for k, v in vars(args).items() if k not in ("command", "config", "tls_dir")}
    try:
        config = load_config(args.config, flags)
    except ConfigError as exc:
        print(f"shoal storaged: {exc}", file=sys.stderr)
        return EXIT_USAGE
    setup_logging(config.log_level, config.log_format)
    try:
        daemon.run(config)
    except (ValueError, RuntimeError, OSError) as exc:
        logging.getLogger("storaged").error("cannot start: %s", exc)
        return EXIT_FAILURE
    return EXIT_OK


def cmd_up(args: argparse.Namespace) -> int:
    from storaged.config import ConfigError, parse_size

    from . import cluster as local

    if args.chunk_servers < 1 or not 1 <= args.replicas <= args.chunk_servers:
        print("shoal up: need --chunk-servers >= 1 and 1 <= --replicas <= --chunk-servers",
              file=sys.stderr)
        return EXIT_USAGE
    try:
        options = local.UpOptions(workdir=args.workdir, chunk_servers=args.chunk_servers,
                                  replicas=args.replicas, mountpoint=args.mountpoint,
                                  capacity=parse_size(args.capacity),
                                  chunk_size=parse_size(args.chunk_size))
    except ConfigError as exc:
        print(f"shoal up: {exc}", file=sys.stderr)
        return EXIT_USAGE
    try:
        described = local.up(options)
    except (RuntimeError, OSError, ValueError, RpcError) as exc:
        print(f"shoal up: {exc}", file=sys.stderr)
        return EXIT_FAILURE
    from . import status
    from storaged.rpc import auth

    print(f"cluster is up; described in {args.workdir / 'cluster.json'}")
    report = status.gather(described.meta, auth.load_secret(described.secret_file))
    print(status.render(report))
    print(f"volume '{described.volume}' is mounted at {described.mountpoint}")
    return EXIT_OK if report["healthy"] else EXIT_UNHEALTHY


def cmd_down(args: argparse.Namespace) -> int:
    from . import cluster as local

    try:
        stopped = local.down(args.workdir)
    except (FileNotFoundError, RuntimeError) as exc:
        print(f"shoal down: {exc}", file=sys.stderr)
        return EXIT_FAILURE
    print(f"stopped: {', '.join(stopped) or 'nothing was running'}; data kept in {args.workdir}")
    return EXIT_OK


@_with_meta_access
def cmd_status(args: argparse.Namespace, meta: str, secret: bytes) -> int:
    from . import status

    try:
        report = status.gather(meta, secret)
    except RpcError as exc:
        print(f"shoal status: the meta role at {meta} does not answer: {exc}", file=sys.stderr)
        return EXIT_UNHEALTHY
    print(json.dumps(report, indent=2) if args.json else status.render(report))
    return EXIT_OK if report["healthy"] else EXIT_UNHEALTHY


@_with_meta_access
def cmd_scrub(args: argparse.Namespace, meta: str, secret: bytes) -> int:
    from . import scrub

    progress = display.ProgressLine(enabled=not args.json)
    try:
        rows = scrub.run(meta, secret, now=args.now, timeout=args.timeout, progress=progress)
    except TimeoutError as exc:
        print(f"shoal scrub: {exc.args[0]}", file=sys.stderr)
        print(scrub.render(exc.args[1]))
        return EXIT_FAILURE
    except RpcError as exc:
        print(f"shoal scrub: {exc}", file=sys.stderr)
        return EXIT_FAILURE
    print(json.dumps(rows, indent=2) if args.json else scrub.render(rows))
    if any("error" in r for r in rows):
        return EXIT_FAILURE
    found = scrub.bad_found_now(rows)
    if found:
        print(f"shoal scrub: {found} corrupted chunks found and quarantined; repair replaces "
              "them from good copies ('shoal repair' shows it)", file=sys.stderr)
        return EXIT_UNHEALTHY
    return EXIT_OK


def cmd_mount(args: argparse.Namespace) -> int:
    from storaged.config import ConfigError, parse_size
    from storaged.logs import setup_logging

    try:
        meta, secret_file = _access(args)
        cache = parse_size(args.cache_size)
        max_unsaved = parse_size(args.max_unsaved)
        readahead = parse_size(args.readahead)
    except (FileNotFoundError, ConfigError) as exc:
        print(f"shoal mount: {exc}", file=sys.stderr)
        return EXIT_USAGE
    if args.foreground:
        from fusefs.mount import MountOptions, run
        setup_logging(args.log_level, args.log_format)
        try:
            run(MountOptions(volume=args.volume, mountpoint=args.mountpoint, meta=meta,
                             secret_file=secret_file, cache_bytes=cache,
                             max_unsaved_bytes=max_unsaved, readahead_bytes=readahead,
                             entry_timeout=args.entry_timeout, attr_timeout=args.attr_timeout,
                             cache_lease=args.cache_lease,
                             parallel_uploads=args.parallel_uploads,
                             session_heartbeat=args.session_heartbeat,
                             meta_wait=args.meta_wait,
                             metrics_listen=args.metrics_listen or "",
                             ready_file=args.ready_file or ""))
        except (RpcError, ValueError, RuntimeError, OSError) as exc:
            logging.getLogger("fusefs").error("cannot mount: %s", exc)
            return EXIT_FAILURE
        return EXIT_OK
    from fusefs.launch import mount_background
    log_dir = Path("/var/log") if os.access("/var/log", os.W_OK) else Path("/tmp")
    log_path = args.log_file or log_dir / f"shoalfs-mount-{args.volume}.log"
    try:
        pid = mount_background(args.volume, args.mountpoint, meta, secret_file, log_path,
                               ["--cache-size", args.cache_size,
                                "--max-unsaved", args.max_unsaved,
                                "--readahead", args.readahead,
                                "--entry-timeout", str(args.entry_timeout),
                                "--attr-timeout", str(args.attr_timeout),
                                "--cache-lease", str(args.cache_lease),
                                "--parallel-uploads", str(args.parallel_uploads),
                                "--session-heartbeat", str(args.session_heartbeat),
                                "--meta-wait", str(args.meta_wait),
                                "--log-level", args.log_level, "--log-format", args.log_format,
                                *(["--metrics-listen", args.metrics_listen]
                                  if args.metrics_listen else [])])
    except RuntimeError as exc:
        print(f"shoal mount: {exc}", file=sys.stderr)
        return EXIT_FAILURE
    print(f"mounted volume {args.volume} at {args.mountpoint} (process {pid}, log {log_path})")
    return EXIT_OK


def cmd_umount(args: argparse.Namespace) -> int:
    from fusefs.launch import unmount
    try:
        unmount(args.mountpoint, lazy=args.lazy)
    except RuntimeError as exc:
        print(f"shoal umount: {exc}", file=sys.stderr)
        return EXIT_FAILURE
    return EXIT_OK


def cmd_volume(args: argparse.Namespace) -> int:
    import trio

    from storaged.config import ConfigError, parse_size
    from storaged.rpc import RpcClient, auth

    try:
        meta, secret_file = _access(args)
        secret = auth.load_secret(secret_file)
        if args.action not in ("list", "snapshots") and not args.name:
            raise ConfigError(f"'shoal volume {args.action}' needs a NAME")
        if args.action in ("create", "resize") and not args.capacity:
            raise ConfigError(f"'shoal volume {args.action}' needs --capacity SIZE")
        if args.action == "snapshot" and not args.snapshot:
            raise ConfigError("'shoal volume snapshot VOLUME' needs --snapshot NAME")
        if args.action == "clone" and not args.source:
            raise ConfigError("'shoal volume clone NEW' needs --from VOLUME or "
                              "--from snapshot:NAME")
        capacity = parse_size(args.capacity) if args.capacity else None
        chunk_size = parse_size(args.chunk_size) if args.chunk_size else None
    except (FileNotFoundError, ConfigError, ValueError) as exc:
        print(f"shoal volume: {exc}", file=sys.stderr)
        return EXIT_USAGE

    async def clone(client: MetaClient) -> Any:
        kind, _, name = args.source.rpartition(":")
        if kind not in ("", "volume", "snapshot"):
            raise ValueError(f"--from {args.source!r}: a volume name or snapshot:NAME")
        origin = await (client.snapshot_get(name) if kind == "snapshot"
                        else client.volume_get(name))
        return await client.volume_create(
            args.name, capacity or origin["capacity"],
            args.replicas or origin["replicas"], chunk_size or origin["chunk_size"],
            {"created_by": "shoal volume clone"}, f"{kind or 'volume'}:{name}")

    async def act(client: MetaClient) -> Any:
        if args.action == "clone":
            return await clone(client)
        if args.action == "create":
            assert capacity is not None
            return await client.volume_create(args.name, capacity, args.replicas or 2,
                                              chunk_size or 4 << 20)
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
        return await client.snapshot_delete(args.name)   # delete-snapshot

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
        print(f"{'NAME':<24} {'CAPACITY':>10} {'USED':>10} {'R':>2} {'CHUNK':>8} "
              f"{'INODES':>8}  {'FROM' if args.action == 'snapshots' else ''}")
        for v in result:
            print(f"{v['name']:<24} {display.size(v['capacity']):>10} "
                  f"{display.size(v['used_bytes']):>10} {v['replicas']:>2} "
                  f"{display.size(v['chunk_size']):>8} {v['used_inodes']:>8}  "
                  f"{v.get('source', '') if args.action == 'snapshots' else ''}")
    else:
        what = "snapshot" if args.action == "delete-snapshot" else "volume"
        print("deleted" if result else f"no {what} named {args.name}")
    return EXIT_OK


def cmd_csi(args: argparse.Namespace) -> int:
    from csi.server import CsiOptions, run
    from storaged.config import ConfigError
    from storaged.logs import setup_logging

    try:
        if not args.endpoint:
            raise ConfigError("--endpoint (or $CSI_ENDPOINT) is required")
        if args.mode != "controller" and not args.node_id:
            raise ConfigError(f"--mode {args.mode} needs --node-id")
        meta, secret_file = _access(args)
        mount_args = _mount_memory_args(args)
        options = CsiOptions(mode=args.mode, endpoint=args.endpoint, meta=meta,
                             secret_file=secret_file, node_id=args.node_id,
                             state_dir=args.state_dir, workers=args.workers,
                             mount_args=mount_args,
                             mounter=args.mounter, ready_file=args.ready_file or "",
                             metrics_listen=args.metrics_listen or "",
                             installation=args.installation)
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


@_with_meta_access
def cmd_gc(args: argparse.Namespace, meta: str, secret: bytes) -> int:
    import trio

    from storaged.gc import MIN_GRACE, collect
    from storaged.rpc import RpcClient

    if args.grace < MIN_GRACE:
        print(f"shoal gc: --grace must be at least {MIN_GRACE:g} seconds", file=sys.stderr)
        return EXIT_USAGE

    async def go() -> Any:
        async with RpcClient(secret) as client:
            return await collect(MetaClient(client, meta), args.grace, dry_run=args.dry_run)
    try:
        report = trio.run(go)
    except RpcError as exc:
        print(f"shoal gc: {exc.message} ({exc.code})", file=sys.stderr)
        return EXIT_FAILURE
    if args.json:
        print(json.dumps(report.as_dict(), indent=2))
    else:
        verb = "would delete" if args.dry_run else "deleted"
        print(f"{report.servers} servers, {report.listed} chunks listed, {report.unreferenced} "
              f"unreferenced, {verb} {report.deleted} ({display.size(report.bytes_freed)}), kept "
              f"{report.kept_young} younger than {args.grace:g}s")
        for failure in report.failed_servers:
            print(f"  not finished: {failure}")
    return EXIT_FAILURE if report.failed_servers else EXIT_OK


@_with_meta_access
def cmd_repair(args: argparse.Namespace, meta: str, secret: bytes) -> int:
    import trio

    from storaged.rpc import RpcClient

    progress = display.ProgressLine(enabled=not args.json)

    async def go() -> dict[str, Any]:
        async with RpcClient(secret) as client:
            meta_client = MetaClient(client, meta)
            status = await meta_client.repair_status()
            if not args.now:
                return status
            before = status["passes"]
            await meta_client.repair_run()
            deadline = time.monotonic() + args.timeout
            while time.monotonic() < deadline:
                status = await meta_client.repair_status()
                if status["passes"] > before and not status["running"]:
                    return status
                if status["running"]:
                    progress.show(_repair_progress(status))
                await trio.sleep(0.5)
            raise TimeoutError(f"the pass did not finish within {args.timeout:g}s; "
                               "'shoal repair' shows where it is")
    try:
        status = trio.run(go)
    except (RpcError, TimeoutError) as exc:
        progress.done()
        print(f"shoal repair: {exc}", file=sys.stderr)
        return EXIT_FAILURE
    progress.done()
    if args.json:
        print(json.dumps(status, indent=2))
    else:
        print(_repair_progress(status))
        if status["missing"]:
            print(f"MISSING: {status['missing']} chunks have no good copy on any live server "
                  f"(e.g. {', '.join(c[:16] for c in status['missing_examples'][:3])}); "
                  "bring back the servers that were lost", file=sys.stderr)
        if status["last_error"]:
            print(f"last error: {status['last_error']}", file=sys.stderr)
    if status["missing"]:
        return EXIT_UNHEALTHY
    return EXIT_FAILURE if status["failed"] else EXIT_OK


def _repair_progress(s: dict[str, Any]) -> str:
    state = "running" if s["running"] else ("done" if s["passes"] else "no pass yet")
    eta = display.eta(s["checked"], s["total"], s["started"]) if s["running"] else ""
    return (f"repair {state}: checked {s['checked']}/{s['total']}, under-replicated "
            f"{s['under_replicated']}, repaired {s['repaired']} ({s['copies_made']} copies, "
            f"{display.size(s['bytes_copied'])}), missing {s['missing']}, failed {s['failed']}{eta}")


@_with_meta_access
def cmd_node(args: argparse.Namespace, meta: str, secret: bytes) -> int:
    import trio

    from storaged.repair import unsafe_to_remove
    from storaged.rpc import RpcClient

    if args.action != "list" and not args.server:
        print(f"shoal node {args.action}: give the server ID (see 'shoal node list')",
              file=sys.stderr)
        return EXIT_USAGE
    progress = display.ProgressLine(enabled=not args.json)

    async def drain(client: MetaClient) -> int:
        before = (await client.repair_status())["passes"]
        await client.cluster_drain(args.server, True)
        deadline = time.monotonic() + args.timeout
        while time.monotonic() < deadline:
            status = await client.repair_status()
            if status["passes"] > before and not status["running"]:
                unsafe = await unsafe_to_remove(client, args.server)
                if unsafe == 0:
                    return 0
                before = status["passes"]
                await client.repair_run()   # copies still missing: once more
            progress.show(f"draining: {_repair_progress(status)}")
            await trio.sleep(0.5)
        return await unsafe_to_remove(client, args.server)

    async def go() -> Any:
        async with RpcClient(secret) as rpc:
            client = MetaClient(rpc, meta)
            if args.action == "list":
                return await client.cluster_servers()
            if args.action == "undrain":
                return await client.cluster_drain(args.server, False)
            if args.action == "remove":
                unsafe = await unsafe_to_remove(client, args.server)
                if unsafe:
                    raise RuntimeError(f"{unsafe} chunks would lose copies; drain it first")
                return await client.cluster_remove(args.server)
            return await drain(client)
    try:
        result = trio.run(go)
    except (RpcError, RuntimeError) as exc:
        progress.done()
        print(f"shoal node {args.action}: {exc}", file=sys.stderr)
        return EXIT_FAILURE
    if args.action == "list":
        if args.json:
            print(json.dumps(result, indent=2))
        else:
            print(f"{'ID':<34} {'ADDRESS':<24} {'ZONE':<8} {'STATE':<9} {'USED':>10} "
                  f"{'FREE':>10} CHUNKS")
            for r in result:
                state = r["state"] + ("/drain" if r["draining"] else "")
                print(f"{r['id']:<34} {r['address']:<24} {r['zone'] or '-':<8} {state:<9} "
                      f"{display.size(r['used']):>10} {display.size(r['free']):>10} {r['chunks']}")
        return EXIT_OK
    if args.action == "drain":
        progress.done()
        if result:
            print(f"{args.server} is draining; {result} chunks still lack their copies "
                  "elsewhere (repair keeps working on it; run drain again to wait)")
            return EXIT_FAILURE
        print(f"{args.server} is drained: every chunk it holds has its copies elsewhere; stop "
              f"it, then 'shoal node remove {args.server}'")
        return EXIT_OK
    print(json.dumps(result, indent=2) if args.action == "undrain" else
          f"removed {args.server}" if result else f"no server {args.server}")
    return EXIT_OK


@_with_meta_access
def cmd_fsck(args: argparse.Namespace, meta: str, secret: bytes) -> int:
    import trio

    from storaged.data.placement import Server
    from storaged.repair import locations
    from storaged.rpc import RpcClient


    async def go() -> dict[str, Any]:
        async with RpcClient(secret) as client:
            meta_client = MetaClient(client, meta)
            repaired = (await meta_client.fsck_repair(args.volume))["repaired"] \
                if args.repair else []
            report = await meta_client.fsck_check(args.volume)
            report["repaired"] = repaired
            ids: list[str] = []
            while True:
                page = await meta_client.fsck_chunks(args.volume, ids[-1] if ids else None,
                                                     10_000)
                ids += page
                if len(page) < 10_000:
                    break
            live = [Server(r["id"], r["address"], r["zone"], r["capacity"], r["free"], True)
                    for r in await meta_client.cluster_servers() if r["state"] == "up"]
            holders = await locations(client, live)
            missing = [c for c in ids if not holders.get(c)]
            report["chunks"] = len(ids)
            report["chunks_without_copy"] = len(missing)
            report["problems"] += [f"chunk {c} has no copy on any live chunk server"
                                   for c in missing[:100]]
            return report
    try:
        report = trio.run(go)
    except RpcError as exc:
        print(f"shoal fsck: {exc.message} ({exc.code})", file=sys.stderr)
        return EXIT_FAILURE
    if args.json:
        print(json.dumps(report, indent=2))
    else:
        print(f"volume {report['volume']}: {report['inodes']} inodes, {report['entries']} entries, "
              f"{report['orphans']} open orphans, {report['chunks']} chunks "
              f"({report['chunks_without_copy']} without a copy)")
        for line in report["repaired"]:
            print(f"  REPAIRED: {line}")
        for problem in report["problems"]:
            print(f"  PROBLEM: {problem}")
        print("clean" if not report["problems"] else f"{len(report['problems'])} problems")
    return EXIT_UNHEALTHY if report["problems"] else EXIT_OK


def cmd_meta(args: argparse.Namespace) -> int:
    from .metabackup import backup, restore
    try:
        if args.action == "restore":
            if args.meta_db is None:
                print("shoal meta restore: --meta-db PATH is required", file=sys.stderr)
                return EXIT_USAGE
            print(restore(args.file, args.meta_db))
            return EXIT_OK
        meta, secret_file = _access(args)
        print(backup(meta, secret_file, args.file))
        return EXIT_OK
    except FileNotFoundError as exc:
        print(f"shoal meta {args.action}: {exc}", file=sys.stderr)
        return EXIT_USAGE
    except (RpcError, RuntimeError, OSError, ValueError) as exc:
        print(f"shoal meta {args.action}: {exc}", file=sys.stderr)
        return EXIT_FAILURE


def cmd_mounter(args: argparse.Namespace) -> int:
    from csi.mounter import run
    from storaged.config import ConfigError
    from storaged.logs import setup_logging

    try:
        meta, secret_file = _access(args)
        mount_args = _mount_memory_args(args)
    except (FileNotFoundError, ConfigError, ValueError) as exc:
        print(f"shoal mounter: {exc}", file=sys.stderr)
        return EXIT_USAGE
    setup_logging(args.log_level, args.log_format)
    try:
        run(args.socket, secret_file, meta, args.log_dir, mount_args,
            args.metrics_listen or "")
    except (ValueError, OSError, RuntimeError) as exc:
        logging.getLogger("csi.mounter").error("cannot start: %s", exc)
        return EXIT_FAILURE
    return EXIT_OK


def cmd_tls(args: argparse.Namespace) -> int:
    from .tlsgen import generate
    try:
        written = generate(args.directory, args.days)
    except (FileExistsError, OSError) as exc:
        print(f"shoal tls: {exc}", file=sys.stderr)
        return EXIT_FAILURE
    print(f"wrote {', '.join(str(p) for p in written)}")
    print(f"turn TLS on with: --tls-dir {args.directory} (or SHOAL_TLS_DIR={args.directory})")
    return EXIT_OK


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
        print(f"shoal secret: {args.file} exists; not overwriting a cluster secret", file=sys.stderr)
        return EXIT_FAILURE
    print(f"wrote a new cluster secret to {args.file}")
    return EXIT_OK


def _secret_kubernetes(args: argparse.Namespace) -> int:
    from .k8ssecret import SERVICE_ACCOUNT, default_api_server, ensure_secret
    try:
        api = args.api_server or default_api_server()
        token = Path(args.token_file or SERVICE_ACCOUNT / "token").read_text().strip()
        namespace = args.namespace or (SERVICE_ACCOUNT / "namespace").read_text().strip()
        ca = SERVICE_ACCOUNT / "ca.crt"
        created = ensure_secret(args.name, namespace, api, token,
                                str(ca) if ca.exists() else None)
    except (OSError, RuntimeError) as exc:
        print(f"shoal secret kubernetes: {exc}", file=sys.stderr)
        return EXIT_FAILURE
    print(f"Secret {namespace}/{args.name} " + ("created" if created else "exists; left as it is"))
    return EXIT_OK


def cmd_version(args: argparse.Namespace) -> int:
    from storaged import __version__
    print(f"shoalfs {__version__}")
    return EXIT_OK


if __name__ == "__main__":
    sys.exit(main())
