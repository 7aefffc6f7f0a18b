#!/usr/bin/env bash
# Stop what scripts/up.sh started. Data stays; scripts/up.sh brings it back.
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
exec "$ROOT/.venv/bin/shoal" down "$@"
