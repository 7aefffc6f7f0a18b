"""The msgpack-RPC protocol driven with byte strings only: no sockets."""

from __future__ import annotations

import os
import random

import msgpack
import pytest

from storaged.rpc.protocol import (
    BIG_MIN,
    InvalidMessage,
    MessageReader,
    Notification,
    ProtocolError,
    Request,
    Response,
    StreamError,
    classify,
    encode,
    encode_parts,
)

MESSAGES: list[Request | Response | Notification] = [
    Request(1, "chunk.put", ["ab" * 32, b"\x00\xffdata"]),
    Response(1, None, {"size": 6, "created": True}),
    Response(2, {"code": "NOT_FOUND", "message": "gone"}, None),
    Notification("error", [{"code": "BUSY", "message": "full"}]),
    Request(2**32 - 1, "health", []),
]


def stream() -> bytes:
    return b"".join(encode(m) for m in MESSAGES)


@pytest.mark.parametrize("message", MESSAGES, ids=lambda m: type(m).__name__)
def test_each_message_type_round_trips(message):
    reader = MessageReader(1 << 20)
    assert reader.feed(encode(message)) == [message]


def test_wire_shape_is_plain_msgpack_rpc():
    assert msgpack.unpackb(encode(Request(7, "m", [1])), raw=False) == [0, 7, "m", [1]]
    assert msgpack.unpackb(encode(Response(7, None, 2)), raw=False) == [1, 7, None, 2]
    assert msgpack.unpackb(encode(Notification("n", [])), raw=False) == [2, "n", []]


def test_coalesced_stream_gives_every_message_in_order():
    assert MessageReader(1 << 20).feed(stream()) == MESSAGES


def test_byte_at_a_time_gives_the_same_messages():
    reader = MessageReader(1 << 20)
    events = []
    for _i, byte in enumerate(stream()):
        events.extend(reader.feed(bytes([byte])))
    assert events == MESSAGES
    assert reader.buffered == 0


def test_every_two_piece_split_gives_the_same_messages():
    data = stream()
    for cut in range(len(data) + 1):
        reader = MessageReader(1 << 20)
        assert reader.feed(data[:cut]) + reader.feed(data[cut:]) == MESSAGES, cut


def test_empty_feed_is_harmless():
    assert MessageReader(1 << 20).feed(b"") == []


@pytest.mark.parametrize(
    "obj, msgid, fragment",
    [
        ({"not": "an array"}, None, "non-empty array"),
        ([], None, "non-empty array"),
        ([0, 1, "m"], 1, "4 elements"),
        ([0, 1, 5, []], 1, "method must be a string"),
        ([0, 1, "m", {}], 1, "params must be an array"),
        ([0, -1, "m", []], None, "msgid"),
        ([0, 2**32, "m", []], None, "msgid"),
        ([0, True, "m", []], None, "msgid"),
        ([0, "1", "m", []], None, "msgid"),
        ([1, 1, None], None, "response"),
        ([2, "n"], None, "notification"),
        ([2, 3, []], None, "notification"),
        ([9, 1, "m", []], None, "unknown message type"),
        ([True, 1, "m", []], None, "unknown message type"),
    ],
)
def test_invalid_messages_are_reported_with_the_msgid_when_known(obj, msgid, fragment):
    event = classify(obj)
    assert isinstance(event, InvalidMessage)
    assert event.msgid == msgid
    assert fragment in event.reason


def test_method_names_sent_as_bin_are_accepted_when_utf8():
    assert classify([0, 1, b"chunk.get", []]) == Request(1, "chunk.get", [])
    assert classify([2, b"hello", []]) == Notification("hello", [])
    assert isinstance(classify([0, 1, b"\xff\xfe", []]), InvalidMessage)


def test_malformed_msgpack_ends_with_a_stream_error_and_poisons_the_reader():
    reader = MessageReader(1 << 20)
    events = reader.feed(b"\xc1")  # 0xc1 is never used in msgpack
    assert len(events) == 1 and isinstance(events[0], StreamError)
    with pytest.raises(ProtocolError):
        reader.feed(encode(Request(1, "health", [])))


def test_messages_before_the_break_are_delivered_whatever_the_segmentation():
    data = encode(Request(1, "health", [])) + b"\xc1" + encode(Request(2, "health", []))
    whole = MessageReader(1 << 20).feed(data)
    assert whole[0] == Request(1, "health", []) and isinstance(whole[1], StreamError)
    assert len(whole) == 2
    reader, pieces = MessageReader(1 << 20), []
    for byte in data:
        pieces.extend(reader.feed(bytes([byte])))
        if isinstance(pieces[-1:] and pieces[-1], StreamError):
            break
    assert pieces[0] == whole[0] and isinstance(pieces[1], StreamError)


def test_invalid_utf8_in_a_string_breaks_the_stream():
    events = MessageReader(1 << 20).feed(b"\x94\x00\x01\xa2\xff\xfe\x90")
    assert isinstance(events[-1], StreamError)


def test_deep_nesting_breaks_the_stream_not_the_process():
    assert isinstance(MessageReader(1 << 20).feed(b"\x91" * 5000)[-1], StreamError)


def test_message_over_the_frame_limit_is_refused_even_in_pieces():
    big = encode(Request(1, "chunk.put", ["x", b"\0" * 5000]))
    reader = MessageReader(4096)
    events = []
    for i in range(0, len(big), 100):
        events.extend(reader.feed(big[i : i + 100]))
        if events:
            break
    assert len(events) == 1 and "frame limit of 4096" in events[0].reason
    assert reader.buffered <= 4096


def test_a_huge_length_header_never_makes_the_reader_buffer_past_the_limit():
    reader = MessageReader(4096)
    header = b"\x94\x00\x01\xa1m\x91\xc6" + (10**9).to_bytes(4, "big")  # bin32 of 1 GB
    events = reader.feed(header)
    while not events:
        events = reader.feed(b"\0" * 1024)
        assert reader.buffered <= 4096
    assert isinstance(events[-1], StreamError)


def test_message_of_exactly_the_limit_passes_and_many_small_ones_coalesce():
    payload = b"\0" * 4000
    one = encode(Request(1, "p", [payload]))
    reader = MessageReader(len(one))
    assert reader.feed(one) == [Request(1, "p", [payload])]
    # ten messages, each under the limit, arriving in one read far over it
    many = one * 10
    assert len(MessageReader(len(one)).feed(many)) == 10


def test_encode_refuses_values_msgpack_cannot_carry():
    with pytest.raises(TypeError):
        encode(Response(1, None, object()))


def test_large_trailing_bytes_are_spliced_not_copied_and_decode_the_same() -> None:
    """encode_parts hands a big final byte string over as its own piece; the joined pieces
    are byte for byte what msgpack packs, and a reader decodes them as the same message."""
    from storaged.rpc.protocol import SPLICE_MIN, encode_parts

    big = bytes(range(256)) * (SPLICE_MIN // 256 + 3)
    for message in (
        Request(7, "chunk.put", ["a" * 64, big]),
        Request(8, "x", [memoryview(big)]),
        Response(9, None, big),
        Response(10, None, bytearray(big)),
    ):
        parts = encode_parts(message)
        assert len(parts) == 2 and parts[1] is (
            message.params[-1] if isinstance(message, Request) else message.result
        )
        joined = b"".join(bytes(p) for p in parts)
        obj = (
            [
                0,
                message.msgid,
                message.method,
                [bytes(p) if isinstance(p, memoryview) else p for p in message.params],
            ]
            if isinstance(message, Request)
            else [1, message.msgid, None, bytes(message.result)]
        )
        assert joined == msgpack.packb(obj, use_bin_type=True)
        reader = MessageReader(max_frame=len(joined) + 100)
        (event,) = reader.feed(joined)
        assert isinstance(event, (Request, Response)) and event.msgid == message.msgid
    # small strings, errors and non-bytes stay one piece
    for message in (
        Request(1, "m", [b"x" * 10]),
        Response(2, {"code": "X", "message": ""}, None),
        Response(3, None, "s" * SPLICE_MIN),
        Request(4, "m", [big, 1]),
    ):
        assert len(encode_parts(message)) == 1


def test_a_map_with_an_unhashable_key_is_a_protocol_error_not_a_crash() -> None:
    """Found by the fuzz test: msgpack raises TypeError for a map keyed by a map, which
    escaped the reader and took the whole server down."""
    frame = b"\x81\x81\x00\x00\x00"  # {{0: 0}: 0}
    reader = MessageReader(max_frame=1024)
    events = reader.feed(frame)
    assert len(events) == 1 and isinstance(events[0], StreamError)
    assert "malformed" in events[0].reason


# -- large requests received into a buffer of their own (big_requests) -------------------

BIG = os.urandom(BIG_MIN + 12345)
BIG_STREAM = [
    Request(7, "chunk.put", ["ab" * 32, BIG]),
    Request(8, "health", []),
    Request(9, "chunk.put", ["cd" * 32, BIG[::-1]]),
    Request(10, "chunk.put", ["ef" * 32, BIG[:BIG_MIN]]),
    Request(11, "x", [1, {"k": [b"v"]}, BIG]),
]


def wire(messages) -> bytes:
    return b"".join(b"".join(encode_parts(m)) for m in messages)


def read_all(reader: MessageReader, data: bytes, cuts: list[int], into: bool) -> list:
    """Feed ``data`` cut at ``cuts``; with ``into``, bytes go where receive_buffer says,
    as a server's read loop puts them."""
    events: list = []
    pieces = [data[a:b] for a, b in zip([0, *cuts], [*cuts, len(data)])]
    for piece in pieces:
        while piece:
            target = reader.receive_buffer() if into else None
            if target is None:
                events.extend(reader.feed(piece))
                piece = b""
            else:
                count = min(len(target), len(piece))
                target[:count] = piece[:count]
                target.release()
                events.extend(reader.received(count))
                piece = piece[count:]
    return events


@pytest.mark.parametrize("into", [False, True])
def test_large_requests_come_out_the_same_whatever_the_cuts(into):
    data = wire(BIG_STREAM)
    rng = random.Random(5)
    for _ in range(40):
        cuts = sorted(rng.sample(range(1, len(data)), rng.randint(0, 12)))
        events = read_all(MessageReader(1 << 26, big_requests=True), data, cuts, into)
        assert events == BIG_STREAM  # a bytearray equals the bytes it holds


def test_a_large_request_starting_a_read_is_received_into_its_own_buffer():
    reader = MessageReader(1 << 26, big_requests=True)
    data = wire(BIG_STREAM[:2])
    first = len(encode_parts(BIG_STREAM[0])[0]) + 100
    assert reader.feed(data[:first]) == []
    target = reader.receive_buffer()
    assert target is not None and len(target) == len(BIG) - 100
    rest = data[first : first + len(target)]
    target[:] = rest
    target.release()
    [event] = reader.received(len(rest))
    assert event == BIG_STREAM[0] and type(event.params[-1]) is bytearray
    assert reader.receive_buffer() is None and reader.buffered == 0
    assert reader.feed(data[first + len(rest) :]) == [BIG_STREAM[1]]


def test_without_big_requests_or_mid_read_the_general_way_takes_it():
    message = BIG_STREAM[0]
    for reader, data in [
        (MessageReader(1 << 26), wire([message])),
        (MessageReader(1 << 26, big_requests=True), encode(Request(1, "health", []))[:-1]),
    ]:
        if len(data) < 100:  # a partial message first: the large one arrives mid-stream
            reader.feed(data)
            data = encode(Request(1, "health", []))[-1:] + wire([message])
            expected = [Request(1, "health", []), message]
        else:
            expected = [message]
        events = reader.feed(data)
        assert events == expected and type(events[-1].params[-1]) is bytes


def test_a_large_request_over_the_frame_limit_still_breaks_the_stream():
    reader = MessageReader(BIG_MIN + 1000, big_requests=True)
    events = reader.feed(wire([BIG_STREAM[0]]))
    assert isinstance(events[-1], StreamError) and "frame limit" in events[-1].reason
    assert reader.receive_buffer() is None


def test_a_large_request_with_a_bad_envelope_gets_the_general_answer():
    bad = Request(2**33, "chunk.put", ["ab" * 32, BIG])  # msgid out of range
    head, big = encode_parts(Request(1, "chunk.put", ["ab" * 32, BIG]))
    head = head.replace(b"\x94\x00\x01", b"\x94\x00\xcf" + bad.msgid.to_bytes(8, "big"), 1)
    for flag in (False, True):
        events = MessageReader(1 << 26, big_requests=flag).feed(head + big)
        assert len(events) == 1 and isinstance(events[0], InvalidMessage)
        assert "msgid" in events[0].reason
