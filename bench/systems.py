"""The systems the filesystem benchmark compares, behind one small interface:
``name``, ``mountpoint``, ``start()``, ``stop()`` and ``pids()`` (role -> process ids, for
CPU seconds and peak memory). MooseFS lives in bench/moosefs.py, the Python-FUSE floor's
filesystem in bench/floorfs.py."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Protocol


class System(Protocol):
    name: str
    mountpoint: Path

    def start(self) -> None: ...
    def stop(self) -> None: ...
    def pids(self) -> dict[str, list[int]]: ...


class LocalDisk:
    """A directory on the disk the benchmark's --dir is on: the yardstick."""

    name = "local"

    def __init__(self, work: Path) -> None:
        self.mountpoint = work / "local"

    def start(self) -> None:
        self.mountpoint.mkdir(parents=True, exist_ok=True)

    def stop(self) -> None:
        pass

    def pids(self) -> dict[str, list[int]]:
        return {}


class PythonFuseFloor:
    """bench/floorfs.py, a pyfuse3 passthrough over a directory of the local disk: what
    Python FUSE costs on this machine, with no RPC and no replication behind it."""

    name = "floor"

    def __init__(self, work: Path) -> None:
        self.source = work / "floor-source"
        self.mountpoint = work / "floor"
        self._ready = work / "floor.ready"
        self._log = work / "floor.log"
        self._proc: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        self.source.mkdir(parents=True, exist_ok=True)
        self.mountpoint.mkdir(parents=True, exist_ok=True)
        self._ready.unlink(missing_ok=True)
        with open(self._log, "ab") as log:
            self._proc = subprocess.Popen(
                [
                    sys.executable,
                    "-m",
                    "bench.floorfs",
                    str(self.source),
                    str(self.mountpoint),
                    "--ready-file",
                    str(self._ready),
                ],
                stdout=log,
                stderr=log,
            )
        deadline = time.monotonic() + 30
        while not self._ready.exists():
            if self._proc.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(f"floorfs did not mount:\n{self._log.read_text()}")
            time.sleep(0.05)

    def stop(self) -> None:
        if self._proc is None:
            return
        if os.path.ismount(self.mountpoint):
            subprocess.run(["umount", str(self.mountpoint)], capture_output=True, check=False)
        if self._proc.poll() is None:
            self._proc.send_signal(signal.SIGTERM)
        try:
            self._proc.wait(30)
        except subprocess.TimeoutExpired:
            self._proc.kill()
            subprocess.run(["umount", "-l", str(self.mountpoint)], capture_output=True, check=False)
        self._proc = None

    def pids(self) -> dict[str, list[int]]:
        return {"client": [self._proc.pid]} if self._proc is not None else {}


class Shoalfs:
    """``shoal up``: a meta role, 3 chunk servers and a mount on loopback, on the embedded
    defaults (4 MiB chunks), the way the README's first command brings it up."""

    name = "shoalfs"

    def __init__(
        self, work: Path, capacity_mib: int, replicas: int = 2, chunk_servers: int = 3
    ) -> None:
        self.workdir = work / "cluster"
        self.mountpoint = work / "mnt"
        self.capacity_mib, self.replicas = capacity_mib, replicas
        self.chunk_servers = chunk_servers
        self._cluster: dict | None = None

    def start(self) -> None:
        _shoal(
            "up",
            "--workdir",
            str(self.workdir),
            "--mountpoint",
            str(self.mountpoint),
            "--capacity",
            f"{self.capacity_mib}MiB",
            "--replicas",
            str(self.replicas),
            "--chunk-servers",
            str(self.chunk_servers),
        )
        self._cluster = json.loads((self.workdir / "cluster.json").read_text())

    def stop(self) -> None:
        if self._cluster is not None:
            _shoal("down", "--workdir", str(self.workdir))
            self._cluster = None

    def pids(self) -> dict[str, list[int]]:
        c = self._cluster or {}
        return {
            "client": [c["mount_pid"]] if c.get("mount_pid") else [],
            "chunk servers": [s["pid"] for s in c.get("chunk_servers", [])],
            "meta": [c["meta_process"]["pid"]] if c.get("meta_process") else [],
        }


def _shoal(*args: str) -> str:
    result = subprocess.run(
        [sys.executable, "-m", "shoal.cli", *args],
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    if result.returncode != 0:
        raise RuntimeError(f"shoal {' '.join(args)} failed:\n{result.stdout}{result.stderr}")
    return result.stdout
