"""``shoal volume`` as an operator uses it: snapshots and clones, and the errors that say
what to do."""

from __future__ import annotations

import json
import os
import subprocess
import tempfile
from pathlib import Path

from tests.helpers import mounted_volume, shoal, write_synced


def test_snapshot_then_clone_from_it_and_read_the_old_contents(tmp_path: Path) -> None:
    with mounted_volume(tmp_path, []) as (cluster, mnt):
        old = os.urandom(300_000)
        write_synced(mnt / "file", old)
        made = cluster.shoal("volume", "snapshot", "v", "--snapshot", "before", "--json")
        assert made.returncode == 0, made.stderr
        assert json.loads(made.stdout)["name"] == "before"
        write_synced(mnt / "file", b"changed after the snapshot")
        listed = cluster.shoal("volume", "snapshots")
        assert listed.returncode == 0 and "before" in listed.stdout

        cloned = cluster.shoal("volume", "clone", "restored", "--from", "snapshot:before")
        assert cloned.returncode == 0, cloned.stderr
        clone = json.loads(cloned.stdout)
        source = json.loads(cluster.shoal("volume", "show", "v").stdout)
        assert (clone["capacity"], clone["replicas"], clone["chunk_size"]) == (
            source["capacity"],
            source["replicas"],
            source["chunk_size"],
        )
        target = Path(tempfile.mkdtemp(prefix="shoalfs-test-"))
        mounted = cluster.shoal(
            "mount", "restored", str(target), "--log-file", str(tmp_path / "clone.log")
        )
        try:
            assert mounted.returncode == 0, mounted.stderr
            assert (target / "file").read_bytes() == old
        finally:
            subprocess.run(["fusermount3", "-u", str(target)], capture_output=True, check=False)
        target.rmdir()

        gone = cluster.shoal("volume", "clone", "x", "--from", "snapshot:nope")
        assert gone.returncode == 1 and "nope" in gone.stderr
        bad = cluster.shoal("volume", "clone", "x", "--from", "disk:v")
        assert bad.returncode == 2 and "snapshot:NAME" in bad.stderr
        missing = cluster.shoal("volume", "clone", "x")
        assert missing.returncode == 2 and "--from" in missing.stderr
        assert cluster.shoal("volume", "delete-snapshot", "before").stdout.strip() == "deleted"
        assert (
            "no snapshot named before"
            in cluster.shoal("volume", "delete-snapshot", "before").stdout
        )


def test_volume_help_teaches_every_action() -> None:
    out = shoal("volume", "--help", timeout=60).stdout
    for action in (
        "create",
        "resize",
        "snapshot",
        "snapshots",
        "delete-snapshot",
        "clone",
        "--from",
    ):
        assert action in out
