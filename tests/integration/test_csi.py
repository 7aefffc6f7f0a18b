"""CSI conformance: every RPC over real gRPC on a unix socket, against real storaged
processes, with real FUSE mounts made by the node plugin.

Servers: 'node-a' serves all three services (controller and node), 'node-b' a second node
with its own id and state directory, as a pod on another node would see it.
"""

from __future__ import annotations

import errno
import os
import uuid
from collections.abc import Iterator

import grpc
import pytest

from csi import PLUGIN_NAME, TOPOLOGY_KEY
from protos import csi_pb2 as pb

from .csi_support import (
    CsiServer,
    Env,
    GiB,
    MiB,
    Mode,
    NodePaths,
    block_cap,
    csi_env,
    expect_code,
    is_mounted,
    mount_cap,
)

C = grpc.StatusCode


@pytest.fixture(scope="module")
def env(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Env]:
    with csi_env(tmp_path_factory.mktemp("csi"), second_node=True) as e:
        yield e


def new_name(prefix: str = "pvc") -> str:
    return f"{prefix}-{uuid.uuid4()}"


def create(env: Env, name: str | None = None, size: int = 64 * MiB, **kwargs) -> pb.Volume:
    request = pb.CreateVolumeRequest(
        name=name or new_name(),
        volume_capabilities=[mount_cap()],
        capacity_range=pb.CapacityRange(required_bytes=size),
        **kwargs,
    )
    return env.a.controller.CreateVolume(request).volume


def stage(server: CsiServer, paths: NodePaths, volume_id: str) -> str:
    staging = paths.staging(volume_id)
    server.node.NodeStageVolume(
        pb.NodeStageVolumeRequest(
            volume_id=volume_id, staging_target_path=staging, volume_capability=mount_cap()
        )
    )
    return staging


def publish(
    server: CsiServer,
    paths: NodePaths,
    volume_id: str,
    pod: str,
    readonly: bool = False,
    mode: pb.VolumeCapability.AccessMode.Mode = Mode.MULTI_NODE_MULTI_WRITER,
) -> str:
    target = paths.target(pod)
    server.node.NodePublishVolume(
        pb.NodePublishVolumeRequest(
            volume_id=volume_id,
            staging_target_path=paths.staging(volume_id),
            target_path=target,
            volume_capability=mount_cap(mode),
            readonly=readonly,
        )
    )
    return target


def unpublish(server: CsiServer, volume_id: str, target: str) -> None:
    server.node.NodeUnpublishVolume(
        pb.NodeUnpublishVolumeRequest(volume_id=volume_id, target_path=target)
    )


def unstage(server: CsiServer, paths: NodePaths, volume_id: str) -> None:
    server.node.NodeUnstageVolume(
        pb.NodeUnstageVolumeRequest(
            volume_id=volume_id, staging_target_path=paths.staging(volume_id)
        )
    )


def write_file(path: str, data: bytes) -> None:
    with open(path, "wb") as f:
        f.write(data)
        f.flush()
        os.fsync(f.fileno())


def read_file(path: str) -> bytes:
    with open(path, "rb") as f:
        return f.read()


# -- identity -------------------------------------------------------------------------------


def test_identity(env: Env) -> None:
    info = env.a.identity.GetPluginInfo(pb.GetPluginInfoRequest())
    assert info.name == PLUGIN_NAME and info.vendor_version
    caps = env.b.identity.GetPluginCapabilities(pb.GetPluginCapabilitiesRequest()).capabilities
    services = {c.service.type for c in caps if c.HasField("service")}
    assert services == {
        pb.PluginCapability.Service.CONTROLLER_SERVICE,
        pb.PluginCapability.Service.VOLUME_ACCESSIBILITY_CONSTRAINTS,
    }
    assert [c.volume_expansion.type for c in caps if c.HasField("volume_expansion")] == [
        pb.PluginCapability.VolumeExpansion.ONLINE
    ]
    probe = env.a.identity.Probe(pb.ProbeRequest())
    assert probe.HasField("ready") and probe.ready.value is True


def test_probe_is_not_ready_without_the_meta_role(env: Env) -> None:
    lonely = CsiServer(
        env.root, "lonely", "controller", "tcp://127.0.0.1:1", env.a.secret_file
    ).start()
    try:
        assert lonely.identity.Probe(pb.ProbeRequest()).ready.value is False
        # a node-only server does not serve the controller
        expect_code(
            C.UNIMPLEMENTED,
            env.b.controller.ControllerGetCapabilities,
            pb.ControllerGetCapabilitiesRequest(),
        )
    finally:
        lonely.stop()


def test_a_node_plugin_registers_without_the_meta_role(env: Env) -> None:
    """NodeGetInfo (what node-driver-registrar asks before kubelet registers the plugin)
    needs nothing from the meta role: a node plugin started while the meta role restarts
    registers at once instead of crash-looping its registrar."""
    lonely = CsiServer(
        env.root, "lonely-node", "node", "tcp://127.0.0.1:1", env.a.secret_file
    ).start()
    try:
        info = lonely.node.NodeGetInfo(pb.NodeGetInfoRequest())
        assert info.node_id == "lonely-node"
        assert dict(info.accessible_topology.segments) == {TOPOLOGY_KEY: "shoalfs"}
    finally:
        lonely.stop()


# -- controller: volumes ------------------------------------------------------------------


def test_controller_capabilities(env: Env) -> None:
    caps = env.a.controller.ControllerGetCapabilities(pb.ControllerGetCapabilitiesRequest())
    RPC = pb.ControllerServiceCapability.RPC
    assert {c.rpc.type for c in caps.capabilities} == {
        RPC.CREATE_DELETE_VOLUME,
        RPC.LIST_VOLUMES,
        RPC.GET_CAPACITY,
        RPC.CREATE_DELETE_SNAPSHOT,
        RPC.LIST_SNAPSHOTS,
        RPC.CLONE_VOLUME,
        RPC.EXPAND_VOLUME,
        RPC.GET_VOLUME,
        RPC.VOLUME_CONDITION,
        RPC.SINGLE_NODE_MULTI_WRITER,
        RPC.MODIFY_VOLUME,
        RPC.GET_SNAPSHOT,
    }


def test_create_volume_is_idempotent_by_name(env: Env) -> None:
    name = new_name()
    first = create(env, name, 100 * MiB, parameters={"replicas": "2", "chunkSize": "1MiB"})
    again = create(env, name, 100 * MiB, parameters={"replicas": "2", "chunkSize": "1MiB"})
    assert first == again and first.volume_id == name and first.capacity_bytes == 100 * MiB
    stored = env.meta("volume.get", name)
    assert (
        stored["replicas"] == 2 and stored["chunk_size"] == MiB and stored["capacity"] == 100 * MiB
    )
    # compatible: a range the existing capacity satisfies
    ranged = env.a.controller.CreateVolume(
        pb.CreateVolumeRequest(
            name=name,
            volume_capabilities=[mount_cap()],
            parameters={"replicas": "2", "chunkSize": "1MiB"},
            capacity_range=pb.CapacityRange(required_bytes=50 * MiB, limit_bytes=200 * MiB),
        )
    )
    assert ranged.volume.volume_id == name
    # incompatible: another capacity, or other parameters
    expect_code(
        C.ALREADY_EXISTS,
        create,
        env,
        name,
        200 * MiB,
        parameters={"replicas": "2", "chunkSize": "1MiB"},
    )
    expect_code(
        C.ALREADY_EXISTS,
        create,
        env,
        name,
        100 * MiB,
        parameters={"replicas": "3", "chunkSize": "1MiB"},
    )
    # topology: the cluster, the same segment the nodes report
    node_info = env.b.node.NodeGetInfo(pb.NodeGetInfoRequest())
    assert [dict(t.segments) for t in first.accessible_topology] == [
        dict(node_info.accessible_topology.segments)
    ]
    assert TOPOLOGY_KEY in node_info.accessible_topology.segments
    assert node_info.node_id == "node-b" and node_info.max_volumes_per_node == 0


def test_create_volume_names_that_are_not_ours_get_a_stable_id(env: Env) -> None:
    name = "a volume with spaces/and slashes ünïcode"
    v1, v2 = create(env, name), create(env, name)
    assert v1.volume_id == v2.volume_id and v1.volume_id.startswith("csi-")


def test_create_volume_capacity_defaults_and_ranges(env: Env) -> None:
    plain = env.a.controller.CreateVolume(
        pb.CreateVolumeRequest(name=new_name(), volume_capabilities=[mount_cap()])
    ).volume
    assert plain.capacity_bytes == GiB
    capped = env.a.controller.CreateVolume(
        pb.CreateVolumeRequest(
            name=new_name(),
            volume_capabilities=[mount_cap()],
            capacity_range=pb.CapacityRange(limit_bytes=10 * MiB),
        )
    ).volume
    assert capped.capacity_bytes == 10 * MiB
    expect_code(
        C.OUT_OF_RANGE,
        env.a.controller.CreateVolume,
        pb.CreateVolumeRequest(
            name=new_name(),
            volume_capabilities=[mount_cap()],
            capacity_range=pb.CapacityRange(required_bytes=20 * MiB, limit_bytes=10 * MiB),
        ),
    )
    expect_code(
        C.INVALID_ARGUMENT,
        env.a.controller.CreateVolume,
        pb.CreateVolumeRequest(
            name=new_name(),
            volume_capabilities=[mount_cap()],
            capacity_range=pb.CapacityRange(required_bytes=-1),
        ),
    )


@pytest.mark.parametrize(
    "request_args, why",
    [
        ({"volume_capabilities": [mount_cap()]}, "name"),
        ({"name": "n1"}, "volume_capabilities"),
        ({"name": "n1", "volume_capabilities": [block_cap()]}, "block"),
        (
            {
                "name": "n1",
                "volume_capabilities": [
                    pb.VolumeCapability(mount=pb.VolumeCapability.MountVolume())
                ],
            },
            "access_mode",
        ),
        (
            {
                "name": "n1",
                "volume_capabilities": [
                    pb.VolumeCapability(
                        mount=pb.VolumeCapability.MountVolume(fs_type="ext4"),
                        access_mode=pb.VolumeCapability.AccessMode(mode=Mode.SINGLE_NODE_WRITER),
                    )
                ],
            },
            "fs_type",
        ),
        ({"name": "n1", "volume_capabilities": [mount_cap(flags=("uid=5",))]}, "mount flags"),
        (
            {"name": "n1", "volume_capabilities": [mount_cap()], "parameters": {"replicas": "x"}},
            "replicas",
        ),
        (
            {"name": "n1", "volume_capabilities": [mount_cap()], "parameters": {"replicas": "17"}},
            "replicas",
        ),
        (
            {
                "name": "n1",
                "volume_capabilities": [mount_cap()],
                "parameters": {"chunkSize": "3000"},
            },
            "chunkSize",
        ),
        (
            {"name": "n1", "volume_capabilities": [mount_cap()], "parameters": {"color": "red"}},
            "unknown",
        ),
        (
            {
                "name": "n1",
                "volume_capabilities": [mount_cap()],
                "mutable_parameters": {"chunkSize": "1MiB"},
            },
            "mutable",
        ),
        ({"name": "bad\x01name", "volume_capabilities": [mount_cap()]}, "control character"),
    ],
)
def test_create_volume_rejects_bad_requests(env: Env, request_args: dict, why: str) -> None:
    err = expect_code(
        C.INVALID_ARGUMENT, env.a.controller.CreateVolume, pb.CreateVolumeRequest(**request_args)
    )
    assert why in (err.details() or "")
    assert env.meta("volume.list") == [v for v in env.meta("volume.list") if v["name"] != "n1"]


def test_k8s_passthrough_parameters_are_accepted(env: Env) -> None:
    volume = create(
        env,
        parameters={
            "csi.storage.k8s.io/pvc/name": "data",
            "csi.storage.k8s.io/pvc/namespace": "default",
        },
    )
    assert env.meta("volume.get", volume.volume_id)["replicas"] == 2


def test_delete_volume_is_idempotent(env: Env) -> None:
    volume = create(env)
    for _ in range(2):
        env.a.controller.DeleteVolume(pb.DeleteVolumeRequest(volume_id=volume.volume_id))
    assert volume.volume_id not in [v["name"] for v in env.meta("volume.list")]
    env.a.controller.DeleteVolume(pb.DeleteVolumeRequest(volume_id="never-existed"))
    expect_code(C.INVALID_ARGUMENT, env.a.controller.DeleteVolume, pb.DeleteVolumeRequest())


def test_list_volumes_pages(env: Env) -> None:
    made = {create(env, new_name("list")).volume_id for _ in range(5)}
    seen, token, pages = [], "", 0
    while True:
        page = env.a.controller.ListVolumes(
            pb.ListVolumesRequest(max_entries=2, starting_token=token)
        )
        assert len(page.entries) <= 2
        for entry in page.entries:
            assert entry.status.volume_condition.message  # VOLUME_CONDITION: always present
        seen += [e.volume.volume_id for e in page.entries]
        pages += 1
        token = page.next_token
        if not token:
            break
    assert made <= set(seen) and len(seen) == len(set(seen))
    assert pages >= 3
    everything = env.a.controller.ListVolumes(pb.ListVolumesRequest())
    assert [e.volume.volume_id for e in everything.entries] == seen and not everything.next_token
    expect_code(
        C.ABORTED, env.a.controller.ListVolumes, pb.ListVolumesRequest(starting_token="garbage")
    )
    expect_code(
        C.INVALID_ARGUMENT, env.a.controller.ListVolumes, pb.ListVolumesRequest(max_entries=-1)
    )


def test_get_capacity_counts_copies(env: Env) -> None:
    two = env.a.controller.GetCapacity(pb.GetCapacityRequest()).available_capacity
    one = env.a.controller.GetCapacity(
        pb.GetCapacityRequest(parameters={"replicas": "1"})
    ).available_capacity
    free = sum(s["free"] for s in env.meta("cluster.servers") if s["state"] == "up")
    assert two > 0 and abs(one - free) < free * 0.05 and abs(two - free // 2) < free * 0.05
    expect_code(
        C.INVALID_ARGUMENT,
        env.a.controller.GetCapacity,
        pb.GetCapacityRequest(parameters={"replicas": "0"}),
    )


def test_validate_volume_capabilities(env: Env) -> None:
    volume = create(env)
    ok = env.a.controller.ValidateVolumeCapabilities(
        pb.ValidateVolumeCapabilitiesRequest(
            volume_id=volume.volume_id, volume_capabilities=[mount_cap(Mode.SINGLE_NODE_WRITER)]
        )
    )
    assert list(ok.confirmed.volume_capabilities) == [mount_cap(Mode.SINGLE_NODE_WRITER)]
    no = env.a.controller.ValidateVolumeCapabilities(
        pb.ValidateVolumeCapabilitiesRequest(
            volume_id=volume.volume_id, volume_capabilities=[block_cap()]
        )
    )
    assert not no.HasField("confirmed") and "block" in no.message
    expect_code(
        C.NOT_FOUND,
        env.a.controller.ValidateVolumeCapabilities,
        pb.ValidateVolumeCapabilitiesRequest(volume_id="nope", volume_capabilities=[mount_cap()]),
    )
    expect_code(
        C.INVALID_ARGUMENT,
        env.a.controller.ValidateVolumeCapabilities,
        pb.ValidateVolumeCapabilitiesRequest(volume_id=volume.volume_id),
    )


def test_controller_get_volume_and_condition(env: Env) -> None:
    volume = create(env)
    got = env.a.controller.ControllerGetVolume(
        pb.ControllerGetVolumeRequest(volume_id=volume.volume_id)
    )
    assert got.volume == volume
    assert got.status.volume_condition.abnormal is False
    # R above the number of live servers: writes cannot succeed, and the condition says so
    env.a.controller.ControllerModifyVolume(
        pb.ControllerModifyVolumeRequest(
            volume_id=volume.volume_id, mutable_parameters={"replicas": "4"}
        )
    )
    bad = env.a.controller.ControllerGetVolume(
        pb.ControllerGetVolumeRequest(volume_id=volume.volume_id)
    ).status.volume_condition
    assert bad.abnormal and "only 3 chunk servers" in bad.message
    expect_code(
        C.NOT_FOUND,
        env.a.controller.ControllerGetVolume,
        pb.ControllerGetVolumeRequest(volume_id="nope"),
    )


def test_modify_volume_changes_replicas(env: Env) -> None:
    volume = create(env)
    env.a.controller.ControllerModifyVolume(
        pb.ControllerModifyVolumeRequest(
            volume_id=volume.volume_id, mutable_parameters={"replicas": "3"}
        )
    )
    assert env.meta("volume.get", volume.volume_id)["replicas"] == 3
    env.a.controller.ControllerModifyVolume(
        pb.ControllerModifyVolumeRequest(  # idempotent
            volume_id=volume.volume_id, mutable_parameters={"replicas": "3"}
        )
    )
    for bad in ({}, {"chunkSize": "1MiB"}, {"replicas": "0"}):
        expect_code(
            C.INVALID_ARGUMENT,
            env.a.controller.ControllerModifyVolume,
            pb.ControllerModifyVolumeRequest(volume_id=volume.volume_id, mutable_parameters=bad),
        )
    expect_code(
        C.NOT_FOUND,
        env.a.controller.ControllerModifyVolume,
        pb.ControllerModifyVolumeRequest(volume_id="nope", mutable_parameters={"replicas": "2"}),
    )


# -- the seed scenario ------------------------------------------------------------------------


def test_two_containers_and_a_second_node_share_a_volume(env: Env) -> None:
    vid = create(env).volume_id
    stage(env.a, env.paths_a, vid)
    stage(env.a, env.paths_a, vid)  # idempotent
    writer = publish(env.a, env.paths_a, vid, "pod1-writer")
    reader = publish(env.a, env.paths_a, vid, "pod1-reader")
    publish(env.a, env.paths_a, vid, "pod1-reader")  # idempotent
    write_file(f"{writer}/shared.txt", b"from the writer container\n")
    assert read_file(f"{reader}/shared.txt") == b"from the writer container\n"
    # a pod on another node
    stage(env.b, env.paths_b, vid)
    remote = publish(env.b, env.paths_b, vid, "pod2")
    assert read_file(f"{remote}/shared.txt") == b"from the writer container\n"
    write_file(f"{remote}/reply.txt", b"from node b\n")
    assert read_file(f"{reader}/reply.txt") == b"from node b\n"
    # a read-only publication refuses writes
    ro = publish(env.a, env.paths_a, vid, "pod3-ro", readonly=True)
    assert read_file(f"{ro}/shared.txt") == b"from the writer container\n"
    with pytest.raises(OSError) as info:
        write_file(f"{ro}/nope", b"x")
    assert info.value.errno == errno.EROFS
    expect_code(C.ALREADY_EXISTS, publish, env.a, env.paths_a, vid, "pod3-ro", readonly=False)
    # tear down, twice each: idempotent
    for server, _paths, target in (
        (env.a, env.paths_a, writer),
        (env.a, env.paths_a, reader),
        (env.a, env.paths_a, ro),
        (env.b, env.paths_b, remote),
    ):
        unpublish(server, vid, target)
        unpublish(server, vid, target)
        assert not os.path.exists(target)
    for server, paths in ((env.a, env.paths_a), (env.b, env.paths_b)):
        unstage(server, paths, vid)
        unstage(server, paths, vid)
        assert not is_mounted(paths.staging(vid))
        assert server.state_dir.joinpath("volumes", f"{vid}.json").exists() is False
    # the log of a mount that ended cleanly goes at the next mount (they would pile up)
    log_file = env.a.state_dir / "logs" / f"{vid}.log"
    assert log_file.exists()
    other = create(env).volume_id
    stage(env.a, env.paths_a, other)
    assert not log_file.exists() and (env.a.state_dir / "logs" / f"{other}.log").exists()
    unstage(env.a, env.paths_a, other)


def test_single_writer_modes_allow_one_target_per_node(env: Env) -> None:
    vid = create(env).volume_id
    stage(env.a, env.paths_a, vid)
    first = publish(env.a, env.paths_a, vid, "sw1", mode=Mode.SINGLE_NODE_SINGLE_WRITER)
    expect_code(
        C.FAILED_PRECONDITION,
        publish,
        env.a,
        env.paths_a,
        vid,
        "sw2",
        mode=Mode.SINGLE_NODE_SINGLE_WRITER,
    )
    unpublish(env.a, vid, first)
    unstage(env.a, env.paths_a, vid)


def test_node_errors(env: Env) -> None:
    vid = create(env).volume_id
    node = env.a.node
    staging, target = env.paths_a.staging(vid), env.paths_a.target("errs")
    expect_code(
        C.INVALID_ARGUMENT,
        node.NodeStageVolume,
        pb.NodeStageVolumeRequest(staging_target_path=staging, volume_capability=mount_cap()),
    )
    expect_code(
        C.INVALID_ARGUMENT,
        node.NodeStageVolume,
        pb.NodeStageVolumeRequest(volume_id=vid, volume_capability=mount_cap()),
    )
    expect_code(
        C.INVALID_ARGUMENT,
        node.NodeStageVolume,
        pb.NodeStageVolumeRequest(volume_id=vid, staging_target_path=staging),
    )
    expect_code(
        C.INVALID_ARGUMENT,
        node.NodeStageVolume,
        pb.NodeStageVolumeRequest(
            volume_id=vid, staging_target_path=staging, volume_capability=block_cap()
        ),
    )
    expect_code(
        C.NOT_FOUND,
        node.NodeStageVolume,
        pb.NodeStageVolumeRequest(
            volume_id="no-such-volume",
            staging_target_path=env.paths_a.staging("x"),
            volume_capability=mount_cap(),
        ),
    )
    # publish before stage
    expect_code(
        C.FAILED_PRECONDITION,
        node.NodePublishVolume,
        pb.NodePublishVolumeRequest(
            volume_id=vid,
            staging_target_path=staging,
            target_path=target,
            volume_capability=mount_cap(),
        ),
    )
    expect_code(
        C.FAILED_PRECONDITION,
        node.NodePublishVolume,
        pb.NodePublishVolumeRequest(
            volume_id=vid, target_path=target, volume_capability=mount_cap()
        ),
    )
    expect_code(
        C.INVALID_ARGUMENT,
        node.NodePublishVolume,
        pb.NodePublishVolumeRequest(
            volume_id=vid, staging_target_path=staging, volume_capability=mount_cap()
        ),
    )
    expect_code(
        C.INVALID_ARGUMENT, node.NodeUnpublishVolume, pb.NodeUnpublishVolumeRequest(volume_id=vid)
    )
    expect_code(
        C.INVALID_ARGUMENT, node.NodeUnstageVolume, pb.NodeUnstageVolumeRequest(volume_id=vid)
    )
    # unpublish / unstage of what was never there: success
    unpublish(env.a, vid, target)
    unstage(env.a, env.paths_a, vid)
    # stats of a path where nothing is mounted
    expect_code(
        C.NOT_FOUND,
        node.NodeGetVolumeStats,
        pb.NodeGetVolumeStatsRequest(volume_id=vid, volume_path=target),
    )
    expect_code(
        C.INVALID_ARGUMENT, node.NodeGetVolumeStats, pb.NodeGetVolumeStatsRequest(volume_id=vid)
    )
    caps = node.NodeGetCapabilities(pb.NodeGetCapabilitiesRequest()).capabilities
    RPC = pb.NodeServiceCapability.RPC
    assert {c.rpc.type for c in caps} == {
        RPC.STAGE_UNSTAGE_VOLUME,
        RPC.GET_VOLUME_STATS,
        RPC.EXPAND_VOLUME,
        RPC.VOLUME_CONDITION,
        RPC.SINGLE_NODE_MULTI_WRITER,
    }


# -- expansion and stats ---------------------------------------------------------------------


def test_expansion_is_visible_in_df_and_stats(env: Env) -> None:
    vid = create(env, size=64 * MiB).volume_id
    stage(env.a, env.paths_a, vid)
    target = publish(env.a, env.paths_a, vid, "grow")
    st = os.statvfs(target)
    assert st.f_blocks * st.f_frsize == 64 * MiB
    write_file(f"{target}/data", os.urandom(3 * MiB))
    stats = env.a.node.NodeGetVolumeStats(
        pb.NodeGetVolumeStatsRequest(volume_id=vid, volume_path=target)
    )
    usage = {u.unit: u for u in stats.usage}
    Unit = pb.VolumeUsage.Unit
    assert usage[Unit.BYTES].total == 64 * MiB and usage[Unit.BYTES].used == 3 * MiB
    assert usage[Unit.BYTES].available == 61 * MiB
    assert usage[Unit.INODES].used == 2 and usage[Unit.INODES].total > usage[Unit.INODES].used
    assert stats.volume_condition.abnormal is False

    grown = env.a.controller.ControllerExpandVolume(
        pb.ControllerExpandVolumeRequest(
            volume_id=vid, capacity_range=pb.CapacityRange(required_bytes=256 * MiB)
        )
    )
    assert grown.capacity_bytes == 256 * MiB and grown.node_expansion_required is False
    st = os.statvfs(target)  # online: the mounted volume shows it at once
    assert st.f_blocks * st.f_frsize == 256 * MiB
    assert (
        env.a.node.NodeExpandVolume(
            pb.NodeExpandVolumeRequest(
                volume_id=vid,
                volume_path=target,
                capacity_range=pb.CapacityRange(required_bytes=256 * MiB),
            )
        ).capacity_bytes
        == 256 * MiB
    )
    # a smaller request is already satisfied
    assert (
        env.a.controller.ControllerExpandVolume(
            pb.ControllerExpandVolumeRequest(
                volume_id=vid, capacity_range=pb.CapacityRange(required_bytes=MiB)
            )
        ).capacity_bytes
        == 256 * MiB
    )
    expect_code(
        C.NOT_FOUND,
        env.a.controller.ControllerExpandVolume,
        pb.ControllerExpandVolumeRequest(
            volume_id="nope", capacity_range=pb.CapacityRange(required_bytes=MiB)
        ),
    )
    expect_code(
        C.INVALID_ARGUMENT,
        env.a.controller.ControllerExpandVolume,
        pb.ControllerExpandVolumeRequest(volume_id=vid),
    )
    expect_code(
        C.NOT_FOUND,
        env.a.node.NodeExpandVolume,
        pb.NodeExpandVolumeRequest(volume_id=vid, volume_path=str(env.root)),
    )
    unpublish(env.a, vid, target)
    unstage(env.a, env.paths_a, vid)


# -- snapshots, restores, clones ----------------------------------------------------------------


def test_snapshot_restore_and_clone_contents(env: Env) -> None:
    vid = create(env, size=128 * MiB).volume_id
    stage(env.a, env.paths_a, vid)
    target = publish(env.a, env.paths_a, vid, "snapsrc")
    before = os.urandom(5 * MiB + 123)
    write_file(f"{target}/big", before)
    os.mkdir(f"{target}/dir")
    write_file(f"{target}/dir/small", b"small file\n")
    os.symlink("dir/small", f"{target}/link")

    snap_name = new_name("snapshot")
    snap = env.a.controller.CreateSnapshot(
        pb.CreateSnapshotRequest(source_volume_id=vid, name=snap_name)
    ).snapshot
    assert snap.ready_to_use and snap.source_volume_id == vid and snap.snapshot_id == snap_name
    assert snap.size_bytes == len(before) + len(b"small file\n")
    assert snap.creation_time.seconds > 0
    again = env.a.controller.CreateSnapshot(
        pb.CreateSnapshotRequest(source_volume_id=vid, name=snap_name)
    ).snapshot
    assert again == snap
    other = create(env).volume_id
    expect_code(
        C.ALREADY_EXISTS,
        env.a.controller.CreateSnapshot,
        pb.CreateSnapshotRequest(source_volume_id=other, name=snap_name),
    )

    # writes after the snapshot: overwrite, append, delete, new file
    after = os.urandom(MiB)
    with open(f"{target}/big", "r+b") as f:
        f.write(after)
        f.seek(0, 2)
        f.write(b"appended")
        os.fsync(f.fileno())
    os.unlink(f"{target}/dir/small")
    write_file(f"{target}/new", b"new after snapshot")

    restored = env.a.controller.CreateVolume(
        pb.CreateVolumeRequest(
            name=new_name(),
            volume_capabilities=[mount_cap()],
            capacity_range=pb.CapacityRange(required_bytes=128 * MiB),
            volume_content_source=pb.VolumeContentSource(
                snapshot=pb.VolumeContentSource.SnapshotSource(snapshot_id=snap_name)
            ),
        )
    ).volume
    assert restored.content_source.snapshot.snapshot_id == snap_name
    clone = env.a.controller.CreateVolume(
        pb.CreateVolumeRequest(
            name=new_name(),
            volume_capabilities=[mount_cap()],
            capacity_range=pb.CapacityRange(required_bytes=128 * MiB),
            volume_content_source=pb.VolumeContentSource(
                volume=pb.VolumeContentSource.VolumeSource(volume_id=vid)
            ),
        )
    ).volume
    assert clone.content_source.volume.volume_id == vid

    stage(env.b, env.paths_b, restored.volume_id)
    r = publish(env.b, env.paths_b, restored.volume_id, "restored")
    assert read_file(f"{r}/big") == before
    assert read_file(f"{r}/dir/small") == b"small file\n"
    assert os.readlink(f"{r}/link") == "dir/small"
    assert not os.path.exists(f"{r}/new")

    stage(env.b, env.paths_b, clone.volume_id)
    c = publish(env.b, env.paths_b, clone.volume_id, "clone")
    current = after + before[len(after) :] + b"appended"
    assert read_file(f"{c}/big") == current
    assert read_file(f"{c}/new") == b"new after snapshot"
    # the clone is independent of its source
    write_file(f"{c}/only-in-clone", b"x")
    assert not os.path.exists(f"{target}/only-in-clone")
    # ... and so is the restored volume of the snapshot: restore it again, still the old data
    write_file(f"{r}/big", b"changed in the restored volume")
    second = env.a.controller.CreateVolume(
        pb.CreateVolumeRequest(
            name=new_name(),
            volume_capabilities=[mount_cap()],
            volume_content_source=pb.VolumeContentSource(
                snapshot=pb.VolumeContentSource.SnapshotSource(snapshot_id=snap_name)
            ),
        )
    ).volume
    assert second.capacity_bytes == GiB
    assert env.meta("volume.get", second.volume_id)["used_bytes"] == snap.size_bytes

    for server, paths, volume_id, t in (
        (env.b, env.paths_b, restored.volume_id, r),
        (env.b, env.paths_b, clone.volume_id, c),
        (env.a, env.paths_a, vid, target),
    ):
        unpublish(server, volume_id, t)
        unstage(server, paths, volume_id)


def test_snapshot_errors_listing_and_deletion(env: Env) -> None:
    vid = create(env).volume_id
    ctl = env.a.controller
    expect_code(C.INVALID_ARGUMENT, ctl.CreateSnapshot, pb.CreateSnapshotRequest(name="s"))
    expect_code(
        C.INVALID_ARGUMENT, ctl.CreateSnapshot, pb.CreateSnapshotRequest(source_volume_id=vid)
    )
    expect_code(
        C.NOT_FOUND,
        ctl.CreateSnapshot,
        pb.CreateSnapshotRequest(source_volume_id="nope", name=new_name("snapshot")),
    )
    expect_code(
        C.INVALID_ARGUMENT,
        ctl.CreateSnapshot,
        pb.CreateSnapshotRequest(
            source_volume_id=vid, name=new_name("snapshot"), parameters={"x": "y"}
        ),
    )
    names = sorted(
        ctl.CreateSnapshot(
            pb.CreateSnapshotRequest(source_volume_id=vid, name=new_name("snapshot"))
        ).snapshot.snapshot_id
        for _ in range(3)
    )

    got = ctl.GetSnapshot(pb.GetSnapshotRequest(snapshot_id=names[0])).snapshot
    assert got.snapshot_id == names[0] and got.source_volume_id == vid
    expect_code(C.NOT_FOUND, ctl.GetSnapshot, pb.GetSnapshotRequest(snapshot_id="nope"))
    expect_code(C.INVALID_ARGUMENT, ctl.GetSnapshot, pb.GetSnapshotRequest())

    seen, token = [], ""
    while True:
        page = ctl.ListSnapshots(
            pb.ListSnapshotsRequest(source_volume_id=vid, max_entries=2, starting_token=token)
        )
        seen += [e.snapshot.snapshot_id for e in page.entries]
        token = page.next_token
        if not token:
            break
    assert seen == names
    one = ctl.ListSnapshots(pb.ListSnapshotsRequest(snapshot_id=names[1])).entries
    assert [e.snapshot.snapshot_id for e in one] == [names[1]]
    assert not ctl.ListSnapshots(pb.ListSnapshotsRequest(snapshot_id="nope")).entries
    expect_code(C.ABORTED, ctl.ListSnapshots, pb.ListSnapshotsRequest(starting_token="x.y"))

    # restore errors: unknown snapshot, capacity below its size
    expect_code(
        C.NOT_FOUND,
        ctl.CreateVolume,
        pb.CreateVolumeRequest(
            name=new_name(),
            volume_capabilities=[mount_cap()],
            volume_content_source=pb.VolumeContentSource(
                snapshot=pb.VolumeContentSource.SnapshotSource(snapshot_id="nope")
            ),
        ),
    )
    expect_code(
        C.NOT_FOUND,
        ctl.CreateVolume,
        pb.CreateVolumeRequest(
            name=new_name(),
            volume_capabilities=[mount_cap()],
            volume_content_source=pb.VolumeContentSource(
                volume=pb.VolumeContentSource.VolumeSource(volume_id="nope")
            ),
        ),
    )

    # deleting the source volume leaves its snapshots usable
    ctl.DeleteVolume(pb.DeleteVolumeRequest(volume_id=vid))
    assert ctl.GetSnapshot(pb.GetSnapshotRequest(snapshot_id=names[0])).snapshot.ready_to_use
    for name in names:
        ctl.DeleteSnapshot(pb.DeleteSnapshotRequest(snapshot_id=name))
        ctl.DeleteSnapshot(pb.DeleteSnapshotRequest(snapshot_id=name))
    assert not ctl.ListSnapshots(pb.ListSnapshotsRequest(source_volume_id=vid)).entries
    expect_code(C.INVALID_ARGUMENT, ctl.DeleteSnapshot, pb.DeleteSnapshotRequest())


def test_restore_smaller_than_the_snapshot_is_out_of_range(env: Env) -> None:
    vid = create(env).volume_id
    stage(env.a, env.paths_a, vid)
    target = publish(env.a, env.paths_a, vid, "oor")
    write_file(f"{target}/f", os.urandom(2 * MiB))
    unpublish(env.a, vid, target)
    unstage(env.a, env.paths_a, vid)
    snap = env.a.controller.CreateSnapshot(
        pb.CreateSnapshotRequest(source_volume_id=vid, name=new_name("snapshot"))
    ).snapshot
    expect_code(
        C.OUT_OF_RANGE,
        env.a.controller.CreateVolume,
        pb.CreateVolumeRequest(
            name=new_name(),
            volume_capabilities=[mount_cap()],
            capacity_range=pb.CapacityRange(required_bytes=MiB),
            volume_content_source=pb.VolumeContentSource(
                snapshot=pb.VolumeContentSource.SnapshotSource(snapshot_id=snap.snapshot_id)
            ),
        ),
    )
