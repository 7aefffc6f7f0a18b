"""How the CLI writes numbers for people: sizes, ages, progress with an ETA."""

from __future__ import annotations

import sys
import time


def size(n: float) -> str:
    """Bytes in binary units, e.g. 1.5GiB."""
    value = float(n)
    for unit in ("B", "KiB", "MiB", "GiB", "TiB"):
        if abs(value) < 1024 or unit == "TiB":
            return f"{value:.0f}{unit}" if unit == "B" else f"{value:.1f}{unit}"
        value /= 1024
    return str(n)


def age(seconds: float) -> str:
    """A duration as people say it: 42s, 7m, 3h, 2d."""
    for limit, unit, per in ((120, "s", 1), (7200, "m", 60), (172800, "h", 3600)):
        if seconds < limit:
            return f"{seconds / per:.0f}{unit}"
    return f"{seconds / 86400:.0f}d"


def eta(done: float, total: float, started: float) -> str:
    """', ETA 40s' from the rate so far; empty until there is a rate to go by."""
    elapsed = time.time() - started
    if done <= 0 or total <= done or elapsed <= 0:
        return ""
    return f", ETA {age((total - done) / (done / elapsed))}"


class ProgressLine:
    """One line on stderr rewritten in place, only when stderr is a terminal (a log file or
    a script gets the final line alone)."""

    def __init__(self, enabled: bool = True) -> None:
        self.live = enabled and sys.stderr.isatty()
        self.shown = False

    def show(self, text: str) -> None:
        if self.live:
            print(f"\r\x1b[K{text}", end="", file=sys.stderr, flush=True)
            self.shown = True

    def done(self) -> None:
        if self.shown:
            print(file=sys.stderr)
            self.shown = False
