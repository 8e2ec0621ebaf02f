#!/usr/bin/env bash
# One command for a newcomer: set up (first time only) and run the main job on the bundled data.
set -euo pipefail
cd "$(dirname "$0")/.."
VENV="${LIQSIGNAL_VENV:-.venv}"
[ -x "$VENV/bin/liqsignal" ] || bash scripts/setup.sh
exec "$VENV/bin/liqsignal" demo "$@"
