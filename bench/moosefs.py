"""MooseFS on this machine, for the side-by-side benchmark: what a self-hosted user would
install instead of shoalfs, set up the way a lab would (3 chunk servers, goal 2).

Debian's packages are installed on first use. MooseFS refuses a master on a loopback
address, so the master, the chunk servers and the client all run in a network namespace of
their own with one private address on its loopback interface; traffic never leaves this machine.
The client is started with ``nsenter --net`` (not ``ip netns exec``, which would also give it
a mount namespace of its own), so its FUSE mount is visible to the benchmark.
"""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import time
from pathlib import Path

PACKAGES = ["moosefs-master", "moosefs-chunkserver", "moosefs-client"]
NETNS = "shoalbench-mfs"
ADDRESS = "10.213.0.1"  # only inside the namespace
CLIENT_PORT, CHUNK_PORT = 9421, 9420
EMPTY_METADATA = Path("/var/lib/mfs/metadata.mfs.empty")


def install() -> None:
    """apt-get the packages unless their programs are already here."""
    if all(shutil.which(p) for p in ("mfsmaster", "mfschunkserver", "mfsmount")):
        return
    env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
    _run(["apt-get", "update", "-q"], env=env)
    _run(["apt-get", "install", "-y", "-q", "--no-install-recommends", *PACKAGES], env=env)


class MooseFs:
    """Start with ``start()``; the mount is at ``mountpoint``; ``stop()`` undoes everything."""

    name = "moosefs"

    def __init__(self, work: Path, chunk_servers: int = 3, goal: int = 2) -> None:
        self.work, self.chunk_servers, self.goal = work, chunk_servers, goal
        self.mountpoint = work / "mnt"
        self._started_netns = False

    # -- life cycle -------------------------------------------------------------------------

    def start(self) -> None:
        install()
        self._netns_up()
        self._configure()
        self._in_netns(["mfsmaster", "-c", str(self.work / "mfsmaster.cfg"), "start"])
        for i in range(self.chunk_servers):
            self._in_netns(
                ["mfschunkserver", "-c", str(self._cs_dir(i) / "mfschunkserver.cfg"), "start"]
            )
        self.mountpoint.mkdir(exist_ok=True)
        self._in_netns(["mfsmount", str(self.mountpoint), "-H", ADDRESS, "-P", str(CLIENT_PORT)])
        self._in_netns(["mfssetgoal", "-r", str(self.goal), str(self.mountpoint)])
        self._wait_for_copies()

    def stop(self) -> None:
        subprocess.run(["umount", "-l", str(self.mountpoint)], capture_output=True, check=False)
        for i in range(self.chunk_servers):
            cfg = self._cs_dir(i) / "mfschunkserver.cfg"
            if cfg.exists():
                self._in_netns(["mfschunkserver", "-c", str(cfg), "stop"], check=False)
        if (self.work / "mfsmaster.cfg").exists():
            self._in_netns(
                ["mfsmaster", "-c", str(self.work / "mfsmaster.cfg"), "stop"], check=False
            )
        for pids in self.pids().values():  # whatever did not stop when asked
            for pid in pids:
                try:
                    os.kill(pid, signal.SIGKILL)
                except ProcessLookupError:
                    pass
        if self._started_netns:
            subprocess.run(["ip", "netns", "del", NETNS], capture_output=True, check=False)
            self._started_netns = False

    def pids(self) -> dict[str, list[int]]:
        """The processes of this installation by role, found by their command lines (the
        client renames itself "mfsmount (mounted on: PATH)"; the master forks helpers such
        as its "data writer", found as its children)."""
        found: dict[str, list[int]] = {"client": [], "chunk servers": [], "master": []}
        parents: dict[int, int] = {}
        for entry in Path("/proc").iterdir():
            if not entry.name.isdigit():
                continue
            try:
                line = (
                    (entry / "cmdline")
                    .read_bytes()
                    .replace(b"\0", b" ")
                    .decode(errors="replace")
                    .strip()
                )
                parents[int(entry.name)] = int(
                    (entry / "stat").read_text().rsplit(") ", 1)[1].split()[1]
                )
            except (OSError, ValueError, IndexError):
                continue
            if line.startswith("mfsmount") and f"mounted on: {self.mountpoint})" in line:
                found["client"].append(int(entry.name))
            elif line.startswith("mfschunkserver") and str(self.work) in line:
                found["chunk servers"].append(int(entry.name))
            elif line.startswith("mfsmaster") and str(self.work) in line:
                found["master"].append(int(entry.name))
        found["master"] += [
            p
            for p, parent in parents.items()
            if parent in found["master"] and p not in found["master"]
        ]
        return found

    # -- set-up -----------------------------------------------------------------------------

    def _netns_up(self) -> None:
        subprocess.run(
            ["ip", "netns", "del", NETNS], capture_output=True, check=False
        )  # a stale one
        _run(["ip", "netns", "add", NETNS])
        self._started_netns = True
        _run(["ip", "-n", NETNS, "link", "set", "lo", "up"])
        _run(["ip", "-n", NETNS, "addr", "add", f"{ADDRESS}/32", "dev", "lo"])

    def _cs_dir(self, i: int) -> Path:
        return self.work / f"chunk{i}"

    def _configure(self) -> None:
        master = self.work / "master"
        master.mkdir(parents=True, exist_ok=True)
        shutil.copy(EMPTY_METADATA, master / "metadata.mfs")
        (self.work / "mfsexports.cfg").write_text("*\t/\trw,alldirs,admin,maproot=0:0\n")
        _write_cfg(
            self.work / "mfsmaster.cfg",
            {
                "WORKING_USER": "root",
                "WORKING_GROUP": "root",
                "DATA_PATH": master,
                "EXPORTS_FILENAME": self.work / "mfsexports.cfg",
                "MATOCS_LISTEN_HOST": ADDRESS,
                "MATOCS_LISTEN_PORT": CHUNK_PORT,
                "MATOCL_LISTEN_HOST": ADDRESS,
                "MATOCL_LISTEN_PORT": CLIENT_PORT,
                "MATOML_LISTEN_HOST": ADDRESS,
                "SYSLOG_IDENT": "mfsmaster-bench",
            },
        )
        for i in range(self.chunk_servers):
            d = self._cs_dir(i)
            (d / "hdd").mkdir(parents=True, exist_ok=True)
            (d / "mfshdd.cfg").write_text(f"{d / 'hdd'}\n")
            _write_cfg(
                d / "mfschunkserver.cfg",
                {
                    "WORKING_USER": "root",
                    "WORKING_GROUP": "root",
                    "DATA_PATH": d,
                    "HDD_CONF_FILENAME": d / "mfshdd.cfg",
                    "MASTER_HOST": ADDRESS,
                    "MASTER_PORT": CHUNK_PORT,
                    "CSSERV_LISTEN_HOST": ADDRESS,
                    "CSSERV_LISTEN_PORT": 9422 + i,
                    "SYSLOG_IDENT": f"mfschunkserver-bench{i}",
                },
            )

    def _wait_for_copies(self, timeout: float = 120.0) -> None:
        """Until a file written now has ``goal`` copies of its chunk: every chunk server has
        registered and the goal applies (a benchmark of goal 1 would flatter MooseFS)."""
        probe = self.mountpoint / ".bench-probe"
        probe.write_bytes(os.urandom(1 << 20))
        deadline = time.monotonic() + timeout
        info = ""
        while time.monotonic() < deadline:
            info = self._in_netns(["mfsfileinfo", str(probe)], check=False)
            if info.count("copy ") >= self.goal:
                probe.unlink()
                return
            time.sleep(1)
        raise RuntimeError(f"MooseFS never stored {self.goal} copies of a chunk:\n{info}")

    def _in_netns(self, command: list[str], check: bool = True) -> str:
        return _run(["nsenter", f"--net=/run/netns/{NETNS}", *command], check=check)


def _write_cfg(path: Path, values: dict[str, object]) -> None:
    path.write_text("".join(f"{k} = {v}\n" for k, v in values.items()))


def _run(command: list[str], check: bool = True, env: dict[str, str] | None = None) -> str:
    result = subprocess.run(
        command, capture_output=True, text=True, env=env, timeout=600, check=False
    )
    if check and result.returncode != 0:
        raise RuntimeError(
            f"{' '.join(command)} failed ({result.returncode}): "
            f"{(result.stderr or result.stdout).strip()}"
        )
    return result.stdout
