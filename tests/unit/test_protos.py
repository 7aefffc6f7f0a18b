"""The committed CSI modules are exactly what protos/csi.proto generates, and the contract
matches the spec's numbering where a mistake would be silent on the wire."""

from __future__ import annotations

from pathlib import Path

from protos import csi_pb2 as pb
from protos.generate import GENERATED, ROOT, generate


def test_generated_modules_are_up_to_date(tmp_path: Path) -> None:
    generate(tmp_path)
    for name in GENERATED:
        fresh = (tmp_path / "protos" / name).read_text()
        committed = (ROOT / "protos" / name).read_text()
        assert fresh == committed, (
            f"protos/{name} is out of date with protos/csi.proto: "
            "run 'python -m protos.generate' and commit the result"
        )


def test_package_services_and_a_sample_of_field_numbers() -> None:
    d = pb.DESCRIPTOR
    assert d.package == "csi.v1"
    assert set(d.services_by_name) == {
        "Identity",
        "Controller",
        "GroupController",
        "SnapshotMetadata",
        "Node",
    }
    assert len(d.services_by_name["Controller"].methods) == 15
    assert len(d.services_by_name["Node"].methods) == 8

    def numbers(message: str) -> dict[str, int]:
        return {f.name: f.number for f in d.message_types_by_name[message].fields}

    assert numbers("CreateVolumeRequest") == {
        "name": 1,
        "capacity_range": 2,
        "volume_capabilities": 3,
        "parameters": 4,
        "secrets": 5,
        "volume_content_source": 6,
        "accessibility_requirements": 7,
        "mutable_parameters": 8,
    }
    assert numbers("NodePublishVolumeRequest") == {
        "volume_id": 1,
        "publish_context": 2,
        "staging_target_path": 3,
        "target_path": 4,
        "volume_capability": 5,
        "readonly": 6,
        "secrets": 7,
        "volume_context": 8,
    }
    assert numbers("Snapshot") == {
        "size_bytes": 1,
        "snapshot_id": 2,
        "source_volume_id": 3,
        "creation_time": 4,
        "ready_to_use": 5,
        "group_snapshot_id": 6,
    }
    assert pb.ControllerServiceCapability.RPC.GET_SNAPSHOT == 15
    assert pb.VolumeCapability.AccessMode.SINGLE_NODE_MULTI_WRITER == 7
    assert pb.NodeServiceCapability.RPC.VOLUME_MOUNT_GROUP == 6
