"""One operation at a time per volume or snapshot, as the spec allows plugins to demand.

The CO should never send two calls for one volume at once, but after a restart it may; a
second call then gets ABORTED (retry later) instead of racing the first, e.g. two fusefs
processes mounting the same staging path.
"""

from __future__ import annotations

import contextlib
import threading
from collections.abc import Iterator

from .errors import Code, CsiError


class NameLocks:
    def __init__(self) -> None:
        self._guard = threading.Lock()
        self._busy: set[str] = set()

    @contextlib.contextmanager
    def hold(self, name: str) -> Iterator[None]:
        with self._guard:
            if name in self._busy:
                raise CsiError(Code.ABORTED, f"an operation on {name} is already in progress")
            self._busy.add(name)
        try:
            yield
        finally:
            with self._guard:
                self._busy.discard(name)
