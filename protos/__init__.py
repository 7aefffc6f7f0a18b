"""The CSI wire contract (csi.proto) and the Python modules generated from it."""
