"""Two mounts of one volume on two "hosts" (network namespaces, tests/netns.py), the meta
role in the root namespace: what one host changes reaches the other's kernel within the
bound over a real link, and a host whose link is cut (packets vanish, no reset) serves no
stale entry once its lease is over (fusefs/coherence.py: a poll unanswered for
POLL_WAIT + POLL_MARGIN, 3 s, and the mount drops everything its kernel keeps).

Each mount process joins only its host's network namespace (``nsenter --net``), not a
mount namespace of its own, so its FUSE mount is visible here. Metadata only: no chunk
server is needed for names, modes, owners, times and extended attributes.
"""

from __future__ import annotations

import os
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from tests.helpers import SHOAL, StoragedProcess, call, make_secret, wait_until
from tests.netns import Host, Hosts

BOUND = 2.0  # seconds for a change on one host to reach the other's kernel
STALE_MAX = 3.0  # POLL_WAIT + POLL_MARGIN: how long a cut-off mount may trust its caches
MARGIN = 1.5  # for the mount to notice, and its worker thread to tell the kernel


@dataclass
class TwoHosts:
    hosts: list[Host]
    a: Path
    b: Path


def _mount(host: Host, meta_address: str, secret_file: Path, mnt: Path, log: Path) -> None:
    result = subprocess.run(
        [
            "nsenter",
            f"--net=/var/run/netns/{host.namespace}",
            *SHOAL,
            "mount",
            "v",
            str(mnt),
            "--meta",
            meta_address,
            "--secret-file",
            str(secret_file),
            "--log-file",
            str(log),
            "--session-heartbeat",
            "1",
        ],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert result.returncode == 0, result.stdout + result.stderr


@pytest.fixture(scope="module")
def two_hosts(tmp_path_factory: pytest.TempPathFactory) -> Iterator[TwoHosts]:
    root = tmp_path_factory.mktemp("coherence-netns")
    secret_file = root / "secret"
    secret = make_secret(secret_file)
    mounts: list[Path] = []
    with Hosts(2) as hosts:
        meta = StoragedProcess(
            root / "meta",
            secret_file,
            extra=[
                "--roles",
                "meta",
                *[arg for h in hosts for arg in ("--listen", f"tcp://{h.gateway}:0")],
            ],
        ).start()
        try:
            call(meta.address, secret, "volume.create", "v", 1 << 30, 2, 1 << 20)
            logs = []
            for host, address in zip(hosts, meta.addresses[1:]):
                mnt = Path(tempfile.mkdtemp(prefix=f"shoalfs-host{host.index}-"))
                mounts.append(mnt)
                logs.append(root / f"host{host.index}.log")
                _mount(host, address, secret_file, mnt, logs[-1])
            for log in logs:

                def listening(log: Path = log) -> bool:
                    return "listening for invalidations" in log.read_text()

                wait_until(listening, timeout=20)
            yield TwoHosts(hosts, mounts[0], mounts[1])
        finally:
            for host in hosts:
                host.link_up()
            for mnt in mounts:
                if subprocess.run(
                    ["umount", str(mnt)], capture_output=True, check=False
                ).returncode:
                    subprocess.run(["umount", "-l", str(mnt)], capture_output=True, check=False)
                mnt.rmdir()
            meta.stop()


def _seen(check: Callable[[], bool], timeout: float = BOUND) -> None:
    """``check`` holds within ``timeout`` (polled every 20 ms)."""
    wait_until(check, timeout=timeout, step=0.02)


def _xattr(path: Path, name: str) -> bytes | None:
    """The attribute's value, or None while it is not there (yet)."""
    try:
        return os.getxattr(path, name)
    except OSError:
        return None


def _stat_elsewhere(path: Path, timeout: float) -> str | None:
    """``stat`` in a process of its own (killable if the mount makes it wait): its mode and
    link count, ``gone`` if the name does not exist, None if it did not answer in time or
    failed (a cut-off mount may do either; neither is a stale answer)."""
    code = (
        "import os, sys\n"
        "try:\n"
        "    st = os.stat(sys.argv[1])\n"
        "except FileNotFoundError:\n"
        "    print('gone')\n"
        "else:\n"
        "    print(oct(st.st_mode & 0o7777), st.st_nlink)\n"
    )
    try:
        result = subprocess.run(
            [sys.executable, "-c", code, str(path)],
            capture_output=True,
            text=True,
            timeout=timeout,
            check=False,
        )
    except subprocess.TimeoutExpired:
        return None
    return result.stdout.strip() if result.returncode == 0 else None


def test_changes_on_one_host_reach_the_other_over_the_link(two_hosts: TwoHosts) -> None:
    a, b = two_hosts.a, two_hosts.b
    (a / "d").mkdir()
    _seen(lambda: (b / "d").is_dir())
    (a / "d" / "f").touch()
    _seen(lambda: (b / "d" / "f").exists())
    os.stat(b / "d" / "f")  # B's kernel now keeps it for the lease
    os.chmod(a / "d" / "f", 0o600)
    _seen(lambda: os.stat(b / "d" / "f").st_mode & 0o777 == 0o600)
    os.utime(a / "d" / "f", ns=(10**18, 10**18))
    _seen(lambda: os.stat(b / "d" / "f").st_mtime_ns == 10**18)
    os.setxattr(a / "d" / "f", "user.k", b"v1")
    _seen(lambda: _xattr(b / "d" / "f", "user.k") == b"v1")
    os.rename(a / "d" / "f", a / "d" / "g")
    _seen(lambda: not (b / "d" / "f").exists() and (b / "d" / "g").exists())
    os.unlink(a / "d" / "g")
    _seen(lambda: not (b / "d" / "g").exists())


def test_a_host_cut_off_serves_no_stale_entry_after_its_lease(two_hosts: TwoHosts) -> None:
    a, b = two_hosts.a, two_hosts.b
    cut = two_hosts.hosts[1]
    (a / "c").mkdir()
    (a / "c" / "kept").touch()
    os.chmod(a / "c" / "kept", 0o644)
    _seen(lambda: os.stat(b / "c" / "kept").st_mode & 0o777 == 0o644)
    assert _stat_elsewhere(b / "c" / "kept", 10) == "0o644 1"  # cached by B's kernel now
    cut.link_down()
    try:
        cut_at = time.monotonic()
        os.chmod(a / "c" / "kept", 0o600)  # B cannot hear of these
        os.rename(a / "c" / "kept", a / "c" / "moved")
        time.sleep(max(0.0, cut_at + STALE_MAX + MARGIN - time.monotonic()))
        # Past the bound B must not answer from what it kept: the old mode, or the old
        # name as present. Asking the meta role, it may wait or fail while cut off.
        for name in ("kept", "moved"):
            answer = _stat_elsewhere(b / "c" / name, 3)
            assert answer != "0o644 1", f"{name}: B answered from its cache after the bound"
        assert _stat_elsewhere(b / "c" / "kept", 3) in (None, "gone")
    finally:
        cut.link_up()
    # and once the link is back, B sees the truth
    _seen(lambda: _stat_elsewhere(b / "c" / "moved", 10) == "0o600 1", timeout=60)
    assert _stat_elsewhere(b / "c" / "kept", 10) == "gone"
