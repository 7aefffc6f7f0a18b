"""Fixtures the unit tests share."""

from __future__ import annotations

import pytest

from storaged.meta import volumes

from .metadb import CS, Meta


@pytest.fixture
def meta(tmp_path):
    m = Meta(tmp_path / "meta.db")
    yield m
    m.conn.close()


@pytest.fixture
def vol(meta):
    return meta(volumes.create, "vol1", 10 * CS, 2, CS)
