"""What the CSI driver tells Prometheus about itself (``shoal csi --metrics-listen``).

Every servicer method passes through ``csi.errors.rpc_method``, which reports each call's
method, gRPC code and duration here. The registry is the process's own (one driver per
process), so the decorator needs no reference to a server object.

Health: the driver's work is gRPC calls answered from a thread pool, and calls to the meta
role through the RPC bridge's trio thread. A monitor thread asks the meta role for its
identity every few seconds: an answer (any answer) shows the bridge turns (liveness); a
good answer shows the driver can do its job (readiness).
"""

from __future__ import annotations

import logging
import threading

from prometheus_client import CollectorRegistry, Counter, Histogram
from prometheus_client.process_collector import ProcessCollector

from storaged.metrics import LATENCY_BUCKETS, NAMESPACE, Health
from storaged.rpc import RpcError, Unavailable

from .rpcbridge import RpcBridge

log = logging.getLogger("csi.metrics")

CHECK_SECONDS = 5.0

REGISTRY = CollectorRegistry()
ProcessCollector(registry=REGISTRY)
CALLS = Counter(
    "csi_requests",
    "CSI calls answered, by method and gRPC status code",
    ["method", "grpc_code"],
    namespace=NAMESPACE,
    registry=REGISTRY,
)
LATENCY = Histogram(
    "csi_request_duration_seconds",
    "Time to answer a CSI call",
    ["method"],
    namespace=NAMESPACE,
    registry=REGISTRY,
    buckets=LATENCY_BUCKETS,
)


def observe(method: str, code: str, seconds: float) -> None:
    CALLS.labels(method, code).inc()
    LATENCY.labels(method).observe(seconds)


class DriverHealth:
    def __init__(self, meta: RpcBridge) -> None:
        self.meta = meta
        self.state: tuple[bool, str] = (False, "not checked yet")
        self.health = Health(lambda: self.state)
        self._stop = threading.Event()

    def start(self) -> DriverHealth:
        threading.Thread(target=self._monitor, name="csi-health", daemon=True).start()
        return self

    def stop(self) -> None:
        self._stop.set()

    def _monitor(self) -> None:
        while True:
            try:
                self.meta.ask(lambda m: m.cluster_info(timeout=CHECK_SECONDS))
                self.state = (True, "the meta role answers")
            except Unavailable as exc:
                self.state = (False, f"the meta role does not answer: {exc.message}")
            except RpcError as exc:
                self.state = (False, f"the meta role answered with an error: {exc}")
            if self.meta.running:  # the bridge's loop took the call: the driver is alive
                self.health.beat()
            if self._stop.wait(CHECK_SECONDS):
                return
