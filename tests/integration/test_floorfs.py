"""The benchmark's Python-FUSE floor (bench/floorfs.py) is a correct filesystem: its figures
mean something only if every workload really did what it says. A real FUSE mount of it,
the side-by-side suite at a small size, and the cases a passthrough gets wrong first
(renamed directories, hard links, listings longer than one reply, truncation)."""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import pytest

from bench.systems import PythonFuseFloor
from bench.workloads import SuiteSize, run_suite


@pytest.fixture
def floor(tmp_path: Path) -> Iterator[PythonFuseFloor]:
    system = PythonFuseFloor(tmp_path)
    system.start()
    try:
        assert os.path.ismount(system.mountpoint)
        yield system
    finally:
        system.stop()
    assert not os.path.ismount(system.mountpoint)


def test_the_suite_runs_on_the_floor_and_leaves_it_empty(floor: PythonFuseFloor) -> None:
    target = floor.mountpoint / "round0"
    target.mkdir()
    figures = run_suite(
        target, SuiteSize(size_mib=8, random_ops=50, files=300, small_files=50), None
    )
    assert figures and all(value > 0 for value in figures.values()), figures
    assert os.listdir(target) == []
    assert os.listdir(floor.source / "round0") == []  # it all went through to the source


def test_names_links_listings_and_sizes_pass_through(floor: PythonFuseFloor) -> None:
    m = floor.mountpoint
    (m / "a" / "b").mkdir(parents=True)
    (m / "a" / "b" / "f").write_bytes(b"hello")
    os.link(m / "a" / "b" / "f", m / "a" / "h")
    os.rename(m / "a", m / "c")  # every path under a/ moves with it
    assert (m / "c" / "b" / "f").read_bytes() == b"hello"
    os.unlink(m / "c" / "b" / "f")  # the other name still reaches the file
    assert (m / "c" / "h").read_bytes() == b"hello"
    assert os.stat(m / "c" / "h").st_nlink == 1
    names = [f"n{i:04d}" for i in range(1500)]  # more than one readdir reply holds
    for name in names:
        (m / "c" / "b" / name).touch()
    assert sorted(os.listdir(m / "c" / "b")) == names
    with open(m / "c" / "h", "r+b") as f:
        f.truncate(2)
    assert (floor.source / "c" / "h").read_bytes() == b"he"
    assert os.statvfs(m).f_blocks == os.statvfs(floor.source).f_blocks
