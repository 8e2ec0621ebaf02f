"""The probability entry guard in a real ``freqtrade backtesting`` run, on the bundled BTC 1h data.

Three runs of the sample strategy (``LiqTrendStrategy``) over the same period, offline against
the replay exchange (``liqsignal.replay``):

- guards off (``liqsignal.guards.enabled = false``): every entry signal is taken;
- probability guard: only ``guards.entry_max_prob`` (``--max-prob``; the pocket rule, the
  leverage and the stop guards off), with a forecast model fitted on the 4h datasets only
  (2024-11 -> 2025-07), so on this period (2025-12 -> 2026-03) the probabilities are out of
  sample;
- a map-free guard: refuse when the 48-bar realized volatility at the signal candle is above
  the quantile that refuses the same share of entry attempts as the probability guard did.

For each run: Freqtrade's trades, total profit and maximum drawdown; for each guard the entry
attempts it refused and the ones it allowed, with the MAE (% of the entry price, entry at the
next candle's open) and the share a 10x position would have been liquidated over the next 24 and
72 candles, and the share with a realized long/short cascade onset against the position
(CoinGlass BTC realized liquidations, ``liqsignal.datasets.load_dataset("btc_1h")``).

    .venv/bin/python scripts/forecast_guards_freqtrade.py         # about a minute and a half
"""

from __future__ import annotations

import json
import math
import re
import subprocess
import sys
import tempfile
import zipfile
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(Path(__file__).resolve().parent))

from forecast_guards import HORIZONS, allowed_refused_cells, cli, outcomes  # noqa: E402

from liqsignal import forecast as fc  # noqa: E402
from liqsignal.config import MapConfig  # noqa: E402
from liqsignal.datasets import load_dataset, load_datasets  # noqa: E402
from liqsignal.features import compute_features  # noqa: E402
from liqsignal.replay import ReplayExchange  # noqa: E402

BUNDLED = ROOT / "user_data" / "data" / "binance"
FREQTRADE = Path(sys.executable).with_name("freqtrade")
TIMERANGE = "20251220-20260304"

VOL_STRATEGY = '''

import logging as _logging
import numpy as _np

_vlog = _logging.getLogger("volguard")


class LiqTrendVolGuard(LiqTrendStrategy):
    """Refuses entries when the 48-candle realized volatility is above VOL_LIMIT."""

    VOL_LIMIT = {limit!r}

    def populate_indicators(self, dataframe, metadata):
        dataframe = super().populate_indicators(dataframe, metadata)
        lr = _np.log(dataframe["close"] / dataframe["close"].shift(1))
        dataframe["rv48"] = lr.rolling(48, min_periods=48).std()
        return dataframe

    def confirm_trade_entry(self, pair, order_type, amount, rate, time_in_force, current_time,
                            entry_tag, side, **kwargs):
        df, _ = self.dp.get_analyzed_dataframe(pair, self.timeframe)
        rv = float(df["rv48"].iloc[-1])
        ok = not rv > self.VOL_LIMIT
        _vlog.info("volguard %s candle=%s rv=%.6g: %s", side, df["date"].iloc[-1].isoformat(),
                   rv, "allow" if ok else "refuse")
        return ok
'''

_ENTRY = re.compile(
    r"liqsignal guard entry BTC/USDT:USDT (long|short) candle=(\S+): (allow|refuse):"
)
_VOL = re.compile(r"volguard (long|short) candle=(\S+) rv=\S+: (allow|refuse)")


def _backtest(tmp: Path, cfg: dict[str, Any], strategy: str, name: str) -> dict[str, Any]:
    path = tmp / f"{name}.json"
    path.write_text(json.dumps(cfg))
    out = tmp / f"bt_{name}"
    out.mkdir()
    log = tmp / f"{name}.log"
    proc = subprocess.run(
        [str(FREQTRADE), "backtesting", "-c", str(path), "--datadir", str(BUNDLED),
         "--strategy", strategy, "--timerange", TIMERANGE, "--export", "trades",
         "--backtest-directory", str(out), "--logfile", str(log)],
        capture_output=True, text=True, timeout=600,
    )  # fmt: skip
    if proc.returncode != 0:
        raise SystemExit(f"freqtrade backtesting ({name}) failed:\n{proc.stderr[-3000:]}")
    (zpath,) = out.glob("*.zip")
    with zipfile.ZipFile(zpath) as z:
        member = next(n for n in z.namelist() if n.endswith(".json") and "_config" not in n)
        res = json.loads(z.read(member))["strategy"][strategy]
    return {"result": res, "log": log.read_text()}


def _attempts(log: str, pattern: re.Pattern[str]) -> pd.DataFrame:
    rows = {}
    for side, candle, verdict in pattern.findall(log):
        rows[(side, candle)] = verdict  # one decision per candle and side (repeats collapse)
    return pd.DataFrame(
        [(s, pd.Timestamp(c), v == "refuse") for (s, c), v in rows.items()],
        columns=["side", "date", "refused"],
    )


def _stats(frame: pd.DataFrame, att: pd.DataFrame) -> dict[str, Any]:
    if att.empty:
        return {"attempts": 0}
    pos = pd.DatetimeIndex(frame["date"]).get_indexer(pd.DatetimeIndex(att["date"]))
    att = att.assign(bar=pos)[pos >= 0]
    out = outcomes(frame, att[["bar", "side"]].reset_index(drop=True), "BTC/USDT:USDT")
    att = pd.concat([att.reset_index(drop=True), out], axis=1)
    res: dict[str, Any] = {"attempts": len(att), "n_refused": int(att["refused"].sum())}
    for label, part in (("allowed", att[~att["refused"]]), ("refused", att[att["refused"]])):
        d: dict[str, Any] = {"n": len(part)}
        for h in HORIZONS:
            for k in ("mae", "liq", "cascade"):
                v = part[f"{k}_{h}"].dropna()
                d[f"{k}_{h}"] = float(v.mean()) if len(v) else math.nan
        res[label] = d
    return res


def _summary(res: dict[str, Any]) -> dict[str, Any]:
    trades = res["trades"]
    return {
        "trades": len(trades),
        "profit_pct": float(res.get("profit_total", 0.0)) * 100.0,
        "max_drawdown_pct": float(res.get("max_drawdown_account", 0.0)) * 100.0,
        "wins": int(sum(t["profit_ratio"] > 0 for t in trades)),
    }


def run(max_prob: float) -> dict[str, Any]:
    example = json.loads((ROOT / "config.example.json").read_text())
    frame = load_dataset("btc_1h").frame  # CoinGlass: realized liquidations for the outcomes
    fut = pd.read_feather(BUNDLED / "futures" / "BTC_USDT_USDT-1h-futures.feather")
    # outcomes on the Binance candles the backtest trades, cascades from CoinGlass's realized
    # liquidations on the same hours (both labelled by open time)
    real = frame.set_index("date")[["realized_long_usd", "realized_short_usd"]]
    candles = fut.set_index("date")[["open", "high", "low", "close", "volume"]].join(real)
    candles = candles.dropna(subset=["realized_long_usd"]).reset_index()
    with tempfile.TemporaryDirectory() as td:
        tmp = Path(td)
        data = []
        for ds in load_datasets(["btc_4h", "eth_4h"]):
            feats = compute_features(ds.frame, fc.market_config(MapConfig(), ds.symbol))
            data.append((ds.name, ds.frame, feats))
        model = fc.fit_forecast(data, source="scripts/forecast_guards_freqtrade.py (4h only)")
        mpath = model.save(tmp / "model_4h.json")
        strategies = tmp / "strategies"
        strategies.mkdir()
        src = (ROOT / "strategies" / "liq_trend.py").read_text()
        (strategies / "liq_trend.py").write_text(src)
        (tmp / "ud").mkdir()
        with ReplayExchange(BUNDLED) as rx:
            base = dict(example)
            base["exchange"] = {**example["exchange"], "ccxt_config": rx.ccxt_config()}
            base["user_data_dir"] = str(tmp / "ud")
            base["strategy_path"] = str(strategies)
            lq = example["liqsignal"]

            def cfg(guards: dict[str, Any]) -> dict[str, Any]:
                return {**base, "liqsignal": {**lq, "guards": guards,
                                              "forecast": {"model": str(mpath)}}}  # fmt: skip

            off = _backtest(tmp, cfg({"enabled": False}), "LiqTrendStrategy", "off")
            prob_guards = {"enabled": True, "entry_enabled": True, "entry_min_usd": 1e15,
                           "entry_max_prob": max_prob, "leverage_enabled": False,
                           "stop_enabled": False, "log_backtest_decisions": True}  # fmt: skip
            prob = _backtest(tmp, cfg(prob_guards), "LiqTrendStrategy", "prob")
            att = _attempts(prob["log"], _ENTRY)
            share = float(att["refused"].mean()) if len(att) else 0.0
            lr = np.log(fut["close"] / fut["close"].shift(1))
            rv = pd.Series(lr.rolling(48, min_periods=48).std().to_numpy(), index=fut["date"])
            at = rv.reindex(pd.DatetimeIndex(att["date"])).to_numpy()
            limit = float(np.nanquantile(at, 1.0 - share)) if share > 0 else math.inf
            (strategies / "liq_trend.py").write_text(src + VOL_STRATEGY.format(limit=limit))
            vol = _backtest(tmp, cfg({"enabled": False}), "LiqTrendVolGuard", "vol")
            vatt = _attempts(vol["log"], _VOL)
            # refusals change which candles get an attempt (one open trade at a time): set the
            # limit again from this run's own attempts, once, to match the refused share
            at = rv.reindex(pd.DatetimeIndex(vatt["date"])).to_numpy()
            if share > 0 and len(at):
                limit = float(np.nanquantile(at, 1.0 - share))
                (strategies / "liq_trend.py").write_text(src + VOL_STRATEGY.format(limit=limit))
                vol = _backtest(tmp, cfg({"enabled": False}), "LiqTrendVolGuard", "vol2")
                vatt = _attempts(vol["log"], _VOL)
    return {
        "timerange": TIMERANGE,
        "max_prob": max_prob,
        "vol_limit": limit,
        "model": {s: {"threshold": model.sides[s].threshold} for s in fc.SIDES},
        "runs": {
            "guards off": _summary(off["result"]),
            f"prob > {max_prob:g}": _summary(prob["result"]),
            "high volatility": _summary(vol["result"]),
        },
        "guards": {
            f"prob > {max_prob:g}": _stats(candles, att),
            "high volatility": _stats(candles, vatt),
        },
    }


def _fmt(r: dict[str, Any]) -> str:
    lines = [f"freqtrade backtesting, LiqTrendStrategy, BTC/USDT:USDT 1h, {r['timerange']}"]
    lines.append(f"{'run':<20}{'trades':>7}{'wins':>6}{'profit %':>10}{'max DD %':>10}")
    for name, s in r["runs"].items():
        lines.append(f"{name:<20}{s['trades']:>7}{s['wins']:>6}{s['profit_pct']:>10.2f}"
                     f"{s['max_drawdown_pct']:>10.2f}")  # fmt: skip
    lines.append(f"entry attempts (volatility limit {r['vol_limit']:.5f} per candle):")
    lines.append(f"{'guard':<20}{'attempts':>9}{'refused':>8}  {'MAE24 a/r':>14}{'MAE72 a/r':>14}"
                 f"{'liq72@10x a/r':>16}{'cascade24 a/r':>16}{'cascade72 a/r':>16}")  # fmt: skip
    for name, g in r["guards"].items():
        if not g.get("attempts"):
            lines.append(f"{name:<20}{0:>9}")
            continue
        a, x = g["allowed"], g["refused"]
        lines.append(
            f"{name:<20}{g['attempts']:>9}{g['n_refused']:>8}  "
            + allowed_refused_cells(a, x, 14, "/")
        )
    return "\n".join(lines)


if __name__ == "__main__":
    raise SystemExit(cli(__doc__.splitlines()[0], run, _fmt))
