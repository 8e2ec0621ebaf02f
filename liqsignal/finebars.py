"""A coarse map built from finer candles: a 4h map from 1h bars (or a 1h map from 5m bars).

Inside a coarse bar the order of prices is unknown, so the coarse engine spreads entries over
the bar's whole range and counts a share of them as liquidated within the bar. Finer candles
of the same market say where price went inside the bar. :func:`fine_features` runs the map on
the fine bars and reports one row per coarse bar, point in time at the coarse close:

* ``liq_pred_*_usd``, ``liq_pred_standing_*_usd``, ``liq_opened_usd``, ``liq_closed_usd``: sums
  over the coarse bar's fine bars (in this mode "standing" means levels that stood before each
  fine bar);
* every other column (clusters, cascade, density, armed, flush, totals, dropped): the value at
  the coarse bar's last fine bar, i.e. the map at the coarse close.

Open interest of the fine bars: their own when the fine frame has it, else the coarse OI
(known at each coarse close) interpolated linearly in time between coarse closes, which uses
nothing after the coarse bar's close.
"""

from __future__ import annotations

from collections.abc import Mapping

import numpy as np
import pandas as pd

from liqsignal.config import MapConfig
from liqsignal.exceptions import InputError
from liqsignal.features import FEATURE_COLUMNS, compute_features

__all__ = ["SUMMED_COLUMNS", "fine_features", "fine_with_oi", "path_controls"]

#: Columns summed over the fine bars of a coarse bar; the rest are read at its last fine bar.
SUMMED_COLUMNS: tuple[str, ...] = (
    "liq_pred_long_usd",
    "liq_pred_short_usd",
    "liq_pred_standing_long_usd",
    "liq_pred_standing_short_usd",
    "liq_opened_usd",
    "liq_closed_usd",
)

_OI = ("open_interest_value", "open_interest_amount")


def _coarse_step(df: pd.DataFrame) -> pd.Timedelta:
    d = pd.DatetimeIndex(df["date"])
    if len(d) < 2:
        raise InputError("fine_features: need at least two coarse bars to know their timeframe")
    step = pd.Series(d).diff().dropna().mode().iloc[0]
    return pd.Timedelta(step)


def fine_with_oi(df: pd.DataFrame, fine: pd.DataFrame) -> pd.DataFrame:
    """``fine`` restricted to the coarse bars' span, with open interest: its own, or the
    coarse OI at each coarse close interpolated in time onto the fine bars' closes."""
    for c in ("date", "open", "high", "low", "close", "volume"):
        if c not in fine.columns:
            raise InputError(f"fine candles: missing column {c!r}")
    step = _coarse_step(df)
    fstep = _coarse_step(fine)
    if fstep >= step:
        raise InputError(f"fine candles ({fstep}) must be finer than the coarse bars ({step})")
    start = df["date"].iloc[0]
    end = df["date"].iloc[-1] + step
    out = fine[(fine["date"] >= start) & (fine["date"] < end)].copy().reset_index(drop=True)
    if out.empty:
        raise InputError("fine candles do not overlap the coarse bars")
    if any(c in out.columns and out[c].notna().any() for c in _OI):
        return out
    col = next((c for c in _OI if c in df.columns), None)
    if col is None:
        raise InputError("fine_features: the coarse frame has no open interest to interpolate")
    known = pd.Series(
        pd.to_numeric(df[col], errors="coerce").to_numpy(dtype=np.float64),
        index=pd.DatetimeIndex(df["date"]) + step,  # OI at the coarse bar's close
    )
    ends = pd.DatetimeIndex(out["date"]) + fstep
    both = known.reindex(known.index.union(ends))
    both = both.interpolate(method="time", limit_area="inside")
    out[col] = both.reindex(ends).to_numpy()
    # before the first coarse close: the first coarse value (flat, no new positions read)
    first = float(known.iloc[0])
    out[col] = out[col].fillna(first) if np.isfinite(first) else out[col]
    return out


def _coarse_index(df: pd.DataFrame, fine: pd.DataFrame) -> np.ndarray:
    """For each fine bar, the position of its coarse bar (-1 when none)."""
    step = _coarse_step(df)
    starts = pd.DatetimeIndex(df["date"])
    f = pd.DatetimeIndex(fine["date"])
    pos = starts.searchsorted(f, side="right") - 1
    ok = (pos >= 0) & (f < starts[np.maximum(pos, 0)] + step)
    return np.where(ok, pos, -1)


def fine_features(
    df: pd.DataFrame,
    fine: pd.DataFrame,
    config: MapConfig | Mapping[str, object] | None = None,
) -> pd.DataFrame:
    """``liq_*`` columns on ``df``'s rows, built from the finer candles ``fine``."""
    f = fine_with_oi(df, fine)
    feats = compute_features(f, config)
    assert isinstance(feats, pd.DataFrame)
    pos = _coarse_index(df, f)
    keep = pos >= 0
    feats = feats.loc[keep]
    pos = pos[keep]
    out = pd.DataFrame(np.nan, index=df.index, columns=list(FEATURE_COLUMNS))
    grp = pd.Series(pos, index=feats.index)
    summed = feats[list(SUMMED_COLUMNS)].groupby(grp.to_numpy()).sum()
    last = feats.groupby(grp.to_numpy()).tail(1)
    last_pos = grp.loc[last.index].to_numpy()
    rest = [c for c in FEATURE_COLUMNS if c not in SUMMED_COLUMNS]
    out.iloc[last_pos, [out.columns.get_loc(c) for c in rest]] = last[rest].to_numpy()
    out.iloc[summed.index.to_numpy(), [out.columns.get_loc(c) for c in SUMMED_COLUMNS]] = (
        summed.to_numpy()
    )
    return out


def path_controls(df: pd.DataFrame, fine: pd.DataFrame) -> dict[str, pd.DataFrame]:
    """Map-free controls that know the path inside each coarse bar, per side: the move x OI
    baseline and volume x range summed over the fine bars (``path_move_oi``,
    ``path_volume_range``). A map built from fine candles is compared with these too."""
    f = fine_with_oi(df, fine)
    col = next(c for c in _OI if c in f.columns)
    oi = pd.to_numeric(f[col], errors="coerce")
    if col == "open_interest_amount":
        oi = oi * f["close"]
    pc = f["close"].shift(1)
    poi = oi.shift(1)
    pos = _coarse_index(df, f)
    frame = pd.DataFrame(
        {
            "pl": np.maximum(0.0, pc - f["low"]) / pc * poi,
            "ps": np.maximum(0.0, f["high"] - pc) / pc * poi,
            "vr": f["volume"] * (f["high"] - f["low"]) / f["close"],
            "pos": pos,
        }
    )
    frame = frame[frame["pos"] >= 0]
    s = frame.groupby("pos")[["pl", "ps", "vr"]].sum(min_count=1)
    s = s.reindex(np.arange(len(df)))
    out = {}
    for side, col_ in (("long", "pl"), ("short", "ps")):
        out[side] = pd.DataFrame(
            {"path_move_oi": s[col_].to_numpy(), "path_volume_range": s["vr"].to_numpy()},
            index=df.index,
        )
    return out
