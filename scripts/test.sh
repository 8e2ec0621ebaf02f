#!/usr/bin/env bash
# Run the test suite: creates the virtual environment on first use (see scripts/setup.sh).
set -euo pipefail
cd "$(dirname "$0")/.."
VENV="${LIQSIGNAL_VENV:-.venv}"
[ -x "$VENV/bin/liqsignal" ] || bash scripts/setup.sh
exec "$VENV/bin/python" -m pytest "$@"
