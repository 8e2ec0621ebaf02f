#!/usr/bin/env bash
# A real install: build the wheel, install it (not editable, with all its extras) into a fresh
# virtual environment, and from a folder outside the checkout (so only the installed wheel can
# be imported) run `liqsignal demo` and one Freqtrade backtest on the bundled data. A module or
# package file missing from the wheel fails here, where the editable install would hide it.
#
#   bash scripts/wheel_check.sh        # LIQSIGNAL_WHEEL_VENV=... to put the venv elsewhere
set -euo pipefail
cd "$(dirname "$0")/.."
SRC=$PWD
VENV="${LIQSIGNAL_WHEEL_VENV:-$SRC/.venv-wheel}"
WORK=$(mktemp -d "${TMPDIR:-/tmp}/liqsignal-wheel.XXXXXX")
REPLAY_PID=""
cleanup() {
  if [ -n "$REPLAY_PID" ]; then kill "$REPLAY_PID" 2>/dev/null || true; fi
  rm -rf "$WORK"
}
trap cleanup EXIT
start=$(date +%s)
step() { echo "wheel_check [$(($(date +%s) - start)) s]: $*"; }

step "fresh venv $VENV"
rm -rf "$VENV"
python3 -m venv "$VENV"
PY="$VENV/bin/python"
"$PY" -m pip install -q --upgrade pip 2> "$WORK/pip.err" || { cat "$WORK/pip.err" >&2; exit 1; }

step "build the wheel"
"$PY" -m pip wheel . --no-deps -q -w "$WORK/dist"
WHEEL=$(ls "$WORK"/dist/liqsignal-*.whl)
# what the wheel must hold besides the modules: the typing marker and the bundled resources
"$PY" - "$WHEEL" <<'EOF'
import sys
import zipfile

names = set(zipfile.ZipFile(sys.argv[1]).namelist())
need = [
    "liqsignal/py.typed",
    "liqsignal/resources/forecast_model.json",
    "liqsignal/resources/binance_leverage_tiers.json",
    "liqsignal/replay/__main__.py",
    "liqsignal/replay/testing.py",
    "liqsignal/data/jobs.py",
]
missing = [n for n in need if n not in names]
if missing:
    sys.exit(f"the wheel lacks {missing}")
print(f"{sys.argv[1].rsplit('/', 1)[-1]}: {len(names)} files")
EOF

step "install it, not editable, with [all]"
"$PY" -m pip install -q "${WHEEL}[all]" 2> "$WORK/pip.err" \
  || { cat "$WORK/pip.err" >&2; exit 1; }

cd "$WORK"  # outside the checkout from here on
"$PY" - "$SRC" <<'EOF'
import sys

import liqsignal

checkout = sys.argv[1].rstrip("/") + "/liqsignal/"
if liqsignal.__file__.startswith(checkout) or "site-packages" not in liqsignal.__file__:
    sys.exit(f"liqsignal imported from {liqsignal.__file__}, not from the installed wheel")
print("liqsignal from", liqsignal.__file__)
EOF

step "liqsignal demo"
"$VENV/bin/liqsignal" demo --out "$WORK/demo" > "$WORK/demo.txt"
tail -3 "$WORK/demo.txt"
ls "$WORK/demo" | grep -q '\.png$' || { echo "wheel_check: the demo wrote no picture" >&2; exit 1; }

step "one Freqtrade backtest on the bundled data"
cp -r "$SRC/strategies" "$WORK/strategies"
cp "$SRC/config.example.json" "$WORK/config.json"
mkdir -p "$WORK/user_data" "$WORK/bt"
DATA="$SRC/user_data/data/binance"
"$VENV/bin/liqsignal" replay --datadir "$DATA" --port 0 \
  --freqtrade-overlay "$WORK/config.replay.json" > "$WORK/replay.log" 2>&1 &
REPLAY_PID=$!
for _ in $(seq 1 100); do
  [ -s "$WORK/config.replay.json" ] && break
  kill -0 "$REPLAY_PID" 2>/dev/null || { cat "$WORK/replay.log" >&2; exit 1; }
  sleep 0.2
done
[ -s "$WORK/config.replay.json" ] || { echo "wheel_check: the replay did not start" >&2; exit 1; }
"$VENV/bin/freqtrade" backtesting -c config.json -c config.replay.json --userdir user_data \
  --datadir "$DATA" --strategy LiqTrendStrategy --timerange 20260101-20260304 \
  --backtest-directory "$WORK/bt" > "$WORK/backtest.log" 2>&1 \
  || { tail -40 "$WORK/backtest.log" >&2; exit 1; }
grep -E "TOTAL|Total/Daily Avg Trades" "$WORK/backtest.log" | head -3
ls "$WORK"/bt/*.zip > /dev/null || { echo "wheel_check: no backtest result" >&2; exit 1; }
step "passed"
