"""Whole-backtest overhead of the liq columns and guards, and what the guards are worth.

Run: ``.venv/bin/python benchmarks/bench_backtest.py`` (``--check`` exits 1 when the time ratio
is above 1.3; ``--quick`` skips the one-year timing). Everything runs offline: markets come from
the replay exchange (liqsignal.replay), candles from the bundled files.

1. Speed: ``freqtrade backtesting`` wall time of LiqTrendStrategy against LiqTrendControl (same
   entries and exits, no liq columns, no guards), one year of 5m BTC/USDT:USDT (2023-05-01 ->
   2024-05-01, user_data/data/binance_2023_2024: no open interest there, so the map runs in
   volume-proxy mode), each run ``--repeat`` times alternately; the ratio of the best times.
2. Guard value on the bundled 1h BTC data with open interest (2025-12-20 -> 2026-03-04): every
   entry signal of the sample strategy (whether or not a trade was open), entered at the next
   candle's open at the proposed 10x. For entries the entry guard refused vs let through: the
   forward maximum adverse excursion (MAE) over 24 and 72 hours and the share that would have
   been liquidated at 10x (price reached the position's Binance liquidation price). For the
   leverage guard: the share liquidated at 10x vs at the capped leverage.
3. Sample vs control: ``freqtrade backtesting`` results of both on the same 1h data, and on the
   one-year 5m run.
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import statistics
import subprocess
import sys
import time
import zipfile
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
from bench_util import DATA_1H, DATA_5M, FREQTRADE, ROOT, TIMERANGE_1H, TIMERANGE_5M

PAIR = "BTC/USDT:USDT"
PROPOSED = 10.0  # the sample strategy's target leverage
LEVERAGES = (10.0, 25.0)  # leverage guard measured at these proposals
TARGET_RATIO = 1.3

from liqsignal.guards import GuardConfig, entry_decision, leverage_decision  # noqa: E402
from liqsignal.replay import ReplayExchange  # noqa: E402
from liqsignal.tiers import liquidation_price, load_tiers, tier_for  # noqa: E402


def _env() -> dict[str, str]:
    import os

    return {k: v for k, v in os.environ.items() if not k.startswith("PYTEST_")}


BARE = """

class LiqTrendBare(LiqTrendControl):
    \"\"\"The control without Freqtrade's custom_stoploss callback (its cost, measured apart).\"\"\"

    use_custom_stoploss = False
"""


def strategy_dir(tmp: Path) -> Path:
    """strategies/liq_trend.py plus a bare variant, in a folder of their own."""
    d = tmp / "strategies"
    d.mkdir(exist_ok=True)
    (d / "liq_trend.py").write_text((ROOT / "strategies" / "liq_trend.py").read_text() + BARE)
    return d


def backtest(
    datadir: Path, strategies: list[str], timerange: str, tmp: Path, timeframe: str = "1h"
) -> tuple[float, dict[str, Any]]:
    """Wall seconds of one ``freqtrade backtesting`` run and its per-strategy results."""
    example = json.loads((ROOT / "config.example.json").read_text())
    out = tmp / f"bt-{time.monotonic_ns()}"
    out.mkdir(parents=True)
    with ReplayExchange(datadir) as rx:
        cfg = dict(example)
        cfg["exchange"] = {**example["exchange"], "ccxt_config": rx.ccxt_config()}
        cfg.update(user_data_dir=str(tmp / "ud"), strategy_path=str(strategy_dir(tmp)))
        cfg["timeframe"] = timeframe
        (tmp / "ud").mkdir(exist_ok=True)
        path = tmp / "config.json"
        path.write_text(json.dumps(cfg))
        t0 = time.perf_counter()
        proc = subprocess.run(
            [str(FREQTRADE), "backtesting", "-c", str(path), "--datadir", str(datadir),
             "--strategy-list", *strategies, "--timerange", timerange, "--export", "trades",
             "--backtest-directory", str(out), "--logfile", str(out / "ft.log")],
            capture_output=True, text=True, env=_env(),
        )  # fmt: skip
        wall = time.perf_counter() - t0
    if proc.returncode != 0:
        raise SystemExit(f"freqtrade backtesting failed:\n{proc.stderr[-3000:]}")
    (zip_path,) = out.glob("*.zip")
    with zipfile.ZipFile(zip_path) as z:
        name = next(n for n in z.namelist() if n.endswith(".json") and "_config" not in n)
        result = json.loads(z.read(name))["strategy"]
    return wall, result


def summary(res: dict[str, Any]) -> str:
    trades = res["trades"]
    wins = sum(t["profit_abs"] > 0 for t in trades)
    lev = [t["leverage"] for t in trades]
    return (
        f"trades {len(trades):4d}  profit {res['profit_total_abs']:9.2f} USDT "
        f"({res['profit_total'] * 100:6.2f} %)  win {wins / max(len(trades), 1) * 100:5.1f} %  "
        f"max drawdown {res['max_drawdown_account'] * 100:5.2f} %  "
        f"mean leverage {statistics.fmean(lev) if lev else float('nan'):.2f}  "
        f"exits {sorted({t['exit_reason'] for t in trades})}"
    )


# --- guard value ------------------------------------------------------------------------------


class _DP:
    def __init__(self, datadir: Path) -> None:
        self.datadir = datadir

    def get_pair_dataframe(self, pair: str, timeframe: str, candle_type: str = "") -> pd.DataFrame:
        path = self.datadir / "futures" / f"BTC_USDT_USDT-{timeframe}-{candle_type}.feather"
        return pd.read_feather(path) if path.is_file() else pd.DataFrame()


def _strategy() -> Any:
    spec = importlib.util.spec_from_file_location("liq_trend", ROOT / "strategies" / "liq_trend.py")
    assert spec and spec.loader
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    example = json.loads((ROOT / "config.example.json").read_text())
    strat = mod.LiqTrendStrategy({**example, "timeframe": "1h"})
    strat.dp = _DP(DATA_1H)
    return strat


def signals() -> pd.DataFrame:
    """The sample strategy's analysed frame on the 1h bundle (same window as the backtest)."""
    strat = _strategy()
    fut = pd.read_feather(DATA_1H / "futures" / "BTC_USDT_USDT-1h-futures.feather")
    start = pd.Timestamp(TIMERANGE_1H.split("-")[0], tz="UTC")
    end = pd.Timestamp(TIMERANGE_1H.split("-")[1], tz="UTC")
    startup = start - pd.Timedelta(hours=strat.startup_candle_count)
    fut = fut[(fut["date"] >= startup) & (fut["date"] <= end)].reset_index(drop=True)
    md = {"pair": PAIR}
    df = strat.populate_indicators(fut, md)
    df = strat.populate_entry_trend(df, md)
    df = df[df["date"] >= start].reset_index(drop=True)
    return df


def _lp(side: str, entry: float, lev: float) -> float:
    tiers = load_tiers(PAIR)
    assert tiers
    t = tier_for(tiers, 10_000.0, lev)
    return liquidation_price("binance", side, entry, lev, mmr=t.mmr, notional=10_000.0, cum=t.cum)


def guard_value(df: pd.DataFrame, horizons: tuple[int, ...] = (24, 72)) -> None:
    cfg = GuardConfig()
    rows = []
    o, h, lo = (df[c].to_numpy() for c in ("open", "high", "low"))
    for side in ("long", "short"):
        col = f"enter_{side}"
        if col not in df.columns:
            continue
        for i in np.flatnonzero(df[col].fillna(0).to_numpy() == 1):
            if i + 1 >= len(df):
                continue
            row = df.iloc[i]
            entry = float(o[i + 1])
            d = entry_decision(row, side, entry, cfg)
            rec: dict[str, Any] = {"side": side, "allowed": d.allowed}
            for p in LEVERAGES:
                rec[f"lev{p:g}"] = leverage_decision(row, side, entry, p, 125.0, cfg).leverage
            for hz in horizons:
                j = min(len(df), i + 1 + hz)
                if side == "long":
                    worst = float(lo[i + 1 : j].min())
                    rec[f"mae{hz}"] = (entry - worst) / entry * 100
                else:
                    worst = float(h[i + 1 : j].max())
                    rec[f"mae{hz}"] = (worst - entry) / entry * 100
                for p in LEVERAGES:
                    for key, lev in (
                        (f"liq{hz}@{p:g}", p),
                        (f"liqcap{hz}@{p:g}", rec[f"lev{p:g}"]),
                    ):
                        lp = _lp(side, entry, lev)
                        rec[key] = worst <= lp if side == "long" else worst >= lp
            rows.append(rec)
    r = pd.DataFrame(rows)
    print(f"\nGuard value: {len(r)} entry signals of LiqTrendStrategy on the 1h bundle "
          f"{TIMERANGE_1H} (entered at the next open, proposed {PROPOSED:g}x)")  # fmt: skip
    for label, part in (("refused", r[~r["allowed"]]), ("allowed", r[r["allowed"]])):
        parts = [f"{label:8s} n={len(part):4d}"]
        for hz in horizons:
            if len(part):
                parts.append(
                    f"MAE{hz}h mean {part[f'mae{hz}'].mean():5.2f} % median "
                    f"{part[f'mae{hz}'].median():5.2f} %  liquidated@{PROPOSED:g}x "
                    f"{part[f'liq{hz}@{PROPOSED:g}'].mean() * 100:5.1f} %"
                )
        print("  " + " | ".join(parts))
    for p in LEVERAGES:
        capped = r[r[f"lev{p:g}"] < p]
        mean_cap = capped[f"lev{p:g}"].mean() if len(capped) else float("nan")
        print(f"  leverage guard at {p:g}x proposed: capped {len(capped)} of {len(r)} entries "
              f"(mean cap {mean_cap:.1f}x)")  # fmt: skip
        for hz in horizons:
            line = (
                f"    {hz}h: liquidated at {p:g}x {r[f'liq{hz}@{p:g}'].mean() * 100:5.1f} % of all,"
                f" with the cap {r[f'liqcap{hz}@{p:g}'].mean() * 100:5.1f} %"
            )
            if len(capped):
                line += (
                    f"; of the capped: {capped[f'liq{hz}@{p:g}'].mean() * 100:5.1f} % -> "
                    f"{capped[f'liqcap{hz}@{p:g}'].mean() * 100:5.1f} %"
                )
            print(line)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--repeat", type=int, default=2)
    ap.add_argument("--quick", action="store_true", help="skip the one-year 5m timing")
    ap.add_argument("--check", action="store_true")
    args = ap.parse_args()
    import tempfile

    tmp = Path(tempfile.mkdtemp(prefix="liq-bench-"))
    ratio = float("nan")
    if not args.quick:
        names = ("LiqTrendBare", "LiqTrendControl", "LiqTrendStrategy")
        times: dict[str, list[float]] = {n: [] for n in names}
        results: dict[str, Any] = {}
        for _ in range(args.repeat):
            for name in names:
                wall, res = backtest(DATA_5M, [name], TIMERANGE_5M, tmp, timeframe="5m")
                times[name].append(wall)
                results[name] = res[name]
        best = {k: min(v) for k, v in times.items()}
        ratio = best["LiqTrendStrategy"] / best["LiqTrendControl"]
        print(f"Speed: freqtrade backtesting, 5m BTC/USDT:USDT {TIMERANGE_5M} (volume-proxy mode)")
        for k, v in times.items():
            print(f"  {k:18s} wall {', '.join(f'{x:.1f}' for x in v)} s (best {best[k]:.1f} s)")
        print(f"  ratio sample / control: {ratio:.2f} (target <= {TARGET_RATIO})")
        bare = best["LiqTrendStrategy"] / best["LiqTrendBare"]
        print(
            f"  ratio sample / control without custom_stoploss: {bare:.2f} (Freqtrade's own "
            f"callback machinery, a deepcopy of the trade per call, is in this one)"
        )
        print("  one-year 5m results:")
        for k in ("LiqTrendStrategy", "LiqTrendControl"):
            print(f"    {k:18s} {summary(results[k])}")

    wall, res = backtest(DATA_1H, ["LiqTrendStrategy", "LiqTrendControl"], TIMERANGE_1H, tmp)
    print(f"\nSample vs control: freqtrade backtesting, 1h BTC/USDT:USDT {TIMERANGE_1H} with open "
          f"interest (both strategies in one run, {wall:.1f} s)")  # fmt: skip
    for k in ("LiqTrendStrategy", "LiqTrendControl"):
        print(f"  {k:18s} {summary(res[k])}")

    guard_value(signals())
    if args.check and not ratio <= TARGET_RATIO:
        print(f"FAIL: ratio {ratio:.2f} > {TARGET_RATIO}")
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
