#!/usr/bin/env bash
# The whole test suite: set everything up, then run pytest twice — once as it is, and once
# more for the integration tests with TLS on between every process (SHOAL_TLS_DIR, with
# certificates made for the run). Arguments, when given, go to a single pytest run instead.
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
bash "$ROOT/scripts/bootstrap.sh"
cd "$ROOT"
PY="$ROOT/.venv/bin/python"
if [ "$#" -gt 0 ]; then
    exec "$PY" -m pytest "$@"
fi

echo "== pass 1 of 2: the whole suite =="
"$PY" -m pytest

echo "== pass 2 of 2: the integration tests again, with TLS on =="
CERTS="$(mktemp -d /tmp/shoalfs-test-tls.XXXXXX)"
trap 'rm -rf "$CERTS"' EXIT
"$PY" -m shoal.cli tls generate "$CERTS/certs" >/dev/null
SHOAL_TLS_DIR="$CERTS/certs" "$PY" -m pytest tests/integration -m "not plaintext" -p no:cacheprovider
