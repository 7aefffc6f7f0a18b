"""An adversary for a live cluster's RPC ports, for as long as it is told (issue 24).

Without the secret it holds as many connections as it can from several loopback
addresses (re-opened as the servers close them), announces 60 MiB frames and sends part
of them, and sends garbage. With the secret it calls every method the registration code
lists (storaged.meta.service, storaged.chunk.service, the daemon's health) with at least
one bad parameter (a wrong type, an integer out of range, a name that is not there, an
extra parameter) and sends heartbeats with exactly one field broken. It never sends a
call that could be valid and change something: the cluster it attacks must end with its
data as the workload beside it left it.

The counts are printed as JSON (one object per server address) for the caller to check:
no ``INTERNAL`` answer (a traceback in the server), every heartbeat refused.

    python -m tests.adversary --meta tcp://127.0.0.1:PORT --chunk tcp://... \\
        --secret-file SECRET --seconds 600
"""

from __future__ import annotations

import argparse
import json
import random
import sys
from collections import Counter
from collections.abc import Callable
from typing import Any

import msgpack
import trio

from storaged.rpc import auth
from storaged.rpc.methods import INT_MAX, INT_MIN, Method, MethodTable

# Fewer addresses than docs/rpc.md's per-peer limit (8) would need to fill the
# pre-authentication budget (64): within them, the servers promise that logins get in.
SOURCES = ("127.0.0.1", "127.0.0.2", "127.0.0.3", "127.0.0.4")
IDLE_PER_SOURCE = 16  # connection attempts kept open per source address and server
REFUSED_PAUSE = 1.0  # before trying again after the server closed a connection at once
HUGE = 60 << 20  # the length a huge frame announces
HUGE_SENT = 8 << 10  # how much of it is sent (past the 4 KiB pre-login limit)
REPLY_WAIT = 30.0


def registered_methods(roles: tuple[str, ...]) -> dict[str, Method]:
    """The methods a storaged with ``roles`` answers, with their parameters, as its
    registration code lists them (handlers bound to a stand-in: only their signatures
    are used)."""
    from storaged.chunk.service import ChunkService
    from storaged.meta.service import MetaService

    class StandIn:
        def __init__(self, cls: type) -> None:
            self._cls = cls

        def __getattr__(self, name: str) -> Any:
            return getattr(self._cls, name).__get__(self)

    table = MethodTable()
    for role, cls in (("chunk", ChunkService), ("meta", MetaService)):
        if role in roles:
            cls.register(StandIn(cls), table)  # type: ignore[arg-type]

    async def health() -> dict[str, Any]:
        return {}

    table.add("health", health)
    return {name: table.get(name) for name in table.names()}


# -- bad values -------------------------------------------------------------------------------


def _bad_int(rng: random.Random) -> int:
    # never a small non-negative integer: that could name a real inode, offset or count
    return rng.choice(
        [
            -1,
            INT_MIN,
            INT_MAX,
            -rng.randrange(2, 1 << 40),
            rng.randrange(1 << 50, INT_MAX),
            INT_MAX + 1,
            (1 << 64) - 1,
        ]
    )


def _bad_str(rng: random.Random) -> str:
    return rng.choice(
        [
            "",
            "\n",
            "../../../etc/passwd",
            "x" * 10_000,
            "ünï\u0000cødé",
            "adversary-" + "".join(rng.choices("abcdef0123456789", k=12)),
            "".join(chr(rng.randrange(1, 0x2FF)) for _ in range(rng.randrange(40))),
        ]
    )


def _bad_bytes(rng: random.Random) -> bytes:
    return rng.choice(
        [
            b"",
            b"/",
            b"\x00",
            b".",
            b"..",
            b"x" * 300,
            rng.randbytes(rng.randrange(1, 300)),
            b"adversary-" + rng.randbytes(8),
        ]
    )


def _junk(rng: random.Random, depth: int = 0) -> Any:
    kinds: list[Callable[[], Any]] = [
        lambda: None,
        lambda: rng.random() < 0.5,
        lambda: float("nan"),
        lambda: -1e308,
        lambda: _bad_int(rng),
        lambda: _bad_str(rng),
        lambda: _bad_bytes(rng),
    ]
    if depth < 2:
        kinds += [
            lambda: [_junk(rng, depth + 1) for _ in range(rng.randrange(4))],
            lambda: {
                rng.choice(
                    ["size", "mode", "uid", "gid", "mtime_ns", "capacity", "free", "", "x" * 300]
                ): _junk(rng, depth + 1)
                for _ in range(rng.randrange(1, 4))
            },
        ]
    return rng.choice(kinds)()


def _bad_of(allowed: tuple[type, ...], rng: random.Random) -> Any:
    """A value of one of the ``allowed`` types that names nothing real, or anything."""
    kind = rng.choice(allowed) if allowed and rng.random() < 0.7 else None
    if kind is int:
        return _bad_int(rng)
    if kind is str:
        return _bad_str(rng)
    if kind is bytes:
        return _bad_bytes(rng)
    if kind is list:
        return [_bad_int(rng)] if rng.random() < 0.5 else [_junk(rng, 1)]
    if kind is dict:
        return {rng.choice(["size", "mode", "uid", "gid", "atime_ns"]): _bad_int(rng)}
    return _junk(rng)


def bad_params(method: Method, rng: random.Random) -> list[Any]:
    """Parameters for ``method`` of which at least one is bad: an int out of range or a
    wrong type where an int belongs, else one parameter too many (a method whose every
    parameter is a name gets names that are not there)."""
    params = [_bad_of(p.allowed, rng) for p in method.params if p.required or rng.random() < 0.5]
    ints = [i for i, p in enumerate(method.params[: len(params)]) if int in p.allowed]
    for i in ints:
        if type(params[i]) is int and 0 <= params[i] < 1 << 50:  # (a list's item is fine)
            params[i] = -1
    if not ints or rng.random() < 0.2:
        params.append(_junk(rng))
    return params


def broken_heartbeat(rng: random.Random) -> list[Any]:
    """cluster.heartbeat's parameters with exactly one of them broken."""
    beat: list[Any] = [
        f"adversary-{rng.randrange(1000)}",
        "tcp://127.0.0.1:1",
        "zone-a",
        {"capacity": 1 << 30, "used": 0, "free": 1 << 30, "chunks": 0},
    ]
    field = rng.randrange(4)
    choices: list[list[Any]] = [
        ["", "x" * 65, "a\nb", "ünï", "x" * 10_000, "spa ce"],
        [
            "not-an-address",
            "tcp://",
            "tcp://127.0.0.1:99999",
            "http://127.0.0.1:80",
            "unix://relative/path",
            "tcp://127.0.0.1:1\n",
            "x" * 400,
        ],
        ["has space", "\n", "z" * 300, "tab\there"],
        [
            {"capacity": -1},
            {"free": 1 << 63},
            {"used": "lots"},
            {"chunks": 1.5},
            {"scrub": [1, 2]},
            {"scrub": {str(i): i for i in range(100)}},
        ],
    ]
    beat[field] = rng.choice(choices[field])
    return beat


# -- connections ----------------------------------------------------------------------------


def _host_port(address: str) -> tuple[str, int]:
    host, port = address.removeprefix("tcp://").rsplit(":", 1)
    return host, int(port)


async def _connect(address: str, source: str | None = None) -> trio.socket.SocketType:
    sock = trio.socket.socket()
    try:
        if source is not None:
            await sock.bind((source, 0))
        await sock.connect(_host_port(address))
    except BaseException:
        sock.close()
        raise
    return sock


async def _until_closed(sock: trio.socket.SocketType, deadline: float) -> bool:
    """Read until the peer closes (True) or ``deadline`` (False)."""
    with trio.move_on_at(deadline):
        try:
            while await sock.recv(65536):
                pass
        except OSError:
            pass
        return True
    return False


async def hold_idle(address: str, source: str, counts: Counter[str], deadline: float) -> None:
    """Open a connection and say nothing, again and again: a slot taken without the
    secret, for as long as the server lets it be held."""
    while trio.current_time() < deadline:
        try:
            sock = await _connect(address, source)
        except OSError:
            counts["idle: connect failed"] += 1
            await trio.sleep(0.2)
            continue
        opened = trio.current_time()
        counts["idle: opened"] += 1
        with sock:
            closed = await _until_closed(sock, deadline)
        if closed:
            held = trio.current_time() - opened
            counts["idle: closed at once" if held < 1 else "idle: closed after a wait"] += 1
            counts["idle: longest held (s)"] = max(counts["idle: longest held (s)"], int(held))
        await trio.sleep(REFUSED_PAUSE)


async def huge_frames(address: str, source: str, counts: Counter[str], deadline: float) -> None:
    """Announce a 60 MiB message before logging in and send 8 KiB of it."""
    header = b"\x94\x00\x01\xaaauth.login\x91\xc6" + HUGE.to_bytes(4, "big")
    await _send_and_wait(
        address, source, "huge", lambda: header + bytes(HUGE_SENT), counts, deadline
    )


async def garbage(
    address: str, source: str, counts: Counter[str], deadline: float, rng: random.Random
) -> None:
    """Random bytes before logging in."""
    await _send_and_wait(
        address, source, "garbage", lambda: rng.randbytes(rng.randrange(1, 2048)), counts, deadline
    )


async def _send_and_wait(
    address: str,
    source: str,
    label: str,
    payload: Callable[[], bytes],
    counts: Counter[str],
    deadline: float,
) -> None:
    """Connect, send ``payload()``, and count whether the server closes the connection
    within the handshake deadline (10 s) and a second; again until ``deadline``."""
    while trio.current_time() < deadline:
        try:
            sock = await _connect(address, source)
        except OSError:
            counts[f"{label}: connect failed"] += 1
            await trio.sleep(0.2)
            continue
        with sock:
            counts[f"{label}: sent"] += 1
            try:
                await sock.send(payload())
            except OSError:
                pass
            if await _until_closed(sock, trio.current_time() + 11):  # (past deadline too)
                counts[f"{label}: closed by the server"] += 1
        await trio.sleep(0.2)


class Session:
    """One logged-in raw connection: requests one at a time, replies counted by code."""

    def __init__(self, address: str, secret: bytes) -> None:
        self.address, self.secret = address, secret
        self.sock: trio.socket.SocketType | None = None
        self.unpacker = msgpack.Unpacker(raw=False, strict_map_key=False)
        self.msgid = 0

    async def _request(self, method: str, params: list[Any]) -> list[Any]:
        assert self.sock is not None
        self.msgid += 1
        await self.sock.send(msgpack.packb([0, self.msgid, method, params], use_bin_type=True))
        with trio.fail_after(REPLY_WAIT):
            while True:
                for reply in self.unpacker:
                    if reply[0] == 1 and reply[1] == self.msgid:
                        return reply
                data = await self.sock.recv(65536)
                if not data:
                    raise ConnectionError("closed")
                self.unpacker.feed(data)

    async def call(self, method: str, params: list[Any]) -> str:
        """The reply's error code, or "ok"; "CLOSED" if the server hung up."""
        try:
            if self.sock is None:
                self.sock = await _connect(self.address)
                self.unpacker = msgpack.Unpacker(raw=False, strict_map_key=False)
                nonce = (await self._request("auth.challenge", []))[3]["nonce"]
                await self._request("auth.login", [auth.client_proof(self.secret, nonce)])
            reply = await self._request(method, params)
        except (OSError, ConnectionError):
            if self.sock is not None:
                self.sock.close()
            self.sock = None
            return "CLOSED"
        error = reply[2]
        return (
            "ok" if error is None else str(error.get("code") if isinstance(error, dict) else error)
        )


async def fuzz(
    address: str,
    secret: bytes,
    methods: dict[str, Method],
    counts: Counter[str],
    deadline: float,
    rng: random.Random,
) -> None:
    session = Session(address, secret)
    names = sorted(methods)
    tried: set[str] = set()
    while trio.current_time() < deadline:
        name = rng.choice(names)
        if "cluster.heartbeat" in methods and (name == "cluster.heartbeat" or rng.random() < 0.1):
            code = await session.call("cluster.heartbeat", broken_heartbeat(rng))
            counts[f"heartbeat: {code}"] += 1
            tried.add("cluster.heartbeat")
            continue
        code = await session.call(name, bad_params(methods[name], rng))
        counts[f"call: {code}"] += 1
        if code == "ok":  # bad parameters a method let through: worth a look
            counts[f"accepted: {name}"] += 1
        tried.add(name)
        counts["call: methods tried"] = len(tried)
        counts["call: methods listed"] = len(names)


async def attack(
    meta: str, chunks: list[str], secret: bytes, seconds: float, seed: int
) -> dict[str, dict[str, int]]:
    deadline = trio.current_time() + seconds
    rng = random.Random(seed)
    targets = [(meta, registered_methods(("meta",)))] + [
        (c, registered_methods(("chunk",))) for c in chunks
    ]
    counts: dict[str, Counter[str]] = {address: Counter() for address, _ in targets}
    async with trio.open_nursery() as nursery:
        for address, methods in targets:
            c = counts[address]
            for source in SOURCES:
                for _ in range(IDLE_PER_SOURCE):
                    nursery.start_soon(hold_idle, address, source, c, deadline)
            nursery.start_soon(huge_frames, address, SOURCES[0], c, deadline)
            nursery.start_soon(
                garbage, address, SOURCES[1], c, deadline, random.Random(rng.random())
            )
            nursery.start_soon(
                fuzz, address, secret, methods, c, deadline, random.Random(rng.random())
            )
    return {address: dict(c) for address, c in counts.items()}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m tests.adversary",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--meta", required=True)
    parser.add_argument("--chunk", action="append", default=[])
    parser.add_argument("--secret-file", required=True)
    parser.add_argument("--seconds", type=float, default=60.0)
    parser.add_argument("--seed", type=int, default=None)
    args = parser.parse_args(argv)
    seed = args.seed if args.seed is not None else random.randrange(1 << 30)
    counts = trio.run(
        attack, args.meta, args.chunk, auth.load_secret(args.secret_file), args.seconds, seed
    )
    json.dump({"seed": seed, "servers": counts}, sys.stdout, indent=1, sort_keys=True)
    print()
    return 0


if __name__ == "__main__":
    sys.exit(main())
