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


#: Prices must lie in [PRICE_MIN, PRICE_MAX] (quote currency per unit); outside it a price is
#: absurd (a unit or parsing error) and the frame is refused.
PRICE_MIN = 1e-12
PRICE_MAX = 1e12
#: Volume, open interest and taker volume times the bar's close must stay below this many USD
#: (a thousand trillion); above it a number is a unit or parsing error.
NOTIONAL_MAX = 1e15
#: Two exchanges in ``compute_features_multi`` whose median closes differ by more than this
#: factor quote the market in different units (per token vs per 1,000 tokens) and are refused.
UNIT_RATIO_MAX = 1.5


def _first_bad(mask: np.ndarray, df: pd.DataFrame) -> str:
    pos = int(np.flatnonzero(mask)[0])
    label = df.index[pos]
    date = ""
    if "date" in df.columns:
        try:
            date = f", date {df['date'].iloc[pos]}"
        except (ValueError, OverflowError):  # pragma: no cover - dates outside pandas' range
            date = ""
    return f"row {pos} (index {label!r}{date})"


def _numeric(df: pd.DataFrame, c: str, name: str) -> np.ndarray:
    """Column ``c`` as float64; a value that is not a number (a string, an object) is an error
    naming the row; missing values (None, NaN) become NaN."""
    col = df[c]
    dt = col.dtype
    types = pd.api.types
    if types.is_numeric_dtype(dt) and not (types.is_bool_dtype(dt) or types.is_complex_dtype(dt)):
        return col.to_numpy(dtype=np.float64, na_value=np.nan)
    if not (types.is_object_dtype(dt) or isinstance(dt, pd.StringDtype)):
        raise InputError(f"{name}: column '{c}' must be numbers, got dtype {dt}")
    v = pd.to_numeric(col, errors="coerce").to_numpy(dtype=np.float64, na_value=np.nan)
    bad = np.isnan(v) & col.notna().to_numpy()
    bad |= np.array([isinstance(e, bool | np.bool_ | complex) for e in col], dtype=bool)
    if bad.any():
        pos = int(np.flatnonzero(bad)[0])
        raise InputError(
            f"{name}: column '{c}' holds a value that is not a number "
            f"({col.iloc[pos]!r}) at {_first_bad(bad, df)}"
        )
    return v


def _date_ns(df: pd.DataFrame, name: str) -> np.ndarray:
    """The ``date`` column as int64 nanoseconds since the epoch (UTC for tz-naive dates)."""
    dates = df["date"]
    if not pd.api.types.is_datetime64_any_dtype(dates):
        raise InputError(f"{name}: column 'date' must be datetimes, got {dates.dtype}")
    if dates.isna().any():
        raise InputError(
            f"{name}: column 'date' is missing at {_first_bad(dates.isna().to_numpy(), df)}"
        )
    idx = pd.DatetimeIndex(dates)
    try:
        return idx.as_unit("ns").asi8
    except (pd.errors.OutOfBoundsDatetime, OverflowError, ValueError):
        raw = idx.asi8  # in the column's own unit
        per_s = {"s": 1, "ms": 1_000, "us": 1_000_000, "ns": 1_000_000_000}[idx.unit]
        lim = np.iinfo(np.int64).max // 1_000_000_000 * per_s
        bad = (raw > lim) | (raw < -lim)
        raise InputError(
            f"{name}: column 'date' is outside the supported range (years 1677-2262) at "
            f"{_first_bad(bad, df) if bad.any() else 'some row'}"
        ) from None


def validate_frame(df: pd.DataFrame, *, need_oi: bool, name: str = "dataframe") -> None:
    """Raise ``InputError`` naming the column, first bad row and reason, or return None.

    Refused: missing or non-datetime, missing, duplicate or unsorted dates, dates outside
    years 1677-2262; prices (open, high, low, close) that are missing, not numbers, infinite or
    outside [``PRICE_MIN``, ``PRICE_MAX``]; high below low, open or close outside [low, high];
    volume, open interest or taker volume that is negative, infinite, not a number, or whose
    notional (times close) exceeds ``NOTIONAL_MAX``; infinite funding rates. NaN volume, open
    interest, taker volume or funding means "unknown" and is allowed.

    A wick far from the rest (say high = 1,000 x close) is accepted: the bar's work stays
    bounded by the grid, and the notional its levels would put outside the grid's window is
    counted in ``liq_dropped_usd`` (never placed, never lost from the accounting).
    """
    if not isinstance(df, pd.DataFrame):
        raise InputError(f"{name}: expected a pandas DataFrame, got {type(df).__name__}")
    if len(df) == 0:
        raise InputError(f"{name} is empty: need at least one bar")
    missing = [c for c in ("date", *_PRICE_COLS, "volume") if c not in df.columns]
    if missing:
        raise InputError(f"{name}: missing column(s) {missing}")
    dates = df["date"]
    d = _date_ns(df, name)
    if len(d) > 1:
        bad = d[1:] <= d[:-1]
        if bad.any():
            pos = int(np.flatnonzero(bad)[0]) + 1
            kind = "duplicate" if d[pos] == d[pos - 1] else "unsorted (earlier than the row before)"
            raise InputError(
                f"{name}: column 'date' is {kind} at row {pos} (date {dates.iloc[pos]}); "
                "dates must be strictly increasing"
            )
    prices: dict[str, np.ndarray] = {}
    for c in _PRICE_COLS:
        v = _numeric(df, c, name)
        if np.isnan(v).any():
            raise InputError(
                f"{name}: column '{c}' is NaN or not a number at {_first_bad(np.isnan(v), df)}"
            )
        if np.isinf(v).any():
            raise InputError(f"{name}: column '{c}' is infinite at {_first_bad(np.isinf(v), df)}")
        if (v <= 0).any():
            raise InputError(f"{name}: column '{c}' must be > 0, bad at {_first_bad(v <= 0, df)}")
        bad = (v < PRICE_MIN) | (v > PRICE_MAX)
        if bad.any():
            pos = int(np.flatnonzero(bad)[0])
            raise InputError(
                f"{name}: column '{c}' is {v[pos]:.6g}, outside the plausible price range "
                f"[{PRICE_MIN:g}, {PRICE_MAX:g}], at {_first_bad(bad, df)}"
            )
        prices[c] = v
    h = prices["high"]
    lo = prices["low"]
    if (h < lo).any():
        raise InputError(f"{name}: 'high' is below 'low' at {_first_bad(h < lo, df)}")
    for c in ("open", "close"):
        v = prices[c]
        bad = (v > h * (1 + 1e-9)) | (v < lo * (1 - 1e-9))
        if bad.any():
            raise InputError(f"{name}: '{c}' lies outside [low, high] at {_first_bad(bad, df)}")
    close = prices["close"]
    present = [c for c in _OI_COLS if c in df.columns]
    if need_oi and not present:
        raise InputError(
            f"{name}: missing open interest: need column 'open_interest_amount' (base units) or "
            "'open_interest_value' (USD); without OI use volume-proxy mode "
            "(compute_features(..., proxy=True))"
        )
    amounts = ["volume", *present, *[c for c in ("taker_buy_volume",) if c in df.columns]]
    for c in amounts:
        v = _numeric(df, c, name)
        if (v < 0).any():
            raise InputError(f"{name}: column '{c}' is negative at {_first_bad(v < 0, df)}")
        if np.isinf(v).any():
            raise InputError(f"{name}: column '{c}' is infinite at {_first_bad(np.isinf(v), df)}")
        usd = v if c == "open_interest_value" else v * close
        bad = usd > NOTIONAL_MAX
        if bad.any():
            pos = int(np.flatnonzero(bad)[0])
            raise InputError(
                f"{name}: column '{c}' is {v[pos]:.6g}, a notional of {usd[pos]:.3g} USD (above "
                f"{NOTIONAL_MAX:g}), at {_first_bad(bad, df)}"
            )
    if "funding_rate" in df.columns:
        v = _numeric(df, "funding_rate", name)
        if np.isinf(v).any():
            raise InputError(
                f"{name}: column 'funding_rate' is infinite at {_first_bad(np.isinf(v), df)}"
            )


def _seconds(dates: pd.Series) -> np.ndarray:
    d = pd.DatetimeIndex(dates)
    if d.tz is None:
        d = d.tz_localize("UTC")
    return d.as_unit("ns").asi8.astype(np.float64) / 1e9


def _utc_index(dates: pd.Series) -> pd.DatetimeIndex:
    d = pd.DatetimeIndex(dates).as_unit("ns")
    return d.tz_localize("UTC") if d.tz is None else d.tz_convert("UTC")


def stack_inputs(
    frames: Sequence[pd.DataFrame | None], proxies: Sequence[bool]
) -> tuple[pd.DatetimeIndex, np.ndarray]:
    """The union of the exchanges' bar dates (UTC; tz-naive dates read as UTC) and the kernel
    inputs ``[n, n_exchanges, N_IN]`` on it: NaN where an exchange has no bar at a date (it
    contributes nothing there and its levels fade). ``None`` or empty frames contribute no date.
    The one place where several exchanges' bars are put on one timeline: the stored-market path
    (:func:`liqsignal.data.provider.map_stored_market`), the live provider and
    :func:`compute_features_multi` all use it."""
    utc = [None if f is None or not len(f) else _utc_index(f["date"]) for f in frames]
    dates = pd.DatetimeIndex([], tz="UTC").as_unit("ns")
    for d in utc:
        if d is not None:
            dates = dates.union(d)
    x = np.full((len(dates), len(frames), nb.N_IN), np.nan)
    for e, (f, d) in enumerate(zip(frames, utc, strict=True)):
        if f is not None and d is not None:
            x[dates.get_indexer(d), e, :] = prepare_inputs(f, proxy=bool(proxies[e]))
    return dates, x


def _check_units(frames: Mapping[str, pd.DataFrame], names: list[str]) -> None:
    """Refuse exchanges that quote one market in different units (median closes apart by more
    than ``UNIT_RATIO_MAX``: per token on one, per 1,000 tokens on another)."""
    med = {n: float(np.median(_numeric(frames[n], "close", f"{n} dataframe"))) for n in names}
    first = names[0]
    for name in names[1:]:
        ratio = med[name] / med[first]
        if not 1.0 / UNIT_RATIO_MAX <= ratio <= UNIT_RATIO_MAX:
            raise InputError(
                f"exchanges {first!r} and {name!r} quote this market in different units: median "
                f"close {med[first]:.6g} vs {med[name]:.6g} (ratio {ratio:.4g}); one of them "
                "prices a multiple of the token (say per 1,000 tokens, as in 1000PEPE): convert "
                "it to the same unit first"
            )


def prepare_inputs(df: pd.DataFrame, *, proxy: bool) -> np.ndarray:
    """The kernel's per-bar inputs ``[n, 8]`` for one exchange (validated frame)."""
    n = len(df)
    x = np.full((n, nb.N_IN), np.nan)
    named = (
        (nb.I_OPEN, "open"),
        (nb.I_HIGH, "high"),
        (nb.I_LOW, "low"),
        (nb.I_CLOSE, "close"),
        (nb.I_VOL, "volume"),
    )
    for i, c in named:
        x[:, i] = _numeric(df, c, "dataframe")
    if not proxy:
        if "open_interest_amount" in df.columns:
            x[:, nb.I_OI] = _numeric(df, "open_interest_amount", "dataframe")
        if "open_interest_value" in df.columns:
            # OI in USD: amount = value / close (so price moves do not read as new positions)
            val = _numeric(df, "open_interest_value", "dataframe")
            amount = val / x[:, nb.I_CLOSE]
            have = np.isfinite(x[:, nb.I_OI])
            x[:, nb.I_OI] = np.where(have, x[:, nb.I_OI], amount)
    if "taker_buy_volume" in df.columns:
        x[:, nb.I_TAKER] = _numeric(df, "taker_buy_volume", "dataframe")
    if "funding_rate" in df.columns:
        x[:, nb.I_FUND] = _numeric(df, "funding_rate", "dataframe")
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
    the index of the result). Dates are compared in UTC (tz-naive dates are read as UTC, so
    naive and tz-aware frames can be mixed); exchanges whose median closes differ by more than
    ``UNIT_RATIO_MAX`` x are refused (different units, see ``_check_units``). All exchanges'
    bars are processed in date order (the union of
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
    _check_units(frames, names)
    # Process the union of all dates, so no exchange's bar is dropped; report on ref's rows.
    # Dates compare in UTC: tz-naive dates are read as UTC (as in compute_features).
    all_dates, x = stack_inputs([frames[n] for n in names], [n in proxy for n in names])
    lmap = LiquidationMap(cfg, exchanges=names, proxy=[n in proxy for n in names])
    out = lmap.update(_seconds(pd.Series(all_dates)), x)
    rows = all_dates.get_indexer(_utc_index(ref["date"]))
    res = _wrap(out[:, rows], ref.index, 1.0 if len(proxy) == len(names) else 0.0)
    return (res, lmap) if return_map else res
