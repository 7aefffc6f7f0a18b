"""fusefs: a shoalfs volume mounted as a local POSIX filesystem (pyfuse3 + trio)."""
