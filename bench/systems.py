"""The systems the filesystem benchmark compares, behind one small interface:
``name``, ``mountpoint``, ``start()``, ``stop()`` and ``pids()`` (role -> process ids, for
CPU seconds and peak memory). MooseFS lives in bench/moosefs.py."""

from __future__ import annotations

import json
import subprocess
import sys
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
