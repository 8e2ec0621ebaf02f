"""compute_features(df) -> point-in-time ``liq_*`` columns for a Freqtrade-style dataframe.

Input columns: ``date, open, high, low, close, volume`` plus ``open_interest_amount`` (base
units) and/or ``open_interest_value`` (USD); optional ``taker_buy_volume`` and ``funding_rate``.
The row for bar t depends only on rows up to t, so the columns are safe in backtests. Inputs
are validated (a ``InputError`` names the column and first bad row) and never mutated.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import numpy as np
import pandas as pd

from liqsignal import nb
from liqsignal.config import MapConfig
from liqsignal.engine import LiquidationMap
from liqsignal.exceptions import InputError

__all__ = [
    "FEATURE_COLUMNS",
    "compute_features",
    "compute_features_multi",
    "prepare_inputs",
    "validate_frame",
]

#: Columns ``compute_features`` returns, in order.
FEATURE_COLUMNS: tuple[str, ...] = (*nb.OUT_NAMES, "liq_proxy_mode")

_PRICE_COLS = ("open", "high", "low", "close")
_OI_COLS = ("open_interest_amount", "open_interest_value")


def _first_bad(mask: np.ndarray, df: pd.DataFrame) -> str:
    pos = int(np.flatnonzero(mask)[0])
    label = df.index[pos]
    date = ""
    if "date" in df.columns:
        date = f", date {df['date'].iloc[pos]}"
    return f"row {pos} (index {label!r}{date})"


def validate_frame(df: pd.DataFrame, *, need_oi: bool, name: str = "dataframe") -> None:
    """Raise ``InputError`` naming the column and first bad row, or return None."""
    if not isinstance(df, pd.DataFrame):
        raise InputError(f"{name}: expected a pandas DataFrame, got {type(df).__name__}")
    if len(df) == 0:
        raise InputError(f"{name} is empty: need at least one bar")
    missing = [c for c in ("date", *_PRICE_COLS, "volume") if c not in df.columns]
    if missing:
        raise InputError(f"{name}: missing column(s) {missing}")
    dates = df["date"]
    if not pd.api.types.is_datetime64_any_dtype(dates):
        raise InputError(f"{name}: column 'date' must be datetimes, got {dates.dtype}")
    if dates.isna().any():
        raise InputError(
            f"{name}: column 'date' is missing at {_first_bad(dates.isna().to_numpy(), df)}"
        )
    d = pd.DatetimeIndex(dates).as_unit("ns").asi8
    if len(d) > 1:
        bad = d[1:] <= d[:-1]
        if bad.any():
            pos = int(np.flatnonzero(bad)[0]) + 1
            kind = "duplicate" if d[pos] == d[pos - 1] else "unsorted (earlier than the row before)"
            raise InputError(
                f"{name}: column 'date' is {kind} at row {pos} (date {dates.iloc[pos]}); "
                "dates must be strictly increasing"
            )
    for c in _PRICE_COLS:
        v = pd.to_numeric(df[c], errors="coerce").to_numpy(dtype=np.float64)
        if np.isnan(v).any():
            raise InputError(
                f"{name}: column '{c}' is NaN or not a number at {_first_bad(np.isnan(v), df)}"
            )
        if (v <= 0).any():
            raise InputError(f"{name}: column '{c}' must be > 0, bad at {_first_bad(v <= 0, df)}")
    h = df["high"].to_numpy(dtype=np.float64)
    lo = df["low"].to_numpy(dtype=np.float64)
    if (h < lo).any():
        raise InputError(f"{name}: 'high' is below 'low' at {_first_bad(h < lo, df)}")
    for c in ("open", "close"):
        v = df[c].to_numpy(dtype=np.float64)
        bad = (v > h * (1 + 1e-9)) | (v < lo * (1 - 1e-9))
        if bad.any():
            raise InputError(f"{name}: '{c}' lies outside [low, high] at {_first_bad(bad, df)}")
    vol = pd.to_numeric(df["volume"], errors="coerce").to_numpy(dtype=np.float64)
    if (vol < 0).any():
        raise InputError(f"{name}: column 'volume' is negative at {_first_bad(vol < 0, df)}")
    present = [c for c in _OI_COLS if c in df.columns]
    if need_oi and not present:
        raise InputError(
            f"{name}: missing open interest: need column 'open_interest_amount' (base units) or "
            "'open_interest_value' (USD); without OI use volume-proxy mode "
            "(compute_features(..., proxy=True))"
        )
    for c in present:
        v = pd.to_numeric(df[c], errors="coerce").to_numpy(dtype=np.float64)
        if (v < 0).any():
            raise InputError(f"{name}: column '{c}' is negative at {_first_bad(v < 0, df)}")
        if np.isinf(v).any():
            raise InputError(f"{name}: column '{c}' is infinite at {_first_bad(np.isinf(v), df)}")
    for c in ("taker_buy_volume",):
        if c in df.columns:
            v = pd.to_numeric(df[c], errors="coerce").to_numpy(dtype=np.float64)
            if (v < 0).any():
                raise InputError(f"{name}: column '{c}' is negative at {_first_bad(v < 0, df)}")


def _seconds(dates: pd.Series) -> np.ndarray:
    d = pd.DatetimeIndex(dates)
    if d.tz is None:
        d = d.tz_localize("UTC")
    return d.as_unit("ns").asi8.astype(np.float64) / 1e9


def prepare_inputs(df: pd.DataFrame, *, proxy: bool) -> np.ndarray:
    """The kernel's per-bar inputs ``[n, 8]`` for one exchange (validated frame)."""
    n = len(df)
    x = np.full((n, nb.N_IN), np.nan)
    for i, c in enumerate(("open", "high", "low", "close", "volume")):
        x[:, i] = df[c].to_numpy(dtype=np.float64)
    if not proxy:
        if "open_interest_amount" in df.columns:
            x[:, nb.I_OI] = pd.to_numeric(df["open_interest_amount"], errors="coerce").to_numpy(
                dtype=np.float64
            )
        if "open_interest_value" in df.columns:
            # OI in USD: amount = value / close (so price moves do not read as new positions)
            val = pd.to_numeric(df["open_interest_value"], errors="coerce").to_numpy(
                dtype=np.float64
            )
            amount = val / x[:, nb.I_CLOSE]
            have = np.isfinite(x[:, nb.I_OI])
            x[:, nb.I_OI] = np.where(have, x[:, nb.I_OI], amount)
    if "taker_buy_volume" in df.columns:
        x[:, nb.I_TAKER] = pd.to_numeric(df["taker_buy_volume"], errors="coerce").to_numpy(
            dtype=np.float64
        )
    if "funding_rate" in df.columns:
        x[:, nb.I_FUND] = pd.to_numeric(df["funding_rate"], errors="coerce").to_numpy(
            dtype=np.float64
        )
    return x


def _wrap(out: np.ndarray, index: pd.Index, proxy_flag: float) -> pd.DataFrame:
    cols: dict[str, np.ndarray] = {name: out[i] for i, name in enumerate(nb.OUT_NAMES)}
    cols["liq_proxy_mode"] = np.full(out.shape[1], proxy_flag)
    return pd.DataFrame(cols, index=index, copy=False)


def compute_features(
    df: pd.DataFrame,
    config: MapConfig | Mapping[str, object] | None = None,
    *,
    proxy: bool = False,
    return_map: bool = False,
) -> pd.DataFrame | tuple[pd.DataFrame, LiquidationMap]:
    """Point-in-time ``liq_*`` columns on ``df``'s index (see README for each column).

    ``proxy=True`` runs volume-proxy mode (no OI needed; ``liq_proxy_mode`` = 1). With
    ``return_map=True`` the final ``LiquidationMap`` is returned too (for snapshots or further
    incremental ``update`` calls).
    """
    cfg = config if isinstance(config, MapConfig) else MapConfig.from_dict(config)
    validate_frame(df, need_oi=not proxy)
    lmap = LiquidationMap(cfg, proxy=proxy)
    x = prepare_inputs(df, proxy=proxy)[:, None, :]
    out = lmap.update(_seconds(df["date"]), x)
    res = _wrap(out, df.index, 1.0 if proxy else 0.0)
    return (res, lmap) if return_map else res


def compute_features_multi(
    frames: Mapping[str, pd.DataFrame],
    config: MapConfig | Mapping[str, object] | None = None,
    *,
    proxy: Sequence[str] = (),
    return_map: bool = False,
) -> pd.DataFrame | tuple[pd.DataFrame, LiquidationMap]:
    """Aggregated columns for one market over several exchanges on one grid.

    ``frames`` maps exchange id to its dataframe (the first one is the reference for price and
    the index of the result). All exchanges' bars are processed in date order (the union of
    their dates); an exchange with no bar at a date contributes nothing there (its levels still
    fade); the result has one row per reference row. ``proxy`` lists exchanges
    in volume-proxy mode.
    """
    if not frames:
        raise InputError("compute_features_multi: no exchanges given")
    cfg = config if isinstance(config, MapConfig) else MapConfig.from_dict(config)
    names = list(frames)
    for name in proxy:
        if name not in frames:
            raise InputError(f"proxy names exchange {name!r}, which is not among {names}")
    ref = frames[names[0]]
    for name in names:
        validate_frame(frames[name], need_oi=name not in proxy, name=f"{name} dataframe")
    # Process the union of all dates, so no exchange's bar is dropped; report on ref's rows.
    all_dates = pd.DatetimeIndex(ref["date"])
    for name in names[1:]:
        all_dates = all_dates.union(pd.DatetimeIndex(frames[name]["date"]))
    x = np.full((len(all_dates), len(names), nb.N_IN), np.nan)
    for e, name in enumerate(names):
        f = frames[name]
        xe = prepare_inputs(f, proxy=name in proxy)
        pos = all_dates.get_indexer(pd.DatetimeIndex(f["date"]))
        x[pos, e, :] = xe
    lmap = LiquidationMap(cfg, exchanges=names, proxy=[n in proxy for n in names])
    out = lmap.update(_seconds(pd.Series(all_dates)), x)
    rows = all_dates.get_indexer(pd.DatetimeIndex(ref["date"]))
    res = _wrap(out[:, rows], ref.index, 1.0 if len(proxy) == len(names) else 0.0)
    return (res, lmap) if return_map else res
