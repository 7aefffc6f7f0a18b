"""What a storaged process tells Prometheus and Kubernetes about itself.

metrics.py has the machinery (registry, HTTP, health); this module knows storaged: which
gauges each role has, where their values come from, and what "ready" means for it.
Metric names and their meaning are listed in docs/operations.md.
"""

from __future__ import annotations

from typing import Any

from prometheus_client import CollectorRegistry
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric

from .chunk.service import ChunkService
from .meta.service import MetaService
from .metrics import NAMESPACE, Health, RpcMetrics, Snapshot, gauge, keep_fresh


class StoragedObserver:
    def __init__(self, chunk: ChunkService | None, meta: MetaService | None) -> None:
        self.chunk = chunk
        self.meta = meta
        self.registry = CollectorRegistry()
        self.rpc = RpcMetrics(self.registry)
        self.snapshot = Snapshot()
        self.registry.register(self.snapshot)
        self.listening = False
        self.registered = chunk is None  # a chunk server is ready once the meta role knows it
        self.health = Health(self.ready)

    def ready(self) -> tuple[bool, str]:
        if not self.listening:
            return False, "not listening yet"
        if not self.registered:
            return False, "not registered with the meta role yet (heartbeats failing)"
        return True, "serving"

    async def refresh_loop(self) -> None:
        await keep_fresh(self.health, self.snapshot, self._families)

    async def _families(self) -> list[Metric]:
        families: list[Metric] = []
        if self.chunk is not None:
            families += chunk_families(await self.chunk.usage(), self.chunk.health_info())
        if self.meta is not None:
            families += meta_families(
                await self.meta.cluster_servers(),
                await self.meta.volume_list(),
                self.meta.repair.status.as_dict(),
            )
        return families


def chunk_families(usage: dict[str, int], health: dict[str, Any]) -> list[Metric]:
    scrub = health["scrub"]
    return [
        gauge("chunks", "Chunks stored on this server", usage["chunks"]),
        gauge("chunk_stored_bytes", "Bytes of chunk data stored on this server", usage["used"]),
        gauge("capacity_bytes", "Bytes this server may use for chunks", usage["capacity"]),
        gauge("free_bytes", "Bytes this server can still take", usage["free"]),
        counter(
            "corrupted_chunks_found",
            "Corrupted chunks found (reads and scrubbing)",
            health["corrupted_found"],
        ),
        gauge(
            "chunks_buffered",
            "Small chunks answered (a close's) and not yet on this server's disk",
            health["buffered"]["waiting"],
        ),
        counter("scrub_passes", "Full scrub passes finished", scrub["passes"]),
        gauge(
            "scrub_last_full_pass_timestamp_seconds",
            "When the last full scrub pass finished (0: never)",
            scrub["last_full_pass"],
        ),
        gauge(
            "scrub_checked_chunks",
            "Chunks verified so far in the current scrub pass",
            scrub["checked"],
        ),
    ]


def meta_families(
    servers: list[dict[str, Any]], volumes: list[dict[str, Any]], repair: dict[str, Any]
) -> list[Metric]:
    states = GaugeMetricFamily(f"{NAMESPACE}_servers", "Chunk servers by state", labels=["state"])
    counts = {"up": 0, "down": 0}
    for s in servers:
        counts[s["state"]] = counts.get(s["state"], 0) + 1
    for state, count in counts.items():
        states.add_metric([state], count)
    server_labels = ["server", "address", "zone"]
    up = GaugeMetricFamily(
        f"{NAMESPACE}_server_up", "1 while the chunk server heartbeats", labels=server_labels
    )
    capacity = GaugeMetricFamily(
        f"{NAMESPACE}_server_capacity_bytes",
        "A chunk server's capacity, as it last reported",
        labels=server_labels,
    )
    free = GaugeMetricFamily(
        f"{NAMESPACE}_server_free_bytes",
        "A chunk server's free space, as it last reported",
        labels=server_labels,
    )
    for s in servers:
        values = [s["id"], s["address"], s["zone"] or ""]
        up.add_metric(values, 1 if s["state"] == "up" else 0)
        capacity.add_metric(values, s["capacity"])
        free.add_metric(values, s["free"])
    vol_capacity = GaugeMetricFamily(
        f"{NAMESPACE}_volume_capacity_bytes", "A volume's quota", labels=["volume"]
    )
    vol_used = GaugeMetricFamily(
        f"{NAMESPACE}_volume_used_bytes",
        "Bytes a volume's files use (before replication)",
        labels=["volume"],
    )
    vol_replicas = GaugeMetricFamily(
        f"{NAMESPACE}_volume_replicas", "Copies a volume keeps of each chunk", labels=["volume"]
    )
    for v in volumes:
        vol_capacity.add_metric([v["name"]], v["capacity"])
        vol_used.add_metric([v["name"]], v["used_bytes"])
        vol_replicas.add_metric([v["name"]], v["replicas"])
    return [
        states,
        up,
        capacity,
        free,
        vol_capacity,
        vol_used,
        vol_replicas,
        gauge("repair_running", "1 while a repair pass runs", int(repair["running"])),
        counter("repair_passes", "Repair passes finished", repair["passes"]),
        gauge(
            "repair_under_replicated_chunks",
            "Chunks found with fewer than R good copies in the last (or current) pass",
            repair["under_replicated"],
        ),
        gauge(
            "repair_missing_chunks",
            "Chunks with no good copy on any live server in the last pass: data at risk",
            repair["missing"],
        ),
        gauge(
            "repair_remaining_chunks",
            "Chunks the current pass has still to check",
            repair["remaining"],
        ),
        gauge(
            "repair_repaired_chunks",
            "Chunks brought back to R copies in the last pass",
            repair["repaired"],
        ),
    ]


def counter(name: str, documentation: str, value: float) -> CounterMetricFamily:
    return CounterMetricFamily(f"{NAMESPACE}_{name}", documentation, value=value)
