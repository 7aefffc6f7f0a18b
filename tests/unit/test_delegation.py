"""The mount's half of delegated directories (fusefs/delegation.py) against a meta role
stand-in that records what reaches it: when the mount may answer itself, that batches
go out whole, in order and before anything else, and what a refused batch leaves."""

from __future__ import annotations

import errno
import stat
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from typing import Any, cast

import pytest
import trio
from trio.testing import trio_test

from fusefs import delegation
from fusefs.coherence import KernelCache
from fusefs.delegation import Delegator, Held
from fusefs.dirnames import KnownNames
from storaged.rpc.errors import FsError

FILE = stat.S_IFREG | 0o644
D = 7


class FakeMeta:
    """dir.delegate and fs.apply, as the meta role answers them; ``refuse``: fs.apply
    answers ESTALE (a revoked grant); ``gate``: fs.apply waits for it."""

    def __init__(self) -> None:
        self.applied: list[tuple[str, list[Any], bool]] = []
        self.asked: list[int] = []
        self.refuse = False
        self.gate: trio.Event | None = None
        self.sessions = {"s"}
        self.current = "s"  # the mount's session now
        self.reclaims = 0
        self.upto = 0  # events queued for the session before the grant
        self.commits: list[list[Any]] = []  # commits sent along with a batch
        self.extensions: list[dict[str, int]] = []  # dir.extend's answers (then None)
        self.extend_gate: trio.Event | None = None  # dir.extend waits for it
        self.extended = 0  # dir.extend calls
        self.ops = ["c", "u", "m", "a", "f"]  # what the grant says a batch may hold

    async def dir_extend(self, session: str, directory: int, grant: str) -> dict | None:
        self.extended += 1
        if self.extend_gate is not None:
            await self.extend_gate.wait()
        return self.extensions.pop(0) if self.extensions else None

    async def dir_delegate(self, session: str, directory: int) -> dict[str, Any]:
        self.asked.append(directory)
        attr = {"ino": directory, "mode": stat.S_IFDIR | 0o2775, "nlink": 2, "gid": 50}
        return {
            "grant": "g1",
            "first": 100,
            "last": 102,
            "dir": {**attr, "mtime_ns": 0},
            "upto": self.upto,
            "ops": self.ops,
        }

    async def fs_apply(
        self,
        session: str,
        directory: int,
        grant: str,
        ops: list,
        release: bool,
        reclaim: bool = False,
        commit: list | None = None,
    ) -> dict[str, Any]:
        if self.gate is not None:
            await self.gate.wait()
        if self.refuse:
            raise FsError(errno.ENOLCK, "not delegated")
        if session not in self.sessions:
            raise FsError(errno.ESTALE, "unknown mount session")
        self.applied.append((grant, list(ops), release))
        self.reclaims += reclaim
        extra: dict[str, Any] = {}
        if commit is not None:
            self.commits.append(commit)
            extra["commit"] = (
                {"error": {"code": "EDQUOT", "message": "over quota"}}
                if commit[1] > 1000
                else {"attr": {"ino": commit[0], "size": commit[1]}}
            )
        return {
            **extra,
            "parent": {
                "ino": directory,
                "mode": stat.S_IFDIR | 0o2775,
                "nlink": 2,
                "gid": 50,
                "mtime_ns": 1,
                "ctime_ns": 1,
            },
            "deleted": [],
        }


def _setup() -> tuple[Delegator, FakeMeta, KernelCache, KnownNames, list]:
    cache = KernelCache(30.0, 1.0, 1.0)
    cache.session = "s"
    cache.heard = time.monotonic()
    names = KnownNames(cache)
    names.learn(D, [b"old"], cache.ask("s"))
    meta = FakeMeta()
    lost: list[tuple[int, list[bytes], list[int]]] = []
    delegator = Delegator(
        cast(Any, meta), cache, names, lambda: meta.current, lambda d, n, i: lost.append((d, n, i))
    )
    return delegator, meta, cache, names, lost


async def _until(predicate: Any, seconds: float) -> None:
    """Poll ``predicate`` for up to ``seconds`` (bounded in count), failing after."""
    for _ in range(int(seconds / 0.01)):
        if predicate():
            return
        await trio.sleep(0.01)
    raise AssertionError(f"not within {seconds}s")


async def _granted(delegator: Delegator, nursery: trio.Nursery) -> None:
    await nursery.start(delegator.run)
    for _ in range(delegation.ASK_AFTER):
        delegator.noted(D)
    await _until(lambda: D in delegator.held, 1)


@dataclass
class Holding:
    """A delegator holding D (granted by the stand-in), with what the tests look at."""

    delegator: Delegator
    meta: FakeMeta
    cache: KernelCache
    names: KnownNames
    lost: list
    held: Held
    nursery: trio.Nursery

    def make(self, name: bytes, hold: bool = False) -> dict[str, Any]:
        return self.delegator.create(self.held, name, FILE, 0, 0, 0, None, hold)


@asynccontextmanager
async def holding(ops: list[str] | None = None) -> AsyncIterator[Holding]:
    delegator, meta, cache, names, lost = _setup()
    if ops is not None:
        meta.ops = ops
    async with trio.open_nursery() as nursery:
        await _granted(delegator, nursery)
        held = delegator.usable(D)
        assert held is not None
        yield Holding(delegator, meta, cache, names, lost, held, nursery)
        nursery.cancel_scope.cancel()


@trio_test
async def test_a_directory_is_asked_for_after_several_changes_and_answered_here():
    delegator, meta, _, names, _ = _setup()
    async with trio.open_nursery() as nursery:
        for _ in range(delegation.ASK_AFTER - 1):
            delegator.noted(D)
        await trio.sleep(0.05)
        assert meta.asked == []
        await _granted(delegator, nursery)
        held = delegator.usable(D)
        assert held is not None
        attr = delegator.create(held, b"a", FILE, 1000, 1000, 0, None, True)
        assert attr["ino"] == 100 and attr["gid"] == 50  # setgid directory: its group
        assert names.has(D, b"a") and delegator.made_ino(D, b"a") == 100
        nursery.cancel_scope.cancel()


@trio_test
async def test_nothing_is_answered_here_without_trust_in_the_grant_and_its_names():
    async with holding() as h:
        # An invalidation about anything else arrived: the directory's names stay known
        # (nobody else may change them: pinned), but answers under the old Ask would be
        # kept 0 s by the kernel; an empty batch renews it.
        h.cache.received(1)
        assert h.cache.left(h.held.ask) == 0
        assert h.delegator.usable(D) is h.held
        await _until(lambda: h.meta.applied, 1)
        assert h.meta.applied == [("g1", [], False)]
        assert h.cache.left(h.held.ask) > 0
    async with holding() as h:
        h.names.forget(D)  # a change of its names whose outcome is not known
        assert h.delegator.usable(D) is None
    async with holding() as h:
        h.cache.heard = time.monotonic() - 10  # polls not answered lately
        assert h.delegator.usable(D) is None


@trio_test
async def test_batches_go_out_in_order_and_a_call_after_waits_for_the_one_in_flight():
    async with holding() as h:
        delegator, meta, held = h.delegator, h.meta, h.held
        h.make(b"a")
        meta.gate = trio.Event()
        h.nursery.start_soon(delegator.send_all)  # first batch: in flight, held at the gate
        await trio.sleep(0.01)
        delegator.rename(held, b"a", b"b")
        done = trio.Event()

        async def second() -> None:
            await delegator.send_all()
            done.set()

        h.nursery.start_soon(second)
        await trio.sleep(0.05)
        assert not done.is_set()  # waits for the batch in flight, then sends its own
        meta.gate.set()
        with trio.fail_after(1):
            await done.wait()
        assert [[op[0] for op in ops] for _, ops, _ in meta.applied] == [["c"], ["m"]]


@trio_test
async def test_a_close_sends_its_commit_with_the_batch_it_owes():
    async with holding() as h:
        delegator, meta = h.delegator, h.meta
        assert await delegator.commit(100, 10, []) is None  # no batch owed: commit alone
        h.make(b"a")
        attr = await delegator.commit(100, 10, [[0, "c" * 64, 0, 10]])
        assert attr == {"ino": 100, "size": 10}
        assert [[op[0] for op in ops] for _, ops, _ in meta.applied] == [["c"]]
        assert meta.commits == [[100, 10, [[0, "c" * 64, 0, 10]], None]]
        h.make(b"b")
        with pytest.raises(FsError) as info:  # the commit's own error ...
            await delegator.commit(101, 5000, [])
        assert info.value.errno == errno.EDQUOT  # ... and the batch was applied
        assert [[op[1] for op in ops] for _, ops, _ in meta.applied] == [[b"a"], [b"b"]]
        h.make(b"c")
        meta.refuse = True  # the batch refused: the caller commits alone
        assert await delegator.commit(102, 10, []) is None
        assert h.lost


@trio_test
async def test_attributes_of_a_file_made_here_are_set_here_under_its_current_name():
    """chmod, chown, utimens of a file made under the grant go in the batch, by the name
    it has when they are answered; not for a file unlinked, given another name through
    the meta role, or made before the grant. A close sends its commit after them, with
    the mtime it was given."""
    async with holding() as h:
        delegator, meta, held = h.delegator, h.meta, h.held
        ino = h.make(b"a")["ino"]
        assert delegator.settable(ino) is held
        delegator.set_attributes(held, ino, {"mode": 0o600}, 5)
        delegator.rename(held, b"a", b"b")
        delegator.set_attributes(held, ino, {"uid": 7}, 6)
        other = h.make(b"c")["ino"]
        delegator.unlink(held, b"c")
        assert delegator.settable(other) is None
        assert delegator.settable(12345) is None  # not made here
        third = h.make(b"d")["ino"]
        delegator.reached(third)  # linked elsewhere through the meta role
        assert delegator.settable(third) is None
        await delegator.commit(ino, 10, [], 77)
        ops = meta.applied[0][1]
        assert [op for op in ops if op[0] == "a"] == [
            ["a", b"a", ino, {"mode": 0o600}, 5],
            ["a", b"b", ino, {"uid": 7}, 6],
        ]
        assert meta.commits == [[ino, 10, [], 77]]
        await delegator.send_owed(delegator.owed(D))  # nothing owed: nothing sent
        assert len(meta.applied) == 1
        delegator.set_attributes(held, ino, {"gid": 8}, 7)
        owed = delegator.owed(D)
        h.make(b"later")  # answered after the mark: a close need not wait for it
        meta.gate = trio.Event()
        h.nursery.start_soon(delegator.send_all)  # on its way with both
        await trio.sleep(0.01)
        h.make(b"last")
        done = trio.Event()

        async def close() -> None:
            await delegator.send_owed(owed)
            done.set()

        h.nursery.start_soon(close)
        await trio.sleep(0.05)
        assert not done.is_set()  # waits for the batch carrying what it owes ...
        meta.gate.set()
        with trio.fail_after(1):
            await done.wait()
        assert [op[1] for op in meta.applied[1][1]] == [b"b", b"later"]
        assert len(meta.applied) == 2  # ... and does not send what came after its mark
        assert [op[1] for op in held.ops] == [b"last"]
    async with holding(ops=["c", "u", "m", "f"]) as h:  # an older meta role's grant
        assert h.delegator.settable(h.make(b"a")["ino"]) is None


@trio_test
async def test_a_batch_goes_out_by_itself_within_the_flush_period():
    async with holding() as h:
        meta = h.meta
        h.make(b"a")
        await _until(lambda: meta.applied, delegation.FLUSH_SECONDS + 1)


@trio_test
async def test_a_recall_ends_local_answers_at_once_and_sends_the_batch_with_the_grant():
    async with holding() as h:
        delegator, meta = h.delegator, h.meta
        h.make(b"a")
        delegator.recall(D, "g1")
        assert delegator.usable(D) is None
        await _until(lambda: D not in delegator.held, 1)
        assert len(meta.applied) == 1 and meta.applied[0][2] is True  # given back with it
        assert meta.applied[0][1][0][:3] == ["c", b"a", 100]


@trio_test
async def test_a_refused_batch_is_reported_and_its_names_forgotten(caplog):
    async with holding() as h:
        delegator, meta, held = h.delegator, h.meta, h.held
        h.make(b"a")
        h.make(b"b")
        delegator.unlink(held, b"b")
        ino = h.make(b"c")["ino"]
        delegator.set_attributes(held, ino, {"mode": 0o600}, 5)
        meta.refuse = True
        await delegator.send_all()
        assert D not in delegator.held and not h.names.knows(D)
        assert h.lost == [(D, [b"a", b"b", b"b", b"c", b"c"], [ino])]
        assert "attributes of b'c' answered by this mount, refused" in caplog.text
        assert "create of b'a' answered by this mount, refused by the meta role" in caplog.text


@trio_test
async def test_an_orphan_forgotten_rides_with_the_batch_and_the_range_runs_out():
    async with holding() as h:
        delegator, meta, held = h.delegator, h.meta, h.held
        for name in (b"a", b"b", b"c"):  # the whole range: 100..102
            h.make(name, hold=True)
        ino = delegator.unlink(held, b"a")
        assert delegator.forgotten(ino) is True
        assert delegator.forgotten(999) is False  # not made here: the caller sends it
        assert delegator.usable(D) is None  # no inode numbers left
        await delegator.send_all()
        kinds = [op[0] for op in meta.applied[0][1]]
        assert kinds == ["c", "c", "c", "u", "f"]


@trio_test
async def test_a_grant_running_low_is_extended_and_stays_usable():
    """Half the numbers used: one dir.extend in the background; its numbers are used
    once the first range is; a grant out of numbers with the extension still on its way
    answers nothing until it comes (invariant 5)."""
    async with holding() as h:
        delegator, meta = h.delegator, h.meta
        meta.extensions = [{"first": 200, "last": 200}, {"first": 300, "last": 309}]
        meta.extend_gate = trio.Event()
        made = [h.make(b"a")["ino"], h.make(b"b")["ino"]]  # 1 of 3 left: ask for more
        await trio.sleep(0.01)
        assert meta.extended == 1
        made.append(h.make(b"c")["ino"])
        assert delegator.usable(D) is None  # out of numbers, the extension on its way
        meta.extend_gate.set()
        await _until(lambda: delegator.usable(D) is not None, 1)
        made.append(h.make(b"d")["ino"])  # (the last of that one: ask again)
        await _until(lambda: delegator.usable(D) is not None, 1)
        made.append(h.make(b"e")["ino"])
        assert made == [100, 101, 102, 200, 300]
        assert meta.extended == 2
        await delegator.send_all()
        assert [op[2] for op in meta.applied[0][1]] == made
        assert D in delegator.held  # not given back for want of numbers


def test_a_mount_flag_that_is_a_switch_is_passed_on_as_one() -> None:
    import argparse

    from fusefs.command import passed_on

    args = argparse.Namespace(delegate=False, cache_lease=5.0)
    out = passed_on(args)
    assert "--no-delegate" in out and "False" not in out
    assert out[out.index("--cache-lease") + 1] == "5.0"
    assert "--delegate" in passed_on(argparse.Namespace(delegate=True))


@trio_test
async def test_a_batch_the_restarted_meta_role_does_not_know_is_reclaimed_after_registering():
    """The meta role restarted: the grant's session is unknown there. The batch is kept
    (nothing answered here is dropped for that), and sent as a reclaim once the mount has
    a new session."""
    async with holding() as h:
        delegator, meta = h.delegator, h.meta
        h.make(b"a")
        meta.sessions = set()  # restarted: "s" is not known
        await delegator.send_all()
        assert meta.applied == [] and h.lost == [] and delegator.usable(D) is None
        meta.current = "s2"  # registered again
        meta.sessions = {"s2"}
        await delegator.resend()
        assert meta.reclaims == 1 and meta.applied[0][1][0][:2] == ["c", b"a"]
        assert D not in delegator.held and h.lost == []


@trio_test
async def test_a_grant_is_used_only_past_the_events_queued_before_it():
    """A change of the directory by the CLI (no session) just before the grant sends this
    mount an event that may still be on its way: nothing is answered from the grant
    before it has been dealt with (and then, what it says is known)."""
    delegator, meta, cache, _, _ = _setup()
    meta.upto = 3
    async with trio.open_nursery() as nursery:
        await _granted(delegator, nursery)
        assert delegator.usable(D) is None
        cache.handled = 3
        assert delegator.usable(D) is not None
        nursery.cancel_scope.cancel()
