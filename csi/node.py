"""The Node service: stage a volume (its own fusefs process), publish it (bind mounts).

NodeStageVolume starts one fusefs process per volume per node at the staging path, in a
session of its own, so it is not a child that dies with this server: a restart or SIGKILL
of the node plugin leaves mounted volumes working (the most reported failure of FUSE CSI
drivers, FIELD-NOTES 1). Pods get bind mounts of the staging path, read-only when asked,
so every container and pod on the node shares the one mount and its cache.
"""

from __future__ import annotations

import logging
import os
import time
from dataclasses import dataclass
from pathlib import Path

import grpc

from fusefs.unmounting import unmount
from protos import csi_pb2 as pb
from protos import csi_pb2_grpc as pb_grpc
from storaged.processes import is_our_process
from storaged.rpc import FsError, RpcError

from . import DEFAULT_INSTALLATION, checks
from .controller import accessible_from
from .errors import Code, CsiError, invalid, not_found, rpc_method
from .locks import NameLocks
from .mounts import MountState, bind, mount_entry, state
from .nodestate import NodeState, StagedVolume
from .rpcbridge import RpcBridge
from .spawner import LocalSpawner, RemoteSpawner

log = logging.getLogger("csi.node")

RPC = pb.NodeServiceCapability.RPC
CAPABILITIES = (
    RPC.STAGE_UNSTAGE_VOLUME,
    RPC.GET_VOLUME_STATS,
    RPC.EXPAND_VOLUME,
    RPC.VOLUME_CONDITION,
    RPC.SINGLE_NODE_MULTI_WRITER,
)


@dataclass
class NodeConfig:
    node_id: str
    state_dir: Path
    spawner: LocalSpawner | RemoteSpawner  # who starts the fusefs processes
    installation: str = DEFAULT_INSTALLATION  # the topology segment's value (csi/__init__.py)


class NodeServicer(pb_grpc.NodeServicer):
    def __init__(self, meta: RpcBridge, config: NodeConfig, locks: NameLocks | None = None) -> None:
        self.meta = meta
        self.config = config
        self.records = NodeState(config.state_dir)
        self.locks = locks or NameLocks()  # shared with the controller in --mode all
        self.topology = accessible_from(config.installation)

    def clean_broken_staging(self) -> list[str]:
        """At start: lazily unmount every staging mount of ours whose fusefs process is
        gone (a crash of the node, or of the mounter). Until then kubelet cannot even look
        at the path (ENOTCONN; its mkdir answers 'file exists') and never asks us to stage
        again. The volume is mounted again at its next stage or publish (its record stays).
        Publish targets are left alone: a pod must see its broken volume as broken, never
        the empty directory under it."""
        cleaned = []
        for record in self.records.all():
            if state(record.staging_path, record.volume_id) is MountState.BROKEN:
                log.warning(
                    "%s at %s is broken (its fusefs process is gone): unmounting it "
                    "lazily; its next stage or publish mounts it again",
                    record.volume_id,
                    record.staging_path,
                )
                unmount(record.staging_path, lazy=True)
                cleaned.append(record.staging_path)
        return cleaned

    # -- helpers ----------------------------------------------------------------------

    def _require_volume(self, volume_id: str) -> None:
        try:
            self.meta.ask(lambda m: m.volume_get(volume_id))
        except FsError as exc:
            if exc.code == "ENOENT":
                raise not_found(f"volume {volume_id} does not exist") from None
            raise

    def _start_mount(self, volume_id: str, staging: str) -> int:
        os.makedirs(staging, exist_ok=True)
        try:
            pid = self.config.spawner.mount(volume_id, staging)
        except (RuntimeError, RpcError) as exc:
            raise CsiError(
                Code.INTERNAL, f"mounting {volume_id} at {staging} failed: {exc}"
            ) from None
        log.info("staged %s at %s (fusefs pid %d)", volume_id, staging, pid)
        return pid

    def _ensure_staged(self, volume_id: str, staging: str, flags: list[str]) -> StagedVolume:
        """Make ``staging`` a live mount of the volume: keep a live one, replace a broken one."""
        record = self.records.load(volume_id) or StagedVolume(volume_id, staging)
        current = state(staging, volume_id)
        if current is MountState.OTHER:
            raise CsiError(
                Code.ALREADY_EXISTS,
                f"{staging} holds another mount ({mount_entry(staging)}); not mounting over it",
            )
        if current is MountState.BROKEN:
            log.warning(
                "%s at %s is broken (its fusefs process is gone): unmounting it lazily "
                "and mounting again",
                volume_id,
                staging,
            )
            unmount(staging, lazy=True)
        if current is not MountState.OK:
            record.pid = self._start_mount(volume_id, staging)
        record.staging_path, record.flags = staging, flags
        self.records.save(record)
        return record

    # -- stage ------------------------------------------------------------------------

    @rpc_method
    def NodeStageVolume(
        self, request: pb.NodeStageVolumeRequest, context: grpc.ServicerContext
    ) -> pb.NodeStageVolumeResponse:
        volume_id = checks.require(request.volume_id, "volume_id")
        staging = checks.require(request.staging_target_path, "staging_target_path")
        if not request.HasField("volume_capability"):
            raise invalid("volume_capability is required")
        checks.check_capability(request.volume_capability)
        with self.locks.hold(volume_id):
            self._require_volume(volume_id)
            self._ensure_staged(
                volume_id,
                os.path.normpath(staging),
                list(request.volume_capability.mount.mount_flags),
            )
        return pb.NodeStageVolumeResponse()

    @rpc_method
    def NodeUnstageVolume(
        self, request: pb.NodeUnstageVolumeRequest, context: grpc.ServicerContext
    ) -> pb.NodeUnstageVolumeResponse:
        volume_id = checks.require(request.volume_id, "volume_id")
        staging = os.path.normpath(
            checks.require(request.staging_target_path, "staging_target_path")
        )
        with self.locks.hold(volume_id):
            record = self.records.load(volume_id)
            current = state(staging, volume_id)
            if current in (MountState.OK, MountState.BROKEN):
                unmount(staging, lazy=current is MountState.BROKEN, if_busy="detach")
                log.info("unstaged %s from %s", volume_id, staging)
            if record is not None:
                self._wait_exit(record.pid)
                self.records.remove(volume_id)
        return pb.NodeUnstageVolumeResponse()

    @staticmethod
    def _wait_exit(pid: int, timeout: float = 15.0) -> None:
        """After an unmount the fusefs process commits nothing more and exits; give it time
        so a quick re-stage does not meet the old process still closing its connections."""
        deadline = time.monotonic() + timeout
        while is_our_process(pid, "fusefs") and time.monotonic() < deadline:
            time.sleep(0.05)

    # -- publish ----------------------------------------------------------------------

    @rpc_method
    def NodePublishVolume(
        self, request: pb.NodePublishVolumeRequest, context: grpc.ServicerContext
    ) -> pb.NodePublishVolumeResponse:
        volume_id = checks.require(request.volume_id, "volume_id")
        target = os.path.normpath(checks.require(request.target_path, "target_path"))
        if not request.HasField("volume_capability"):
            raise invalid("volume_capability is required")
        cap = request.volume_capability
        checks.check_capability(cap)
        if not request.staging_target_path:
            raise CsiError(
                Code.FAILED_PRECONDITION,
                "staging_target_path is required: this plugin stages volumes first",
            )
        staging = os.path.normpath(request.staging_target_path)
        flags = list(cap.mount.mount_flags)
        readonly = (
            request.readonly or "ro" in flags or cap.access_mode.mode in checks.READ_ONLY_MODES
        )
        with self.locks.hold(volume_id):
            record = self.records.load(volume_id)
            current = state(staging, volume_id)
            if current is MountState.BROKEN or (current is MountState.ABSENT and record):
                # The mount process died (or the node rebooted): mount it again from the
                # record rather than fail every pod until someone re-stages by hand.
                record = self._ensure_staged(volume_id, staging, record.flags if record else [])
            elif current is not MountState.OK:
                raise CsiError(
                    Code.FAILED_PRECONDITION,
                    f"volume {volume_id} is not staged at {staging}; call NodeStageVolume",
                )
            record = record or StagedVolume(volume_id, staging)
            wanted = {"readonly": readonly, "flags": flags, "mode": int(cap.access_mode.mode)}
            at_target = state(target, volume_id)
            if at_target is MountState.OK:
                known = record.targets.get(target)
                if known is not None and known["readonly"] != readonly:
                    raise CsiError(
                        Code.ALREADY_EXISTS,
                        f"{target} is published with readonly="
                        f"{known['readonly']}; asked for {readonly}",
                    )
                record.targets[target] = wanted
                self.records.save(record)
                return pb.NodePublishVolumeResponse()
            if at_target is MountState.OTHER:
                raise CsiError(Code.ALREADY_EXISTS, f"{target} holds another mount")
            if at_target is MountState.BROKEN:
                log.warning("%s: stale mount at %s; replacing it", volume_id, target)
                unmount(target, lazy=True)
            others = [
                t
                for t in record.targets
                if t != target and state(t, volume_id) is not MountState.ABSENT
            ]
            if others and cap.access_mode.mode in checks.ONE_TARGET_MODES:
                raise CsiError(
                    Code.FAILED_PRECONDITION,
                    (
                        f"volume {volume_id} is already published at {others[0]} and access mode "
                        f"{checks.Mode.Name(cap.access_mode.mode)} allows one publication per node"
                    ),
                )
            os.makedirs(target, exist_ok=True)
            bind(staging, target, readonly, flags)
            record.targets[target] = wanted
            self.records.save(record)
            log.info("published %s at %s%s", volume_id, target, " (read-only)" if readonly else "")
        return pb.NodePublishVolumeResponse()

    @rpc_method
    def NodeUnpublishVolume(
        self, request: pb.NodeUnpublishVolumeRequest, context: grpc.ServicerContext
    ) -> pb.NodeUnpublishVolumeResponse:
        volume_id = checks.require(request.volume_id, "volume_id")
        target = os.path.normpath(checks.require(request.target_path, "target_path"))
        with self.locks.hold(volume_id):
            current = state(target, volume_id)
            if current in (MountState.OK, MountState.BROKEN):
                unmount(target, lazy=current is MountState.BROKEN, if_busy="detach")
            if current is not MountState.OTHER:
                try:
                    os.rmdir(target)
                except FileNotFoundError:
                    pass
                except OSError as exc:
                    raise CsiError(Code.INTERNAL, f"cannot remove {target}: {exc}") from None
            record = self.records.load(volume_id)
            if record is not None and target in record.targets:
                del record.targets[target]
                self.records.save(record)
        return pb.NodeUnpublishVolumeResponse()

    # -- stats, expansion, info ---------------------------------------------------------

    def _mounted_path(self, volume_id: str, path: str) -> MountState:
        current = state(path, volume_id)
        if current in (MountState.ABSENT, MountState.OTHER):
            raise not_found(f"volume {volume_id} is not mounted at {path}")
        return current

    @rpc_method
    def NodeGetVolumeStats(
        self, request: pb.NodeGetVolumeStatsRequest, context: grpc.ServicerContext
    ) -> pb.NodeGetVolumeStatsResponse:
        volume_id = checks.require(request.volume_id, "volume_id")
        path = os.path.normpath(checks.require(request.volume_path, "volume_path"))
        if self._mounted_path(volume_id, path) is MountState.BROKEN:
            return pb.NodeGetVolumeStatsResponse(
                volume_condition=pb.VolumeCondition(
                    abnormal=True,
                    message=(
                        f"the mount at {path} is broken (transport endpoint is "
                        "not connected: its fusefs process is gone); the next "
                        "NodePublish mounts it again, pods must be restarted"
                    ),
                )
            )
        st = os.statvfs(path)
        total, free = st.f_blocks * st.f_frsize, st.f_bfree * st.f_frsize
        Unit = pb.VolumeUsage.Unit
        usage = [
            pb.VolumeUsage(
                unit=Unit.BYTES, total=total, used=total - free, available=st.f_bavail * st.f_frsize
            ),
            pb.VolumeUsage(
                unit=Unit.INODES,
                total=st.f_files,
                used=st.f_files - st.f_ffree,
                available=st.f_favail,
            ),
        ]
        return pb.NodeGetVolumeStatsResponse(
            usage=usage, volume_condition=pb.VolumeCondition(abnormal=False, message="mounted")
        )

    @rpc_method
    def NodeExpandVolume(
        self, request: pb.NodeExpandVolumeRequest, context: grpc.ServicerContext
    ) -> pb.NodeExpandVolumeResponse:
        """Nothing to grow on the node (the mount asks the meta role for the capacity on
        every statfs); report the capacity the mount now shows."""
        volume_id = checks.require(request.volume_id, "volume_id")
        path = os.path.normpath(checks.require(request.volume_path, "volume_path"))
        if request.HasField("volume_capability"):
            checks.check_capability(request.volume_capability)
        if self._mounted_path(volume_id, path) is MountState.BROKEN:
            raise CsiError(Code.FAILED_PRECONDITION, f"the mount at {path} is broken")
        st = os.statvfs(path)
        return pb.NodeExpandVolumeResponse(capacity_bytes=st.f_blocks * st.f_frsize)

    @rpc_method
    def NodeGetCapabilities(
        self, request: pb.NodeGetCapabilitiesRequest, context: grpc.ServicerContext
    ) -> pb.NodeGetCapabilitiesResponse:
        return pb.NodeGetCapabilitiesResponse(
            capabilities=[pb.NodeServiceCapability(rpc=RPC(type=t)) for t in CAPABILITIES]
        )

    @rpc_method
    def NodeGetInfo(
        self, request: pb.NodeGetInfoRequest, context: grpc.ServicerContext
    ) -> pb.NodeGetInfoResponse:
        return pb.NodeGetInfoResponse(
            node_id=self.config.node_id, max_volumes_per_node=0, accessible_topology=self.topology
        )
