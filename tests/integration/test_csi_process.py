"""`shoal csi` as a program: a TCP endpoint, the cluster taken from a cluster.json, and the
usage errors a person starting it by hand gets."""

from __future__ import annotations

import subprocess
import time
from pathlib import Path

import grpc

from csi import PLUGIN_NAME
from protos import csi_pb2 as pb
from protos import csi_pb2_grpc as pb_grpc
from shoal.clusterfile import ClusterFile
from tests.helpers import SHOAL, LocalCluster, free_port, shoal


def test_tcp_endpoint_and_cluster_file(cluster: LocalCluster, tmp_path: Path) -> None:
    cluster_json = tmp_path / "cluster.json"
    ClusterFile(
        workdir=str(tmp_path), secret_file=str(cluster.secret_file), meta=cluster.meta.address
    ).save(cluster_json)
    port = free_port()
    ready = tmp_path / "ready"
    with open(tmp_path / "csi.log", "wb") as log:
        proc = subprocess.Popen(
            [
                *SHOAL,
                "csi",
                "--mode",
                "controller",
                "--endpoint",
                f"tcp://127.0.0.1:{port}",
                "--cluster",
                str(cluster_json),
                "--ready-file",
                str(ready),
            ],
            stdout=log,
            stderr=log,
        )
    try:
        deadline = time.monotonic() + 20
        while not ready.exists():
            assert proc.poll() is None and time.monotonic() < deadline, (
                tmp_path / "csi.log"
            ).read_text()
            time.sleep(0.05)
        with grpc.insecure_channel(f"127.0.0.1:{port}") as channel:
            identity = pb_grpc.IdentityStub(channel)
            assert identity.GetPluginInfo(pb.GetPluginInfoRequest()).name == PLUGIN_NAME
            assert identity.Probe(pb.ProbeRequest()).ready.value is True
            volume = (
                pb_grpc.ControllerStub(channel)
                .CreateVolume(
                    pb.CreateVolumeRequest(
                        name="from-tcp",
                        volume_capabilities=[
                            pb.VolumeCapability(
                                mount=pb.VolumeCapability.MountVolume(),
                                access_mode=pb.VolumeCapability.AccessMode(
                                    mode=pb.VolumeCapability.AccessMode.SINGLE_NODE_WRITER
                                ),
                            )
                        ],
                    )
                )
                .volume
            )
            assert volume.volume_id == "from-tcp"
        proc.terminate()
        assert proc.wait(20) == 0  # SIGTERM: a clean stop
    finally:
        if proc.poll() is None:
            proc.kill()


def run_csi(*args: str) -> subprocess.CompletedProcess[str]:
    return shoal("csi", *args, timeout=60)


def test_usage_errors_say_what_to_change(tmp_path: Path) -> None:
    secret = tmp_path / "secret"
    subprocess.run([*SHOAL, "secret", "generate", str(secret)], check=True, capture_output=True)
    access = ["--meta", "tcp://127.0.0.1:1", "--secret-file", str(secret)]
    result = run_csi("--mode", "node", "--endpoint", f"unix://{tmp_path}/s.sock", *access)
    assert result.returncode == 2 and "--node-id" in result.stderr
    result = run_csi("--mode", "controller", *access, "--endpoint", "")
    assert result.returncode == 2 and "--endpoint" in result.stderr
    result = run_csi("--mode", "controller", *access, "--endpoint", "unix://relative.sock")
    assert result.returncode == 1 and "absolute" in result.stderr
    result = run_csi(
        "--mode",
        "controller",
        "--endpoint",
        f"unix://{tmp_path}/s.sock",
        "--cluster",
        str(tmp_path / "missing.json"),
    )
    assert result.returncode == 2 and "missing.json" in result.stderr
