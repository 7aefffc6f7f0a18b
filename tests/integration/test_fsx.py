"""fsx-style: long random sequences of file operations on the mount, checked against a model.

After every step the mount must agree with a plain in-memory model of the files. The seed
is printed (and in the failure message); SHOALFS_FSX_SEED=N reproduces a run.
"""

from __future__ import annotations

import os
import random

import pytest

CHUNK = 64 * 1024  # small pieces, so operations cross piece boundaries all the time
STEPS = 400
FILES = 3
MAX_SIZE = 600 * 1024


@pytest.fixture
def small_chunks(mounted):
    name = f"fsx{random.randrange(10**6)}"
    mounted.shoal(
        "volume",
        "create",
        name,
        "--capacity",
        "1GiB",
        "--chunk-size",
        "64KiB",
        "--workdir",
        str(mounted.workdir),
    )
    mnt = mounted.workdir / f"mnt-{name}"
    mnt.mkdir()
    mounted.shoal(
        "mount",
        name,
        str(mnt),
        "--workdir",
        str(mounted.workdir),
        "--log-file",
        str(mounted.workdir / "logs" / f"{name}.log"),
    )
    yield mnt
    mounted.shoal("umount", str(mnt))


def test_random_operations_match_a_model(small_chunks):
    seed = int(os.environ.get("SHOALFS_FSX_SEED", random.randrange(2**32)))
    print(f"fsx seed {seed}")
    rng = random.Random(seed)
    model: dict[str, bytearray] = {}
    paths = [f"f{i}" for i in range(FILES)]
    fds: dict[str, int] = {}

    def fd(name: str) -> int:
        if name not in fds:
            fds[name] = os.open(small_chunks / name, os.O_RDWR | os.O_CREAT, 0o644)
            model.setdefault(name, bytearray())
        return fds[name]

    def check(name: str, step: int, op: str) -> None:
        expected = bytes(model[name])
        with open(small_chunks / name, "rb") as f:
            actual = f.read()
        assert len(actual) == len(expected), f"seed {seed} step {step} {op}: size differs"
        assert actual == expected, f"seed {seed} step {step} {op}: content differs"

    for step in range(STEPS):
        name = rng.choice(paths)
        op = rng.choice(
            [
                "write",
                "write",
                "write",
                "truncate",
                "read",
                "fsync",
                "close",
                "rename",
                "link_unlink",
                "append",
                "hole",
            ]
        )
        if op in ("write", "hole"):
            size = rng.choice([1, 100, 4096, CHUNK - 1, CHUNK, CHUNK + 7, 3 * CHUNK])
            off = (
                rng.randrange(0, MAX_SIZE - size)
                if op == "write"
                else len(model.get(name, b"")) + rng.randrange(1, 2 * CHUNK)
            )
            payload = rng.randbytes(size)
            os.pwrite(fd(name), payload, off)
            data = model[name]
            if len(data) < off:
                data.extend(bytes(off - len(data)))
            data[off : off + size] = payload
        elif op == "append":
            payload = rng.randbytes(rng.randrange(1, 2 * CHUNK))
            with open(small_chunks / name, "ab") as f:
                f.write(payload)
            model.setdefault(name, bytearray()).extend(payload)
        elif op == "truncate":
            new = rng.randrange(0, MAX_SIZE)
            os.ftruncate(fd(name), new)
            data = model[name]
            del data[new:]
            data.extend(bytes(new - len(data)))
        elif op == "read" and name in model:
            off = rng.randrange(0, MAX_SIZE)
            size = rng.randrange(1, 3 * CHUNK)
            assert os.pread(fd(name), size, off) == bytes(model[name][off : off + size]), (
                f"seed {seed} step {step}: pread({off}, {size}) differs"
            )
        elif op == "fsync" and name in fds:
            os.fsync(fds[name])
        elif op == "close" and name in fds:
            os.close(fds.pop(name))
        elif op == "rename" and name in model:
            other = rng.choice(paths)
            if other != name:
                if name in fds:
                    os.close(fds.pop(name))
                if other in fds:
                    os.close(fds.pop(other))
                os.rename(small_chunks / name, small_chunks / other)
                model[other] = model.pop(name)
        elif op == "link_unlink" and name in model:
            if name in fds:
                os.close(fds.pop(name))
            os.link(small_chunks / name, small_chunks / "tmp-link")
            os.unlink(small_chunks / name)
            os.rename(small_chunks / "tmp-link", small_chunks / name)
        for existing in list(model):
            check(existing, step, op)
    for f in fds.values():
        os.close(f)
