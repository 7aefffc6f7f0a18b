"""The Controller service: volumes and snapshots in the meta role.

A CSI volume is a shoalfs volume (quota = capacity); a CSI snapshot is a frozen metadata
copy of one, sharing its chunks; restores and clones are copies the other way. Every call
is idempotent by name or id, because the CO and its sidecars retry everything.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable

import grpc
from google.protobuf import timestamp_pb2

from protos import csi_pb2 as pb
from protos import csi_pb2_grpc as pb_grpc
from storaged.metaclient import MetaClient, Volume
from storaged.rpc import FsError

from . import DEFAULT_INSTALLATION, TOPOLOGY_KEY, checks
from .errors import Code, CsiError, invalid, not_found, rpc_method
from .locks import NameLocks
from .rpcbridge import RpcBridge

RPC = pb.ControllerServiceCapability.RPC
CAPABILITIES = (
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
)


def accessible_from(installation: str) -> pb.Topology:
    """The one topology segment of every node and volume (see csi/__init__.py): known
    without the meta role, so a node plugin registers while the meta role restarts."""
    return pb.Topology(segments={TOPOLOGY_KEY: installation})


def _missing(exc: FsError) -> bool:
    return exc.code == "ENOENT"


class ControllerServicer(pb_grpc.ControllerServicer):
    def __init__(
        self,
        meta: RpcBridge,
        installation: str = DEFAULT_INSTALLATION,
        locks: NameLocks | None = None,
    ) -> None:
        self.meta = meta
        self.topology = accessible_from(installation)
        self.locks = locks or NameLocks()  # shared with the node service in --mode all

    # -- helpers ----------------------------------------------------------------------

    def _get(self, ask: Callable[[MetaClient], Awaitable[Volume]]) -> Volume | None:
        """``ask``'s volume or snapshot; None when there is none of that name."""
        try:
            return self.meta.ask(ask)
        except FsError as exc:
            if _missing(exc):
                return None
            raise

    def _create(self, make: Callable[[MetaClient], Awaitable[Volume]]) -> Volume:
        """Volumes and snapshots share one namespace: a name the other kind already uses
        is ALREADY_EXISTS."""
        try:
            return self.meta.ask(make)
        except FsError as exc:
            if exc.code == "EEXIST":
                raise CsiError(Code.ALREADY_EXISTS, exc.message) from None
            raise

    def _volume(self, v: Volume) -> pb.Volume:
        volume = pb.Volume(
            capacity_bytes=v["capacity"], volume_id=v["name"], accessible_topology=[self.topology]
        )
        kind, _, name = v["source"].partition(":")
        if kind == "snapshot":
            volume.content_source.snapshot.snapshot_id = name
        elif kind == "volume":
            volume.content_source.volume.volume_id = name
        return volume

    def _condition(self, name: str) -> pb.VolumeCondition:
        h = self.meta.ask(lambda m: m.volume_health(name))
        if h["servers_up"] < h["replicas"]:
            return pb.VolumeCondition(
                abnormal=True,
                message=(
                    f"only {h['servers_up']} chunk servers are up and the volume keeps "
                    f"{h['replicas']} copies: writes fail until more servers are up"
                ),
            )
        if h["chunks_with_bad_copies"]:
            return pb.VolumeCondition(
                abnormal=True,
                message=(
                    f"{h['chunks_with_bad_copies']} chunks have a copy that was found missing or "
                    "corrupted and is not replaced yet; reads use the good copies"
                ),
            )
        return pb.VolumeCondition(
            abnormal=False,
            message=(
                f"healthy: {h['servers_up']} chunk servers up, {h['replicas']} copies per chunk"
            ),
        )

    @staticmethod
    def _snapshot(s: Volume) -> pb.Snapshot:
        created = timestamp_pb2.Timestamp(
            seconds=s["created_ns"] // 10**9, nanos=s["created_ns"] % 10**9
        )
        return pb.Snapshot(
            size_bytes=s["used_bytes"],
            snapshot_id=s["name"],
            source_volume_id=s["source"],
            creation_time=created,
            ready_to_use=True,
        )

    def _source(self, request: pb.CreateVolumeRequest) -> tuple[str, Volume | None]:
        """('snapshot:NAME' or 'volume:NAME' or '', the source's row) for a content source."""
        if not request.HasField("volume_content_source"):
            return "", None
        src = request.volume_content_source
        kind = src.WhichOneof("type")
        if kind == "snapshot":
            name = checks.require(
                src.snapshot.snapshot_id, "volume_content_source.snapshot.snapshot_id"
            )
            row = self._get(lambda m: m.snapshot_get(name))
        elif kind == "volume":
            name = checks.require(src.volume.volume_id, "volume_content_source.volume.volume_id")
            row = self._get(lambda m: m.volume_get(name))
        else:
            raise invalid("volume_content_source names neither a snapshot nor a volume")
        if row is None:
            raise not_found(f"source {kind} {name} does not exist")
        return f"{kind}:{name}", row

    # -- volumes ----------------------------------------------------------------------

    @rpc_method
    def CreateVolume(
        self, request: pb.CreateVolumeRequest, context: grpc.ServicerContext
    ) -> pb.CreateVolumeResponse:
        name = checks.storage_name(request.name)
        checks.check_capabilities(list(request.volume_capabilities))
        replicas, chunk = checks.volume_parameters(
            dict(request.parameters), dict(request.mutable_parameters)
        )
        rng = request.capacity_range if request.HasField("capacity_range") else None
        source, origin = self._source(request)
        needed = origin["used_bytes"] if origin else 0
        capacity = checks.capacity(rng, default=max(checks.DEFAULT_CAPACITY, needed))
        if capacity < needed:
            raise CsiError(
                Code.OUT_OF_RANGE,
                f"the source holds {needed} bytes; a capacity of {capacity} cannot contain it",
            )
        if origin and origin["chunk_size"] != chunk and "chunkSize" in request.parameters:
            raise invalid(
                f"chunkSize {chunk} differs from the source's {origin['chunk_size']}; "
                "a copy must keep the chunk size"
            )
        if origin:
            chunk = origin["chunk_size"]
        with self.locks.hold(name):
            existing = self._get(lambda m: m.volume_get(name))
            if existing is not None:
                stated = existing["params"]
                same = (
                    checks.fits(existing["capacity"], rng)
                    and existing["source"] == source
                    and existing["chunk_size"] == chunk
                    and stated.get("replicas", str(replicas)) == str(replicas)
                )
                if not same:
                    raise CsiError(
                        Code.ALREADY_EXISTS,
                        (
                            f"volume {name} exists with capacity {existing['capacity']}, chunk size "
                            f"{existing['chunk_size']}, replicas {stated.get('replicas')}, source "
                            f"{existing['source'] or 'none'}; the request differs"
                        ),
                    )
                return pb.CreateVolumeResponse(volume=self._volume(existing))
            params = {"replicas": str(replicas), "chunkSize": str(chunk)}
            created = self._create(
                lambda m: m.volume_create(name, capacity, replicas, chunk, params, source)
            )
        return pb.CreateVolumeResponse(volume=self._volume(created))

    @rpc_method
    def DeleteVolume(
        self, request: pb.DeleteVolumeRequest, context: grpc.ServicerContext
    ) -> pb.DeleteVolumeResponse:
        name = checks.require(request.volume_id, "volume_id")
        with self.locks.hold(name):
            self.meta.ask(lambda m: m.volume_delete(name))  # False (unknown) is success too
        return pb.DeleteVolumeResponse()

    @rpc_method
    def ValidateVolumeCapabilities(
        self, request: pb.ValidateVolumeCapabilitiesRequest, context: grpc.ServicerContext
    ) -> pb.ValidateVolumeCapabilitiesResponse:
        name = checks.require(request.volume_id, "volume_id")
        if not request.volume_capabilities:
            raise invalid("volume_capabilities is required")
        if self._get(lambda m: m.volume_get(name)) is None:
            raise not_found(f"volume {name} does not exist")
        for cap in request.volume_capabilities:
            reason = checks.unsupported(cap)
            if reason:
                return pb.ValidateVolumeCapabilitiesResponse(message=reason)
        confirmed = pb.ValidateVolumeCapabilitiesResponse.Confirmed(
            volume_context=dict(request.volume_context),
            volume_capabilities=list(request.volume_capabilities),
            parameters=dict(request.parameters),
            mutable_parameters=dict(request.mutable_parameters),
        )
        return pb.ValidateVolumeCapabilitiesResponse(confirmed=confirmed)

    @rpc_method
    def ListVolumes(
        self, request: pb.ListVolumesRequest, context: grpc.ServicerContext
    ) -> pb.ListVolumesResponse:
        volumes = {v["name"]: v for v in self.meta.ask(lambda m: m.volume_list())}
        names, next_token = checks.page(
            sorted(volumes), request.max_entries, request.starting_token
        )
        entries = [
            pb.ListVolumesResponse.Entry(
                volume=self._volume(volumes[n]),
                status=pb.ListVolumesResponse.VolumeStatus(volume_condition=self._condition(n)),
            )
            for n in names
        ]
        return pb.ListVolumesResponse(entries=entries, next_token=next_token)

    @rpc_method
    def ControllerGetVolume(
        self, request: pb.ControllerGetVolumeRequest, context: grpc.ServicerContext
    ) -> pb.ControllerGetVolumeResponse:
        name = checks.require(request.volume_id, "volume_id")
        volume = self._get(lambda m: m.volume_get(name))
        if volume is None:
            raise not_found(f"volume {name} does not exist")
        status = pb.ControllerGetVolumeResponse.VolumeStatus(volume_condition=self._condition(name))
        return pb.ControllerGetVolumeResponse(volume=self._volume(volume), status=status)

    @rpc_method
    def GetCapacity(
        self, request: pb.GetCapacityRequest, context: grpc.ServicerContext
    ) -> pb.GetCapacityResponse:
        """Free space on live chunk servers divided by the copies each byte needs."""
        for cap in request.volume_capabilities:
            checks.check_capability(cap)
        replicas, _ = checks.volume_parameters(dict(request.parameters), {})
        servers = self.meta.ask(lambda m: m.cluster_servers())
        free = sum(s["free"] for s in servers if s["state"] == "up")
        return pb.GetCapacityResponse(available_capacity=free // replicas)

    @rpc_method
    def ControllerGetCapabilities(
        self, request: pb.ControllerGetCapabilitiesRequest, context: grpc.ServicerContext
    ) -> pb.ControllerGetCapabilitiesResponse:
        return pb.ControllerGetCapabilitiesResponse(
            capabilities=[pb.ControllerServiceCapability(rpc=RPC(type=t)) for t in CAPABILITIES]
        )

    @rpc_method
    def ControllerExpandVolume(
        self, request: pb.ControllerExpandVolumeRequest, context: grpc.ServicerContext
    ) -> pb.ControllerExpandVolumeResponse:
        """Raise the quota. Mounts read the capacity from the meta role on every statfs, so
        nothing has to happen on the nodes (node_expansion_required is false)."""
        name = checks.require(request.volume_id, "volume_id")
        if not request.HasField("capacity_range"):
            raise invalid("capacity_range is required")
        if request.HasField("volume_capability"):
            checks.check_capability(request.volume_capability)
        wanted = checks.capacity(request.capacity_range)
        with self.locks.hold(name):
            volume = self._get(lambda m: m.volume_get(name))
            if volume is None:
                raise not_found(f"volume {name} does not exist")
            if volume["capacity"] < wanted:
                volume = self.meta.ask(lambda m: m.volume_resize(name, wanted))
        return pb.ControllerExpandVolumeResponse(
            capacity_bytes=volume["capacity"], node_expansion_required=False
        )

    @rpc_method
    def ControllerModifyVolume(
        self, request: pb.ControllerModifyVolumeRequest, context: grpc.ServicerContext
    ) -> pb.ControllerModifyVolumeResponse:
        """Change the replica count: new writes use it within one mount heartbeat; chunks
        written before keep the copies they have until repair re-replicates them."""
        name = checks.require(request.volume_id, "volume_id")
        replicas = checks.modify_parameters(dict(request.mutable_parameters))
        with self.locks.hold(name):
            try:
                self.meta.ask(lambda m: m.volume_set_replicas(name, replicas))
            except FsError as exc:
                if _missing(exc):
                    raise not_found(f"volume {name} does not exist") from None
                raise
        return pb.ControllerModifyVolumeResponse()

    # -- snapshots --------------------------------------------------------------------

    @rpc_method
    def CreateSnapshot(
        self, request: pb.CreateSnapshotRequest, context: grpc.ServicerContext
    ) -> pb.CreateSnapshotResponse:
        source = checks.require(request.source_volume_id, "source_volume_id")
        name = checks.storage_name(request.name)
        unknown = [k for k in request.parameters if not k.startswith("csi.storage.k8s.io/")]
        if unknown:
            raise invalid(f"snapshots take no parameters; got {unknown}")
        with self.locks.hold(name):
            existing = self._get(lambda m: m.snapshot_get(name))
            if existing is not None:
                if existing["source"] != source:
                    raise CsiError(
                        Code.ALREADY_EXISTS,
                        f"snapshot {name} exists for volume {existing['source']}, not {source}",
                    )
                return pb.CreateSnapshotResponse(snapshot=self._snapshot(existing))
            if self._get(lambda m: m.volume_get(source)) is None:
                raise not_found(f"volume {source} does not exist")
            created = self._create(lambda m: m.snapshot_create(name, source))
        return pb.CreateSnapshotResponse(snapshot=self._snapshot(created))

    @rpc_method
    def DeleteSnapshot(
        self, request: pb.DeleteSnapshotRequest, context: grpc.ServicerContext
    ) -> pb.DeleteSnapshotResponse:
        name = checks.require(request.snapshot_id, "snapshot_id")
        with self.locks.hold(name):
            self.meta.ask(lambda m: m.snapshot_delete(name))
        return pb.DeleteSnapshotResponse()

    @rpc_method
    def ListSnapshots(
        self, request: pb.ListSnapshotsRequest, context: grpc.ServicerContext
    ) -> pb.ListSnapshotsResponse:
        if request.snapshot_id:
            one = self._get(lambda m: m.snapshot_get(request.snapshot_id))
            snapshots = [one] if one else []
        else:
            snapshots = self.meta.ask(lambda m: m.snapshot_list())
        if request.source_volume_id:
            snapshots = [s for s in snapshots if s["source"] == request.source_volume_id]
        by_name = {s["name"]: s for s in snapshots}
        names, next_token = checks.page(
            sorted(by_name), request.max_entries, request.starting_token
        )
        return pb.ListSnapshotsResponse(
            entries=[
                pb.ListSnapshotsResponse.Entry(snapshot=self._snapshot(by_name[n])) for n in names
            ],
            next_token=next_token,
        )

    @rpc_method
    def GetSnapshot(
        self, request: pb.GetSnapshotRequest, context: grpc.ServicerContext
    ) -> pb.GetSnapshotResponse:
        name = checks.require(request.snapshot_id, "snapshot_id")
        snapshot = self._get(lambda m: m.snapshot_get(name))
        if snapshot is None:
            raise not_found(f"snapshot {name} does not exist")
        return pb.GetSnapshotResponse(snapshot=self._snapshot(snapshot))
