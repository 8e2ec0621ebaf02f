"""Freqtrade-facing helpers: liq columns in populate_indicators, guards in the callbacks.

- ``liq_informative_pairs(pairs, timeframe)``: the ``open_interest`` and ``funding_rate`` candle
  types to list in ``informative_pairs()`` so dry/live runs download them.
- ``merge_point_in_time(dataframe, other, columns, ...)``: merge another candle type into the
  strategy frame so no value from after a candle's close reaches that candle (convention below).
- ``add_liq_columns(dataframe, metadata, dp, config)``: one call in ``populate_indicators``;
  with several ``liqsignal.exchanges`` the aggregated map's columns (stored files in backtests,
  the provider registered with ``set_provider`` in dry/live; ``refresh_in_background``).
- ``LiqGuardMixin``: ``liq_confirm_trade_entry``, ``liq_leverage``, ``liq_custom_stoploss``, one
  line each in the strategy's callbacks, plus hyperoptable guard thresholds.
- ``LIQ_PLOT_CONFIG``: a ``plot_config`` for ``freqtrade plot-dataframe``.

Point-in-time convention. Freqtrade stores ``open_interest`` rows labelled like candles, by open
time, and in dry/live runs drops the row dated at the forming candle's open as incomplete. So a
row dated ``D`` of timeframe ``tf_oi`` is treated as known at ``D + tf_oi`` and merged into the
strategy candle opened at ``T`` (closing at ``T + tf``) only when ``D + tf_oi <= T + tf``: with
equal timeframes, the candle gets the row of its own date, never a later one. Backtests and live
runs see the same values. (The bundled Binance rows are snapshots taken at their timestamp, so
this lags the snapshot at the candle's close by one candle: conservative, never ahead.) Funding
rows (``funding_rate``, dated at settlement) follow the same rule with the funding timeframe.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import math
import threading
import weakref
from bisect import bisect_right
from collections import OrderedDict
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any, ClassVar

import numpy as np
import pandas as pd

from liqsignal.column_cache import ColumnCache
from liqsignal.config import ForecastConfig, MapConfig
from liqsignal.data.timeline import TF_UNITS, merge_point_in_time, timeframe_seconds
from liqsignal.exceptions import ConfigError, LiqsignalError
from liqsignal.features import FEATURE_COLUMNS, compute_features
from liqsignal.forecast import FORECAST_COLUMNS, apply_forecast
from liqsignal.guards import (
    FORECAST_GUARD_COLUMNS,
    GUARD_COLUMNS,
    GuardConfig,
    data_state,
    entry_decision,
    leverage_decision,
    stop_decision,
)

try:  # the mixin's hyperoptable parameters; the rest of the module works without Freqtrade
    from freqtrade.exceptions import OperationalException as _FtOperationalException
    from freqtrade.strategy import DecimalParameter
except ImportError as e:  # pragma: no cover - freqtrade is a dependency
    raise ImportError("liqsignal.freqtrade needs Freqtrade: pip install 'freqtrade>=2026.9'") from e


class LiqConfigurationError(ConfigError, _FtOperationalException):
    """A bad ``liqsignal`` section met inside Freqtrade. Freqtrade prints an
    ``OperationalException`` as one line and exits 2, instead of "Fatal exception!" and a
    traceback (its own ``ConfigurationError`` would exit 0); still a ``ConfigError``."""


__all__ = [
    "AGGREGATED_COLUMNS",
    "LIQ_COLUMNS",
    "LIQ_FORECAST_COLUMNS",
    "LIQ_PLOT_CONFIG",
    "SECTION_KEYS",
    "LiqGuardMixin",
    "LiqSettings",
    "add_liq_columns",
    "liq_informative_pairs",
    "liq_settings",
    "merge_point_in_time",
    "refresh_in_background",
    "set_provider",
    "timeframe_seconds",
]

logger = logging.getLogger(__name__)

#: Keys of the ``liqsignal`` section of a Freqtrade config.
SECTION_KEYS: tuple[str, ...] = ("engine", "guards", "alerts", "exchanges", "forecast")

_OI_COLS = ("open_interest_amount", "open_interest_value")

#: Columns ``add_liq_columns`` adds: ``FEATURE_COLUMNS`` without ``liq_dropped_usd``, a running
#: total since the map started, which depends on where the data starts (no fixed startup makes
#: it stable; ``freqtrade recursive-analysis`` shows it), so it stays out of strategy frames.
LIQ_COLUMNS: tuple[str, ...] = tuple(c for c in FEATURE_COLUMNS if c != "liq_dropped_usd")
#: With ``liqsignal.forecast.enabled`` (the default) ``add_liq_columns`` also adds these
#: (``liqsignal.forecast``) and rewrites ``liq_*_armed`` / ``liq_*_armed_score`` from them.
LIQ_FORECAST_COLUMNS: tuple[str, ...] = FORECAST_COLUMNS
#: Columns ``add_liq_columns`` adds with several ``liqsignal.exchanges``: ``LIQ_COLUMNS`` of the
#: aggregated map plus ``liq_n_exchanges`` (exchanges with a bar at that date).
AGGREGATED_COLUMNS: tuple[str, ...] = (*LIQ_COLUMNS, "liq_n_exchanges")

#: ``plot_config`` for ``freqtrade plot-dataframe``: cluster prices and cascade ends on the
#: price chart, densities, armed scores and cascade depth in subplots.
LIQ_PLOT_CONFIG: dict[str, Any] = {
    "main_plot": {
        "liq_long_cluster_price": {"color": "firebrick"},
        "liq_short_cluster_price": {"color": "seagreen"},
        "liq_long_cascade_end": {"color": "salmon"},
        "liq_short_cascade_end": {"color": "mediumaquamarine"},
    },
    "subplots": {
        "liq density (USD within band)": {
            "liq_long_density_usd": {"color": "firebrick", "type": "bar"},
            "liq_short_density_usd": {"color": "seagreen", "type": "bar"},
        },
        "liq armed": {
            "liq_long_armed_score": {"color": "firebrick"},
            "liq_short_armed_score": {"color": "seagreen"},
            "liq_flush": {"color": "black", "type": "bar"},
        },
        "liq cascade depth": {
            "liq_long_cascade_depth": {"color": "firebrick"},
            "liq_short_cascade_depth": {"color": "seagreen"},
        },
    },
}


@dataclass(frozen=True)
class LiqSettings:
    """The parsed ``liqsignal`` section: the engine's and the guards' settings."""

    engine: MapConfig
    guards: GuardConfig
    #: Keys set explicitly under ``liqsignal.guards`` (they win over hyperoptable parameters).
    guard_keys: frozenset[str] = frozenset()
    #: ``liqsignal.exchanges``, the bot's own exchange first (the reference); one entry: the
    #: single-exchange columns, several: the aggregated ones (``add_liq_columns``).
    exchanges: tuple[str, ...] = ()
    #: ``liqsignal.forecast``: the cascade-risk forecast's settings.
    forecast: ForecastConfig = field(default_factory=ForecastConfig)


def liq_settings(config: Mapping[str, Any] | MapConfig | None) -> LiqSettings:
    """Read the ``liqsignal`` section of a Freqtrade config (or take a ``MapConfig``).

    Raises ``ConfigError`` naming the key on bad input; a missing section means defaults.
    """
    if isinstance(config, MapConfig):
        return LiqSettings(config, GuardConfig())
    section = (config or {}).get("liqsignal") or {}
    if not isinstance(section, Mapping):
        raise ConfigError(f"liqsignal: expected a mapping, got {type(section).__name__}")
    unknown = sorted(set(section) - set(SECTION_KEYS))
    if unknown:
        raise ConfigError(f"liqsignal: unknown key(s) {unknown}; known keys: {list(SECTION_KEYS)}")
    guards = section.get("guards") or {}
    engine_section = section.get("engine") or {}
    if not isinstance(engine_section, Mapping):
        raise ConfigError(
            f"liqsignal.engine must be a mapping, got {type(engine_section).__name__}"
        )
    engine = dict(engine_section)
    exchange = (config or {}).get("exchange")
    if "exchange" not in engine and isinstance(exchange, Mapping) and exchange.get("name"):
        engine["exchange"] = str(exchange["name"])  # the bot's venue picks the formula
    own = str(exchange["name"]) if isinstance(exchange, Mapping) and exchange.get("name") else None
    return LiqSettings(
        MapConfig.from_dict(engine),
        GuardConfig.from_dict(guards),
        frozenset(guards) if isinstance(guards, Mapping) else frozenset(),
        _exchanges(section.get("exchanges"), own),
        ForecastConfig.from_dict(section.get("forecast")),
    )


def _exchanges(value: Any, own: str | None) -> tuple[str, ...]:
    """``liqsignal.exchanges`` as a tuple, the bot's exchange first (added when not listed)."""
    if value is None:
        names: list[str] = []
    elif isinstance(value, str) or not isinstance(value, Sequence):
        raise ConfigError(f"liqsignal.exchanges: expected a list of exchange ids, got {value!r}")
    else:
        names = [str(v).lower() for v in value]
    if not names:
        return (own,) if own else ()
    if own is not None:
        names = [own.lower()] + [n for n in names if n != own.lower()]
    return tuple(dict.fromkeys(names))


def liq_informative_pairs(
    pairs: Sequence[str], timeframe: str, *, funding_timeframe: str = "1h"
) -> list[tuple[str, str, str]]:
    """``(pair, timeframe, candle_type)`` for the open interest and funding of ``pairs``."""
    out: list[tuple[str, str, str]] = []
    for p in pairs:
        out.append((p, timeframe, "open_interest"))
        out.append((p, funding_timeframe, "funding_rate"))
    return out


def _warn_once(key: tuple[Any, ...], msg: str, *args: Any) -> None:
    if key not in _WARNED:
        _WARNED.add(key)
        logger.warning(msg, *args)


_WARNED: set[tuple[Any, ...]] = set()


def add_liq_columns(
    dataframe: pd.DataFrame,
    metadata: Mapping[str, Any],
    dp: Any,
    config: Mapping[str, Any] | MapConfig | None = None,
    *,
    timeframe: str | None = None,
    oi_timeframe: str | None = None,
    funding_timeframe: str = "1h",
    proxy: bool | None = None,
    datadir: str | Path | None = None,
) -> pd.DataFrame:
    """Return ``dataframe`` with open interest, funding and the ``LIQ_COLUMNS`` added.

    Open interest and funding come from Freqtrade's ``open_interest`` / ``funding_rate`` candle
    types via ``dp.get_pair_dataframe`` (files in backtests, the exchange cache that
    ``informative_pairs`` fills in dry/live runs), merged point in time. ``config`` is the
    strategy's ``self.config`` (its ``liqsignal.engine`` section is used) or a ``MapConfig``.
    ``proxy=None`` picks volume-proxy mode when no open interest is available for the pair
    (logged once). Bad engine settings raise ``ConfigError``; bad candles raise ``InputError``.

    When ``liqsignal.exchanges`` names several exchanges, the ``LIQ_COLUMNS`` are the aggregated
    map's over all of them (the bot's own exchange first, as reference) plus ``liq_n_exchanges``
    (``AGGREGATED_COLUMNS``), joined on the candle date: in backtest/hyperopt (and every mode
    that is not dry/live) from ``aggregated_features_from_store`` over the stored files under
    ``datadir`` (default: the parent of Freqtrade's ``datadir``, i.e. ``user_data/data``); in
    dry/live from the provider registered with ``set_provider`` (no I/O here), else from the
    stored files. ``liq_n_exchanges`` below the number of exchanges flags a bar where one was
    missing or stale. Open interest and funding of the bot's own exchange are merged as above.

    When the liquidation store (same ``datadir``) holds realized liquidations of the bot's
    exchange and pair, ``liq_real_long_usd`` / ``liq_real_short_usd`` are added: the USD
    liquidated on each side during the candle (NaN where unknown; see
    :func:`liqsignal.data.liquidations.realized_columns`).
    """
    pair = str(metadata["pair"])
    if timeframe is None:
        timeframe = _config_timeframe(config, dataframe)
    oi_tf = oi_timeframe or timeframe
    try:
        settings = liq_settings(config)
    except ConfigError as e:
        raise LiqConfigurationError(f"liqsignal section of the config: {e}") from None
    engine = settings.engine
    if engine.symbol != pair and ":" in pair:
        engine = engine.replace(symbol=pair)
    df = dataframe
    have_oi = [c for c in _OI_COLS if c in df.columns and df[c].notna().any()]
    if not have_oi and proxy is not True:
        oi = _pair_frame(dp, pair, oi_tf, "open_interest")
        cols = [c for c in _OI_COLS if oi is not None and c in oi.columns]
        if cols:
            df = merge_point_in_time(df, oi, cols, timeframe=timeframe, other_timeframe=oi_tf)
            have_oi = [c for c in cols if df[c].notna().any()]
    if "funding_rate" not in df.columns:
        fr = _pair_frame(dp, pair, funding_timeframe, "funding_rate")
        df = merge_point_in_time(
            df, fr, ["funding_rate"], timeframe=timeframe, other_timeframe=funding_timeframe
        )
    if len(settings.exchanges) > 1:
        out = _aggregated_columns(df, pair, dp, config, settings, engine, timeframe, datadir)
        if settings.forecast.enabled:
            out = _with_forecast(out, out, settings, engine, pair)
        out = _with_realized(out, pair, config, engine.exchange, timeframe, datadir)
        _remember_rows(dp, pair, out)
        return out
    use_proxy = proxy if proxy is not None else not have_oi
    if use_proxy and proxy is None:
        _warn_once(
            ("proxy", pair, timeframe),
            "liqsignal: no open interest for %s %s: liq columns in volume-proxy mode "
            "(lower fidelity; liq_proxy_mode = 1)",
            pair,
            timeframe,
        )
    cols = list(LIQ_COLUMNS) + (list(LIQ_FORECAST_COLUMNS) if settings.forecast.enabled else [])

    def liq_block() -> pd.DataFrame:
        feats = compute_features(df, engine, proxy=bool(use_proxy))
        assert isinstance(feats, pd.DataFrame)
        if settings.forecast.enabled:
            feats = _with_forecast(df, feats, settings, engine, pair)
        # one float block for the new columns: row reads in the guards stay cheap
        return pd.DataFrame(feats[cols].to_numpy(dtype="float64"), index=df.index, columns=cols)

    if _runmode(dp) in _FAST_MODES:  # hyperopt epochs: same candles, same columns
        key = (pair, timeframe, repr(engine), bool(use_proxy), repr(settings.forecast))
        liq = COLUMN_CACHE.frame(key, df, liq_block)
    else:
        liq = liq_block()
    keep = df.drop(columns=[c for c in cols if c in df.columns])
    out = pd.concat([keep, liq], axis=1)
    out = _with_realized(out, pair, config, engine.exchange, timeframe, datadir)
    _remember_rows(dp, pair, out)
    return out


def _with_realized(
    out: pd.DataFrame,
    pair: str,
    config: Any,
    exchange: str,
    timeframe: str,
    datadir: str | Path | None,
) -> pd.DataFrame:
    """``out`` with ``liq_real_long_usd`` / ``liq_real_short_usd`` (USD liquidated in each
    candle, NaN where unknown) when the store holds realized liquidations of the bot's exchange
    and pair; ``out`` unchanged otherwise. A store that cannot be read is logged once."""
    from liqsignal.data.liquidations import LiquidationStore, realized_columns

    root = _store_dir(config, datadir)
    try:
        if not LiquidationStore(root).has_data(exchange, pair):
            return out
        real = realized_columns(out, root, exchange, pair, timeframe)
    except (LiqsignalError, OSError) as e:
        _warn_once(("realized", exchange, pair), "liqsignal: realized liquidations of %s %s "
                   "not read: %s", exchange, pair, e)  # fmt: skip
        return out
    keep = out.drop(columns=[c for c in real.columns if c in out.columns])
    return pd.concat([keep, real], axis=1)


def _with_forecast(
    frame: pd.DataFrame, feats: pd.DataFrame, settings: LiqSettings, engine: MapConfig, pair: str
) -> pd.DataFrame:
    """``feats`` with the forecast columns (NaN and a warning when the model cannot be used).

    Never raises into ``populate_indicators``: an unexpected failure also leaves the map's
    columns in place with NaN probabilities, armed and scores (logged once)."""
    try:
        return apply_forecast(frame, feats, settings.forecast, engine=engine, context=f" {pair}")
    except Exception as e:  # the map's columns must survive a forecast bug
        _warn_once(("forecast", pair, type(e).__name__),
                   "liqsignal forecast %s failed (%s: %s): cascade probabilities are NaN",
                   pair, type(e).__name__, e)  # fmt: skip
        out = feats.copy()
        for side in ("long", "short"):
            for c in (f"liq_{side}_cascade_prob", f"liq_{side}_armed", f"liq_{side}_armed_score"):
                out[c] = math.nan
        return out


def _config_timeframe(config: Any, dataframe: pd.DataFrame) -> str:
    if isinstance(config, Mapping) and isinstance(config.get("timeframe"), str):
        return str(config["timeframe"])
    d = pd.DatetimeIndex(dataframe["date"])
    if len(d) < 2:
        raise ConfigError("add_liq_columns: pass timeframe= (the config has none)")
    step = int((d[1:] - d[:-1]).min().total_seconds())
    for unit, sec in sorted(TF_UNITS.items(), key=lambda kv: -kv[1]):
        if step % sec == 0:
            return f"{step // sec}{unit}"
    return f"{step}s"


def _pair_frame(dp: Any, pair: str, timeframe: str, candle_type: str) -> pd.DataFrame | None:
    if dp is None:
        return None
    try:
        frame = dp.get_pair_dataframe(pair, timeframe, candle_type=candle_type)
    except Exception as e:  # Freqtrade raises various errors for a missing file
        _warn_once(("frame", pair, timeframe, candle_type), "liqsignal: no %s %s %s data: %s",
                   pair, timeframe, candle_type, e)  # fmt: skip
        return None
    if frame is None or len(frame) == 0:
        return None
    return frame


# -- aggregated columns over several exchanges -------------------------------------------------

_LIVE_MODES = frozenset({"live", "dry_run"})
_FAST_MODES = frozenset({"backtest", "hyperopt"})
#: The liq columns computed in backtest/hyperopt, per pair, settings and candles (one map per
#: hyperopt worker process, not one per epoch).
COLUMN_CACHE = ColumnCache()
_PROVIDER: Any = None
_STORE_CACHE: OrderedDict[tuple[Any, ...], pd.DataFrame] = OrderedDict()
_STORE_CACHE_SIZE = 8


def set_provider(provider: Any) -> None:
    """Register the process's ``MapProvider`` (None: unregister) for dry/live runs.

    ``add_liq_columns`` then reads ``provider.features(market)`` / ``provider.status(market)``
    (no I/O); keep it refreshed outside the strategy callbacks, e.g. with
    ``refresh_in_background(provider)`` started in the strategy's ``bot_start``.
    """
    global _PROVIDER
    _PROVIDER = provider


def refresh_in_background(
    provider: Any, interval_s: float = 60.0, *, stop: threading.Event | None = None
) -> threading.Thread:
    """Start a daemon thread that runs ``await provider.refresh()`` every ``interval_s``.

    The thread owns its own event loop (Freqtrade's callbacks are not async), logs a failing
    refresh and carries on (the provider marks the failing exchange stale itself). Set
    ``stop`` to end it; the provider is closed on the way out.
    """
    stop = stop or threading.Event()

    async def loop() -> None:
        try:
            while not stop.is_set():
                try:
                    await provider.refresh()
                except Exception as e:  # one bad cycle must not end the thread
                    logger.warning("liqsignal: provider refresh failed: %s: %s",
                                   type(e).__name__, e)  # fmt: skip
                await asyncio.to_thread(stop.wait, interval_s)
        finally:
            close = getattr(provider, "aclose", None)
            if close is not None:
                await close()

    t = threading.Thread(target=asyncio.run, args=(loop(),), name="liqsignal-provider")
    t.daemon = True
    t.stop = stop  # type: ignore[attr-defined]
    t.start()
    return t


def _runmode(dp: Any) -> str:
    mode = getattr(dp, "runmode", None)
    return str(getattr(mode, "value", mode or ""))


def _store_dir(config: Any, datadir: str | Path | None) -> Path:
    """Freqtrade's ``user_data/data``: the parent of the per-exchange folders."""
    if datadir is not None:
        return Path(datadir)
    if isinstance(config, Mapping):
        if config.get("datadir"):
            return Path(str(config["datadir"])).parent
        return Path(str(config.get("user_data_dir") or "user_data")) / "data"
    return Path("user_data") / "data"


def _stored_aggregate(
    market: str,
    exchanges: tuple[str, ...],
    timeframe: str,
    root: Path,
    engine: MapConfig,
    until: pd.Timestamp | None = None,
) -> pd.DataFrame:
    from liqsignal.data.provider import aggregated_features_from_store  # lazy: import cycle

    if until is not None:  # live fallback: the files grow, no cache
        res = aggregated_features_from_store(market, exchanges, timeframe, root, engine,
                                             until=until)  # fmt: skip
        assert isinstance(res, pd.DataFrame)
        return res
    stamps = []
    for ex in exchanges:
        folder = root / ex / "futures"
        stamps.append(folder.stat().st_mtime_ns if folder.exists() else 0)
    key = (str(root.resolve()), market, exchanges, timeframe, repr(engine), tuple(stamps))
    hit = _STORE_CACHE.get(key)
    if hit is None:
        res = aggregated_features_from_store(market, exchanges, timeframe, root, engine)
        assert isinstance(res, pd.DataFrame)
        hit = res
        _STORE_CACHE[key] = hit
        while len(_STORE_CACHE) > _STORE_CACHE_SIZE:
            _STORE_CACHE.popitem(last=False)
    _STORE_CACHE.move_to_end(key)
    return hit


def _aggregated_columns(
    df: pd.DataFrame,
    pair: str,
    dp: Any,
    config: Any,
    settings: LiqSettings,
    engine: MapConfig,
    timeframe: str,
    datadir: str | Path | None,
) -> pd.DataFrame:
    """``df`` with ``AGGREGATED_COLUMNS`` joined on ``date`` (NaN where the map has no row)."""
    market = pair.split("/")[0]
    exchanges = settings.exchanges
    root = _store_dir(config, datadir)
    feats: pd.DataFrame | None = None
    if _runmode(dp) in _LIVE_MODES:
        provider = _PROVIDER
        if provider is not None and market in provider.markets:
            feats = provider.features(market)
            stale = sorted(ex for ex, st in provider.status(market).items() if st.stale)
            if stale:
                _warn_once(
                    ("stale", market, tuple(stale)),
                    "liqsignal: %s: %s stale in the provider, left out of the aggregate "
                    "(liq_n_exchanges shows it)",
                    market,
                    ", ".join(stale),
                )
            if len(feats) == 0:
                feats = None
        if feats is None:
            _warn_once(("noprovider", market),
                       "liqsignal: no provider features for %s: aggregated columns from the "
                       "stored files under %s", market, root)  # fmt: skip
            feats = _stored_aggregate(market, exchanges, timeframe, root, engine,
                                      until=pd.Timestamp.now(tz="UTC"))  # fmt: skip
    else:
        feats = _stored_aggregate(market, exchanges, timeframe, root, engine)
    dates = pd.DatetimeIndex(df["date"]).as_unit("ns")
    pos = pd.DatetimeIndex(feats.index).as_unit("ns").get_indexer(dates)
    cols = list(AGGREGATED_COLUMNS)
    vals = feats.reindex(columns=cols).to_numpy(dtype="float64")
    arr = np.full((len(df), len(cols)), np.nan)
    hit = pos >= 0
    arr[hit] = vals[pos[hit]]
    n = len(exchanges)
    if hit.any() and arr[np.flatnonzero(hit)[-1], -1] < n:
        _warn_once(("fewer", market, timeframe),
                   "liqsignal: %s %s: the last bar has %d of %d exchanges (%s)", market,
                   timeframe, int(arr[np.flatnonzero(hit)[-1], -1]), n,
                   ", ".join(exchanges))  # fmt: skip
    liq = pd.DataFrame(arr, index=df.index, columns=cols)
    keep = df.drop(columns=[c for c in cols if c in df.columns])
    return pd.concat([keep, liq], axis=1)


# -- per-pair guard rows for backtests (no dataframe slicing per callback) ---------------------

#: dp -> {pair: _Rows}: the guard columns as computed by the last ``add_liq_columns`` call.
_ROWS: weakref.WeakKeyDictionary[Any, dict[str, _Rows]] = weakref.WeakKeyDictionary()


@dataclass(eq=False)
class _Rows:
    dates: np.ndarray  # int64 ns, candle open times
    values: np.ndarray  # [n, len(_ROW_COLUMNS)] float64
    checked: bool = False  # compared with the analysed dataframe once
    bad: bool = False  # differed from it: use the DataProvider path
    secs: list[float] | None = None  # dates in float seconds (made on first use)


#: What the rows keep: the guard columns and the probabilities (NaN when not computed).
_ROW_COLUMNS: tuple[str, ...] = (*GUARD_COLUMNS, *FORECAST_GUARD_COLUMNS)
_GUARD_POS: dict[str, int] = {c: i for i, c in enumerate(_ROW_COLUMNS)}


def _same(a: Mapping[str, float] | None, b: Mapping[str, float] | None) -> bool:
    if a is None or b is None:
        return a is None and b is None
    return a.keys() == b.keys() and all(
        x == y or (math.isnan(x) and math.isnan(y)) for x, y in ((a[k], b[k]) for k in a)
    )


def _remember_rows(dp: Any, pair: str, out: pd.DataFrame) -> None:
    """Keep the guard columns of ``out`` per pair for the mixin (backtest/hyperopt only)."""
    if dp is None or _runmode(dp) not in _FAST_MODES:
        return
    try:
        store = _ROWS.setdefault(dp, {})
    except TypeError:  # not weak-referenceable
        return
    cols = [c for c in GUARD_COLUMNS if c in out.columns]
    if len(cols) != len(GUARD_COLUMNS):
        store.pop(pair, None)
        return
    dates = pd.DatetimeIndex(out["date"]).as_unit("ns").asi8
    if len(dates) > 1 and not bool(np.all(dates[1:] > dates[:-1])):
        store.pop(pair, None)
        return
    values = out.reindex(columns=list(_ROW_COLUMNS)).to_numpy(dtype="float64", copy=True)
    store[pair] = _Rows(np.asarray(dates), values)


class LiqGuardMixin:
    """Guards for an ``IStrategy``: put it before ``IStrategy`` in the bases.

    Callbacks, one line each::

        def confirm_trade_entry(self, pair, order_type, amount, rate, time_in_force,
                                current_time, entry_tag, side, **kwargs) -> bool:
            return self.liq_confirm_trade_entry(pair, rate, side, current_time)

        def leverage(self, pair, current_time, current_rate, proposed_leverage, max_leverage,
                     entry_tag, side, **kwargs) -> float:
            return self.liq_leverage(pair, current_time, current_rate, 10, max_leverage, side)

        def custom_stoploss(self, pair, trade, current_time, current_rate, current_profit,
                            after_fill, **kwargs) -> float | None:
            return self.liq_custom_stoploss(pair, trade, current_time, current_rate)

    They read the last analysed candle (``dp.get_analyzed_dataframe``; no network; in
    backtest/hyperopt the same row from arrays ``add_liq_columns`` kept, see
    ``_liq_fast_row``), never raise into the bot, and log each decision at INFO once per
    pair, guard and candle.
    Thresholds come from the ``liqsignal.guards`` config keys when set there, else from the
    hyperoptable parameters below (their defaults, a hyperopt epoch or the parameter file).
    """

    liq_guards_enabled: ClassVar[bool] = True
    #: Backtest/hyperopt: read the guard columns from arrays kept by ``add_liq_columns``
    #: instead of slicing the analysed dataframe per callback (same rows; see _liq_fast_row).
    liq_fast_rows: ClassVar[bool] = True

    liq_entry_distance_pct = DecimalParameter(
        0.2, 3.0, default=1.0, decimals=2, space="buy", optimize=True, load=True
    )
    liq_leverage_buffer_pct = DecimalParameter(
        0.0, 5.0, default=1.0, decimals=1, space="buy", optimize=True, load=True
    )
    liq_stop_min_score = DecimalParameter(
        0.0, 2.0, default=0.0, decimals=2, space="sell", optimize=True, load=True
    )
    liq_stop_buffer_pct = DecimalParameter(
        0.0, 1.0, default=0.2, decimals=2, space="sell", optimize=True, load=True
    )

    _LIQ_PARAMS: ClassVar[dict[str, str]] = {
        "entry_distance_pct": "liq_entry_distance_pct",
        "leverage_buffer_pct": "liq_leverage_buffer_pct",
        "stop_min_score": "liq_stop_min_score",
        "stop_buffer_pct": "liq_stop_buffer_pct",
    }

    # -- state (per instance, created lazily: Freqtrade builds strategies without our __init__)

    def _liq_state(self) -> dict[str, Any]:
        st = self.__dict__.get("_liq_state_d")
        if st is None:
            st = {"settings": None, "logged": {}, "bad": set(), "configs": {}, "rows": {}}
            self.__dict__["_liq_state_d"] = st
        return st

    def liq_guard_config(self) -> GuardConfig:
        """Effective guard settings: config keys, else the hyperoptable parameters."""
        st = self._liq_state()
        if st["settings"] is None:
            st["settings"] = liq_settings(getattr(self, "config", None))
        settings: LiqSettings = st["settings"]
        # fast path (every callback): the parameters' current values, looked up as they are
        params = self._LIQ_PARAMS.values()
        raw = (
            bool(self.liq_guards_enabled),
            *[getattr(getattr(self, attr, None), "value", None) for attr in params],
        )
        quick_cfgs: dict[Any, GuardConfig] = st.setdefault("quick", {})
        with contextlib.suppress(TypeError):  # an unhashable parameter value: no fast path
            hit = quick_cfgs.get(raw)
            if hit is not None:
                return hit
        changes: dict[str, Any] = {}
        for field_name, attr in self._LIQ_PARAMS.items():
            if field_name in settings.guard_keys:
                continue
            param = getattr(self, attr, None)
            value = getattr(param, "value", None)
            if isinstance(value, int | float):
                changes[field_name] = float(value)
        key = (tuple(sorted(changes.items())), bool(self.liq_guards_enabled))
        cached = st["configs"].get(key)
        if cached is None:
            cached = settings.guards.replace(**changes) if changes else settings.guards
            if not self.liq_guards_enabled:
                cached = cached.replace(enabled=False)
            st["configs"][key] = cached  # one per parameter combination (hyperopt epochs)
        with contextlib.suppress(TypeError):
            quick_cfgs[raw] = cached
        return cached

    def _liq_engine(self) -> MapConfig:
        if self._liq_state()["settings"] is None:
            self.liq_guard_config()
        engine: MapConfig = self._liq_state()["settings"].engine
        return engine

    def _liq_row(
        self,
        pair: str,
        now: datetime | None,
        cfg: GuardConfig,
        columns: tuple[str, ...] = GUARD_COLUMNS,
    ) -> tuple[Any, datetime | None, str]:
        tf = str(getattr(self, "timeframe", "1h"))
        tf_s = timeframe_seconds(tf)
        row: Any = None
        date: datetime | None = None
        fast = self._liq_fast_row(pair, now, tf, tf_s, columns)
        if fast is not None:
            row, date = fast
        else:
            row, date = self._liq_dp_row(pair, tf, columns)
        state = data_state(row, date, now, tf_s, cfg, columns)
        bad: set[tuple[str, str]] = self._liq_state()["bad"]
        if state != "ok":
            if (pair, state) not in bad:
                bad.add((pair, state))
                logger.warning(
                    "liqsignal guards: %s liq data for %s (last candle %s): fail-%s",
                    state,
                    pair,
                    date,
                    cfg.on_stale,
                )
        elif bad and any(p == pair for p, _ in bad):
            for key in [k for k in bad if k[0] == pair]:
                bad.discard(key)
            logger.info("liqsignal guards: liq data for %s is current again", pair)
        return row, date, state

    def _liq_dp_row(
        self, pair: str, tf: str, columns: tuple[str, ...]
    ) -> tuple[dict[str, float] | None, datetime | None]:
        """The last analysed candle as Freqtrade's DataProvider gives it (sliced in backtests)."""
        try:
            df, _ = self.dp.get_analyzed_dataframe(pair, tf)  # type: ignore[attr-defined]
            if df is not None and len(df) > 0:
                return self._liq_last_row(pair, df, columns)
        except Exception as e:  # never into the bot
            logger.debug("liqsignal: no analysed dataframe for %s: %s", pair, e)
        return None, None

    def _liq_fast_row(
        self, pair: str, now: datetime | None, tf: str, tf_s: int, columns: tuple[str, ...]
    ) -> tuple[dict[str, float] | None, datetime | None] | None:
        """Backtest/hyperopt: the last analysed candle from the arrays ``add_liq_columns`` kept.

        Freqtrade's backtest slice of the analysed dataframe ends at the last candle that has
        closed at ``current_time`` (``date + timeframe <= current_time``, also on detail
        candles); this finds the same candle by binary search instead of slicing the frame
        (about 30 us per call). The first call per pair and computation also takes the
        DataProvider path and compares the row and the slice's guard columns; on any
        difference (a strategy that changed the columns or rows afterwards) the pair keeps the
        DataProvider path. None: use the DataProvider path.
        """
        if now is None or now.tzinfo is None or not self.liq_fast_rows:
            return None
        dp = getattr(self, "dp", None)
        if dp is None:
            return None
        try:
            rows = _ROWS.get(dp, {}).get(pair)
        except TypeError:
            return None
        if rows is None or rows.bad:
            return None
        if rows.secs is None:
            rows.secs = (rows.dates.astype(np.float64) / 1e9).tolist()
        idx = bisect_right(rows.secs, now.timestamp() - tf_s) - 1
        cache: dict[str, Any] = self._liq_state().setdefault("fast", {})
        hit = cache.get(pair)
        if hit is None or hit[0] != idx or hit[1] is not rows:
            date = (
                pd.Timestamp(int(rows.dates[idx]), tz="UTC").to_pydatetime() if idx >= 0 else None
            )
            fresh: dict[str, float] = {}
            hit = (idx, rows, fresh, date)
            cache[pair] = hit
        row: dict[str, float] | None = None
        if idx >= 0:
            row = hit[2]
            assert row is not None
            for c in columns:
                if c not in row:
                    row[c] = float(rows.values[idx, _GUARD_POS[c]])
        if not rows.checked:
            return self._liq_check_rows(pair, tf, columns, rows, idx, row, hit[3])
        return row, hit[3]

    def _liq_check_rows(
        self,
        pair: str,
        tf: str,
        columns: tuple[str, ...],
        rows: _Rows,
        idx: int,
        row: dict[str, float] | None,
        date: datetime | None,
    ) -> tuple[dict[str, float] | None, datetime | None]:
        ref_row, ref_date = self._liq_dp_row(pair, tf, columns)
        try:
            df, _ = self.dp.get_analyzed_dataframe(pair, tf)  # type: ignore[attr-defined]
        except Exception:
            return ref_row, ref_date
        if df is None or len(df) == 0:
            return ref_row, ref_date  # nothing to compare with yet
        ok = ref_date == date and _same(ref_row, row)
        if ok:
            d = pd.DatetimeIndex(df["date"]).as_unit("ns").asi8
            pos = np.searchsorted(rows.dates, d)
            ok = bool(
                np.all(pos < len(rows.dates))
                and np.array_equal(rows.dates[np.minimum(pos, len(rows.dates) - 1)], d)
                and all(c in df.columns for c in GUARD_COLUMNS)
            )
            if ok:
                cols = [c for c in _ROW_COLUMNS if c in df.columns]
                have = df[cols].to_numpy(dtype="float64")
                want = rows.values[pos][:, [_GUARD_POS[c] for c in cols]]
                ok = bool(np.array_equal(have, want, equal_nan=True))
        if ok:
            rows.checked = True
        else:
            rows.bad = True
            logger.info("liqsignal guards: %s: analysed dataframe differs from the liq columns "
                        "computed; reading it through the DataProvider", pair)  # fmt: skip
        return ref_row, ref_date

    def _liq_last_row(
        self, pair: str, df: pd.DataFrame, columns: tuple[str, ...]
    ) -> tuple[dict[str, float], datetime | None]:
        """``columns`` of the last analysed row (a cheap read per column, cached per candle).

        The candle's date is None (missing data, ``on_stale``) unless the frame holds a datetime
        there: a string or a number in ``date`` is a malformed frame, not a date to parse."""
        cols = df.columns
        last = df.iat[-1, cols.get_loc("date")]  # .iat by position: no Series per read
        rows: dict[str, tuple[Any, int, dict[str, float], datetime | None]] = self._liq_state()[
            "rows"
        ]
        hit = rows.get(pair)
        if hit is None or hit[0] != last or hit[1] != len(df):
            when = (
                pd.Timestamp(last).to_pydatetime()
                if isinstance(last, datetime | np.datetime64)
                else None
            )
            hit = (last, len(df), {}, when)
            rows[pair] = hit
        row = hit[2]
        for c in columns:
            if c not in row and c in cols:
                row[c] = float(df.iat[-1, cols.get_loc(c)])
        return row, hit[3]

    def _liq_log(
        self, pair: str, guard: str, side: str, date: datetime | None, reason: str, figures: Any,
        level: int = logging.INFO,
    ) -> None:  # fmt: skip
        backtest = _runmode(getattr(self, "dp", None)) in _FAST_MODES
        if (
            level == logging.INFO
            and backtest
            and not self.liq_guard_config().log_backtest_decisions
        ):
            level = logging.DEBUG  # backtests: hundreds of lines at ~1 ms each
        if not logger.isEnabledFor(level):
            return
        logged: dict[tuple[str, str, str], Any] = self._liq_state()["logged"]
        key = (pair, guard, side)
        mark = (date, reason)
        if logged.get(key) == mark:
            return
        logged[key] = mark
        figs = " ".join(f"{k}={v:.6g}" for k, v in dict(figures).items() if isinstance(v, float))
        logger.log(
            level,
            "liqsignal guard %s %s %s candle=%s: %s %s",
            guard,
            pair,
            side,
            date.isoformat() if date else None,
            reason,
            figs,
        )

    def _liq_tally(
        self, guard: str, pair: str, side: str, date: datetime | None, acted: bool, **kw: Any
    ) -> None:
        """Count the decision for the guard report printed when a backtest ends
        (``liqsignal.guard_report``; backtesting only)."""
        if _runmode(getattr(self, "dp", None)) != "backtest":
            return
        st = self._liq_state()
        t = st.get("tally")
        if t is None:
            from liqsignal.guard_report import tally

            t = st["tally"] = tally(type(self).__name__, getattr(self, "config", None) or {})
        t.record(guard, pair, side, date, acted, **kw)

    def liq_start_alerts(self, provider: Any = None) -> Any:
        """From ``bot_start``: start the alert service (``liqsignal.alerts``; docs/alerts.md)
        in a background thread in dry/live runs, sharing ``provider``. With the bot's own
        Telegram on, alerts go out through ``self.dp.send_msg`` (needs
        ``telegram.allow_custom_messages``) instead of a second bot. Returns the service (call
        ``.stop()`` in ``bot_cleanup``) or None (other run modes, alerts disabled)."""
        if _runmode(getattr(self, "dp", None)) not in ("dry_run", "live"):
            return None
        from liqsignal.alerts.botmsg import bot_sender_for
        from liqsignal.alerts.service import start_in_background

        config = getattr(self, "config", None) or {}
        sender = bot_sender_for(config, getattr(self, "dp", None))
        return start_in_background(config, provider=provider, sender=sender)

    # -- the three callbacks

    def liq_confirm_trade_entry(
        self, pair: str, rate: float, side: str, current_time: datetime | None = None, **kwargs: Any
    ) -> bool:
        """True to let the entry through; False when a dense pocket on its side is near."""
        try:
            cfg = self.liq_guard_config()
            if not cfg.enabled:
                return True
            row, date, state = self._liq_row(pair, current_time, cfg, _columns(cfg))
            d = entry_decision(row, _side(side), float(rate), cfg, state=state)
            verdict = ("allow: " if d.allowed else "refuse: ") + d.reason
            self._liq_log(pair, "entry", _side(side), date, verdict, d.figures)
            self._liq_tally("entry", pair, _side(side), date, not d.allowed, rate=float(rate))
            return d.allowed
        except Exception as e:  # never into the bot
            return self._liq_error("entry", pair, e, default=self._liq_fail_open())

    def liq_leverage(
        self,
        pair: str,
        current_time: datetime | None,
        current_rate: float,
        proposed_leverage: float,
        max_leverage: float,
        side: str,
        **kwargs: Any,
    ) -> float:
        """``proposed_leverage`` capped so the position liquidates beyond the cascade."""
        fallback = _leverage_fallback(proposed_leverage, max_leverage)
        try:
            cfg = self.liq_guard_config()
            if not cfg.enabled:
                return fallback
            row, date, state = self._liq_row(pair, current_time, cfg, _columns(cfg))
            engine = self._liq_engine()
            ex_section = (getattr(self, "config", None) or {}).get("exchange")
            name = ex_section.get("name") if isinstance(ex_section, Mapping) else None
            exchange = str(name or engine.exchange)
            d = leverage_decision(
                row, _side(side), float(current_rate), proposed_leverage, max_leverage, cfg,
                state=state, exchange=exchange, symbol=pair,
                position_notional=engine.position_notional, tiers_file=engine.tiers_file,
            )  # fmt: skip
            self._liq_log(pair, "leverage", _side(side), date, d.reason, d.figures)
            capped = float(d.leverage) < fallback - 1e-9
            self._liq_tally("leverage", pair, _side(side), date, capped, trade_open=current_time)
            return float(d.leverage)
        except Exception as e:  # never into the bot
            default = fallback if self._liq_fail_open() else 1.0
            return self._liq_error("leverage", pair, e, default=default)

    def liq_custom_stoploss(
        self,
        pair: str,
        trade: Any,
        current_time: datetime | None,
        current_rate: float,
        **kwargs: Any,
    ) -> float | None:
        """A tighter stop (negative ratio) when a pocket on the trade's side is armed, else None.

        None keeps the strategy's own stoploss. With ``stop_mode = "exit"`` the stop is put
        ``stop_min_distance_pct`` from the rate, so the trade leaves on the next adverse tick.
        """
        try:
            cfg = self.liq_guard_config()
            if not cfg.enabled:
                return None
            side = "short" if getattr(trade, "is_short", False) else "long"
            # most candles have nothing armed: read three values first, the rest only if needed
            quick = (f"liq_{side}_armed", "liq_long_total_usd", "liq_short_total_usd")
            row, date, state = self._liq_row(pair, current_time, cfg, quick)
            if state == "ok" and row.get(quick[0], 0.0) > 0:
                row, date, state = self._liq_row(pair, current_time, cfg)
            d = stop_decision(row, side, float(current_rate), cfg, state=state)
            level = logging.INFO if d.action != "keep" else logging.DEBUG
            self._liq_log(pair, "stop", side, date, f"{d.action}: {d.reason}", d.figures, level)
            opened = getattr(trade, "open_date_utc", None)
            self._liq_tally("stop", pair, side, date, d.action != "keep", trade_open=opened)
            if d.action == "keep":
                return None
            lev = getattr(trade, "leverage", None) or 1.0
            ratio = d.stoploss_ratio(current_rate, side, lev)
            return ratio if ratio is not None and -1000.0 <= ratio < 0.0 else None
        except Exception as e:  # never into the bot
            return self._liq_error("stop", pair, e, default=None)

    def _liq_fail_open(self) -> bool:
        try:
            return bool(self.liq_guard_config().fail_open)
        except Exception:  # the config itself is bad: fail open, the warning says why
            return True

    def _liq_error(self, guard: str, pair: str, e: Exception, *, default: Any) -> Any:
        with contextlib.suppress(Exception):  # logging must not raise into the bot either
            _warn_once(("error", guard, str(pair), type(e).__name__),
                       "liqsignal guard %s for %s failed (%s: %s); answering %r",
                       guard, pair, type(e).__name__, e, default)  # fmt: skip
        return default


def _leverage_fallback(proposed: Any, max_leverage: Any) -> float:
    """min(proposed, max) within [1, 1000]; 1.0 when either is not a usable number."""
    try:
        v = min(float(proposed), float(max_leverage))
    except Exception:
        return 1.0
    return min(max(v, 1.0), 1000.0) if math.isfinite(v) else 1.0


def _columns(cfg: GuardConfig) -> tuple[str, ...]:
    """The columns a guard reads: the probabilities too when a probability rule is on."""
    return (*GUARD_COLUMNS, *FORECAST_GUARD_COLUMNS) if cfg.uses_forecast else GUARD_COLUMNS


def _side(side: str) -> str:
    return "short" if str(side).lower() == "short" else "long"
