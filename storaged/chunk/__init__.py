"""The chunk role: immutable, content-addressed chunks on a local disk."""
