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


def test_silent_sessions_expire_and_the_sweep_waits_after_start():
    s = Sessions(timeout=0.05, grace=0.2)
    a = s.open("crashing mount")
    s.hold(a, 9)
    assert not s.sweep_allowed()
    time.sleep(0.1)
    assert s.expire() == {9} and not s.is_held(9) and s.count() == 0
    time.sleep(0.15)
    assert s.sweep_allowed()


def test_pending_chunks_belong_to_live_sessions():
    s = Sessions(timeout=0.05)
    a, b = s.open("a"), s.open("b")
    assert s.set_pending(a, ["c1", "c2"], []) and s.set_pending(b, ["c2", "c3"], [])
    assert s.pending_chunks() == {"c1", "c2", "c3"}
    s.set_pending(a, [], ["c1", "c2"])
    assert s.pending_chunks() == {"c2", "c3"}
    assert not s.set_pending("unknown", ["c9"], [])
    time.sleep(0.1)
    s.expire()  # a crashed mount's pending chunks are no longer protected
    assert s.pending_chunks() == set()
