from __future__ import annotations

import faulthandler
import json
import subprocess
import tempfile
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from tests.helpers import LocalCluster, StoragedProcess, make_secret, shoal

faulthandler.enable()


@pytest.fixture
def secret_file(tmp_path: Path) -> Path:
    path = tmp_path / "secret"
    make_secret(path)
    return path


@pytest.fixture
def secret(secret_file: Path) -> bytes:
    return secret_file.read_bytes().strip()


@pytest.fixture
def storaged(tmp_path: Path, secret_file: Path) -> Iterator[Callable[..., StoragedProcess]]:
    """Factory: ``storaged("name", extra=[...], env={...})`` starts a real daemon."""
    started: list[StoragedProcess] = []

    def start(name: str = "chunk", **kwargs: object) -> StoragedProcess:
        proc = StoragedProcess(tmp_path / name, secret_file, **kwargs)  # type: ignore[arg-type]
        started.append(proc)
        return proc.start()

    yield start
    for proc in started:
        proc.stop()


@pytest.fixture
def cluster(tmp_path: Path, secret_file: Path) -> Iterator[LocalCluster]:
    """A meta role and 3 chunk servers (zones zone0..zone2), all registered and up."""
    c = LocalCluster(tmp_path / "cluster", secret_file)
    try:
        yield c.start()
    finally:
        c.stop()


@dataclass
class Mounted:
    workdir: Path
    mnt: Path
    cluster: dict

    def shoal(self, *args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
        return shoal(*args, check=check)

    def mount_log(self) -> str:
        return (self.workdir / "logs" / "mount.log").read_text(errors="replace")


@pytest.fixture(scope="module")
def mounted(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Mounted]:
    """'shoal up' as a user runs it: meta, 3 chunk servers, volume 'default' (R=2) mounted."""
    workdir = tmp_path_factory.mktemp("cluster")
    # Under /tmp directly and mode 755, so tests can act as other users through it
    # (pytest's own temporary directories are private to root).
    mnt = Path(tempfile.mkdtemp(prefix="shoalfs-mnt-"))
    mnt.chmod(0o755)
    m = Mounted(workdir, mnt, {})
    m.shoal("up", "--workdir", str(workdir), "--mountpoint", str(m.mnt), "--capacity", "20GiB")
    m.cluster = json.loads((workdir / "cluster.json").read_text())
    try:
        yield m
    finally:
        m.shoal("down", "--workdir", str(workdir), check=False)
        mnt.rmdir()


@pytest.fixture
def here(mounted: Mounted) -> Path:
    """A fresh directory on the mounted volume for one test."""
    path = mounted.mnt / f"t-{uuid.uuid4().hex[:8]}"
    path.mkdir()
    return path
