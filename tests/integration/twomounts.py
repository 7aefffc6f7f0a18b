"""Two mounts of one volume on one cluster, for the tests of what one mount sees of the
other's changes (test_coherence.py, test_delegations.py)."""

from __future__ import annotations

import os
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from tests.helpers import LocalCluster, free_port, mount, mounted_volume, wait_until


@dataclass
class Two:
    cluster: LocalCluster
    a: Path
    b: Path
    port: int  # the meta role's metrics
    logs: list[Path]


@pytest.fixture(scope="module")
def two(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Two]:
    root = tmp_path_factory.mktemp("coherence")
    port = free_port()
    with mounted_volume(root, ["--metrics-listen", f"127.0.0.1:{port}"]) as (cluster, a):
        b = Path(tempfile.mkdtemp(prefix="shoalfs-b-"))
        mount(cluster, "v", b, root / "b.log", ["--session-heartbeat", "1"])
        two = Two(cluster, a, b, port, [root / "mount.log", root / "b.log"])
        try:
            for log in two.logs:

                def listening(log: Path = log) -> bool:
                    return "listening for invalidations" in log.read_text()

                wait_until(listening, timeout=20)
            yield two
        finally:
            os.system(f"fusermount3 -u {b} || fusermount3 -uz {b}")
            b.rmdir()
