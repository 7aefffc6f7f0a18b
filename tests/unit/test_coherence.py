"""The mount's half of the coherent cache (fusefs/coherence.py): which answers the kernel
may keep for the lease, what an invalidation tells the kernel, and what a broken stream of
invalidations takes back. A mount's Operations against the meta role's real methods in
the same process; the kernel replaced by a recorder."""

from __future__ import annotations

import errno
import stat
import time
from collections.abc import Callable
from typing import Any

import pyfuse3
import pytest
import trio

from fusefs import coherence
from fusefs import operations as ops_module
from fusefs.coherence import KernelCache
from tests.unit.meta_rpc import MetaOverRpc, meta_service, operations

LEASE = 30.0


class Kernel:
    """What the mount told the kernel to forget."""

    def __init__(self, monkeypatch: pytest.MonkeyPatch) -> None:
        self.calls: list[tuple[str, int, Any]] = []
        monkeypatch.setattr(
            pyfuse3,
            "invalidate_inode",
            lambda ino, attr_only=False: self.calls.append(("inode", ino, attr_only)),
        )
        monkeypatch.setattr(
            pyfuse3,
            "invalidate_entry",
            lambda parent, name, deleted=0: self.calls.append(("entry", parent, name)),
        )


def test_timeouts_are_the_lease_only_while_listening_and_nothing_arrived() -> None:
    cache = KernelCache(LEASE, 1.0, 2.0)
    assert cache.timeouts(cache.ask("s")) == (1.0, 2.0)  # not listening: the fallback
    cache.session = "s"
    assert cache.timeouts(cache.ask("s")) == (0.0, 0.0)  # no poll answered lately
    cache.heard = time.monotonic()
    ask = cache.ask("s")
    assert ask.session == "s"
    entry_timeout, attr_timeout = cache.timeouts(ask)
    assert LEASE - 1 < entry_timeout <= LEASE and attr_timeout == entry_timeout
    cache.received(1)  # an invalidation came meanwhile
    assert cache.timeouts(ask) == (0.0, 0.0)
    assert cache.timeouts(cache.ask("other")) == (1.0, 2.0)  # a session not listened for
    ask = cache.ask("s")
    assert cache.entry(ask, 1, b"n")[0] > 1.0 and (1, b"n") in cache.entries
    assert cache.stop() == [(1, b"n")] and cache.entries == {}
    assert cache.session is None and cache.timeouts(ask) == (1.0, 2.0)


def run(test: Any, monkeypatch: pytest.MonkeyPatch, lease: float = LEASE) -> None:
    async def main() -> None:
        service, vol = await meta_service()
        rpc = MetaOverRpc(service)
        async with trio.open_nursery() as nursery:
            ops = operations(rpc, vol, nursery)
            ops.cache.lease = lease
            ops.session = await service.session_open("test mount")
            await test(ops, service, vol, Kernel(monkeypatch))
            nursery.cancel_scope.cancel()

    trio.run(main)


async def eventually(condition: Callable[[], bool], seconds: float = 5.0) -> None:
    """Wait until ``condition()`` holds: it is the mount's state, with no event to wait on."""
    with trio.fail_after(seconds):
        while not condition():  # noqa: ASYNC110 (a poll: the state has no event)
            await trio.sleep(0.01)


async def listen_once(ops: Any) -> None:
    """What the listen loop does with an answer: here the first poll's (a reset)."""
    answer = await ops.meta.session_listen(ops.session, LEASE, 0)
    assert answer["reset"]
    await coherence.run_in_thread(ops._stop_listening(""))
    ops.cache.session = ops.session
    ops.cache.heard = time.monotonic()


def test_a_listening_mount_lets_the_kernel_keep_answers_and_misses_for_the_lease(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    async def test(ops, service, vol, kernel) -> None:
        await service.fs_mknod(vol["root"], b"f", stat.S_IFREG | 0o644, 0, 0)
        before = await ops.lookup(pyfuse3.ROOT_INODE, b"f", None)
        assert before.entry_timeout == before.attr_timeout == 1.0
        await listen_once(ops)
        found = await ops.lookup(pyfuse3.ROOT_INODE, b"f", None)
        assert found.entry_timeout > LEASE - 1 and found.attr_timeout > LEASE - 1
        missing = await ops.lookup(pyfuse3.ROOT_INODE, b"nope", None)
        assert missing.st_ino == 0 and missing.entry_timeout > LEASE - 1
        assert set(ops.cache.entries) == {(pyfuse3.ROOT_INODE, b"f"), (pyfuse3.ROOT_INODE, b"nope")}
        # the meta role watches both for this mount: another session's create is owed to it
        await service.fs_mknod(
            vol["root"],
            b"nope",
            stat.S_IFREG | 0o644,
            0,
            0,
            0,
            None,
            await service.session_open("other mount"),
        )
        answer = await ops.meta.session_listen(ops.session, LEASE, 0)
        assert ["e", vol["root"], b"nope"] in answer["events"]

    run(test, monkeypatch)


def test_a_mount_not_listening_still_answers_enoent(monkeypatch: pytest.MonkeyPatch) -> None:
    async def test(ops, service, vol, kernel) -> None:
        with pytest.raises(pyfuse3.FUSEError) as caught:
            await ops.lookup(pyfuse3.ROOT_INODE, b"nope", None)
        assert caught.value.errno == errno.ENOENT

    run(test, monkeypatch)


def test_invalidations_reach_the_kernel_for_what_it_knows(monkeypatch: pytest.MonkeyPatch) -> None:
    async def test(ops, service, vol, kernel) -> None:
        f = await service.fs_mknod(vol["root"], b"f", stat.S_IFREG | 0o644, 0, 0)
        await listen_once(ops)
        await ops.lookup(pyfuse3.ROOT_INODE, b"f", None)
        changes = ops.cache.changes
        await coherence.run_in_thread(
            ops._invalidate(
                [
                    ["i", f["ino"], True],
                    ["i", 12345, False],
                    ["e", vol["root"], b"f"],
                    ["x", "junk"],
                    ["e", 777, b"n"],
                ]
            )
        )
        assert kernel.calls == [("inode", f["ino"], False), ("entry", pyfuse3.ROOT_INODE, b"f")]
        assert ops.cache.changes == changes + 5
        assert (pyfuse3.ROOT_INODE, b"f") not in ops.cache.entries

    run(test, monkeypatch)


def test_a_poll_left_unanswered_takes_back_everything_kept_long(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """The meta role stops answering (a network cut, a stopped process): within
    POLL_WAIT + POLL_MARGIN the mount drops every attribute and entry it let the kernel
    keep, and answers with the fallback timeouts until the polls are answered again."""
    monkeypatch.setattr(ops_module, "POLL_WAIT", 0.05)
    monkeypatch.setattr(ops_module, "POLL_MARGIN", 0.2)

    async def test(ops, service, vol, kernel) -> None:
        await service.fs_mknod(vol["root"], b"f", stat.S_IFREG | 0o644, 0, 0)
        hang = trio.Event()
        real = ops.meta.session_listen

        async def listen(session: str, lease: float, wait: float, ack: int = 0) -> Any:
            if hang.is_set():
                await trio.sleep_forever()
            return await real(session, lease, wait, ack)

        ops.meta.session_listen = listen
        async with trio.open_nursery() as nursery:
            nursery.start_soon(ops.listen)
            await eventually(lambda: ops.cache.session is not None)
            found = await ops.lookup(pyfuse3.ROOT_INODE, b"f", None)
            await ops.lookup(pyfuse3.ROOT_INODE, b"gone", None)
            assert found.attr_timeout > 1.0 and kernel.calls == []
            hang.set()
            await eventually(lambda: ops.cache.session is None)
            await eventually(lambda: len(kernel.calls) >= 3)
            assert sorted(kernel.calls, key=repr) == sorted(
                [
                    ("inode", found.st_ino, True),
                    ("entry", pyfuse3.ROOT_INODE, b"f"),
                    ("entry", pyfuse3.ROOT_INODE, b"gone"),
                ],
                key=repr,
            )
            again = await ops.lookup(pyfuse3.ROOT_INODE, b"f", None)
            assert again.attr_timeout == 1.0
            nursery.cancel_scope.cancel()

    run(test, monkeypatch)


def test_an_answer_during_which_an_invalidation_arrived_is_not_kept(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    async def test(ops, service, vol, kernel) -> None:
        await service.fs_mknod(vol["root"], b"f", stat.S_IFREG | 0o644, 0, 0)
        await listen_once(ops)
        real = ops.meta.fs_lookup

        async def lookup(*args: Any) -> Any:
            answer = await real(*args)
            ops._invalidate([["i", 424242, False]])  # arrives while on its way
            return answer

        ops.meta.fs_lookup = lookup
        found = await ops.lookup(pyfuse3.ROOT_INODE, b"f", None)
        assert found.entry_timeout == found.attr_timeout == 0.0

    run(test, monkeypatch)


def test_coherence_module_tells_the_kernel_in_a_thread(monkeypatch: pytest.MonkeyPatch) -> None:
    kernel = Kernel(monkeypatch)
    threads: list[bool] = []
    monkeypatch.setattr(
        pyfuse3,
        "invalidate_entry",
        lambda parent, name, deleted=0: threads.append(trio.lowlevel.in_trio_run()),
    )

    async def main() -> None:
        await coherence.run_in_thread([("inode", 5, True), ("entry", 1, b"x")])

    trio.run(main)
    assert kernel.calls == [("inode", 5, True)] and threads == [False]
