"""Garbage collection on a real cluster and a real mount: what no file, snapshot or write in
progress references goes, and the chunk servers' usage comes back down; nothing else goes."""

from __future__ import annotations

import hashlib
import json
import os
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
import trio

from storaged.gc import GcReport, collect
from storaged.metaclient import MetaClient
from storaged.rpc import RpcClient
from tests.helpers import LocalCluster, call, mounted_volume
from tests.helpers import write_synced as write

MiB = 1 << 20
GRACE = 10.0


@dataclass
class GcEnv:
    cluster: LocalCluster
    mnt: Path

    def meta(self, method: str, *args):
        return call(self.cluster.meta.address, self.cluster.secret, method, *args)

    def used(self) -> int:
        return sum(
            call(c.address, self.cluster.secret, "chunk.usage")["used"] for c in self.cluster.chunks
        )

    def gc(self, dry_run: bool = False) -> dict:
        """One pass, run in this process: a subprocess would inherit (and on exit close) the
        test's open file, and FUSE commits a file on every close of a descriptor."""

        async def go() -> GcReport:
            async with RpcClient(self.cluster.secret) as client:
                return await collect(MetaClient(client, self.cluster.meta.address), GRACE, dry_run)

        return trio.run(go).as_dict()

    def gc_command(self, *extra: str) -> dict:
        result = self.cluster.shoal("gc", "--grace", str(GRACE), "--json", *extra)
        assert result.returncode == 0, result.stdout + result.stderr
        return json.loads(result.stdout)


@pytest.fixture(scope="module")
def env(tmp_path_factory: pytest.TempPathFactory) -> Iterator[GcEnv]:
    # sessions expire after 4 s, so the meta role answers the collector after 8 s
    with mounted_volume(
        tmp_path_factory.mktemp("gc"), ["--session-timeout", "4", "--gc-interval", "0"]
    ) as (cluster, mnt):
        yield GcEnv(cluster, mnt)


def digest(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def test_collection_frees_garbage_and_keeps_files_snapshots_and_writes_in_progress(
    env: GcEnv,
) -> None:
    keep = write(env.mnt / "keep", os.urandom(3 * MiB))
    snapped = write(env.mnt / "snapped", os.urandom(2 * MiB))
    env.meta("snapshot.create", "snap", "v")
    os.unlink(env.mnt / "snapped")  # only the snapshot references it now
    write(env.mnt / "gone1", os.urandom(4 * MiB))
    write(env.mnt / "gone2", os.urandom(4 * MiB))
    write(env.mnt / "rewritten", os.urandom(2 * MiB))

    os.unlink(env.mnt / "gone1")
    os.unlink(env.mnt / "gone2")
    rewritten = write(env.mnt / "rewritten", os.urandom(2 * MiB))
    # small writes into a stored file: slices over its pieces, in chunks of their own
    patched = bytearray(os.urandom(2 * MiB))
    write(env.mnt / "patched", bytes(patched))
    fd = os.open(env.mnt / "patched", os.O_RDWR)
    for off in (1000, MiB + 7):
        os.pwrite(fd, b"slice", off)
        patched[off : off + 5] = b"slice"
    os.fsync(fd)
    os.close(fd)
    rows = env.meta("fs.chunks", os.stat(env.mnt / "patched").st_ino, 0, 1, True)
    assert [len(row[4]) for row in rows] == [1, 1], rows
    # a write in progress: full pieces uploaded, nothing committed until close
    in_progress = open(env.mnt / "in-progress", "wb")  # noqa: SIM115 (kept open across the GC)
    data = os.urandom(3 * MiB)
    in_progress.write(data)
    in_progress.flush()  # to the mount; its full pieces upload in the background
    time.sleep(GRACE + 1)  # everything above is now older than the grace period

    before = env.used()
    report = env.gc()
    assert report["failed_servers"] == [], report
    # gone1, gone2 and rewritten's old content: 10 pieces of 1 MiB, 2 copies each
    assert report["deleted"] == 20 and report["bytes_freed"] == 20 * MiB, report
    assert before - env.used() == 20 * MiB
    assert env.gc()["deleted"] == 0  # nothing more to do

    in_progress.close()
    assert digest(env.mnt / "in-progress") == hashlib.sha256(data).hexdigest()
    assert digest(env.mnt / "keep") == keep
    assert digest(env.mnt / "rewritten") == rewritten
    assert digest(env.mnt / "patched") == hashlib.sha256(patched).hexdigest()
    restored = env.meta("volume.create", "restored", 1 << 30, 2, MiB, {}, "snapshot:snap")
    assert restored["used_bytes"] > 2 * MiB  # the snapshot's chunks are still there: read one
    assert env.gc_command("--dry-run")["deleted"] == 0

    env.meta("volume.delete", "restored")
    env.meta("snapshot.delete", "snap")
    time.sleep(0.1)
    freed = env.gc()
    # the snapshot's own file ('snapped', 2 pieces x 2 copies) goes; files the snapshot
    # shared with the live volume (keep, the old rewritten content was already gone) stay
    assert freed["deleted"] == 4, freed
    assert digest(env.mnt / "keep") == keep
    assert snapped  # (its bytes are gone now, as asked)


def test_collection_needs_a_sane_grace(env: GcEnv) -> None:
    result = env.cluster.shoal("gc", "--grace", "1", timeout=60)
    assert result.returncode == 2 and "at least" in result.stderr
