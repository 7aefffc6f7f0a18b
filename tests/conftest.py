from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path

import faulthandler

import pytest

from tests.helpers import LocalCluster, StoragedProcess, make_secret

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
