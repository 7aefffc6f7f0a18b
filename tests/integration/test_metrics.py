"""Prometheus metrics and health endpoints of storaged, scraped over real HTTP.

The families must be there, named by the conventions (``_total`` counters, base units), and
the numbers must move when work is done: a chunk put shows up as a request, as bytes, and
(after the snapshot refresh) as a stored chunk; a volume's use shows on the meta role.
"""

from __future__ import annotations

import os
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest

from storaged.chunk.ids import chunk_id
from storaged.rpc import NotFound
from tests.helpers import (
    LocalCluster,
    StoragedProcess,
    call,
    free_port,
    http_get,
    scrape,
    wait_until,
)


@pytest.fixture
def observed(tmp_path: Path, secret_file: Path) -> Iterator[tuple[LocalCluster, int, int]]:
    meta_port, chunk_port = free_port(), free_port()
    ports = [chunk_port, free_port()]
    cluster = LocalCluster(
        tmp_path / "cluster",
        secret_file,
        chunk_servers=2,
        chunk_extra_for=lambda i: ["--metrics-listen", f"127.0.0.1:{ports[i]}"],
    )
    cluster.meta.extra += ["--metrics-listen", f"127.0.0.1:{meta_port}"]
    try:
        yield cluster.start(), meta_port, chunk_port
    finally:
        cluster.stop()


def test_chunk_server_metrics_move_with_work(observed: tuple[LocalCluster, int, int]) -> None:
    cluster, _, port = observed
    before = scrape(port)
    puts = lambda s: s.get("shoalfs_rpc_requests_total", {}).get(  # noqa: E731
        (("code", "OK"), ("method", "chunk.put")), 0
    )
    data = os.urandom(300_000)
    call(cluster.chunks[0].address, cluster.secret, "chunk.put", chunk_id(data), data)

    after = scrape(port)  # counted before its answer was sent (test_rpc_sockets.py)
    assert puts(after) == puts(before) + 1, "the put was not counted"
    for name in (
        "shoalfs_chunks",
        "shoalfs_free_bytes",
        "shoalfs_capacity_bytes",
        "shoalfs_scrub_passes_total",
        "shoalfs_corrupted_chunks_found_total",
        "shoalfs_rpc_requests_total",
        "shoalfs_rpc_request_duration_seconds_bucket",
        "shoalfs_rpc_sent_bytes_total",
    ):
        assert name in after, f"{name} missing from {sorted(after)}"
    assert after["shoalfs_rpc_received_bytes_total"][(("method", "chunk.put"),)] >= len(data)
    assert wait_until(
        lambda: scrape(port)["shoalfs_chunks"][()] == before["shoalfs_chunks"][()] + 1
    )
    with pytest.raises(NotFound):
        call(cluster.chunks[0].address, cluster.secret, "chunk.get", "0" * 64)
    assert wait_until(
        lambda: (
            scrape(port)["shoalfs_rpc_requests_total"].get(
                (("code", "NOT_FOUND"), ("method", "chunk.get"))
            )
            == 1
        )
    )


def test_meta_role_metrics_show_servers_and_volumes(
    observed: tuple[LocalCluster, int, int],
) -> None:
    cluster, port, _ = observed
    call(cluster.meta.address, cluster.secret, "volume.create", "observed", 1 << 30, 2, 1 << 20)
    samples = wait_until(lambda: (s := scrape(port)).get("shoalfs_volume_capacity_bytes") and s)
    assert samples["shoalfs_volume_capacity_bytes"][(("volume", "observed"),)] == 1 << 30
    assert samples["shoalfs_servers"][(("state", "up"),)] == 2
    assert "shoalfs_repair_missing_chunks" in samples
    assert "shoalfs_repair_under_replicated_chunks" in samples
    cluster.chunks[1].stop()
    assert wait_until(
        lambda: scrape(port)["shoalfs_servers"].get((("state", "down"),)) == 1, timeout=20
    )


def test_health_endpoints(observed: tuple[LocalCluster, int, int]) -> None:
    _cluster, meta_port, chunk_port = observed
    for port in (meta_port, chunk_port):
        assert http_get(port, "/healthz") == (200, {"ok": True, "detail": "event loop turning"})

        def ready(port: int = port) -> bool:
            return http_get(port, "/readyz")[0] == 200

        assert wait_until(ready)
    with pytest.raises(urllib.error.HTTPError) as info:
        urllib.request.urlopen(f"http://127.0.0.1:{chunk_port}/nothing-here", timeout=10)
    assert info.value.code == 404


def test_a_chunk_server_is_not_ready_until_the_meta_role_knows_it(
    tmp_path: Path, secret_file: Path
) -> None:
    port = free_port()
    lonely = StoragedProcess(
        tmp_path / "lonely",
        secret_file,
        extra=[
            "--meta",
            "tcp://127.0.0.1:1",
            "--heartbeat-interval",
            "0.2",
            "--metrics-listen",
            f"127.0.0.1:{port}",
        ],
    ).start()
    try:
        status, body = http_get(port, "/readyz")
        assert status == 503 and "not registered with the meta role" in body["detail"]
        assert http_get(port, "/healthz")[0] == 200  # alive, though: do not restart it for this
    finally:
        lonely.stop()
