"""The node plugin's record of what it staged and published, kept on disk.

Kubelet does not repeat NodeStage after a plugin restart; a plugin that kept this only in
memory would then fail NodePublish with "not staged" (seaweedfs-csi-driver#203). One JSON
file per volume, replaced atomically (write, fsync, rename, fsync the directory), so a
SIGKILL at any moment leaves the old record or the new one, never half of either.
"""

from __future__ import annotations

import json
import os
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from storaged.durable import fsync_dir
from storaged.volumerules import is_valid_name


@dataclass
class StagedVolume:
    volume_id: str
    staging_path: str
    pid: int = 0
    flags: list[str] = field(default_factory=list)
    # target path -> {"readonly": bool, "flags": [...], "mode": access mode number}
    targets: dict[str, dict[str, Any]] = field(default_factory=dict)


class NodeState:
    def __init__(self, state_dir: str | Path) -> None:
        self.dir = Path(state_dir) / "volumes"
        self.dir.mkdir(parents=True, exist_ok=True)

    def _path(self, volume_id: str) -> Path:
        if not is_valid_name(volume_id):
            raise ValueError(f"volume id {volume_id!r} is not a shoalfs volume name")
        return self.dir / f"{volume_id}.json"

    def load(self, volume_id: str) -> StagedVolume | None:
        if not is_valid_name(volume_id):
            return None  # not a name shoalfs gives volumes: never staged here
        try:
            data = json.loads(self._path(volume_id).read_text())
        except FileNotFoundError:
            return None
        return StagedVolume(**data)

    def save(self, record: StagedVolume) -> None:
        path = self._path(record.volume_id)
        tmp = path.with_suffix(".tmp")
        with open(tmp, "w") as f:
            json.dump(asdict(record), f, indent=1)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
        fsync_dir(self.dir)

    def remove(self, volume_id: str) -> None:
        if not is_valid_name(volume_id):
            return
        try:
            self._path(volume_id).unlink()
        except FileNotFoundError:
            return
        fsync_dir(self.dir)

    def all(self) -> list[StagedVolume]:
        return [StagedVolume(**json.loads(p.read_text())) for p in sorted(self.dir.glob("*.json"))]
