"""The parent of the mounts serves their metrics with its own: each child's families merged
under their names with a volume and mountpoint label, and shoalfs_mount_up per child —
scraped from real HTTP endpoints, rendered and parsed back as Prometheus would."""

from __future__ import annotations

import subprocess
from collections.abc import Iterator

import pytest
from prometheus_client import CollectorRegistry, Counter, Histogram, generate_latest
from prometheus_client.parser import text_string_to_metric_families
from prometheus_client.process_collector import ProcessCollector

from csi.mountmetrics import MountRecord, merged_registry
from storaged.metrics import Health, serve_http


def child_endpoint(registry: CollectorRegistry) -> str:
    http = serve_http("127.0.0.1", 0, registry, Health(lambda: (True, "")))
    return f"127.0.0.1:{http.server_address[1]}"


def a_child(ops: int, written: float) -> CollectorRegistry:
    registry = CollectorRegistry()
    ProcessCollector(registry=registry)
    counter = Counter("shoalfs_fuse_operations", "ops", ["operation", "result"], registry=registry)
    counter.labels("write", "ok").inc(ops)
    latency = Histogram(
        "shoalfs_fuse_operation_duration_seconds",
        "latency",
        ["operation"],
        registry=registry,
        buckets=(0.1, 1.0),
    )
    latency.labels("write").observe(written)
    return registry


@pytest.fixture
def process() -> Iterator[subprocess.Popen[bytes]]:
    proc = subprocess.Popen(["sleep", "60"])
    yield proc
    proc.kill()
    proc.wait()


def parsed(registry: CollectorRegistry) -> dict[str, dict[tuple, float]]:
    samples: dict[str, dict[tuple, float]] = {}
    text = generate_latest(registry).decode()
    for family in text_string_to_metric_families(text):
        for s in family.samples:
            samples.setdefault(s.name, {})[tuple(sorted(s.labels.items()))] = s.value
    return samples


def test_children_are_merged_with_labels_and_their_state(process: subprocess.Popen[bytes]) -> None:
    dead = subprocess.Popen(["true"])
    dead.wait()
    records = [
        MountRecord("alpha", "/m/a", process, child_endpoint(a_child(3, 0.5))),
        MountRecord("beta", "/m/b", process, child_endpoint(a_child(5, 2.0))),
        MountRecord("gone", "/m/g", dead, "127.0.0.1:9"),  # died while still mounted
        MountRecord("mute", "/m/x", process, "127.0.0.1:9"),  # nothing answers there
    ]
    own = CollectorRegistry()
    ProcessCollector(registry=own)
    samples = parsed(merged_registry(own, lambda: records))

    ops = samples["shoalfs_fuse_operations_total"]
    assert (
        ops[(("mountpoint", "/m/a"), ("operation", "write"), ("result", "ok"), ("volume", "alpha"))]
        == 3
    )
    assert (
        ops[(("mountpoint", "/m/b"), ("operation", "write"), ("result", "ok"), ("volume", "beta"))]
        == 5
    )
    buckets = samples["shoalfs_fuse_operation_duration_seconds_bucket"]
    assert (
        buckets[
            (("le", "1.0"), ("mountpoint", "/m/a"), ("operation", "write"), ("volume", "alpha"))
        ]
        == 1
    )
    assert (
        buckets[(("le", "1.0"), ("mountpoint", "/m/b"), ("operation", "write"), ("volume", "beta"))]
        == 0
    )
    # the parent's own process metrics (no labels) beside each child's
    memory = samples["process_resident_memory_bytes"]
    assert () in memory and (("mountpoint", "/m/a"), ("volume", "alpha")) in memory
    assert samples["shoalfs_mount_up"] == {
        (("mountpoint", "/m/a"), ("volume", "alpha")): 1.0,
        (("mountpoint", "/m/b"), ("volume", "beta")): 1.0,
        (("mountpoint", "/m/g"), ("volume", "gone")): 0.0,
        (("mountpoint", "/m/x"), ("volume", "mute")): 0.0,
    }


def test_no_mounts_serves_the_parents_own_and_an_empty_up_family() -> None:
    own = CollectorRegistry()
    Counter("shoalfs_csi_requests", "calls", registry=own).inc()
    samples = parsed(merged_registry(own, list))
    assert samples["shoalfs_csi_requests_total"] == {(): 1.0}
    assert "shoalfs_mount_up" not in samples
