"""The meta role's half of delegated directories (storaged/meta/delegations.py): who may
hold a directory, a batch applied all or nothing, and a recall that makes another
mount's request wait for the holder's batch, or revokes the grant past its bound."""

from __future__ import annotations

import errno
import stat

import pytest
import trio
from trio.testing import trio_test

from storaged.meta import delegations
from storaged.meta.db import open_database
from storaged.meta.service import MetaService
from storaged.rpc.errors import FsError, InvalidArgument

FILE, DIR = stat.S_IFREG | 0o644, stat.S_IFDIR | 0o755
T = 1_700_000_000_000_000_000


async def _setup() -> tuple[MetaService, int, str, str]:
    """A service, a directory, and two listening sessions (past their first poll)."""
    service = MetaService(open_database(":memory:"))
    vol = await service.volume_create("v", 1 << 30, 2, 1 << 20)
    d = await service.fs_mknod(vol["root"], b"d", DIR, 0, 0)
    a = await service.session_open("a")
    b = await service.session_open("b")
    for session in (a, b):
        await service.session_listen(session, 30.0, 0.0)  # the first poll: a reset
    return service, d["ino"], a, b


def create(name: bytes, ino: int, hold: bool = False) -> list:
    return ["c", name, ino, FILE, 1000, 1000, 0, None, T, hold]


@trio_test
async def test_a_grant_reserves_inode_numbers_nobody_else_gets():
    service, d, a, _ = await _setup()
    grant = await service.dir_delegate(a, d)
    assert grant is not None and grant["dir"]["ino"] == d
    assert grant["last"] - grant["first"] + 1 == delegations.RANGE
    root = (await service.volume_get("v"))["root"]
    other = await service.fs_mknod(root, b"x", FILE, 0, 0)
    assert other["ino"] > grant["last"]
    assert await service.dir_delegate(a, d) is None  # held already


@trio_test
async def test_a_directory_made_by_a_listening_mount_comes_delegated_to_it():
    """mkdir with ``delegate``: the new directory is granted at once, with numbers from
    the session's pool (reserved on disk once per POOL); a file, or a session that does
    not ask, gets none."""
    service, d, a, b = await _setup()
    made = await service.fs_mknod(d, b"new", DIR, 0, 0, 0, None, a, True)
    g = made["grant"]
    assert g["dir"]["ino"] == made["ino"] and "parent" not in g["dir"]
    assert g["last"] - g["first"] + 1 == delegations.RANGE
    other = await service.fs_mknod(d, b"x", FILE, 0, 0)
    assert other["ino"] > g["first"] + delegations.POOL - 1  # the pool is a's alone
    again = await service.fs_mknod(d, b"new2", DIR, 0, 0, 0, None, a, True)
    assert again["grant"]["first"] == g["last"] + 1  # from the same pool: no disk wait
    ops = [create(b"f", g["first"])]
    await service.fs_apply(a, made["ino"], g["grant"], ops)
    assert (await service.fs_lookup(made["ino"], b"f", a))["ino"] == g["first"]
    assert "grant" not in await service.fs_mknod(d, b"f2", FILE, 0, 0, 0, None, a, True)
    assert "grant" not in await service.fs_mknod(d, b"plain", DIR, 0, 0, 0, None, a)
    assert "grant" not in await service.fs_mknod(d, b"cli", DIR, 0, 0, 0, None, None, True)
    with pytest.raises(InvalidArgument):
        await service.fs_mknod(d, b"bad", DIR, 0, 0, 0, None, b, "yes")
    await service.session_close(a)
    assert service.delegations.pool_short(a)


@trio_test
async def test_a_grant_is_extended_while_held_and_a_batch_creates_with_every_range():
    """dir.extend: more numbers from the session's pool, twice the last range (at most
    EXTEND_MAX), nobody else's; a batch may create with any range of the grant, not
    with another's; a grant not held (any more) is extended no more."""
    service, d, a, b = await _setup()
    g = await service.dir_delegate(a, d)
    size = delegations.RANGE
    more = await service.dir_extend(a, d, g["grant"])
    assert more["last"] - more["first"] + 1 == 2 * size
    assert more["first"] > g["last"]
    root = (await service.volume_get("v"))["root"]
    other = await service.fs_mknod(root, b"x", FILE, 0, 0)
    assert not more["first"] <= other["ino"] <= more["last"]
    sizes = [more["last"] - more["first"] + 1]
    for _ in range(6):
        step = await service.dir_extend(a, d, g["grant"])
        sizes.append(step["last"] - step["first"] + 1)
    assert max(sizes) == delegations.EXTEND_MAX and sizes == sorted(sizes)
    ops = [create(b"first", g["first"]), create(b"more", more["last"])]
    await service.fs_apply(a, d, g["grant"], ops)
    assert (await service.fs_lookup(d, b"more", a))["ino"] == more["last"]
    with pytest.raises(InvalidArgument):  # a number of no range of the grant
        await service.fs_apply(a, d, g["grant"], [create(b"bad", more["last"] + 10**9)])
    with pytest.raises(FsError) as stale:
        await service.dir_extend("nobody", d, g["grant"])
    assert stale.value.errno == errno.ESTALE
    assert await service.dir_extend(b, d, g["grant"]) is None  # not b's
    await service.fs_apply(a, d, g["grant"], [], True)  # given back
    assert await service.dir_extend(a, d, g["grant"]) is None
    with pytest.raises(InvalidArgument):
        await service.dir_extend(a, "d", g["grant"])


@trio_test
async def test_a_grant_says_how_many_events_were_queued_for_the_holder_before_it():
    service, d, a, _ = await _setup()
    with pytest.raises(FsError):
        await service.fs_lookup(d, b"x", a)  # a watches d
    await service.fs_mknod(d, b"by-the-cli", FILE, 0, 0)  # no session: no watch
    grant = await service.dir_delegate(a, d)
    assert grant is not None and grant["upto"] == 2  # d's attributes, and the new entry


@trio_test
async def test_a_directory_another_mount_watches_is_not_delegated():
    service, d, a, b = await _setup()
    with pytest.raises(FsError):
        await service.fs_lookup(d, b"missing", b)  # b's kernel may cache "missing"
    assert await service.dir_delegate(a, d) is None
    assert await service.dir_delegate(b, d) is not None  # its own watch is no obstacle


@trio_test
async def test_a_session_that_does_not_listen_gets_no_grant():
    service, d, _, _ = await _setup()
    quiet = await service.session_open("quiet")
    assert await service.dir_delegate(quiet, d) is None
    with pytest.raises(FsError) as info:
        await service.dir_delegate("no-such-session", d)
    assert info.value.errno == errno.ESTALE


@trio_test
async def test_a_batch_applies_in_order_in_one_transaction():
    service, d, a, _ = await _setup()
    g = await service.dir_delegate(a, d)
    first = g["first"]
    ops = [
        create(b"f1", first, hold=True),
        create(b"f2", first + 1),
        ["m", b"f2", b"f3", 0, T],
        ["u", b"f1", T],  # held by a (the create held it): kept as an orphan
        ["f", first],  # a's kernel forgot it: deleted now
    ]
    answer = await service.fs_apply(a, d, g["grant"], ops)
    assert answer["deleted"] == [first]
    assert answer["parent"]["ino"] == d
    listing = await service.fs_readdir(d, 0, 100, False, a)
    assert [name for name, _, _ in listing] == [b"f3"]
    f3 = await service.fs_lookup(d, b"f3", a)
    assert f3["ino"] == first + 1 and f3["uid"] == 1000 and f3["mtime_ns"] == T


@trio_test
async def test_a_batch_that_fails_a_check_changes_nothing():
    service, d, a, _ = await _setup()
    g = await service.dir_delegate(a, d)
    ops = [create(b"f1", g["first"]), ["u", b"not-there", T]]
    with pytest.raises(FsError) as info:
        await service.fs_apply(a, d, g["grant"], ops)
    assert info.value.errno == errno.ENOENT
    assert await service.fs_readdir(d, 0, 100, False, a) == []
    for bad in (
        [create(b"f", g["last"] + 1)],  # outside the grant's range
        [["c", b"d", g["first"], DIR, 0, 0, 0, None, T, False]],  # a directory
        [["x"]],
        [["u", "text"]],
        "not a list",
    ):
        with pytest.raises(InvalidArgument):
            await service.fs_apply(a, d, g["grant"], bad)


@trio_test
async def test_a_batch_sets_attributes_of_a_file_made_under_the_grant():
    """chmod, chown and utimens answered by the holder (tar x sets each file's owner,
    mode and times): applied in order, ctime the holder's time, -1 meaning that time;
    only to an inode of the grant's range."""
    service, d, a, _ = await _setup()
    g = await service.dir_delegate(a, d)
    ino = g["first"]
    ops = [
        create(b"f", ino),
        ["a", b"f", ino, {"mtime_ns": 5, "atime_ns": -1}, T + 1],
        ["a", b"f", ino, {"uid": 7, "gid": 8}, T + 2],
        ["a", b"f", ino, {"mode": stat.S_IFDIR | 0o4640}, T + 3],  # the type is kept
    ]
    await service.fs_apply(a, d, g["grant"], ops)
    attr = await service.fs_getattr(ino)
    assert (attr["mtime_ns"], attr["atime_ns"], attr["ctime_ns"]) == (5, T + 1, T + 3)
    assert (attr["uid"], attr["gid"], attr["mode"]) == (7, 8, stat.S_IFREG | 0o4640)

    # Applied by inode: a name it lost or gained meanwhile (a rename or a link that
    # raced the change) does not refuse the batch; a deleted inode is skipped.
    await service.fs_link(ino, d, b"f-too", a)
    await service.fs_apply(a, d, g["grant"], [["a", b"old-name", ino, {"uid": 9}, T + 4]])
    assert (await service.fs_getattr(ino))["uid"] == 9
    gone = ino + 1
    ops = [create(b"g", gone), ["u", b"g", T], ["f", gone], ["a", b"g", gone, {"uid": 1}, T]]
    assert (await service.fs_apply(a, d, g["grant"], ops))["deleted"] == [gone]
    with pytest.raises(FsError):
        await service.fs_getattr(gone)
    for bad in (
        ["a", b"f", ino, {"size": 0}, T],  # a size goes through fs.setattr
        ["a", b"f", ino, {}, T],
        ["a", b"f", ino, {"uid": -2}, T],
        ["a", b"f", ino, {"mode": "rw"}, T],
        ["a", b"f", g["last"] + 1, {"uid": 1}, T],  # outside the grant's range
        ["a", b"f", ino, {"uid": 1}],
        ["a", "f", ino, {"uid": 1}, T],
        ["a", b"f", ino, {"uid": 1}, "now"],
    ):
        with pytest.raises(InvalidArgument):
            await service.fs_apply(a, d, g["grant"], [bad])


@trio_test
async def test_a_close_commits_along_with_the_batch_and_fails_alone():
    """A written file's close in a held directory is one fs.apply: its create, then its
    commit, one transaction. A commit that fails is undone alone (savepoint): the batch
    stays applied, and the answer carries the commit's error for the close."""
    service, d, a, _ = await _setup()
    g = await service.dir_delegate(a, d)
    ino, cid = g["first"], "ab" * 32
    answer = await service.fs_apply(
        a, d, g["grant"], [create(b"f", ino)], False, False, [ino, 1000, [[0, cid, 0, 1000]], None]
    )
    assert answer["commit"]["attr"]["size"] == 1000
    assert (await service.fs_getattr(ino))["size"] == 1000
    assert await service.fs_chunks(ino, 0, 0) == [[0, cid, 0, 1000]]

    # A commit whose first piece is fine and second is not: neither piece stays.
    bad = [[0, "cd" * 32, 0, 500], [1, "cd" * 32, 0, -5]]
    answer = await service.fs_apply(
        a, d, g["grant"], [create(b"g", ino + 1)], False, False, [ino, 2 << 20, bad, None]
    )
    assert answer["commit"]["error"]["code"] in ("EINVAL", "INVALID_ARGUMENT"), answer
    assert (await service.fs_lookup(d, b"g", a))["ino"] == ino + 1  # the batch applied
    assert (await service.fs_getattr(ino))["size"] == 1000  # the commit did not
    assert await service.fs_chunks(ino, 0, 1) == [[0, cid, 0, 1000]]
    answer = await service.fs_apply(a, d, g["grant"], [], False, False, [ino, -1, [], None])
    assert answer["commit"]["error"]["code"] == "EFBIG"

    for malformed in ([ino, 1], "x", [ino, 1, "pieces", None], [str(ino), 1, [], None]):
        with pytest.raises(InvalidArgument):  # the whole call: nothing applied
            await service.fs_apply(
                a, d, g["grant"], [create(b"h", ino + 2)], False, False, malformed
            )
    with pytest.raises(FsError):
        await service.fs_lookup(d, b"h", a)


@trio_test
async def test_another_mounts_lookup_recalls_and_sees_every_acknowledged_change():
    """B's lookup waits while A, told of the recall with its next poll, sends its last
    batch and gives the directory back; B then sees A's changes: a serial order."""
    service, d, a, b = await _setup()
    g = await service.dir_delegate(a, d)
    seen: dict = {}

    async def b_looks() -> None:
        seen["f"] = await service.fs_lookup(d, b"f", b)

    async with trio.open_nursery() as nursery:
        nursery.start_soon(b_looks)
        poll = await service.session_listen(a, 30.0, 1.0)
        assert poll["events"] == [["r", d, g["grant"]]]
        assert "f" not in seen  # still waiting for A
        await service.fs_apply(a, d, g["grant"], [create(b"f", g["first"])], True)
    assert seen["f"]["ino"] == g["first"]
    assert await service.dir_delegate(a, d) is None  # recalled lately, and b watches it


@trio_test
async def test_a_holder_that_does_not_answer_a_recall_loses_its_grant(monkeypatch):
    monkeypatch.setattr("storaged.meta.service.RECALL_WAIT", 0.2)
    service, d, a, b = await _setup()
    g = await service.dir_delegate(a, d)
    with trio.fail_after(5):
        listing = await service.fs_readdir(d, 0, 100, False, b)  # A never answers
    assert listing == []
    with pytest.raises(FsError) as info:
        await service.fs_apply(a, d, g["grant"], [create(b"late", g["first"])])
    assert info.value.errno == errno.ENOLCK
    assert await service.fs_readdir(d) == []


@trio_test
async def test_changes_by_the_holder_itself_recall_nothing():
    service, d, a, _ = await _setup()
    g = await service.dir_delegate(a, d)
    with trio.fail_after(1):
        await service.fs_mknod(d, b"sync", FILE, 0, 0, 0, None, a)
        await service.fs_lookup(d, b"sync", a)
    answer = await service.fs_apply(a, d, g["grant"], [create(b"f", g["first"])], True)
    assert answer["parent"]["nlink"] == 2
    with pytest.raises(FsError) as info:  # given back: a second batch is refused
        await service.fs_apply(a, d, g["grant"], [])
    assert info.value.errno == errno.ENOLCK
    with pytest.raises(FsError) as info:  # and not taken as one from before a restart
        await service.fs_apply(a, d, g["grant"], [], True, True)
    assert info.value.errno == errno.ENOLCK


@trio_test
async def test_a_snapshot_recalls_every_delegation_first():
    service, d, a, _ = await _setup()
    g = await service.dir_delegate(a, d)

    async def holder_answers() -> None:
        poll = await service.session_listen(a, 30.0, 2.0)
        assert poll["events"] == [["r", d, g["grant"]]]
        await service.fs_apply(a, d, g["grant"], [create(b"f", g["first"])], True)

    async with trio.open_nursery() as nursery:
        nursery.start_soon(holder_answers)
        snap = await service.snapshot_create("s", "v")
    root = snap["root"]
    copied = await service.fs_lookup(root, b"d")
    assert [name for name, _, _ in await service.fs_readdir(copied["ino"])] == [b"f"]


@trio_test
async def test_a_snapshot_waits_once_for_a_holder_of_many_directories_that_does_not_answer(
    monkeypatch,
):
    monkeypatch.setattr("storaged.meta.service.RECALL_WAIT", 0.3)
    service, d, a, _ = await _setup()
    for i in range(8):  # (a mount holds every directory it made in its last seconds)
        made = await service.fs_mknod(d, b"d%d" % i, DIR, 0, 0, 0, None, a, True)
        assert "grant" in made
    started = trio.current_time()
    await service.snapshot_create("s", "v")  # a never answers
    assert trio.current_time() - started < 8 * 0.3 / 2  # one wait, not eight
    assert service.delegations.every() == []  # all revoked


@trio_test
async def test_a_closed_session_holds_nothing():
    service, d, a, b = await _setup()
    g = await service.dir_delegate(a, d)
    await service.session_close(a)
    with trio.fail_after(1):
        assert await service.fs_readdir(d, 0, 10, False, b) == []
    assert service.delegations.find(a, d, g["grant"]) is None


@trio_test
async def test_a_batch_from_before_a_restart_is_reclaimed_under_the_new_session(tmp_path):
    """The meta role restarted with a grant out: its holder registers again and sends
    the batch it could not send as a reclaim; applied, as its numbers were reserved."""
    path = tmp_path / "meta.db"
    first = MetaService(open_database(path))
    vol = await first.volume_create("v", 1 << 30, 2, 1 << 20)
    d = (await first.fs_mknod(vol["root"], b"d", DIR, 0, 0))["ino"]
    a = await first.session_open("a")
    await first.session_listen(a, 30.0, 0.0)
    g = await first.dir_delegate(a, d)
    first.conn.close()

    again = MetaService(open_database(path))  # a new life: no grants, sessions restored
    a2 = await again.session_open("a, registered again")
    ops = [create(b"f", g["first"]), create(b"h", g["first"] + 1), ["u", b"h", T]]
    with pytest.raises(FsError) as info:  # the old session is not live: register first
        await again.fs_apply(a, d, g["grant"], ops, True, True)
    assert info.value.errno == errno.ESTALE
    with pytest.raises(FsError) as info:  # not a reclaim: the grant is not known
        await again.fs_apply(a2, d, g["grant"], ops, True)
    assert info.value.errno == errno.ENOLCK
    with pytest.raises(FsError) as info:  # a number never reserved is refused
        await again.fs_apply(a2, d, g["grant"], [create(b"x", g["last"] + 10)], True, True)
    assert info.value.errno == errno.EINVAL
    await again.fs_apply(a2, d, g["grant"], ops, True, True)
    found = await again.fs_lookup(d, b"f")
    assert found["ino"] == g["first"]
    assert [name for name, _, _ in await again.fs_readdir(d)] == [b"f"]
    with pytest.raises(FsError) as info:  # sent twice: the second finds the name there
        await again.fs_apply(a2, d, g["grant"], ops[:1], True, True)
    assert info.value.errno == errno.EEXIST


def test_a_directory_named_by_a_request_in_progress_elsewhere_is_not_granted():
    """A lookup or create of another mount that waits for the database (it recalled
    nothing: no grant then) keeps the directory from being granted until it is answered:
    else the holder would answer from names that are no longer all the names."""
    table = delegations.Delegations()
    b_lookup = table.mark(7, "b")
    assert table.refusal("a", 7, []) == "named by a request of another mount in progress"
    # One of its own is no refusal: the grant waits for it instead (``pending``).
    assert table.refusal("b", 7, []) == ""
    assert table.pending("b", 7) == [b_lookup.answered]
    cli = table.mark(7, None)  # a request with no session (the CLI)
    table.unmark(7, b_lookup)
    assert b_lookup.answered.is_set()
    assert table.pending("b", 7) == []
    assert table.refusal("b", 7, []) != ""
    table.unmark(7, cli)
    assert table.refusal("a", 7, []) == ""


@trio_test
async def test_a_grant_waits_for_the_askers_own_requests_in_progress():
    """The mount's next create is nearly always in flight when it asks: the grant is made
    once that is answered, with ``upto`` counting what it was owed; one still waiting
    past OWN_WAIT gets no grant."""
    service, d, a, _ = await _setup()
    # a's lookup in d starts (a does not watch d yet) ...
    since = service.watches.mark()
    naming = service.delegations.mark(d, a)
    await service.fs_mknod(d, b"by-the-cli", FILE, 0, 0)  # ... the CLI creates in d ...
    answers = []

    async def ask():
        answers.append(await service.dir_delegate(a, d))

    async with trio.open_nursery() as nursery:
        nursery.start_soon(ask)  # ... a asks for d ...
        await trio.sleep(0.2)
        assert answers == []  # (waiting for a's lookup)
        service.watches.watch(a, [d], since)  # ... the lookup ends, owed the create
        service.delegations.unmark(d, naming)
    assert answers[0] is not None and answers[0]["upto"] == 2  # counted before the grant
    service.delegations.end(service.delegations.of_session(a)[0])

    service.delegations.mark(d, a)  # never answered
    before = trio.current_time()
    assert await service.dir_delegate(a, d) is None
    assert trio.current_time() - before >= delegations.OWN_WAIT


@trio_test
async def test_every_request_through_the_method_table_marks_what_it_names_until_answered():
    from storaged.rpc.methods import MethodTable

    service, d, a, b = await _setup()
    table = MethodTable()
    service.register(table)
    lookup = table.get("fs.lookup").handler
    seen = []
    real = service._read

    async def read_and_look(fn, *args):
        seen.append(service.delegations.refusal(a, d, []))
        return await real(fn, *args)

    service._read = read_and_look
    with pytest.raises(FsError):
        await lookup(d, b"nothing", b)
    assert seen == ["named by a request of another mount in progress"]
    assert service.delegations.refusal(a, d, []) == ""  # answered: free again
