"""A long mixed run: writers, readers, deletes and snapshots through a real mount while chunk
servers and the meta role are SIGKILLed and restarted at random, with garbage collection
and repair running all along. At the end every acknowledged file, and every file of the
last snapshot, must read back exactly; the run prints its counts and its seed.

Bounded: SHOALFS_CHAOS_SECONDS of chaos (default 75), then a bounded settle and verify.
At most one chunk server is down at a time (R=2: every acknowledged chunk keeps a live
copy), so any failed verification is a real loss, never bad luck.
"""

from __future__ import annotations

import hashlib
import json
import os
import random
import subprocess
import tempfile
import threading
import time
from collections import Counter
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.helpers import LocalCluster, StoragedProcess, call, mount, mounted_volume

MiB = 1 << 20
SEED = int(os.environ.get("SHOALFS_SEED", random.randrange(1 << 30)))
CHAOS_SECONDS = float(os.environ.get("SHOALFS_CHAOS_SECONDS", "75"))
# The worst case of every bounded step after the chaos, so pytest's timeout is never what
# ends a slow run: the last fault's overrun (5 + 6 s of sleeps, a 20 s start, a 30 s wait
# for registration), the workers' joins (60 s in all), the settle wait (30), the repair
# (150), the verifying reads (60: each waits at most --meta-wait), the clone's mount (60)
# and fsck (60). A quiet run takes CHAOS_SECONDS plus about 30 s.
AFTER_CHAOS_BOUND = 5 + 6 + 20 + 30 + 60 + 30 + 150 + 60 + 60 + 60


class Model:
    """What the test knows for sure. A name is 'busy' while an operation on it runs; after
    a failed operation its state is unknown and it is left out of verification."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.files: dict[str, tuple[str, int]] = {}  # name -> (sha256, size), acknowledged
        self.busy: set[str] = set()
        self.unknown: set[str] = set()
        self.counts: Counter[str] = Counter()
        self.wrong: list[str] = []

    def begin(self, name: str) -> bool:
        with self.lock:
            if name in self.busy:
                return False
            self.busy.add(name)
            return True

    def release(self, name: str) -> None:
        """End an operation that changed nothing (a read)."""
        with self.lock:
            self.busy.discard(name)

    def end(self, name: str, state: tuple[str, int] | None, ok: bool) -> None:
        with self.lock:
            self.busy.discard(name)
            if not ok:
                self.files.pop(name, None)
                self.unknown.add(name)
            elif state is None:
                self.files.pop(name, None)
                self.unknown.discard(name)
            else:
                self.files[name] = state
                self.unknown.discard(name)

    def stable(self) -> dict[str, tuple[str, int]]:
        """Acknowledged files no operation is touching (call with the lock held)."""
        return {n: s for n, s in self.files.items() if n not in self.busy}


def sha(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


@pytest.fixture
def env(tmp_path: Path) -> Iterator[tuple[LocalCluster, Path]]:
    with mounted_volume(
        tmp_path,
        [
            "--session-timeout",
            "30",
            "--gc-interval",
            "2",
            "--gc-grace",
            "10",
            "--repair-interval",
            "3",
            "--repair-down-grace",
            "4",
            "--repair-rate",
            "0",
            "--rebalance-min-age",
            "2",
        ],
        chunk_extra=["--scrub-rate", "50MiB", "--scrub-interval", "5"],
        mount_extra=["--cache-size", "4MiB"],
    ) as pair:
        yield pair


@pytest.mark.timeout(CHAOS_SECONDS + AFTER_CHAOS_BOUND + 30)
def test_mixed_workload_under_random_kills_loses_nothing(
    env: tuple[LocalCluster, Path], tmp_path: Path
) -> None:
    cluster, mnt = env
    rng = random.Random(SEED)
    print(f"\nchaos seed {SEED} (SHOALFS_SEED={SEED} to repeat), {CHAOS_SECONDS:g}s")
    model = Model()
    stop = threading.Event()
    snapshots: list[tuple[str, dict[str, tuple[str, int]]]] = []

    def writer(wid: int) -> None:
        r = random.Random(SEED + wid)
        n = 0
        while not stop.is_set():
            with model.lock:
                names = list(model.files)
            if names and r.random() < 0.25:
                name = r.choice(names)  # overwrite
            else:
                name, n = f"w{wid}-{n}", n + 1
            if not model.begin(name):
                continue
            data = r.randbytes(r.choice([0, 1, 4096, 300_000, MiB + 17, 3 * MiB]))
            try:
                with open(mnt / name, "wb") as f:
                    f.write(data)
                    os.fsync(f.fileno())
                model.end(name, (sha(data), len(data)), True)
                model.counts["writes"] += 1
            except OSError:
                model.end(name, None, False)
                model.counts["writes failed"] += 1

    def reader() -> None:
        r = random.Random(SEED + 100)
        while not stop.is_set():
            with model.lock:
                choices = list(model.stable().items())
            if not choices:
                time.sleep(0.05)
                continue
            name, (digest, _) = r.choice(choices)
            if not model.begin(name):
                continue
            try:
                if model.files.get(name, ("",))[0] == digest:  # not replaced meanwhile
                    data = (mnt / name).read_bytes()
                    if sha(data) != digest:
                        model.wrong.append(f"{name}: read back wrong during the run")
                    model.counts["reads"] += 1
            except OSError:
                model.counts["reads failed"] += 1
            finally:
                model.release(name)

    def deleter() -> None:
        r = random.Random(SEED + 200)
        while not stop.wait(0.3):
            with model.lock:
                choices = list(model.stable())
            if not choices:
                continue
            name = r.choice(choices)
            if not model.begin(name):
                continue
            try:
                os.unlink(mnt / name)
                model.end(name, None, True)
                model.counts["deletes"] += 1
            except OSError:
                model.end(name, None, False)
                model.counts["deletes failed"] += 1

    def snapshotter() -> None:
        n = 0
        while not stop.wait(4):
            name = f"snap{n}"
            n += 1
            with model.lock:  # no operation starts while the snapshot is taken
                expected = dict(model.stable())
                try:
                    call(
                        cluster.meta.address,
                        cluster.secret,
                        "snapshot.create",
                        name,
                        "v",
                        timeout=20,
                    )
                    snapshots.append((name, expected))
                    model.counts["snapshots"] += 1
                except Exception:
                    model.counts["snapshots failed"] += 1
                    continue
            if len(snapshots) > 2:
                old, _ = snapshots.pop(0)
                try:
                    call(cluster.meta.address, cluster.secret, "snapshot.delete", old)
                    model.counts["snapshots deleted"] += 1
                except Exception:
                    snapshots.insert(0, (old, {}))  # still there; never verified

    workers = [threading.Thread(target=writer, args=(i,)) for i in range(2)]
    workers += [threading.Thread(target=f) for f in (reader, deleter, snapshotter)]
    for t in workers:
        t.start()
    faults: Counter[str] = Counter()
    try:
        deadline = time.monotonic() + CHAOS_SECONDS
        while time.monotonic() < deadline:
            time.sleep(rng.uniform(2, 5))
            if rng.random() < 0.25:
                cluster.restart_meta()  # SIGKILL, same address
                faults["meta killed"] += 1
            else:
                index = rng.randrange(len(cluster.chunks))
                victim = cluster.chunks[index]
                victim.kill()
                faults["chunk server killed"] += 1
                time.sleep(rng.uniform(0.5, 6))
                cluster.chunks[index] = StoragedProcess(
                    victim.data_dir,
                    cluster.secret_file,
                    extra=cluster.chunk_args(index),
                    listen=victim.address if rng.random() < 0.5 else "tcp://127.0.0.1:0",
                ).start()
            cluster.wait_registered(timeout=30)
    finally:
        stop.set()
        joined_by = time.monotonic() + 60
        for t in workers:
            t.join(max(0.0, joined_by - time.monotonic()))
    assert not any(t.is_alive() for t in workers), "a worker hung"

    # Settle: every server up, a repair pass done, then verify from the servers.
    cluster.wait_registered(timeout=30)
    repair = cluster.shoal("repair", "--now", "--json", "--timeout", "120", timeout=150)
    status = json.loads(repair.stdout)
    assert status["missing"] == 0, status

    Path("/proc/sys/vm/drop_caches").write_text("3\n")
    verified, lost_bytes, lost = 0, 0, list(model.wrong)
    for name, (digest, size) in model.files.items():
        try:
            ok = sha((mnt / name).read_bytes()) == digest
        except OSError as exc:
            ok = False
            lost.append(f"{name}: {exc}")
        if ok:
            verified += 1
        else:
            lost_bytes += size
            lost.append(name)

    snap_verified = 0
    if snapshots and snapshots[-1][1]:
        snap_name, expected = snapshots[-1]
        snap_verified, snap_lost = verify_snapshot(cluster, snap_name, expected, tmp_path)
        lost += snap_lost
        lost_bytes += sum(
            expected[n.split(":")[0]][1] for n in snap_lost if n.split(":")[0] in expected
        )

    fsck = cluster.shoal("fsck", "v", "--json", timeout=60)

    print(f"chaos: {sum(model.counts.values())} operations {dict(model.counts)}")
    print(f"chaos: {sum(faults.values())} faults injected {dict(faults)}")
    print(
        f"chaos: {verified} files verified, {snap_verified} files of the last snapshot "
        f"verified, {len(model.unknown)} left out after a failed operation"
    )
    print(f"chaos: bytes lost = {lost_bytes}")
    assert not lost, f"seed {SEED}: lost or wrong: {lost[:20]}"
    assert lost_bytes == 0
    assert fsck.returncode == 0, fsck.stdout + fsck.stderr
    assert model.counts["writes"] >= 20 and sum(faults.values()) >= 5, (model.counts, faults)


def verify_snapshot(
    cluster: LocalCluster, snapshot: str, expected: dict[str, tuple[str, int]], tmp_path: Path
) -> tuple[int, list[str]]:
    """Clone the snapshot into a volume, mount it, and check the files it must hold."""
    call(
        cluster.meta.address,
        cluster.secret,
        "volume.create",
        "clone",
        1 << 30,
        2,
        MiB,
        {},
        f"snapshot:{snapshot}",
    )
    mnt = Path(tempfile.mkdtemp(prefix="shoalfs-chaos-clone-"))
    mount(cluster, "clone", mnt, tmp_path / "clone.log")
    verified, lost = 0, []
    try:
        for name, (digest, _) in expected.items():
            try:
                if sha((mnt / name).read_bytes()) == digest:
                    verified += 1
                else:
                    lost.append(f"{name}: wrong in snapshot {snapshot}")
            except OSError as exc:
                lost.append(f"{name}: {exc} in snapshot {snapshot}")
    finally:
        subprocess.run(["fusermount3", "-u", str(mnt)], capture_output=True, check=False)
        mnt.rmdir()
    return verified, lost
