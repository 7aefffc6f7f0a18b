"""Who starts a node's fusefs processes: the node plugin itself, or the mounter.

Either way the process runs in a session of its own, so it outlives a SIGKILL of whoever
started it. In Kubernetes that is not enough (a restarted container takes all its
processes with it), so the manifests run the processes in a separate mounter DaemonSet
(``shoal mounter``) that the node plugin asks over a unix socket; its pods are only
replaced when an administrator deletes them (updateStrategy OnDelete).
"""

from __future__ import annotations

import threading
from pathlib import Path

from fusefs.launch import is_mounted, mount_process

from .mountmetrics import MountRecord
from .rpcbridge import RpcBridge

# Each mount's metrics endpoint: loopback only, at a port the kernel picks; the parent
# serves what it finds there (csi/mountmetrics.py).
CHILD_METRICS = ["--metrics-listen", "127.0.0.1:0"]


class LocalSpawner:
    """Start fusefs processes from this process (tests, labs, plain hosts)."""

    def __init__(
        self,
        meta: str,
        secret_file: str,
        log_dir: Path,
        mount_args: list[str],
        timeout: float = 60.0,
        metrics: bool = False,
    ) -> None:
        self.meta, self.secret_file, self.log_dir = meta, secret_file, log_dir
        self.mount_args = [*mount_args, *(CHILD_METRICS if metrics else [])]
        self.timeout = timeout
        self._lock = threading.Lock()  # mount and reap run in threads; scrapes read
        self._mounts: list[MountRecord] = []

    def mount(self, volume: str, mountpoint: str) -> int:
        """Mount and return the fusefs pid once the mount is live (RuntimeError if not)."""
        self.reap()
        started = mount_process(
            volume,
            mountpoint,
            self.meta,
            self.secret_file,
            self.log_dir / f"{volume}.log",
            self.mount_args,
            self.timeout,
        )
        with self._lock:
            # a dead mount this one replaces is not broken any more
            self._mounts = [m for m in self._mounts if m.running or m.mountpoint != mountpoint]
            self._mounts.append(MountRecord(volume, mountpoint, started.proc, started.metrics))
        return started.proc.pid

    def reap(self) -> None:
        """Collect exited mount processes, so they do not linger as zombies. One that died
        while its mountpoint is still mounted stays on record, as a broken mount, until it
        is unmounted. The log of a mount that ended cleanly (unmounted, exit status 0) is
        removed with it, unless the volume is mounted here again: volumes come and go on a
        node, and their logs would otherwise pile up; a failed mount's log stays."""
        with self._lock:
            ended = [m for m in self._mounts if not m.running and not is_mounted(m.mountpoint)]
            self._mounts = [m for m in self._mounts if m not in ended]
            still = {m.volume for m in self._mounts}
        for m in ended:
            if m.proc.returncode == 0 and m.volume not in still:
                (self.log_dir / f"{m.volume}.log").unlink(missing_ok=True)

    def mounts(self) -> list[MountRecord]:
        """The mounts as they are now (reaped first: one unmounted since is gone)."""
        self.reap()
        with self._lock:
            return list(self._mounts)


class RemoteSpawner:
    """Ask the node's mounter (``shoal mounter``) to start the process."""

    def __init__(self, mounter: RpcBridge, timeout: float = 90.0) -> None:
        self.mounter = mounter
        self.timeout = timeout

    def mount(self, volume: str, mountpoint: str) -> int:
        return int(self.mounter.call("mounter.mount", volume, mountpoint, timeout=self.timeout))
