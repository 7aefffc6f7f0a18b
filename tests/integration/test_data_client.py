"""The data client against a real meta role and 3 real chunk servers, R=2."""

from __future__ import annotations

import os

import pytest
import trio

from storaged.chunk.ids import chunk_id
from storaged.data.client import ChunkUnavailable, DataClient, NotDurable, NotEnoughReplicas
from storaged.data.placement import placement_order
from storaged.metaclient import MetaClient
from storaged.rpc import RpcClient
from tests.helpers import LocalCluster, StoragedProcess, call


def run(cluster, fn):
    async def go():
        async with RpcClient(cluster.secret, connect_timeout=2) as rpc:
            return await fn(DataClient(MetaClient(rpc, cluster.meta.address), refresh_seconds=0))

    return trio.run(go)


def test_writes_land_on_r_servers_in_placement_order_and_read_back(cluster):
    blobs = [os.urandom(200_000) for _ in range(12)]

    async def go(data: DataClient):
        ids = [await data.put(b, 2) for b in blobs]
        servers = await data.servers()
        for blob, cid in zip(blobs, ids):
            assert await data.get(cid) == blob
            expected = {s.id for s in placement_order(cid, servers)[:2]}
            holders = {servers_by_dir[i] for i in cluster.holders(cid)}
            assert holders == expected
        return ids

    servers_by_dir = {
        i: (c.data_dir / "server-id").read_text().strip() for i, c in enumerate(cluster.chunks)
    }
    ids = run(cluster, go)
    assert ids == [chunk_id(b) for b in blobs]


def test_a_dead_server_is_passed_over_for_writes_and_reads(cluster):
    data_before = os.urandom(100_000)
    cid_before = run(cluster, lambda d: d.put(data_before, 2))
    victim = cluster.holders(cid_before)[0]
    cluster.chunks[victim].kill()  # the meta role still thinks it is up for a while

    async def go(data: DataClient):
        assert await data.get(cid_before) == data_before  # the other copy
        fresh = [os.urandom(50_000) for _ in range(10)]
        ids = [await data.put(b, 2) for b in fresh]
        for b, cid in zip(fresh, ids):
            assert await data.get(cid) == b
        return ids

    for cid in run(cluster, go):
        holders = cluster.holders(cid)
        assert len(holders) == 2 and victim not in holders


def test_too_few_servers_fail_the_write_clearly(cluster):
    cluster.chunks[0].kill()
    cluster.chunks[1].kill()
    with pytest.raises(NotEnoughReplicas, match="on 1 of 2 required servers"):
        run(cluster, lambda d: d.put(b"x" * 1000, 2))


def test_a_corrupted_copy_is_skipped_and_reported(cluster):
    blob = os.urandom(300_000)
    cid = run(cluster, lambda d: d.put(blob, 2))
    order = run(cluster, lambda d: d.servers())
    first = placement_order(cid, order)[0]
    index = next(
        i
        for i, c in enumerate(cluster.chunks)
        if (c.data_dir / "server-id").read_text().strip() == first.id
    )
    path = cluster.chunks[index].data_dir / "chunks" / cid[:2] / cid[2:4] / cid
    raw = bytearray(path.read_bytes())
    raw[7] ^= 0xFF
    path.write_bytes(raw)
    assert run(cluster, lambda d: d.get(cid)) == blob
    bad = call(cluster.meta.address, cluster.secret, "cluster.bad_copies")
    assert [(b["chunk_id"], b["server_id"]) for b in bad] == [(cid, first.id)]
    assert bad[0]["reason"].startswith("CORRUPTED")


def test_a_chunk_with_no_good_copy_is_an_error_not_wrong_bytes(cluster):
    with pytest.raises(ChunkUnavailable, match="no good copy"):
        run(cluster, lambda d: d.get(chunk_id(b"never written")))


def test_ranged_reads_fetch_only_the_blocks_and_skip_a_bad_copy(cluster):
    blob = os.urandom(1 << 20)
    cid = run(cluster, lambda d: d.put(blob, 2))

    async def ranges(data: DataClient):
        return [
            await data.read(cid, off, n)
            for off, n in [(0, 10), (70_000, 4096), (65_536, 65_536), ((1 << 20) - 5, 100), (5, 0)]
        ]

    assert run(cluster, ranges) == [
        blob[:10],
        blob[70_000:74_096],
        blob[65_536:131_072],
        blob[-5:],
        b"",
    ]
    first = placement_order(cid, run(cluster, lambda d: d.servers()))[0]
    index = next(
        i
        for i, c in enumerate(cluster.chunks)
        if (c.data_dir / "server-id").read_text().strip() == first.id
    )
    path = cluster.chunks[index].data_dir / "chunks" / cid[:2] / cid[2:4] / cid
    assert path.with_name(cid + ".blocks").exists()  # the first server answered those
    raw = bytearray(path.read_bytes())
    raw[200_000] ^= 0xFF
    path.write_bytes(raw)
    assert run(cluster, lambda d: d.read(cid, 199_000, 4096)) == blob[199_000:203_096]
    bad = call(cluster.meta.address, cluster.secret, "cluster.bad_copies")
    assert [(b["chunk_id"], b["server_id"]) for b in bad] == [(cid, first.id)]


async def _chunks_away_from(data: DataClient, survivor, count: int) -> list[tuple[str, bytes]]:
    """``count`` chunks written with R=2 that have no copy on ``survivor``'s server."""
    away: list[tuple[str, bytes]] = []  # about 1 in 3
    for _ in range(200):
        blob = os.urandom(100_000)
        cid = await data.put(blob, 2)
        if not (survivor / "chunks" / cid[:2] / cid[2:4] / cid).exists():
            away.append((cid, blob))
            if len(away) == count:
                return away
    raise AssertionError(f"only {len(away)} of 200 chunks missed {survivor}")


def test_reads_that_fail_together_on_a_stale_map_all_retry_with_the_new_one(cluster):
    """Two servers restart on new addresses while the client's map still has the old ones.
    Reads that fail at the same moment must all look again: the first to fail fetches the
    new map, and the others must use it rather than give up because it is so fresh; and a
    read right after another one refreshed the map (no pause) looks again too."""
    survivor = cluster.chunks[0].data_dir

    async def go(data: DataClient):
        away = await _chunks_away_from(data, survivor, 5)
        await trio.to_thread.run_sync(restart_two)
        got: dict[str, bytes] = {}

        async def read(cid: str) -> None:
            got[cid] = await data.get(cid)

        async with trio.open_nursery() as nursery:
            for cid, _ in away[:4]:
                nursery.start_soon(read, cid)
        assert got == dict(away[:4])
        await trio.to_thread.run_sync(restart_two)  # again, a moment after that refresh
        assert await data.get(away[4][0]) == away[4][1]

    def restart_two() -> None:
        for i in (1, 2):
            cluster.chunks[i].kill()
            cluster.chunks[i] = StoragedProcess(
                cluster.chunks[i].data_dir, cluster.secret_file, extra=cluster.chunk_args(i)
            ).start()
        cluster.wait_registered()

    async def with_stale_map():
        async with RpcClient(cluster.secret, connect_timeout=2) as rpc:
            await go(DataClient(MetaClient(rpc, cluster.meta.address), refresh_seconds=3600))

    trio.run(with_stale_map)


def test_a_read_and_a_write_wait_for_a_restarting_server_to_register(tmp_path, secret_file):
    """Requests that need servers which were SIGKILLed and are starting again on new
    addresses (the meta role still counts the old instances as up) wait for the new
    instances' first heartbeats instead of failing, and then succeed; once the meta role
    has marked a server down, nobody waits for it (test_too_few_servers_fail...)."""
    cluster = LocalCluster(tmp_path / "cluster", secret_file)
    # the old instances stay 'up' however slowly the new ones start: no race with liveness
    cluster.meta.extra = ["--roles", "meta", "--heartbeat-timeout", "60"]
    survivor = cluster.start().chunks[0].data_dir

    async def go(data: DataClient):
        away = await _chunks_away_from(data, survivor, 1)
        for i in (1, 2):
            cluster.chunks[i].kill()
        got: list[object] = []

        async def restart_later() -> None:
            await trio.sleep(0.3)  # the requests below are already failing and waiting
            await trio.to_thread.run_sync(restart_both)

        async def read() -> None:
            got.append(await data.get(away[0][0]))

        async def write() -> None:
            got.append(await data.put(b"w" * 50_000, 2))

        async with trio.open_nursery() as nursery:
            nursery.start_soon(restart_later)
            nursery.start_soon(read)
            nursery.start_soon(write)
        assert away[0][1] in got and chunk_id(b"w" * 50_000) in got

    def restart_both() -> None:
        for i in (1, 2):
            cluster.chunks[i] = StoragedProcess(
                cluster.chunks[i].data_dir, cluster.secret_file, extra=cluster.chunk_args(i)
            ).start()

    async def with_fresh_map():
        async with RpcClient(cluster.secret, connect_timeout=2) as rpc:
            await go(
                DataClient(
                    MetaClient(rpc, cluster.meta.address), refresh_seconds=3600, restart_wait=60
                )
            )

    try:
        trio.run(with_fresh_map)
    finally:
        cluster.stop()


def test_a_server_the_meta_role_counts_up_but_that_stays_away_fails_within_the_wait(cluster):
    """The wait for a restarting server is bounded: nothing comes back, the read fails."""
    survivor = cluster.chunks[0].data_dir

    async def go(data: DataClient):
        away = await _chunks_away_from(data, survivor, 1)
        for i in (1, 2):
            cluster.chunks[i].kill()
        started = trio.current_time()
        with pytest.raises(ChunkUnavailable, match="cannot connect"):
            await data.get(away[0][0])
        assert trio.current_time() - started < 10  # restart_wait 1 s, a few connects

    async def with_short_wait():
        async with RpcClient(cluster.secret, connect_timeout=2) as rpc:
            await go(DataClient(MetaClient(rpc, cluster.meta.address), restart_wait=1))

    trio.run(with_short_wait)


def _buffered_run(cluster, fn, restart_wait: float = 5.0):
    async def go():
        async with RpcClient(cluster.secret, connect_timeout=2) as rpc:
            meta = MetaClient(rpc, cluster.meta.address)
            return await fn(DataClient(meta, buffered=True, restart_wait=restart_wait))

    return trio.run(go)


async def _waiting(data: DataClient, cluster) -> list[int]:
    """Each chunk server's small chunks answered and not yet on its disk."""
    return [
        (await data.rpc.call(c.address, "health"))["buffered"]["waiting"] for c in cluster.chunks
    ]


def test_buffered_puts_are_on_r_servers_at_once_and_one_sync_puts_them_on_disk(
    tmp_path, secret_file
):
    """Small chunks put buffered are stored (readable, R copies) when put answers; the
    servers' own pass is far away here (--sync-interval 60), so they wait until the
    client's sync: one chunk.sync per server, after which none waits. A large chunk is
    put durably all the same."""
    cluster = LocalCluster(tmp_path / "cluster", secret_file, chunk_extra=["--sync-interval", "60"])
    cluster.start()
    blobs = [os.urandom(10_000 + i) for i in range(10)]

    async def go(data: DataClient):
        ids = [await data.put(b, 2, durable=False) for b in blobs]
        for blob, cid in zip(blobs, ids):
            assert await data.get(cid) == blob
            assert len(cluster.holders(cid)) == 2
        assert sum(await _waiting(data, cluster)) == 2 * len(blobs)
        large = os.urandom(300_000)
        await data.put(large, 2, durable=False)  # above BUFFERED_MAX: durable anyway
        assert sum(await _waiting(data, cluster)) == 2 * len(blobs)
        await data.sync()
        assert await _waiting(data, cluster) == [0, 0, 0]
        assert not data._unsynced

    try:
        _buffered_run(cluster, go)
    finally:
        cluster.stop()


def test_a_sync_says_when_a_server_cannot_confirm_its_buffered_chunks(cluster):
    """A server's machine that restarted (another boot id) may have lost what it had
    not synced, and a server that stays away cannot confirm anything: the sync raises
    NotDurable naming it (an fsync then fails with EIO), once."""

    async def go(data: DataClient):
        await data.put(os.urandom(5000), 2, durable=False)
        [sid, *_] = data._unsynced
        data._unsynced[sid] = {"another-boot": 3}  # as answered before a machine restart
        with pytest.raises(NotDurable, match="restarted its machine before 3 buffered"):
            await data.sync()
        await data.sync()  # said once
        cid = await data.put(os.urandom(6000), 2, durable=False)
        victim = cluster.holders(cid)[0]
        cluster.chunks[victim].kill()
        with pytest.raises(NotDurable):
            await data.sync()

    _buffered_run(cluster, go, restart_wait=1.0)


def test_a_sync_after_a_server_was_killed_and_restarted_succeeds(tmp_path, secret_file):
    """A SIGKILLed server's buffered chunks are the kernel's pages (the same boot): its
    next instance puts them on disk when it opens the store, and the client's sync,
    after waiting for that instance to register, succeeds."""
    cluster = LocalCluster(tmp_path / "cluster", secret_file, chunk_extra=["--sync-interval", "60"])
    cluster.meta.extra = ["--roles", "meta", "--heartbeat-timeout", "60"]
    cluster.start()

    async def go(data: DataClient):
        blob = os.urandom(7000)
        cid = await data.put(blob, 2, durable=False)
        victim = cluster.holders(cid)[0]
        cluster.chunks[victim].kill()
        cluster.chunks[victim] = StoragedProcess(
            cluster.chunks[victim].data_dir,
            cluster.secret_file,
            extra=cluster.chunk_args(victim),
        ).start()
        await data.sync()
        assert not data._unsynced
        assert victim in cluster.holders(cid) and await data.get(cid) == blob

    try:
        _buffered_run(cluster, go, restart_wait=30.0)
    finally:
        cluster.stop()
