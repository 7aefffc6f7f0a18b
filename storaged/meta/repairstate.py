"""What the repair task has done and is doing, kept in the meta role.

The repair loop (storaged/repair.py) writes it; the meta role's RPC methods read it
(``repair.status``, ``cluster.status``, each volume's health) and set ``wanted`` for
``repair.run``. It lives here, under meta/, because the meta role owns it: the repair loop
is a client of the meta role and sits above it.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import trio


@dataclass
class RepairStatus:
    """What the last (or current) pass did: the CLI's progress display reads this."""

    running: bool = False
    passes: int = 0
    started: float = 0.0
    finished: float = 0.0
    total: int = 0  # referenced chunks to check in this pass
    checked: int = 0
    under_replicated: int = 0
    repaired: int = 0  # chunks brought back to R copies
    copies_made: int = 0
    bytes_copied: int = 0
    missing: int = 0  # no good copy on any live server
    failed: int = 0  # could not be repaired this pass (will be tried again)
    moved: int = 0  # rebalance: copies made on a chunk's placement servers
    extras_removed: int = 0  # rebalance: copies beyond R removed from elsewhere
    last_error: str = ""
    missing_examples: list[str] = field(default_factory=list)

    def as_dict(self) -> dict[str, Any]:
        out = dict(vars(self))
        out["remaining"] = max(0, self.total - self.checked)
        return out


AT_RISK_KEPT = 100_000  # chunk ids remembered per kind for per-volume health


class RepairState:
    """Shared by the meta role's RPC methods (status, run now) and its repair task.

    ``unresolved`` and ``missing`` are the chunk ids the last finished pass left below R
    copies (and with none at all): 'shoal status' turns them into each volume's health.
    At most AT_RISK_KEPT of each are kept; the pass's counts are exact regardless.
    """

    def __init__(self) -> None:
        self.status = RepairStatus()
        self.wanted = trio.Event()  # set by repair.run: start a pass now
        self.last: RepairStatus | None = None  # the last finished pass
        self.unresolved: set[str] = set()
        self.missing: set[str] = set()
