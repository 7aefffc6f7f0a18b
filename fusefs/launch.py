"""``shoal mount`` and ``shoal umount``: run a fusefs process, in the foreground or detached."""

from __future__ import annotations

import json
import os
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path

from .processes import spawn_daemon, wait_for_file


def is_mounted(mountpoint: str | Path) -> bool:
    target = os.path.realpath(mountpoint)
    with open("/proc/self/mountinfo") as f:
        for line in f:
            fields = line.split()
            if len(fields) > 4 and fields[4].replace("\\040", " ") == target:
                return True
    return False


@dataclass
class MountProcess:
    """A live mount's process, and where its metrics are (HOST:PORT; '' when it has none)."""
    proc: subprocess.Popen[bytes]
    metrics: str


def mount_background(volume: str, mountpoint: str, meta: str, secret_file: str,
                     log_path: Path, extra: list[str], timeout: float = 30.0) -> int:
    """Start a detached mount process and return its pid once the mount is live."""
    return mount_process(volume, mountpoint, meta, secret_file, log_path, extra,
                         timeout).proc.pid


def mount_process(volume: str, mountpoint: str, meta: str, secret_file: str, log_path: Path,
                  extra: list[str], timeout: float = 30.0) -> MountProcess:
    """Start a mount process in a session of its own; return it once the mount is live.
    A long-lived caller keeps the Popen to reap the process when it exits."""
    ready = log_path.with_suffix(".ready")
    ready.unlink(missing_ok=True)
    proc = spawn_daemon([volume, mountpoint, "--meta", meta, "--secret-file", secret_file,
                         "--ready-file", str(ready), *extra], log_path, module="fusefs")
    report = json.loads(wait_for_file(ready, proc, log_path, timeout, what="the mount process"))
    ready.unlink(missing_ok=True)
    return MountProcess(proc, report.get("metrics") or "")


def unmount(mountpoint: str, lazy: bool = False, timeout: float = 30.0) -> None:
    """Unmount; the mount process then commits nothing more (files are closed) and exits."""
    command = ["fusermount3", "-u", *(["-z"] if lazy else []), mountpoint]
    result = subprocess.run(command, capture_output=True, text=True)
    if result.returncode != 0:
        raise RuntimeError(result.stderr.strip() or f"fusermount3 failed ({result.returncode})")
    deadline = time.monotonic() + timeout
    while is_mounted(mountpoint) and time.monotonic() < deadline:
        time.sleep(0.05)
