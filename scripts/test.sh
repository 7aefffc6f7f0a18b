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

# Both passes always run, so one run shows everything that is wrong; the script fails if
# either did, or if an import breaks the layering in ARCHITECTURE.md.
echo "== the layering (ARCHITECTURE.md, import-linter contracts in pyproject.toml) =="
layers=0
"$ROOT/.venv/bin/lint-imports" --no-cache || layers=$?

echo "== pass 1 of 2: the whole suite =="
pass1=0
"$PY" -m pytest || pass1=$?

echo "== pass 2 of 2: the integration tests again, with TLS on =="
CERTS="$(mktemp -d /tmp/shoalfs-test-tls.XXXXXX)"
trap 'rm -rf "$CERTS"' EXIT
"$PY" -m shoal.cli tls generate "$CERTS/certs" >/dev/null
pass2=0
SHOAL_TLS_DIR="$CERTS/certs" "$PY" -m pytest tests/integration -m "not plaintext" \
    -p no:cacheprovider || pass2=$?

echo "== layering: exit $layers; pass 1: exit $pass1; pass 2: exit $pass2 =="
if [ "$pass1" -ne 0 ]; then exit "$pass1"; fi
if [ "$pass2" -ne 0 ]; then exit "$pass2"; fi
exit "$layers"
