"""The CSI driver: Identity, Controller and Node services over gRPC (grpcio's thread pool)."""

PLUGIN_NAME = "csi.shoalfs.dev"
TOPOLOGY_KEY = "csi.shoalfs.dev/cluster"
