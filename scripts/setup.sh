#!/usr/bin/env bash
# Create the virtual environment and install liqsignal with its test and plot extras.
set -euo pipefail
cd "$(dirname "$0")/.."
VENV="${LIQSIGNAL_VENV:-.venv}"
[ -x "$VENV/bin/python" ] || python3 -m venv "$VENV"
"$VENV/bin/python" -m pip install -q --upgrade pip
"$VENV/bin/python" -m pip install -q -e ".[dev,plot,cluster]"
