"""fusefs.readahead: the window written where the kernel reads it, or left alone."""

from __future__ import annotations

import logging
import os
from pathlib import Path

import pytest

from fusefs.readahead import set_readahead

DEVICE = os.makedev(0, 41)


@pytest.fixture
def bdi(tmp_path: Path) -> Path:
    (tmp_path / "bdi" / "0:41").mkdir(parents=True)
    (tmp_path / "bdi" / "0:41" / "read_ahead_kb").write_text("128\n")
    return tmp_path / "bdi"


def test_the_window_is_written_in_kib(bdi: Path) -> None:
    assert set_readahead(DEVICE, 4 << 20, sysfs=str(bdi))
    assert (bdi / "0:41" / "read_ahead_kb").read_text() == "4096\n"


def test_zero_leaves_the_kernels_default(bdi: Path) -> None:
    assert not set_readahead(DEVICE, 0, sysfs=str(bdi))
    assert (bdi / "0:41" / "read_ahead_kb").read_text() == "128\n"


def test_a_window_that_cannot_be_set_is_logged_not_raised(
    bdi: Path, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.WARNING, "fusefs")
    assert not set_readahead(os.makedev(0, 99), 4 << 20, sysfs=str(bdi))
    assert "cannot write" in caplog.text and "0:99" in caplog.text
