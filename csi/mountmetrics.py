"""The metrics of the mounts a node runs for its pods, served by the process that runs them.

Each fusefs process the mounter (or, on plain hosts, the node plugin) starts for a pod's
volume listens for scrapes on 127.0.0.1, on a port the kernel picks. Prometheus cannot know
those ports, and a scrape job per mount would come and go with the pods; so the parent
scrapes its children whenever it is scraped itself, and serves their families beside its
own, each sample labelled with the ``volume`` and ``mountpoint`` it came from.

``shoalfs_mount_up`` says, per mount, whether that worked: 0 when the process did not
answer in time, or when it has died while its mountpoint is still mounted (the pods using
it get ENOTCONN until the node plugin mounts it again). That is the signal the "mount
broken" alert needs in Kubernetes, without a scrape job per pod.
"""

from __future__ import annotations

import logging
import subprocess
import urllib.error
import urllib.request
from collections.abc import Callable, Iterable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass

from prometheus_client import CollectorRegistry
from prometheus_client.core import Metric
from prometheus_client.parser import text_string_to_metric_families

from storaged.metrics import gauge

log = logging.getLogger("csi.mountmetrics")

SCRAPE_SECONDS = 3.0  # per mount; they are asked in parallel
MAX_PARALLEL = 16


@dataclass
class MountRecord:
    """One fusefs process its parent started: which volume, where, and its metrics."""

    volume: str
    mountpoint: str
    proc: subprocess.Popen[bytes]
    metrics: str  # HOST:PORT of its /metrics; '' when it has none

    @property
    def running(self) -> bool:
        return self.proc.poll() is None


class ChildMountMetrics:
    """A collector: the parent's own families, merged with every child mount's."""

    def __init__(
        self,
        own: CollectorRegistry,
        mounts: Callable[[], list[MountRecord]],
        timeout: float = SCRAPE_SECONDS,
    ) -> None:
        self.own, self.mounts, self.timeout = own, mounts, timeout

    def collect(self) -> Iterable[Metric]:
        records = self.mounts()
        texts: list[str | None] = []
        if records:
            with ThreadPoolExecutor(
                min(MAX_PARALLEL, len(records)), thread_name_prefix="mount-scrape"
            ) as pool:
                texts = list(pool.map(self._scrape, records))
        merged: dict[str, Metric] = {}
        for family in self.own.collect():
            _merge(merged, family, {})
        up = gauge(
            "mount_up",
            "1 when this mount's fusefs process answered its parent's "
            "scrape; 0 when it did not, or has died while still mounted",
            labels={"volume": "", "mountpoint": ""},
        )
        for record, text in zip(records, texts):
            answered = text is not None and self._merge_text(merged, record, text)
            up.add_metric([record.volume, record.mountpoint], 1.0 if answered else 0.0)
        return [*merged.values(), up]

    def _scrape(self, record: MountRecord) -> str | None:
        if not record.running or not record.metrics:
            return None
        try:
            with urllib.request.urlopen(
                f"http://{record.metrics}/metrics", timeout=self.timeout
            ) as reply:
                return reply.read().decode()
        except (OSError, urllib.error.URLError, UnicodeDecodeError) as exc:
            log.debug(
                "mount of %s at %s did not answer a scrape: %s",
                record.volume,
                record.mountpoint,
                exc,
            )
            return None

    @staticmethod
    def _merge_text(merged: dict[str, Metric], record: MountRecord, text: str) -> bool:
        labels = {"volume": record.volume, "mountpoint": record.mountpoint}
        try:
            families = list(text_string_to_metric_families(text))
        except ValueError as exc:
            log.warning(
                "mount of %s at %s sent metrics that do not parse: %s",
                record.volume,
                record.mountpoint,
                exc,
            )
            return False
        for family in families:
            _merge(merged, family, labels)
        return True


def _merge(merged: dict[str, Metric], family: Metric, labels: dict[str, str]) -> None:
    """Add ``family``'s samples, with ``labels`` added, under its name. Families of one name
    share a type (they come from the same code); one that does not is dropped, not mixed."""
    target = merged.get(family.name)
    if target is None:
        target = merged[family.name] = Metric(
            family.name, family.documentation, family.type, family.unit
        )
    elif target.type != family.type:
        log.debug(
            "family %s is a %s here and a %s in a mount; dropped the latter",
            family.name,
            target.type,
            family.type,
        )
        return
    for sample in family.samples:
        target.samples.append(sample._replace(labels={**sample.labels, **labels}))


def merged_registry(
    own: CollectorRegistry, mounts: Callable[[], list[MountRecord]]
) -> CollectorRegistry:
    """A registry to serve: ``own``'s families and the mounts'."""
    registry = CollectorRegistry()
    registry.register(ChildMountMetrics(own, mounts))
    return registry
