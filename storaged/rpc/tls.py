"""TLS for msgpack-RPC over TCP: one switch for every process of a cluster.

The cluster secret already proves, both ways, that each side belongs to the cluster; what
it does not give is privacy: chunk data and metadata cross the network in the clear. With
TLS on, every TCP connection between shoalfs processes is encrypted and *mutually*
verified against the cluster's CA: a peer without a certificate signed by it cannot even
finish the handshake, and then the secret handshake runs inside the tunnel as before.

Host names are not checked: peers are found by the addresses in the cluster map (pod IPs,
loopback, namespace addresses), which change and which no certificate could list ahead
of time. What a certificate proves here is "signed by this cluster's CA", the same kind of
identity the secret gives. Unix sockets stay plain: they never leave the node, and file
permissions guard them.

The switch is a directory holding ``ca.pem``, ``cert.pem`` and ``key.pem`` (``shoal tls
generate DIR`` makes one), named by ``--tls-dir`` or the ``SHOAL_TLS_DIR`` environment
variable. It is an environment variable underneath on purpose: processes a process starts
(storaged by ``shoal up``, fusefs by the CSI node plugin) inherit it, so no layer can
silently fall back to plaintext because it forgot to pass a flag on.
"""

from __future__ import annotations

import functools
import os
import ssl
from dataclasses import dataclass
from pathlib import Path

ENV = "SHOAL_TLS_DIR"
FILES = ("ca.pem", "cert.pem", "key.pem")


class TlsConfigError(Exception):
    """The TLS directory is missing a file or holds something unusable."""


@dataclass(frozen=True)
class TlsConfig:
    directory: Path
    server: ssl.SSLContext
    client: ssl.SSLContext


def enable(directory: str | os.PathLike[str]) -> TlsConfig:
    """Turn TLS on for this process and the processes it starts; fail now if unusable."""
    path = Path(directory).resolve()
    config = _load(str(path))
    os.environ[ENV] = str(path)
    return config


def configure(directory: str | os.PathLike[str] | None) -> None:
    """A command's --tls-dir: turn TLS on with it, or check what $SHOAL_TLS_DIR says, so a
    bad setting is a usage error at start, not a hang later (TlsConfigError)."""
    if directory:
        enable(directory)
    else:
        active()


def active() -> TlsConfig | None:
    """The TLS configuration in force, or None when connections are plain."""
    directory = os.environ.get(ENV)
    if not directory:
        return None
    return _load(str(Path(directory).resolve()))


@functools.cache
def _load(directory: str) -> TlsConfig:
    path = Path(directory)
    missing = [name for name in FILES if not (path / name).is_file()]
    if missing:
        raise TlsConfigError(
            f"TLS directory {path} lacks {', '.join(missing)} "
            f"(make one with 'shoal tls generate {path}', or unset {ENV})"
        )
    ca, cert, key = (str(path / name) for name in FILES)
    try:
        server = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH, cafile=ca)
        server.load_cert_chain(cert, key)
        server.verify_mode = ssl.CERT_REQUIRED
        client = ssl.create_default_context(ssl.Purpose.SERVER_AUTH, cafile=ca)
        client.check_hostname = False  # see the module docstring
        client.verify_mode = ssl.CERT_REQUIRED
        client.load_cert_chain(cert, key)
    except (ssl.SSLError, OSError) as exc:
        raise TlsConfigError(f"TLS files in {path} are not usable: {exc}") from None
    for context in (server, client):
        context.minimum_version = ssl.TLSVersion.TLSv1_2
    return TlsConfig(path, server, client)


def describe(failure: BaseException) -> str:
    """Why a handshake failed, from the SSLError trio wraps in BrokenResourceError."""
    cause = failure.__cause__ or failure.__context__
    if isinstance(cause, ssl.SSLError):
        reason = cause.reason or str(cause)
    else:
        reason = str(cause or failure) or "the peer closed the connection"
    return f"{reason} (is TLS on at both ends, with certificates from one CA?)"
