"""The filesystem suite: each workload run in a directory, returning rates (higher is better).

Every row is a rate, so every ratio reads the same way: above 1 the first system is faster.

  seq write            SIZE in 1 MiB writes, fsync at the end               MB/s
  seq read             the same file, page cache dropped first               MB/s
  rand 4K read         4 KiB preads at random offsets, cache dropped first   IOPS
  rand 4K write        4 KiB pwrites at random offsets, fsync at the end     IOPS
  create/stat/readdir/unlink   N empty files in one directory                ops/s (readdir:
                       names listed per second, the directory read 5 times)
  16K files write/read M files of 16 KiB (read with the cache dropped)      files/s
  16K read again       the same files read again at once (nothing changed)  files/s
  cp -r, tar x         a real source tree (the Python standard library)      files/s
"""

from __future__ import annotations

import os
import random
import shutil
import subprocess
import sys
import sysconfig
import tarfile
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from bench.procstats import drop_caches

MiB = 1 << 20


@dataclass
class SuiteSize:
    size_mib: int = 1024
    random_ops: int = 2000
    files: int = 5000
    small_files: int = 2000


def timed(fn: Callable[[], object]) -> float:
    start = time.perf_counter()
    fn()
    return time.perf_counter() - start


class UniqueBlocks:
    """Distinct blocks, cheaply: a random pool with a counter stamped into each block.

    Repeating one block would flatter any content-addressed store (identical chunks are
    stored once), so every block a workload writes differs from every other.
    """

    def __init__(self, size: int) -> None:
        self.size = size
        self.pool = os.urandom(16 * MiB + size)
        self.count = 0

    def next(self) -> bytes:
        self.count += 1
        start = (self.count * 7919 * 4096) % (16 * MiB)
        block = bytearray(self.pool[start : start + self.size])
        block[:16] = self.count.to_bytes(8, "big") + os.getpid().to_bytes(8, "big")
        return bytes(block)


def seq_write(d: Path, size: int) -> float:
    blocks = UniqueBlocks(MiB)
    prepared = [blocks.next() for _ in range(min(size // MiB, 64))]

    def run() -> None:
        fd = os.open(d / "big", os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
        for i in range(size // MiB):
            block = prepared[i] if i < len(prepared) else blocks.next()
            os.write(fd, block)
        os.fsync(fd)
        os.close(fd)

    return size / MiB / timed(run)


def seq_read(d: Path, size: int) -> float:
    drop_caches()

    def run() -> None:
        with open(d / "big", "rb", buffering=0) as f:
            while f.read(MiB):
                pass

    return size / MiB / timed(run)


def rand_read(d: Path, size: int, count: int) -> float:
    drop_caches()
    rng = random.Random(1)
    offsets = [rng.randrange(0, size // 4096) * 4096 for _ in range(count)]

    def run() -> None:
        fd = os.open(d / "big", os.O_RDONLY)
        for off in offsets:
            os.pread(fd, 4096, off)
        os.close(fd)

    return count / timed(run)


def rand_write(d: Path, size: int, count: int) -> float:
    rng = random.Random(2)
    offsets = [rng.randrange(0, size // 4096) * 4096 for _ in range(count)]
    blocks = UniqueBlocks(4096)
    data = [blocks.next() for _ in offsets]

    def run() -> None:
        fd = os.open(d / "big", os.O_WRONLY)
        for off, block in zip(offsets, data):
            os.pwrite(fd, block, off)
        os.fsync(fd)
        os.close(fd)

    return count / timed(run)


READDIR_PASSES = 5


def metadata(d: Path, files: int) -> dict[str, float]:
    """create, stat, readdir and unlink of ``files`` empty files in one directory."""
    sub = d / "meta"
    sub.mkdir()
    names = [sub / f"f{i:06d}" for i in range(files)]

    def create() -> None:
        for n in names:
            os.close(os.open(n, os.O_CREAT | os.O_WRONLY, 0o644))

    def stat() -> None:
        for n in names:
            os.stat(n)

    def readdir() -> None:
        for _ in range(READDIR_PASSES):
            listed = os.listdir(sub)
            if len(listed) != files:
                raise RuntimeError(f"readdir listed {len(listed)} of {files} names")

    def unlink() -> None:
        for n in names:
            os.unlink(n)

    rates = {
        "create/s": files / timed(create),
        "stat/s": files / timed(stat),
        "readdir names/s": files * READDIR_PASSES / timed(readdir),
        "unlink/s": files / timed(unlink),
    }
    sub.rmdir()
    return rates


def write_files(names: list[Path], payloads: list[bytes]) -> None:
    """Each file written whole with one write, then closed (the small-file rows)."""
    for n, payload in zip(names, payloads):
        with open(n, "wb") as f:
            f.write(payload)


def read_files(names: list[Path]) -> None:
    """Each file opened, read whole, closed."""
    for n in names:
        with open(n, "rb") as f:
            f.read()


def small_files(d: Path, count: int) -> dict[str, float]:
    sub = d / "small"
    sub.mkdir()
    blocks = UniqueBlocks(16 * 1024)
    payloads = [blocks.next() for _ in range(count)]
    names = [sub / f"s{i:05d}" for i in range(count)]

    def write() -> None:
        write_files(names, payloads)

    def read() -> None:
        read_files(names)

    w = count / timed(write)
    drop_caches()
    r = count / timed(read)
    again = count / timed(read)  # unchanged since: what a cache coherent with the
    shutil.rmtree(sub)  # writer may serve from the page cache
    return {"16K files written/s": w, "16K files read/s": r, "16K read again/s": again}


class SourceTree:
    """A real tree of several thousand files (this interpreter's standard library, without
    its site-packages), copied once to the local disk and packed once into a tar, so every
    system is fed from the same place."""

    def __init__(self, work: Path) -> None:
        stdlib = Path(sysconfig.get_paths()["stdlib"])
        self.tree = work / "source-tree"
        shutil.copytree(
            stdlib,
            self.tree,
            symlinks=True,
            ignore=shutil.ignore_patterns("site-packages", "dist-packages"),
        )
        self.tar = work / "source-tree.tar"
        with tarfile.open(self.tar, "w") as tar:
            tar.add(self.tree, arcname="tree")
        self.files = sum(len(f) for _, _, f in os.walk(self.tree))
        self.bytes = sum((Path(r) / n).lstat().st_size for r, _, f in os.walk(self.tree) for n in f)

    def copy_and_untar(self, d: Path) -> dict[str, float]:
        """``cp -r`` then ``tar x`` (both followed by ``sync`` of that filesystem, so what
        was copied is stored, not only in the page cache)."""

        def cp() -> None:
            run(["cp", "-r", str(self.tree), str(d / "copy")])
            syncfs(d)

        def untar() -> None:
            (d / "untar").mkdir()
            run(["tar", "xf", str(self.tar), "-C", str(d / "untar")])
            syncfs(d)

        rates = {
            "cp -r files/s": self.files / timed(cp),
            "tar x files/s": self.files / timed(untar),
        }
        shutil.rmtree(d / "copy")
        shutil.rmtree(d / "untar")
        return rates


def syncfs(d: Path) -> None:
    """syncfs(2) on the filesystem holding ``d`` (Python 3.11 has no os.syncfs)."""
    run(["sync", "-f", str(d)])


def run(command: list[str]) -> None:
    result = subprocess.run(command, capture_output=True, text=True, check=False)
    if result.returncode != 0:
        raise RuntimeError(f"{' '.join(command)} failed: {result.stderr.strip()}")


def run_suite(d: Path, size: SuiteSize, tree: SourceTree | None) -> dict[str, float]:
    """Every workload once in ``d`` (which it leaves empty)."""
    total = size.size_mib * MiB
    out = {
        "seq write MB/s": seq_write(d, total),
        "seq read MB/s": seq_read(d, total),
        "rand 4K read IOPS": rand_read(d, total, size.random_ops),
        "rand 4K write IOPS": rand_write(d, total, size.random_ops),
    }
    os.unlink(d / "big")
    out.update(metadata(d, size.files))
    out.update(small_files(d, size.small_files))
    if tree is not None:
        out.update(tree.copy_and_untar(d))
    print(f"  {d}: done", file=sys.stderr)
    return out
