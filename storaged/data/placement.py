"""Where a chunk's replicas live, computed from the chunk id and the cluster map alone.

Weighted rendezvous hashing: every server gets a score from (chunk id, server id) and its
weight; the chunk belongs on the highest scores. No location table is kept, every client
with the same map computes the same order, and adding or removing a server moves only the
chunks whose top scores involved it.

Weights are the servers' capacities, not their free space. Free space changes with every
write, and weighting by it would keep moving where existing chunks "belong"; weighting by
capacity fills every server to the same fraction, which is what free-space weighting aims
for, with a placement that stays put. A server that is full or down is skipped when
writing (the next in the order takes the copy) and repair moves copies back later.
"""

from __future__ import annotations

import hashlib
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any


@dataclass(frozen=True)
class Server:
    id: str
    address: str
    zone: str
    capacity: int
    free: int
    up: bool
    draining: bool = False  # being emptied: readable, but no new copies go there

    @classmethod
    def from_row(cls, row: Mapping[str, Any]) -> Server:
        """A server as ``cluster.servers`` lists it."""
        return cls(
            row["id"],
            row["address"],
            row["zone"],
            row["capacity"],
            row["free"],
            row["state"] == "up",
            bool(row.get("draining")),
        )


def _score(chunk_id: str, server: Server) -> float:
    digest = hashlib.blake2b(f"{chunk_id}/{server.id}".encode(), digest_size=8).digest()
    # uniform in (0, 1), never 0 or 1 exactly
    u = (int.from_bytes(digest, "big") + 0.5) / 2**64
    weight = max(server.capacity, 1)
    return -weight / math.log(u)


def placement_order(chunk_id: str, servers: Sequence[Server]) -> list[Server]:
    """All servers, best first, with distinct zones preferred for the first places.

    The first R entries are where R replicas belong. Zones: walk the scored order and take
    one server per zone first, then the rest in score order, so replicas spread over
    failure domains whenever there are enough of them.
    """
    ranked = sorted(servers, key=lambda s: (_score(chunk_id, s), s.id), reverse=True)
    seen_zones: set[str] = set()
    first, rest = [], []
    for server in ranked:
        if server.zone not in seen_zones:
            seen_zones.add(server.zone)
            first.append(server)
        else:
            rest.append(server)
    return first + rest
