"""The meta role's record of what mounts' kernels cache (storaged/meta/watches.py): who
hears of a change, what a read racing a change is owed, and when a mount is told reset."""

from __future__ import annotations

import time

import pytest
import trio

from storaged.meta import watches as w
from storaged.meta.watches import Watches, entry, inode


def listening(*sessions: str, lease: float = 30.0) -> Watches:
    watches = Watches()
    for session in sessions:
        watches.listen(session, lease)
        watches._listeners[session].reset = False  # past its first poll
    return watches


def owed(watches: Watches, session: str) -> list:
    return watches._listeners[session].events


def test_a_change_is_sent_to_every_other_session_watching_it_and_not_to_its_author() -> None:
    watches = listening("a", "b", "c")
    for session in "abc":
        watches.watch(session, [10, 20], watches.mark())
    watches.changed("a", [inode(10), entry(20, b"x")])
    assert owed(watches, "a") == []
    assert owed(watches, "b") == owed(watches, "c") == [["i", 10, False], ["e", 20, b"x"]]
    watches.changed(None, [inode(30)])  # nobody watches 30
    assert owed(watches, "b") == [["i", 10, False], ["e", 20, b"x"]]


def test_a_session_not_listening_watches_nothing() -> None:
    watches = listening("b")
    watches.watch("a", [10], watches.mark())  # "a" never polled
    watches.watch(None, [10], watches.mark())
    watches.changed("b", [inode(10)])
    assert watches.counts() == {"listeners": 1, "watches": 0}


def test_a_watch_ends_with_the_lease_and_its_slack(monkeypatch: pytest.MonkeyPatch) -> None:
    now = [1000.0]
    monkeypatch.setattr(time, "monotonic", lambda: now[0])
    watches = listening("b", lease=5.0)
    watches.watch("b", [10], watches.mark())
    now[0] += 5.0 + w.SLACK - 0.01
    watches.changed(None, [inode(10)])
    assert owed(watches, "b") == [["i", 10, False]]
    owed(watches, "b").clear()
    now[0] += 0.02
    watches.changed(None, [inode(10)])
    assert owed(watches, "b") == []
    watches.watch("b", [11], watches.mark())  # prunes the expired one
    assert watches._listeners["b"].watching.keys() == {11}
    assert 10 not in watches._watchers


def test_a_read_that_raced_a_change_is_owed_the_change() -> None:
    """The read took its snapshot before the change committed and registers its watch
    after the change's events went out: it still hears of it."""
    watches = listening("b")
    since = watches.mark()  # b's read starts
    watches.changed("a", [inode(10), inode(99)])  # a's change commits meanwhile
    watches.watch("b", [10], since)  # b's read answers about 10
    assert owed(watches, "b") == [["i", 10, False]]


def test_a_read_that_outlived_the_log_resets_its_session() -> None:
    watches = listening("b")
    since = watches.mark()
    for i in range(w.LOG_SIZE + 1):
        watches.changed("a", [inode(i)])
    watches.watch("b", [10], since)
    listener = watches._listeners["b"]
    assert listener.reset and listener.events == [] and listener.watching == {}


def test_too_many_events_reset_the_session_instead(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(w, "QUEUE_MAX", 3)
    watches = listening("b")
    watches.watch("b", [1, 2, 3, 4], watches.mark())
    watches.changed("a", [inode(1), inode(2), inode(3)])
    assert not watches._listeners["b"].reset
    watches.changed("a", [inode(4)])
    assert watches._listeners["b"].reset and owed(watches, "b") == []

    async def poll() -> dict:
        return await watches.take("b", 30.0, 5.0)

    assert trio.run(poll) == {"events": [], "reset": True, "upto": 4}


async def poll_while(watches: Watches, session: str, act) -> dict:
    """A poll of ``session`` that waits, while ``act()`` runs beside it; its answer."""
    got: list[dict] = []

    async def poll() -> None:
        got.append(await watches.take(session, 30.0, 10.0))

    with trio.fail_after(5):
        async with trio.open_nursery() as nursery:
            nursery.start_soon(poll)
            await trio.sleep(0.05)
            assert got == []
            act()
    return got[0]


def test_a_poll_waits_for_events_and_returns_them_at_once() -> None:
    async def main() -> None:
        watches = Watches()
        first = await watches.take("b", 30.0, 0.0)
        assert first == {"events": [], "reset": True, "upto": 0}  # a new listener: reset
        watches.watch("b", [7], watches.mark())
        got = await poll_while(watches, "b", lambda: watches.changed("a", [entry(7, b"n")]))
        assert got == {"events": [["e", 7, b"n"]], "reset": False, "upto": 1}
        with trio.fail_after(5):
            assert await watches.take("b", 30.0, 0.05) == {"events": [], "reset": False, "upto": 1}

    trio.run(main)


def test_an_ended_session_stops_its_poll_and_a_silent_one_is_dropped(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    async def main() -> None:
        watches = listening("b", "c")
        watches.watch("b", [1], watches.mark())
        assert await poll_while(watches, "b", lambda: watches.forget("b")) == {
            "events": [],
            "reset": True,
            "upto": 0,
        }
        assert 1 not in watches._watchers
        now = time.monotonic() + w.SILENT_SECONDS + 1
        monkeypatch.setattr(time, "monotonic", lambda: now)
        assert watches.reset_silent() == ["c"]
        assert watches.counts()["listeners"] == 0

    trio.run(main)


def test_a_content_change_waits_until_every_mount_told_has_acknowledged() -> None:
    """The author of a commit is answered once the other mounts have dealt with its
    invalidation (their next poll says so), so their next open asks the meta role."""

    async def main() -> None:
        watches = listening("b", "c")
        for session in "bc":
            watches.watch(session, [5], watches.mark())
        told = watches.changed("a", [inode(5, True)])
        assert told == {"b": 1, "c": 1}
        done: list[list[str]] = []

        async def author() -> None:
            done.append(await watches.delivered(told, timeout=5))

        with trio.fail_after(5):
            async with trio.open_nursery() as nursery:
                nursery.start_soon(author)
                answer = await watches.take("b", 30.0, 0)
                assert answer["upto"] == 1
                await watches.take("b", 30.0, 0, ack=answer["upto"])  # b is done
                await trio.sleep(0.05)
                assert done == []  # c is not yet
                watches.forget("c")  # c's mount is gone
        assert done == [[]]
        # a mount that never answers holds a change up only for the time given
        watches.watch("b", [6], watches.mark())
        told = watches.changed("a", [inode(6, True)])
        with trio.fail_after(5):
            assert await watches.delivered(told, timeout=0.1) == ["b"]
        # ... and, late, is not waited for again until it polls (it trusts nothing until
        # it has: fusefs/coherence.py), though it is still told
        assert watches.changed("a", [inode(6, True)]) == {}
        assert owed(watches, "b")[-1] == ["i", 6, True]
        await watches.take("b", 30.0, 0)
        assert watches.changed("a", [inode(6, True)]) == {"b": 4}

    trio.run(main)
