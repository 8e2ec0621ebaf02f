"""Hyperopt epoch time with and without the liq column cache (liqsignal.column_cache).

Run: ``.venv/bin/python benchmarks/bench_hyperopt.py`` (``--quick``: the bundled 1h data
instead of one year of 5m bars). Everything runs offline: markets come from the replay exchange
(liqsignal.data.replay), candles from the bundled files.

``freqtrade hyperopt --analyze-per-epoch`` of LiqTrendStrategy over the buy and sell spaces
(its EMA lengths, read in ``populate_indicators``, and the four liq guard thresholds) with one
job, ``--random-state 1``: every epoch calls ``populate_indicators`` on the same candles. Each
setting runs twice, with ``--epochs-a`` and ``--epochs-b`` epochs; the time per epoch is the
difference of the wall times over the difference of the epochs (start-up, data load and the
first map cancel out). Cache off is ``LIQSIGNAL_COLUMN_CACHE_MB=0``; on is the default. The
best results of both settings must be the same (the cached columns are the computed ones).
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from bench_util import DATA_1H, DATA_5M, FREQTRADE, ROOT, TIMERANGE_1H, TIMERANGE_5M

from liqsignal.replay import ReplayExchange


def hyperopt(
    datadir: Path, timerange: str, timeframe: str, epochs: int, cache: bool, tmp: Path
) -> tuple[float, dict[str, Any]]:
    """Wall seconds of one ``freqtrade hyperopt`` run and its best epoch (``--print-json``)."""
    example = json.loads((ROOT / "config.example.json").read_text())
    run = tmp / f"ho-{time.monotonic_ns()}"
    (run / "ud").mkdir(parents=True)
    env = {k: v for k, v in os.environ.items() if not k.startswith("PYTEST_")}
    env["LIQSIGNAL_COLUMN_CACHE_MB"] = "512" if cache else "0"
    with ReplayExchange(datadir) as rx:
        cfg = dict(example)
        cfg["exchange"] = {**example["exchange"], "ccxt_config": rx.ccxt_config()}
        cfg.update(user_data_dir=str(run / "ud"), strategy_path=str(ROOT / "strategies"),
                   timeframe=timeframe)  # fmt: skip
        path = run / "config.json"
        path.write_text(json.dumps(cfg))
        t0 = time.perf_counter()
        proc = subprocess.run(
            [str(FREQTRADE), "hyperopt", "-c", str(path), "--datadir", str(datadir),
             "--strategy", "LiqTrendStrategy", "--hyperopt-loss", "SharpeHyperOptLossDaily",
             "--spaces", "buy", "sell", "-e", str(epochs), "-j", "1", "--random-state", "1",
             "--analyze-per-epoch", "--timerange", timerange, "--print-json",
             "--disable-param-export", "--logfile", str(run / "ft.log")],
            capture_output=True, text=True, env=env,
        )  # fmt: skip
        wall = time.perf_counter() - t0
    if proc.returncode != 0:
        log = (run / "ft.log").read_text() if (run / "ft.log").exists() else ""
        raise SystemExit(f"freqtrade hyperopt failed:\n{proc.stderr[-3000:]}\n{log[-3000:]}")
    best = json.loads(proc.stdout.strip().splitlines()[-1])
    return wall, best


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--quick", action="store_true", help="bundled 1h data (2.5 months)")
    ap.add_argument("--epochs-a", type=int, default=2)
    ap.add_argument("--epochs-b", type=int, default=8)
    args = ap.parse_args()
    if args.epochs_b <= args.epochs_a:
        raise SystemExit("--epochs-b must be larger than --epochs-a")
    if args.quick:
        datadir, timerange, tf = DATA_1H, TIMERANGE_1H, "1h"
    else:
        datadir, timerange, tf = DATA_5M, TIMERANGE_5M, "5m"
    tmp = Path(tempfile.mkdtemp(prefix="liq-bench-ho-"))
    walls: dict[str, dict[int, float]] = {"off": {}, "on": {}}
    bests: dict[str, dict[str, Any]] = {}
    for epochs in (args.epochs_a, args.epochs_b):
        for name in ("off", "on"):
            wall, best = hyperopt(datadir, timerange, tf, epochs, name == "on", tmp)
            walls[name][epochs] = wall
            if epochs == args.epochs_b:
                bests[name] = best
    d = args.epochs_b - args.epochs_a
    per = {k: (v[args.epochs_b] - v[args.epochs_a]) / d for k, v in walls.items()}
    print(f"freqtrade hyperopt --analyze-per-epoch, LiqTrendStrategy, BTC/USDT:USDT {tf} "
          f"{timerange}, spaces buy sell, -j 1")  # fmt: skip
    for k in ("off", "on"):
        w = walls[k]
        print(
            f"  column cache {k:3s}: wall {w[args.epochs_a]:.1f} s ({args.epochs_a} epochs), "
            f"{w[args.epochs_b]:.1f} s ({args.epochs_b} epochs) -> {per[k]:.2f} s per epoch"
        )
    print(f"  epoch time ratio cache off / on: {per['off'] / per['on']:.2f}")
    same = bests["off"].get("params") == bests["on"].get("params")
    print(f"  best epoch's parameters identical with and without the cache: {same}")
    return 0 if same else 1


if __name__ == "__main__":
    sys.exit(main())
