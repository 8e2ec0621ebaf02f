"""The ``liq_*`` columns for Freqtrade strategies: ``add_liq_columns`` and what it needs.

- ``liq_informative_pairs(pairs, timeframe)``: the ``open_interest`` and ``funding_rate`` candle
  types to list in ``informative_pairs()`` so dry/live runs download them.
- ``add_liq_columns(dataframe, metadata, dp, config)``: one call in ``populate_indicators``;
  with several ``liqsignal.exchanges`` the aggregated map's columns (stored files in backtests,
  the provider registered with ``set_provider`` in dry/live; ``refresh_in_background``).
- ``LiqContext`` / ``liq_context(dp)``: what is kept per bot between callbacks.

Imports no part of Freqtrade but its exception type (when Freqtrade is installed): the guard
mixin is in :mod:`liqsignal.guard_mixin`; :mod:`liqsignal.freqtrade` gathers both for strategies.
The point-in-time convention of every merge is in :mod:`liqsignal.data.timeline`.
"""

from __future__ import annotations

import asyncio
import logging
import math
import threading
import weakref
from collections import OrderedDict
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from liqsignal.column_cache import ColumnCache
from liqsignal.config import SECTION_KEYS, MapConfig, Settings, load_settings
from liqsignal.data.timeline import TF_UNITS, merge_point_in_time
from liqsignal.exceptions import ConfigError, LiqsignalError, traceback_of
from liqsignal.features import FEATURE_COLUMNS, compute_features
from liqsignal.forecast import FORECAST_COLUMNS, apply_forecast
from liqsignal.guards import FORECAST_GUARD_COLUMNS, GUARD_COLUMNS

try:  # Freqtrade prints its OperationalException as one line and exits 2
    from freqtrade.exceptions import OperationalException as _FtOperationalException
except ImportError:  # pragma: no cover - without Freqtrade the columns still work

    class _FtOperationalException(Exception):  # type: ignore[no-redef]
        pass


class LiqConfigurationError(ConfigError, _FtOperationalException):
    """A bad ``liqsignal`` section met inside Freqtrade. Freqtrade prints an
    ``OperationalException`` as one line and exits 2, instead of "Fatal exception!" and a
    traceback (its own ``ConfigurationError`` would exit 0); still a ``ConfigError``."""


__all__ = [
    "AGGREGATED_COLUMNS",
    "COLUMN_CACHE",
    "LIQ_COLUMNS",
    "LIQ_FORECAST_COLUMNS",
    "LIQ_PLOT_CONFIG",
    "SECTION_KEYS",
    "LiqConfigurationError",
    "LiqContext",
    "LiqSettings",
    "add_liq_columns",
    "liq_context",
    "liq_informative_pairs",
    "liq_settings",
    "refresh_in_background",
    "reset_liq_context",
    "set_provider",
]

#: The Freqtrade-facing modules log as ``liqsignal.freqtrade`` (one name to filter in a bot).
logger = logging.getLogger("liqsignal.freqtrade")


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


#: The parsed ``liqsignal`` section (``liqsignal.config.Settings``): engine, guards, exchanges,
#: forecast, alerts.
LiqSettings = Settings


def liq_settings(config: Mapping[str, Any] | MapConfig | None) -> Settings:
    """Read the ``liqsignal`` section of a Freqtrade config (or take a ``MapConfig``) with
    ``liqsignal.config.load_settings``, as the alert service and the CLI do.

    Raises ``ConfigError`` naming the key on bad input; a missing section means defaults.
    """
    if isinstance(config, MapConfig):
        return Settings.of_engine(config)
    return load_settings(config, in_freqtrade=True)


def liq_informative_pairs(
    pairs: Sequence[str], timeframe: str, *, funding_timeframe: str = "1h"
) -> list[tuple[str, str, str]]:
    """``(pair, timeframe, candle_type)`` for the open interest and funding of ``pairs``."""
    out: list[tuple[str, str, str]] = []
    for p in pairs:
        out.append((p, timeframe, "open_interest"))
        out.append((p, funding_timeframe, "funding_rate"))
    return out


# -- the per-bot context ----------------------------------------------------------------------


@dataclass(eq=False)
class _Rows:
    dates: np.ndarray  # int64 ns, candle open times
    values: np.ndarray  # [n, len(ROW_COLUMNS)] float64
    checked: bool = False  # compared with the analysed dataframe once
    bad: bool = False  # differed from it: use the DataProvider path
    secs: list[float] | None = None  # dates in float seconds (made on first use)


#: What the rows keep: the guard columns and the probabilities (NaN when not computed).
ROW_COLUMNS: tuple[str, ...] = (*GUARD_COLUMNS, *FORECAST_GUARD_COLUMNS)
GUARD_POS: dict[str, int] = {c: i for i, c in enumerate(ROW_COLUMNS)}


@dataclass(eq=False)
class LiqContext:
    """What liqsignal keeps for one bot (one Freqtrade ``DataProvider``) between callbacks.

    ``provider``: the live ``MapProvider`` of dry/live runs (``set_provider``); ``rows``: per
    pair, the guard columns ``add_liq_columns`` computed last (the mixin's backtest fast path);
    ``store_cache``: aggregated columns from stored files, by market, settings and file stamps;
    ``warned``: the keys of warnings already logged. Made on first use per DataProvider (it goes
    with it), or attached in ``bot_start`` by ``LiqGuardMixin.liq_attach``; calls without a
    DataProvider share the process context (``liq_context(None)``).
    """

    provider: Any = None
    rows: dict[str, _Rows] = field(default_factory=dict)
    store_cache: OrderedDict[tuple[Any, ...], pd.DataFrame] = field(default_factory=OrderedDict)
    warned: set[tuple[Any, ...]] = field(default_factory=set)

    def warn_once(
        self, key: tuple[Any, ...], msg: str, *args: Any, exc: BaseException | None = None
    ) -> None:
        """Log ``msg`` at WARNING the first time ``key`` is seen in this context; with ``exc``
        an unexpected error (not liqsignal's, not a file or Freqtrade error) adds its
        traceback."""
        if key not in self.warned:
            self.warned.add(key)
            logger.warning(msg, *args, exc_info=exc if unexpected(exc) else None)


def unexpected(exc: BaseException | None) -> bool:
    """Whether ``exc`` is a bug to show with its traceback rather than a known failure
    (liqsignal's own errors, I/O errors, Freqtrade's OperationalException) told in one line."""
    return traceback_of(exc, (_FtOperationalException,)) is not None


_PROCESS = LiqContext()
_CONTEXTS: weakref.WeakKeyDictionary[Any, LiqContext] = weakref.WeakKeyDictionary()


def liq_context(dp: Any = None) -> LiqContext:
    """The context of DataProvider ``dp`` (made on first use), or the process context for
    ``None`` or a DataProvider that cannot be weakly referenced."""
    if dp is None:
        return _PROCESS
    try:
        ctx = _CONTEXTS.get(dp)
        if ctx is None:
            ctx = _CONTEXTS[dp] = LiqContext()
        return ctx
    except TypeError:  # not weak-referenceable
        return _PROCESS


def reset_liq_context(dp: Any = None) -> None:
    """Forget what the context of ``dp`` (None: the process context and every bot's) holds."""
    if dp is None:
        _CONTEXTS.clear()
        _PROCESS.__init__()  # type: ignore[misc]
    else:
        _CONTEXTS.pop(dp, None)


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
    ctx = liq_context(dp)
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
        oi = _pair_frame(dp, pair, oi_tf, "open_interest", ctx)
        cols = [c for c in _OI_COLS if oi is not None and c in oi.columns]
        if cols:
            df = merge_point_in_time(df, oi, cols, timeframe=timeframe, other_timeframe=oi_tf)
            have_oi = [c for c in cols if df[c].notna().any()]
    if "funding_rate" not in df.columns:
        fr = _pair_frame(dp, pair, funding_timeframe, "funding_rate", ctx)
        df = merge_point_in_time(
            df, fr, ["funding_rate"], timeframe=timeframe, other_timeframe=funding_timeframe
        )
    if len(settings.exchanges) > 1:
        out = _aggregated_columns(df, pair, dp, config, settings, engine, timeframe, datadir, ctx)
        if settings.forecast.enabled:
            out = _with_forecast(out, out, settings, engine, pair, ctx)
        out = _with_realized(out, pair, config, engine.exchange, timeframe, datadir, ctx)
        _remember_rows(dp, pair, out, ctx)
        return out
    use_proxy = proxy if proxy is not None else not have_oi
    if use_proxy and proxy is None:
        ctx.warn_once(
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
            feats = _with_forecast(df, feats, settings, engine, pair, ctx)
        # one float block for the new columns: row reads in the guards stay cheap
        return pd.DataFrame(feats[cols].to_numpy(dtype="float64"), index=df.index, columns=cols)

    if _runmode(dp) in _FAST_MODES:  # hyperopt epochs: same candles, same columns
        key = (pair, timeframe, repr(engine), bool(use_proxy), repr(settings.forecast))
        liq = COLUMN_CACHE.frame(key, df, liq_block)
    else:
        liq = liq_block()
    keep = df.drop(columns=[c for c in cols if c in df.columns])
    out = pd.concat([keep, liq], axis=1)
    out = _with_realized(out, pair, config, engine.exchange, timeframe, datadir, ctx)
    _remember_rows(dp, pair, out, ctx)
    return out


def _with_realized(
    out: pd.DataFrame,
    pair: str,
    config: Any,
    exchange: str,
    timeframe: str,
    datadir: str | Path | None,
    ctx: LiqContext,
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
        ctx.warn_once(("realized", exchange, pair), "liqsignal: realized liquidations of %s %s "
                   "not read: %s", exchange, pair, e)  # fmt: skip
        return out
    keep = out.drop(columns=[c for c in real.columns if c in out.columns])
    return pd.concat([keep, real], axis=1)


def _with_forecast(
    frame: pd.DataFrame,
    feats: pd.DataFrame,
    settings: LiqSettings,
    engine: MapConfig,
    pair: str,
    ctx: LiqContext,
) -> pd.DataFrame:
    """``feats`` with the forecast columns (NaN and a warning when the model cannot be used).

    Never raises into ``populate_indicators``: an unexpected failure also leaves the map's
    columns in place with NaN probabilities, armed and scores (logged once)."""
    try:
        return apply_forecast(frame, feats, settings.forecast, engine=engine, context=f" {pair}")
    except Exception as e:  # the map's columns must survive a forecast bug
        ctx.warn_once(("forecast", pair, type(e).__name__),
                   "liqsignal forecast %s failed (%s: %s): cascade probabilities are NaN",
                   pair, type(e).__name__, e, exc=e)  # fmt: skip
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


def _pair_frame(
    dp: Any, pair: str, timeframe: str, candle_type: str, ctx: LiqContext
) -> pd.DataFrame | None:
    if dp is None:
        return None
    try:
        frame = dp.get_pair_dataframe(pair, timeframe, candle_type=candle_type)
    except Exception as e:  # Freqtrade raises various errors for a missing file
        ctx.warn_once(("frame", pair, timeframe, candle_type), "liqsignal: no %s %s %s data: %s",
                   pair, timeframe, candle_type, e, exc=e)  # fmt: skip
        return None
    if frame is None or len(frame) == 0:
        return None
    return frame


# -- aggregated columns over several exchanges -------------------------------------------------

_LIVE_MODES = frozenset({"live", "dry_run"})
_FAST_MODES = frozenset({"backtest", "hyperopt"})
#: The liq columns computed in backtest/hyperopt, per pair, settings and candles: a process
#: cache (one map per hyperopt worker process, not one per epoch; the epochs' strategies and
#: DataProviders are new each time, so it cannot live in their context).
COLUMN_CACHE = ColumnCache()
_STORE_CACHE_SIZE = 8


def set_provider(provider: Any, dp: Any = None) -> None:
    """Register a ``MapProvider`` (None: unregister) for dry/live runs: on the context of the
    bot's DataProvider ``dp`` (``LiqGuardMixin.liq_attach`` does this from ``bot_start``),
    or, without ``dp``, on the process context every bot without its own provider reads.

    ``add_liq_columns`` then reads ``provider.features(market)`` / ``provider.status(market)``
    (no I/O); keep it refreshed outside the strategy callbacks, e.g. with
    ``refresh_in_background(provider)`` started in the strategy's ``bot_start``.
    """
    liq_context(dp).provider = provider


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
                                   type(e).__name__, e,
                                   exc_info=e if unexpected(e) else None)  # fmt: skip
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
    *,
    ctx: LiqContext,
) -> pd.DataFrame:
    from liqsignal.data.provider import aggregated_features_from_store

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
    hit = ctx.store_cache.get(key)
    if hit is None:
        res = aggregated_features_from_store(market, exchanges, timeframe, root, engine)
        assert isinstance(res, pd.DataFrame)
        hit = res
        ctx.store_cache[key] = hit
        while len(ctx.store_cache) > _STORE_CACHE_SIZE:
            ctx.store_cache.popitem(last=False)
    ctx.store_cache.move_to_end(key)
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
    ctx: LiqContext,
) -> pd.DataFrame:
    """``df`` with ``AGGREGATED_COLUMNS`` joined on ``date`` (NaN where the map has no row)."""
    market = pair.split("/")[0]
    exchanges = settings.exchanges
    root = _store_dir(config, datadir)
    feats: pd.DataFrame | None = None
    if _runmode(dp) in _LIVE_MODES:
        provider = ctx.provider if ctx.provider is not None else _PROCESS.provider
        if provider is not None and market in provider.markets:
            feats = provider.features(market)
            stale = sorted(ex for ex, st in provider.status(market).items() if st.stale)
            if stale:
                ctx.warn_once(
                    ("stale", market, tuple(stale)),
                    "liqsignal: %s: %s stale in the provider, left out of the aggregate "
                    "(liq_n_exchanges shows it)",
                    market,
                    ", ".join(stale),
                )
            if len(feats) == 0:
                feats = None
        if feats is None:
            ctx.warn_once(("noprovider", market),
                       "liqsignal: no provider features for %s: aggregated columns from the "
                       "stored files under %s", market, root)  # fmt: skip
            feats = _stored_aggregate(market, exchanges, timeframe, root, engine,
                                      until=pd.Timestamp.now(tz="UTC"), ctx=ctx)  # fmt: skip
    else:
        feats = _stored_aggregate(market, exchanges, timeframe, root, engine, ctx=ctx)
    dates = pd.DatetimeIndex(df["date"]).as_unit("ns")
    pos = pd.DatetimeIndex(feats.index).as_unit("ns").get_indexer(dates)
    cols = list(AGGREGATED_COLUMNS)
    vals = feats.reindex(columns=cols).to_numpy(dtype="float64")
    arr = np.full((len(df), len(cols)), np.nan)
    hit = pos >= 0
    arr[hit] = vals[pos[hit]]
    n = len(exchanges)
    if hit.any() and arr[np.flatnonzero(hit)[-1], -1] < n:
        ctx.warn_once(("fewer", market, timeframe),
                   "liqsignal: %s %s: the last bar has %d of %d exchanges (%s)", market,
                   timeframe, int(arr[np.flatnonzero(hit)[-1], -1]), n,
                   ", ".join(exchanges))  # fmt: skip
    liq = pd.DataFrame(arr, index=df.index, columns=cols)
    keep = df.drop(columns=[c for c in cols if c in df.columns])
    return pd.concat([keep, liq], axis=1)


def _remember_rows(dp: Any, pair: str, out: pd.DataFrame, ctx: LiqContext) -> None:
    """Keep the guard columns of ``out`` per pair for the mixin (backtest/hyperopt only)."""
    if dp is None or _runmode(dp) not in _FAST_MODES or ctx is _PROCESS:
        return
    store = ctx.rows
    cols = [c for c in GUARD_COLUMNS if c in out.columns]
    if len(cols) != len(GUARD_COLUMNS):
        store.pop(pair, None)
        return
    dates = pd.DatetimeIndex(out["date"]).as_unit("ns").asi8
    if len(dates) > 1 and not bool(np.all(dates[1:] > dates[:-1])):
        store.pop(pair, None)
        return
    values = out.reindex(columns=list(ROW_COLUMNS)).to_numpy(dtype="float64", copy=True)
    store[pair] = _Rows(np.asarray(dates), values)
