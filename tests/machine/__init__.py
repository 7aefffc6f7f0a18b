"""Tests that use this machine — real sockets, child processes, command-line tools (the
shoal CLI, hadolint, apt-cache) — but no cluster. tests/unit stays pure (no socket, no
process: it runs in seconds anywhere); tests/integration runs real clusters and mounts, and
runs again with TLS on. These run once, in the first pass."""
