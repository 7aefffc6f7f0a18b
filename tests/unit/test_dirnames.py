"""What a mount knows of every name in a directory (fusefs/dirnames.py): when a miss may
be answered without the meta role, and what ends that knowledge."""

from __future__ import annotations

import time

from fusefs import dirnames
from fusefs.coherence import KernelCache
from fusefs.dirnames import KnownNames


def listening() -> KernelCache:
    cache = KernelCache(30.0, 1.0, 1.0)
    cache.session = "s"
    cache.heard = time.monotonic()
    return cache


def test_a_name_not_in_a_known_directory_is_surely_missing() -> None:
    cache = listening()
    names = KnownNames(cache)
    ask = cache.ask("s")
    names.learn(7, [b"a", b"b"], ask)
    assert names.missing(7, b"c") is ask
    assert names.missing(7, b"a") is None  # there: the meta role answers it
    assert names.missing(8, b"c") is None  # a directory not known


def test_changes_through_this_mount_keep_the_names_exact() -> None:
    cache = listening()
    names = KnownNames(cache)
    names.learn(7, [], cache.ask("s"))
    names.added(7, b"new")
    assert names.missing(7, b"new") is None
    names.removed(7, b"new")
    assert names.missing(7, b"new") is not None
    names.forget(7)  # an answer that never came
    assert names.missing(7, b"new") is None


def test_any_invalidation_or_a_silent_stream_ends_the_knowledge() -> None:
    cache = listening()
    names = KnownNames(cache)
    names.learn(7, [], cache.ask("s"))
    cache.received(1)  # about anything at all
    assert names.missing(7, b"x") is None and len(names) == 0
    names.learn(7, [], cache.ask("s"))
    cache.heard = time.monotonic() - 10  # no poll answered lately
    assert names.missing(7, b"x") is None
    cache.heard = time.monotonic()
    names.learn(7, [], KernelCache(30.0, 1, 1).ask("s"))  # not watched: not learnt
    assert names.missing(7, b"x") is None


def test_a_create_renews_the_knowledge_only_if_nothing_arrived_in_between() -> None:
    cache = listening()
    names = KnownNames(cache)
    first = cache.ask("s")
    names.learn(7, [], first)
    later = cache.ask("s")
    names.added(7, b"f", renew=later)
    assert names.missing(7, b"g") is later
    stale = cache.ask("s")
    cache.received(1)
    names.learn(7, [], cache.ask("s"))
    kept = names.missing(7, b"g")
    names.added(7, b"h", renew=stale)  # asked before an invalidation: no renewal
    assert names.missing(7, b"g") is kept


def test_the_memory_is_bounded(monkeypatch) -> None:
    monkeypatch.setattr(dirnames, "DIRS_MAX", 3)
    monkeypatch.setattr(dirnames, "NAMES_MAX", 10)
    cache = listening()
    names = KnownNames(cache)
    for ino in range(5):
        names.learn(ino, [b"x", b"y"], cache.ask("s"))
    assert len(names) == 3 and names.missing(0, b"z") is None
    names.learn(9, [bytes([i]) for i in range(9)], cache.ask("s"))
    assert len(names) == 1 and names.missing(9, b"z") is not None


def test_a_pinned_directory_stays_known_through_invalidations_until_unpinned() -> None:
    """A directory delegated to this mount (fusefs/delegation.py): nobody else can change
    its names, so an invalidation about anything else leaves them known."""
    cache = listening()
    names = KnownNames(cache)
    assert names.pin(7) is False  # nothing known: nothing to keep
    names.learn(7, [b"a"], cache.ask("s"))
    names.learn(8, [], cache.ask("s"))
    assert names.pin(7) is True
    cache.received(1)
    assert names.knows(7) and names.missing(7, b"b") is not None
    assert not names.knows(8)  # not pinned: forgotten as before
    names.unpin(7)
    assert not names.knows(7)
    names.learn(7, [], cache.ask("s"))
    names.pin(7)
    names.forget(7)  # a change of unknown outcome ends it, pinned or not
    assert not names.knows(7)


def test_pinned_directories_are_not_trimmed(monkeypatch) -> None:
    monkeypatch.setattr(dirnames, "DIRS_MAX", 2)
    cache = listening()
    names = KnownNames(cache)
    names.learn(1, [], cache.ask("s"))
    names.pin(1)
    for ino in (2, 3, 4):
        names.learn(ino, [], cache.ask("s"))
    assert names.knows(1) and names.knows(4) and not names.knows(2)
