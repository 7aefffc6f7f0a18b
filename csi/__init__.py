"""The CSI driver: Identity, Controller and Node services over gRPC (grpcio's thread pool)."""

PLUGIN_NAME = "csi.shoalfs.dev"
# Every node plugin reports, and every volume is accessible from, one topology segment: this
# key with the installation's name (--installation; the manifests pass the namespace). It
# marks the nodes that run the node plugin. Its value must never change for a node: kubelet
# refuses a node plugin that reports another value than the node's label ("topology value
# collision"). The key before it, csi.shoalfs.dev/cluster, carried the meta database's id,
# which changed with every new database (a reinstall) and needed the meta role to answer
# NodeGetInfo; volumes provisioned then keep that key in their node affinity.
TOPOLOGY_KEY = "csi.shoalfs.dev/installation"
DEFAULT_INSTALLATION = "shoalfs"
