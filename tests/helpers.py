"""Real storaged processes for tests, and a synchronous way to call them."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import trio

from storaged.rpc import RpcClient, auth


def make_secret(path: Path) -> bytes:
    auth.write_secret_file(path)
    return auth.load_secret(path)


class StoragedProcess:
    """One ``python -m storaged`` child on loopback, started and stopped by the test."""

    def __init__(self, data_dir: Path, secret_file: Path, *, extra: list[str] | None = None,
                 env: dict[str, str] | None = None, listen: str = "tcp://127.0.0.1:0") -> None:
        self.data_dir = data_dir
        self.secret_file = secret_file
        self.extra = extra or []
        self.env = env or {}
        self.listen = listen
        self.proc: subprocess.Popen[bytes] | None = None
        self.address = ""
        self.log_path = data_dir.parent / f"{data_dir.name}.log"

    def start(self, timeout: float = 20.0) -> StoragedProcess:
        address_file = self.data_dir.parent / f"{self.data_dir.name}.addr"
        address_file.unlink(missing_ok=True)
        self.log = open(self.log_path, "ab")
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "storaged", "--listen", self.listen,
             "--data-dir", str(self.data_dir), "--secret-file", str(self.secret_file),
             "--address-file", str(address_file), *self.extra],
            stdout=self.log, stderr=self.log, env={**os.environ, **self.env})
        deadline = time.monotonic() + timeout
        while not address_file.exists():
            if self.proc.poll() is not None:
                raise RuntimeError(f"storaged died ({self.proc.returncode}):\n{self.read_log()}")
            if time.monotonic() > deadline:
                raise RuntimeError(f"storaged did not start:\n{self.read_log()}")
            time.sleep(0.02)
        self.address = json.loads(address_file.read_text())["addresses"][0]
        return self

    def read_log(self) -> str:
        return self.log_path.read_text(errors="replace")

    def kill(self) -> None:
        assert self.proc is not None
        self.proc.send_signal(signal.SIGKILL)
        self.proc.wait(10)

    def terminate(self, timeout: float = 20.0) -> int:
        assert self.proc is not None
        self.proc.send_signal(signal.SIGTERM)
        return self.proc.wait(timeout)

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(10)
        if hasattr(self, "log"):
            self.log.close()


def call(address: str, secret: bytes, method: str, *params: Any, timeout: float = 30.0) -> Any:
    """One RPC call from synchronous test code (a fresh client, so a fresh connection)."""
    async def go() -> Any:
        async with RpcClient(secret, timeout=timeout) as client:
            return await client.call(address, method, *params)
    return trio.run(go)
