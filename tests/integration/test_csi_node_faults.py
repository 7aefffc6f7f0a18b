"""The node plugin's two promises under faults, with real processes and real SIGKILLs:

- restarting the node plugin (SIGKILL, then start again) never disturbs a mounted volume:
  a writer keeps writing without one error, and the next publish/unpublish calls work;
- a broken mount (its fusefs process killed: ENOTCONN) is reported, cleaned up and mounted
  again, so pods are never stuck on it.
"""

from __future__ import annotations

import errno
import json
import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest

from protos import csi_pb2 as pb
from tests.helpers import SHOAL, free_port, http_get, scrape, wait_until

from .csi_support import CsiServer, Env, MiB, NodePaths, csi_env, is_mounted
from .test_csi import create, publish, read_file, stage, unpublish, unstage, write_file

WRITER = r"""
import os, sys, time
path, seconds = sys.argv[1], float(sys.argv[2])
block = bytes(range(256)) * 256          # 64 KiB, a recognisable pattern
written = 0
deadline = time.monotonic() + seconds
with open(path, "wb") as f:
    while time.monotonic() < deadline:
        f.write(block)
        written += len(block)
        if written % (16 * len(block)) == 0:
            f.flush()
            os.fsync(f.fileno())
        time.sleep(0.005)
    f.flush()
    os.fsync(f.fileno())
print(written)
"""


@pytest.fixture(scope="module")
def env(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Env]:
    with csi_env(tmp_path_factory.mktemp("csi-faults"), second_node=False) as e:
        yield e


def mount_pid(server: CsiServer, volume_id: str) -> int:
    record = json.loads((server.state_dir / "volumes" / f"{volume_id}.json").read_text())
    return int(record["pid"])


def test_node_plugin_restart_does_not_break_a_mounted_volume(env: Env) -> None:
    vid = create(env, size=256 * MiB).volume_id
    stage(env.a, env.paths_a, vid)
    target = publish(env.a, env.paths_a, vid, "writer-pod")
    pid = mount_pid(env.a, vid)
    writer = subprocess.Popen(
        [sys.executable, "-c", WRITER, f"{target}/stream", "6"],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        time.sleep(1.5)
        env.a.kill()  # the node plugin dies mid-write
        assert writer.poll() is None, writer.communicate()
        time.sleep(0.5)
        os.kill(pid, 0)  # the mount process lives on (this raises if it died)
        env.a.start()  # kubelet restarts the plugin container
        # the restarted plugin knows what it had (its record is on disk) and works
        second = publish(env.a, env.paths_a, vid, "second-pod")
        assert read_file(f"{second}/stream")[:256] == bytes(range(256))
        stats = env.a.node.NodeGetVolumeStats(
            pb.NodeGetVolumeStatsRequest(volume_id=vid, volume_path=target)
        )
        assert stats.volume_condition.abnormal is False
        unpublish(env.a, vid, second)
        assert not os.path.exists(second)
    finally:
        out, err = writer.communicate(timeout=60)
    assert writer.returncode == 0, f"the writer saw an error: {err}"
    written = int(out)
    data = read_file(f"{target}/stream")
    assert len(data) == written and written > 64 * 1024
    assert data == (bytes(range(256)) * 256) * (written // (256 * 256))
    assert mount_pid(env.a, vid) == pid  # the same fusefs process served it throughout
    unpublish(env.a, vid, target)
    unstage(env.a, env.paths_a, vid)
    assert not is_mounted(env.paths_a.staging(vid))


def test_a_node_plugin_start_unmounts_its_broken_staging_mounts(env: Env) -> None:
    """After a crash that left a dead FUSE mount at a staging path, kubelet cannot stat the
    path (its mkdir says 'file exists') and never asks to stage again: the node plugin's
    start unmounts it, and the next publish mounts the volume again."""
    vid = create(env).volume_id
    staging = stage(env.a, env.paths_a, vid)
    write_file(f"{staging}/kept", b"before the crash")
    env.a.kill()
    os.kill(mount_pid(env.a, vid), signal.SIGKILL)  # the mounts die with the node plugin
    assert wait_until(lambda: not _stat_works(staging), timeout=10)
    env.a.start()
    assert _stat_works(staging) and not is_mounted(staging)
    assert "broken" in env.a.read_log()
    target = publish(env.a, env.paths_a, vid, "after-the-crash")
    assert read_file(f"{target}/kept") == b"before the crash"
    unpublish(env.a, vid, target)
    unstage(env.a, env.paths_a, vid)


def _stat_works(path: str) -> bool:
    try:
        os.stat(path)
        return True
    except OSError as exc:
        assert exc.errno in (errno.ENOTCONN, errno.ECONNABORTED)
        return False


def test_a_broken_mount_is_reported_cleaned_and_mounted_again(env: Env) -> None:
    vid = create(env).volume_id
    staging = stage(env.a, env.paths_a, vid)
    first = publish(env.a, env.paths_a, vid, "victim")
    write_file(f"{first}/kept", b"fsynced before the crash")
    os.kill(mount_pid(env.a, vid), signal.SIGKILL)  # the fusefs process dies
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        try:
            os.stat(first)
        except OSError as exc:
            assert exc.errno in (errno.ENOTCONN, errno.ECONNABORTED)
            break
        time.sleep(0.05)
    else:
        pytest.fail("the mount did not break after its process was killed")

    stats = env.a.node.NodeGetVolumeStats(
        pb.NodeGetVolumeStatsRequest(volume_id=vid, volume_path=first)
    )
    assert stats.volume_condition.abnormal
    assert "not connected" in stats.volume_condition.message

    # a new pod on this node: publish notices the broken staging mount and mounts it again
    second = publish(env.a, env.paths_a, vid, "newcomer")
    assert read_file(f"{second}/kept") == b"fsynced before the crash"
    assert os.path.isdir(staging) and os.listdir(staging) == ["kept"]
    # the old pod's target is still a dead bind mount: unpublish must still succeed
    unpublish(env.a, vid, first)
    assert not is_mounted(first) and not os.path.exists(first)
    # ... and publishing it again gives a working mount
    again = publish(env.a, env.paths_a, vid, "victim")
    assert read_file(f"{again}/kept") == b"fsynced before the crash"

    # kill it again: now NodeStageVolume (kubelet re-staging) repairs it too, and unstage
    # of a broken mount succeeds
    os.kill(mount_pid(env.a, vid), signal.SIGKILL)
    time.sleep(0.5)
    stage(env.a, env.paths_a, vid)
    assert read_file(f"{staging}/kept") == b"fsynced before the crash"
    os.kill(mount_pid(env.a, vid), signal.SIGKILL)
    time.sleep(0.5)
    for t in (second, again):
        unpublish(env.a, vid, t)
    unstage(env.a, env.paths_a, vid)
    assert not is_mounted(staging)
    assert not Path(env.a.state_dir, "volumes", f"{vid}.json").exists()


def parent_pid(pid: int) -> int:
    return int(Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[1])


@contextmanager
def mounter_and_node(
    env: Env, name: str, *mounter_args: str
) -> Iterator[tuple[subprocess.Popen[bytes], CsiServer, NodePaths]]:
    """A 'shoal mounter' and a node plugin that asks it to run the mounts, as in Kubernetes."""
    socket_path = env.root / f"{name}.sock"
    log = open(env.root / f"{name}.log", "ab")  # noqa: SIM115 (the mounter's log while it runs)
    mounter = subprocess.Popen(
        [
            *SHOAL,
            "mounter",
            "--socket",
            str(socket_path),
            "--log-dir",
            str(env.root / f"{name}-logs"),
            "--meta",
            env.cluster.meta.address,
            "--secret-file",
            str(env.a.secret_file),
            *mounter_args,
        ],
        stdout=log,
        stderr=log,
    )
    node = CsiServer(
        env.root,
        f"node-{name}",
        "node",
        env.cluster.meta.address,
        env.a.secret_file,
        extra=("--mounter", f"unix://{socket_path}"),
    )
    try:
        deadline = time.monotonic() + 20
        while not socket_path.exists():
            assert mounter.poll() is None and time.monotonic() < deadline
            time.sleep(0.05)
        node.start()
        yield mounter, node, NodePaths(env.root / f"kubelet-{name}")
    finally:
        node.stop()
        mounter.terminate()
        mounter.wait(15)
        log.close()


def test_with_a_mounter_the_mounts_belong_to_it(env: Env) -> None:
    """The Kubernetes layout: fusefs processes are children of 'shoal mounter' (its own
    DaemonSet), never of the node plugin, which may be killed and restarted at will."""
    with mounter_and_node(env, "mounter") as (mounter, node, paths):
        vid = create(env).volume_id
        stage(node, paths, vid)
        target = publish(node, paths, vid, "pod")
        pid = mount_pid(node, vid)
        assert parent_pid(pid) == mounter.pid
        write_file(f"{target}/a", b"before the plugin restart")
        node.kill()
        write_file(f"{target}/b", b"while the plugin is down")
        node.start()
        assert read_file(f"{target}/a") == b"before the plugin restart"
        unpublish(node, vid, target)
        unstage(node, paths, vid)
        assert not is_mounted(paths.staging(vid))
        deadline = time.monotonic() + 15
        while mounter.poll() is None and time.monotonic() < deadline:
            try:  # the mounter reaps the fusefs process once it exits
                if Path(f"/proc/{pid}/stat").read_text().split(") ")[1].startswith("Z"):
                    time.sleep(0.1)
                    continue
            except FileNotFoundError:
                break
            time.sleep(0.1)
        assert not Path(f"/proc/{pid}").exists(), "the exited mount process was not reaped"


def test_the_mounter_serves_every_mounts_metrics_and_which_are_broken(env: Env) -> None:
    """Prometheus scrapes the mounter, not each pod's mount: the mounter serves the families
    of every fusefs process it runs, labelled with volume and mountpoint, and
    shoalfs_mount_up goes to 0 when one dies under a mounted path."""
    port = free_port()
    with mounter_and_node(env, "metered", "--metrics-listen", f"127.0.0.1:{port}") as (
        _mounter,
        node,
        paths,
    ):
        assert wait_until(lambda: http_get(port, "/readyz")[0] == 200)
        vid = create(env).volume_id
        stage(node, paths, vid)
        target = publish(node, paths, vid, "pod")
        mine = (("mountpoint", paths.staging(vid)), ("volume", vid))
        write_file(f"{target}/a", os.urandom(MiB))

        def written() -> float:
            return scrape(port).get("shoalfs_fuse_written_bytes_total", {}).get(mine, 0.0)

        assert wait_until(lambda: written() >= MiB, timeout=20), scrape(port)
        samples = scrape(port)
        assert samples["shoalfs_mount_up"][mine] == 1.0
        assert samples["shoalfs_mount_session_up"][mine] == 1.0
        assert (
            samples["shoalfs_fuse_operations_total"][
                (
                    ("mountpoint", paths.staging(vid)),
                    ("operation", "create"),
                    ("result", "ok"),
                    ("volume", vid),
                )
            ]
            >= 1
        )
        assert samples["process_resident_memory_bytes"][mine] > 10 * MiB  # the mount's
        assert samples["process_resident_memory_bytes"][()] > 10 * MiB  # the mounter's

        os.kill(mount_pid(node, vid), signal.SIGKILL)  # the pods now see ENOTCONN
        assert wait_until(lambda: scrape(port)["shoalfs_mount_up"].get(mine) == 0.0, timeout=20), (
            scrape(port).get("shoalfs_mount_up")
        )
        unpublish(node, vid, target)
        unstage(node, paths, vid)
        assert wait_until(
            lambda: mine not in scrape(port).get("shoalfs_mount_up", {}), timeout=20
        ), "an unmounted mount is still reported"


def test_publishes_and_node_info_work_while_the_meta_role_restarts(env: Env) -> None:
    """During an upgrade the meta role restarts: a node plugin must still register
    (NodeGetInfo needs nothing from it) and publish a staged volume into a new pod. The
    publish pauses while the mount waits for the meta role (its liveness check asks the
    mount for statfs), and succeeds once it is back: a pause, no error."""
    vid = create(env).volume_id
    stage(env.a, env.paths_a, vid)
    env.cluster.kill_meta()
    restarted = threading.Timer(3.0, env.cluster.start_meta)
    restarted.start()
    try:
        info = env.a.node.NodeGetInfo(pb.NodeGetInfoRequest())
        assert info.node_id == env.a.name and info.accessible_topology.segments
        started = time.monotonic()
        target = publish(env.a, env.paths_a, vid, "during-the-restart")
        assert is_mounted(target) and time.monotonic() - started < 30
    finally:
        restarted.join()
    write_file(f"{target}/after", b"the meta role is back")
    assert read_file(f"{target}/after") == b"the meta role is back"
    unpublish(env.a, vid, target)
    unstage(env.a, env.paths_a, vid)
