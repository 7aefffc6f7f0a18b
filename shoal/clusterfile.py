"""``cluster.json``: where a local cluster's pieces are, so tools and people can find them.

Written by ``shoal up``, read by ``shoal status``, ``shoal down`` and (later) the CSI
driver's ``--cluster`` flag. Fields::

    version        1
    workdir        the directory holding everything below
    secret_file    path of the cluster secret (mode 600)
    chunk_servers  [{name, address, data_dir, pid, log, server_id}]
    meta           the meta role's address, once it exists (null until then)
    volume         the mounted volume's name (null until the filesystem exists)
    mountpoint     where it is mounted (null until then)
"""

from __future__ import annotations

import json
import os
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

FILENAME = "cluster.json"


@dataclass
class ChunkServerEntry:
    name: str
    address: str
    data_dir: str
    pid: int
    log: str
    server_id: str = ""


@dataclass
class ClusterFile:
    workdir: str
    secret_file: str
    chunk_servers: list[ChunkServerEntry] = field(default_factory=list)
    meta: str | None = None
    volume: str | None = None
    mountpoint: str | None = None
    version: int = 1

    def save(self, path: Path) -> None:
        tmp = path.with_name(path.name + ".tmp")
        tmp.write_text(json.dumps(asdict(self), indent=2) + "\n")
        os.replace(tmp, path)

    @classmethod
    def load(cls, path: Path) -> ClusterFile:
        try:
            doc: dict[str, Any] = json.loads(path.read_text())
        except FileNotFoundError:
            raise FileNotFoundError(f"no cluster at {path} (start one with: shoal up)") from None
        servers = [ChunkServerEntry(**s) for s in doc.pop("chunk_servers", [])]
        return cls(chunk_servers=servers, **doc)
