"""``cluster.json``: where a local cluster's pieces are, so tools and people can find them.

Written by ``shoal up``, read by ``shoal status``, ``shoal down``, ``shoal mount`` and the
CSI driver's ``--cluster`` flag. Fields::

    version        1
    workdir        the directory holding everything below
    secret_file    path of the cluster secret (mode 600)
    meta           the meta role's address
    meta_process   {pid, data_dir, log} of the meta role's process
    chunk_servers  [{name, address, data_dir, pid, log, server_id}]
    volume         the volume 'shoal up' created and mounted
    mountpoint     where it is mounted
    mount_pid      the mount process's pid
    tls_dir        the TLS directory every process uses ("" when connections are plain)
"""

from __future__ import annotations

import json
import os
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from storaged.rpc import tls

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
class ProcessEntry:
    pid: int
    data_dir: str
    log: str


@dataclass
class ClusterFile:
    workdir: str
    secret_file: str
    meta: str | None = None
    meta_process: ProcessEntry | None = None
    chunk_servers: list[ChunkServerEntry] = field(default_factory=list)
    volume: str | None = None
    mountpoint: str | None = None
    mount_pid: int | None = None
    tls_dir: str = ""
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
        meta_process = doc.pop("meta_process", None)
        if doc.get("tls_dir") and not tls.active():
            # A cluster started with TLS on only answers TLS: whoever finds it through this
            # file must use it too, without having to be told again.
            tls.enable(doc["tls_dir"])
        return cls(
            chunk_servers=servers,
            meta_process=ProcessEntry(**meta_process) if meta_process else None,
            **doc,
        )
