"""Cluster-secret authentication as two ordinary msgpack-RPC requests.

Why requests rather than a custom preamble: any msgpack-rpc client library can then talk to
storaged, by calling two methods before the rest. The secret never crosses the wire; only
HMAC-SHA256 proofs over fresh random nonces do, with a label per direction so a proof made
by one side can never be replayed as the other's.

    auth.challenge([client_nonce])  -> {"nonce": server_nonce, "server_proof": bin|nil}
    auth.login(client_proof)        -> true, or error AUTH_FAILED and the connection closes

    client_proof = HMAC-SHA256(secret, b"shoalfs-v1 client" + server_nonce)
    server_proof = HMAC-SHA256(secret, b"shoalfs-v1 server" + client_nonce + server_nonce)

The server proof is optional (sent only when the client sends a nonce): it lets our client
refuse to hand chunks to a server that does not hold the secret either.
"""

from __future__ import annotations

import hashlib
import hmac
import os
from pathlib import Path

NONCE_BYTES = 32
MIN_SECRET_BYTES = 16
_CLIENT_LABEL = b"shoalfs-v1 client"
_SERVER_LABEL = b"shoalfs-v1 server"


def new_nonce() -> bytes:
    return os.urandom(NONCE_BYTES)


def client_proof(secret: bytes, server_nonce: bytes) -> bytes:
    return hmac.new(secret, _CLIENT_LABEL + server_nonce, hashlib.sha256).digest()


def server_proof(secret: bytes, client_nonce: bytes, server_nonce: bytes) -> bytes:
    return hmac.new(secret, _SERVER_LABEL + client_nonce + server_nonce, hashlib.sha256).digest()


def proofs_equal(a: bytes, b: bytes) -> bool:
    return hmac.compare_digest(a, b)


def generate_secret() -> str:
    """A new cluster secret, as the text that goes into a secret file."""
    return os.urandom(32).hex()


def load_secret(path: str | os.PathLike[str]) -> bytes:
    """Read a secret file: its content with surrounding whitespace removed.

    Refuses short secrets and files other users can read, because either makes the
    authentication worthless.
    """
    p = Path(path)
    try:
        raw = p.read_bytes().strip()
    except FileNotFoundError:
        raise ValueError(f"secret file {p} does not exist") from None
    if len(raw) < MIN_SECRET_BYTES:
        raise ValueError(f"secret in {p} is shorter than {MIN_SECRET_BYTES} bytes")
    mode = p.stat().st_mode
    if mode & 0o077:
        raise ValueError(
            f"secret file {p} is readable by others (mode {mode & 0o777:o}); chmod 600 it"
        )
    return raw


def write_secret_file(path: str | os.PathLike[str]) -> None:
    """Create a secret file readable by its owner only (created with that mode, no race)."""
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "w") as f:
        f.write(generate_secret() + "\n")
