"""Metrics of a fusefs mount and of the CSI driver, scraped over real HTTP, and request ids
followed from a CSI call or a FUSE operation into the meta role's log."""

from __future__ import annotations

import errno
import os
import re
import subprocess
import tempfile
from collections.abc import Iterator
from pathlib import Path

import grpc
import pytest

from protos import csi_pb2 as pb
from tests.helpers import LocalCluster, free_port, http_get, scrape, shoal, wait_until
from tests.integration.csi_support import CsiServer, mount_cap

MiB = 1 << 20


@pytest.fixture
def traced(tmp_path: Path, secret_file: Path) -> Iterator[LocalCluster]:
    """A cluster whose meta role logs a line per request (debug), with request ids."""
    cluster = LocalCluster(tmp_path / "cluster", secret_file, chunk_servers=2)
    cluster.meta.extra += ["--log-level", "debug"]
    try:
        yield cluster.start()
    finally:
        cluster.stop()


def ops(samples: dict, operation: str, result: str = "ok") -> float:
    return samples.get("shoalfs_fuse_operations_total", {}).get(
        (("operation", operation), ("result", result)), 0.0
    )


def test_a_mount_counts_its_operations_and_carries_request_ids(
    traced: LocalCluster, tmp_path: Path
) -> None:
    cluster = traced
    cluster.shoal("volume", "create", "obs", "--capacity", "1GiB", "--replicas", "2")
    port = free_port()
    mnt = Path(tempfile.mkdtemp(prefix="shoalfs-test-"))
    log = tmp_path / "mount.log"
    mounted = cluster.shoal(
        "mount", "obs", str(mnt), "--log-file", str(log), "--metrics-listen", f"127.0.0.1:{port}"
    )
    assert mounted.returncode == 0, mounted.stderr
    try:
        assert http_get(port, "/healthz")[0] == 200
        assert wait_until(
            lambda: http_get(port, "/readyz") == (200, {"ok": True, "detail": "mounted"})
        )
        before = scrape(port)
        data = os.urandom(3 * MiB)
        (mnt / "file").write_bytes(data)
        assert (mnt / "file").read_bytes() == data
        with pytest.raises(FileNotFoundError):
            os.stat(mnt / "not-there")
        with pytest.raises(OSError) as info:
            os.rmdir(mnt / "file")
        assert info.value.errno == errno.ENOTDIR
        with open(mnt / "file", "rb"):
            after = wait_until(
                lambda: (s := scrape(port))["shoalfs_mount_open_files"][()] == 1 and s, timeout=15
            )
            assert after, "the open file never showed in shoalfs_mount_open_files"
        assert ops(after, "create") == ops(before, "create") + 1
        assert ops(after, "lookup", "ENOENT") >= ops(before, "lookup", "ENOENT") + 1
        assert ops(after, "write") >= 1 and ops(after, "release") >= 1
        assert after["shoalfs_fuse_written_bytes_total"][()] >= before[
            "shoalfs_fuse_written_bytes_total"
        ][()] + len(data)
        assert after["shoalfs_fuse_read_bytes_total"][()] >= before[
            "shoalfs_fuse_read_bytes_total"
        ][()] + len(data)
        latency = after["shoalfs_fuse_operation_duration_seconds_count"]
        assert latency[(("operation", "create"),)] >= 1
        assert after["process_resident_memory_bytes"][()] > 10 * MiB
        assert (
            after["shoalfs_mount_peak_resident_memory_bytes"][()]
            >= after["process_resident_memory_bytes"][()] * 0.5
        )
        assert after["shoalfs_mount_cache_limit_bytes"][()] == 128 * MiB
        assert after["shoalfs_mount_session_up"][()] == 1

        # the meta role's line for the create names the FUSE operation that caused it
        meta_log = lambda: cluster.meta.read_log()  # noqa: E731
        assert wait_until(
            lambda: re.search(r"method=fs\.mknod .* rid=fuse[0-9a-f]+-[0-9a-f]+", meta_log())
        )
    finally:
        subprocess.run(["fusermount3", "-u", str(mnt)], capture_output=True, check=False)
        wait_until(lambda: not os.path.ismount(mnt), timeout=10)
        mnt.rmdir()


def test_the_csi_driver_counts_calls_by_code_and_its_request_ids_reach_the_meta_role(
    traced: LocalCluster, tmp_path: Path
) -> None:
    cluster = traced
    port = free_port()
    server = CsiServer(
        tmp_path,
        "ctrl",
        "controller",
        cluster.meta.address,
        cluster.secret_file,
        extra=("--metrics-listen", f"127.0.0.1:{port}"),
    )
    server.start()
    try:
        assert wait_until(lambda: http_get(port, "/readyz")[0] == 200, timeout=20)
        assert http_get(port, "/healthz")[0] == 200
        server.controller.CreateVolume(
            pb.CreateVolumeRequest(name="traced-volume", volume_capabilities=[mount_cap()])
        )
        with pytest.raises(grpc.RpcError) as info:
            server.controller.CreateVolume(pb.CreateVolumeRequest(name=""))
        assert info.value.code() == grpc.StatusCode.INVALID_ARGUMENT
        samples = scrape(port)
        calls = samples["shoalfs_csi_requests_total"]
        assert calls[(("grpc_code", "OK"), ("method", "CreateVolume"))] == 1
        assert calls[(("grpc_code", "INVALID_ARGUMENT"), ("method", "CreateVolume"))] == 1
        assert (
            samples["shoalfs_csi_request_duration_seconds_count"][(("method", "CreateVolume"),)]
            == 2
        )

        # follow the call: the driver's line and the meta role's line share one request id
        line = next(line for line in server.read_log().splitlines() if "CreateVolume ok" in line)
        rid = re.search(r"rid=(csi-[0-9a-f]+)", line)
        assert rid, line
        assert wait_until(
            lambda: any(
                "volume traced-volume created" in meta_line and f"rid={rid.group(1)}" in meta_line
                for meta_line in cluster.meta.read_log().splitlines()
            )
        )
    finally:
        server.stop()


def test_json_logs_carry_the_request_id(traced: LocalCluster, tmp_path: Path) -> None:
    """--log-format json: one object per line, with the rid of the CLI command."""
    cluster = traced
    log = tmp_path / "mount.log"
    mnt = Path(tempfile.mkdtemp(prefix="shoalfs-test-"))
    cluster.shoal("volume", "create", "js", "--capacity", "1GiB")
    mounted = cluster.shoal("mount", "js", str(mnt), "--log-file", str(log), "--log-format", "json")
    try:
        assert mounted.returncode == 0, mounted.stderr
        import json

        lines = [json.loads(line) for line in log.read_text().splitlines() if line.startswith("{")]
        started = next(d for d in lines if d["msg"].startswith("mounted volume js"))
        assert started["rid"].startswith("cli-") and started["level"] == "info"
    finally:
        subprocess.run(["fusermount3", "-u", str(mnt)], capture_output=True, check=False)
        wait_until(lambda: not os.path.ismount(mnt), timeout=10)
        mnt.rmdir()


def test_mount_metrics_flag_is_checked(tmp_path: Path, secret_file: Path) -> None:
    result = shoal(
        "mount",
        "v",
        str(tmp_path),
        "--foreground",
        "--meta",
        "tcp://127.0.0.1:1",
        "--secret-file",
        str(secret_file),
        "--metrics-listen",
        "nonsense",
        timeout=60,
    )
    assert result.returncode == 1 and "HOST:PORT" in result.stderr
