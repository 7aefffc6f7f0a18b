"""Refuse writes past the volume's capacity at write() time, not only at close().

The meta role's commit is the authority (it refuses a commit past the quota), but a write
that only fails at close() surprises programs that do not check close(). So the mount
keeps the volume's committed usage, refreshed at most once a second, adds the bytes its
open files hold beyond what they committed, and refuses with ENOSPC when a write would
pass the capacity. (The uncommitted part is computed from the files each time: the
refreshed usage does not include it, so it must never be reset with it.)
"""

from __future__ import annotations

import errno
import time
from collections.abc import Mapping
from typing import Any

from storaged.metaclient import MetaClient, VolumeUsage
from storaged.rpc import FsError

REFRESH_SECONDS = 1.0


class QuotaGuard:
    def __init__(self, meta: MetaClient, volume_id: int) -> None:
        self.meta = meta
        self.volume_id = volume_id
        self.capacity = 0
        self.used = 0
        self.inodes = 0
        self.refreshed = -1e18

    async def statfs(self) -> VolumeUsage:
        info = await self.meta.volume_statfs(self.volume_id)
        self.capacity, self.used, self.inodes = info["capacity"], info["used"], info["inodes"]
        self.refreshed = time.monotonic()
        return info

    def committed(self, answer: Mapping[str, Any]) -> None:
        """A commit of this mount's: the meta role's answer carries the volume's usage after
        it (a meta role from before that answer did not: ask again on the next write). Asking
        again after every commit cost each small file's first write a round trip."""
        if "volume_used" in answer:
            self.used = answer["volume_used"]
        else:
            self.stale()

    def stale(self) -> None:
        """Usage changed (a commit, a delete): ask the meta role again on the next write."""
        self.refreshed = -1e18

    async def check(self, growth: int, uncommitted: int) -> None:
        """Raise ENOSPC unless ``growth`` more bytes fit beside ``uncommitted`` ones."""
        if growth <= 0:
            return
        if time.monotonic() - self.refreshed > REFRESH_SECONDS:
            await self.statfs()
        if self.used + uncommitted + growth > self.capacity:
            raise FsError(
                errno.ENOSPC,
                f"volume full: {self.used + uncommitted} of "
                f"{self.capacity} bytes used or being written",
            )
