"""The ``shoal`` command: one entry point for every shoalfs process and admin task."""
