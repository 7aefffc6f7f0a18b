from __future__ import annotations

import time

from storaged.meta.sessions import Sessions


def test_holds_are_per_session_and_end_with_it():
    s = Sessions(timeout=60)
    a, b = s.open("node a"), s.open("node b")
    assert s.hold(a, 7) and s.hold(b, 7)
    s.release(a, 7)
    assert s.is_held(7)
    assert s.close(b) == {7}
    assert not s.is_held(7)
    assert not s.hold("unknown", 8) and not s.heartbeat("unknown")


def test_silent_sessions_are_found_and_their_holds_end_with_them():
    s = Sessions(timeout=0.05)
    a, b = s.open("crashing mount"), s.open("live mount")
    s.hold(a, 9)
    assert s.silent() == []
    time.sleep(0.1)
    assert s.heartbeat(b)
    assert s.silent() == [a]
    assert s.close(a) == {9} and not s.is_held(9) and s.count() == 1


def test_restored_sessions_hold_up_deletions_until_closed_or_silent():
    s = Sessions(timeout=0.05)
    assert s.deletions_allowed()
    assert s.restore([("r1", "mount one"), ("r2", "mount two")]) == 2
    assert not s.deletions_allowed()
    # known, but what they hold is not: refused until the mount registers again
    assert not s.heartbeat("r1") and not s.hold("r1", 5) and not s.set_pending("r1", ["c"], [])
    assert not s.is_live("r1")
    s.close("r1")
    assert not s.deletions_allowed() and s.restored_count() == 1
    time.sleep(0.1)  # a refused heartbeat does not keep a restored session alive
    assert s.silent() == ["r2"]
    s.close("r2")
    assert s.deletions_allowed()


def test_pending_chunks_belong_to_live_sessions():
    s = Sessions(timeout=0.05)
    a, b = s.open("a"), s.open("b")
    assert s.set_pending(a, ["c1", "c2"], []) and s.set_pending(b, ["c2", "c3"], [])
    assert s.pending_chunks() == {"c1", "c2", "c3"}
    s.set_pending(a, [], ["c1", "c2"])
    assert s.pending_chunks() == {"c2", "c3"}
    assert not s.set_pending("unknown", ["c9"], [])
    time.sleep(0.1)
    for session in s.silent():  # a crashed mount's pending chunks are no longer protected
        s.close(session)
    assert s.pending_chunks() == set()
