"""Three chunk servers on three "hosts" (network namespaces joined by veth pairs), R=2.

A host is cut off by taking its link down: its packets vanish without a reset, the way a
dead switch port or a powered-off node looks. Writes and reads through a real mount in the
root namespace must finish and return the right bytes while a host is cut off; when it
comes back, repair must bring every chunk back to R copies and say it is done.
"""

from __future__ import annotations

import hashlib
import json
import os
import subprocess
import tempfile
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from tests.helpers import StoragedProcess, call, make_secret, shoal
from tests.netns import Host, Hosts

MiB = 1 << 20


@dataclass
class NetCluster:
    hosts: list[Host]
    meta: StoragedProcess
    chunks: list[StoragedProcess]
    secret_file: Path
    secret: bytes
    mnt: Path
    files: dict[str, str] = field(default_factory=dict)

    def states(self) -> dict[str, str]:
        return {
            s["address"]: s["state"]
            for s in call(self.meta.address, self.secret, "cluster.servers")
        }

    def wait_state(self, host: Host, state: str, timeout: float = 30) -> None:
        address = f"tcp://{host.address}:7700"
        deadline = time.monotonic() + timeout
        while self.states().get(address) != state:
            assert time.monotonic() < deadline, f"{address} never became {state}: {self.states()}"
            time.sleep(0.2)

    def repair_now(self) -> dict:
        result = shoal(
            "repair",
            "--now",
            "--json",
            "--meta",
            self.meta.address,
            "--secret-file",
            str(self.secret_file),
            "--timeout",
            "120",
            timeout=180,
        )
        assert result.returncode in (0, 3), result.stdout + result.stderr
        return json.loads(result.stdout)

    def copies(self, cid: str, live: list[int]) -> int:
        return sum(bool(call(self.chunks[i].address, self.secret, "chunk.has", cid)) for i in live)

    def referenced(self) -> list[str]:
        return [
            cid
            for cid, _ in call(self.meta.address, self.secret, "repair.referenced", None, 10_000)
        ]

    def verify_all(self) -> None:
        drop_caches()
        for name, digest in self.files.items():
            assert sha256_file(self.mnt / name) == digest, f"{name} read back wrong"


def drop_caches() -> None:
    Path("/proc/sys/vm/drop_caches").write_text("3\n")  # no fork: see write_file


def sha256_file(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        while block := f.read(MiB):
            digest.update(block)
    return digest.hexdigest()


def write_file(path: Path, size: int, progress: list[int] | None = None) -> str:
    """Write in 1 MiB pieces, fsync, close; the hash of what fsync acknowledged."""
    digest = hashlib.sha256()
    with open(path, "wb") as f:
        for _ in range(size // MiB):
            block = os.urandom(MiB)
            f.write(block)
            digest.update(block)
            if progress is not None:
                progress.append(len(block))
        os.fsync(f.fileno())
    return digest.hexdigest()


@pytest.fixture(scope="module")
def net(tmp_path_factory: pytest.TempPathFactory) -> Iterator[NetCluster]:
    root = tmp_path_factory.mktemp("netns")
    secret_file = root / "secret"
    secret = make_secret(secret_file)
    with Hosts(3) as hosts:
        # The meta role stays in the root namespace and listens on each host's link, so
        # that cutting a host cuts exactly that host's chunk server off.
        meta = StoragedProcess(
            root / "meta",
            secret_file,
            extra=[
                "--roles",
                "meta",
                "--heartbeat-timeout",
                "3",
                *[arg for h in hosts for arg in ("--listen", f"tcp://{h.gateway}:0")],
                "--repair-interval",
                "0",
                "--repair-down-grace",
                "3",
                "--repair-rate",
                "0",
                "--rebalance-min-age",
                "1",
            ],
        ).start()
        chunks: list[StoragedProcess] = []
        mnt = Path(tempfile.mkdtemp(prefix="shoalfs-netns-"))
        try:
            for host, meta_address in zip(hosts, meta.addresses[1:]):
                chunks.append(
                    StoragedProcess(
                        root / f"chunk{host.index}",
                        secret_file,
                        listen=f"tcp://{host.address}:7700",
                        prefix=host.exec_prefix(),
                        extra=[
                            "--meta",
                            meta_address,
                            "--heartbeat-interval",
                            "0.5",
                            "--zone",
                            f"host{host.index}",
                            "--reserve",
                            "0",
                        ],
                    ).start()
                )
            cluster = NetCluster(hosts, meta, chunks, secret_file, secret, mnt)
            for host in hosts:
                cluster.wait_state(host, "up")
            call(meta.address, secret, "volume.create", "v", 4 << 30, 2, MiB)
            shoal(
                "mount",
                "v",
                str(mnt),
                "--meta",
                meta.address,
                "--secret-file",
                str(secret_file),
                "--log-file",
                str(root / "mount.log"),
                "--session-heartbeat",
                "1",
                "--cache-size",
                "2MiB",
                check=True,
                timeout=60,
            )
            yield cluster
        finally:
            for host in hosts:
                host.link_up()
            if subprocess.run(
                ["fusermount3", "-u", str(mnt)], capture_output=True, check=False
            ).returncode:
                subprocess.run(["fusermount3", "-uz", str(mnt)], capture_output=True, check=False)
            time.sleep(0.5)
            for proc in [*chunks, meta]:
                proc.stop()
            mnt.rmdir()


def test_a_host_cut_off_during_a_write(net: NetCluster) -> None:
    for i in range(3):
        net.files[f"before{i}"] = write_file(net.mnt / f"before{i}", 6 * MiB)

    progress: list[int] = []
    result: dict[str, object] = {}

    def writer() -> None:
        try:
            result["digest"] = write_file(net.mnt / "during", 40 * MiB, progress)
        except OSError as exc:
            result["error"] = exc

    started = time.monotonic()
    thread = threading.Thread(target=writer)
    thread.start()
    while sum(progress) < 8 * MiB and thread.is_alive():
        time.sleep(0.01)
    net.hosts[0].link_down()
    thread.join(180)
    elapsed = time.monotonic() - started
    assert not thread.is_alive(), "the write hung with a host cut off"
    assert "error" not in result, f"the write failed: {result.get('error')}"
    net.files["during"] = str(result["digest"])
    print(f"40 MiB written with host 1 cut off after 8 MiB: {elapsed:.1f}s")
    assert elapsed < 120

    net.wait_state(net.hosts[0], "down")
    net.verify_all()  # everything, including what was written during the cut, reads right


def test_reads_while_a_host_is_cut_off_and_repair_after_it_returns(net: NetCluster) -> None:
    net.hosts[0].link_up()
    net.wait_state(net.hosts[0], "up")

    reads = {"ok": 0}
    failures: list[str] = []
    stop = threading.Event()

    def reader() -> None:
        while not stop.is_set():
            drop_caches()
            for name, digest in net.files.items():
                try:
                    if sha256_file(net.mnt / name) != digest:
                        failures.append(f"{name}: wrong bytes")
                    else:
                        reads["ok"] += 1
                except OSError as exc:
                    failures.append(f"{name}: {exc}")

    thread = threading.Thread(target=reader)
    thread.start()
    try:
        deadline = time.monotonic() + 60
        while reads["ok"] < len(net.files) and time.monotonic() < deadline:
            time.sleep(0.05)
        net.hosts[1].link_down()
        cut_at = reads["ok"]
        net.wait_state(net.hosts[1], "down")
        deadline = time.monotonic() + 90
        while reads["ok"] < cut_at + 2 * len(net.files) and time.monotonic() < deadline:
            time.sleep(0.1)
    finally:
        stop.set()
        thread.join(120)
    assert not failures, failures
    assert reads["ok"] >= cut_at + 2 * len(net.files), "reads stalled with a host cut off"

    # With host 2 away past the grace, repair copies its chunks onto the others...
    time.sleep(3.5)
    chunks = net.referenced()
    status = net.repair_now()
    assert status["missing"] == 0 and status["failed"] == 0, status
    live = [0, 2]
    assert all(net.copies(cid, live) >= 2 for cid in chunks)

    # ...and once it is back, a pass finds nothing to do: R copies everywhere, and done.
    net.hosts[1].link_up()
    net.wait_state(net.hosts[1], "up")
    status = net.repair_now()
    assert status["under_replicated"] == 0 and status["missing"] == 0, status
    assert status["running"] is False
    assert all(net.copies(cid, [0, 1, 2]) >= 2 for cid in chunks)
    net.verify_all()
