"""The meta role's RPC methods. Each call is one SQLite transaction in one dedicated thread.

One thread, because SQLite has one writer anyway and a single thread makes every
operation strictly serial: no two transactions ever interleave, so the namespace code needs
no locking of its own. Commits reach the disk together (groupcommit.py): a call is answered
once its transaction committed, and those in DURABLE once it is on disk.
"""

from __future__ import annotations

import errno
import functools
import logging
import sqlite3
import stat
from collections.abc import Awaitable, Callable
from contextvars import ContextVar
from pathlib import Path
from typing import Any

import trio

from ..chunk.ids import are_chunk_ids, is_chunk_id
from ..rpc.errors import Busy, FsError, Internal, InvalidArgument, RpcError
from ..rpc.methods import MethodTable
from . import files, fsck, namespace, ranges, servers, status, volumes, xattrs
from . import sessions as session_record
from .backup import Backups
from .db import cluster_id, make_durable, transaction
from .delegations import OWN_WAIT, POOL, RANGE, RECALL_WAIT, Delegations, Grant, Naming
from .groupcommit import GroupCommit
from .repairstate import RepairState
from .sessions import Sessions
from .watches import ACK_WAIT, Event, Watches, entry, inode

log = logging.getLogger("storaged.meta")

# The inodes the request running in this task named (``_settle``): no directory among them
# is delegated to another mount until it is answered (see delegations.py, invariant 1).
_named_here: ContextVar[list[tuple[int, Naming]] | None] = ContextVar("named_here", default=None)

READDIR_MAX = 1000
OPEN_PIECES_MAX = 64  # pieces of a file's map fs.open answers at most
SHORT_FORGET = 16  # inodes forgotten on the event loop at once (see _short_tx)
HOLD_BATCH_MAX = 100_000  # inodes one session.hold may name in add or in drop
SHORT_COMMIT = 16  # pieces committed on the event loop at once (see _short_tx)

# Calls answered only once what they changed is on disk (groupcommit.py): fs.sync, which a
# mount sends for fsync, fsyncdir and unmount; what an administrator or Kubernetes is told
# is done (volumes, snapshots, the cluster map's drains and removals, fsck's repairs); and
# the mount sessions' records, which keep deletions waiting after a restart; and the
# garbage collector's list of unreferenced chunks, which it deletes: a chunk no longer
# referenced only by a change not yet on disk (an unlink, an overwrite) must not go, or a
# power loss would bring back a file whose bytes are gone. Every other change is
# committed when answered and on disk within groupcommit.PERIOD.
DURABLE = frozenset(
    {
        "fs_sync",
        "gc_unreferenced",
        "volume_create",
        "volume_delete",
        "volume_resize",
        "volume_set_replicas",
        "snapshot_create",
        "snapshot_delete",
        "cluster_drain",
        "cluster_remove",
        "cluster_clear_bad",
        "fsck_repair",
        "session_open",
        "session_close",
        "dir_delegate",
    }
)
APPLY_MAX = 1000  # operations in one fs.apply batch
RECLAIM_LAST = (1 << 63) - 1  # a reclaimed batch's numbers: checked against the record


class MetaService:
    def __init__(
        self,
        conn: sqlite3.Connection,
        *,
        heartbeat_timeout: float = 10.0,
        session_timeout: float = 60.0,
        backup_dir: Path | None = None,
    ) -> None:
        self.conn = conn
        self.backups = Backups(backup_dir) if backup_dir is not None else None
        self.heartbeat_timeout = heartbeat_timeout
        self.sessions = Sessions(session_timeout)
        self.watches = Watches()  # what mounts' kernels cache: see watches.py
        self.delegations = Delegations()  # directories one mount answers: delegations.py
        restored = self.sessions.restore(session_record.recorded(conn))
        if restored:
            log.warning(
                "%d mount sessions were open when the meta role last stopped: nothing "
                "is deleted (unlinked files, garbage) until they register again or "
                "expire (%.0fs)",
                restored,
                session_timeout,
            )
        self.repair = RepairState()  # its task runs in the daemon (it needs an RPC client)
        self.scrub_reports: dict[str, dict] = {}  # server id: its scrubber, per heartbeat
        self._db = trio.CapacityLimiter(1)
        self.commits = GroupCommit(self._make_durable)  # its run() is started by the daemon

    async def _make_durable(self) -> None:
        await trio.to_thread.run_sync(make_durable, self.conn, limiter=self._db)

    def _in_transaction(self, fn: Callable[..., Any], *args: Any) -> Any:
        """One transaction; a commit that changed anything is counted for the group
        commit (a read through _tx changes nothing and needs no sync)."""
        before = self.conn.total_changes
        with transaction(self.conn):
            result = fn(self.conn, *args)
        if self.conn.total_changes != before:
            self.commits.committed()
        return result

    async def _tx(self, fn: Callable[..., Any], *args: Any) -> Any:
        return await trio.to_thread.run_sync(self._in_transaction, fn, *args, limiter=self._db)

    async def _short_tx(self, fn: Callable[..., Any], *args: Any) -> Any:
        """For transactions bounded by construction (one row or a few, at most one commit):
        run on the event loop when the connection is free. The query itself takes tens of
        microseconds; the hop to the worker thread and back costs more than that, and a
        lookup or a create is a chain of such waits for the application. The limiter still
        guarantees the connection has one user at a time; when it is busy, wait in line as
        every other transaction does."""
        try:
            self._db.acquire_nowait()
        except trio.WouldBlock:
            return await self._tx(fn, *args)
        try:
            return self._in_transaction(fn, *args)
        finally:
            self._db.release()

    async def _read(self, fn: Callable[..., Any], *args: Any) -> Any:
        """For read-only queries bounded by construction (a lookup, a getattr, a few rows):
        as ``_short_tx``, without the BEGIN IMMEDIATE / COMMIT around them.

        Nothing can change the database between this function's statements: the limiter
        gives the connection one user at a time, and only this process writes the file. A
        transaction would add nothing but its cost — about a tenth of the meta role's CPU
        per lookup. A function here that wrote would have each statement committed on its
        own, with no rollback on an error: only read-only functions may come here, and
        ``_unwritten`` makes a mistake loud (the call fails with Internal) instead of
        silent; tests/unit/test_meta.py runs every function used here through it.
        """
        try:
            self._db.acquire_nowait()
        except trio.WouldBlock:
            async with self._db:
                return _unwritten(self.conn, fn, *args)
        try:
            return _unwritten(self.conn, fn, *args)
        finally:
            self._db.release()

    def register(self, table: MethodTable) -> None:
        for name in (
            "volume_create",
            "volume_get",
            "volume_list",
            "volume_delete",
            "volume_resize",
            "volume_statfs",
            "volume_set_replicas",
            "volume_health",
            "snapshot_create",
            "snapshot_get",
            "snapshot_list",
            "snapshot_delete",
            "cluster_info",
            "fs_lookup",
            "fs_getattr",
            "fs_setattr",
            "fs_mknod",
            "fs_link",
            "fs_unlink",
            "fs_rmdir",
            "fs_rename",
            "fs_readdir",
            "fs_readlink",
            "fs_forget",
            "fs_getxattr",
            "fs_setxattr",
            "fs_listxattr",
            "fs_removexattr",
            "fs_chunks",
            "fs_commit",
            "cluster_heartbeat",
            "cluster_servers",
            "cluster_report_bad",
            "cluster_bad_copies",
            "session_open",
            "session_heartbeat",
            "session_close",
            "session_pending",
            "session_hold",
            "session_orphans",
            "session_listen",
            "fs_open",
            "fs_release",
            "gc_unreferenced",
            "repair_referenced",
            "repair_status",
            "repair_run",
            "cluster_clear_bad",
            "fsck_check",
            "fsck_chunks",
            "fsck_repair",
            "meta_backup_open",
            "meta_backup_read",
            "meta_backup_close",
            "cluster_drain",
            "cluster_remove",
            "cluster_status",
            "fs_sync",
            "dir_delegate",
            "dir_extend",
            "fs_apply",
        ):
            handler = self._naming(getattr(self, name))
            table.add(
                name.replace("_", ".", 1), self._durably(handler) if name in DURABLE else handler
            )

    def _naming(self, handler: Callable[..., Awaitable[Any]]) -> Callable[..., Awaitable[Any]]:
        """``handler``, with what it names (``_settle``) kept from being delegated until
        it is answered: a grant made while a create by another mount waits for the
        database would let the holder answer from names that are no longer all the
        names (see Delegations.refusal)."""

        @functools.wraps(handler)
        async def naming(*args: Any, **kwargs: Any) -> Any:
            named: list[tuple[int, Naming]] = []
            token = _named_here.set(named)
            try:
                return await handler(*args, **kwargs)
            finally:
                _named_here.reset(token)
                for ino, naming in named:
                    self.delegations.unmark(ino, naming)

        return naming

    def _durably(self, handler: Callable[..., Awaitable[Any]]) -> Callable[..., Awaitable[Any]]:
        """``handler``, answered once everything it committed is on disk."""

        @functools.wraps(handler)
        async def durably(*args: Any, **kwargs: Any) -> Any:
            result = await handler(*args, **kwargs)
            await self.commits.durable()
            return result

        return durably

    async def fs_sync(self) -> bool:
        """Everything committed so far is on disk when this is answered (DURABLE): a mount
        sends it for fsync, fsyncdir and unmount."""
        return True

    # -- delegated directories (delegations.py) --------------------------------------------

    async def dir_delegate(self, session: str, directory: int) -> dict | None:
        """Delegate ``directory`` to ``session``'s mount: the answer names the grant, the
        inode numbers reserved for it (``first``..``last``, on disk before this answer:
        DURABLE), the directory's attributes (``dir``) and the count of events queued for
        the session so far (``upto``: the grant is used once the mount has dealt with
        them); nil when it may not be delegated now (see Delegations.refusal; the
        session does not listen; or a request of its own naming the directory is still
        unanswered after OWN_WAIT). The directory is watched for the holder, as a lookup
        in it is."""
        self._live_or_stale(session)
        if type(directory) is not int or directory <= 0:
            raise InvalidArgument("directory must be an inode number")
        if not self._may_grant(session, directory):
            return None
        # Changes logged from here on are owed to the holder by the grant's own watch below;
        # those its requests in progress now would be owed when they end: wait for them.
        since = self.watches.mark()
        pending = self.delegations.pending(session, directory)
        with trio.move_on_after(OWN_WAIT):
            for answered in pending:
                await answered.wait()
        if not all(answered.is_set() for answered in pending):
            return None  # (one still waits for the database: ask again later)

        def reserve(conn: sqlite3.Connection) -> tuple[dict, int, int]:
            attr = namespace.dir_attr(conn, directory)
            return (attr, *namespace.reserve_inodes(conn, RANGE))

        attr, first, last = await self._tx(reserve)
        # (asked again: a lookup by another mount may have come in while reserving)
        if not self._may_grant(session, directory):
            return None  # the numbers reserved stay unused: a gap
        grant = self.delegations.grant(session, directory, first, last)
        self.watches.watch(session, [directory], since)
        return self._granted(grant, attr)

    async def dir_extend(self, session: str, directory: int, grant: str) -> dict | None:
        """More inode numbers for ``grant`` of ``directory``, which ``session`` holds and
        has used half of (delegations.py, invariant 3): ``{first, last}``, reserved on
        disk before the answer, twice the grant's last range (at most EXTEND_MAX); a
        batch may create with them from now on. None when the grant is not held (any
        more): the holder gives the directory back once its numbers run out."""
        self._live_or_stale(session)
        if type(directory) is not int or not isinstance(grant, str):
            raise InvalidArgument("directory must be an inode number and grant a string")
        held = self.delegations.find(session, directory, grant)
        if held is None:
            return None
        count = held.next_extension()
        if self.delegations.pool_short(session, count):
            pool = await self._tx(namespace.reserve_inodes, POOL)
            await self.commits.durable()  # the numbers are reserved before any is used
            self.delegations.fill_pool(session, *pool)
        numbers = self.delegations.from_pool(session, count)
        if numbers is None or self.delegations.find(session, directory, grant) is not held:
            return None  # given back meanwhile (its numbers are a gap)
        held.ranges.append(numbers)
        return {"first": numbers[0], "last": numbers[1]}

    def _granted(self, grant: Grant, attr: dict) -> dict:
        """The answer naming ``grant`` (dir.delegate's, and a mkdir's ``grant``). Its
        ``upto``: the events queued for the holder so far. One about this directory (a
        change by a mount that does not listen, or by the CLI) may still be on its way to
        it; the holder answers nothing from the grant before it has dealt with them."""
        return {
            "grant": grant.id,
            "first": grant.first,
            "last": grant.last,
            "dir": attr,
            "upto": self.watches.queued(grant.session),
            "ops": BATCH_OPS,  # what a batch may hold: a mount sends no other kind
        }

    def _may_grant(self, session: str, directory: int) -> bool:
        """``session`` listens and ``directory`` may be delegated to it now."""
        return self.watches.listening(session) and not self.delegations.refusal(
            session, directory, self.watches.watching(directory)
        )

    async def fs_apply(
        self,
        session: str,
        directory: int,
        grant: str,
        ops: list,
        release: bool = False,
        reclaim: bool = False,
        commit: list | None = None,
    ) -> dict:
        """The operations the holder of ``directory``'s delegation answered itself, in the
        order it answered them, applied in one transaction (all or none), each checked as
        its own call is. With ``release``, the delegation ends with it (applied or not).
        Operations: ``["c", name, ino, mode, uid, gid, rdev, target, time_ns, hold]`` (a
        create, mknod or symlink, ``ino`` from the grant's range; ``hold``: held for the
        session, as fs.mknod with a session), ``["u", name, time_ns]`` (an unlink; a
        victim left with no name is held for the session, as fs.unlink), ``["m", old,
        new, flags, time_ns]`` (a rename within the directory), ``["a", name, ino,
        changes, time_ns]`` (chmod, chown or utimens of inode ``ino`` of the grant's
        range, named ``name`` when answered: as fs.setattr without a size, its ctime
        ``time_ns``; nothing when the inode was deleted since),
        ``["f", ino]`` (the holder's kernel forgot an orphan: as fs.forget). Answers the
        directory's attributes (``parent``) and the inodes deleted (``deleted``).

        ENOLCK when the grant is not held (given back, or revoked after a recall the
        holder did not answer in time): nothing is applied. ``reclaim``: the batch of a
        grant from before this meta role's start (its mount registered again under
        ``session``), applied if every operation still checks out and nobody else holds
        the directory now: its inode numbers were reserved on disk, so never given to
        anyone else (delegations.py, invariant 3).

        ``commit``: ``[ino, size, pieces, mtime_ns]``, a written file's close (as
        fs.commit by ``session``) applied after the operations in the same transaction,
        so that a close in a held directory costs one round trip, not two. Its outcome is
        its own: it is rolled back alone when it fails (a savepoint), and the answer's
        ``commit`` is ``{"attr": ...}`` or ``{"error": {code, message}}``; the operations
        are applied either way."""
        self._live_or_stale(session)
        if not isinstance(ops, list) or len(ops) > APPLY_MAX:
            raise InvalidArgument(f"ops must be a list of at most {APPLY_MAX} operations")
        if commit is not None:
            _check_commit(commit)
        held = self.delegations.find(session, directory, grant)
        if held is None and not (reclaim and self.delegations.from_before(grant)):
            raise FsError(
                errno.ENOLCK,
                f"directory {directory} is not delegated to this mount (any more): "
                f"{len(ops)} operations not applied",
            )
        if held is None and self.delegations.others(session, [directory]):
            raise FsError(
                errno.ENOLCK,
                f"directory {directory} is delegated to another mount since the meta "
                f"role's start: {len(ops)} operations from before it not applied",
            )
        try:
            owns = held.owns if held is not None else _reclaimable
            checked = [_checked_op(op, owns) for op in ops]
            events: list[Event] = [inode(directory)] if checked else []  # (none: no news)
            deleted: list[int] = []

            def apply(conn: sqlite3.Connection) -> dict:
                if held is None:
                    namespace.check_reserved(conn, [op[2] for op in checked if op[0] == "c"])
                for op in checked:
                    self._apply_op(conn, directory, session, op, events, deleted)
                answer = {"parent": namespace.getattr_(conn, directory), "deleted": deleted}
                if commit is not None:
                    answer["commit"] = _commit_alone(conn, *commit)
                return answer

            since = self.watches.mark()
            work = len(checked) + (len(commit[2]) if commit is not None else 0)
            if work <= SHORT_COMMIT:  # a close's batch: a create or a few, and its commit
                answer = await self._short_tx(apply)
            else:
                answer = await self._tx(apply)
        finally:
            if release and held is not None:
                self.delegations.end(held)
        if held is None:
            log.info(
                "mount session %s: %d operations in directory %d from before the meta "
                "role's start applied",
                session[:12],
                len(checked),
                directory,
            )
        made = [op[2] for op in checked if op[0] == "c" and op[2] not in deleted]
        if commit is None or "attr" not in answer["commit"]:
            self._changed(session, since, events, [directory, *made])
            return answer
        events.append(inode(commit[0], True))
        await self._delivered(self._changed(session, since, events, [directory, *made, commit[0]]))
        return answer

    def _apply_op(
        self,
        conn: sqlite3.Connection,
        directory: int,
        session: str,
        op: list,
        events: list[Event],
        deleted: list[int],
    ) -> None:
        kind = op[0]
        if kind == "c":
            _, name, ino, mode, uid, gid, rdev, target, t, hold = op
            namespace.make_node(conn, directory, name, mode, uid, gid, rdev, target, ino=ino, t=t)
            events.append(entry(directory, name))
            if hold:  # (in order: a later unlink and forget in the batch may drop it)
                self.sessions.hold(session, ino)
        elif kind == "u":
            gone = namespace.unlink(conn, directory, op[1], t=op[2])
            attr = self._delete_if_orphan(conn, gone, session)
            events.append(entry(directory, op[1]))
            if attr.get("deleted"):
                deleted.append(attr["ino"])
            else:
                events.append(inode(attr["ino"]))
        elif kind == "m":
            _, old, new, flags, t = op
            replaced = namespace.rename(conn, directory, old, directory, new, flags, t=t)
            events += [entry(directory, old), entry(directory, new)]
            if replaced is not None:
                replaced = self._delete_if_orphan(conn, replaced, session)
                if replaced.get("deleted"):
                    deleted.append(replaced["ino"])
        elif kind == "a":
            # By inode: a name it lost, or one it gained, since the holder answered (a
            # rename or link of it that raced the change) must not refuse the batch
            # whole; every mount watching the inode hears of it. An inode deleted since
            # shows the change to nobody: skipped.
            _, _name, ino, changes, t = op
            if namespace.exists(conn, ino):
                files.setattr_(conn, ino, changes, t)
                events.append(inode(ino))
        else:  # "f"
            ino = op[1]
            self.sessions.release(session, ino)
            if self.sessions.deletions_allowed() and not self.sessions.is_held(ino):
                self.sessions.kept_orphans.discard(ino)
                if namespace.forget(conn, ino):
                    deleted.append(ino)

    async def _settle(self, session: str | None, *inos: int) -> None:
        """Before a request of ``session`` that reads or changes the names or attributes
        of ``inos``: every one of them delegated to another mount is recalled first."""
        for grant in self.delegations.others(session, inos):
            await self._recall(grant)
        named = _named_here.get()
        if named is not None:  # (no await since the recall: nothing granted in between)
            for ino in inos:
                named.append((ino, self.delegations.mark(ino, session)))

    async def _settle_all(self) -> None:
        """Before what must see every change acknowledged anywhere (a snapshot, fsck).
        All at once: a mount holds a directory per mkdir of its last seconds, and one
        that stopped answering must cost one RECALL_WAIT, not one per directory."""
        async with trio.open_nursery() as nursery:
            for grant in self.delegations.every():
                nursery.start_soon(self._recall, grant)

    async def _recall(self, grant: Grant) -> None:
        """Ask the holder for its last batch and the directory back; wait for it, at most
        RECALL_WAIT, and revoke the grant past that (delegations.py, invariant 2)."""
        if not grant.recalled:
            grant.recalled = True
            if not self.watches.tell(grant.session, [["r", grant.directory, grant.id]]):
                self.delegations.end(grant)  # not listening: it answers nothing itself
                return
        with trio.move_on_after(RECALL_WAIT):
            await grant.released.wait()
        if not grant.released.is_set():
            log.error(
                "mount session %s did not give back directory %d within %gs: revoked; "
                "what that mount answered itself in it and did not send is lost",
                grant.session[:12],
                grant.directory,
                RECALL_WAIT,
            )
            self.delegations.end(grant)

    async def _named(self, parent: int, name: bytes) -> list[int]:
        """The inode ``name`` in ``parent`` names (a directory a request may remove or
        replace), when any directory is delegated at all; else nothing is looked up."""
        if not len(self.delegations) or type(parent) is not int or not isinstance(name, bytes):
            return []
        ino = await self._read(namespace.entry_inode, parent, name)
        return [] if ino is None else [ino]

    def _end_grants(self, session: str) -> None:
        for grant in self.delegations.of_session(session):
            self.delegations.end(grant)
        self.delegations.drop_pool(session)

    async def run_liveness(self, interval: float = 1.0) -> None:
        """Mark servers down when their heartbeats stop; they come back up on the next one.
        End silent mount sessions, and delete orphans that nobody holds any more."""
        while True:
            gone = await self._tx(servers.mark_silent_down, int(self.heartbeat_timeout * 1e9))
            for server_id in gone:
                log.warning(
                    "chunk server %s is down: no heartbeat for %.0fs",
                    server_id,
                    self.heartbeat_timeout,
                )
            await self._expire_sessions()
            for session in self.watches.reset_silent():
                log.info("mount session %s stopped listening for invalidations", session[:12])
                self._end_grants(session)
            if self.sessions.deletions_allowed():
                candidates = await self._tx(namespace.orphans)
                await self._forget_unheld(candidates)
            await trio.sleep(interval)

    async def _expire_sessions(self) -> None:
        silent = self.sessions.silent()
        if not silent:
            return
        waiting = not self.sessions.deletions_allowed()
        await self._tx(session_record.unrecord, silent)
        for session in silent:
            self.watches.forget(session)
            self._end_grants(session)
            released = self.sessions.close(session)
            log.warning(
                "mount session %s expired (no heartbeat for %.0fs); releasing %d open inodes",
                session[:12],
                self.sessions.timeout,
                len(released),
            )
        self._say_if_deleting_again(waiting)

    def _say_if_deleting_again(self, waiting: bool) -> None:
        """``waiting``: deletions waited before the sessions just closed."""
        if waiting and self.sessions.deletions_allowed():
            log.info("every mount session from before the start is back or gone: deleting again")

    async def _forget_unheld(self, inos: list[int]) -> int:
        if not self.sessions.deletions_allowed():  # the sweep takes them later
            return 0
        free = [i for i in inos if type(i) is int and not self.sessions.is_held(i)]
        if not free:
            return 0

        self.sessions.kept_orphans.difference_update(free)  # deleted, or not orphans

        def forget_all(conn: sqlite3.Connection) -> int:
            return sum(namespace.forget(conn, i) for i in free)

        if len(free) <= SHORT_FORGET:  # every close of a file comes here with one inode
            return await self._short_tx(forget_all)
        return await self._tx(forget_all)

    # -- volumes ------------------------------------------------------------------------

    async def volume_create(
        self,
        name: str,
        capacity: int,
        replicas: int,
        chunk_size: int,
        params: dict | None = None,
        source: str = "",
    ) -> dict:
        """With ``source`` ('snapshot:NAME' or 'volume:NAME'), the new volume starts as a
        copy of that tree, sharing its chunks."""
        if source:
            await self._settle_all()
        volume = await self._tx(
            volumes.create, name, capacity, replicas, chunk_size, params, source
        )
        log.info(
            "volume %s created: capacity %d, R=%d, chunk size %d%s",
            name,
            capacity,
            replicas,
            chunk_size,
            f", from {source}" if source else "",
        )
        return volume

    async def volume_get(self, name: str) -> dict:
        return await self._tx(volumes.get, name)

    async def volume_list(self) -> list:
        return await self._tx(volumes.list_all)

    async def volume_delete(self, name: str) -> bool:
        await self._settle_all()
        deleted = await self._tx(volumes.delete, name)
        if deleted:
            log.info("volume %s deleted", name)
        return deleted

    async def volume_resize(self, name: str, capacity: int) -> dict:
        volume = await self._tx(volumes.resize, name, capacity)
        log.info("volume %s resized to %d bytes", name, capacity)
        return volume

    async def volume_statfs(self, volume_id: int) -> dict:
        return await self._tx(volumes.statfs, volume_id)

    async def volume_set_replicas(self, name: str, replicas: int) -> dict:
        volume = await self._tx(volumes.set_replicas, name, replicas)
        log.info("volume %s: replica count set to %d", name, replicas)
        return volume

    async def volume_health(self, name: str) -> dict:
        return await self._tx(volumes.health, name)

    # -- snapshots ----------------------------------------------------------------------

    async def snapshot_create(self, name: str, volume: str) -> dict:
        """A point-in-time copy of the volume's committed metadata; chunks are shared.
        Delegated directories are recalled first: the copy has every change acknowledged."""
        await self._settle_all()
        snapshot = await self._tx(volumes.snapshot, name, volume)
        log.info("snapshot %s of volume %s created", name, volume)
        return snapshot

    async def snapshot_get(self, name: str) -> dict:
        return await self._tx(volumes.get, name, volumes.SNAPSHOT)

    async def snapshot_list(self) -> list:
        return await self._tx(volumes.list_all, volumes.SNAPSHOT)

    async def snapshot_delete(self, name: str) -> bool:
        deleted = await self._tx(volumes.delete, name, volumes.SNAPSHOT)
        if deleted:
            log.info("snapshot %s deleted", name)
        return deleted

    # -- namespace ----------------------------------------------------------------------

    async def fs_lookup(
        self, parent: int, name: bytes, session: str | None = None, pieces: int = 0
    ) -> dict:
        """With ``session`` (a listening mount), the directory and the inode found are
        watched for it (see watches.py), a name not found as well as one found.

        With ``pieces`` too, a regular file found comes as fs.open would answer it: the
        map of its first pieces (``chunks``, at most OPEN_PIECES_MAX) and a hold on it for
        the session (``held``: true), so that the mount can answer the open that usually
        follows a lookup itself (one round trip for a small file's lookup and open, not
        two). The mount's kernel references the inode from this answer on: the hold is
        the one the mount would send for it with its next session.hold."""
        if type(pieces) is not int:
            raise InvalidArgument("pieces must be an integer")
        await self._settle(session, parent)
        since = self.watches.mark()
        want = max(0, min(pieces, OPEN_PIECES_MAX)) if session is not None else 0
        try:
            attr = await self._read(files.looked_up, parent, name, want)
        except FsError:
            self.watches.watch(session, [parent], since)
            raise
        if want and stat.S_ISREG(attr["mode"]) and session is not None:
            if self.sessions.hold(session, attr["ino"]):
                attr["held"] = True
            else:
                attr.pop("chunks", None)  # (an unknown session: a plain lookup)
        self.watches.watch(session, [parent, attr["ino"]], since)
        return attr

    async def fs_getattr(self, ino: int, session: str | None = None) -> dict:
        await self._settle(session, ino)
        since = self.watches.mark()
        attr = await self._read(namespace.getattr_, ino)
        self.watches.watch(session, [ino], since)
        return attr

    async def fs_setattr(self, ino: int, changes: dict, session: str | None = None) -> dict:
        """With ``session``: the change's author, whose own kernel is told by the answer
        (every other mount watching the inode hears of it)."""
        ranges.check_changes(changes)
        await self._settle(session, ino)
        since = self.watches.mark()
        attr = await self._tx(files.setattr_, ino, changes)
        told = self._changed(session, since, [inode(ino, "size" in changes)], [ino])
        if "size" in changes:
            await self._delivered(told)
        return attr

    def _changed(
        self, author: str | None, since: int, events: list[Event], answered: list[int]
    ) -> dict[str, int]:
        """A change was committed: tell the mounts watching what it touched, and watch
        for its author what the answer told it (``answered``)."""
        told = self.watches.changed(author, events)
        self.watches.watch(author, answered, since)
        return told

    async def _delivered(self, told: dict[str, int]) -> None:
        """A file's contents changed: answer once every mount told of it has stopped
        trusting what it knew (close-to-open; see watches.py)."""
        if told:
            for session in await self.watches.delivered(told):
                log.warning(
                    "mount session %s did not acknowledge an invalidation within "
                    "%gs (it stops trusting its cache on its own)",
                    session[:12],
                    ACK_WAIT,
                )

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
    ) -> dict:
        """Create a node; with ``session``, the new file is also held open by that mount.
        The answer also carries, under ``parent``, the directory's attributes as the create
        left them (a mount answers the kernel's next GETATTR of the directory with them).
        An unknown session is refused before anything is made: the file would be open on a
        mount the meta role does not know, and another mount's unlink would delete it.

        ``delegate`` (a directory made by a listening session): the new directory is
        delegated to that mount at once, under ``grant`` in the answer (as dir.delegate
        answers; nobody else can know it yet), with numbers from the session's pool
        (delegations.py, invariant 3); none when the pool cannot be had."""
        ranges.check_new_node(mode, uid, gid, rdev)
        if type(delegate) is not bool:
            raise InvalidArgument("delegate must be true or false")
        if session is not None and not self.sessions.is_live(session):
            raise FsError(errno.ESTALE, "unknown mount session: open a new one")
        await self._settle(session, parent)
        delegate = (
            delegate
            and stat.S_ISDIR(mode)
            and session is not None
            and self.watches.listening(session)
        )
        refill = delegate and session is not None and self.delegations.pool_short(session)

        def make(conn: sqlite3.Connection) -> tuple[dict, tuple[int, int] | None]:
            attr = namespace.make_node(conn, parent, name, mode, uid, gid, rdev, target)
            pool = namespace.reserve_inodes(conn, POOL) if refill else None
            return {**attr, "parent": namespace.getattr_(conn, parent)}, pool

        since = self.watches.mark()
        attr, pool = await self._short_tx(make)
        if session is not None:
            self.sessions.hold(session, attr["ino"])
        self._changed(session, since, [entry(parent, name), inode(parent)], [parent, attr["ino"]])
        if delegate and session is not None:
            if pool is not None:
                await self.commits.durable()  # the numbers are reserved before any is used
                self.delegations.fill_pool(session, *pool)
            grant = self._grant_made(session, attr)
            if grant is not None:
                attr["grant"] = grant
        return attr

    def _grant_made(self, session: str, attr: dict) -> dict | None:
        """Delegate the directory ``session``'s mkdir just made (``attr``) to it, with
        numbers from its pool: as dir.delegate answers, or None."""
        if not self._may_grant(session, attr["ino"]):
            return None  # (looked up elsewhere while the pool was reserved on disk)
        numbers = self.delegations.from_pool(session)
        if numbers is None:
            return None
        grant = self.delegations.grant(session, attr["ino"], *numbers)
        return self._granted(grant, {k: v for k, v in attr.items() if k != "parent"})

    async def fs_link(
        self, ino: int, new_parent: int, new_name: bytes, session: str | None = None
    ) -> dict:
        await self._settle(session, new_parent, ino)
        since = self.watches.mark()
        attr = await self._tx(namespace.link, ino, new_parent, new_name)
        self._changed(
            session,
            since,
            [entry(new_parent, new_name), inode(new_parent), inode(ino)],
            [new_parent, ino],
        )
        return attr

    async def fs_unlink(self, parent: int, name: bytes, session: str | None = None) -> dict:
        """Like fs_mknod, the answer carries the directory's new attributes (``parent``).
        An inode left with no name that no mount holds is deleted in the same transaction
        (``deleted`` is true in the answer), as ``fs.forget`` would. With ``session``, the
        calling mount holds the inode first: its kernel looked the name up, so it
        references the inode, and keeps it until it forgets it (``fs.forget`` with the
        session then deletes it)."""
        self._live_or_stale(session)
        await self._settle(session, parent)
        since = self.watches.mark()
        attr = await self._short_tx(self._dropping(namespace.unlink, parent, session), parent, name)
        self._removed(session, since, parent, name, attr)
        return attr

    async def fs_rmdir(self, parent: int, name: bytes, session: str | None = None) -> dict:
        self._live_or_stale(session)
        await self._settle(session, parent, *await self._named(parent, name))
        since = self.watches.mark()
        attr = await self._short_tx(self._dropping(namespace.rmdir, parent, session), parent, name)
        self._removed(session, since, parent, name, attr)
        return attr

    def _removed(
        self, author: str | None, since: int, parent: int, name: bytes, attr: dict
    ) -> None:
        victim = [] if attr.get("deleted") else [inode(attr["ino"])]
        self._changed(
            author,
            since,
            [entry(parent, name), inode(parent), *victim],
            [parent, *(e[1] for e in victim)],
        )

    def _live_or_stale(self, session: str | None) -> None:
        """Refuse an unknown session before anything changes (so the change is safe to
        send again under a new session)."""
        if session is not None and not self.sessions.is_live(session):
            raise FsError(errno.ESTALE, "unknown mount session: open a new one")

    def _dropping(
        self, change: Callable[..., dict], parent: int, session: str | None
    ) -> Callable[..., dict]:
        """``change`` (an unlink or rmdir) with its directory's new attributes, and the
        inode deleted when it became an orphan nobody holds."""
        with_parent = _with_parent(change, parent)

        def run(conn: sqlite3.Connection, *args: Any) -> dict:
            return self._delete_if_orphan(conn, with_parent(conn, *args), session)

        return run

    def _delete_if_orphan(self, conn: sqlite3.Connection, attr: dict, session: str | None) -> dict:
        """``attr`` of an inode that just lost a name; deleted now (``deleted`` set) if that
        was its last name and no mount holds it. ``session``'s mount holds it first. Not
        while a mount from before a restart has yet to say what it holds: the orphan sweep
        takes it later."""
        if attr["nlink"] == 0 and session is not None:
            self.sessions.hold(session, attr["ino"])
        if (
            attr["nlink"] == 0
            and not self.sessions.is_held(attr["ino"])
            and self.sessions.deletions_allowed()
        ):
            attr["deleted"] = namespace.forget(conn, attr["ino"])
        elif attr["nlink"] == 0:
            self.sessions.kept_orphans.add(attr["ino"])
        return attr

    async def fs_rename(
        self,
        old_parent: int,
        old_name: bytes,
        new_parent: int,
        new_name: bytes,
        flags: int = 0,
        session: str | None = None,
    ) -> dict | None:
        """The answer is the replaced inode's attributes, or nil. A replaced inode left
        with no name that no mount holds is deleted in the same transaction (``deleted``),
        as with fs.unlink (and with ``session``, held by the calling mount first)."""
        self._live_or_stale(session)
        await self._settle(
            session,
            old_parent,
            new_parent,
            *await self._named(old_parent, old_name),
            *await self._named(new_parent, new_name),
        )
        moved: list[int | None] = []

        def rename(conn: sqlite3.Connection) -> dict | None:
            moved.extend(
                (
                    namespace.entry_inode(conn, old_parent, old_name),
                    namespace.entry_inode(conn, new_parent, new_name),
                )
            )
            replaced = namespace.rename(conn, old_parent, old_name, new_parent, new_name, flags)
            return self._delete_if_orphan(conn, replaced, session) if replaced is not None else None

        since = self.watches.mark()
        replaced = await self._tx(rename)
        touched = {old_parent, new_parent}
        touched.update(i for i in moved if i is not None)
        if replaced is not None and replaced.get("deleted"):
            touched.discard(replaced["ino"])
        self._changed(
            session,
            since,
            [
                entry(old_parent, old_name),
                entry(new_parent, new_name),
                *(inode(i) for i in sorted(touched)),
            ],
            sorted(touched),
        )
        return replaced

    async def fs_readdir(
        self,
        ino: int,
        after: int = 0,
        limit: int = READDIR_MAX,
        rows: bool = False,
        session: str | None = None,
    ) -> list:
        """A page of a listing, read in the worker thread (a page is up to READDIR_MAX
        entries: too long for the event loop) without a transaction (see ``_read``). With
        ``session``, the directory and every inode listed are watched for it."""
        listing = namespace.readdir_rows if rows else namespace.readdir
        await self._settle(session, ino)
        since = self.watches.mark()
        page = await trio.to_thread.run_sync(
            _unwritten,
            self.conn,
            listing,
            ino,
            after,
            max(1, min(limit, READDIR_MAX)),
            limiter=self._db,
        )
        if self.watches.listening(session):
            listed = [row[2] for row in page] if rows else [attr["ino"] for _, attr, _ in page]
            self.watches.watch(session, [ino, *listed], since)
        return page

    async def fs_readlink(self, ino: int) -> bytes:
        return await self._read(namespace.readlink, ino)

    async def fs_forget(self, inos: list[int], session: str | None = None) -> int:
        """Delete these inodes if they are orphans that no mount holds; with ``session``,
        that mount's holds on them are dropped first (its kernel forgot them)."""
        if session is not None:
            for ino in inos:
                self.sessions.release(session, ino)
        return await self._forget_unheld(inos)

    async def fs_open(self, ino: int, session: str, pieces: int = 0) -> dict:
        """getattr, and a hold on the inode for the session (so unlink elsewhere spares it).
        With ``pieces``, also the map of a file's first pieces (at most OPEN_PIECES_MAX):
        a mount opening a file to read it asks for the map next, and a small file's read
        was four round trips where three will do."""
        await self._settle(session, ino)
        since = self.watches.mark()
        attr = await self._read(files.opened, ino, max(0, min(pieces, OPEN_PIECES_MAX)))
        if not self.sessions.hold(session, ino):
            raise FsError(errno.ESTALE, "unknown mount session: open a new one")
        self.watches.watch(session, [ino], since)
        return attr

    async def fs_release(self, ino: int, session: str) -> bool:
        """Drop the session's hold; an orphan nobody holds any more is deleted now."""
        self.sessions.release(session, ino)
        return bool(await self._forget_unheld([ino]))

    # -- mount sessions -------------------------------------------------------------------

    async def session_open(self, description: str) -> str:
        """Recorded in the database before the mount learns the id: a mount that has a
        session is always one a restarted meta role waits for."""
        session = self.sessions.open(description)
        try:
            await self._tx(session_record.record, session, description)
        except BaseException:
            self.sessions.close(session)
            raise
        log.info("mount session %s opened: %s", session[:12], description)
        return session

    async def session_heartbeat(self, session: str) -> bool:
        return self.sessions.heartbeat(session)

    async def session_pending(self, session: str, add: list[str], drop: list[str]) -> bool:
        """Chunks this mount stored but has not committed (``add``), or has now committed
        or given up (``drop``): garbage collection leaves pending chunks alone."""
        if not are_chunk_ids([*add, *drop]):
            raise InvalidArgument("add and drop must be lists of chunk ids")
        if not self.sessions.set_pending(session, add, drop):
            raise FsError(errno.ESTALE, "unknown mount session: open a new one")
        return True

    async def session_hold(self, session: str, add: list[int], drop: list[int]) -> int:
        """The inodes this mount's kernel references (looked up and not yet forgotten, or
        open) now (``add``) and no longer (``drop``): an orphan is kept while any mount
        holds it, so a file or directory deleted elsewhere still answers stat where it is
        referenced (a bind mount, a working directory). Returns how many orphans among
        ``drop`` were deleted. ``ESTALE`` for an unknown session."""
        if not (_are_inos(add) and _are_inos(drop)):
            raise InvalidArgument(
                f"add and drop must be lists of at most {HOLD_BATCH_MAX} inode numbers"
            )
        if not self.sessions.is_live(session):
            raise FsError(errno.ESTALE, "unknown mount session: open a new one")
        for ino in add:
            self.sessions.hold(session, ino)
        for ino in drop:
            self.sessions.release(session, ino)
        return await self._forget_unheld(drop)

    async def session_listen(self, session: str, lease: float, wait: float, ack: int = 0) -> dict:
        """A long poll for the invalidations this mount is owed (see watches.py): answers
        ``{"events": [...], "reset": bool, "upto": int}`` as soon as there are any, or
        after ``wait`` seconds with none; the next poll acknowledges ``upto`` with ``ack``
        once the mount has dealt with them. While it keeps polling, what the meta role
        tells it with its session is watched for ``lease`` seconds. ESTALE for an unknown
        session."""
        if not self.sessions.is_live(session):
            raise FsError(errno.ESTALE, "unknown mount session: open a new one")
        if not (0 <= lease <= 1e6 and 0 <= wait <= 1e6 and ack >= 0):
            raise InvalidArgument("lease and wait must be seconds and ack a count, at least 0")
        return await self.watches.take(session, float(lease), float(wait), ack)

    async def session_orphans(self, session: str) -> list:
        """Inodes deleted (no name left) that are kept only because this session holds
        them: its kernel may merely cache them, and the mount tells the kernel they are
        gone, so that they are freed unless something really uses them."""
        return self.sessions.held_orphans(session)

    async def gc_unreferenced(self, ids: list[str]) -> list:
        """Of these chunk ids, those nothing references: no chunk map row of any volume or
        snapshot, and no mount's pending chunks. Refused (BUSY) after a restart while a
        mount session from before it has not registered its pending chunks again (or
        expired)."""
        if not are_chunk_ids(ids):
            raise InvalidArgument("ids must be at most 10000 chunk ids")
        if not self.sessions.deletions_allowed():
            raise Busy(
                f"{self.sessions.restored_count()} mount sessions from before the meta "
                "role's start have not registered again; garbage collection waits "
                "until they do or expire"
            )
        referenced = await self._tx(files.referenced, ids)
        pending = self.sessions.pending_chunks()
        return [c for c in ids if c not in referenced and c not in pending]

    async def session_close(self, session: str) -> bool:
        waiting = not self.sessions.deletions_allowed()
        await self._tx(session_record.unrecord, [session])
        held = self.sessions.close(session)
        self.watches.forget(session)
        self._end_grants(session)
        self._say_if_deleting_again(waiting)
        await self._forget_unheld(list(held))
        log.info("mount session %s closed", session[:12])
        return True

    # -- xattrs -------------------------------------------------------------------------

    async def fs_getxattr(self, ino: int, name: bytes) -> bytes:
        await self._settle(None, ino)
        return await self._read(xattrs.get, ino, name)

    async def fs_setxattr(
        self, ino: int, name: bytes, value: bytes, flags: int = 0, session: str | None = None
    ) -> None:
        await self._settle(session, ino)
        since = self.watches.mark()
        await self._tx(xattrs.set_, ino, name, value, flags)
        self._changed(session, since, [inode(ino)], [ino])

    async def fs_listxattr(self, ino: int) -> list:
        await self._settle(None, ino)
        return await self._read(xattrs.list_, ino)

    async def fs_removexattr(self, ino: int, name: bytes, session: str | None = None) -> None:
        await self._settle(session, ino)
        since = self.watches.mark()
        await self._tx(xattrs.remove, ino, name)
        self._changed(session, since, [inode(ino)], [ino])

    # -- file contents ------------------------------------------------------------------

    async def fs_chunks(self, ino: int, first: int, last: int, slices: bool = False) -> list:
        if type(slices) is not bool:
            raise InvalidArgument("slices must be a boolean")
        return await self._read(files.chunk_map, ino, first, last, slices)

    async def fs_commit(
        self,
        ino: int,
        size: int,
        pieces: list,
        mtime_ns: int | None = None,
        session: str | None = None,
    ) -> dict:
        """Every close of a written file ends here, usually with a piece or a few: those
        commit on the event loop (see _short_tx); long lists go to the worker thread."""
        since = self.watches.mark()
        if isinstance(pieces, list) and len(pieces) <= SHORT_COMMIT:
            attr = await self._short_tx(files.commit, ino, size, pieces, mtime_ns)
        else:
            attr = await self._tx(files.commit, ino, size, pieces, mtime_ns)
        await self._delivered(self._changed(session, since, [inode(ino, True)], [ino]))
        return attr

    # -- cluster map --------------------------------------------------------------------

    async def cluster_heartbeat(self, server_id: str, address: str, zone: str, usage: dict) -> bool:
        """A chunk server is alive at ``address``. Everything in it is checked before it
        enters the cluster map: one bad entry there reached the repair pass, the mounts'
        placement and every CLI that lists servers (issue 24)."""
        servers.check_heartbeat(server_id, address, zone, usage)
        back = await self._tx(servers.heartbeat, server_id, address, zone, usage)
        if isinstance(usage.get("scrub"), dict):
            self.scrub_reports[server_id] = usage["scrub"]
        if back:
            log.info("chunk server %s at %s (zone %s) is up", server_id, address, zone or "-")
        return True

    async def cluster_info(self) -> dict:
        """Who this cluster is: its id (chosen when the meta database was created)."""
        return {"cluster_id": await self._tx(cluster_id)}

    async def cluster_status(self) -> dict:
        """Servers, volumes with their health, repair: the answer to 'is my data safe?'."""
        return await self._tx(status.build, self.repair, dict(self.scrub_reports))

    async def cluster_servers(self) -> list:
        return await self._tx(servers.list_all)

    async def cluster_report_bad(self, chunk_id: str, server_id: str, reason: str) -> bool:
        if not is_chunk_id(chunk_id):
            raise InvalidArgument("chunk_id must be a chunk id")
        log.warning("bad copy of chunk %s on server %s: %s", chunk_id, server_id, reason)
        await self._tx(servers.report_bad_copy, chunk_id, server_id, reason)
        return True

    async def cluster_bad_copies(self) -> list:
        return await self._tx(servers.bad_copies)

    async def cluster_drain(self, server_id: str, draining: bool = True) -> dict:
        """Start (or stop) emptying a server: no new writes, its copies replaced elsewhere."""
        server = await self._tx(servers.set_draining, server_id, draining)
        log.warning(
            "chunk server %s %s", server_id, "is draining" if draining else "is no longer draining"
        )
        if draining:
            self.repair.wanted.set()
        return server

    async def cluster_remove(self, server_id: str) -> bool:
        removed = await self._tx(servers.remove, server_id)
        if removed:
            log.warning("chunk server %s removed from the cluster map", server_id)
        return removed

    async def cluster_clear_bad(self, chunk_id: str, server_id: str) -> bool:
        return await self._tx(servers.clear_bad_copy, chunk_id, server_id)

    # -- backups ------------------------------------------------------------------------

    def _backups(self) -> Backups:
        if self.backups is None:
            raise InvalidArgument("this meta role has no backup directory")
        return self.backups

    async def meta_backup_open(self) -> dict:
        """A consistent copy of the database, taken now: {id, size}; read it, then close."""
        await self._settle_all()
        backups = self._backups()
        return await trio.to_thread.run_sync(backups.create, self.conn, limiter=self._db)

    async def meta_backup_read(self, backup_id: str, offset: int, length: int) -> bytes:
        return await trio.to_thread.run_sync(self._backups().read, backup_id, offset, length)

    async def meta_backup_close(self, backup_id: str) -> bool:
        return await trio.to_thread.run_sync(self._backups().close, backup_id)

    # -- consistency --------------------------------------------------------------------

    async def fsck_check(self, volume: str) -> dict:
        """Check the volume's metadata (entries, link counts, reachability, cached sums)."""
        await self._settle_all()
        return await self._tx(fsck.check, volume)

    async def fsck_repair(self, volume: str) -> dict:
        """Mend the volume's values no mount can show (fsck.repair_ranges), and tell the
        mounts watching those inodes and their entries."""
        await self._settle_all()
        since = self.watches.mark()
        result = await self._tx(fsck.repair_ranges, volume)
        events = []
        for ino, names in result.pop("inodes").items():
            events.append(inode(ino, True))
            events += [entry(parent, name) for parent, name in names]
        self._changed(None, since, events, [])
        for line in result["repaired"]:
            log.warning("fsck --repair of volume %s: %s", volume, line)
        return result

    async def fsck_chunks(self, volume: str, after: str | None = None, limit: int = 1000) -> list:
        if not 1 <= limit <= 10_000:
            raise InvalidArgument("limit must be in 1..10000")
        return await self._tx(fsck.chunk_ids, volume, after, limit)

    # -- repair -------------------------------------------------------------------------

    async def repair_referenced(self, after: str | None = None, limit: int = 1000) -> list:
        """[[chunk_id, R], ...]: referenced chunks in id order, with the R they need."""
        if not 1 <= limit <= 10_000:
            raise InvalidArgument("limit must be in 1..10000")
        return await self._tx(files.referenced_with_replicas, after, limit)

    async def repair_status(self) -> dict:
        return self.repair.status.as_dict()

    async def repair_run(self) -> dict:
        """Start a pass now (or right after the one running); returns the current status."""
        self.repair.wanted.set()
        return self.repair.status.as_dict()


def _check_commit(commit: Any) -> None:
    """fs.apply's ``commit``: its shape (files.commit checks the values)."""
    if not (
        isinstance(commit, list)
        and len(commit) == 4
        and type(commit[0]) is int
        and type(commit[1]) is int
        and isinstance(commit[2], list)
        and (commit[3] is None or type(commit[3]) is int)
    ):
        raise InvalidArgument("a commit is [ino, size, pieces, mtime_ns or nil]")


def _commit_alone(
    conn: sqlite3.Connection, ino: int, size: int, pieces: list, mtime_ns: int | None
) -> dict:
    """files.commit inside a savepoint of the batch's transaction: when it fails, it is
    undone alone and its error is the answer (fs.apply's ``commit``)."""
    conn.execute("SAVEPOINT apply_commit")
    try:
        attr = files.commit(conn, ino, size, pieces, mtime_ns)
    except RpcError as exc:
        conn.execute("ROLLBACK TO apply_commit")
        conn.execute("RELEASE apply_commit")
        return {"error": exc.to_wire()}
    conn.execute("RELEASE apply_commit")
    return {"attr": attr}


def _reclaimable(ino: int) -> bool:
    """Might ``ino`` be a number of a grant from before the meta role's start? (Checked
    against the numbers reserved on disk when the batch is applied.)"""
    return 1 <= ino <= RECLAIM_LAST


def _checked_op(op: Any, owns: Callable[[int], bool]) -> list:
    """One operation of an fs.apply batch, its shape and values checked (InvalidArgument)."""
    if not isinstance(op, list) or not op or op[0] not in BATCH_OPS:
        raise InvalidArgument(f"not an operation: {op!r}"[:200])
    kind = op[0]
    if kind == "c":
        if len(op) != 10:
            raise InvalidArgument(
                "a create is [c, name, ino, mode, uid, gid, rdev, target, t, hold]"
            )
        _, name, ino, mode, uid, gid, rdev, target, t, hold = op
        ranges.check_new_node(mode, uid, gid, rdev)
        if stat.S_ISDIR(mode):
            raise InvalidArgument("a directory is not made in a batch")
        if type(ino) is not int or not owns(ino):
            raise InvalidArgument(f"inode {ino!r} is not one of the grant's numbers")
        if not isinstance(name, bytes) or not (target is None or isinstance(target, bytes)):
            raise InvalidArgument("name and target must be bytes")
        if (
            type(t) is not int
            or not ranges.TIME_MIN <= t <= ranges.TIME_MAX
            or type(hold) is not bool
        ):
            raise InvalidArgument("time must be nanoseconds and hold a boolean")
    elif kind == "u":
        if len(op) != 3 or not isinstance(op[1], bytes) or not _is_time(op[2]):
            raise InvalidArgument("an unlink is [u, name, time_ns]")
    elif kind == "m":
        if len(op) != 5 or not isinstance(op[1], bytes) or not isinstance(op[2], bytes):
            raise InvalidArgument("a rename is [m, old, new, flags, time_ns]")
        if type(op[3]) is not int or not _is_time(op[4]):
            raise InvalidArgument("rename flags must be an integer, its time nanoseconds")
    elif kind == "a":
        if len(op) != 5 or not isinstance(op[1], bytes) or not isinstance(op[3], dict):
            raise InvalidArgument("an attribute change is [a, name, ino, changes, time_ns]")
        _, name, ino, changes, t = op
        if type(ino) is not int or not owns(ino):
            raise InvalidArgument(f"inode {ino!r} is not one of the grant's numbers")
        if not changes or not set(changes) <= BATCH_SETTABLE:
            raise InvalidArgument(
                f"a batch sets some of {sorted(BATCH_SETTABLE)}, not {changes!r}"[:200]
            )
        ranges.check_changes(changes)
        if not _is_time(t):
            raise InvalidArgument("an attribute change's time must be nanoseconds")
    elif len(op) != 2 or type(op[1]) is not int or op[1] <= 0:
        raise InvalidArgument("a forget is [f, ino]")
    return op


# The kinds of operation an fs.apply batch may hold (see fs_apply); a grant says so, so
# that a mount sends "a" only to a meta role that takes it (an older one refuses the
# whole batch)
BATCH_OPS = ["c", "u", "m", "a", "f"]
# What an attribute change in a batch may set: a size is a change of the file's data,
# which goes through fs.setattr (it waits for every mount's pages to be dropped).
BATCH_SETTABLE = frozenset({"mode", "uid", "gid", "atime_ns", "mtime_ns"})


def _is_time(value: Any) -> bool:
    return type(value) is int and ranges.TIME_MIN <= value <= ranges.TIME_MAX


def _are_inos(values: Any) -> bool:
    return (
        isinstance(values, list)
        and len(values) <= HOLD_BATCH_MAX
        and all(type(v) is int and v > 0 for v in values)
    )


def _with_parent(change: Callable[..., dict], parent: int) -> Callable[..., dict]:
    """``change``'s answer plus the attributes of directory ``parent`` after it, in the
    same transaction."""

    def run(conn: sqlite3.Connection, *args: Any) -> dict:
        return {**change(conn, *args), "parent": namespace.getattr_(conn, parent)}

    return run


def _unwritten(conn: sqlite3.Connection, fn: Callable[..., Any], *args: Any) -> Any:
    """``fn(conn, *args)`` outside a transaction, checked afterwards to have changed
    nothing (what it changed stays changed: the check reports the bug, it cannot undo it)."""
    before = conn.total_changes
    result = fn(conn, *args)
    if conn.total_changes != before:
        raise Internal(f"{fn.__name__} changed the database outside a transaction")
    return result
