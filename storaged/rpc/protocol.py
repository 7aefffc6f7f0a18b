"""msgpack-RPC framing with no I/O: bytes in, messages out; messages in, bytes out.

Keeping the protocol free of sockets (the h11 habit) lets the tests drive it with byte
strings cut at every possible boundary, and lets the same code serve TCP, unix sockets and
anything else trio can stream over.

The wire format is plain msgpack-RPC, one msgpack value per message, no extra framing:

    request       [0, msgid, method, params]
    response      [1, msgid, error, result]
    notification  [2, method, params]

msgpack has no length prefix, so the "frame size" limit is enforced on the bytes a single
message may occupy before it is complete: a peer cannot make us buffer more than
``max_frame`` bytes of one unfinished message.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import msgpack

REQUEST = 0
RESPONSE = 1
NOTIFICATION = 2

MAX_MSGID = 2**32 - 1


class ProtocolError(Exception):
    """The byte stream cannot be understood any more; the only safe move is to close it."""


class FrameTooLarge(ProtocolError):
    """One message grew past the frame limit before it was complete."""


@dataclass(frozen=True, slots=True)
class Request:
    msgid: int
    method: str
    params: list[Any]


@dataclass(frozen=True, slots=True)
class Response:
    msgid: int
    error: Any
    result: Any


@dataclass(frozen=True, slots=True)
class Notification:
    method: str
    params: list[Any]


@dataclass(frozen=True, slots=True)
class InvalidMessage:
    """A well-formed msgpack value that is not a valid msgpack-RPC message.

    ``msgid`` is set when the value looked enough like a request for an error reply to be
    addressed to it; otherwise the peer is not speaking the protocol and gets disconnected.
    """

    msgid: int | None
    reason: str


@dataclass(frozen=True, slots=True)
class StreamError:
    """The stream broke here (bad msgpack, a frame over the limit): always the last event.

    Reported as an event after the messages that came before it in the same read, so what
    a peer's valid requests get does not depend on how TCP cut the bytes.
    """

    reason: str


Message = Request | Response | Notification
Event = Request | Response | Notification | InvalidMessage | StreamError


def _is_msgid(value: Any) -> bool:
    return type(value) is int and 0 <= value <= MAX_MSGID


def _method_name(value: Any) -> str | None:
    """Method names are str, but many msgpack-rpc clients still send them as bin (msgpack's
    old "raw" type, from before str and bin were separate); accept those when valid UTF-8."""
    if isinstance(value, str):
        return value
    if isinstance(value, bytes):
        try:
            return value.decode("utf-8")
        except UnicodeDecodeError:
            return None
    return None


def classify(obj: Any) -> Event:
    """Turn one decoded msgpack value into a protocol event."""
    if not isinstance(obj, list) or not obj:
        return InvalidMessage(None, "a message must be a non-empty array")
    kind = obj[0]
    if kind == REQUEST and type(kind) is int:
        if len(obj) != 4:
            msgid = obj[1] if len(obj) > 1 and _is_msgid(obj[1]) else None
            return InvalidMessage(msgid, "a request must have 4 elements")
        _, msgid, raw_method, params = obj
        if not _is_msgid(msgid):
            return InvalidMessage(None, "request msgid must be an integer in [0, 2**32)")
        method = _method_name(raw_method)
        if method is None:
            return InvalidMessage(msgid, "request method must be a string")
        if not isinstance(params, list):
            return InvalidMessage(msgid, "request params must be an array")
        return Request(msgid, method, params)
    if kind == RESPONSE and type(kind) is int:
        if len(obj) != 4 or not _is_msgid(obj[1]):
            return InvalidMessage(None, "a response must be [1, msgid, error, result]")
        return Response(obj[1], obj[2], obj[3])
    if kind == NOTIFICATION and type(kind) is int:
        method = _method_name(obj[1]) if len(obj) == 3 else None
        if method is None or not isinstance(obj[2], list):
            return InvalidMessage(None, "a notification must be [2, method, params]")
        return Notification(method, obj[2])
    return InvalidMessage(None, f"unknown message type {kind!r}")


# Byte strings at least this long are sent after the rest of the message rather than copied
# into it: a 4 MiB chunk is then never copied by msgpack, only by the kernel.
SPLICE_MIN = 64 * 1024
_BYTES = (bytes, bytearray, memoryview)


def encode(message: Message) -> bytes:
    """Serialize one message. Raises TypeError for values msgpack cannot carry."""
    return b"".join(encode_parts(message))


def encode_parts(message: Message) -> list[bytes | bytearray | memoryview]:
    """Serialize one message as pieces to send back to back; ``b"".join`` of them is
    exactly ``encode``'s result.

    When the message ends with a large byte string (a chunk.put request's data, a
    chunk.get response's result), that string is its own piece, unchanged: the message is
    packed with an empty placeholder in its place, whose header (bin 8, length 0) is then
    swapped for a bin 32 header of the real length. Both are the last bytes of the
    packing because the byte string is the last element of the last element.
    """
    if (
        isinstance(message, Request)
        and message.params
        and isinstance(message.params[-1], _BYTES)
        and len(message.params[-1]) >= SPLICE_MIN
    ):
        big = message.params[-1]
        head = _packed(Request(message.msgid, message.method, [*message.params[:-1], b""]))
    elif (
        isinstance(message, Response)
        and isinstance(message.result, _BYTES)
        and len(message.result) >= SPLICE_MIN
        and message.error is None
    ):
        big = message.result
        head = _packed(Response(message.msgid, None, b""))
    else:
        return [_packed(message)]
    assert head.endswith(b"\xc4\x00")
    size = len(big) if not isinstance(big, memoryview) else big.nbytes
    return [head[:-2] + b"\xc6" + size.to_bytes(4, "big"), big]


def _packed(message: Message) -> bytes:
    if isinstance(message, Request):
        obj: list[Any] = [REQUEST, message.msgid, message.method, message.params]
    elif isinstance(message, Response):
        obj = [RESPONSE, message.msgid, message.error, message.result]
    elif isinstance(message, Notification):
        obj = [NOTIFICATION, message.method, message.params]
    else:
        raise TypeError(f"not a message: {message!r}")
    return msgpack.packb(obj, use_bin_type=True)


# A request whose last parameter is a byte string at least this long (a chunk.put's data)
# is received into a buffer of its own, straight from the socket: see MessageReader.
BIG_MIN = SPLICE_MIN
_ENVELOPE_MAX = 1024  # ... if everything before that string is within a read's first bytes


@dataclass(slots=True)
class _BigRequest:
    """A request being received whose last parameter fills ``data``."""

    msgid: Any
    method: Any
    params: list[Any]
    data: bytearray
    filled: int = 0


class MessageReader:
    """Streaming decoder: feed it whatever the socket produced, get whole events back.

    Bytes may arrive cut anywhere (one byte at a time) or coalesced (many messages in one
    read); both give the same events. After a ProtocolError the reader is poisoned: the
    stream is out of sync and must be closed.

    A request that ends with a large byte string (a chunk.put: the shape ``encode_parts``
    sends in two pieces) is recognised from its first bytes when it starts a read, and its
    string is then received into a bytearray of its size: ``receive_buffer`` says where the
    socket's next bytes should go, ``received`` takes them. The unpacker would otherwise copy
    every byte twice (into its buffer, then out into a bytes object): about 1.6 ms of a
    chunk server's CPU per 4 MiB put in a py-spy profile. The request's event is the same either way, except that
    the string is a bytearray. Anything the quick look does not recognise goes the general
    way, so the general way decides every error.
    """

    def __init__(
        self,
        max_frame: int,
        *,
        big_requests: bool = False,
        allocate: Callable[[int], bytearray] = bytearray,
    ) -> None:
        """``big_requests`` turns on the own-buffer receiving of large requests; a server
        sets it once the peer has authenticated (a header alone then makes the reader
        allocate its string's size, which only a trusted peer may ask of it); ``allocate``
        gives those strings' buffers (buffers.BufferPool.take reuses them).

        ``max_frame`` may be lowered later and raised again, up to the value given here: a
        server keeps it at the handshake's size until the peer has authenticated."""
        if max_frame < 64:
            raise ValueError("max_frame is unreasonably small")
        self.max_frame = max_frame
        self.big_requests = big_requests
        self._unpacker = msgpack.Unpacker(
            raw=False,
            use_list=True,
            max_buffer_size=max_frame,
            strict_map_key=False,
        )
        self._fed = 0
        self._broken: ProtocolError | None = None
        self._big: _BigRequest | None = None
        self._allocate = allocate

    @property
    def buffered(self) -> int:
        """Bytes of an unfinished message held in memory."""
        big = self._big.filled if self._big is not None else 0
        return self._fed - self._unpacker.tell() + big

    def receive_buffer(self) -> memoryview | None:
        """Where the next bytes from the stream belong, if a large byte string is being
        received (read into it, then call ``received``); None: pass them to ``feed``."""
        big = self._big
        if big is None:
            return None
        return memoryview(big.data)[big.filled :]

    def received(self, count: int) -> list[Event]:
        """``count`` bytes were written into ``receive_buffer()``: the request's event once
        its string is whole."""
        assert self._big is not None and 0 <= count <= len(self._big.data) - self._big.filled
        self._big.filled += count
        return self._finish_big()

    def feed(self, data: bytes | bytearray) -> list[Event]:
        """Consume ``data`` and return every event it completed, in order.

        A broken stream ends the list with a StreamError; feeding again after that raises
        ProtocolError, since the stream can no longer be trusted to be in sync.
        """
        if self._broken is not None:
            raise self._broken
        events: list[Event] = []
        view = memoryview(data)
        try:
            while view:
                big = self._big
                if big is not None:
                    take = min(len(view), len(big.data) - big.filled)
                    big.data[big.filled : big.filled + take] = view[:take]
                    big.filled += take
                    view = view[take:]
                    events.extend(self._finish_big())
                    continue
                if self.big_requests and self._fed == self._unpacker.tell():  # between messages
                    envelope = self._start_big(view)
                    if envelope:
                        view = view[envelope:]
                        continue
                room = self.max_frame - self.buffered
                if room <= 0:
                    raise FrameTooLarge(
                        f"a message exceeded the frame limit of {self.max_frame} bytes"
                    )
                piece, view = view[:room], view[room:]
                self._unpacker.feed(piece)
                self._fed += len(piece)
                for obj in self._unpacker:
                    events.append(classify(obj))
        except ProtocolError as exc:
            self._broken = exc
        except (ValueError, TypeError, msgpack.UnpackException, UnicodeDecodeError) as exc:
            # FormatError, StackError, BufferFull, invalid UTF-8 in a str, bad ext types,
            # and TypeError: a map whose key is a map or an array (unhashable in Python)
            self._broken = ProtocolError(f"malformed msgpack: {type(exc).__name__}: {exc}")
        if self._broken is not None:
            events.append(StreamError(str(self._broken)))
        return events

    def _start_big(self, view: memoryview) -> int:
        """If ``view`` starts a request ending in a large byte string: begin receiving it
        and return the length of its envelope (everything before the string); else 0."""
        if len(view) < 8 or view[0] != 0x94 or view[1] != REQUEST:  # [0, ...: a request
            return 0
        if b"\xc6" not in bytes(view[:_ENVELOPE_MAX]):  # no bin 32 header: a small request,
            return 0  # told apart for a tenth of a probe
        probe = msgpack.Unpacker(
            raw=False, use_list=True, strict_map_key=False, max_buffer_size=_ENVELOPE_MAX
        )
        probe.feed(view[:_ENVELOPE_MAX])
        try:
            probe.read_array_header()
            probe.skip()  # the 0 already seen
            msgid, method = probe.unpack(), probe.unpack()
            count = probe.read_array_header()
            params = [probe.unpack() for _ in range(count - 1)]
        except Exception:
            return 0
        at = probe.tell()
        if count < 1 or len(view) < at + 5 or view[at] != 0xC6:  # bin 32
            return 0
        size = int.from_bytes(view[at + 1 : at + 5], "big")
        if size < BIG_MIN or at + 5 + size > self.max_frame:
            return 0
        self._big = _BigRequest(msgid, method, params, self._allocate(size))
        return at + 5

    def _finish_big(self) -> list[Event]:
        big = self._big
        assert big is not None
        if big.filled < len(big.data):
            return []
        self._big = None
        return [classify([REQUEST, big.msgid, big.method, [*big.params, big.data]])]
