"""Chunks a mount stored are marked pending in its session until committed when they are
kept past REGISTER_AFTER (one committed sooner costs no request: garbage collection
leaves a chunk younger than its grace period alone); the drop of that mark is told with
the next registration or after DROP_DELAY, not in a request of its own per file. Checked
against the meta role's real session bookkeeping."""

from __future__ import annotations

from typing import Any

import trio
import trio.testing

from fusefs.filedata import DROP_DELAY, REGISTER_AFTER, REGISTER_RETRY, VolumeIO
from storaged.meta.sessions import Sessions
from storaged.metaclient import MetaClient
from storaged.rpc import Unavailable


class SessionsOverRpc:
    def __init__(self) -> None:
        self.sessions = Sessions(3600)
        self.calls: list[tuple[str, list[str], list[str]]] = []
        self.failures = 0  # the next calls that fail as if the meta role were away

    async def call(self, address: str, method: str, *params: Any, **options: Any) -> Any:
        assert method == "session.pending"
        await trio.lowlevel.checkpoint()
        session, add, drop = params
        if self.failures:
            self.failures -= 1
            raise Unavailable("the meta role is away")
        self.calls.append((session, add, drop))
        return self.sessions.set_pending(session, add, drop)

    def be_patient(self, address: str, patience: Any) -> None:
        pass  # no connection to wait for

    def pending(self) -> set[str]:
        return self.sessions.pending_chunks()


def run(test) -> None:
    async def main() -> None:
        rpc = SessionsOverRpc()
        async with trio.open_nursery() as nursery:
            io = VolumeIO(
                meta=MetaClient(rpc, "meta"),
                data=None,  # type: ignore[arg-type]  # (the test moves no chunk)
                cache=None,  # type: ignore[arg-type]
                chunk_size=1 << 20,
                replicas=2,
                uploads=trio.CapacityLimiter(1),
                nursery=nursery,
            )
            io.session = rpc.sessions.open("test mount")
            await test(io, rpc)
            nursery.cancel_scope.cancel()

    trio.run(main, clock=trio.testing.MockClock(autojump_threshold=0))


def test_a_chunk_committed_within_the_delay_is_never_registered() -> None:
    """A small file's close commits its chunk within milliseconds: no request at all."""

    async def test(io: VolumeIO, rpc: SessionsOverRpc) -> None:
        io.hold_chunk("a")
        await trio.sleep(REGISTER_AFTER / 2)
        await io.release_chunks(["a"])
        await trio.sleep(10 * REGISTER_AFTER)
        assert rpc.calls == [] and not io.unregistered

    run(test)


def test_a_chunk_kept_past_the_delay_is_registered_and_its_drop_told_later() -> None:
    async def test(io: VolumeIO, rpc: SessionsOverRpc) -> None:
        io.hold_chunk("a")
        io.hold_chunk("b")
        await trio.sleep(REGISTER_AFTER / 2)
        io.hold_chunk("c")
        await trio.sleep(REGISTER_AFTER / 2 + 0.01)
        assert rpc.calls == [(io.session, ["a", "b"], [])] and rpc.pending() == {"a", "b"}
        await io.release_chunks(["a"])  # committed: its drop is owed
        await trio.sleep(REGISTER_AFTER / 2)
        # c's registration carries a's drop (one request)
        assert rpc.calls[1:] == [(io.session, ["c"], ["a"])] and rpc.pending() == {"b", "c"}

    run(test)


def test_a_drop_is_told_after_the_delay_when_nothing_else_goes() -> None:
    async def test(io: VolumeIO, rpc: SessionsOverRpc) -> None:
        io.hold_chunk("a")
        await trio.sleep(REGISTER_AFTER + 0.01)
        await io.release_chunks(["a"])
        await trio.sleep(DROP_DELAY / 2)
        assert rpc.pending() == {"a"}
        await trio.sleep(DROP_DELAY)
        assert rpc.calls[1:] == [(io.session, [], ["a"])] and rpc.pending() == set()

    run(test)


def test_a_chunk_held_again_before_its_drop_was_told_stays_pending() -> None:
    async def test(io: VolumeIO, rpc: SessionsOverRpc) -> None:
        io.hold_chunk("a")
        await trio.sleep(REGISTER_AFTER + 0.01)
        await io.release_chunks(["a"])
        io.hold_chunk("a")  # the same bytes stored again: still pending there
        assert len(rpc.calls) == 1
        await trio.sleep(2 * REGISTER_AFTER)
        assert rpc.pending() == {"a"} and len(rpc.calls) == 1
        await io.release_chunks(["a"])
        await trio.sleep(2 * DROP_DELAY)
        assert rpc.pending() == set()

    run(test)


def test_drops_of_a_replaced_session_are_not_sent_under_the_new_one() -> None:
    async def test(io: VolumeIO, rpc: SessionsOverRpc) -> None:
        io.hold_chunk("a")
        await trio.sleep(REGISTER_AFTER + 0.01)
        await io.release_chunks(["a"])
        old = io.session
        io.session = rpc.sessions.open("the same mount, registered again")
        rpc.sessions.close(old)
        io.hold_chunk("a")  # not pending in the new session: registered there, later
        await trio.sleep(REGISTER_AFTER + 0.01)
        # (the drop owed went under the old session, which the meta role no longer has)
        assert [c for c in rpc.calls if c[0] == io.session] == [(io.session, ["a"], [])]
        assert rpc.pending() == {"a"}
        await trio.sleep(2 * DROP_DELAY)
        assert rpc.pending() == {"a"}

    run(test)


def test_a_registration_that_failed_is_tried_again() -> None:
    async def test(io: VolumeIO, rpc: SessionsOverRpc) -> None:
        rpc.failures = 1
        io.hold_chunk("a")
        await trio.sleep(REGISTER_AFTER + 0.01)
        assert rpc.pending() == set() and io.unregistered
        await trio.sleep(REGISTER_RETRY)
        assert rpc.pending() == {"a"} and not io.unregistered

    run(test)
