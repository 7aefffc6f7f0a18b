#!/usr/bin/env bash
# The filesystem benchmark side by side (shoalfs, MooseFS, the local disk): set everything
# up (the bench extras; MooseFS's Debian packages are installed by the bench on first use),
# then run it. Arguments go to 'python -m bench.fs_bench' (see its --help).
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
bash "$ROOT/scripts/bootstrap.sh"
PY="$ROOT/.venv/bin/python"
"$PY" -c 'import matplotlib' 2>/dev/null || "$PY" -m pip install -q -e "$ROOT[test,bench]"
cd "$ROOT"
exec "$PY" -m bench.fs_bench "$@"
