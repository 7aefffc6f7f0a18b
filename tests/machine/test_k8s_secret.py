"""`shoal secret kubernetes` against a stand-in API server on loopback: creates the Secret
once with a random value, leaves an existing one alone, and reports refusals."""

from __future__ import annotations

import base64
import json
import subprocess
import threading
from http.server import BaseHTTPRequestHandler, HTTPServer
from pathlib import Path
from typing import ClassVar

import pytest

from tests.helpers import shoal


class FakeApi(BaseHTTPRequestHandler):
    secrets: ClassVar[dict[str, dict]] = {}
    requests: ClassVar[list[tuple[str, str, dict]]] = []

    def do_POST(self) -> None:
        body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
        self.requests.append((self.path, self.headers["Authorization"], body))
        if self.headers["Authorization"] != "Bearer good-token":
            self._answer(403, {"message": "forbidden: secrets is forbidden"})
        elif body["metadata"]["name"] in self.secrets:
            self._answer(409, {"message": "already exists"})
        else:
            self.secrets[body["metadata"]["name"]] = body
            self._answer(201, body)

    def _answer(self, code: int, body: dict) -> None:
        data = json.dumps(body).encode()
        self.send_response(code)
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def log_message(self, *args: object) -> None:
        pass


@pytest.fixture
def api():
    server = HTTPServer(("127.0.0.1", 0), FakeApi)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    FakeApi.secrets, FakeApi.requests = {}, []
    yield f"http://127.0.0.1:{server.server_address[1]}"
    server.shutdown()


def run(api: str, token_file: Path) -> subprocess.CompletedProcess[str]:
    return shoal(
        "secret",
        "kubernetes",
        "--name",
        "shoalfs-secret",
        "--namespace",
        "shoalfs",
        "--api-server",
        api,
        "--token-file",
        str(token_file),
        timeout=60,
    )


def test_creates_once_and_never_overwrites(api: str, tmp_path: Path) -> None:
    token = tmp_path / "token"
    token.write_text("good-token\n")
    first = run(api, token)
    assert first.returncode == 0 and "created" in first.stdout
    path, auth, body = FakeApi.requests[0]
    assert path == "/api/v1/namespaces/shoalfs/secrets" and auth == "Bearer good-token"
    value = base64.b64decode(body["data"]["secret"]).decode().strip()
    assert len(value) >= 32
    second = run(api, token)
    assert second.returncode == 0 and "exists" in second.stdout
    stored = FakeApi.secrets["shoalfs-secret"]["data"]["secret"]
    assert base64.b64decode(stored).decode().strip() == value  # unchanged


def test_refusals_are_reported(api: str, tmp_path: Path) -> None:
    token = tmp_path / "token"
    token.write_text("bad-token")
    result = run(api, token)
    assert result.returncode == 1 and "HTTP 403" in result.stderr and "forbidden" in result.stderr
    result = run("http://127.0.0.1:1", token)
    assert result.returncode == 1 and "cannot reach" in result.stderr
