"""A table of RPC methods whose parameters are checked against the handler's type hints.

Every handler gets the same treatment for bad input — wrong count, wrong types — before its
own code runs, so no handler can be crashed by a peer sending a map where bytes belong.
Only the simple types msgpack carries are supported: int, float, str, bytes, bool, list,
dict, and ``X | None``; ``list[X]`` of a simple X checks every item too (a list of inode
numbers that held a map reached a dict lookup and came back as INTERNAL).
"""

from __future__ import annotations

import inspect
import types
import typing
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any

from .errors import InvalidArgument, MethodNotFound

Handler = Callable[..., Awaitable[Any]]

_SIMPLE = {int, float, str, bytes, bool, list, dict, type(None)}
# msgpack carries integers up to 2^64-1; nothing of ours needs more than a signed 64-bit
# integer (SQLite's, the kernel's off_t and time), and a larger one only crashed deeper down
INT_MIN, INT_MAX = -(1 << 63), (1 << 63) - 1


def _allowed_types(hint: Any) -> tuple[type, ...]:
    if hint is Any or hint is inspect.Parameter.empty:
        return ()
    origin = typing.get_origin(hint)
    if origin in (typing.Union, types.UnionType):
        out: list[type] = []
        for arg in typing.get_args(hint):
            out.extend(_allowed_types(arg))
        return tuple(out)
    if origin in (list, dict):
        return (origin,)
    if hint in _SIMPLE:
        return (hint,)
    raise TypeError(f"unsupported parameter type for an RPC method: {hint!r}")


def _item_types(hint: Any) -> tuple[type, ...]:
    """For ``list[X]`` (or ``list[X] | None``): the types X allows, checked per item; else
    () (anything)."""
    if typing.get_origin(hint) in (typing.Union, types.UnionType):
        return next((t for t in map(_item_types, typing.get_args(hint)) if t), ())
    if typing.get_origin(hint) is list and typing.get_args(hint):
        return _allowed_types(typing.get_args(hint)[0])
    return ()


def _type_ok(value: Any, allowed: tuple[type, ...]) -> bool:
    if not allowed:
        return True
    # bool is a subclass of int in Python; on the wire they are different things.
    if type(value) is bool:
        return bool in allowed
    if type(value) is int and not INT_MIN <= value <= INT_MAX:
        return False
    if isinstance(value, int) and float in allowed and int not in allowed:
        return True  # an integer is an acceptable float
    if type(value) is bytearray:
        return bytes in allowed  # a large bin may arrive as one (protocol.MessageReader)
    return isinstance(value, allowed)


@dataclass(frozen=True)
class _Param:
    name: str
    allowed: tuple[type, ...]
    required: bool
    items: tuple[type, ...] = ()  # for a list: what each item may be (() for anything)


@dataclass(frozen=True)
class Method:
    name: str
    handler: Handler
    params: tuple[_Param, ...]
    public: bool

    def usage(self) -> str:
        parts = [p.name if p.required else f"[{p.name}]" for p in self.params]
        return f"{self.name}({', '.join(parts)})"

    def bind(self, params: list[Any]) -> list[Any]:
        """Check ``params`` and return them ready to pass positionally, or raise."""
        required = sum(1 for p in self.params if p.required)
        if not required <= len(params) <= len(self.params):
            raise InvalidArgument(
                f"{self.usage()} takes {required}..{len(self.params)} parameters, got {len(params)}"
            )
        for value, p in zip(params, self.params):
            if not _type_ok(value, p.allowed):
                want = " or ".join(t.__name__ for t in p.allowed)
                if type(value) is int and int in p.allowed:  # the type fits, the size not
                    want += " in -2^63..2^63-1"
                raise InvalidArgument(
                    f"{self.usage()}: {p.name} must be {want}, got {type(value).__name__}"
                )
            if p.items and isinstance(value, list):
                for i, item in enumerate(value):
                    if not _type_ok(item, p.items):
                        want = " or ".join(t.__name__ for t in p.items)
                        if type(item) is int and int in p.items:
                            want += " in -2^63..2^63-1"
                        raise InvalidArgument(
                            f"{self.usage()}: {p.name}[{i}] must be {want}, "
                            f"got {type(item).__name__}"
                        )
        return params


class MethodTable:
    """The methods a server answers, by wire name."""

    def __init__(self) -> None:
        self._methods: dict[str, Method] = {}

    def add(self, name: str, handler: Handler, *, public: bool = False) -> None:
        """Register ``handler``; ``public`` methods are answered before authentication."""
        if name in self._methods:
            raise ValueError(f"method {name} registered twice")
        hints = typing.get_type_hints(handler)
        params = []
        for p in inspect.signature(handler).parameters.values():
            if p.kind not in (p.POSITIONAL_ONLY, p.POSITIONAL_OR_KEYWORD):
                raise TypeError(f"{name}: RPC handlers take positional parameters only")
            hint = hints.get(p.name, Any)
            params.append(
                _Param(
                    p.name,
                    _allowed_types(hint),
                    p.default is inspect.Parameter.empty,
                    _item_types(hint),
                )
            )
        self._methods[name] = Method(name, handler, tuple(params), public)

    def get(self, name: str) -> Method:
        try:
            return self._methods[name]
        except KeyError:
            raise MethodNotFound(f"no method named {name!r}") from None

    def names(self) -> list[str]:
        return sorted(self._methods)
