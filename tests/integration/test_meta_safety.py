"""The meta role's promises: nothing acknowledged is lost to a SIGKILL at any moment,
'shoal fsck' finds what is inconsistent, and a backup taken while it runs restores."""

from __future__ import annotations

import errno
import json
import os
import random
import sqlite3
import stat
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from storaged.rpc import FsError
from tests.helpers import LocalCluster, StoragedProcess, call, mounted_volume, shoal
from tests.helpers import write_synced as create

SEED = int(os.environ.get("SHOALFS_SEED", random.randrange(1 << 30)))


@pytest.fixture(scope="module")
def env(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[LocalCluster, Path]]:
    with mounted_volume(tmp_path_factory.mktemp("meta"), ["--session-timeout", "5"]) as pair:
        yield pair


def fsck(cluster: LocalCluster) -> tuple[int, dict]:
    result = cluster.shoal("fsck", "v", "--json")
    return result.returncode, json.loads(result.stdout)


def try_op(fn, *args) -> bool:
    try:
        fn(*args)
        return True
    except OSError:
        return False


def test_sigkill_of_the_meta_role_loses_nothing_acknowledged(
    env: tuple[LocalCluster, Path],
) -> None:
    """A metadata-heavy workload (mkdir, create+fsync, rename, unlink) while the meta role
    is SIGKILLed and restarted at random moments. Every operation that returned success is
    in the model; afterwards the volume matches the model exactly and fsck is clean."""
    cluster, mnt = env
    rng = random.Random(SEED)
    print(f"seed {SEED} (SHOALFS_SEED={SEED} reproduces the operation sequence)")
    root = mnt / "crash"
    root.mkdir()
    model: dict[str, bytes] = {}  # relative path -> content, acknowledged state
    dirs = ["."]
    done = failed = kills = 0
    deadline = time.monotonic() + 20
    next_kill = time.monotonic() + rng.uniform(1, 3)
    while time.monotonic() < deadline:
        if time.monotonic() > next_kill:
            cluster.restart_meta()
            kills += 1
            next_kill = time.monotonic() + rng.uniform(1.5, 4)
        op = rng.random()
        if op < 0.1 and len(dirs) < 20:
            name = f"{rng.choice(dirs)}/d{done}"
            if try_op(os.mkdir, root / name):
                dirs.append(name)
                done += 1
            else:
                failed += 1
        elif op < 0.7 or not model:
            name = f"{rng.choice(dirs)}/f{done}"
            data = rng.randbytes(rng.randrange(1, 3000))
            if try_op(create, root / name, data):
                model[name] = data
                done += 1
            else:
                failed += 1
        elif op < 0.85:
            old = rng.choice(sorted(model))
            new = f"{rng.choice(dirs)}/r{done}"
            if try_op(os.rename, root / old, root / new):
                model[new] = model.pop(old)
                done += 1
            else:
                failed += 1
        else:
            victim = rng.choice(sorted(model))
            if try_op(os.unlink, root / victim):
                del model[victim]
                done += 1
            else:
                failed += 1
    print(
        f"operations acknowledged {done}, failed while the meta role was down {failed}, "
        f"SIGKILLs {kills}"
    )
    assert kills >= 3 and done > 50
    time.sleep(1.5)  # let the mount notice the last restart (sessions, attribute caches)

    on_disk: dict[str, bytes] = {}
    for path in root.rglob("*"):
        if path.is_file():
            on_disk[str(path.relative_to(root)).replace(os.sep, "/")] = path.read_bytes()
    expected = {k.removeprefix("./"): v for k, v in model.items()}
    # An operation that failed may still have happened (the reply was lost, not the
    # change); one that succeeded must be there. So: every acknowledged file, with its
    # bytes, and nothing else except the leftovers of unacknowledged creates and renames.
    for name, data in expected.items():
        assert on_disk.get(name) == data, f"acknowledged {name} is missing or wrong"
    extra = set(on_disk) - set(expected)
    assert len(extra) <= failed, extra
    code, report = fsck(cluster)
    assert code == 0 and report["problems"] == [], report


def test_fsck_reports_broken_metadata_and_missing_chunks(env: tuple[LocalCluster, Path]) -> None:
    cluster, mnt = env
    (mnt / "fsck").mkdir()
    create(mnt / "fsck" / "a", os.urandom(5000))
    os.link(mnt / "fsck" / "a", mnt / "fsck" / "b")
    os.symlink("a", mnt / "fsck" / "c")
    code, report = fsck(cluster)
    assert code == 0 and report["problems"] == [] and report["chunks"] >= 1
    ino = os.stat(mnt / "fsck" / "a").st_ino
    db = sqlite3.connect(cluster.meta.data_dir / "meta.db", timeout=10)
    db.execute("UPDATE inodes SET nlink = 5 WHERE id = ?", (ino,))
    db.commit()
    try:
        code, report = fsck(cluster)
        assert code == 3 and any(f"inode {ino}: nlink 5, but 2" in p for p in report["problems"])
    finally:
        db.execute("UPDATE inodes SET nlink = 2 WHERE id = ?", (ino,))
        db.commit()
        db.close()
    cid = call(cluster.meta.address, cluster.secret, "fs.chunks", ino, 0, 0)[0][1]
    for i in cluster.holders(cid):
        path = cluster.chunks[i].data_dir / "chunks" / cid[:2] / cid[2:4] / cid
        path.rename(path.with_name(cid + ".away"))
    try:
        code, report = fsck(cluster)
        assert (
            code == 3 and f"chunk {cid} has no copy on any live chunk server" in report["problems"]
        )
    finally:
        for i in range(3):
            away = cluster.chunks[i].data_dir / "chunks" / cid[:2] / cid[2:4] / (cid + ".away")
            if away.exists():
                away.rename(away.with_name(cid))
    assert fsck(cluster)[0] == 0


def test_fsck_repair_mends_values_an_earlier_release_stored(env: tuple[LocalCluster, Path]) -> None:
    """An earlier release stored what it was sent: a uid of -1 made every listing of the
    directory fail with EIO on every mount, and a mode without a file type too."""
    cluster, mnt = env
    (mnt / "ranges").mkdir()
    create(mnt / "ranges" / "owner", b"owned")
    create(mnt / "ranges" / "typeless", b"what am I")
    owner = os.stat(mnt / "ranges" / "owner").st_ino
    typeless = os.stat(mnt / "ranges" / "typeless").st_ino
    db = sqlite3.connect(cluster.meta.data_dir / "meta.db", timeout=10)
    with db:
        db.execute("UPDATE inodes SET uid = -1, gid = ? WHERE id = ?", (1 << 40, owner))
        db.execute("UPDATE inodes SET mode = ? WHERE id = ?", (0o640, typeless))
    db.close()
    with pytest.raises(OSError) as listing:
        os.listdir(mnt / "ranges")
    assert listing.value.errno == errno.EIO
    code, report = fsck(cluster)
    assert code == 3 and len(report["problems"]) == 2, report
    result = cluster.shoal("fsck", "v", "--repair")
    assert result.returncode == 0 and "clean" in result.stdout, result.stdout + result.stderr
    assert f"REPAIRED: inode {owner}: uid -1 -> 65534, gid {1 << 40} -> 65534" in result.stdout
    assert f"REPAIRED: inode {typeless}: mode 0o640 -> 0o100640" in result.stdout
    assert sorted(os.listdir(mnt / "ranges")) == ["owner", "typeless"]
    st = os.stat(mnt / "ranges" / "owner")
    assert (st.st_uid, st.st_gid) == (65534, 65534)
    assert stat.S_ISREG(os.stat(mnt / "ranges" / "typeless").st_mode)
    assert (mnt / "ranges" / "typeless").read_bytes() == b"what am I"
    again = cluster.shoal("fsck", "v", "--repair", "--json")
    assert again.returncode == 0 and json.loads(again.stdout)["repaired"] == []


def test_backup_while_running_and_restore(env: tuple[LocalCluster, Path], tmp_path: Path) -> None:
    cluster, mnt = env
    (mnt / "backed").mkdir()
    create(mnt / "backed" / "file", b"in the backup")
    result = cluster.shoal("meta", "backup", str(tmp_path / "meta.backup"))
    assert result.returncode == 0 and "backed up" in result.stdout, result.stderr
    create(mnt / "backed" / "later", b"after the backup")
    # restoring over the running meta role's database is refused
    refused = shoal(
        "meta",
        "restore",
        str(tmp_path / "meta.backup"),
        "--meta-db",
        str(cluster.meta.data_dir / "meta.db"),
        timeout=60,
    )
    assert refused.returncode == 1 and "stop the meta role" in refused.stderr
    # restore into a new place and serve it with a second meta role
    restored_dir = tmp_path / "restored"
    ok = shoal(
        "meta",
        "restore",
        str(tmp_path / "meta.backup"),
        "--meta-db",
        str(restored_dir / "meta.db"),
        timeout=60,
    )
    assert ok.returncode == 0, ok.stderr
    second = StoragedProcess(restored_dir, cluster.secret_file, extra=["--roles", "meta"]).start()
    try:
        volume = call(second.address, cluster.secret, "volume.get", "v")
        backed = call(second.address, cluster.secret, "fs.lookup", volume["root"], b"backed")
        f = call(second.address, cluster.secret, "fs.lookup", backed["ino"], b"file")
        assert f["size"] == len(b"in the backup")
        with pytest.raises(FsError) as info:
            call(second.address, cluster.secret, "fs.lookup", backed["ino"], b"later")
        assert info.value.errno == errno.ENOENT
    finally:
        second.stop()
    # a damaged backup is refused
    (tmp_path / "bad.backup").write_bytes(b"not a database" * 100)
    bad = shoal(
        "meta",
        "restore",
        str(tmp_path / "bad.backup"),
        "--meta-db",
        str(tmp_path / "x.db"),
        timeout=60,
    )
    assert bad.returncode == 1 and not (tmp_path / "x.db").exists()
