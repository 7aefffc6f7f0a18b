"""Runs one storaged process and replaces it on request: how tests SIGKILL and restart the
meta role while threads of the test process hold files open on a mount.

Why not start the new process from the test itself: a fork carries the test's open files
into the child, and the child's closing of them before exec is, for a file on a FUSE mount,
a FLUSH. A flush of written data commits through the meta role, the very process being
restarted, and the mount waits for it (``--meta-wait``): the restart would hang until the
mount gave up. This process was started before any mount existed and holds no such files.

Commands, one per line on stdin, each answered with one line on stdout:
  start ARGV-AS-JSON   -> "started PID"
  kill                 -> "killed" (SIGKILL, and reaped)
Closing stdin kills the storaged process and ends this one.
"""

from __future__ import annotations

import json
import subprocess
import sys


def _end(child: subprocess.Popen[bytes] | None) -> None:
    """SIGKILL the storaged process if it runs, and reap it."""
    if child is not None and child.poll() is None:
        child.kill()
        child.wait()


def main() -> None:
    child: subprocess.Popen[bytes] | None = None
    for line in sys.stdin:
        command, _, rest = line.strip().partition(" ")
        if command == "start":
            _end(child)
            # stdout/stderr are the log file the test gave this process
            child = subprocess.Popen(
                json.loads(rest), stdin=subprocess.DEVNULL, stdout=sys.stderr, stderr=sys.stderr
            )
            print(f"started {child.pid}", flush=True)
        elif command == "kill":
            _end(child)
            print("killed", flush=True)
        else:
            print(f"unknown command {command!r}", flush=True)
    _end(child)  # stdin closed: the test is done


if __name__ == "__main__":
    main()
