"""Real storaged processes for tests, and a synchronous way to call them."""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any, BinaryIO

import trio
from prometheus_client.parser import text_string_to_metric_families

from fusefs.unmounting import unmount
from storaged.rpc import RpcClient, auth, tls


def raw_connection(address: str, timeout: float = 10) -> socket.socket:
    """A blocking socket to a server for tests that write msgpack bytes themselves.

    When the suite runs with TLS on (SHOAL_TLS_DIR), the socket is wrapped in TLS with the
    cluster's client certificate, so these tests check the framing layer inside the tunnel.
    """
    host, port = address.removeprefix("tcp://").rsplit(":", 1)
    sock = socket.create_connection((host, int(port)), timeout=timeout)
    config = tls.active()
    if config is None:
        return sock
    return config.client.wrap_socket(sock, server_hostname=host)


def free_port() -> int:
    """A TCP port on 127.0.0.1 nobody listens on right now (for servers that need a fixed
    port given up front, like an HTTP metrics endpoint)."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def make_secret(path: Path) -> bytes:
    auth.write_secret_file(path)
    return auth.load_secret(path)


class StoragedProcess:
    """One ``python -m storaged`` child on loopback, started and stopped by the test."""

    def __init__(
        self,
        data_dir: Path,
        secret_file: Path,
        *,
        extra: list[str] | None = None,
        env: dict[str, str] | None = None,
        listen: str = "tcp://127.0.0.1:0",
        prefix: list[str] | None = None,
        supervised: bool = False,
    ) -> None:
        self.prefix = prefix or []  # e.g. ["ip", "netns", "exec", NS]: it execs, same pid
        # started and killed by tests/supervisor.py rather than forked from the test process
        # (see there: restarts while the test holds files open on a mount)
        self.supervised = supervised
        self.supervisor: subprocess.Popen[str] | None = None
        self.addresses: list[str] = []
        self.data_dir = data_dir
        self.secret_file = secret_file
        self.extra = extra or []
        self.env = env or {}
        self.listen = listen
        # the process to signal: storaged itself, or its supervisor (whose output is text)
        self.proc: subprocess.Popen[bytes] | subprocess.Popen[str] | None = None
        self.log: BinaryIO | None = None  # opened at start, closed at stop
        self.pid = 0  # the storaged process's own (not its supervisor's)
        self.address = ""
        self.log_path = data_dir.parent / f"{data_dir.name}.log"

    def start(self, timeout: float = 20.0) -> StoragedProcess:
        self.data_dir.parent.mkdir(parents=True, exist_ok=True)
        address_file = self.data_dir.parent / f"{self.data_dir.name}.addr"
        address_file.unlink(missing_ok=True)
        if self.log is None or self.log.closed:
            self.log = open(self.log_path, "ab")  # noqa: SIM115 (the process's log; closed in stop)
        argv = [
            *self.prefix,
            sys.executable,
            "-m",
            "storaged",
            "--listen",
            self.listen,
            "--data-dir",
            str(self.data_dir),
            "--secret-file",
            str(self.secret_file),
            "--address-file",
            str(address_file),
            *self.extra,
        ]
        if self.supervised:
            reply = self._supervise("start " + json.dumps(argv))  # "started PID"
            self.pid = int(reply.split()[1])
        else:
            self.proc = subprocess.Popen(
                argv, stdout=self.log, stderr=self.log, env={**os.environ, **self.env}
            )
            self.pid = self.proc.pid
        assert self.proc is not None
        deadline = time.monotonic() + timeout
        while not address_file.exists():
            if self.proc.poll() is not None:
                raise RuntimeError(f"storaged died ({self.proc.returncode}):\n{self.read_log()}")
            if time.monotonic() > deadline:
                raise RuntimeError(f"storaged did not start:\n{self.read_log()}")
            time.sleep(0.02)
        self.addresses = json.loads(address_file.read_text())["addresses"]
        self.address = self.addresses[0]
        return self

    def read_log(self) -> str:
        return self.log_path.read_text(errors="replace")

    def _supervise(self, command: str) -> str:
        if self.supervisor is None or self.supervisor.poll() is not None:
            self.supervisor = subprocess.Popen(
                [sys.executable, str(Path(__file__).with_name("supervisor.py"))],
                stdin=subprocess.PIPE,
                stdout=subprocess.PIPE,
                stderr=self.log,
                text=True,
                env={**os.environ, **self.env},
            )
            self.proc = self.supervisor  # alive while the supervisor is
        assert self.supervisor.stdin is not None and self.supervisor.stdout is not None
        self.supervisor.stdin.write(command + "\n")
        self.supervisor.stdin.flush()
        return self.supervisor.stdout.readline().strip()

    def kill(self) -> None:
        if self.supervised:
            assert self._supervise("kill") == "killed"
            return
        assert self.proc is not None
        self.proc.send_signal(signal.SIGKILL)
        self.proc.wait(10)

    def terminate(self, timeout: float = 20.0) -> int:
        assert self.proc is not None
        self.proc.send_signal(signal.SIGTERM)
        return self.proc.wait(timeout)

    def stop(self) -> None:
        if self.supervisor is not None and self.supervisor.poll() is None:
            assert self.supervisor.stdin is not None
            self.supervisor.stdin.close()  # it kills its storaged and exits
            self.supervisor.wait(10)
        elif self.proc is not None and self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(10)
        if self.log is not None:
            self.log.close()


# The shoal command as tests run it (Popen it for a process that keeps running).
SHOAL = [sys.executable, "-m", "shoal.cli"]


def shoal(
    *args: str,
    check: bool = False,
    env: dict[str, str] | None = None,
    timeout: float = 120,
    **run: Any,
) -> subprocess.CompletedProcess[str]:
    """``shoal ARGS`` as a user runs it, its output captured as text (unless ``run`` says
    where stdout goes). ``check``: assert it exited 0, showing what it printed if not;
    ``env``: added to this process's environment."""
    if "stdout" not in run:
        run["capture_output"] = True
    result = subprocess.run(
        [*SHOAL, *args],
        text=True,
        timeout=timeout,
        env={**os.environ, **env} if env else None,
        **run,
        check=False,
    )
    if check:
        assert result.returncode == 0, (
            f"shoal {' '.join(args)} exited {result.returncode}: {result.stdout}{result.stderr}"
        )
    return result


def call(address: str, secret: bytes, method: str, *params: Any, timeout: float = 30.0) -> Any:
    """One RPC call from synchronous test code (a fresh client, so a fresh connection)."""

    async def go() -> Any:
        async with RpcClient(secret, timeout=timeout) as client:
            return await client.call(address, method, *params)

    return trio.run(go)


class LocalCluster:
    """A meta role and N chunk servers as real processes, heartbeating fast."""

    def __init__(
        self,
        root: Path,
        secret_file: Path,
        chunk_servers: int = 3,
        chunk_extra: list[str] | None = None,
        chunk_extra_for: Callable[[int], list[str]] | None = None,
    ) -> None:
        """``chunk_extra``: flags for every chunk server; ``chunk_extra_for(i)``: flags for
        server ``i`` alone (e.g. its own metrics port)."""
        self.root = root
        self.secret_file = secret_file
        self.secret = auth.load_secret(secret_file)
        self.meta = StoragedProcess(
            root / "meta",
            secret_file,
            extra=["--roles", "meta", "--heartbeat-timeout", "2"],
            supervised=True,
        )
        self.chunks: list[StoragedProcess] = []
        self.count = chunk_servers
        self.chunk_extra = chunk_extra or []
        self.chunk_extra_for = chunk_extra_for or (lambda index: [])

    def chunk_args(self, index: int) -> list[str]:
        return [
            "--meta",
            self.meta.address,
            "--heartbeat-interval",
            "0.2",
            "--zone",
            f"zone{index}",
            "--reserve",
            "0",
            *self.chunk_extra,
            *self.chunk_extra_for(index),
        ]

    def start(self) -> LocalCluster:
        self.meta.start()
        for i in range(self.count):
            self.chunks.append(
                StoragedProcess(
                    self.root / f"chunk{i}", self.secret_file, extra=self.chunk_args(i)
                ).start()
            )
        self.wait_registered()
        return self

    def restart_chunk(self, index: int) -> StoragedProcess:
        old = self.chunks[index]
        old.stop()
        self.chunks[index] = StoragedProcess(
            old.data_dir, self.secret_file, extra=self.chunk_args(index)
        ).start()
        return self.chunks[index]

    def restart_meta(self) -> StoragedProcess:
        """SIGKILL the meta role (no chance to clean up) and start it again, same address."""
        self.kill_meta()
        return self.start_meta()

    def kill_meta(self) -> None:
        self.meta.kill()

    def start_meta(self) -> StoragedProcess:
        """A new meta role process on the old one's data and address."""
        self.meta.listen = self.meta.address
        return self.meta.start()

    def servers(self) -> list[dict[str, Any]]:
        return call(self.meta.address, self.secret, "cluster.servers")

    def wait_registered(self, timeout: float = 20.0) -> None:
        """Until every chunk process of ``self.chunks`` is up in the meta role's map at the
        address it listens on now.

        A count of servers up is not enough: after a SIGKILL the meta role counts the dead
        instance as up until its heartbeat timeout, so a restarted server (same id, new
        address) only counts once its own first heartbeat has replaced the address.
        """
        deadline = time.monotonic() + timeout
        wanted = {c.address for c in self.chunks}
        while True:
            up = {s["address"] for s in self.servers() if s["state"] == "up"}
            if wanted <= up:
                return
            if time.monotonic() > deadline:
                raise RuntimeError(
                    f"chunk servers at {sorted(wanted - up)} did not register "
                    f"within {timeout:g}s: {self.servers()}"
                )
            time.sleep(0.05)

    def shoal(self, *args: str, timeout: float = 120) -> subprocess.CompletedProcess[str]:
        """Run a shoal admin command against this cluster, as an operator would."""
        return shoal(
            *args,
            "--meta",
            self.meta.address,
            "--secret-file",
            str(self.secret_file),
            timeout=timeout,
        )

    def holders(self, cid: str) -> list[int]:
        """Indexes of the chunk servers whose data directory holds ``cid``."""
        return [
            i
            for i, c in enumerate(self.chunks)
            if (c.data_dir / "chunks" / cid[:2] / cid[2:4] / cid).exists()
        ]

    def stop(self) -> None:
        for proc in [*self.chunks, self.meta]:
            proc.stop()


@contextlib.contextmanager
def mounted_volume(
    root: Path,
    meta_extra: list[str],
    volume: str = "v",
    chunk_size: int = 1 << 20,
    chunk_extra: list[str] | None = None,
    mount_extra: list[str] | None = None,
) -> Iterator[tuple[LocalCluster, Path]]:
    """A LocalCluster (meta role flags ``meta_extra``), a volume with R=2, and a real
    mount of it in a fresh directory; unmounted and stopped afterwards."""
    secret_file = root / "secret"
    make_secret(secret_file)
    cluster = LocalCluster(root / "cluster", secret_file, chunk_extra=chunk_extra)
    cluster.meta.extra += meta_extra
    cluster.start()
    call(cluster.meta.address, cluster.secret, "volume.create", volume, 1 << 30, 2, chunk_size)
    mnt = Path(tempfile.mkdtemp(prefix="shoalfs-test-"))
    try:
        mount(
            cluster,
            volume,
            mnt,
            root / "mount.log",
            ["--session-heartbeat", "1", *(mount_extra or [])],
        )
        yield cluster, mnt
    finally:
        try:
            unmount(str(mnt), if_busy="detach")
        except OSError as exc:
            print(f"cleanup: could not unmount {mnt}: {exc}")
        time.sleep(0.5)
        cluster.stop()
        mnt.rmdir()


def mount(
    cluster: LocalCluster, volume: str, mnt: Path, log_file: Path, extra: list[str] | None = None
) -> None:
    """`shoal mount` in the background, as a user runs it; returns once it is ready."""
    shoal(
        "mount",
        volume,
        str(mnt),
        "--meta",
        cluster.meta.address,
        "--secret-file",
        str(cluster.secret_file),
        "--log-file",
        str(log_file),
        *(extra or []),
        check=True,
        timeout=60,
    )


def remount(cluster: LocalCluster, mnt: Path, log_file: Path, volume: str = "v") -> None:
    """Unmount and mount again: what is read next comes from the chunk servers, not from the
    old mount's memory or the kernel's page cache."""
    unmount(str(mnt))
    mount(cluster, volume, mnt, log_file)


def wait_until(predicate: Callable[[], Any], timeout: float = 20.0, step: float = 0.2) -> Any:
    """Poll until ``predicate()`` is truthy and return that value; raise TimeoutError at the
    deadline (a wait that quietly gave up let a test go on with the condition unmet)."""
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() > deadline:
            raise TimeoutError(
                f"{getattr(predicate, '__name__', 'condition')} still false "
                f"after {timeout:g}s (last value {value!r})"
            )
        time.sleep(step)


def scrape(port: int) -> dict[str, dict[tuple, float]]:
    """{sample name: {labels as sorted tuple: value}}"""
    text = urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=10).read()
    samples: dict[str, dict[tuple, float]] = {}
    for family in text_string_to_metric_families(text.decode()):
        for sample in family.samples:
            samples.setdefault(sample.name, {})[tuple(sorted(sample.labels.items()))] = sample.value
    return samples


def http_get(port: int, path: str) -> tuple[int, dict]:
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}{path}", timeout=10) as reply:
            return reply.status, json.loads(reply.read())
    except urllib.error.HTTPError as exc:
        return exc.code, json.loads(exc.read())


def write_synced(path: Path | str, data: bytes) -> str:
    """Write ``data`` to ``path`` and fsync it (acknowledged: on R servers and committed);
    returns its SHA-256, for checking what is read back later."""
    with open(path, "wb") as f:
        f.write(data)
        f.flush()
        os.fsync(f.fileno())
    return hashlib.sha256(data).hexdigest()
