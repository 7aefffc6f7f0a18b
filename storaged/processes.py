"""Starting and stopping the daemons of a local cluster as detached background processes."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

from .rpc import requestid


def spawn_daemon(
    args: list[str], log_path: Path, module: str = "storaged"
) -> subprocess.Popen[bytes]:
    """Start ``python -m MODULE ARGS`` in its own session, so it outlives ``shoal``.
    The request that asked for it (a CSI NodeStageVolume) is named in its environment, so
    its start-up log lines carry that request id."""
    log_path.parent.mkdir(parents=True, exist_ok=True)
    env = dict(os.environ)
    rid = requestid.current()
    if rid is not None:
        env[requestid.ENV] = rid
    with open(log_path, "ab") as log_file:
        return subprocess.Popen(
            [sys.executable, "-m", module, *args],
            stdin=subprocess.DEVNULL,
            stdout=log_file,
            stderr=log_file,
            start_new_session=True,
            close_fds=True,
            env=env,
        )


def wait_for_file(
    path: Path,
    proc: subprocess.Popen[bytes],
    log_path: Path,
    timeout: float = 30.0,
    what: str = "storaged",
) -> str:
    """Wait until the daemon writes ``path`` (it is ready); raise with its log if it died."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if path.exists() and path.stat().st_size:
            return path.read_text()
        if proc.poll() is not None:
            raise RuntimeError(
                f"{what} exited with code {proc.returncode}; last log lines:\n{tail(log_path)}"
            )
        time.sleep(0.05)
    raise RuntimeError(f"{what} did not start within {timeout:.0f}s; see {log_path}")


def wait_for_address_file(
    path: Path, proc: subprocess.Popen[bytes], log_path: Path, timeout: float = 30.0
) -> dict[str, object]:
    """Wait until storaged reports where it listens."""
    return json.loads(wait_for_file(path, proc, log_path, timeout))


def tail(path: Path, lines: int = 15) -> str:
    try:
        return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])
    except FileNotFoundError:
        return "(no log)"


def is_our_process(pid: int, marker: str) -> bool:
    """True if ``pid`` is alive and its command line mentions ``marker`` (a pid may be reused)."""
    if pid <= 0:
        return False
    try:
        cmdline = Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode()
    except (FileNotFoundError, ProcessLookupError, PermissionError):
        return False
    return marker in cmdline


def stop_process(pid: int, marker: str, timeout: float = 15.0) -> bool:
    """SIGTERM, wait, then SIGKILL. Returns False if it was not running."""
    if not is_our_process(pid, marker):
        return False
    os.kill(pid, signal.SIGTERM)
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if not is_our_process(pid, marker) or _is_zombie(pid):
            return True
        time.sleep(0.05)
    os.kill(pid, signal.SIGKILL)
    return True


def _is_zombie(pid: int) -> bool:
    try:
        return Path(f"/proc/{pid}/stat").read_text().split(") ", 1)[1].startswith("Z")
    except (FileNotFoundError, IndexError):
        return True
