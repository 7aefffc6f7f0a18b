"""fastio on real loopback TCP: the same bytes and the same errors as trio's SocketStream."""

from __future__ import annotations

import os
import socket

import pytest
import trio
import trio.testing
from trio.testing import trio_test

from storaged.rpc import fastio


async def _pair() -> tuple[trio.SocketStream, trio.SocketStream]:
    listeners = await trio.open_tcp_listeners(0, host="127.0.0.1")
    port = listeners[0].socket.getsockname()[1]
    client = await trio.open_tcp_stream("127.0.0.1", port)
    server = await listeners[0].accept()
    await listeners[0].aclose()
    return client, server


async def _read_exactly(stream: trio.SocketStream, n: int) -> bytes:
    got = bytearray()
    while len(got) < n:
        data = await fastio.receive_some(stream, 1 << 20)
        assert data, "stream ended early"
        got += data
    return bytes(got)


@trio_test
async def test_large_sends_that_fill_the_socket_buffer_arrive_whole_and_in_order():
    client, server = await _pair()
    payload = os.urandom(8 << 20)  # far more than a socket buffer: partial writes happen
    parts = [payload[:10], memoryview(payload)[10 : 5 << 20], bytearray(payload[5 << 20 :])]
    async with trio.open_nursery() as nursery:

        async def send() -> None:
            for part in parts:
                await fastio.send_all(client, part)

        nursery.start_soon(send)
        assert await _read_exactly(server, len(payload)) == payload
    await client.aclose()
    assert await fastio.receive_some(server, 100) == b""  # end of stream
    await server.aclose()


@trio_test
async def test_closed_and_broken_streams_raise_trios_stream_errors():
    client, server = await _pair()
    await client.aclose()
    with pytest.raises(trio.ClosedResourceError):
        await fastio.send_all(client, b"x")
    with pytest.raises(trio.ClosedResourceError):
        await fastio.receive_some(client, 10)
    await server.aclose()
    # The peer resets the connection: sending to it soon fails as a broken stream.
    client2, server2 = await _pair()
    server2.socket.setsockopt(
        socket.SOL_SOCKET, socket.SO_LINGER, (1).to_bytes(4, "little") + (0).to_bytes(4, "little")
    )
    await server2.aclose()  # linger 0: the close sends a reset
    await trio.sleep(0.05)
    with pytest.raises(trio.BrokenResourceError):
        for _ in range(100):  # bounded: the first or second send sees the reset
            await fastio.send_all(client2, b"y" * 1024)
            await trio.sleep(0.01)
    await client2.aclose()


@trio_test
async def test_a_receive_waiting_when_its_stream_is_closed_ends_with_closed_resource():
    client, server = await _pair()
    outcome: list[BaseException] = []

    async def wait_for_data() -> None:
        try:
            await fastio.receive_some(client, 10)
        except trio.ClosedResourceError as exc:
            outcome.append(exc)

    async with trio.open_nursery() as nursery:
        nursery.start_soon(wait_for_data)
        await trio.sleep(0.05)
        await client.aclose()
    assert len(outcome) == 1
    await server.aclose()


@trio_test
async def test_other_streams_take_their_own_path():
    left, right = trio.testing.memory_stream_pair()
    await fastio.send_all(left, b"hello")
    assert await fastio.receive_some(right, 100) == b"hello"


@trio_test
async def test_receive_into_fills_a_buffer_from_tcp_and_from_other_streams():
    payload = os.urandom(3 << 20)
    client, server = await _pair()
    memory_send, memory_receive = trio.testing.memory_stream_pair()
    for sender, receiver in [(client, server), (memory_send, memory_receive)]:
        buffer = bytearray(len(payload))
        async with trio.open_nursery() as nursery:
            nursery.start_soon(fastio.send_all, sender, payload)
            filled = 0
            while filled < len(payload):
                with memoryview(buffer)[filled:] as target:
                    count = await fastio.receive_into(receiver, target)
                assert count > 0, "stream ended early"
                filled += count
        assert buffer == payload
        await sender.aclose()
        with memoryview(buffer) as target:
            assert await fastio.receive_into(receiver, target) == 0  # end of stream
        await receiver.aclose()
