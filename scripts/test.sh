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
# either did, if an import breaks the layering in ARCHITECTURE.md, or if ruff or mypy
# find anything (their settings: [tool.ruff] and [tool.mypy] in pyproject.toml).
echo "== the layering (ARCHITECTURE.md, import-linter contracts in pyproject.toml) =="
layers=0
"$ROOT/.venv/bin/lint-imports" --no-cache || layers=$?

echo "== lint, format and types: ruff check, ruff format --check, mypy =="
static=0
"$ROOT/.venv/bin/ruff" check --no-cache . || static=$?
"$ROOT/.venv/bin/ruff" format --check --no-cache . || static=$?
"$ROOT/.venv/bin/mypy" --no-incremental storaged fusefs csi shoal protos bench deploy tests \
    || static=$?

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

echo "== layering: exit $layers; lint and types: exit $static; pass 1: exit $pass1;" \
     "pass 2: exit $pass2 =="
if [ "$pass1" -ne 0 ]; then exit "$pass1"; fi
if [ "$pass2" -ne 0 ]; then exit "$pass2"; fi
if [ "$layers" -ne 0 ]; then exit "$layers"; fi
exit "$static"
