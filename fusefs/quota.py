"""Refuse writes past the volume's capacity at write() time, not only at close().

The meta role's commit is the authority (it refuses a commit past the quota), but a write
that only fails at close() surprises programs that do not check close(). So the mount
keeps the volume's usage, refreshed at most once a second, adds what it wrote since, and
refuses with ENOSPC when a write would pass the capacity.
"""

from __future__ import annotations

import errno
import time

from storaged.rpc import FsError, RpcClient

REFRESH_SECONDS = 1.0


class QuotaGuard:
    def __init__(self, rpc: RpcClient, meta: str, volume_id: int) -> None:
        self.rpc = rpc
        self.meta = meta
        self.volume_id = volume_id
        self.capacity = 0
        self.used = 0
        self.inodes = 0
        self.pending = 0
        self.refreshed = -1e18

    async def statfs(self) -> dict[str, int]:
        info = await self.rpc.call(self.meta, "volume.statfs", self.volume_id)
        self.capacity, self.used, self.inodes = info["capacity"], info["used"], info["inodes"]
        self.pending = 0
        self.refreshed = time.monotonic()
        return info

    async def charge(self, growth: int) -> None:
        """Account ``growth`` new bytes, or raise ENOSPC if they do not fit."""
        if growth <= 0:
            return
        if time.monotonic() - self.refreshed > REFRESH_SECONDS:
            await self.statfs()
        if self.used + self.pending + growth > self.capacity:
            raise FsError(errno.ENOSPC, f"volume full: {self.used + self.pending} of "
                                        f"{self.capacity} bytes used")
        self.pending += growth
