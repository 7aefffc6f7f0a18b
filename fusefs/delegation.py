"""Directories this mount answers itself: the mount's half of delegated directory
operations (storaged/meta/delegations.py is the meta role's; docs/delegations.md the
design).

A mount that makes many changes in one directory asks the meta role to delegate it
(``dir.delegate``). While it holds the directory, a create, mknod or symlink in it, an
unlink of a name it made there and a rename of such a name within it are answered here
at once, recorded in the directory's *batch*, and sent in one ``fs.apply`` (one
transaction) before anything that could depend on them, or within ``FLUSH_SECONDS``.

Invariants (the mount's side):

1. A change is answered here only while ``usable``: the directory is held under this
   mount's current session, no recall or reset was heard, every event the meta role had
   queued for this mount before the grant has been dealt with (``upto``: a change of
   the directory by a mount that does not listen, or by the CLI, may be among them), the
   coherent cache trusts the grant's answer (``KernelCache.left``: listening, polls
   answered lately, nothing arrived since), every name of the directory is known
   (dirnames.py), and the grant has inode numbers left. Anything else goes to the meta
   role as before.
2. The meta role sees this mount's changes in the order they were answered: every other
   call to it (but the few in ``INDEPENDENT_OF_BATCHES``) waits until every batch
   answered before it is applied (``MetaClient.before_call`` is ``send_all``), and one
   batch per directory is in flight at a time. So a close of a written file (its
   commit), an fsync, an fsyncdir, an unmount never return before the batches they
   depend on are applied: those reach the meta role (and its disk) first. A close's
   commit may ride *in* the last of them (``commit``): applied after its operations, in
   the same transaction, one round trip for both.
3. Only inodes made under the grant, with their only name in the directory, are
   unlinked, renamed or have their attributes set (chmod, chown, utimens) here: nobody
   else can have reached them (any other mount must recall the directory to look a name
   up in it), so their link count is known, and what their attributes are
   (fusefs/ownattrs.py).
4. A batch the meta role refuses (the grant was revoked: this mount did not answer a
   recall in time) or whose outcome is unknown (the connection broke) is reported at
   ERROR, operation by operation, and the directory's names and the kernel's entries
   for them are forgotten, so the next lookups ask the meta role.
5. A grant starts with a small range of inode numbers (1,024); once half of what it has
   left is used, the mount asks for more (``dir.extend``, in the background) and goes on
   answering meanwhile, so a directory of any size stays delegated while the numbers
   given back unused stay few. A grant whose numbers ran out with no extension coming
   answers nothing more and is given back.

What it bounds: an answered create, unlink, rename or attribute change reaches the meta
role within ``FLUSH_SECONDS`` (0.5 s) while the mount runs, and before the close of a
file written in the directory returns (its commit carries the batch, or ``send_owed``
sends it); it is on the meta role's disk within its group commit period
(storaged/meta/groupcommit.py, 50 ms) after that.
"""

from __future__ import annotations

import errno
import logging
import stat
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any, cast

import trio

from storaged.metaclient import MetaClient
from storaged.rpc import FsError, MethodNotFound, RpcError
from storaged.rpc.errors import error_from_wire

from .coherence import POLL_MARGIN, POLL_WAIT, Ask, KernelCache
from .dirnames import KnownNames

log = logging.getLogger("fusefs")

ASK_AFTER = 8  # changes in one directory within ASK_WINDOW before it is asked for
ASK_WINDOW = 2.0
FLUSH_SECONDS = 0.5  # an answered change reaches the meta role within this
IDLE_SECONDS = 5.0  # a directory with no change for this long is given back
BATCH_MAX = 1000  # operations in one batch (the meta role's fs.apply limit)
REFUSED_SECONDS = 2.0  # a directory refused is not asked for again before this
TICK = 0.1
RESEND_TRIES = 3  # sends of one batch while the session changes under it
# what a batch's operations are, for the log (``f``, a forget, is never reported)
OPERATION_NAMES = {"c": "create of", "u": "unlink of", "m": "rename of", "a": "attributes of"}


@dataclass
class Held:
    """One delegated directory: its grant, its batch, what this mount made in it."""

    directory: int
    session: str
    grant: str
    next_ino: int
    last_ino: int
    attr: dict[str, Any]  # the directory's attributes as this mount's answers left them
    ask: Ask  # local answers are trusted as far as this one is (see usable)
    used: float  # monotonic time of the last local answer
    upto: int  # events queued for this session before the grant (see usable)
    ops: list[list[Any]] = field(default_factory=list)
    first_op: float = 0.0  # monotonic time of the oldest operation not sent
    last_t: int = 0  # the time (ns) of the newest change answered here
    made: dict[bytes, int] = field(default_factory=dict)  # name -> inode made here
    name_of: dict[int, bytes] = field(default_factory=dict)  # ``made`` the other way round
    ended: bool = False  # recalled, given back or lost: nothing answered from it
    pinned: bool = False  # the directory's names are pinned in dirnames.py
    renewing: bool = False  # an fs.apply to renew ``ask`` is on its way
    spare: list[tuple[int, int]] = field(default_factory=list)  # numbers from extensions
    extending: bool = False  # a dir.extend is on its way
    range_size: int = 0  # how many numbers the last range had (half used: extend)
    fresh: bool = True  # ``attr`` is the directory as it is (see noted)
    sending: trio.Lock = field(default_factory=trio.Lock)
    # the meta role takes attribute changes in a batch (its grant says so: an older
    # release refuses a batch holding one, whole)
    sets_attributes: bool = False
    recorded: int = 0  # operations ever recorded in ``ops``
    taken: int = 0  # of those, how many were taken out of it to be sent


class Delegator:
    def __init__(
        self,
        meta: MetaClient,
        cache: KernelCache,
        names: KnownNames,
        session: Callable[[], str],
        lost: Callable[[int, list[bytes], list[int]], None],
    ) -> None:
        self.meta = meta
        self.cache = cache
        self.names = names
        self._session = session
        # (directory, names, inodes whose attributes changed): the kernel must forget
        # them (invariant 4)
        self._lost = lost
        self.enabled = True  # False: the meta role grants none (an older release)
        self.extends = True  # False: the meta role extends no grant (an older release)
        self.held: dict[int, Held] = {}
        self.made_in: dict[int, int] = {}  # inode made under a grant -> its directory
        self._recent: dict[int, list[float]] = {}
        self._refused: dict[int, float] = {}
        self._asking: set[int] = set()
        self._nursery: trio.Nursery | None = None

    # -- asking ---------------------------------------------------------------------------

    def noted(self, directory: int) -> None:
        """This mount changed ``directory`` through the meta role: after ASK_AFTER such
        changes within ASK_WINDOW, ask for it. A held directory's attributes as kept here
        are stale now (a mkdir changed its link count): the kernel's next GETATTR asks."""
        held = self.held.get(directory)
        if held is not None:
            held.fresh = False
        if not self.enabled or self._nursery is None or held is not None:
            return
        now = time.monotonic()
        recent = [t for t in self._recent.get(directory, ()) if t > now - ASK_WINDOW]
        recent.append(now)
        self._recent[directory] = recent
        if len(self._recent) > 1024:
            self._recent = {directory: recent}
        if (
            len(recent) < ASK_AFTER
            or directory in self._asking
            or self._refused.get(directory, 0.0) > now
            or self.cache.session is None
            or not self.names.knows(directory)
        ):
            return
        self._asking.add(directory)
        self._nursery.start_soon(self._ask, directory)

    async def _ask(self, directory: int) -> None:
        try:
            session = self._session()
            if self.cache.session != session:
                return
            ask = self.cache.ask(session)
            try:
                grant = await self.meta.dir_delegate(session, directory)
            except MethodNotFound:
                self.enabled = False
                log.info("the meta role delegates no directories (an older release)")
                return
            except (FsError, RpcError) as exc:
                log.debug("directory %d not delegated: %s", directory, exc)
                grant = None
            if grant is None:
                self._refused[directory] = time.monotonic() + REFUSED_SECONDS
                return
            self.adopt(directory, session, grant, ask)
        finally:
            self._asking.discard(directory)

    def adopt(self, directory: int, session: str, grant: Mapping[str, Any], ask: Ask) -> None:
        """``directory`` is delegated to this mount under ``session`` (a dir.delegate
        answer, or a mkdir's: a directory this mount just made comes delegated)."""
        if not self.enabled or directory in self.held:
            return
        self._recent.pop(directory, None)
        held = self.held[directory] = Held(
            directory,
            session,
            grant["grant"],
            grant["first"],
            grant["last"],
            _plain(grant["dir"]),
            ask,
            time.monotonic(),
            int(grant.get("upto", 0)),
        )
        held.range_size = held.last_ino - held.next_ino + 1
        held.sets_attributes = "a" in grant.get("ops", ())
        self._pin(held)  # now, if it can be: an invalidation may come any moment

    # -- answering ------------------------------------------------------------------------

    def usable(self, directory: int) -> Held | None:
        """The grant to answer a change in ``directory`` from, or None (invariant 1)."""
        held = self.held.get(directory)
        if (
            held is None
            or held.ended
            or held.next_ino > held.last_ino
            or len(held.ops) >= BATCH_MAX
            or held.session != self._session()
            or self.cache.session != held.session
            or time.monotonic() - self.cache.heard > POLL_WAIT + POLL_MARGIN
            or self.cache.handled < held.upto
        ):
            return None
        if not held.pinned and not self._pin(held):
            held.ended = True  # a name may have changed before the grant: not ours
            self._start(held, release=True)
            return None
        if not self.names.knows(directory):
            return None
        if self.cache.left(held.ask) <= 0 and not held.renewing:
            # An invalidation about anything, or the lease running out, makes answers
            # under ``ask`` short-lived (the kernel keeps them 0 s): an empty batch
            # renews it (the meta role watches the directory again for this mount).
            held.renewing = True
            self._start(held, release=False, renew=True)
        return held

    def _pin(self, held: Held) -> bool:
        """Once the events queued before the grant are dealt with, keep the directory's
        names (known now, so exact: nobody else may change them while it is held)
        through invalidations about anything else (dirnames.py, invariant 5)."""
        if self.cache.handled >= held.upto and self.names.pin(held.directory):
            held.pinned = True
        return held.pinned

    def create(
        self,
        held: Held,
        name: bytes,
        mode: int,
        uid: int,
        gid: int,
        rdev: int,
        target: bytes | None,
        hold: bool,
    ) -> dict[str, int]:
        """A new node ``name`` in the held directory, made the way the meta role makes
        one (storaged/meta/namespace.py make_node); returns its attributes."""
        t = time.time_ns()
        if held.attr["mode"] & stat.S_ISGID:
            gid = held.attr["gid"]
        ino = held.next_ino
        held.next_ino += 1
        self._numbers_used(held)
        self._record(held, ["c", name, ino, mode, uid, gid, rdev, target, t, hold], t)
        held.made[name] = ino
        held.name_of[ino] = name
        self.made_in[ino] = held.directory
        self.names.added(held.directory, name, renew=held.ask)
        size = len(target) if target is not None else 0
        return {
            "ino": ino,
            "mode": mode,
            "nlink": 1,
            "uid": uid,
            "gid": gid,
            "rdev": rdev,
            "size": size,
            "stored": 0,
            "atime_ns": t,
            "mtime_ns": t,
            "ctime_ns": t,
        }

    def _numbers_used(self, held: Held) -> None:
        """Go on to the next range of numbers when this one is used up, and ask for more
        once half of what is left was used (invariant 5)."""
        if held.next_ino > held.last_ino and held.spare:
            held.next_ino, held.last_ino = held.spare.pop(0)
        left = held.last_ino - held.next_ino + 1 + sum(b - a + 1 for a, b in held.spare)
        if (
            left * 2 < held.range_size
            and not held.extending
            and self.extends
            and self._nursery is not None
        ):
            held.extending = True
            self._nursery.start_soon(self._extend, held)

    async def _extend(self, held: Held) -> None:
        try:
            numbers = await self.meta.dir_extend(held.session, held.directory, held.grant)
        except MethodNotFound:
            self.extends = False
            log.info("the meta role extends no grants (an older release)")
            numbers = None
        except RpcError as exc:  # (the grant runs out, and is given back: invariant 1)
            log.debug("directory %d: no more inode numbers: %s", held.directory, exc)
            numbers = None
        finally:
            held.extending = False
        if numbers is None or held.ended:
            return
        first, last = int(numbers["first"]), int(numbers["last"])
        held.range_size = last - first + 1
        if held.next_ino > held.last_ino:
            held.next_ino, held.last_ino = first, last
        else:
            held.spare.append((first, last))

    def unlink(self, held: Held, name: bytes) -> int:
        """Unlink ``name``, which this mount made in the held directory (``held.made``);
        returns its inode, which has no name left."""
        ino = held.made.pop(name)
        held.name_of.pop(ino, None)
        t = time.time_ns()
        self._record(held, ["u", name, t], t)
        self.names.removed(held.directory, name)
        return ino

    def rename(self, held: Held, old: bytes, new: bytes) -> None:
        """Rename ``old`` (made here) to ``new`` (surely absent) within the directory."""
        ino = held.made.pop(old)
        held.made[new] = ino
        held.name_of[ino] = new
        t = time.time_ns()
        self._record(held, ["m", old, new, 0, t], t)
        self.names.removed(held.directory, old)
        self.names.added(held.directory, new, renew=held.ask)

    def settable(self, ino: int) -> Held | None:
        """The grant under which a chmod, chown or utimens of ``ino`` may be answered
        here: it was made under it and has its only name in the directory (invariant
        3), and the grant is ``usable``."""
        directory = self.made_in.get(ino)
        if directory is None:
            return None
        held = self.usable(directory)
        if held is None or not held.sets_attributes or ino not in held.name_of:
            return None
        return held

    def set_attributes(self, held: Held, ino: int, changes: dict[str, int], t: int) -> None:
        """Record a change of ``ino``'s attributes (``settable`` said ``held``) made at
        ``t`` (its ctime; a time of -1 means ``t``). The directory is not changed."""
        self._append(held, ["a", held.name_of[ino], ino, changes, t])
        held.used = time.monotonic()

    def forgotten(self, ino: int) -> bool:
        """The kernel forgot ``ino``, an orphan: True when the held directory it was
        made in takes that into its batch (else the caller tells the meta role)."""
        directory = self.made_in.get(ino)
        held = self.held.get(directory) if directory is not None else None
        if held is None or held.ended or len(held.ops) >= BATCH_MAX:
            return False
        del self.made_in[ino]
        self._append(held, ["f", ino])  # (not a use: an idle directory still goes back)
        return True

    def _append(self, held: Held, op: list[Any]) -> None:
        held.ops.append(op)
        held.recorded += 1
        held.first_op = held.first_op or time.monotonic()

    def _record(self, held: Held, op: list[Any], t: int) -> None:
        """A change of the directory's names answered at ``t``: its mtime and ctime."""
        self._append(held, op)
        held.used = time.monotonic()
        held.attr["mtime_ns"] = held.attr["ctime_ns"] = held.last_t = t

    def reached(self, ino: int) -> None:
        """``ino`` got a name outside its directory, or lost the one in it, through the
        meta role: this mount no longer knows its link count (invariant 3)."""
        directory = self.made_in.pop(ino, None)
        held = self.held.get(directory) if directory is not None else None
        if held is not None:
            name = held.name_of.pop(ino, None)
            if name is not None:
                del held.made[name]

    def made_ino(self, directory: int, name: bytes) -> int | None:
        """The inode ``name`` names in ``directory``, when this mount made it there under
        a grant it still holds."""
        held = self.held.get(directory)
        return None if held is None else held.made.get(name)

    def dir_attr(self, directory: int) -> tuple[dict[str, Any], Ask] | None:
        """The held directory's attributes as this mount's answers left them."""
        held = self.usable(directory)
        return None if held is None or not held.fresh else (held.attr, held.ask)

    # -- sending --------------------------------------------------------------------------

    async def commit(
        self, ino: int, size: int, pieces: list[list[Any]], mtime_ns: int | None = None
    ) -> Mapping[str, Any] | None:
        """A written file's close: its commit sent along with a batch this mount owes
        (its own directory's if that has one), one round trip for both; the other
        batches go first (invariant 2). The committed attributes, or None when no batch
        is owed or the batch was not applied (the caller commits alone: fs.commit);
        raises the commit's own error."""
        directory = self.made_in.get(ino)
        held = self.held.get(directory) if directory is not None else None
        if held is None or not held.ops:
            held = next((h for h in self.held.values() if h.ops), None)
        if held is None:
            return None
        for other in list(self.held.values()):
            if other is not held and (other.ops or other.sending.locked()):
                await self._send(other)
        outcome = await self._send(held, commit=[ino, size, pieces, mtime_ns])
        if outcome is None:
            return None
        if "error" in outcome:
            raise error_from_wire(outcome["error"])
        return cast(Mapping[str, Any], outcome["attr"])

    async def send_all(self) -> None:
        """Every batch answered so far is applied when this returns (invariant 2)."""
        for held in list(self.held.values()):
            if held.ops or held.sending.locked():
                await self._send(held)

    def owed(self, directory: int | None) -> tuple[Held, int] | None:
        """A mark of what ``directory``'s batch holds now (see ``send_owed``)."""
        held = self.held.get(directory) if directory is not None else None
        return None if held is None else (held, held.recorded)

    async def send_owed(self, mark: tuple[Held, int] | None) -> None:
        """Every operation recorded in the directory before ``mark`` (``owed``) was
        applied (or reported lost) when this returns: a written file's close in it, whose
        commit did not carry them (it had nothing new to commit). Operations answered
        while the close was on its way are not waited for."""
        if mark is None:
            return
        held, recorded = mark
        if held.taken < recorded:
            await self._send(held)
        else:
            async with held.sending:  # (the batch carrying them may be on its way)
                pass

    async def give_back(self, directory: int) -> None:
        """Send the directory's batch and end the grant (before a change of the
        directory's own attributes, which the answers here depend on)."""
        held = self.held.get(directory)
        if held is not None:
            held.ended = True
            await self._send(held, release=True)

    def removed(self, directory: int) -> None:
        """This mount removed ``directory`` (rmdir): its attributes as kept here are
        wrong now (no links), and nothing can be made in it; the grant goes back."""
        held = self.held.get(directory)
        if held is not None:
            held.ended = True
            self._start(held, release=True)

    def recall(self, directory: int, grant: Any) -> None:
        """The meta role recalls ``directory`` (another mount wants it): nothing more is
        answered here from it; the batch goes out and the grant with it."""
        held = self.held.get(directory)
        if held is None or held.grant != grant:
            return
        held.ended = True
        self._start(held, release=True)

    def end_all(self, send: bool = True) -> None:
        """The stream of invalidations broke, or the session is about to change: no
        grant is answered from any more; with ``send``, each batch goes out now and its
        grant with it (else ``resend`` sends them)."""
        for held in list(self.held.values()):
            held.ended = True
            if send:
                self._start(held, release=True)

    def _start(self, held: Held, release: bool, renew: bool = False) -> None:
        if self._nursery is not None:
            self._nursery.start_soon(self._send, held, release, renew)

    async def _send(
        self,
        held: Held,
        release: bool = False,
        renew: bool = False,
        commit: list[Any] | None = None,
    ) -> dict[str, Any] | None:
        """One batch of ``held`` (never raises: a refused or lost batch is reported,
        invariant 4). Under a session other than the grant's (this mount registered
        again: the meta role restarted), the batch goes as a *reclaim*, and the grant
        with it. A batch the meta role refuses for an unknown session (it restarted and
        this mount has not registered again yet) is kept for the reclaim (``resend``).
        With ``commit`` (see ``commit``): its outcome, or None when the batch was not
        applied."""
        async with held.sending:
            if renew:
                held.renewing = False
            if self.held.get(held.directory) is not held:
                return None  # given back or lost already, by a send before this one
            ops, held.ops, held.first_op = held.ops, [], 0.0
            held.taken += len(ops)
            if not ops and not release and not held.ended and not renew and commit is None:
                return None
            for _ in range(RESEND_TRIES):
                session = self._session()
                reclaim = session != held.session
                release = release or held.ended or reclaim
                ask = self.cache.ask(session)
                try:
                    answer = await self.meta.fs_apply(
                        session, held.directory, held.grant, ops, release, reclaim, commit
                    )
                    break
                except FsError as exc:
                    if exc.errno != errno.ESTALE:
                        self._lose(held, ops, exc)
                        return None
                    if session != self._session():
                        continue  # registered again meanwhile: now as a reclaim
                    held.ops = ops + held.ops  # for the reclaim, once registered again
                    held.taken -= len(ops)
                    held.ended = True
                    held.first_op = held.first_op or time.monotonic()
                    return None
                except RpcError as exc:
                    self._lose(held, ops, exc)
                    return None
                except BaseException:
                    self._lose(held, ops, None)
                    raise
            else:
                self._lose(held, ops, FsError(errno.ESTALE, "the session kept changing"))
                return None
            outcome = answer.get("commit")
            if release:
                self._drop(held)
                return outcome
            held.attr = _plain(answer["parent"])
            held.fresh = not held.ops or held.fresh
            if held.ops:  # answered while this batch was on its way
                held.attr["mtime_ns"] = held.attr["ctime_ns"] = held.last_t
            if ask.changes == self.cache.changes and ask.sent > held.ask.sent:
                held.ask = ask  # the apply watched the directory again for this mount
            return outcome

    async def resend(self) -> None:
        """This mount registered again (a new session): every grant is the old
        session's; their batches go as reclaims, before anything else is sent."""
        for held in list(self.held.values()):
            held.ended = True
            await self._send(held, release=True)

    def _drop(self, held: Held) -> None:
        held.ended = True
        if self.held.get(held.directory) is held:
            del self.held[held.directory]
            self.names.unpin(held.directory)
        for ino in held.made.values():
            self.made_in.pop(ino, None)
        self.made_in = {i: d for i, d in self.made_in.items() if d != held.directory}

    def _lose(self, held: Held, ops: list[list[Any]], exc: BaseException | None) -> None:
        """``ops`` were answered here and are not (or may not be) in the meta role."""
        why = "refused" if isinstance(exc, FsError) else "outcome unknown"
        for op in ops:
            if op[0] != "f":
                log.error(
                    "directory %d: %s %r answered by this mount, %s by the meta role: %s",
                    held.directory,
                    OPERATION_NAMES[op[0]],
                    op[1],
                    why,
                    exc if exc is not None else "cancelled",
                )
        names = [op[1] for op in ops if op[0] != "f"] + [op[2] for op in ops if op[0] == "m"]
        self._drop(held)
        if names:
            self.names.forget(held.directory)
            self._lost(held.directory, names, sorted({op[2] for op in ops if op[0] == "a"}))

    # -- the background task ----------------------------------------------------------------

    async def run(self, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        """Send batches past FLUSH_SECONDS, give back directories idle for IDLE_SECONDS
        or out of inode numbers; runs for the mount's life."""
        async with trio.open_nursery() as nursery:
            self._nursery = nursery
            task_status.started()
            while True:
                await trio.sleep(TICK)
                now = time.monotonic()
                for held in list(self.held.values()):
                    if held.sending.locked():
                        continue
                    out = held.next_ino > held.last_ino and not held.extending
                    if held.ended or (not held.ops and (now - held.used > IDLE_SECONDS or out)):
                        held.ended = True
                        nursery.start_soon(self._send, held, True)
                    elif held.ops and now - held.first_op >= FLUSH_SECONDS:
                        nursery.start_soon(self._send, held, False)


def _plain(attr: Any) -> dict[str, Any]:
    """An answer's attributes as a dict this module may change."""
    return dict(cast(Mapping[str, Any], attr))
