"""The liquidation-map columns as FreqAI features (``%-`` prefix), scale-free.

FreqAI trains on every column whose name starts with ``%``. ``add_liq_features`` adds the
liq columns (``liqsignal.freqtrade.add_liq_columns``: open interest and funding merged point in
time, the map computed on the frame it is given) and, for each of ``FREQAI_FEATURES``, a
``%-liq_...`` column that does not depend on the market's size: distances in percent of price,
USD amounts as a share of open interest (of the bar's notional volume in volume-proxy mode),
flags as 0/1, bars since the last flush capped. Call it from ``feature_engineering_standard``
(once per pair, on the base timeframe: the map carries state, so it is not expanded over
``indicator_periods_candles``); from ``feature_engineering_expand_all`` it works too and uses
FreqAI's ``metadata["tf"]``, with ``suffix`` naming the copies apart.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import numpy as np
import pandas as pd

__all__ = ["FREQAI_FEATURES", "add_liq_features"]

#: name -> how it is made scale-free: "pct" (already percent), "usd" (/ open interest value),
#: "flag" (0/1), "count" (capped at 500)
FREQAI_FEATURES: dict[str, str] = {
    "liq_long_cluster_dist_pct": "pct",
    "liq_short_cluster_dist_pct": "pct",
    "liq_long_cluster_usd": "usd",
    "liq_short_cluster_usd": "usd",
    "liq_long_density_usd": "usd",
    "liq_short_density_usd": "usd",
    "liq_long_cascade_usd": "usd",
    "liq_short_cascade_usd": "usd",
    "liq_long_cascade_depth": "count",
    "liq_short_cascade_depth": "count",
    "liq_pred_long_usd": "usd",
    "liq_pred_short_usd": "usd",
    "liq_long_armed": "flag",
    "liq_short_armed": "flag",
    "liq_flush": "flag",
    "liq_bars_since_flush": "count",
}


def add_liq_features(
    dataframe: pd.DataFrame,
    metadata: Mapping[str, Any],
    dp: Any,
    config: Mapping[str, Any] | None,
    *,
    features: Mapping[str, str] | None = None,
    suffix: str = "",
    timeframe: str | None = None,
) -> pd.DataFrame:
    """Return ``dataframe`` with the liq columns and ``%-<feature><suffix>`` columns added
    (the caller's own columns are kept). A cluster missing on a side gives a distance of
    ``scan_range_pct`` (as far as the map looks) and 0 USD, so the features have no NaN from
    the map itself; rows before open interest is known stay NaN (FreqAI drops them)."""
    from liqsignal.freqtrade import add_liq_columns, liq_settings

    tf = timeframe or metadata.get("tf") or None
    out = add_liq_columns(dataframe, metadata, dp, config, timeframe=tf)
    feats = dict(features or FREQAI_FEATURES)
    scan = float(liq_settings(config).engine.scan_range_pct)
    oi = out["open_interest_value"] if "open_interest_value" in out.columns else None
    if oi is None or not oi.notna().any():
        if "open_interest_amount" in out.columns and out["open_interest_amount"].notna().any():
            oi = out["open_interest_amount"] * out["close"]
        else:  # volume-proxy mode: the bar's notional volume is the scale
            oi = (out["volume"] * out["close"]).rolling(24, min_periods=1).mean()
    denom = oi.where(oi > 0)
    new: dict[str, pd.Series] = {}
    for name, kind in feats.items():
        col = out[name].astype("float64")
        if kind == "pct":
            v = col.abs().fillna(scan).clip(upper=scan)
        elif kind == "usd":
            v = col.fillna(0.0) / denom
        elif kind == "flag":
            v = (col.fillna(0.0) != 0).astype("float64") * np.sign(col.fillna(0.0))
        elif kind == "count":
            v = col.fillna(500.0).clip(upper=500.0)
        else:
            raise ValueError(f"feature {name}: unknown kind {kind!r} (pct, usd, flag, count)")
        new[f"%-{name}{suffix}"] = v
    return pd.concat(
        [
            out.drop(columns=[c for c in new if c in out.columns]),
            pd.DataFrame(new, index=out.index),
        ],
        axis=1,
    )
