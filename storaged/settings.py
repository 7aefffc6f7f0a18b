"""Settings declared once: a dataclass field carries its default and what its command-line
flag needs, and the flags are made from the fields.

Used for StoragedConfig (storaged/config.py, flags made by storaged/command.py) and the
mount's MountOptions (fusefs/mount.py, fusefs/command.py): before, each setting was
declared twice (a default in the dataclass, a flag with its help and "(default ...)" in the
CLI) and the two drifted. A field with no ``help`` has no flag.
"""

from __future__ import annotations

import argparse
from dataclasses import MISSING, Field, field, fields
from typing import Any

_TYPES = {"seconds": float, "count": int}


def setting(
    default: Any = None,
    help: str = "",
    *,
    metavar: str | None = None,
    kind: str = "",
    default_text: str | None = None,
    choices: tuple[str, ...] | None = None,
    flag: str = "",
    factory: Any = None,
) -> Any:
    """A dataclass field with what its flag needs: ``help`` may say ``{default}`` where the
    default belongs (else it is added at the end), ``kind`` how the flag's value is read
    ("seconds", "count", "size", "bool", "append", "comma", or "" for text),
    ``default_text`` the default in words where its value says little ("the disk's
    size"), ``flag`` the flag's name when it is not the field's (``--cache-size`` for
    ``cache_bytes``)."""
    metadata = {
        "help": help,
        "metavar": metavar,
        "kind": kind,
        "default_text": default_text,
        "choices": choices,
        "flag": flag,
    }
    if factory is not None:
        return field(default_factory=factory, metadata=metadata)
    return field(default=default, metadata=metadata)


def flagged(cls: type) -> list[Field[Any]]:
    """The fields of dataclass ``cls`` that have a flag."""
    return [f for f in fields(cls) if f.metadata.get("help")]


def flag_name(f: Field[Any]) -> str:
    return "--" + (f.metadata.get("flag") or f.name.replace("_", "-"))


def add_flags(parser: argparse.ArgumentParser, cls: type) -> None:
    """One flag per field of ``cls`` with a help, in the fields' order. Every flag defaults
    to None ("not given"): what was not given keeps the value from elsewhere (a config
    file, the dataclass's default), and the flags given can be passed on as they came."""
    for f in flagged(cls):
        meta = f.metadata
        options: dict[str, Any] = {"help": help_text(f), "default": None, "dest": f.name}
        if meta.get("metavar"):
            options["metavar"] = meta["metavar"]
        if meta.get("choices"):
            options["choices"] = list(meta["choices"])
        kind = meta.get("kind", "")
        if kind == "bool":
            options["action"] = argparse.BooleanOptionalAction
        elif kind == "append":
            options["action"] = "append"
        elif kind in _TYPES:
            options["type"] = _TYPES[kind]
        parser.add_argument(flag_name(f), **options)


def given(args: argparse.Namespace, cls: type) -> dict[str, Any]:
    """The flags of ``cls`` given on the command line: field name -> value as given."""
    return {
        f.name: getattr(args, f.name)
        for f in flagged(cls)
        if getattr(args, f.name, None) is not None
    }


def help_text(f: Field[Any]) -> str:
    text = f.metadata.get("help", "")
    default = f.metadata.get("default_text") or default_text(f)
    if "{default}" in text:
        return text.replace("{default}", default)
    return f"{text} (default {default})" if default else text


def default_text(f: Field[Any]) -> str:
    value = f.default_factory() if f.default_factory is not MISSING else f.default
    kind = f.metadata.get("kind", "")
    if value is None or value == "" or value is MISSING:
        return ""
    if kind == "bool":
        return "on" if value else "off"
    if kind == "size":
        return size_text(value)
    if isinstance(value, list):
        return ",".join(value)
    if isinstance(value, float):
        return f"{value:g}"
    return str(value)


def size_text(value: int) -> str:
    for unit, shift in (("GiB", 30), ("MiB", 20), ("KiB", 10)):
        if value and value % (1 << shift) == 0:
            return f"{value >> shift}{unit}"
    return str(value)
