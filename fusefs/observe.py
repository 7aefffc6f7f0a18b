"""What a fusefs mount tells Prometheus about itself, and the request id of each operation.

Every FUSE operation handler is wrapped once, at mount time (``instrument``): it gets a
fresh request id (so the RPCs it causes, and their servers' log lines, can be tied to it),
and its count, result and latency are recorded. Wrapping the instance's methods rather than
decorating each one keeps the handlers short and covers the ones added later.

Gauges that need the mount's state (open files, buffered bytes, cache use, peak memory) are
copied by a trio task every few seconds; the HTTP thread only reads the copy.
"""

from __future__ import annotations

import errno
import functools
import inspect
import itertools
import secrets
import time
from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING, Any

import pyfuse3
from prometheus_client import CollectorRegistry, Counter, Histogram
from prometheus_client.core import Metric
from prometheus_client.process_collector import ProcessCollector

from storaged.metrics import LATENCY_BUCKETS, NAMESPACE, Health, Snapshot, gauge, keep_fresh
from storaged.rpc import requestid

if TYPE_CHECKING:
    from .operations import Operations


# pyfuse3.Operations' handler names: the ones the kernel calls
OPERATION_NAMES = tuple(
    name for name, _ in inspect.getmembers(pyfuse3.Operations, inspect.iscoroutinefunction)
)


class MountObserver:
    def __init__(self, volume: str) -> None:
        self.volume = volume
        self.registry = CollectorRegistry()
        ProcessCollector(registry=self.registry)  # process_resident_memory_bytes, cpu
        self.operations = Counter(
            "fuse_operations",
            "FUSE operations answered, by operation and result (ok or the errno name)",
            ["operation", "result"],
            namespace=NAMESPACE,
            registry=self.registry,
        )
        self.latency = Histogram(
            "fuse_operation_duration_seconds",
            "Time from a FUSE request reaching the mount to its answer",
            ["operation"],
            namespace=NAMESPACE,
            registry=self.registry,
            buckets=LATENCY_BUCKETS,
        )
        self.read_bytes = Counter(
            "fuse_read_bytes",
            "Bytes returned to read()",
            namespace=NAMESPACE,
            registry=self.registry,
        )
        self.written_bytes = Counter(
            "fuse_written_bytes",
            "Bytes accepted by write()",
            namespace=NAMESPACE,
            registry=self.registry,
        )
        self.snapshot = Snapshot()
        self.registry.register(self.snapshot)
        self.mounted = False
        self.session_ok = False  # the last session heartbeat reached the meta role
        self.health = Health(self.ready)

    def ready(self) -> tuple[bool, str]:
        if not self.mounted:
            return False, "not mounted"
        if not self.session_ok:
            return False, "the meta role does not answer this mount's heartbeats"
        return True, "mounted"

    async def refresh_loop(self, ops: Operations) -> None:
        async def families() -> list[Metric]:
            return self._families(ops)

        await keep_fresh(self.health, self.snapshot, families)

    def _families(self, ops: Operations) -> list[Metric]:
        buffered = sum(max(0, f.size - f.committed_size) for f in ops.files.values())
        return [
            gauge("mount_open_files", "Files open through this mount", len(ops.files)),
            gauge(
                "mount_known_inodes", "Inodes the kernel holds a lookup count for", len(ops.lookups)
            ),
            gauge(
                "mount_unsaved_bytes",
                "Bytes written but not yet committed (at most the "
                "open files' growth: what fsync or close still has to send)",
                buffered,
            ),
            gauge(
                "mount_unsaved_memory_bytes",
                "Memory held by written data not yet stored (pieces being filled or uploaded)",
                ops.io.unsaved_bytes(),
            ),
            gauge(
                "mount_unsaved_memory_limit_bytes",
                "Bound of mount_unsaved_memory_bytes (--max-unsaved)",
                ops.io.max_unsaved_bytes,
            ),
            gauge("mount_cache_bytes", "Chunk cache in use", ops.io.cache.bytes),
            gauge(
                "mount_cache_limit_bytes",
                "Chunk cache bound (--cache-size)",
                ops.io.cache.max_bytes,
            ),
            gauge(
                "mount_session_up",
                "1 while the meta role answers this mount's heartbeats",
                1.0 if self.session_ok else 0.0,
            ),
            gauge(
                "mount_peak_resident_memory_bytes",
                "Largest resident memory so far (VmHWM)",
                peak_rss(),
            ),
        ]


def peak_rss() -> float:
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith("VmHWM:"):
                return float(line.split()[1]) * 1024
    return 0.0


def instrument(ops: Operations, observer: MountObserver | None) -> None:
    """Give every handler the mount overrides a request id and, with an observer, metrics."""
    prefix = f"fuse{secrets.token_hex(3)}"
    counter = itertools.count(1)
    for name in OPERATION_NAMES:
        handler = getattr(ops, name)
        if getattr(type(ops), name) is getattr(pyfuse3.Operations, name):
            continue  # not implemented here: the kernel gets ENOSYS from pyfuse3
        setattr(ops, name, _wrapped(name, handler, observer, prefix, counter))


def _wrapped(
    name: str,
    handler: Callable[..., Awaitable[Any]],
    observer: MountObserver | None,
    prefix: str,
    counter: itertools.count[int],
) -> Callable[..., Awaitable[Any]]:
    @functools.wraps(handler)
    async def op(*args: Any, **kwargs: Any) -> Any:
        requestid.set_current(f"{prefix}-{next(counter):x}")
        if observer is None:
            return await handler(*args, **kwargs)
        started = time.perf_counter()
        result = "ok"
        try:
            answer = await handler(*args, **kwargs)
            if name == "lookup" and answer.st_ino == 0:
                result = "ENOENT"  # a negative entry: the caller gets ENOENT all the same
        except pyfuse3.FUSEError as exc:
            result = errno.errorcode.get(exc.errno, str(exc.errno))
            raise
        except BaseException:
            result = "exception"
            raise
        finally:
            observer.operations.labels(name, result).inc()
            observer.latency.labels(name).observe(time.perf_counter() - started)
        if name == "read":
            observer.read_bytes.inc(len(answer))
        elif name == "write":
            observer.written_bytes.inc(answer)
        return answer

    return op
