"""Real CSI servers (``shoal csi`` processes) and gRPC clients over unix sockets, for tests."""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import grpc
import pytest

from csi.mounts import mount_entry
from protos import csi_pb2 as pb
from protos import csi_pb2_grpc as pb_grpc
from storaged.rpc import auth
from tests.helpers import SHOAL, LocalCluster, call

MiB, GiB = 1 << 20, 1 << 30
Mode = pb.VolumeCapability.AccessMode.Mode


def mount_cap(
    mode: pb.VolumeCapability.AccessMode.Mode = Mode.MULTI_NODE_MULTI_WRITER,
    flags: tuple[str, ...] = (),
) -> pb.VolumeCapability:
    return pb.VolumeCapability(
        mount=pb.VolumeCapability.MountVolume(mount_flags=list(flags)),
        access_mode=pb.VolumeCapability.AccessMode(mode=mode),
    )


def block_cap() -> pb.VolumeCapability:
    return pb.VolumeCapability(
        block=pb.VolumeCapability.BlockVolume(),
        access_mode=pb.VolumeCapability.AccessMode(mode=Mode.SINGLE_NODE_WRITER),
    )


def expect_code(code: grpc.StatusCode, fn, *args, **kwargs) -> grpc.RpcError:
    with pytest.raises(grpc.RpcError) as info:
        fn(*args, **kwargs)
    assert info.value.code() == code, f"{info.value.code()}: {info.value.details()}"
    assert info.value.details(), "an error must say what went wrong"
    return info.value


class CsiServer:
    """One ``shoal csi`` process and stubs for its three services."""

    def __init__(
        self,
        root: Path,
        name: str,
        mode: str,
        meta: str,
        secret_file: Path,
        extra: tuple[str, ...] = (),
    ) -> None:
        self.root = root
        self.extra = extra
        self.name = name
        self.mode = mode
        self.meta = meta
        self.secret_file = secret_file
        self.socket = root / f"{name}.sock"
        self.state_dir = root / f"state-{name}"
        self.log_path = root / f"{name}.log"
        self.proc: subprocess.Popen[bytes] | None = None
        self.channel: grpc.Channel | None = None

    def start(self, timeout: float = 20.0) -> CsiServer:
        ready = self.root / f"{self.name}.ready"
        ready.unlink(missing_ok=True)
        with open(self.log_path, "ab") as log:
            self.proc = subprocess.Popen(
                [
                    *SHOAL,
                    "csi",
                    "--mode",
                    self.mode,
                    "--endpoint",
                    f"unix://{self.socket}",
                    "--node-id",
                    self.name,
                    "--state-dir",
                    str(self.state_dir),
                    "--meta",
                    self.meta,
                    "--secret-file",
                    str(self.secret_file),
                    "--ready-file",
                    str(ready),
                    "--log-level",
                    "debug",
                    *self.extra,
                ],
                stdout=log,
                stderr=log,
                start_new_session=True,
            )
        deadline = time.monotonic() + timeout
        while not ready.exists():
            if self.proc.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(f"csi server {self.name} did not start:\n{self.read_log()}")
            time.sleep(0.05)
        self.channel = grpc.insecure_channel(f"unix://{self.socket}")
        self.identity = pb_grpc.IdentityStub(self.channel)
        self.controller = pb_grpc.ControllerStub(self.channel)
        self.node = pb_grpc.NodeStub(self.channel)
        return self

    def read_log(self) -> str:
        return self.log_path.read_text(errors="replace")

    def kill(self) -> None:
        """SIGKILL, as a crash or an OOM kill would: nothing gets to clean up."""
        assert self.proc is not None
        self.proc.send_signal(signal.SIGKILL)
        self.proc.wait(10)
        self._close_channel()

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(15)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(5)
        self._close_channel()

    def _close_channel(self) -> None:
        if self.channel is not None:
            self.channel.close()
            self.channel = None


@dataclass
class NodePaths:
    """Kubelet-like paths on one node: one staging dir per volume, one target per pod."""

    root: Path

    def staging(self, volume_id: str) -> str:
        path = self.root / "staging" / volume_id
        path.parent.mkdir(parents=True, exist_ok=True)
        try:
            os.mkdir(path)  # the CO creates the staging directory
        except FileExistsError:
            pass  # (also when a broken mount sits there: then stat fails, mkdir says EEXIST)
        return str(path)

    def target(self, pod: str) -> str:
        parent = self.root / "pods" / pod
        parent.mkdir(parents=True, exist_ok=True)  # the CO creates the parent; we the target
        return str(parent / "mount")


def unmount_everything_under(root: Path) -> None:
    """Test cleanup: lazily unmount whatever is still mounted below root, deepest first."""
    with open("/proc/self/mountinfo") as f:
        points = [line.split()[4] for line in f]
    for point in sorted((p for p in points if p.startswith(str(root))), key=len, reverse=True):
        subprocess.run(["umount", "-l", point], capture_output=True, check=False)


def kill_fusefs_under(root: Path) -> None:
    for pid_dir in Path("/proc").iterdir():
        if not pid_dir.name.isdigit():
            continue
        try:
            cmdline = (pid_dir / "cmdline").read_bytes().replace(b"\0", b" ").decode()
        except OSError:
            continue
        if "fusefs" in cmdline and str(root) in cmdline:
            try:
                os.kill(int(pid_dir.name), signal.SIGKILL)
            except ProcessLookupError:
                pass


def is_mounted(path: str) -> bool:
    return mount_entry(path) is not None


@dataclass
class Env:
    """A storaged cluster and CSI servers: 'node-a' serves everything, 'node-b' (when asked
    for) is a second node with its own id and state directory."""

    root: Path
    cluster: LocalCluster
    a: CsiServer
    b: CsiServer
    paths_a: NodePaths
    paths_b: NodePaths

    def meta(self, method: str, *args):
        return call(self.cluster.meta.address, self.cluster.secret, method, *args)


@contextlib.contextmanager
def csi_env(root: Path, second_node: bool) -> Iterator[Env]:
    secret_file = root / "secret"
    auth.write_secret_file(secret_file)
    cluster = LocalCluster(root / "cluster", secret_file).start()
    a = CsiServer(root, "node-a", "all", cluster.meta.address, secret_file)
    b = CsiServer(root, "node-b", "node", cluster.meta.address, secret_file) if second_node else a
    try:
        a.start()
        if second_node:
            b.start()
        yield Env(
            root,
            cluster,
            a,
            b,
            NodePaths(root / "kubelet-a"),
            NodePaths(root / ("kubelet-b" if second_node else "kubelet-a")),
        )
    finally:
        a.stop()
        b.stop()
        unmount_everything_under(root)
        kill_fusefs_under(root)
        cluster.stop()
