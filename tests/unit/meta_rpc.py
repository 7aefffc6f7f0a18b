"""A mount's Operations talking to the meta role's real methods in the same process, with
the parameter checks an RPC server applies, and a meta role of an older release imitated
by refusing extra parameters, as its method table would."""

from __future__ import annotations

from types import SimpleNamespace
from typing import Any, cast

import trio

from fusefs.filedata import VolumeIO
from fusefs.operations import Operations
from storaged.meta.db import open_database
from storaged.meta.service import MetaService
from storaged.metaclient import MetaClient
from storaged.rpc.errors import InvalidArgument
from storaged.rpc.methods import MethodTable


class MetaOverRpc:
    """``old``: method -> the most parameters it takes (an older release's signature)."""

    def __init__(self, service: MetaService, old: dict[str, int] | None = None) -> None:
        self.table = MethodTable()
        service.register(self.table)
        self.old = old or {}
        self.calls: list[tuple[str, int]] = []  # (method, number of parameters)

    def be_patient(self, address: str, patience: Any) -> None:
        pass  # no connection to wait for

    async def call(self, address: str, method: str, *params: Any, **options: Any) -> Any:
        self.calls.append((method, len(params)))
        if len(params) > self.old.get(method, len(params)):
            raise InvalidArgument(f"{method} takes at most {self.old[method]} parameters")
        found = self.table.get(method)
        return await found.handler(*found.bind(list(params)))


async def meta_service() -> tuple[MetaService, dict[str, Any]]:
    """A meta role on an in-memory database, with one volume (4 MiB chunks)."""
    service = MetaService(open_database(":memory:"))
    return service, await service.volume_create("v", 1 << 30, 2, 4 << 20)


def operations(rpc: MetaOverRpc, volume: dict[str, Any], nursery: trio.Nursery) -> Operations:
    # a stand-in for VolumeIO with what the namespace handlers use (no chunk is moved)
    io = SimpleNamespace(
        meta=MetaClient(rpc, "meta"),
        files={},
        nursery=nursery,
        chunk_size=volume["chunk_size"],
    )
    return Operations(cast(VolumeIO, io), {"root": volume["root"], "id": volume["id"]})
