"""A meta database for unit tests: each call one transaction, as the meta role serves it.
The ``meta`` and ``vol`` fixtures that use it live in conftest.py."""

from __future__ import annotations

import stat

import pytest

from storaged.meta import namespace
from storaged.meta.db import open_database, transaction
from storaged.rpc.errors import FsError

DIR, FILE = stat.S_IFDIR | 0o755, stat.S_IFREG | 0o644
CS = 64 * 1024


class Meta:
    def __init__(self, path) -> None:
        self.conn = open_database(path)

    def __call__(self, fn, *args):
        with transaction(self.conn):
            return fn(self.conn, *args)


def fails(code, fn, *args):
    with pytest.raises(FsError) as info:
        fn(*args)
    assert info.value.errno == code, info.value
    return info.value


def mk(meta, parent, name, mode=FILE, uid=0, gid=0):
    return meta(namespace.make_node, parent, name, mode, uid, gid)
