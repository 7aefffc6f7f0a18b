"""What the meta role answers, as types: the wire carries msgpack maps, and these say which
keys a caller may count on. They are TypedDicts, not classes, so an answer is used as it
arrives (no copy per call on the mount's hot path) and still type-checks.

``ATTR_KEYS`` is the one statement of the attribute order of a listing's rows (fs.readdir
with ``rows``): the meta role writes rows in it and the mount reads them in it.
"""

from __future__ import annotations

from typing import Any, NotRequired, TypedDict

ATTR_KEYS = (
    "ino",
    "mode",
    "nlink",
    "uid",
    "gid",
    "rdev",
    "size",
    "stored",
    "atime_ns",
    "mtime_ns",
    "ctime_ns",
)


class Attr(TypedDict, total=False):
    """An inode's attributes (fs.lookup, fs.getattr, fs.setattr, fs.mknod, ...). The first
    eleven keys are always there; the others come with the calls that name them."""

    ino: int
    mode: int
    nlink: int
    uid: int
    gid: int
    rdev: int
    size: int
    stored: int  # bytes of the file on chunk servers (its blocks, for st_blocks)
    atime_ns: int
    mtime_ns: int
    ctime_ns: int
    parent: Attr  # fs.mknod, fs.unlink, fs.rmdir: the directory as the change left it
    deleted: bool  # fs.unlink, fs.rmdir, fs.rename: the victim went with its name
    chunks: list[Any]  # fs.open or fs.lookup with pieces: the map of the first pieces
    held: bool  # fs.lookup with pieces: the file is held for the session (as by fs.open)
    volume_used: int  # fs.commit: the volume's usage after it
    grant: DirGrant  # fs.mknod of a directory with delegate: delegated to the mount


class Volume(TypedDict):
    """A volume or a snapshot (volume.get, snapshot.get, volume.list, ...)."""

    id: int
    name: str
    capacity: int
    replicas: int
    chunk_size: int
    root: int
    used_bytes: int
    used_inodes: int
    created_ns: int
    params: dict[str, Any]
    kind: str  # "volume" or "snapshot"
    source: str  # "snapshot:NAME" or "volume:NAME" it was copied from, or ""


class VolumeUsage(TypedDict):
    """volume.statfs."""

    capacity: int
    used: int
    inodes: int
    chunk_size: int


class Server(TypedDict):
    """A row of the cluster map (cluster.servers)."""

    id: str
    address: str
    zone: str
    capacity: int
    used: int
    free: int
    chunks: int
    last_seen_ns: int
    state: str  # "up" or "down"
    draining: bool


class DirGrant(TypedDict):
    """dir.delegate: a directory delegated to the asking mount (storaged/meta/
    delegations.py), with the inode numbers it may give new nodes."""

    grant: str
    first: int
    last: int
    dir: Attr
    upto: int  # the events queued for the session before the grant (use it past them)


class Numbers(TypedDict):
    """dir.extend: more inode numbers for a grant, ``first..last``, reserved on disk."""

    first: int
    last: int


class Applied(TypedDict):
    """fs.apply: the directory after the batch, and the inodes it deleted; with a
    ``commit`` sent along, its own outcome: ``{"attr": Attr}`` or ``{"error": {code,
    message}}`` (the batch was applied either way)."""

    parent: Attr
    deleted: list[int]
    commit: NotRequired[dict[str, Any]]


class Invalidations(TypedDict):
    """session.listen: what a mount must drop from its kernel's caches (see
    storaged/meta/watches.py): events ``["i", ino, data]`` and ``["e", parent, name]``,
    or, with ``reset``, everything."""

    events: list[list[Any]]
    reset: bool
    upto: int  # to acknowledge with the next poll, once dealt with


class BackupInfo(TypedDict):
    """meta.backup_open: a consistent copy of the database to be read in pieces."""

    id: str
    size: int


# Reports whose shape is the business of the code that renders them (shoal status, the
# CSI driver's health check, the repair loop); named so a signature says which it is.
VolumeHealth = dict[str, Any]
ClusterInfo = dict[str, Any]
ClusterStatus = dict[str, Any]
RepairStatus = dict[str, Any]
FsckReport = dict[str, Any]


class FsckRepair(TypedDict):
    """fsck.repair: what was mended, one line per inode (see storaged.meta.fsck)."""

    volume: str
    repaired: list[str]
