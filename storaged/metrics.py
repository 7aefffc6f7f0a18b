"""Prometheus metrics and HTTP health endpoints for a long-running shoalfs process.

One small HTTP server per process, in a thread of its own (``--metrics-listen``):

    /metrics   Prometheus text format (the official client library renders it)
    /healthz   liveness: 200 while the process's event loop still turns
    /readyz    readiness: 200 once the process can do its job (its check says what)

The event loop never waits for a scrape, and the scrape never touches the loop's state:
counters are bumped where work happens (plain integer adds under the client's own lock),
and values that need the stores (chunk counts, volume use, server states) are copied into
a snapshot by a trio task every few seconds, which the scrape reads as it is.
"""

from __future__ import annotations

import json
import logging
import threading
import time
from collections.abc import Awaitable, Callable, Iterable
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import trio
from prometheus_client import CollectorRegistry, Counter, Histogram, generate_latest
from prometheus_client.core import GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

log = logging.getLogger("storaged.metrics")

NAMESPACE = "shoalfs"
CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"
# RPC latencies run from a cached health (~50 us) to a 64 MiB chunk put on a busy disk.
LATENCY_BUCKETS = (
    0.0005,
    0.001,
    0.0025,
    0.005,
    0.01,
    0.025,
    0.05,
    0.1,
    0.25,
    0.5,
    1.0,
    2.5,
    5.0,
    10.0,
    30.0,
)
LIVENESS_STALE_SECONDS = 30.0
REFRESH_SECONDS = 5.0


def parse_listen(value: str) -> tuple[str, int]:
    """``HOST:PORT`` (``[::1]:9180`` for IPv6; port 0: the kernel picks) as (host, port)."""
    host, sep, port = value.rpartition(":")
    if not sep or not port.isdigit() or not 0 <= int(port) <= 65535:
        raise ValueError(
            f"expected HOST:PORT for the metrics endpoint, e.g. 0.0.0.0:9180 (got {value!r})"
        )
    return host.strip("[]") or "0.0.0.0", int(port)


class RpcMetrics:
    """The RPC server's observer: one call per request answered."""

    def __init__(self, registry: CollectorRegistry) -> None:
        self.requests = Counter(
            "rpc_requests",
            "RPC requests answered, by method and result code (OK or the error code); counted as the answer is sent",
            ["method", "code"],
            namespace=NAMESPACE,
            registry=registry,
        )
        self.latency = Histogram(
            "rpc_request_duration_seconds",
            "Time from a request's arrival to its answer being ready to send",
            ["method"],
            namespace=NAMESPACE,
            registry=registry,
            buckets=LATENCY_BUCKETS,
        )
        self.received = Counter(
            "rpc_received_bytes",
            "Request payload bytes received",
            ["method"],
            namespace=NAMESPACE,
            registry=registry,
        )
        self.sent = Counter(
            "rpc_sent_bytes",
            "Response bytes sent",
            ["method"],
            namespace=NAMESPACE,
            registry=registry,
        )

    def observe(self, method: str, seconds: float, code: str, received: int, sent: int) -> None:
        self.requests.labels(method, code).inc()
        self.latency.labels(method).observe(seconds)
        self.received.labels(method).inc(received)
        self.sent.labels(method).inc(sent)


class Snapshot(Collector):
    """Gauges copied from the process's state by its event loop (see ``refresh_loop``)."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._families: list[Metric] = []

    def replace(self, families: list[Metric]) -> None:
        with self._lock:
            self._families = families

    def collect(self) -> Iterable[Metric]:
        with self._lock:
            return list(self._families)


def gauge(
    name: str,
    documentation: str,
    value: float | None = None,
    labels: dict[str, str] | None = None,
    unit: str = "",
) -> GaugeMetricFamily:
    """One gauge family; add samples with ``add(family, labels, value)``."""
    if labels is None:
        family = GaugeMetricFamily(f"{NAMESPACE}_{name}", documentation, value=value, unit=unit)
    else:
        family = GaugeMetricFamily(
            f"{NAMESPACE}_{name}", documentation, labels=list(labels), unit=unit
        )
        if value is not None:
            family.add_metric(list(labels.values()), value)
    return family


class Health:
    """What /healthz and /readyz answer. ``beat`` is called by the event loop."""

    def __init__(self, ready: Callable[[], tuple[bool, str]]) -> None:
        self.ready = ready
        self.last_beat = time.monotonic()

    def beat(self) -> None:
        self.last_beat = time.monotonic()

    def live(self) -> tuple[bool, str]:
        stale = time.monotonic() - self.last_beat
        if stale > LIVENESS_STALE_SECONDS:
            return False, f"event loop stuck for {stale:.0f}s"
        return True, "event loop turning"


async def keep_fresh(
    health: Health,
    snapshot: Snapshot,
    families: Callable[[], Awaitable[list[Metric]]],
    interval: float = REFRESH_SECONDS,
) -> None:
    """The event loop's side of the bargain: every few seconds, copy the gauges' values
    into the snapshot the scrapes read, and beat the liveness clock (a loop stuck long
    enough to miss beats is what /healthz reports)."""
    while True:
        health.beat()
        try:
            snapshot.replace(await families())
        except Exception:
            log.exception("could not refresh metrics")
        await trio.sleep(interval)


def serve_http(
    host: str, port: int, registry: CollectorRegistry, health: Health
) -> ThreadingHTTPServer:
    """Start serving in a daemon thread; returns the server (``server_address`` has the
    port the kernel picked when 0 was asked for)."""

    class Handler(BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            path = self.path.split("?", 1)[0]
            if path == "/metrics":
                self._send(200, CONTENT_TYPE, generate_latest(registry))
            elif path in ("/healthz", "/readyz"):
                ok, why = health.live() if path == "/healthz" else health.ready()
                body = json.dumps({"ok": ok, "detail": why}).encode() + b"\n"
                self._send(200 if ok else 503, "application/json", body)
            else:
                self._send(404, "text/plain", b"try /metrics, /healthz or /readyz\n")

        def _send(self, status: int, content_type: str, body: bytes) -> None:
            self.send_response(status)
            self.send_header("Content-Type", content_type)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, format: str, *args: Any) -> None:
            log.debug("http: " + format, *args)  # scrapes every 15 s are not news

    server = ThreadingHTTPServer((host, port), Handler)
    server.daemon_threads = True
    threading.Thread(target=server.serve_forever, name="metrics-http", daemon=True).start()
    return server
