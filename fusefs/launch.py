"""Running fusefs as a process of its own: start a mount (detached, or kept by a long-lived
parent such as the CSI mounter) and return once it is live; ``unmount`` (fusefs/unmounting.py)
takes it away. Used by ``shoal mount``, the local lab cluster and the CSI driver."""

from __future__ import annotations

import json
import subprocess
from dataclasses import dataclass
from pathlib import Path

from storaged.processes import spawn_daemon, wait_for_file

from .mounttable import is_mounted
from .unmounting import unmount

__all__ = ["MountProcess", "is_mounted", "mount_background", "mount_process", "unmount"]


@dataclass
class MountProcess:
    """A live mount's process, and where its metrics are (HOST:PORT; '' when it has none)."""

    proc: subprocess.Popen[bytes]
    metrics: str


def mount_background(
    volume: str,
    mountpoint: str,
    meta: str,
    secret_file: str,
    log_path: Path,
    extra: list[str],
    timeout: float = 30.0,
) -> int:
    """Start a detached mount process and return its pid once the mount is live."""
    return mount_process(volume, mountpoint, meta, secret_file, log_path, extra, timeout).proc.pid


def mount_process(
    volume: str,
    mountpoint: str,
    meta: str,
    secret_file: str,
    log_path: Path,
    extra: list[str],
    timeout: float = 30.0,
) -> MountProcess:
    """Start a mount process in a session of its own; return it once the mount is live.
    A long-lived caller keeps the Popen to reap the process when it exits."""
    ready = log_path.with_suffix(".ready")
    ready.unlink(missing_ok=True)
    proc = spawn_daemon(
        [
            volume,
            mountpoint,
            "--meta",
            meta,
            "--secret-file",
            secret_file,
            "--ready-file",
            str(ready),
            *extra,
        ],
        log_path,
        module="fusefs",
    )
    report = json.loads(wait_for_file(ready, proc, log_path, timeout, what="the mount process"))
    ready.unlink(missing_ok=True)
    return MountProcess(proc, report.get("metrics") or "")
