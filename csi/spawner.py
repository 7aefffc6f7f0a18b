"""Who starts a node's fusefs processes: the node plugin itself, or the mounter.

Either way the process runs in a session of its own, so it outlives a SIGKILL of whoever
started it. In Kubernetes that is not enough (a restarted container takes all its
processes with it), so the manifests run the processes in a separate mounter DaemonSet
(``shoal mounter``) that the node plugin asks over a unix socket; its pods are only
replaced when an administrator deletes them (updateStrategy OnDelete).
"""

from __future__ import annotations

import subprocess
from pathlib import Path

from shoal.mounting import mount_process

from .rpcbridge import RpcBridge


class LocalSpawner:
    """Start fusefs processes from this process (tests, labs, plain hosts)."""

    def __init__(self, meta: str, secret_file: str, log_dir: Path, mount_args: list[str],
                 timeout: float = 60.0) -> None:
        self.meta, self.secret_file, self.log_dir = meta, secret_file, log_dir
        self.mount_args, self.timeout = mount_args, timeout
        self._children: list[subprocess.Popen[bytes]] = []

    def mount(self, volume: str, mountpoint: str) -> int:
        """Mount and return the fusefs pid once the mount is live (RuntimeError if not)."""
        self.reap()
        proc = mount_process(volume, mountpoint, self.meta, self.secret_file,
                             self.log_dir / f"{volume}.log", self.mount_args, self.timeout)
        self._children.append(proc)
        return proc.pid

    def reap(self) -> None:
        """Collect exited mount processes, so they do not linger as zombies."""
        self._children = [p for p in self._children if p.poll() is None]


class RemoteSpawner:
    """Ask the node's mounter (``shoal mounter``) to start the process."""

    def __init__(self, mounter: RpcBridge, timeout: float = 90.0) -> None:
        self.mounter = mounter
        self.timeout = timeout

    def mount(self, volume: str, mountpoint: str) -> int:
        return int(self.mounter.call("mounter.mount", volume, mountpoint, timeout=self.timeout))
