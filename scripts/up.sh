#!/usr/bin/env bash
# The main job: set everything up, then start a local cluster on loopback and show its health.
# Extra arguments go to 'shoal up' (for example --workdir DIR).
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
bash "$ROOT/scripts/bootstrap.sh"
exec "$ROOT/.venv/bin/shoal" up "$@"
