"""Running the CSI driver: one gRPC server (grpcio's thread pool) on a unix socket or TCP.

This process never mounts anything through FUSE itself: it starts fusefs processes for
NodeStageVolume and leaves them running on their own. Its only trio loop lives in the
meta client's thread.
"""

from __future__ import annotations

import logging
import os
import signal
import stat
import threading
from concurrent import futures
from dataclasses import dataclass, field
from pathlib import Path

import grpc

from protos import csi_pb2_grpc as pb_grpc
from storaged.metrics import parse_listen, serve_http
from storaged.rpc import auth

from . import DEFAULT_INSTALLATION
from .controller import ControllerServicer
from .identity import IdentityServicer
from .locks import NameLocks
from .mountmetrics import merged_registry
from .node import NodeConfig, NodeServicer
from .observe import REGISTRY, DriverHealth
from .rpcbridge import RpcBridge
from .spawner import LocalSpawner, RemoteSpawner

log = logging.getLogger("csi")

MODES = ("controller", "node", "all")


@dataclass
class CsiOptions:
    mode: str
    endpoint: str
    meta: str
    secret_file: str
    node_id: str = ""
    state_dir: Path = Path("/var/lib/shoalfs-csi")
    workers: int = 16
    mount_args: list[str] = field(default_factory=list)
    mounter: str = ""  # unix:///PATH of a 'shoal mounter'; '' = start mounts ourselves
    ready_file: str = ""
    metrics_listen: str = ""  # HOST:PORT for /metrics, /healthz, /readyz; "" is off
    installation: str = DEFAULT_INSTALLATION  # the topology segment (csi/__init__.py)


def grpc_address(endpoint: str) -> tuple[str, str]:
    """(address for grpcio, unix socket path or '') from unix:///PATH or tcp://HOST:PORT."""
    if endpoint.startswith("unix://"):
        path = endpoint[len("unix://") :]
        if not path.startswith("/"):
            raise ValueError(
                f"endpoint {endpoint!r}: the socket path must be absolute "
                "(unix:///run/csi/csi.sock)"
            )
        return f"unix://{path}", path
    if endpoint.startswith("tcp://"):
        return endpoint[len("tcp://") :], ""
    raise ValueError(f"endpoint {endpoint!r}: expected unix:///PATH or tcp://HOST:PORT")


def _clear_stale_socket(path: str) -> None:
    """A socket left by a killed server would make the bind fail: remove it, but only if
    it is a socket (never delete a file someone put there by mistake)."""
    try:
        if stat.S_ISSOCK(os.lstat(path).st_mode):
            os.unlink(path)
    except FileNotFoundError:
        pass
    Path(path).parent.mkdir(parents=True, exist_ok=True)


def build_server(options: CsiOptions, meta: RpcBridge) -> tuple[grpc.Server, LocalSpawner | None]:
    """The gRPC server, and the spawner when this process runs the node's mounts itself
    (its mounts' metrics are then served with ours)."""
    local: LocalSpawner | None = None
    if options.mode not in MODES:
        raise ValueError(f"--mode must be one of {', '.join(MODES)}")
    server = grpc.server(
        futures.ThreadPoolExecutor(max_workers=options.workers, thread_name_prefix="csi")
    )
    pb_grpc.add_IdentityServicer_to_server(IdentityServicer(meta, options.mode != "node"), server)
    # one operation at a time per volume in this process, whichever service is asked
    locks = NameLocks()
    if options.mode in ("controller", "all"):
        pb_grpc.add_ControllerServicer_to_server(
            ControllerServicer(meta, options.installation, locks), server
        )
    if options.mode in ("node", "all"):
        if not options.node_id:
            raise ValueError("node mode needs --node-id")
        spawner: LocalSpawner | RemoteSpawner
        if options.mounter:
            bridge = RpcBridge(options.mounter, auth.load_secret(options.secret_file)).start()
            spawner = RemoteSpawner(bridge)
        else:
            spawner = local = LocalSpawner(
                options.meta,
                options.secret_file,
                Path(options.state_dir) / "logs",
                options.mount_args,
                metrics=bool(options.metrics_listen),
            )
        config = NodeConfig(
            node_id=options.node_id,
            state_dir=Path(options.state_dir),
            spawner=spawner,
            installation=options.installation,
        )
        node = NodeServicer(meta, config, locks)
        node.clean_broken_staging()
        pb_grpc.add_NodeServicer_to_server(node, server)
    return server, local


def run(options: CsiOptions) -> None:
    """Serve until SIGTERM or SIGINT; then finish calls in progress (5 s) and exit."""
    address, socket_path = grpc_address(options.endpoint)
    secret = auth.load_secret(options.secret_file)
    meta = RpcBridge(options.meta, secret).start()
    server, local_spawner = build_server(options, meta)
    if socket_path:
        _clear_stale_socket(socket_path)
    if server.add_insecure_port(address) == 0:
        raise OSError(f"cannot listen on {options.endpoint}")
    server.start()
    log.info(
        "CSI %s server (node id %s) listening on %s",
        options.mode,
        options.node_id or "-",
        options.endpoint,
    )
    health = None
    if options.metrics_listen:
        health = DriverHealth(meta).start()
        registry = (
            REGISTRY if local_spawner is None else merged_registry(REGISTRY, local_spawner.mounts)
        )
        http = serve_http(*parse_listen(options.metrics_listen), registry, health.health)
        log.info("metrics and health on http://%s:%d/metrics", *http.server_address[:2])
    if options.ready_file:
        Path(options.ready_file).write_text(f"{os.getpid()}\n")
    stopping = threading.Event()

    def stop(signum: int, _frame: object) -> None:
        log.info("received %s: stopping", signal.Signals(signum).name)
        stopping.set()

    signal.signal(signal.SIGTERM, stop)
    signal.signal(signal.SIGINT, stop)
    stopping.wait()
    server.stop(grace=5).wait()
    if health is not None:
        health.stop()
    meta.close()
