"""The meta role's API as a typed client: one method per RPC, and the only place in the
tree that spells a meta method's name.

Why a class of its own rather than ``rpc.call(meta, "fs.getattr", ino)`` at every call
site: the method names, their parameter order, which calls are safe to send twice, which
change a directory, and how to talk to an older meta role were spread over four packages;
here they are written down once, next to each other. The coherent cache's lease protocol
(invalidations the meta role pushes to a mount) belongs here too.

Compatibility with an older meta role (one release back) is handled inside: a call it does
not understand is sent again in the form it knows, and ``features`` remembers what it
lacks so the next call goes straight to that form.
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any, Protocol

from storaged.rpc import InvalidArgument, MethodNotFound, Patience

from .results import (
    ATTR_KEYS,
    Applied,
    Attr,
    BackupInfo,
    ClusterInfo,
    ClusterStatus,
    DirGrant,
    FsckRepair,
    FsckReport,
    Invalidations,
    Numbers,
    RepairStatus,
    Server,
    Volume,
    VolumeHealth,
    VolumeUsage,
)

log = logging.getLogger("storaged.metaclient")

# Methods a client may send again when the connection broke after sending (the meta role
# restarting): reads, and changes that leave the same state when made twice. A commit sent
# twice stores the same pieces (a slice twice lays the same bytes over them). Not here:
# creates, links, renames, unlinks and xattr sets, where the second try would answer EEXIST
# or ENOENT for what the first did; those fail (outcome unknown), and only those whose
# request was lost before it reached the meta role are sent again (RpcClient's Patience).
REPEATABLE = frozenset(
    {
        "fs.lookup",
        "fs.getattr",
        "fs.readdir",
        "fs.readlink",
        "fs.getxattr",
        "fs.listxattr",
        "fs.chunks",
        "volume.get",
        "volume.statfs",
        "fs.open",
        "fs.release",
        "fs.forget",
        "fs.setattr",
        "fs.commit",
        "fs.sync",
        "session.heartbeat",
        "session.pending",
        "session.close",
        "session.hold",
        "session.orphans",
        "cluster.servers",
        "cluster.report_bad",
        "dir.extend",  # (sent twice: the first answer's numbers are a gap)
    }
)
# (Not session.listen: a poll lost with its answer lost that answer's invalidations; the
# mount must hear that its stream broke, not receive the next answer as if nothing was.)

# Methods that change no directory's attributes (reads; holds; a file's commit; deleting an
# orphan, which has no name left; a delegated directory's batch, whose every change the
# mount counted as its own when it answered it: fusefs/delegation.py). Every other method
# may, and ``on_change`` is told before it is sent (a mount forgets the directory
# attributes it keeps from creates, and the attributes it knows: an open of a file it
# knows would otherwise need the meta role again after every batch).
LEAVES_DIRECTORIES_ALONE = frozenset(
    {
        "fs.lookup",
        "fs.getattr",
        "fs.open",
        "fs.release",
        "fs.forget",
        "fs.getxattr",
        "fs.listxattr",
        "fs.readdir",
        "fs.readlink",
        "fs.chunks",
        "fs.commit",
        "fs.sync",
        "volume.get",
        "volume.statfs",
        "session.open",
        "session.heartbeat",
        "session.pending",
        "session.close",
        "session.hold",
        "session.orphans",
        "session.listen",
        "cluster.servers",
        "cluster.report_bad",
        "dir.delegate",
        "dir.extend",
        "fs.apply",
    }
)

# Methods sent without first sending this mount's batches of delegated directories
# (``before_call``): the batches themselves and the grants, the stream of invalidations
# and the heartbeat (which carry no change and must not wait behind one), and calls about
# no inode's names. Every other call may depend on what a batch holds (a commit of a file
# made in it, a lookup of a name made in it, an fsync), and the meta role must see this
# mount's changes in the order the mount acknowledged them.
INDEPENDENT_OF_BATCHES = frozenset(
    {
        "fs.apply",
        "dir.delegate",
        "dir.extend",
        "session.open",
        "session.listen",
        "session.heartbeat",
        "session.pending",
        "volume.statfs",
        "volume.get",
        "cluster.servers",
        "cluster.report_bad",
    }
)


class Caller(Protocol):
    """What a MetaClient needs of its RPC client: an ``RpcClient`` (the unit tests stand in
    one that calls a meta service in the same process)."""

    async def call(
        self,
        address: str,
        method: str,
        *params: Any,
        timeout: float | None = ...,
        retries: int = ...,
    ) -> Any: ...

    def be_patient(self, address: str, patience: Patience) -> None: ...


@dataclass
class MetaFeatures:
    """What the meta role this client talks to can do; each starts True and turns False
    the first time the meta role shows it is from a release without it."""

    holds: bool = True  # keeps inodes a mount references (session.hold, sessions
    # on fs.unlink/rmdir/rename/forget)
    map_with_open: bool = True  # fs.open answers a file's first pieces
    map_with_lookup: bool = True  # fs.lookup answers a file's first pieces and a hold
    rows_listing: bool = True  # fs.readdir answers flat rows
    sync: bool = True  # fs.sync (group commit: a change is on disk within a period)


class MetaClient:
    """Calls to one meta role over an ``RpcClient`` (whose connections it shares)."""

    def __init__(
        self, rpc: Caller, address: str, *, on_change: Callable[[], None] | None = None
    ) -> None:
        self.rpc = rpc
        self.address = address
        self.on_change = on_change
        # awaited before every call not in INDEPENDENT_OF_BATCHES: a mount sends its
        # delegated directories' batches there (fusefs/delegation.py)
        self.before_call: Callable[[], Awaitable[None]] | None = None
        self.features = MetaFeatures()

    def be_patient(self, seconds: float) -> None:
        """Calls wait up to ``seconds`` for a meta role that does not answer (restarting),
        sending again only what is safe to send again (REPEATABLE)."""
        self.rpc.be_patient(self.address, Patience(seconds, REPEATABLE))

    async def _call(
        self, method: str, *params: Any, timeout: float | None = None, retries: int = 1
    ) -> Any:
        """Trailing None parameters are left off: each is an optional one the meta role
        defaults to None, and a request without them is one an older release takes."""
        if self.on_change is not None and method not in LEAVES_DIRECTORIES_ALONE:
            self.on_change()  # before the first await: the caller counts on it
        if self.before_call is not None and method not in INDEPENDENT_OF_BATCHES:
            await self.before_call()
        end = len(params)
        while end and params[end - 1] is None:
            end -= 1
        return await self.rpc.call(
            self.address, method, *params[:end], timeout=timeout, retries=retries
        )

    # -- volumes and snapshots ------------------------------------------------------------

    async def volume_create(
        self,
        name: str,
        capacity: int,
        replicas: int,
        chunk_size: int,
        params: dict[str, Any] | None = None,
        source: str = "",
    ) -> Volume:
        """With ``source`` ('snapshot:NAME' or 'volume:NAME'), the volume starts as a copy
        of that tree."""
        if params is None and not source:
            return await self._call("volume.create", name, capacity, replicas, chunk_size)
        return await self._call(
            "volume.create", name, capacity, replicas, chunk_size, params, source
        )

    async def volume_get(self, name: str) -> Volume:
        return await self._call("volume.get", name)

    async def volume_list(self) -> list[Volume]:
        return await self._call("volume.list")

    async def volume_delete(self, name: str) -> bool:
        """False when there was no such volume."""
        return await self._call("volume.delete", name)

    async def volume_resize(self, name: str, capacity: int) -> Volume:
        return await self._call("volume.resize", name, capacity)

    async def volume_statfs(self, volume_id: int) -> VolumeUsage:
        return await self._call("volume.statfs", volume_id)

    async def volume_set_replicas(self, name: str, replicas: int) -> Volume:
        return await self._call("volume.set_replicas", name, replicas)

    async def volume_health(self, name: str) -> VolumeHealth:
        return await self._call("volume.health", name)

    async def snapshot_create(self, name: str, volume: str) -> Volume:
        return await self._call("snapshot.create", name, volume)

    async def snapshot_get(self, name: str) -> Volume:
        return await self._call("snapshot.get", name)

    async def snapshot_list(self) -> list[Volume]:
        return await self._call("snapshot.list")

    async def snapshot_delete(self, name: str) -> bool:
        return await self._call("snapshot.delete", name)

    # -- the namespace --------------------------------------------------------------------

    # ``session`` on reads and changes: a listening mount's (see session_listen), so that
    # what the answer tells it is watched for it, and a change of its own is not sent
    # back to it as an invalidation. Only for a meta role that answered session.listen.

    async def fs_lookup(
        self, parent: int, name: bytes, session: str | None = None, pieces: int = 0
    ) -> Attr:
        """With ``session`` and ``pieces``, a regular file comes as fs.open answers it:
        the map of its first pieces (``chunks``) and a hold for the session (``held``);
        not from an older meta role (a plain lookup)."""
        plain = (parent, name, session)
        if not pieces or session is None:
            return await self._call("fs.lookup", *plain)
        return await self._newer_form(
            "map_with_lookup",
            "answer a file's map with its lookup (an older release): opens ask for it",
            "fs.lookup",
            (*plain, pieces),
            plain,
        )

    async def fs_getattr(self, ino: int, session: str | None = None) -> Attr:
        return await self._call("fs.getattr", ino, session)

    async def fs_setattr(
        self, ino: int, changes: dict[str, int], session: str | None = None
    ) -> Attr:
        """``changes``: any of mode, uid, gid, size, atime_ns, mtime_ns."""
        return await self._call("fs.setattr", ino, changes, session)

    async def fs_mknod(
        self,
        parent: int,
        name: bytes,
        mode: int,
        uid: int,
        gid: int,
        rdev: int = 0,
        target: bytes | None = None,
        session: str | None = None,
        delegate: bool = False,
    ) -> Attr:
        """Make a node (``target``: a symlink's); with ``session``, held for that mount.
        The answer carries the directory as the create left it, under ``parent``; with
        ``delegate``, a new directory may come delegated to the mount (``grant``, as
        dir_delegate answers)."""
        if delegate:
            return await self._call(
                "fs.mknod", parent, name, mode, uid, gid, rdev, target, session, True
            )
        return await self._call("fs.mknod", parent, name, mode, uid, gid, rdev, target, session)

    async def fs_link(
        self, ino: int, new_parent: int, new_name: bytes, session: str | None = None
    ) -> Attr:
        return await self._call("fs.link", ino, new_parent, new_name, session)

    async def fs_unlink(self, parent: int, name: bytes, session: str | None = None) -> Attr:
        """With ``session``, a victim left without a name is held for that mount in the
        same transaction (see ``_removing``)."""
        return await self._removing("fs.unlink", [parent, name], session)

    async def fs_rmdir(self, parent: int, name: bytes, session: str | None = None) -> Attr:
        return await self._removing("fs.rmdir", [parent, name], session)

    async def fs_rename(
        self,
        old_parent: int,
        old_name: bytes,
        new_parent: int,
        new_name: bytes,
        flags: int = 0,
        session: str | None = None,
    ) -> Attr | None:
        """The replaced inode's attributes, or None when nothing was replaced."""
        return await self._removing(
            "fs.rename", [old_parent, old_name, new_parent, new_name, flags], session
        )

    async def _removing(self, method: str, params: list[Any], session: str | None) -> Any:
        """An older meta role takes no session on deletes (it deletes at once whatever
        loses its last name): InvalidArgument before it acted, so sending again without
        it is safe."""
        if session is None or not self.features.holds:
            return await self._call(method, *params)
        try:
            return await self._call(method, *params, session)
        except InvalidArgument:
            self._no_holds()
            return await self._call(method, *params)

    def _no_holds(self) -> None:
        if self.features.holds:
            log.warning(
                "the meta role does not keep deleted inodes for the mounts that "
                "still use them (an older release): deleting at once from now on"
            )
            self.features.holds = False

    async def fs_readdir(
        self, ino: int, after: int, limit: int, session: str | None = None
    ) -> list[list[Any]]:
        """A page of a listing as flat rows: [name, cookie, *attributes in ATTR_KEYS
        order]; from an older meta role, which sends a map per entry, made into rows."""
        if self.features.rows_listing:
            try:
                return await self._call("fs.readdir", ino, after, limit, True, session)
            except InvalidArgument:
                log.warning(
                    "the meta role does not send directory listings as rows (an "
                    "older release): asking for maps from now on"
                )
                self.features.rows_listing = False
        batch = await self._call("fs.readdir", ino, after, limit)
        return [[name, cookie, *(attr[key] for key in ATTR_KEYS)] for name, attr, cookie in batch]

    async def fs_readlink(self, ino: int) -> bytes:
        return await self._call("fs.readlink", ino)

    async def fs_forget(self, inos: list[int], session: str | None = None) -> int:
        """Delete those of ``inos`` that have no name and no hold left (with ``session``,
        dropping that mount's holds on them first); answers how many went."""
        return await self._call("fs.forget", inos, session)

    async def fs_open(self, ino: int, session: str, pieces: int = 0) -> Attr:
        """Fresh attributes and a hold for ``session``; with ``pieces``, the map of the
        file's first pieces under ``chunks`` (not from an older meta role: ask fs_chunks)."""
        if not pieces:
            return await self._call("fs.open", ino, session)
        return await self._newer_form(
            "map_with_open",
            "answer a file's map with its open (an older release): asking for it separately",
            "fs.open",
            (ino, session, pieces),
            (ino, session),
        )

    async def _newer_form(
        self, feature: str, lacks: str, method: str, newer: tuple[Any, ...], older: tuple[Any, ...]
    ) -> Any:
        """``method`` with the ``newer`` parameters while the meta role has ``feature``
        (a MetaFeatures flag); a meta role of an older release refuses them
        (INVALID_ARGUMENT): the flag turns off, with a warning that it does not do what
        ``lacks`` says, and ``older`` is sent, then and from now on."""
        if getattr(self.features, feature):
            try:
                return await self._call(method, *newer)
            except InvalidArgument:
                log.warning("the meta role does not %s from now on", lacks)
                setattr(self.features, feature, False)
        return await self._call(method, *older)

    async def fs_release(self, ino: int, session: str) -> bool:
        """Drop ``session``'s hold; True when that deleted an orphan."""
        return await self._call("fs.release", ino, session)

    async def fs_getxattr(self, ino: int, name: bytes) -> bytes:
        return await self._call("fs.getxattr", ino, name)

    async def fs_setxattr(
        self, ino: int, name: bytes, value: bytes, flags: int = 0, session: str | None = None
    ) -> None:
        await self._call("fs.setxattr", ino, name, value, flags, session)

    async def fs_listxattr(self, ino: int) -> list[bytes]:
        return await self._call("fs.listxattr", ino)

    async def fs_removexattr(self, ino: int, name: bytes, session: str | None = None) -> None:
        await self._call("fs.removexattr", ino, name, session)

    # -- file data --------------------------------------------------------------------------

    async def fs_chunks(self, ino: int, first: int, last: int, slices: bool = False) -> list[Any]:
        """The map of pieces ``first``..``last`` (with ``slices``, their slices too)."""
        if slices:
            return await self._call("fs.chunks", ino, first, last, True)
        return await self._call("fs.chunks", ino, first, last)

    async def fs_commit(
        self,
        ino: int,
        size: int,
        pieces: list[Any],
        mtime_ns: int | None = None,
        session: str | None = None,
    ) -> Attr:
        """Record a file's new pieces and size in one transaction (committed when this
        returns; on disk within the meta role's group-commit period: see fs_sync)."""
        return await self._call("fs.commit", ino, size, pieces, mtime_ns, session)

    async def fs_sync(self) -> None:
        """Everything the meta role answered so far is on disk (fsync, fsyncdir, unmount).
        A meta role from before group commit has no fs.sync: it put every change on disk
        before answering it, so there is nothing to wait for."""
        if not self.features.sync:
            return
        try:
            await self._call("fs.sync")
        except MethodNotFound:
            log.warning(
                "the meta role has no fs.sync (an older release, which commits every "
                "change to disk before answering it): not asking again"
            )
            self.features.sync = False

    # -- mount sessions -----------------------------------------------------------------------

    async def session_open(self, description: str) -> str:
        return await self._call("session.open", description)

    async def session_heartbeat(self, session: str) -> bool:
        """False when the meta role does not know ``session`` (register again)."""
        return await self._call("session.heartbeat", session)

    async def session_close(self, session: str) -> bool:
        return await self._call("session.close", session)

    async def session_pending(self, session: str, add: list[str], drop: list[str]) -> bool:
        """Chunks stored but not committed (``add``), or no longer so (``drop``)."""
        return await self._call("session.pending", session, add, drop)

    async def session_hold(self, session: str, add: list[int], drop: list[int]) -> bool:
        """Hold and stop holding inodes for ``session``; False (and ``features.holds``
        off) against a meta role without holds."""
        try:
            await self._call("session.hold", session, add, drop)
        except MethodNotFound:
            self._no_holds()
            return False
        return True

    async def dir_delegate(self, session: str, directory: int) -> DirGrant | None:
        """Ask for ``directory`` to be delegated to this mount (None: not now)."""
        return await self._call("dir.delegate", session, directory)

    async def dir_extend(self, session: str, directory: int, grant: str) -> Numbers | None:
        """More inode numbers for a grant this mount holds (None: not held any more)."""
        return await self._call("dir.extend", session, directory, grant)

    async def fs_apply(
        self,
        session: str,
        directory: int,
        grant: str,
        ops: list[list[Any]],
        release: bool,
        reclaim: bool = False,
        commit: list[Any] | None = None,
    ) -> Applied:
        """Apply a delegated directory's batch (one transaction); ``release``: and give
        the directory back; ``reclaim``: a batch of a grant from before the meta role
        restarted, sent under this mount's new session; ``commit``: ``[ino, size,
        pieces, mtime_ns]``, a written file's close applied after the batch in the same
        transaction (its outcome in the answer's ``commit``). ENOLCK when the grant is
        no longer held, ESTALE for an unknown session."""
        if commit is not None:
            return await self._call(
                "fs.apply", session, directory, grant, ops, release, reclaim, commit
            )
        if reclaim:
            return await self._call("fs.apply", session, directory, grant, ops, release, True)
        return await self._call("fs.apply", session, directory, grant, ops, release)

    async def session_listen(
        self, session: str, lease: float, wait: float, ack: int = 0
    ) -> Invalidations:
        """The invalidations this mount is owed, as soon as there are any or after
        ``wait`` seconds (a long poll); ``ack``: the ``upto`` of the last answer, once dealt
        with. While it polls, what its session is told is watched for ``lease`` seconds.
        MethodNotFound from an older meta role."""
        return await self._call("session.listen", session, lease, wait, ack, timeout=wait + 30)

    async def session_orphans(self, session: str) -> list[int]:
        """Inodes held only for ``session`` that lost their last name elsewhere ([] from a
        meta role that does not say)."""
        try:
            return await self._call("session.orphans", session)
        except MethodNotFound:
            return []

    # -- the cluster map --------------------------------------------------------------------

    async def cluster_heartbeat(
        self, server_id: str, address: str, zone: str, usage: dict[str, int]
    ) -> bool:
        return await self._call("cluster.heartbeat", server_id, address, zone, usage)

    async def cluster_info(self, *, timeout: float | None = None) -> ClusterInfo:
        return await self._call("cluster.info", timeout=timeout)

    async def cluster_status(
        self, *, timeout: float | None = None, retries: int = 1
    ) -> ClusterStatus:
        return await self._call("cluster.status", timeout=timeout, retries=retries)

    async def cluster_servers(self) -> list[Server]:
        return await self._call("cluster.servers")

    async def cluster_report_bad(self, chunk_id: str, server_id: str, reason: str) -> bool:
        return await self._call("cluster.report_bad", chunk_id, server_id, reason)

    async def cluster_bad_copies(self) -> list[dict[str, Any]]:
        return await self._call("cluster.bad_copies")

    async def cluster_clear_bad(self, chunk_id: str, server_id: str) -> bool:
        return await self._call("cluster.clear_bad", chunk_id, server_id)

    async def cluster_drain(self, server_id: str, draining: bool = True) -> dict[str, Any]:
        return await self._call("cluster.drain", server_id, draining)

    async def cluster_remove(self, server_id: str) -> bool:
        return await self._call("cluster.remove", server_id)

    # -- care: garbage, repair, fsck, backups -------------------------------------------------

    async def gc_unreferenced(self, ids: list[str]) -> list[str]:
        """Those of ``ids`` nothing references (nor holds pending): safe to delete."""
        return await self._call("gc.unreferenced", ids)

    async def repair_referenced(self, after: str | None, limit: int) -> list[list[Any]]:
        """[[chunk_id, R], ...] in id order after ``after``."""
        return await self._call("repair.referenced", after, limit)

    async def repair_status(self) -> RepairStatus:
        return await self._call("repair.status")

    async def repair_run(self) -> RepairStatus:
        return await self._call("repair.run")

    async def fsck_check(self, volume: str) -> FsckReport:
        return await self._call("fsck.check", volume)

    async def fsck_repair(self, volume: str) -> FsckRepair:
        return await self._call("fsck.repair", volume)

    async def fsck_chunks(self, volume: str, after: str | None, limit: int) -> list[str]:
        return await self._call("fsck.chunks", volume, after, limit)

    async def meta_backup_open(self) -> BackupInfo:
        return await self._call("meta.backup_open")

    async def meta_backup_read(self, backup_id: str, offset: int, length: int) -> bytes:
        return await self._call("meta.backup_read", backup_id, offset, length)

    async def meta_backup_close(self, backup_id: str) -> bool:
        return await self._call("meta.backup_close", backup_id)
