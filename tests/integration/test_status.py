"""``shoal status`` and ``shoal scrub`` against a real cluster: the verdict follows what
happens to the servers and the chunks, and the exit code says whether data is at risk."""

from __future__ import annotations

import json
import os
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.helpers import LocalCluster, call, mounted_volume, wait_until, write_synced

MiB = 1 << 20


@pytest.fixture
def env(tmp_path: Path) -> Iterator[tuple[LocalCluster, Path]]:
    # repair only when asked, and a down server stops counting after 2 s; the scrubbers
    # pause an hour between passes, so only 'shoal scrub --now' makes them run
    with mounted_volume(
        tmp_path,
        ["--repair-interval", "0", "--repair-down-grace", "2", "--repair-rate", "0"],
        chunk_extra=["--scrub-rate", "500MiB", "--scrub-interval", "3600"],
    ) as pair:
        yield pair


def status(cluster: LocalCluster) -> tuple[int, dict[str, Any]]:
    result = cluster.shoal("status", "--json")
    assert result.stdout, result.stderr
    return result.returncode, json.loads(result.stdout)


def volume(report: dict[str, Any], name: str = "v") -> dict[str, Any]:
    return next(v for v in report["volumes"] if v["name"] == name)


def test_status_follows_servers_dying_and_chunks_going_missing(
    env: tuple[LocalCluster, Path],
) -> None:
    cluster, mnt = env
    for i in range(6):
        write_synced(mnt / f"f{i}", os.urandom(MiB))
    assert cluster.shoal("repair", "--now").returncode == 0
    code, report = status(cluster)
    assert code == 0 and report["healthy"] and report["reasons"] == []
    assert [s["state"] for s in report["servers"]] == ["up"] * 3
    assert all(s["answers"] for s in report["servers"])
    assert sum(s["chunks"] for s in report["servers"]) == 12 or wait_until(
        lambda: sum(s["chunks"] for s in status(cluster)[1]["servers"]) == 12
    )
    v = volume(report)
    assert (v["health"], v["used_bytes"], v["replicas"]) == ("ok", 6 * MiB, 2)
    assert report["verified_at"] > 0
    table = cluster.shoal("status")
    assert table.returncode == 0 and "healthy: every server up" in table.stdout
    assert any(
        line.startswith("v ") and line.endswith(" ok") for line in table.stdout.splitlines()
    ), table.stdout

    # a server dies: the probe sees it before the meta role's heartbeat timeout does
    victim = cluster.chunks[0]
    victim_id = call(victim.address, cluster.secret, "health")["server_id"]
    victim.kill()
    code, report = status(cluster)
    assert code == 3 and not report["healthy"]
    assert volume(report)["health"] == "degraded"
    row = next(s for s in report["servers"] if s["id"] == victim_id)
    assert row["answers"] is False or row["state"] == "down"
    table = cluster.shoal("status")
    assert table.returncode == 3 and "NOT HEALTHY" in table.stdout
    assert "no-answer" in table.stdout or "down" in table.stdout

    # the meta role marks it down; the reason says which server
    report = wait_until(
        lambda: next(
            (r for r in [status(cluster)[1]] if any(s["state"] == "down" for s in r["servers"])),
            None,
        )
    )
    assert report, "the meta role never marked the killed server down"
    assert any(victim_id[:12] in reason and "is down" in reason for reason in report["reasons"])

    # a second one dies: with R=2, chunks whose copies were on both are gone, and those on
    # the survivor alone cannot get a second copy. Past the down grace, repair counts them.
    cluster.chunks[1].kill()
    assert wait_until(lambda: sum(s["state"] == "up" for s in cluster.servers()) == 1)
    time.sleep(2.5)
    assert cluster.shoal("repair", "--now").returncode in (1, 3)
    code, report = status(cluster)
    v = volume(report)
    assert code == 3 and v["health"] in ("missing", "under-replicated")
    assert v["missing"] + v["under_replicated"] == 6, v  # every file's one chunk
    # missing: the chunks whose every copy is on the two dead servers (reads through the
    # mount are no test of that: its caches may still hold the bytes)
    chunks = [
        call(
            cluster.meta.address, cluster.secret, "fs.chunks", os.stat(mnt / f"f{i}").st_ino, 0, 0
        )[0][1]
        for i in range(6)
    ]
    assert v["missing"] == sum(set(cluster.holders(cid)) <= {0, 1} for cid in chunks), v
    assert any("wants 2 copies but 1 servers are up" in r for r in report["reasons"])


def test_status_without_a_meta_role_says_so(env: tuple[LocalCluster, Path]) -> None:
    cluster, _ = env
    cluster.meta.kill()
    result = cluster.shoal("status")
    assert result.returncode == 3
    assert "meta role" in result.stderr and "does not answer" in result.stderr


def test_scrub_now_finds_bit_rot_and_says_so(env: tuple[LocalCluster, Path]) -> None:
    cluster, mnt = env
    write_synced(mnt / "quiet", os.urandom(MiB))
    ino = os.stat(mnt / "quiet").st_ino
    cid = call(cluster.meta.address, cluster.secret, "fs.chunks", ino, 0, 0)[0][1]
    shown = cluster.shoal("scrub", "--json")
    assert shown.returncode == 0, shown.stderr
    before = {r["id"]: r["scrub"]["passes"] for r in json.loads(shown.stdout)}
    assert len(before) == 3

    clean = cluster.shoal("scrub", "--now", "--json", "--timeout", "60")
    assert clean.returncode == 0, clean.stderr
    rows = json.loads(clean.stdout)
    assert all(r["scrub"]["passes"] == before[r["id"]] + 1 for r in rows)
    assert sum(r["scrub"]["checked"] for r in rows) >= 2  # the chunk's two copies

    holder = cluster.holders(cid)[0]
    path = cluster.chunks[holder].data_dir / "chunks" / cid[:2] / cid[2:4] / cid
    raw = bytearray(path.read_bytes())
    raw[len(raw) // 2] ^= 0x40
    path.write_bytes(bytes(raw))
    dirty = cluster.shoal("scrub", "--now", "--timeout", "60")
    assert dirty.returncode == 3, dirty.stdout + dirty.stderr
    assert "1 corrupted chunks found" in dirty.stderr
    assert "paused" in dirty.stdout  # the table: every pass finished

    # the scrubber asked for repair: the copy comes back without anyone else asking
    assert wait_until(
        lambda: (
            len(cluster.holders(cid)) == 2
            and not call(cluster.meta.address, cluster.secret, "repair.status")["running"]
        )
    )
    assert cluster.shoal("status").returncode == 0
