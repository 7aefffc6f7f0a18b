"""Named places where a test can make a real process pause or die.

Crash tests need to SIGKILL a server at an exact point (say, between writing a chunk's temp
file and renaming it); sleeping there on request makes that deterministic without mocks.
Set ``SHOALFS_FAILPOINTS="name=sleep:SECONDS,other=exit"`` in the process's environment.
Unset (always, in production), ``hit`` is a dictionary lookup on an empty dict.
"""

from __future__ import annotations

import os
import time

ENV = "SHOALFS_FAILPOINTS"


def _parse(text: str) -> dict[str, str]:
    points = {}
    for item in filter(None, (part.strip() for part in text.split(","))):
        name, _, action = item.partition("=")
        points[name] = action
    return points


_POINTS = _parse(os.environ.get(ENV, ""))


def hit(name: str) -> None:
    """Run the action configured for ``name``, if any (called from worker threads, and
    from the chunk server's event loop for a buffered put: a sleep there stops it all)."""
    action = _POINTS.get(name)
    if not action:
        return
    if action.startswith("sleep:"):
        time.sleep(float(action[len("sleep:") :]))
    elif action == "exit":
        os._exit(99)
