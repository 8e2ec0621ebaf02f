"""What the probability entry guard is worth: entries it refuses against the ones it allows.

Simulates the sample strategy's entries (``strategies/liq_trend.py``: EMA 20/50 trend entries
and the flush-reset entries, filled at the next bar's open) on the bundled datasets with realized
liquidations, and compares three rules on the same entries:

- guards off (the control: every entry taken);
- the probability guard (``guards.entry_max_prob``): refuse when the entry side's cascade
  probability is above ``--max-prob``; the probabilities are walk-forward out of sample
  (``liqsignal.forecast.walk_forward_probabilities``: each test block scored by a model fitted
  on earlier data only), so only entries inside the test blocks count;
- a map-free guard refusing the same number of entries: those with the highest realized
  volatility (48-bar standard deviation of log returns) at the signal.

For refused and allowed entries: the maximum adverse excursion (MAE, % of the entry price)
over the next 24 and 72 bars, the share that a 10x isolated position would have been
liquidated within them (the exchange's own formula and maintenance tier), and the share with a
realized cascade onset on the side that hurts the position (long: long cascade).

    .venv/bin/python scripts/forecast_guards.py            # --max-prob 0.15 --json
"""

from __future__ import annotations

import argparse
import json
import math
from collections.abc import Callable
from typing import Any

import numpy as np
import pandas as pd

from liqsignal import forecast as fc
from liqsignal.config import MapConfig
from liqsignal.datasets import cascade_onsets, load_datasets
from liqsignal.features import compute_features
from liqsignal.tiers import liquidation_price, load_tiers, max_leverage_of, tier_for

LEVERAGE = 10.0
NOTIONAL = 10_000.0
HORIZONS = (24, 72)


def _ema(x: pd.Series, n: int) -> pd.Series:
    """TA-Lib's EMA: seeded with the simple mean of the first n values."""
    out = np.full(len(x), np.nan)
    v = x.to_numpy(dtype=np.float64)
    if len(v) < n:
        return pd.Series(out, index=x.index)
    a = 2.0 / (n + 1.0)
    out[n - 1] = v[:n].mean()
    for i in range(n, len(v)):
        out[i] = a * v[i] + (1 - a) * out[i - 1]
    return pd.Series(out, index=x.index)


def entries(frame: pd.DataFrame, feats: pd.DataFrame) -> pd.DataFrame:
    """The sample strategy's entry signals (bar index, side, tag), as its populate_entry_trend."""
    close, open_ = frame["close"], frame["open"]
    fast, slow = _ema(close, 20), _ema(close, 50)
    up = (close > fast) & (close.shift(1) <= fast.shift(1)) & (fast > slow)
    down = (close < fast) & (close.shift(1) >= fast.shift(1)) & (fast < slow)
    recent = feats["liq_bars_since_flush"] <= 3
    last = feats["liq_flush"].replace(0.0, np.nan).ffill()
    fl_up = recent & (last > 0) & (close > open_)
    fl_dn = recent & (last < 0) & (close < open_)
    rows = []
    for mask, side, tag in ((up, "long", "trend"), (down, "short", "trend"),
                            (fl_up & ~up, "long", "flush_reset"),
                            (fl_dn & ~down, "short", "flush_reset")):  # fmt: skip
        for i in np.flatnonzero(mask.to_numpy()):
            rows.append((int(i), side, tag))
    return pd.DataFrame(rows, columns=["bar", "side", "tag"]).sort_values("bar")


def outcomes(frame: pd.DataFrame, ent: pd.DataFrame, symbol: str) -> pd.DataFrame:
    """MAE, liquidation at 10x and a cascade against the position over each horizon."""
    o = frame["open"].to_numpy()
    lo = frame["low"].to_numpy()
    hi = frame["high"].to_numpy()
    onset = {s: cascade_onsets(frame[f"realized_{s}_usd"].to_numpy())[0] for s in fc.SIDES}
    tiers = load_tiers(symbol, None)
    exmax = max_leverage_of(tiers)
    t = tier_for(tiers, NOTIONAL, LEVERAGE) if tiers else None
    mmr, cum = (t.mmr, t.cum) if t else (0.005, 0.0)
    out = []
    n = len(frame)
    for bar, side in zip(ent["bar"], ent["side"], strict=True):
        start = bar + 1  # filled at the next bar's open
        rec: dict[str, Any] = {}
        for h in HORIZONS:
            stop = start + h
            if stop > n:
                rec.update({f"mae_{h}": math.nan, f"liq_{h}": math.nan, f"cascade_{h}": math.nan})
                continue
            px = o[start]
            lp = liquidation_price("binance", side, px, LEVERAGE, mmr=mmr, notional=NOTIONAL,
                                   cum=cum, max_leverage=exmax)  # fmt: skip
            if side == "long":
                worst = lo[start:stop].min()
                rec[f"mae_{h}"] = (px - worst) / px * 100.0
                rec[f"liq_{h}"] = float(worst <= lp)
            else:
                worst = hi[start:stop].max()
                rec[f"mae_{h}"] = (worst - px) / px * 100.0
                rec[f"liq_{h}"] = float(worst >= lp)
            rec[f"cascade_{h}"] = float(onset[side][start:stop].any())
        out.append(rec)
    return pd.DataFrame(out, index=ent.index)


def _summary(df: pd.DataFrame) -> dict[str, Any]:
    res: dict[str, Any] = {"n": len(df)}
    for h in HORIZONS:
        ok = df[f"mae_{h}"].notna()
        res[f"mae_{h}"] = float(df.loc[ok, f"mae_{h}"].mean()) if ok.any() else math.nan
        res[f"liq_{h}"] = float(df.loc[ok, f"liq_{h}"].mean()) if ok.any() else math.nan
        res[f"cascade_{h}"] = float(df.loc[ok, f"cascade_{h}"].mean()) if ok.any() else math.nan
    return res


def run(max_prob: float) -> list[dict[str, Any]]:
    data = []
    for ds in load_datasets():
        feats = compute_features(ds.frame, fc.market_config(MapConfig(), ds.symbol))
        assert isinstance(feats, pd.DataFrame)
        data.append((ds, feats))
    wf = fc.walk_forward_probabilities([(d.name, d.frame, f) for d, f in data])
    rows = []
    for ds, feats in data:
        frame = ds.frame
        ent = entries(frame, feats)
        probs = wf[ds.name]["p"]
        ent["prob"] = [probs[s][b] for b, s in zip(ent["bar"], ent["side"], strict=True)]
        ent = ent[ent["prob"].notna()].copy()  # bars in walk-forward test blocks only
        lr = np.log(frame["close"] / frame["close"].shift(1))
        rv = lr.rolling(48, min_periods=48).std().to_numpy()
        ent["rv"] = rv[ent["bar"].to_numpy()]
        ent = ent.join(outcomes(frame, ent, ds.symbol))
        refused_p = ent["prob"] > max_prob
        k = int(refused_p.sum())
        order = ent["rv"].rank(method="first", ascending=False)
        refused_v = order <= k
        for guard, refused in (("off", pd.Series(False, index=ent.index)),
                               (f"prob > {max_prob:g}", refused_p),
                               ("high volatility (same count)", refused_v)):  # fmt: skip
            rows.append({
                "dataset": ds.name, "guard": guard, "entries": len(ent),
                "refused": int(refused.sum()),
                "refused_rate": float(refused.mean()) if len(ent) else math.nan,
                "allowed_stats": _summary(ent[~refused]), "refused_stats": _summary(ent[refused]),
            })  # fmt: skip
    return rows


def fmt_value(v: float | None, pct: bool = False) -> str:
    """A figure of the tables: "n/a" when missing, a share in %, else two decimals."""
    if v is None or not math.isfinite(v):
        return "n/a"
    return f"{v * 100:.1f}%" if pct else f"{v:.2f}"


def allowed_refused_cells(a: dict[str, Any], x: dict[str, Any], mae_width: int, sep: str) -> str:
    """The allowed / refused entries' MAE over 24 and 72 bars, liquidation share at 10x and
    cascade shares over 24 and 72 bars, as the tables' cells (``a`` allowed, ``x`` refused)."""

    def cell(key: str, width: int, pct: bool = False) -> str:
        return f"{fmt_value(a[key], pct) + sep + fmt_value(x[key], pct):>{width}}"

    return (
        cell("mae_24", mae_width) + cell("mae_72", mae_width) + cell("liq_72", 16, True)
        + cell("cascade_24", 16, True) + cell("cascade_72", 16, True)
    )  # fmt: skip


def _fmt(rows: list[dict[str, Any]]) -> str:
    lines = [
        f"{'dataset':<8}{'guard':<30}{'entries':>8}{'refused':>8}  "
        f"{'MAE24 allowed/refused':>22}{'MAE72 allowed/refused':>22}"
        f"{'liq72@10x a/r':>16}{'cascade24 a/r':>16}{'cascade72 a/r':>16}"
    ]
    for r in rows:
        a, x = r["allowed_stats"], r["refused_stats"]
        lines.append(
            f"{r['dataset']:<8}{r['guard']:<30}{r['entries']:>8}{r['refused']:>8}  "
            + allowed_refused_cells(a, x, 22, " / ")
        )
    lines.append(
        "MAE in % of the entry price; liq72@10x: share a 10x isolated position would have "
        "been liquidated within 72 bars; cascade: realized cascade onset against the "
        "position within 24 / 72 bars. 'off' has nothing refused (allowed = all)."
    )
    return "\n".join(lines)


def cli(description: str, run: Callable[[float], Any], fmt: Callable[[Any], str]) -> int:
    """``--max-prob P [--json]``: print ``run(P)`` as JSON or as ``fmt`` writes it."""
    p = argparse.ArgumentParser(description=description)
    p.add_argument("--max-prob", type=float, default=0.15, help="guards.entry_max_prob")
    p.add_argument("--json", action="store_true")
    a = p.parse_args()
    r = run(a.max_prob)
    print(json.dumps(r, indent=1, default=lambda v: None) if a.json else fmt(r))
    return 0


if __name__ == "__main__":
    raise SystemExit(cli(__doc__.splitlines()[0], run, _fmt))
