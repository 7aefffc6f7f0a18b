"""Issue 24's long-lived adversarial test: a mount writes, reads and verifies while
tests/adversary.py holds hundreds of unauthenticated connections against every server,
announces huge frames, sends garbage, and calls every registered method with bad
parameters and malformed heartbeats. At the end every server and the mount are alive,
each server's resident memory stayed within its bound, every file reads back as written,
`shoal fsck` is clean, and the counts are printed.

SHOALFS_ADVERSARY_SECONDS sets how long the attack lasts (default 40: CI's share).
"""

from __future__ import annotations

import hashlib
import json
import os
import random
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

from tests.helpers import call, mounted_volume, write_synced

SECONDS = float(os.environ.get("SHOALFS_ADVERSARY_SECONDS", "40"))
# docs/rpc.md: what peers without the secret can hold is under 10 MiB per server. Beside
# it the workload's own traffic moves a server's resident memory (allocator arenas, the
# meta role's page cache, a chunk server's buffers): measured 4-6 MiB per server in 40 s
# of this workload alone (2,382 files), 10-18 MiB with the adversary (its authenticated
# calls included). Before the pre-login frame limit, 8 connections took 506 MiB.
UNAUTHENTICATED_BOUND = 10 << 20
WORKLOAD_ALLOWANCE = 30 << 20


def resident(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) * 1024
    raise AssertionError(f"no VmRSS for {pid}")


class Workload(threading.Thread):
    """Writes files with fsync and reads random ones back, checking every byte, until
    stopped; what went wrong is kept for the test to report."""

    def __init__(self, root: Path, seed: int) -> None:
        super().__init__(daemon=True)
        self.root, self.rng = root, random.Random(seed)
        self.files: dict[str, str] = {}
        self.stop = threading.Event()
        self.errors: list[str] = []
        self.writes = self.reads = 0

    def run(self) -> None:
        while not self.stop.is_set() and len(self.errors) < 10:
            name = f"f{self.rng.randrange(150):03d}"
            size = self.rng.choice([0, 100, 4096, 65536, 300_000, 1_500_000])
            try:
                self.files[name] = write_synced(self.root / name, self.rng.randbytes(size))
                self.writes += 1
                other = self.rng.choice(sorted(self.files))
                got = hashlib.sha256((self.root / other).read_bytes()).hexdigest()
                self.reads += 1
                if got != self.files[other]:
                    self.errors.append(f"{other}: read back other bytes than were written")
            except OSError as exc:
                self.errors.append(f"{name}: {exc!r}")


@pytest.mark.plaintext
def test_servers_and_a_mount_outlive_an_adversary(tmp_path: Path) -> None:
    with mounted_volume(tmp_path, []) as (cluster, mnt):
        servers = {cluster.meta.address: cluster.meta, **{c.address: c for c in cluster.chunks}}
        workload = Workload(mnt, seed=random.randrange(1 << 30))
        workload.start()
        time.sleep(3)  # warm: the servers' memory after ordinary traffic
        baseline = {a: resident(s.pid) for a, s in servers.items()}
        peak = dict(baseline)
        adversary = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "tests.adversary",
                "--meta",
                cluster.meta.address,
                *[arg for c in cluster.chunks for arg in ("--chunk", c.address)],
                "--secret-file",
                str(cluster.secret_file),
                "--seconds",
                str(SECONDS),
            ],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        try:
            give_up = time.monotonic() + SECONDS + 60
            while adversary.poll() is None and time.monotonic() < give_up:
                for address, server in servers.items():
                    peak[address] = max(peak[address], resident(server.pid))
                time.sleep(0.5)
        finally:
            if adversary.poll() is None:
                adversary.kill()
            out, err = adversary.communicate(timeout=30)
            workload.stop.set()
            workload.join(timeout=120)
        assert adversary.returncode == 0, err[-3000:]
        report = json.loads(out)
        print(
            f"\nadversary (seed {report['seed']}, {SECONDS:.0f} s) against "
            f"{len(servers)} servers; the mount wrote {workload.writes} files with fsync "
            f"and verified {workload.reads} reads"
        )
        for address, counts in report["servers"].items():
            print(
                f"  {address}: resident {baseline[address] >> 20} -> peak "
                f"{peak[address] >> 20} MiB; "
                + ", ".join(f"{k} {v}" for k, v in sorted(counts.items()))
            )

        assert not workload.is_alive() and workload.errors == [], workload.errors
        assert workload.writes > 20 and workload.reads > 20
        for address, counts in report["servers"].items():
            server = servers[address]
            assert server.proc is not None and server.proc.poll() is None, (
                f"{address} died:\n{server.read_log()[-3000:]}"
            )
            assert call(address, cluster.secret, "health")["status"] == "ok"
            assert "Traceback" not in server.read_log(), server.read_log()[-3000:]
            grew = peak[address] - baseline[address]
            assert grew <= UNAUTHENTICATED_BOUND + WORKLOAD_ALLOWANCE, (address, grew)
            # the attack happened: slots held and refused, huge frames and garbage cut
            # off, every method called, no answer an INTERNAL error
            assert counts.get("idle: opened", 0) > 100, counts
            assert counts.get("idle: closed at once", 0) > 0, counts
            assert 0 < counts.get("huge: sent", 0) == counts.get("huge: closed by the server"), (
                counts
            )
            assert 0 < counts.get("garbage: sent", 0) == counts.get("garbage: closed by the server")
            assert counts.get("call: methods tried") == counts.get("call: methods listed"), counts
            assert counts.get("call: INVALID_ARGUMENT", 0) > 0, counts
            assert not any("INTERNAL" in key for key in counts), counts
        meta_counts = report["servers"][cluster.meta.address]
        beats = {k: v for k, v in meta_counts.items() if k.startswith("heartbeat:")}
        assert set(beats) == {"heartbeat: INVALID_ARGUMENT"}, beats
        listed = call(cluster.meta.address, cluster.secret, "cluster.servers")
        assert sorted(s["address"] for s in listed) == sorted(c.address for c in cluster.chunks)

        assert os.path.ismount(mnt)
        for name, digest in sorted(workload.files.items()):
            assert hashlib.sha256((mnt / name).read_bytes()).hexdigest() == digest, name
        fsck = cluster.shoal("fsck", "v", "--json")
        assert fsck.returncode == 0 and json.loads(fsck.stdout)["problems"] == [], fsck.stdout
