"""The pyfuse3 Operations of a shoalfs mount: each handler is a short translation.

Namespace calls go to the meta role (one transaction each, so the kernel's view and the
database never disagree halfway); file contents go through FileData. Every handler turns
errors into an errno: an exception escaping a handler would leave the application with
"transport endpoint is not connected", which is what users remember of FUSE at its worst.
"""

from __future__ import annotations

import errno
import functools
import logging
import os
import stat
import time
from collections.abc import Awaitable, Callable, Coroutine, Mapping, Sequence
from typing import Any, ParamSpec, TypeVar

import pyfuse3
import trio

from storaged.metaclient import ATTR_KEYS
from storaged.rpc import FsError, MethodNotFound, RpcError, Timeout, Unavailable

from .attrs import InodeMap, entry_attributes, entry_from_values
from .coherence import (
    POLL_MARGIN,
    POLL_WAIT,
    RETRY_SECONDS,
    Ask,
    KernelCache,
    KernelCall,
    run_in_thread,
)
from .delegation import Delegator, Held
from .dircache import ListingCache
from .dirnames import KnownNames
from .filedata import FileData, VolumeIO
from .holds import SYNC_SECONDS, KernelHolds
from .inflight import InFlight
from .keptmaps import KeptMaps, map_from_answer, version_of
from .listing import KeptListings, Listing, Page
from .ownattrs import OwnAttrs, changed
from .quota import QuotaGuard

log = logging.getLogger("fusefs")

T = TypeVar("T")
P = ParamSpec("P")
FILES_LIMIT = 1 << 32
READDIR_PAGE = 1000  # entries per fs.readdir: the meta role's largest page
OPEN_PIECES = 16  # pieces of a file's map asked for with its open (64 MiB of 4 MiB chunks)
LOOKUP_PIECES = 4  # ... and with a lookup, for the open that follows (16 MiB: small files)
KERNEL_QUEUE = 1000  # batches of kernel invalidations waiting (the poll waits past it)
KNOWN_MAX = 100_000  # attributes kept for opens answered here (see _known)
KNOWN_MARGIN = 1.0  # seconds of lease they must have left to be used
HOLD_BATCH = 10_000  # inodes per session.hold each way (the meta role takes up to 100,000)
RENAME_EXCHANGE = 2  # renameat2's flag (linux/fs.h), as the kernel passes it to rename
RENAME_NOREPLACE = 1
ID_MAX = (1 << 32) - 2  # uid and gid the meta role takes (storaged/meta/ranges.py)


def fuse_errors(fn: Callable[P, Awaitable[T]]) -> Callable[P, Coroutine[Any, Any, T]]:
    """Every failure becomes a FUSEError with a meaningful errno, never a dead daemon."""

    @functools.wraps(fn)
    async def wrapper(*args: P.args, **kwargs: P.kwargs) -> T:
        try:
            return await fn(*args, **kwargs)
        except pyfuse3.FUSEError:
            raise
        except FsError as exc:
            raise pyfuse3.FUSEError(exc.errno) from None
        except Timeout as exc:
            log.error("%s: %s", fn.__name__, exc)
            raise pyfuse3.FUSEError(errno.ETIMEDOUT) from None
        except (Unavailable, RpcError, OSError) as exc:
            log.error("%s: %s", fn.__name__, exc)
            raise pyfuse3.FUSEError(errno.EIO) from None
        except Exception:
            log.exception("%s failed", fn.__name__)
            raise pyfuse3.FUSEError(errno.EIO) from None

    return wrapper


class Operations(pyfuse3.Operations):
    supports_dot_lookup = False
    enable_writeback_cache = False
    enable_acl = False

    def __init__(
        self,
        io: VolumeIO,
        volume: Mapping[str, Any],
        *,
        entry_timeout: float = 1.0,
        attr_timeout: float = 1.0,
        cache_lease: float = 0.0,
        delegate: bool = False,
    ) -> None:
        super().__init__()
        self.io = io
        self.meta = io.meta
        self.meta.on_change = self._changing
        self.volume = volume
        self.inodes = InodeMap(volume["root"])
        self.entry_timeout = entry_timeout
        self.attr_timeout = attr_timeout
        # how long the kernel may keep what it is told (see coherence.py)
        self.cache = KernelCache(cache_lease, entry_timeout, attr_timeout)
        self.in_kernel = False  # set once pyfuse3 serves the kernel (see mount.py)
        self._listening = trio.CancelScope()  # the listen loop's (see stop_listening)
        self._listened = trio.Event()
        io.author = self._author
        self.quota = QuotaGuard(io.meta, volume["id"])
        io.after_commit = self._committed
        io.after_drop = self._dropped
        io.renew_session = self.renew_session
        self.lookups: dict[int, int] = {}  # meta inode -> kernel lookup count
        self.holds = KernelHolds(
            self._referenced, io.meta.features
        )  # what the meta role keeps for us
        # inode -> (kernel parent inode, name) of the entry the kernel last got it through:
        # to tell the kernel an entry is gone (see drop_orphans)
        self.names: dict[int, tuple[int, bytes]] = {}
        self.orphans: set[int] = set()  # unlinked inodes that still have a lookup count
        # releases of our holds on their way to the meta role (see release)
        self.releasing = InFlight(io.nursery)
        self.files: dict[int, FileData] = io.files  # meta inode -> open file state
        self.handles: dict[int, int] = {}  # fh -> meta inode
        # fh of a handle open for writing -> the file's FileData.failures it has been told of
        self.writers: dict[int, int] = {}
        # the kernel being told to drop the pages of writes that were dropped (see _dropped)
        self.unpaging = InFlight(io.nursery)
        self._next_fh = 1
        self.seen: dict[int, tuple[int, int]] = {}  # (size, mtime) the kernel was last told
        self.session = ""  # set by the mount: this mount's session in the meta role
        self.description = ""  # how the session names this mount (host, mountpoint, pid)
        self._renewing = trio.Lock()
        # inode -> until when "it has no security.capability" may be believed (see getxattr)
        self.no_capability: dict[int, float] = {}
        # directory inode -> (until when, its attributes as a create in it left them, the
        # create's Ask); see _make and getattr. Any other change through this mount, and any
        # invalidation, empties it.
        self.dir_attrs: dict[int, tuple[float, Mapping[str, Any], Ask]] = {}
        self._changes = 0
        self.dirs: dict[int, Listing] = {}  # fh -> an open directory's listing
        self.dir_inodes: dict[int, int] = {}  # fh -> the open directory's kernel inode
        self.kept_listings = KeptListings(io.nursery, lambda: self._changes + self.cache.changes)
        self.listings = ListingCache(cache_lease)  # whole listings, while nothing changed
        self.dir_names = KnownNames(self.cache)  # every name of a few directories
        # inode -> (attributes told to the kernel while listening, their Ask, _changes then)
        self.known: dict[int, tuple[Mapping[str, Any] | list[Any], Ask, int]] = {}
        # files that were open here since the kernel last looked them up: the kernel may
        # keep their pages (forgotten with the inode: see _open_here)
        self.paged: set[int] = set()
        # chunk maps of files read and closed here, for a read after the kernel dropped
        # their pages (keptmaps.py)
        self.maps = KeptMaps()
        # attributes of files made here under a delegation, while exact (ownattrs.py)
        self.own_attrs = OwnAttrs()
        # directories this mount answers changes in itself (see delegation.py); the
        # meta role sees every batch before any other call of this mount's
        self.delegator = Delegator(
            io.meta, self.cache, self.dir_names, lambda: self.session, self._lost_changes
        )
        self.delegator.enabled = delegate and cache_lease > 0
        if self.delegator.enabled:
            io.meta.before_call = self.delegator.send_all
            io.commit_with_batch = self.delegator.commit

    # -- helpers ----------------------------------------------------------------------------

    def _committed(self, answer: Mapping[str, Any]) -> None:
        """A file's data was committed: its size and times changed (see listing.py). The
        kernel may keep the file's attributes from before (a stat while it was written)
        for as long as the lease: told to forget them, when they differ. Attributes only:
        that takes no lock a request in flight may hold, so it is safe from a handler."""
        ino = answer.get("ino")
        # exact, if what was known of the file stayed good while the commit was out (no
        # change of it can be answered here meanwhile: its flush lock; ownattrs.py)
        exact = ino in self.delegator.made_in and self.own_attrs.get(ino, self._changes) is not None
        self._changes += 1
        self.quota.committed(answer)
        if ino is None:
            return
        if exact:
            self.own_attrs.keep(ino, answer, self._changes)
        told = self.seen.get(ino)
        if told is not None and told != (answer.get("size"), answer.get("mtime_ns")):
            del self.seen[ino]
            if not self.in_kernel:
                return
            try:
                pyfuse3.invalidate_inode(self.inodes.to_kernel(ino), attr_only=True)
            except OSError:
                pass  # the kernel no longer has it: nothing to forget

    def _dropped(self, ino: int) -> None:
        """A file's unstored writes were dropped (FileData.drop_unsaved): the kernel's pages
        and size hold them, and must go before anyone reads again. Told from a thread of its
        own, never awaited here: the write that triggered it may hold the very pages (see
        coherence.py); handlers that can wait for it do (``unpaging.wait``)."""
        self._changes += 1
        self.seen.pop(ino, None)
        self.known.pop(ino, None)
        if not self.in_kernel:
            return
        self.unpaging.start(
            ino, functools.partial(run_in_thread, [("inode", self.inodes.to_kernel(ino), False)])
        )

    def _lost_changes(self, directory: int, names: list[bytes], inodes: list[int]) -> None:
        """Changes answered from a delegation did not reach the meta role (see
        delegation.py, invariant 4): the kernel forgets the directory's attributes, those
        entries and the attributes of ``inodes`` (changed here), so it asks the meta role
        again."""
        self._changing()
        for ino in (directory, *inodes):
            self.known.pop(ino, None)
        if not self.in_kernel:
            return
        parent = self.inodes.to_kernel(directory)
        for name in set(names):
            self.cache.entries.pop((parent, name), None)
            pyfuse3.invalidate_entry_async(parent, name, ignore_enoent=True)
        for ino in (parent, *(self.inodes.to_kernel(i) for i in inodes)):
            try:
                pyfuse3.invalidate_inode(ino, attr_only=True)
            except OSError:
                pass  # the kernel does not have it: nothing to forget

    def _tell_lost(self, fh: int, data: FileData) -> None:
        """Raise, once per handle open for writing, a failure that dropped the file's
        unstored writes since the handle last heard of one (Linux reports a failed
        writeback to each open file the same way)."""
        told = self.writers.get(fh)
        if told is not None and told < data.failures and data.failure is not None:
            self.writers[fh] = data.failures
            raise data.failure

    def _changing(self) -> None:
        """A meta call that may change a directory is on its way (MetaClient.on_change):
        attributes kept from creates may be stale, and so may kept listings."""
        self._changes += 1
        self.dir_attrs.clear()

    def _ask(self) -> Ask:
        """Just before a request whose answer goes to the kernel (see coherence.py)."""
        return self.cache.ask(self.session)

    def _author(self) -> str | None:
        """The session to send with a change, so the meta role does not send this mount
        its own change back; None while not listening."""
        return self._ask().session

    def _entry(
        self, attr: Mapping[str, Any], ask: Ask | None, timeouts: tuple[float, float] | None = None
    ) -> pyfuse3.EntryAttributes:
        data = self.files.get(attr["ino"])
        size = data.size if data is not None else None
        entry_timeout, attr_timeout = timeouts or self.cache.timeouts(ask)
        entry = entry_attributes(
            attr, self.inodes, entry_timeout=entry_timeout, attr_timeout=attr_timeout, size=size
        )
        if stat.S_ISREG(attr["mode"]):
            self.seen[attr["ino"]] = (entry.st_size, attr["mtime_ns"])
        if attr_timeout > KNOWN_MARGIN and data is None:
            self._remember(attr, ask)
        return entry

    def _remember(self, attr: Mapping[str, Any] | list[Any], ask: Ask | None) -> None:
        """``attr`` (a map, or a listing's row as it came: made into a map only if it is
        ever used, not for every entry listed) was told to the kernel, or came with an
        open, under ``ask``: see ``_known``."""
        if ask is None or ask.session is None:
            return
        if len(self.known) >= KNOWN_MAX:
            self.known.clear()
        ino = attr[2] if isinstance(attr, list) else attr["ino"]
        self.known[ino] = (attr, ask, self._changes)

    def _known(self, ino: int) -> Mapping[str, Any] | None:
        """The attributes of ``ino`` this mount told its kernel while listening, if nothing
        can have changed them since: no invalidation or reset has arrived, this mount has
        sent no change, and the lease has KNOWN_MARGIN left. What an open and an opendir
        may be answered with without asking the meta role (see open)."""
        known = self._known_with_ask(ino)
        return None if known is None else known[0]

    def _known_with_ask(self, ino: int) -> tuple[Mapping[str, Any], Ask] | None:
        known = self.known.get(ino)
        if known is None:
            return None
        attr, ask, own = known
        if own != self._changes or self.cache.left(ask) <= KNOWN_MARGIN:
            del self.known[ino]
            return None
        if isinstance(attr, list):  # a listing's row: [name, cookie, *ATTR_KEYS values]
            attr = dict(zip(ATTR_KEYS, attr[2:]))
            self.known[ino] = (attr, ask, own)
        return attr, ask

    def _looked_up(
        self, attr: Mapping[str, Any], ask: Ask | None, parent_inode: int = 0, name: bytes = b""
    ) -> pyfuse3.EntryAttributes:
        self._count_lookup(attr["ino"], parent_inode, name)
        if not name:
            return self._entry(attr, ask)
        return self._entry(attr, ask, self.cache.entry(ask, parent_inode, name))

    def _not_there(self, ask: Ask, parent_inode: int, name: bytes) -> pyfuse3.EntryAttributes:
        """ENOENT, as a negative entry the kernel may keep while the meta role watches the
        directory for this mount (a name looked for again and again: PATH, imports)."""
        entry_timeout, _ = self.cache.entry(ask, parent_inode, name)
        if entry_timeout <= 0 or ask.session is None:
            raise pyfuse3.FUSEError(errno.ENOENT)
        entry = pyfuse3.EntryAttributes()
        entry.st_ino = 0
        entry.entry_timeout = entry_timeout
        return entry

    def _count_lookup(self, ino: int, parent_inode: int = 0, name: bytes = b"") -> None:
        """The kernel references ``ino`` once more (a reply that hands it the entry
        ``name`` in the directory the kernel knows as ``parent_inode``)."""
        count = self.lookups.get(ino, 0)
        self.lookups[ino] = count + 1
        if not count:
            self.holds.changed(ino)
        if name:
            self.names[ino] = (parent_inode, name)

    def _referenced(self, ino: int) -> bool:
        """Does the kernel, or a file open here, still use ``ino``?"""
        data = self.files.get(ino)
        return self.lookups.get(ino, 0) > 0 or (data is not None and data.handles > 0)

    async def _with_session(self, call: Callable[[str], Awaitable[T]]) -> T:
        """``call(session)``; when the meta role refuses the session (it restarted, or the
        session expired) before acting on the call, this mount registers again and the
        call is sent once more under the new session."""
        session = self.session
        try:
            return await call(session)
        except FsError as exc:
            if exc.errno != errno.ESTALE:
                raise
            await self.renew_session(session)
            return await call(self.session)

    async def _removing(self, send: Callable[[str | None], Awaitable[T]]) -> T:
        """An unlink, rmdir or rename (``send(session)``), whose victim the meta role holds
        for this mount in the same transaction if it loses its last name (see holds.py);
        without the session when holds are off (a meta role too old to take one: the
        client finds out and sends it again without)."""
        if not self.holds.enabled:
            return await send(None)
        return await self._with_session(send)

    async def _unlinked(self, attr: Mapping[str, Any] | None) -> None:
        """An inode lost a name. If it has none left, it lives until this mount's kernel
        forgets it and no file here has it open (see holds.py), and until no other mount
        holds it: the meta role held it for this mount in the deleting transaction. If
        the kernel kept no reference, it goes now; usually the kernel forgets it as the
        unlink returns, and ``forget`` deletes it then."""
        if attr is None or attr["nlink"] != 0:
            return
        self.quota.stale()
        if attr.get("deleted"):  # the meta role deleted it with the name: nobody held it
            return
        ino = attr["ino"]
        self.orphans.add(ino)
        if self.holds.enabled:
            self.holds.took(ino)
        if ino not in self.files and (not self.holds.enabled or not self.lookups.get(ino)):
            await self._forget_orphans([ino])

    # -- namespace ----------------------------------------------------------------------------

    @fuse_errors
    async def lookup(
        self, parent_inode: int, name: bytes, ctx: pyfuse3.RequestContext
    ) -> pyfuse3.EntryAttributes:
        ask = self._ask()
        parent = self.inodes.to_meta(parent_inode)
        if name == b".":
            return self._looked_up(await self.meta.fs_getattr(parent, ask.session), ask)
        surely_not = self.dir_names.missing(parent, name) if name != b".." else None
        if surely_not is not None:  # every name of the directory is known (dirnames.py)
            return self._not_there(surely_not, parent_inode, name)
        try:
            attr = await self.meta.fs_lookup(parent, name, ask.session, LOOKUP_PIECES)
        except FsError as exc:
            if exc.errno == errno.ENOENT and ask.session is not None:
                return self._not_there(ask, parent_inode, name)
            raise
        entry = self._looked_up(attr, ask, parent_inode, name)
        self._ready_to_open(attr)
        return entry

    def _ready_to_open(self, attr: Mapping[str, Any]) -> None:
        """A lookup answered as fs.open would (``held``, and the map of the file's first
        pieces): the hold is this mount's now, and the map is kept for the open that
        usually follows (keptmaps.py), which the mount can then answer itself."""
        if not attr.get("held"):
            return
        ino = attr["ino"]
        self.holds.took(ino)
        if "chunks" in attr and ino not in self.files and self._known(ino) is not None:
            rows = map_from_answer(attr["chunks"], LOOKUP_PIECES, attr["size"], self.io.chunk_size)
            self.maps.keep(ino, version_of(attr), rows)

    @fuse_errors
    async def getattr(
        self, inode: int, ctx: pyfuse3.RequestContext | None = None
    ) -> pyfuse3.EntryAttributes:
        ino = self.inodes.to_meta(inode)
        delegated = self.delegator.dir_attr(ino)
        if delegated is not None:  # changed by this mount's own answers (delegation.py)
            return self._entry(*delegated)
        made = self.dir_attrs.pop(ino, None)
        if made is not None and made[0] > time.monotonic():
            return self._entry(made[1], made[2])
        own = self._own_attrs(ino)
        if own is not None:  # a file made here under a delegation (ownattrs.py)
            return self._entry(own[0], own[1].ask)
        # The kernel asks again after every read and listing (it marks the access time
        # stale, and the meta role does not keep access times): what the mount knows
        # unchanged answers it (see _known).
        data = self.files.get(ino)
        known = self._known_with_ask(ino) if data is None or not data.has_unsaved else None
        if known is not None:
            return self._entry(*known)
        ask = self._ask()
        return self._entry(await self.meta.fs_getattr(ino, ask.session), ask)

    @fuse_errors
    async def setattr(
        self,
        inode: int,
        attr: pyfuse3.EntryAttributes,
        fields: pyfuse3.SetattrFields,
        fh: int | None,
        ctx: pyfuse3.RequestContext,
    ) -> pyfuse3.EntryAttributes:
        ino = self.inodes.to_meta(inode)
        if ino in self.delegator.held:  # answers from it depend on its mode and group
            await self.delegator.give_back(ino)
        data = self.files.get(ino)
        if fields.update_mtime and data is not None:
            async with data.flush_lock:  # (a commit on its way took its own time)
                data.mtime_set = attr.st_mtime_ns  # the next commit keeps it (filedata.py)
        changes = _attribute_changes(attr, fields)
        if changes and not fields.update_size:
            local = self._setattr_here(ino, changes, data)
            if local is not None:
                return local
        ask = self._ask()
        result = None
        if fields.update_size:
            if data is not None:
                result = await data.truncate(attr.st_size)
            else:
                result = await self.meta.fs_setattr(ino, {"size": attr.st_size}, ask.session)
        if changes or result is None:
            result = await self.meta.fs_setattr(ino, changes, ask.session)
        return self._entry(result, ask)

    def _own_attrs(self, ino: int) -> tuple[dict[str, Any], Held] | None:
        """The attributes of ``ino``, a file made here under a delegation, as exactly
        known here (ownattrs.py), with the grant; or None."""
        held = self.delegator.settable(ino)
        if held is None:
            return None
        attr = self.own_attrs.get(ino, self._changes)
        return None if attr is None else (attr, held)

    def _setattr_here(
        self, ino: int, changes: dict[str, int], data: FileData | None
    ) -> pyfuse3.EntryAttributes | None:
        """A chmod, chown or utimens of a file made here under a delegation, answered
        here and sent in its directory's batch (ownattrs.py); or None."""
        if data is not None and data.flush_lock.locked():
            return None  # a commit is out: its answer is what will be known (invariant 2)
        own = self._own_attrs(ino)
        if own is None:
            return None
        attr, held = own
        t = time.time_ns()
        self.delegator.set_attributes(held, ino, changes, t)
        self._changes += 1  # kept listings show the file's old attributes (dircache.py)
        attr = changed(attr, changes, t)
        self.own_attrs.keep(ino, attr, self._changes)
        return self._entry(attr, held.ask)

    async def _make(
        self,
        parent_inode: int,
        name: bytes,
        mode: int,
        ctx: pyfuse3.RequestContext,
        rdev: int = 0,
        target: bytes | None = None,
        hold: bool = False,
    ) -> tuple[Mapping[str, Any], Ask]:
        """A create changes its directory's mtime (and a mkdir its nlink), so the kernel
        drops the directory's attributes and asks for them before the next path walk through
        it: one more round trip per create. The meta role returns the directory's new
        attributes with the new node; the next GETATTR of that directory is answered from
        them, once, within the attribute timeout, unless anything else changed through this
        mount meanwhile (``_changing`` empties the table on every other change)."""
        parent = self.inodes.to_meta(parent_inode)
        local = self._make_here(parent, name, mode, ctx, rdev, target, hold)
        if local is not None:
            return local
        ask = self._ask()
        # A directory made here may come delegated to this mount (delegation.py): its
        # files are then answered here from the first.
        delegate = stat.S_ISDIR(mode) and self.delegator.enabled
        sent_as: list[str | None] = []

        def send(session: str | None) -> Awaitable[Mapping[str, Any]]:
            sent_as.append(session or ask.session)
            return self._changing_dir(
                ask,
                lambda: self.meta.fs_mknod(
                    parent, name, mode, ctx.uid, ctx.gid, rdev, target, sent_as[-1], delegate
                ),
            )

        if not hold and not self.holds.enabled:
            attr = await self._naming((parent,), send(None))
        else:
            # refused before anything was made (ESTALE): safe to send again
            attr = await self._naming((parent,), self._with_session(send))
            self.holds.took(attr["ino"])  # held for the open, or for the kernel's reference
        self.dir_names.added(parent, name, renew=ask)
        if stat.S_ISDIR(mode):
            self.dir_names.learn(attr["ino"], (), ask)  # a new directory: no names yet
            grant = attr.get("grant")
            if grant is not None and sent_as[-1] is not None:
                self.delegator.adopt(attr["ino"], sent_as[-1], grant, ask)
        self.delegator.noted(parent)
        return attr, ask

    def _make_here(
        self,
        parent: int,
        name: bytes,
        mode: int,
        ctx: pyfuse3.RequestContext,
        rdev: int,
        target: bytes | None,
        hold: bool,
    ) -> tuple[Mapping[str, Any], Ask] | None:
        """A create, mknod or symlink answered from a delegation of ``parent``, or None
        (see delegation.py). Held for this mount as the meta role's create would."""
        if stat.S_ISDIR(mode) or not (ctx.uid <= ID_MAX and ctx.gid <= ID_MAX):
            return None
        if len(name) > 255 or rdev >= 1 << 32:
            return None
        held = self.delegator.usable(parent)
        if held is None or self.dir_names.has(parent, name):
            return None
        self._changing()
        hold = hold or self.holds.enabled
        attr = self.delegator.create(held, name, mode, ctx.uid, ctx.gid, rdev, target, hold)
        self.own_attrs.keep(attr["ino"], attr, self._changes)
        if hold:
            self.holds.took(attr["ino"])
        return attr, held.ask

    async def _naming(self, dirs: tuple[int, ...], change: Awaitable[T]) -> T:
        """The answer to a change of names in ``dirs``; if it failed (or never came), what
        this mount knows of their names may be wrong: forgotten (see dirnames.py)."""
        try:
            return await change
        except BaseException:
            for ino in dirs:
                self.dir_names.forget(ino)
            raise

    async def _changing_dir(self, ask: Ask | None, send: Callable[[], Awaitable[Any]]) -> Any:
        """A meta call whose answer carries its directory's new attributes (``parent``):
        keep them for the kernel's next GETATTR of that directory (see _make)."""
        mine = self._changes + 1  # the client counts this change before its first await
        attr = await send()
        parent = attr.pop("parent", None)
        if parent is not None and self._changes == mine and ask is not None:
            self.dir_attrs[parent["ino"]] = (time.monotonic() + self.attr_timeout, parent, ask)
        return attr

    async def open_session(self, description: str) -> None:
        """(Re)register this mount with the meta role, with a hold on every open file, then
        close the session it replaces: a meta role that restarted keeps every deletion
        waiting until each session from before its start is back (or expired), and closing
        the old one is how it learns this mount's holds are all in again."""
        previous = self.session
        self.delegator.end_all(send=False)  # grants are the old session's
        self.description = description
        self.session = self.io.session = await self.meta.session_open(description)
        await self.delegator.resend()  # their batches first, as reclaims (delegation.py)
        if self.io.pending:  # chunks stored but not committed: keep them from the collector
            pending = list(self.io.pending)
            await self.meta.session_pending(self.session, pending, [])
            self.io.registered(pending)
        referenced = [ino for ino in {*self.lookups, *self.files} if self._referenced(ino)]
        if self.holds.enabled and await self._hold(self.session, referenced, []):
            self.holds.new_session(referenced)
        if not self.holds.enabled:
            for ino, data in list(self.files.items()):
                if data.handles:
                    try:
                        await self.meta.fs_open(ino, self.session)
                    except FsError as exc:
                        log.error("inode %d is open here but could not be held again: %s", ino, exc)
        if previous:
            try:
                await self.meta.session_close(previous)
            except RpcError as exc:  # it expires on its own
                log.warning("could not close the replaced mount session: %s", exc)

    async def renew_session(self, stale: str) -> None:
        """The meta role refused session ``stale`` (it restarted, or the session expired):
        register again, once, however many requests found out at the same time."""
        async with self._renewing:
            if self.session == stale:
                log.warning("the meta role did not know this mount's session; registering again")
                await self.open_session(self.description)

    async def _open_attr(self, ino: int, pieces: int = 0) -> Mapping[str, Any]:
        """Fresh attributes and a hold (with ``pieces``, and the map of the file's first
        pieces: ``chunks``); a forgotten session is registered again first."""
        attr = await self._with_session(lambda session: self.meta.fs_open(ino, session, pieces))
        self.holds.took(ino)
        return attr

    @fuse_errors
    async def mknod(
        self, parent_inode: int, name: bytes, mode: int, rdev: int, ctx: pyfuse3.RequestContext
    ) -> pyfuse3.EntryAttributes:
        attr, ask = await self._make(parent_inode, name, mode, ctx, rdev)
        return self._looked_up(attr, ask, parent_inode, name)

    @fuse_errors
    async def mkdir(
        self, parent_inode: int, name: bytes, mode: int, ctx: pyfuse3.RequestContext
    ) -> pyfuse3.EntryAttributes:
        attr, ask = await self._make(parent_inode, name, stat.S_IFDIR | (mode & 0o7777), ctx)
        return self._looked_up(attr, ask, parent_inode, name)

    @fuse_errors
    async def symlink(
        self, parent_inode: int, name: bytes, target: bytes, ctx: pyfuse3.RequestContext
    ) -> pyfuse3.EntryAttributes:
        attr, ask = await self._make(parent_inode, name, stat.S_IFLNK | 0o777, ctx, 0, target)
        return self._looked_up(attr, ask, parent_inode, name)

    @fuse_errors
    async def readlink(self, inode: int, ctx: pyfuse3.RequestContext) -> bytes:
        return await self.meta.fs_readlink(self.inodes.to_meta(inode))

    @fuse_errors
    async def link(
        self, inode: int, new_parent_inode: int, new_name: bytes, ctx: pyfuse3.RequestContext
    ) -> pyfuse3.EntryAttributes:
        ask = self._ask()
        new_parent = self.inodes.to_meta(new_parent_inode)
        ino = self.inodes.to_meta(inode)
        # Its link count is shared from now on: nothing more is answered here about it
        # (before the call: a batch op by its name sent after it would fail, whole)
        self.delegator.reached(ino)
        attr = await self._naming(
            (new_parent,), self.meta.fs_link(ino, new_parent, new_name, ask.session)
        )
        self.dir_names.added(new_parent, new_name)
        self.delegator.noted(new_parent)
        return self._looked_up(attr, ask, new_parent_inode, new_name)  # (held by the next batch)

    @fuse_errors
    async def unlink(self, parent_inode: int, name: bytes, ctx: pyfuse3.RequestContext) -> None:
        parent = self.inodes.to_meta(parent_inode)
        held = self.delegator.usable(parent)
        made = held.made.get(name) if held is not None else None
        if held is not None and made is not None and made not in self.files:
            self._changing()  # a file made here, not open here: answered here
            await self._unlinked({"ino": self.delegator.unlink(held, name), "nlink": 0})
            return
        if made is not None:  # (before the call: see link)
            self.delegator.reached(made)
        ask = self._ask()
        gone = await self._naming(
            (parent,),
            self._removing(
                lambda session: self._changing_dir(
                    ask, lambda: self.meta.fs_unlink(parent, name, session or ask.session)
                )
            ),
        )
        self.dir_names.removed(parent, name)
        self.delegator.reached(gone["ino"])
        self.delegator.noted(parent)
        await self._unlinked(gone)

    @fuse_errors
    async def rmdir(self, parent_inode: int, name: bytes, ctx: pyfuse3.RequestContext) -> None:
        parent = self.inodes.to_meta(parent_inode)
        ask = self._ask()
        gone = await self._naming(
            (parent,),
            self._removing(
                lambda session: self._changing_dir(
                    ask, lambda: self.meta.fs_rmdir(parent, name, session or ask.session)
                )
            ),
        )
        self.dir_names.removed(parent, name)
        self.delegator.noted(parent)
        self.delegator.removed(gone["ino"])
        await self._unlinked(gone)

    @fuse_errors
    async def rename(
        self,
        parent_inode_old: int,
        name_old: bytes,
        parent_inode_new: int,
        name_new: bytes,
        flags: int,
        ctx: pyfuse3.RequestContext,
    ) -> None:
        old, new = self.inodes.to_meta(parent_inode_old), self.inodes.to_meta(parent_inode_new)
        held = self.delegator.usable(old) if old == new else None
        if (
            held is not None
            and name_old in held.made
            and flags in (0, RENAME_NOREPLACE)
            and not self.dir_names.has(new, name_new)
        ):
            self._changing()  # a file made here, to a name surely free: answered here
            self.delegator.rename(held, name_old, name_new)
            return
        for ino in (self.delegator.made_ino(old, name_old), self.delegator.made_ino(new, name_new)):
            if ino is not None:  # (before the call: see link)
                self.delegator.reached(ino)
        replaced = await self._naming(
            (old, new),
            self._removing(
                lambda session: self.meta.fs_rename(
                    old, name_old, new, name_new, flags, session or self._author()
                )
            ),
        )
        if not flags & RENAME_EXCHANGE:  # (an exchange leaves both names where they are)
            self.dir_names.removed(old, name_old)
            self.dir_names.added(new, name_new)
        self.delegator.noted(old)
        if new != old:
            self.delegator.noted(new)
        await self._unlinked(replaced)

    async def forget(self, inode_list: Sequence[tuple[int, int]]) -> None:
        gone = []
        for inode, count in inode_list:
            ino = self.inodes.to_meta(inode)
            left = self.lookups.get(ino, 0) - count
            if left > 0:
                self.lookups[ino] = left
                continue
            self.lookups.pop(ino, None)
            self.names.pop(ino, None)
            self.seen.pop(ino, None)
            self.paged.discard(ino)
            if ino in self.orphans and ino not in self.files:
                gone.append(ino)
            else:
                self.holds.changed(ino)  # the next batch drops the hold
        if gone:
            await self._forget_orphans(gone)

    async def _forget_orphans(self, inos: list[int]) -> None:
        """Delete unlinked inodes nobody here uses any more, dropping this mount's holds on
        them (never raises: forget can't)."""
        for ino in inos:
            await self.releasing.wait(ino)
        if self.holds.enabled:  # made in a delegated directory: into its batch
            batched = [ino for ino in inos if self.delegator.forgotten(ino)]
            if batched:
                self.holds.dropped(batched)
                self.orphans.difference_update(batched)
                inos = [ino for ino in inos if ino not in batched]
                if not inos:
                    return
        try:
            if self.holds.enabled:
                await self.meta.fs_forget(inos, self.session)
                self.holds.dropped(inos)
            else:
                await self.meta.fs_forget(inos)
            self.orphans.difference_update(inos)
        except Exception as exc:
            log.warning("could not remove orphaned inodes %s: %s", inos, exc)

    async def drop_orphans(self) -> None:
        """Tell the kernel which entries it caches were deleted elsewhere (the meta role
        keeps them only because this mount holds them): the kernel drops such an entry
        and marks its inode unlinked, so when nothing uses it (no open file, working
        directory or bind mount: a mounted-on entry is refused) it forgets the inode, and
        ``forget`` deletes it. Without this, a file deleted on another node would keep its
        space for as long as this kernel happened to cache it. Called with the heartbeat."""
        if not self.holds.enabled:
            return
        for ino in await self.meta.session_orphans(self.session):
            self.orphans.add(ino)
            where = self.names.pop(ino, None)
            if where is not None and self.lookups.get(ino):
                pyfuse3.invalidate_entry_async(where[0], where[1], deleted=ino, ignore_enoent=True)
            elif not self._referenced(ino):
                self.holds.changed(ino)

    # -- the coherent cache (see coherence.py) -----------------------------------------------

    async def listen(self) -> None:
        """Poll the meta role for invalidations, for the mount's life; while the polls are
        answered, the kernel keeps what it is told for the lease. Never raises."""
        if self.cache.lease <= 0:
            return
        try:
            with self._listening:
                send, receive = trio.open_memory_channel[list[KernelCall]](KERNEL_QUEUE)
                async with trio.open_nursery() as nursery:
                    nursery.start_soon(self._tell_kernel, receive)
                    await self._listen(send)
        finally:
            self._listened.set()

    async def stop_listening(self) -> None:
        """Before unmounting: no invalidation may be on its way into a closing session."""
        self._listening.cancel()
        if self.cache.lease > 0:
            await self._listened.wait()

    async def _tell_kernel(self, receive: trio.MemoryReceiveChannel[list[KernelCall]]) -> None:
        """The kernel is told in order, in a task of its own: an invalidation of an entry
        waits in the kernel for the requests in flight on its directory, and the polls
        (which carry this mount's acknowledgements) must not wait with it."""
        async for calls in receive:
            await run_in_thread(calls)

    async def _listen(self, kernel: trio.MemorySendChannel[list[KernelCall]]) -> None:
        acked = 0  # the meta role's count of events queued for us, as far as handled
        while True:
            session = self.session
            sent = time.monotonic()
            try:
                with trio.fail_after(POLL_WAIT + POLL_MARGIN):
                    answer = await self.meta.session_listen(
                        session, self.cache.lease, POLL_WAIT, acked
                    )
            except MethodNotFound:
                log.warning(
                    "the meta role sends no invalidations (an older release): the "
                    "kernel keeps entries and attributes for %gs, as before",
                    self.entry_timeout,
                )
                return
            except trio.TooSlowError:
                reason = f"no answer within {POLL_WAIT + POLL_MARGIN:g}s"
                await kernel.send(self._stop_listening(reason))
                acked = 0
                continue
            except FsError as exc:
                await kernel.send(self._stop_listening(str(exc)))
                acked = 0
                if exc.errno == errno.ESTALE and session == self.session:
                    try:
                        await self.renew_session(session)
                    except RpcError as again:
                        log.warning("could not register this mount again: %s", again)
                        await trio.sleep(RETRY_SECONDS)
                else:
                    await trio.sleep(RETRY_SECONDS)
                continue
            except (RpcError, OSError) as exc:
                await kernel.send(self._stop_listening(str(exc)))
                acked = 0
                await trio.sleep(RETRY_SECONDS)
                continue
            # Everything up to the next await is one step: nothing here trusts what an
            # event in this answer invalidates before the answer counts as heard.
            calls = self._stop_listening("") if answer.get("reset") else []
            calls += self._invalidate(answer.get("events") or [])
            self.cache.heard = sent  # it holds every event queued before the poll left
            upto = answer.get("upto")
            acked = upto if type(upto) is int else acked
            self.cache.handled = acked
            if self.cache.session != session and session == self.session:
                if not self.cache.handed_out:
                    log.info(
                        "listening for invalidations: the kernel keeps entries and "
                        "attributes for up to %gs",
                        self.cache.lease,
                    )
                self.cache.session = session
            if calls:
                await kernel.send(calls)

    def _stop_listening(self, reason: str) -> list[KernelCall]:
        """The stream of invalidations broke (``reason``) or the meta role said reset: no
        more long timeouts, and what the kernel may keep for long is to be taken back (the
        calls returned, for the kernel's task)."""
        if self.cache.session is not None and reason:
            log.warning(
                "invalidations from the meta role stopped (%s): the kernel's "
                "caches are dropped, and kept short until they resume",
                reason,
            )
        entries = self.cache.stop()
        self.delegator.end_all()
        self.known.clear()
        self.maps.clear()
        self.listings.clear()
        if not self.cache.handed_out:
            return []
        self.cache.handed_out = False
        self.dir_attrs.clear()
        self.no_capability.clear()
        calls: list[KernelCall] = [
            ("inode", self.inodes.to_kernel(ino), True) for ino in list(self.lookups)
        ]
        calls += [("entry", parent, name) for parent, name in entries]
        return calls

    def _invalidate(self, events: list[Any]) -> list[KernelCall]:
        """Another mount changed what this mount may have cached: from now on nothing here
        trusts what it knew before (``cache.changes`` moves: no open or listing is answered
        from memory, no answer in flight is kept long); returns what the kernel must be
        told. A file's changed contents drop its cached pages, unless it is open here
        (what an open file shows changes at its next open, as before: close-to-open)."""
        if not events:
            return []
        self.cache.received(len(events))
        calls: list[KernelCall] = []
        for event in events:
            if isinstance(event, list) and len(event) == 3 and event[0] == "r":
                self.delegator.recall(event[1], event[2])  # another mount wants it
                continue
            if not (isinstance(event, list) and len(event) == 3 and type(event[1]) is int):
                log.warning(
                    "the meta role sent an invalidation this mount does not know: %r", event
                )
                continue
            kind, ino, arg = event
            self.dir_attrs.pop(ino, None)
            self.known.pop(ino, None)
            if kind == "i":
                self.maps.drop(ino)
                data = self.files.get(ino)
                if data is not None:
                    data.rows_stale = True
            known = ino in self.lookups or ino == self.inodes.root
            if kind == "i" and arg:
                self.paged.discard(ino)
            if kind == "i":
                self.no_capability.pop(ino, None)
                if known:
                    attr_only = not arg or ino in self.files
                    calls.append(("inode", self.inodes.to_kernel(ino), attr_only))
            elif kind == "e" and isinstance(arg, bytes):
                parent = self.inodes.to_kernel(ino)
                self.cache.entries.pop((parent, arg), None)
                if known:
                    calls.append(("entry", parent, arg))
        return calls

    async def _hold(self, session: str, add: list[int], drop: list[int]) -> bool:
        """``session.hold`` in requests of at most HOLD_BATCH inodes each way: a kernel may
        cache far more inodes than one request may name (a mount registering again sends
        them all). False when the meta role keeps no holds (holds are off from then on)."""
        for start in range(0, max(len(add), len(drop)), HOLD_BATCH):
            if not await self.meta.session_hold(
                session, add[start : start + HOLD_BATCH], drop[start : start + HOLD_BATCH]
            ):
                return False
        return True

    async def sync_holds(self) -> None:
        """Bring the meta role's holds for this mount in line with what the kernel
        references, every SYNC_SECONDS (see holds.py); runs for the mount's life."""
        while True:
            await trio.sleep(SYNC_SECONDS)
            await self.send_holds()

    async def send_holds(self) -> None:
        """One batch of holds to add and drop, if anything changed (never raises: a
        failed batch is sent again with the next)."""
        if not self.holds.enabled:
            return
        add, drop = self.holds.batch()
        if not add and not drop:
            return
        session = self.session
        try:
            if await self._hold(session, add, drop):
                self.holds.applied(add, drop)
        except FsError as exc:
            self.holds.failed(add, drop)
            if exc.errno == errno.ESTALE:  # registering again holds everything anew
                try:
                    await self.renew_session(session)
                except RpcError as again:
                    log.warning("could not register this mount again: %s", again)
            else:
                log.warning("could not update this mount's holds: %s", exc)
        except RpcError as exc:
            self.holds.failed(add, drop)
            log.warning("could not update this mount's holds: %s", exc)

    # -- directories ----------------------------------------------------------------------------

    @fuse_errors
    async def opendir(self, inode: int, ctx: pyfuse3.RequestContext) -> int:
        ino = self.inodes.to_meta(inode)
        # (with the session: a directory delegated to this mount is not recalled by it)
        attr = self._known(ino) or await self.meta.fs_getattr(ino, self._ask().session)
        if not stat.S_ISDIR(attr["mode"]):
            raise pyfuse3.FUSEError(errno.ENOTDIR)
        fh = self._handle_number()
        self.dirs[fh] = Listing(
            functools.partial(self._listing, ino), READDIR_PAGE, self.kept_listings
        )
        self.dir_inodes[fh] = inode
        return fh

    @fuse_errors
    async def readdir(self, fh: int, start_id: int, token: pyfuse3.ReaddirToken) -> None:
        listing = self.dirs[fh]
        after = start_id
        parent_inode = self.dir_inodes[fh]
        while rows := await listing.take(after):
            ask = listing.token
            for i, row in enumerate(rows):
                if not pyfuse3.readdir_reply(
                    token, row[0], self._listed(row, ask, parent_inode), row[1]
                ):
                    listing.keep(rows[i:], after)
                    return
                self._count_lookup(row[2], parent_inode, row[0])
                after = row[1]

    async def releasedir(self, fh: int) -> None:
        listing = self.dirs.pop(fh, None)
        self.dir_inodes.pop(fh, None)
        if listing is not None:
            listing.drop()

    async def _listing(self, ino: int, after: int) -> list:
        """A page of the directory as flat rows (see ``_listed``), with its Ask: from a
        listing kept while nothing could change it (dircache.py), or from the meta role."""
        ask = self._ask()
        stamp = (self._changes, ask.changes, ask.session)
        if ask.session is not None:
            kept = self.listings.page(ino, after, READDIR_PAGE, stamp)
            if kept is not None:
                return kept
        rows = await self.meta.fs_readdir(ino, after, READDIR_PAGE, ask.session)
        self.listings.fetched(ino, after, rows, READDIR_PAGE, ask, stamp)
        whole = self.listings.names(ino) if len(rows) < READDIR_PAGE else None
        if whole is not None:
            self.dir_names.learn(ino, *whole)
        page = Page(rows)
        page.token = ask
        return page

    def _listed(self, row: list, ask: Ask | None, parent_inode: int) -> pyfuse3.EntryAttributes:
        """As ``_entry``, for a listing's row: [name, cookie, ino, mode, ...ATTR_KEYS]."""
        ino = row[2]
        data = self.files.get(ino)
        entry_timeout, attr_timeout = self.cache.entry(ask, parent_inode, row[0])
        entry = entry_from_values(
            row,
            self.inodes,
            entry_timeout=entry_timeout,
            attr_timeout=attr_timeout,
            size=None if data is None else data.size,
            first=2,
        )
        if stat.S_ISREG(row[3]):
            self.seen[ino] = (entry.st_size, row[11])
        if attr_timeout > KNOWN_MARGIN and data is None:
            self._remember(row, ask)
        return entry

    @fuse_errors
    async def fsyncdir(self, fh: int, datasync: bool) -> None:
        """Every namespace change was committed before it was answered; the meta role puts
        it on disk within its group-commit period, and at once for this."""
        await self.meta.fs_sync()

    # -- files ------------------------------------------------------------------------------

    def _handle_number(self) -> int:
        """Numbers for open files and open directories alike (never reused)."""
        fh = self._next_fh
        self._next_fh += 1
        return fh

    def _new_handle(self, ino: int, flags: int) -> int:
        fh = self._handle_number()
        self.handles[fh] = ino
        if flags & os.O_ACCMODE != os.O_RDONLY:
            self.writers[fh] = self.files[ino].failures
        return fh

    def _file(self, attr: Mapping[str, Any]) -> FileData:
        data = self.files.get(attr["ino"])
        if data is None:
            data = FileData(attr["ino"], self.io, attr["size"], attr["size"])
            self.files[attr["ino"]] = data
        return data

    @fuse_errors
    async def open(self, inode: int, flags: int, ctx: pyfuse3.RequestContext) -> pyfuse3.FileInfo:
        ino = self.inodes.to_meta(inode)
        self.no_capability.pop(ino, None)
        await self.releasing.wait(ino)  # our new hold must not be dropped by an older release
        await self.unpaging.wait(ino)  # pages of dropped writes must be gone before keep_cache
        local = self._open_here(ino, flags)
        if local is not None:
            return local
        # A file not open here, opened to be read: its first pieces' map comes with the
        # answer (the first read needs it). Only then: a file this mount has open may
        # commit while the answer is on its way, and an older map must not replace a
        # newer one; with nothing of it here, nothing here can commit it meanwhile.
        reading = flags & os.O_ACCMODE != os.O_WRONLY and not flags & os.O_TRUNC
        pieces = OPEN_PIECES if reading and ino not in self.files else 0
        ask = self._ask()
        attr = await self._open_attr(ino, pieces)  # close-to-open: ask the meta role
        data = self.files.get(ino)
        known_map = attr.get("chunks") if data is None else None
        # The kernel's pages of this file must go when its bytes changed under them. Not by
        # invalidate_inode(attr_only=False) from here: dropping pages waits for reads in
        # flight on them, which wait for this event loop, which would be waiting in that
        # call. The answer's keep_cache=False has the kernel drop them itself, in the
        # opener's context, once this handler has returned (it would also drop them on
        # its own when it next fetches attributes and sees a new size or mtime, libfuse's
        # auto_inval_data; this does not wait for that); the attributes (no page locks)
        # are dropped here.
        keep_pages = True
        if data is None or not data.has_unsaved:
            if data is not None:
                data.size = data.committed_size = attr["size"]
                data.forget_rows()
            if self.seen.get(ino) not in (None, (attr["size"], attr["mtime_ns"])):
                pyfuse3.invalidate_inode(inode, attr_only=True)  # changed elsewhere
                keep_pages = False
        data = self._file(attr)
        if known_map is not None:
            data.know_rows(known_map, pieces)
        data.handles += 1
        if flags & os.O_TRUNC and (attr["size"] or data.has_unsaved):
            # The kernel hands O_TRUNC to open (atomic_o_trunc) instead of sending a
            # setattr: truncating is ours to do, and cached pages must go with the bytes.
            try:
                attr = await data.truncate(0)
            except BaseException:
                data.handles -= 1
                with trio.CancelScope(shield=True):
                    try:
                        await self.meta.fs_release(ino, self.session)
                    except RpcError:
                        pass
                raise
            pyfuse3.invalidate_inode(inode, attr_only=True)
            keep_pages = False
        self.seen[ino] = (attr["size"], attr["mtime_ns"])
        self._remember(attr, ask)
        return pyfuse3.FileInfo(
            fh=self._new_handle(ino, flags),
            keep_cache=keep_pages,
            direct_io=bool(flags & os.O_DIRECT),
        )

    def _open_here(self, ino: int, flags: int) -> pyfuse3.FileInfo | None:
        """An open for reading answered without the meta role, when close-to-open needs
        nothing from it: the mount knows the file's attributes as they are now (``_known``:
        watched, and nothing changed since), the kernel was told exactly those (so its
        cached pages are of this version: it drops them itself when told a new size or
        mtime), and the meta role already holds the inode for this mount (the kernel
        references it; an unlink elsewhere keeps it while open here). A file read again
        is then served by the page cache with no round trip at all. Only for a file that
        was open here since the kernel last looked it up (``paged``), or whose whole map
        the mount keeps for these attributes (keptmaps.py: from the lookup that just
        reached the meta role, which also brought the hold): a file whose pages are
        surely gone and whose map is not here is better opened by the meta role, whose
        answer brings the map of its first pieces. Anything else: None, and the open asks
        the meta role as always."""
        if (
            flags & os.O_ACCMODE != os.O_RDONLY
            or ino in self.files
            or ino not in self.holds.held
            or not self.holds.enabled
        ):
            return None
        attr = self._known(ino)
        if attr is None or self.seen.get(ino) != (attr["size"], attr["mtime_ns"]):
            return None
        version = version_of(attr)
        if ino not in self.paged and not self.maps.covers(ino, version, self.io.chunk_size):
            return None
        data = self._file(attr)
        data.rows.update(self.maps.take(ino, version))
        data.handles += 1
        return pyfuse3.FileInfo(
            fh=self._new_handle(ino, flags), keep_cache=True, direct_io=bool(flags & os.O_DIRECT)
        )

    @fuse_errors
    async def create(
        self, parent_inode: int, name: bytes, mode: int, flags: int, ctx: pyfuse3.RequestContext
    ) -> tuple[pyfuse3.FileInfo, pyfuse3.EntryAttributes]:
        attr, ask = await self._make(
            parent_inode, name, stat.S_IFREG | (mode & 0o7777), ctx, hold=True
        )
        self._file(attr).handles += 1
        # A new file has no xattrs: the kernel's security.capability query before the
        # first write needs no round trip (see getxattr).
        self._no_capability(attr["ino"])
        entry = self._looked_up(attr, ask, parent_inode, name)
        return pyfuse3.FileInfo(
            fh=self._new_handle(attr["ino"], flags),
            keep_cache=True,
            direct_io=bool(flags & os.O_DIRECT),
        ), entry

    @fuse_errors
    async def read(  # type: ignore[override]  # pyfuse3 takes any buffer; its stub says bytes
        self, fh: int, off: int, size: int
    ) -> bytes | memoryview:
        return await self.files[self.handles[fh]].read(off, size)

    @fuse_errors
    async def write(self, fh: int, off: int, buf: bytes) -> int:
        data = self.files[self.handles[fh]]
        self._tell_lost(fh, data)
        uncommitted = sum(max(0, f.size - f.committed_size) for f in self.files.values())
        await self.quota.check(off + len(buf) - data.size, uncommitted)
        try:
            await data.write(off, buf)
        except FsError:
            if fh in self.writers:  # (this is how it heard of a failure, if one dropped writes)
                self.writers[fh] = data.failures
            raise
        return len(buf)

    @fuse_errors
    async def flush(self, fh: int) -> None:
        """close(): a handle open for writing stores the file's writes and hears of any
        failure that dropped some; a read-only handle has nothing to store, and its close
        never fails because of another handle's writes."""
        if fh in self.writers:
            ino = self.handles[fh]
            owed = self.delegator.owed(self._directory_of(ino))
            await self._stored(fh)
            if self.files[ino].generation:  # written while open here
                await self.delegator.send_owed(owed)

    def _directory_of(self, ino: int) -> int | None:
        """The directory ``ino`` was made in under a grant, or the one the kernel last
        looked it up in."""
        directory = self.delegator.made_in.get(ino)
        if directory is None and ino in self.names:
            directory = self.inodes.to_meta(self.names[ino][0])
        return directory

    @fuse_errors
    async def fsync(self, fh: int, datasync: bool) -> None:
        """The file's data on R chunk servers and its commit, with every change this mount
        made before it (its create, renames), on the meta role's disk; every chunk this
        mount put buffered (this file's, written before, and others') on its servers'
        disks."""
        await self._stored(fh, durable=True)
        await self.meta.fs_sync()

    async def _stored(self, fh: int, durable: bool = False) -> None:
        """Everything written to the file is stored and committed, or raise (a failure that
        dropped writes: after the kernel forgot their pages, and once per handle)."""
        ino = self.handles[fh]
        data = self.files[ino]
        try:
            await data.flush(durable)
        except FsError:
            if fh in self.writers:
                self.writers[fh] = data.failures
            raise
        finally:
            await self.unpaging.wait(ino)
        self._tell_lost(fh, data)

    async def release(self, fh: int) -> None:
        ino = self.handles.pop(fh)
        self.writers.pop(fh, None)
        data = self.files[ino]
        data.handles -= 1
        if data.handles:
            return
        if ino in self.lookups:
            self.paged.add(ino)
        try:
            await data.flush()  # normally a no-op: close() already flushed
        except Exception as exc:
            log.error(
                "inode %d: data written but not stored when the file was released: %s", ino, exc
            )
        if not data.has_unsaved:
            del self.files[ino]
            self._keep_map(data)
        if self.holds.enabled and self.lookups.get(ino):
            return  # the kernel still references it: the hold stays (see holds.py)
        # The hold is dropped without the kernel waiting for it: nothing the caller sees
        # depends on it (close() has returned with FLUSH), only when an orphan's space is
        # freed. What would see it out of order waits for it instead: an open of the same
        # inode (its new hold must come after), forgetting orphans, unmounting.
        self.releasing.start(ino, functools.partial(self._release_hold, ino))

    def _keep_map(self, data: FileData) -> None:
        """Keep the chunk map of a file read here and closed (keptmaps.py, invariant 1)."""
        attr = self._known(data.ino)
        if (
            attr is None
            or data.generation
            or data.rows_stale
            or not data.rows
            or data.size != attr["size"]
            or data.committed_size != attr["size"]
        ):
            self.maps.drop(data.ino)
            return
        self.maps.keep(data.ino, version_of(attr), data.rows)

    async def _release_hold(self, ino: int) -> None:
        try:  # an orphan nobody else holds is deleted now
            deleted = await self.meta.fs_release(ino, self.session)
            self.holds.dropped([ino])
            if deleted:
                self.orphans.discard(ino)
        except Exception as exc:
            log.warning("could not release inode %d: %s", ino, exc)

    # -- extended attributes ------------------------------------------------------------------

    @fuse_errors
    async def getxattr(self, inode: int, name: bytes, ctx: pyfuse3.RequestContext) -> bytes:
        """The kernel asks for security.capability before every write() (to drop file
        capabilities on modification), which made each write wait for a meta RPC. Its
        absence is remembered per inode for the attribute timeout, like any attribute, and
        forgotten at open (close-to-open) and when this mount changes the inode's xattrs."""
        ino = self.inodes.to_meta(inode)
        capability = name == b"security.capability"
        if capability and self.no_capability.get(ino, 0.0) > time.monotonic():
            raise FsError(errno.ENODATA, "no such attribute")
        try:
            return await self.meta.fs_getxattr(ino, name)
        except FsError as exc:
            if capability and exc.errno == errno.ENODATA:
                self._no_capability(ino)
            raise

    def _no_capability(self, ino: int) -> None:
        if len(self.no_capability) > 100_000:
            self.no_capability.clear()
        self.no_capability[ino] = time.monotonic() + self.attr_timeout

    @fuse_errors
    async def setxattr(
        self, inode: int, name: bytes, value: bytes, ctx: pyfuse3.RequestContext
    ) -> None:
        self.no_capability.pop(self.inodes.to_meta(inode), None)
        await self.meta.fs_setxattr(self.inodes.to_meta(inode), name, value, 0, self._author())

    @fuse_errors
    async def listxattr(self, inode: int, ctx: pyfuse3.RequestContext) -> list[bytes]:
        return await self.meta.fs_listxattr(self.inodes.to_meta(inode))

    @fuse_errors
    async def removexattr(self, inode: int, name: bytes, ctx: pyfuse3.RequestContext) -> None:
        self.no_capability.pop(self.inodes.to_meta(inode), None)
        await self.meta.fs_removexattr(self.inodes.to_meta(inode), name, self._author())

    # -- the volume ---------------------------------------------------------------------------

    @fuse_errors
    async def statfs(self, ctx: pyfuse3.RequestContext) -> pyfuse3.StatvfsData:
        info = await self.quota.statfs()
        s = pyfuse3.StatvfsData()
        s.f_bsize = s.f_frsize = 4096
        s.f_blocks = info["capacity"] // 4096
        s.f_bfree = s.f_bavail = max(0, info["capacity"] - info["used"]) // 4096
        s.f_files = FILES_LIMIT
        s.f_ffree = s.f_favail = FILES_LIMIT - info["inodes"]
        s.f_namemax = 255
        return s

    async def flush_all(self) -> None:
        """Commit every open file's pending writes, and let the releases on their way
        finish (before unmounting)."""
        for ino, data in list(self.files.items()):
            try:
                await data.flush(durable=True)
            except Exception as exc:
                log.error("inode %d: pending writes could not be stored: %s", ino, exc)
        for ino in self.releasing:
            await self.releasing.wait(ino)
        try:  # (unmount: what was answered is on disk before the mount goes)
            await self.io.data.sync()
        except Exception as exc:
            log.error("chunks of closed files could not be confirmed on disk: %s", exc)
        try:
            await self.meta.fs_sync()
        except Exception as exc:
            log.error("the meta role could not confirm every change is on disk: %s", exc)


def _attribute_changes(
    attr: pyfuse3.EntryAttributes, fields: pyfuse3.SetattrFields
) -> dict[str, int]:
    """A SETATTR's changes but the size, as fs.setattr takes them."""
    changes: dict[str, int] = {}
    if fields.update_mode:
        changes["mode"] = attr.st_mode
    if fields.update_uid:
        changes["uid"] = attr.st_uid
    if fields.update_gid:
        changes["gid"] = attr.st_gid
    if fields.update_atime:
        changes["atime_ns"] = attr.st_atime_ns
    if fields.update_mtime:
        changes["mtime_ns"] = attr.st_mtime_ns
    return changes
