"""The shoal command as a user runs it: help, exit codes, and a local cluster's life cycle."""

from __future__ import annotations

import argparse
import json
import os
import signal
import subprocess
import time
from pathlib import Path

import pytest

from fusefs.launch import is_mounted
from storaged.chunk.ids import chunk_id
from tests.helpers import call, shoal


def _subcommands() -> list[str]:
    from shoal.cli import build_parser

    parser = build_parser()
    return sorted(
        next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction)).choices
    )


@pytest.mark.parametrize("command", _subcommands())
def test_every_subcommand_explains_itself(command):
    """Taken from the parser, so a new command is covered: it has a description that
    teaches, not just a usage line, and states the exit codes."""
    result = shoal(command, "--help")
    assert result.returncode == 0 and "usage: shoal " + command in result.stdout
    assert "exit codes" in result.stdout or command == "version"
    assert len(result.stdout.splitlines()) > 3


def test_top_level_help_lists_commands_and_exit_codes():
    out = shoal("--help").stdout
    for word in ("storaged", "up", "down", "status", "exit codes"):
        assert word in out
    assert shoal().returncode == 2  # no command is a usage error
    assert shoal("version", check=True).stdout.startswith("shoalfs ")


def closed_pipe_run(*args: str) -> subprocess.CompletedProcess[str]:
    """A shoal command whose stdout is a pipe the reader has already closed."""
    read_end, write_end = os.pipe()
    os.close(read_end)
    try:
        return shoal(*args, stdout=write_end, stderr=subprocess.PIPE, timeout=60)
    finally:
        os.close(write_end)


def test_up_status_down_and_a_dead_server(tmp_path):
    workdir = tmp_path / "cluster"
    mnt = tmp_path / "mnt"
    up = shoal("up", "--workdir", str(workdir), "--chunk-servers", "3", "--mountpoint", str(mnt))
    try:
        assert up.returncode == 0, up.stderr
        rows = [line for line in up.stdout.splitlines() if "tcp://" in line and " up " in line]
        assert "healthy" in up.stdout and len(rows) == 3, up.stdout  # 3 chunk servers
        assert f"mounted at {mnt}" in up.stdout
        assert is_mounted(mnt)
        described = json.loads((workdir / "cluster.json").read_text())
        servers = described["chunk_servers"]
        assert len({s["address"] for s in servers}) == 3
        assert len({s["data_dir"] for s in servers}) == 3
        assert Path(described["secret_file"]).stat().st_mode & 0o777 == 0o600
        secret = Path(described["secret_file"]).read_bytes().strip()
        call(servers[0]["address"], secret, "chunk.put", chunk_id(b"kept"), b"kept")

        status = shoal("status", "--workdir", str(workdir), "--json", check=True)
        assert json.loads(status.stdout)["healthy"] is True
        closed = closed_pipe_run("status", "--workdir", str(workdir))  # 'shoal status | head'
        assert closed.returncode != 0 and closed.stderr == "", closed.stderr

        os.kill(servers[1]["pid"], signal.SIGKILL)
        time.sleep(0.2)
        status = shoal("status", "--workdir", str(workdir))
        assert status.returncode == 3 and "no-answer" in status.stdout

        again = shoal("up", "--workdir", str(workdir), check=True)  # restarts only chunk2
        after = json.loads((workdir / "cluster.json").read_text())["chunk_servers"]
        assert after[0]["pid"] == servers[0]["pid"] and after[1]["pid"] != servers[1]["pid"]
        assert "healthy" in again.stdout
        (mnt / "file").write_bytes(b"through the mount")
    finally:
        down = shoal("down", "--workdir", str(workdir))
    assert down.returncode == 0 and "mount, chunk1, chunk2, chunk3, meta" in down.stdout
    assert not is_mounted(mnt)
    status = shoal("status", "--workdir", str(workdir))
    assert status.returncode == 3 and "does not answer" in status.stderr  # all down
    # data, ports and the mountpoint survive down/up
    shoal("up", "--workdir", str(workdir), check=True)
    try:
        again = json.loads((workdir / "cluster.json").read_text())
        assert again["mountpoint"] == str(mnt)
        assert [s["address"] for s in again["chunk_servers"]] == [s["address"] for s in servers]
        first = again["chunk_servers"][0]
        assert call(first["address"], secret, "chunk.get", chunk_id(b"kept")) == b"kept"
        assert (mnt / "file").read_bytes() == b"through the mount"
    finally:
        shoal("down", "--workdir", str(workdir), check=True)


def test_secret_generate_refuses_to_overwrite(tmp_path):
    target = tmp_path / "secret"
    assert shoal("secret", "generate", str(target)).returncode == 0
    before = target.read_text()
    assert shoal("secret", "generate", str(target)).returncode == 1
    assert target.read_text() == before
