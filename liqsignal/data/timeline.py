"""Time on the data path: timeframe lengths and the point-in-time merge of slower series.

A row of open interest, funding or any other series dated ``D`` at timeframe ``tf_o`` is known
from ``D + tf_o``; it reaches the candle opened at ``T`` (timeframe ``tf``) only when
``D + tf_o <= T + tf``, i.e. when it was known at the candle's close. The Freqtrade columns, the
provider and the alert loop all merge through :func:`merge_point_in_time`, and none of them needs
Freqtrade imported for it.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import pandas as pd

from liqsignal.exceptions import ConfigError

__all__ = ["TF_UNITS", "merge_point_in_time", "timeframe_seconds"]

#: Seconds per timeframe unit (Freqtrade / ccxt spelling: "5m", "1h", "1d", "1w").
TF_UNITS = {"s": 1, "m": 60, "h": 3600, "d": 86400, "w": 604800}


def timeframe_seconds(timeframe: str) -> int:
    """Seconds of a Freqtrade timeframe such as "5m", "1h", "1d"."""
    try:
        n, unit = int(timeframe[:-1]), timeframe[-1]
        return n * TF_UNITS[unit]
    except (ValueError, KeyError, IndexError, TypeError) as e:
        raise ConfigError(f"timeframe {timeframe!r} is not like '5m', '1h' or '1d'") from e


def merge_point_in_time(
    dataframe: pd.DataFrame,
    other: pd.DataFrame | None,
    columns: Sequence[str],
    *,
    timeframe: str,
    other_timeframe: str,
) -> pd.DataFrame:
    """``dataframe`` with ``columns`` of ``other`` merged point in time (module docstring).

    A row of ``other`` dated ``D`` reaches the candle opened at ``T`` only when ``D +
    other_timeframe <= T + timeframe``; candles before the first such row get NaN. Returns a new
    frame on ``dataframe``'s index; ``dataframe`` is not changed.
    """
    out = dataframe.copy()
    if other is None or len(other) == 0 or not set(columns) <= set(other.columns):
        for c in columns:
            out[c] = math.nan
        return out
    tf = pd.Timedelta(seconds=timeframe_seconds(timeframe))
    otf = pd.Timedelta(seconds=timeframe_seconds(other_timeframe))
    left = pd.DataFrame({"_known": pd.DatetimeIndex(dataframe["date"]) + tf})
    left["_pos"] = range(len(left))
    right = other[["date", *columns]].dropna(subset=list(columns), how="all")
    right = pd.DataFrame(
        {"_known": pd.DatetimeIndex(right["date"]) + otf, **{c: right[c] for c in columns}}
    )
    right["_known"] = right["_known"].astype(left["_known"].dtype)
    right = right.sort_values("_known")
    merged = pd.merge_asof(left.sort_values("_known"), right, on="_known", direction="backward")
    merged = merged.sort_values("_pos")
    for c in columns:
        out[c] = merged[c].to_numpy(dtype="float64")
    return out
