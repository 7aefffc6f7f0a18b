"""Create the cluster secret as a Kubernetes Secret, once, from inside the cluster.

The manifests must install as they are (``kubectl apply -f``), yet a secret written into a
manifest would be the same for every installation. So a Job runs
``shoal secret kubernetes``: it creates the Secret with a fresh random value if there is
none, and leaves an existing one alone (a new value would lock out every running server).
Pods that mount the Secret wait until it exists. It talks to the API server directly with
the pod's service account token: one POST does not justify a Kubernetes client library.
"""

from __future__ import annotations

import base64
import json
import os
import ssl
import urllib.error
import urllib.request
from pathlib import Path

from storaged.rpc.auth import generate_secret

SERVICE_ACCOUNT = Path("/var/run/secrets/kubernetes.io/serviceaccount")


def default_api_server() -> str:
    host = os.environ.get("KUBERNETES_SERVICE_HOST", "")
    port = os.environ.get("KUBERNETES_SERVICE_PORT", "443")
    if not host:
        raise RuntimeError(
            "not running in a Kubernetes pod (KUBERNETES_SERVICE_HOST is unset); pass --api-server"
        )
    return f"https://{host}:{port}"


def ensure_secret(
    name: str, namespace: str, api_server: str, token: str, ca_file: str | None
) -> bool:
    """Create Secret ``namespace/name`` holding a new cluster secret under the key
    ``secret``; return True if created, False if it already existed."""
    body = {
        "apiVersion": "v1",
        "kind": "Secret",
        "type": "Opaque",
        "metadata": {
            "name": name,
            "namespace": namespace,
            "labels": {"app.kubernetes.io/part-of": "shoalfs"},
        },
        "data": {"secret": base64.b64encode((generate_secret() + "\n").encode()).decode()},
    }
    request = urllib.request.Request(
        f"{api_server.rstrip('/')}/api/v1/namespaces/{namespace}/secrets",
        data=json.dumps(body).encode(),
        method="POST",
        headers={"Authorization": f"Bearer {token}", "Content-Type": "application/json"},
    )
    context = ssl.create_default_context(cafile=ca_file) if api_server.startswith("https") else None
    try:
        with urllib.request.urlopen(request, timeout=30, context=context) as response:
            return response.status == 201
    except urllib.error.HTTPError as exc:
        if exc.code == 409:
            return False
        detail = exc.read().decode(errors="replace")[:500]
        raise RuntimeError(
            f"creating Secret {namespace}/{name}: HTTP {exc.code}: {detail}"
        ) from None
    except urllib.error.URLError as exc:
        raise RuntimeError(f"cannot reach the API server {api_server}: {exc.reason}") from None
