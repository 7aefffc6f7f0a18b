"""fusefs/holds.py's bookkeeping: which holds a batch adds and drops, and that a change made
while a batch is on its way is not lost."""

from __future__ import annotations

from fusefs.holds import KernelHolds


def test_a_batch_adds_what_is_referenced_and_drops_what_is_not() -> None:
    referenced = {1, 2}
    holds = KernelHolds(lambda ino: ino in referenced)
    holds.took(3)  # e.g. held with an open, since closed and forgotten
    for ino in (1, 2, 3):
        holds.changed(ino)
    add, drop = holds.batch()
    assert sorted(add) == [1, 2] and drop == [3]
    holds.applied(add, drop)
    assert holds.held == {1, 2} and holds.batch() == ([], [])


def test_an_inode_referenced_again_while_its_drop_is_on_the_way_is_added_back() -> None:
    referenced = {7}
    holds = KernelHolds(lambda ino: ino in referenced)
    holds.took(7)
    referenced.clear()
    holds.changed(7)
    add, drop = holds.batch()
    assert (add, drop) == ([], [7])
    referenced.add(7)  # looked up again before the answer came
    holds.changed(7)
    holds.applied(add, drop)
    assert holds.batch() == ([7], [])


def test_a_failed_batch_is_sent_again() -> None:
    holds = KernelHolds(lambda ino: True)
    holds.changed(5)
    add, drop = holds.batch()
    holds.failed(add, drop)
    assert holds.batch() == ([5], [])


def test_a_new_session_holds_what_was_registered_with_it() -> None:
    holds = KernelHolds(lambda ino: ino != 9)
    holds.took(9)
    holds.new_session([1, 2])
    assert holds.held == {1, 2}


def test_a_mount_sends_its_holds_in_requests_the_meta_role_accepts() -> None:
    """A kernel may cache more inodes than one session.hold may name (100,000): a mount
    registering again splits them (Operations._hold, with its RPC replaced here)."""
    from types import SimpleNamespace

    import trio

    from fusefs import operations

    sent: list[tuple[int, int]] = []

    async def record(session: str, add: list[int], drop: list[int]) -> bool:
        assert session == "s"
        sent.append((len(add), len(drop)))
        return True

    ops = operations.Operations.__new__(operations.Operations)
    ops.meta = SimpleNamespace(session_hold=record)  # type: ignore[assignment]
    many = list(range(1, 2 * operations.HOLD_BATCH + 2))
    trio.run(ops._hold, "s", many, [7])
    assert sent == [(operations.HOLD_BATCH, 1), (operations.HOLD_BATCH, 0), (1, 0)]
    assert sum(a for a, _ in sent) == len(many)
    sent.clear()
    trio.run(ops._hold, "s", [], [])
    assert sent == []
