"""The Identity service: who the plugin is, what it can do, and whether it is ready."""

from __future__ import annotations

import grpc
from google.protobuf import wrappers_pb2

from protos import csi_pb2 as pb
from protos import csi_pb2_grpc as pb_grpc
from storaged import __version__
from storaged.rpc import RpcError

from . import PLUGIN_NAME
from .errors import rpc_method
from .rpcbridge import RpcBridge

Service = pb.PluginCapability.Service
Expansion = pb.PluginCapability.VolumeExpansion


class IdentityServicer(pb_grpc.IdentityServicer):
    def __init__(self, meta: RpcBridge, controller: bool) -> None:
        self.meta = meta
        self.controller = controller

    @rpc_method
    def GetPluginInfo(
        self, request: pb.GetPluginInfoRequest, context: grpc.ServicerContext
    ) -> pb.GetPluginInfoResponse:
        return pb.GetPluginInfoResponse(name=PLUGIN_NAME, vendor_version=__version__)

    @rpc_method
    def GetPluginCapabilities(
        self, request: pb.GetPluginCapabilitiesRequest, context: grpc.ServicerContext
    ) -> pb.GetPluginCapabilitiesResponse:
        # The same answer from every instance (the spec asks for the plugin "as a whole").
        caps = [
            pb.PluginCapability(service=Service(type=Service.CONTROLLER_SERVICE)),
            pb.PluginCapability(service=Service(type=Service.VOLUME_ACCESSIBILITY_CONSTRAINTS)),
            pb.PluginCapability(volume_expansion=Expansion(type=Expansion.ONLINE)),
        ]
        return pb.GetPluginCapabilitiesResponse(capabilities=caps)

    @rpc_method
    def Probe(self, request: pb.ProbeRequest, context: grpc.ServicerContext) -> pb.ProbeResponse:
        """Ready only while the meta role answers: without it nothing can be provisioned or
        mounted, and saying so lets the CO (and the liveness probe) see it."""
        try:
            self.meta.ask(lambda m: m.cluster_info(timeout=5))
        except RpcError:
            return pb.ProbeResponse(ready=wrappers_pb2.BoolValue(value=False))
        return pb.ProbeResponse(ready=wrappers_pb2.BoolValue(value=True))
