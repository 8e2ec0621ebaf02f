"""Keep aggregated liquidation maps of many markets up to date from several exchanges, live.

``MapProvider([MarketSpec("BTC", ("binance", "bybit", "okx"))], datadir=...)`` owns one
:class:`~liqsignal.engine.LiquidationMap` per market, on one grid over that market's exchanges.
Each ``await provider.refresh()`` asks every (market, exchange) only for what is new since the
stored rows (closed candles, open interest, funding, Binance taker buy volume), merges it into the
Freqtrade-layout store (:mod:`liqsignal.data.store`) and advances the map incrementally with the
new closed bars. An exchange that fails, or has no new closed bar ``stale_after_bars`` bar-lengths
after one was due, is marked stale: it contributes nothing new (its bars are missing, so its levels
fade), :meth:`MapProvider.snapshot` leaves its levels out, :meth:`MapProvider.status` flags it, and
the other exchanges carry on. Bars that arrive after the map has passed their date (an exchange
that recovers and back-fills, or one that was a bar late) are replayed from the map's checkpoint
(its state at the newest bar every exchange had reached) with the stored rows after it, or, where
no checkpoint covers them, the market's map is rebuilt from every stored row; either way the live
map equals :func:`aggregated_features_from_store`, the same computation on stored files that
backtests use, bit for bit.

Point in time: a candle enters the map only once closed (``date + timeframe <= now``) and once the
open interest at its close is known (an open-interest row dated ``D`` is known at ``D + its
timeframe``, the convention of :func:`liqsignal.data.timeline.merge_point_in_time`); funding rows
follow the same rule at 1h.
"""

from __future__ import annotations

import asyncio
import copy
import dataclasses
import logging
import math
import threading
import time
import zlib
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import ccxt
import numpy as np
import pandas as pd

from liqsignal import nb
from liqsignal.config import MapConfig
from liqsignal.data.exchanges import EXCHANGES, ExchangeClient, RetryPolicy, timeframe_to_ms
from liqsignal.data.store import FeatherStore, read_file
from liqsignal.engine import LiquidationMap, MapSnapshot
from liqsignal.exceptions import ConfigError, DataError, traceback_of
from liqsignal.features import FEATURE_COLUMNS, stack_inputs

__all__ = [
    "LIVE_HEATMAP_FRAMES",
    "MARKET_COLUMNS",
    "PROVIDER_COLUMNS",
    "ExchangeStatus",
    "MapProvider",
    "MarketSpec",
    "RefreshReport",
    "StoredMarket",
    "aggregated_features_from_store",
    "map_stored_market",
    "oi_timeframe_for",
    "read_stored_market",
]

logger = logging.getLogger(__name__)

#: Columns of :meth:`MapProvider.features` and :func:`aggregated_features_from_store`: the
#: single-exchange ``FEATURE_COLUMNS`` plus ``liq_n_exchanges``, how many exchanges had a bar
#: in that row (fewer than configured: an exchange was missing or stale at that bar).
#: Then the reference exchange's bar at that date (the first configured exchange with a bar
#: there, the kernel's reference price): ``MARKET_COLUMNS``, for messages and pictures.
MARKET_COLUMNS: tuple[str, ...] = (
    "open",
    "high",
    "low",
    "close",
    "volume",
    "open_interest_value",
    "funding_rate",
)
PROVIDER_COLUMNS: tuple[str, ...] = (*FEATURE_COLUMNS, "liq_n_exchanges", *MARKET_COLUMNS)
_MARKET_INPUTS = (nb.I_OPEN, nb.I_HIGH, nb.I_LOW, nb.I_CLOSE, nb.I_VOL)

#: Heatmap frames a live map keeps by default (``MapProvider(heatmap_frames=...)``; None keeps
#: the engine config's ``heatmap_frames``): 24 frames x 2 sides x 240 rows x 8 bytes = 92 KiB per
#: map instead of 7.4 MiB at the engine default of 2000. The heatmap is drawn only by pictures of
#: the map (``liqsignal map``); the map's levels and ``liq_*`` columns do not depend on it.
LIVE_HEATMAP_FRAMES = 24

FUNDING_TF = "1h"  # the store keeps funding under Freqtrade's funding_fee_timeframe
_OI_COLS = ["open_interest_amount", "open_interest_value"]
_TYPES = ("futures", "open_interest", "funding_rate", "taker_buy")


# ---------------------------------------------------------------------------------------------
# public value types


@dataclass(frozen=True)
class MarketSpec:
    """One market (``"BTC"``, or a full ccxt symbol) across exchanges, at one timeframe."""

    market: str
    exchanges: tuple[str, ...]
    timeframe: str = "1h"

    def __post_init__(self) -> None:
        if not isinstance(self.market, str) or not self.market:
            raise ConfigError(f"MarketSpec.market: expected a name like 'BTC', got {self.market!r}")
        if isinstance(self.exchanges, str) or not self.exchanges:
            raise ConfigError(
                f"MarketSpec.exchanges for {self.market}: expected a tuple of exchange names, "
                f"got {self.exchanges!r}"
            )
        object.__setattr__(self, "exchanges", tuple(self.exchanges))
        if len(set(self.exchanges)) != len(self.exchanges):
            raise ConfigError(f"MarketSpec.exchanges for {self.market}: duplicate exchange")
        for ex in self.exchanges:
            if ex not in EXCHANGES:
                raise ConfigError(
                    f"MarketSpec.exchanges for {self.market}: unknown {ex!r}; "
                    f"known: {', '.join(EXCHANGES)}"
                )
        timeframe_to_ms(self.timeframe)


@dataclass(frozen=True)
class ExchangeStatus:
    """Health of one (market, exchange) feed as of the last refresh."""

    exchange: str
    symbol: str | None  # ccxt symbol, None until resolved
    stale: bool  # left out of the aggregate
    last_bar: pd.Timestamp | None  # open time of the newest bar that can enter the map
    error: str | None  # last error text (exchange and market named), None when fine
    since: pd.Timestamp | None  # when it became stale


@dataclass(frozen=True)
class RefreshReport:
    """What one :meth:`MapProvider.refresh` did."""

    started: pd.Timestamp  # the provider clock at the start
    wall_s: float
    engine_s: float  # time inside LiquidationMap.update (incremental, replays, rebuilds) and copies
    requests: int  # HTTP requests made (ccxt calls, retries included)
    new_bars: dict[tuple[str, str], int]  # (market, exchange) -> closed candles added
    errors: dict[tuple[str, str], str]
    became_stale: list[tuple[str, str]]
    recovered: list[tuple[str, str]]
    #: markets whose map was rebuilt from every stored row (first build; late bars that no
    #: checkpoint covers)
    rebuilt: list[str] = field(default_factory=list)
    #: seconds spent merging fetched rows into the store (atomic feather writes)
    store_s: float = 0.0
    #: markets whose late bars (an exchange a bar late, a recovery's back-fill) entered by
    #: restoring the map's checkpoint and replaying the stored rows after it: the result of
    #: a rebuild, at the engine cost of the bars since the checkpoint
    replayed: list[str] = field(default_factory=list)


# ---------------------------------------------------------------------------------------------
# shared by the live provider and the backtest path


def oi_timeframe_for(exchange: str, timeframe: str) -> str | None:
    """Open-interest timeframe used for candles of ``timeframe`` on ``exchange`` (None: the
    exchange has no OI history, the map runs in volume-proxy mode there). Same rule as
    ``ExchangeClient.oi_timeframe``: the timeframe itself, else the largest accepted divisor."""
    spec = EXCHANGES[exchange]
    if not spec.oi_timeframes:
        return None
    if timeframe in spec.oi_timeframes:
        return timeframe
    target = timeframe_to_ms(timeframe)
    fits = [
        tf
        for tf in spec.oi_timeframes
        if timeframe_to_ms(tf) <= target and target % timeframe_to_ms(tf) == 0
    ]
    return max(fits, key=timeframe_to_ms) if fits else None


def _market_config(config: MapConfig, symbol: str | None) -> MapConfig:
    """The market's engine settings: the symbol (for leverage tiers) set as add_liq_columns does."""
    if symbol and ":" in symbol and config.symbol != symbol:
        return config.replace(symbol=symbol)
    return config


@dataclass
class _Frames:
    """Stored rows of one (market, exchange), as the store has them (sorted, unique dates)."""

    candles: pd.DataFrame
    oi: pd.DataFrame
    funding: pd.DataFrame
    taker: pd.DataFrame | None


def _exchange_frame(
    fr: _Frames,
    timeframe: str,
    oi_tf: str | None,
    *,
    now: pd.Timestamp | None,
    after: pd.Timestamp | None = None,
) -> pd.DataFrame:
    """The candles of one exchange that can enter the map, with OI, funding, taker merged.

    A candle is ready when closed (``date + tf <= now``; ``now=None``: every stored candle) and,
    unless the exchange is in proxy mode (``oi_tf`` None), when the open interest at its close is
    known (the newest OI row is dated at or after ``date + tf - oi_tf``). Only candles dated after
    ``after`` are returned (the OI and funding lookups still use every stored row): the live
    provider's few new rows, merged in numpy (:func:`_merge_known`, the same values as
    :func:`~liqsignal.data.timeline.merge_point_in_time`, which merges full frames).
    """
    from liqsignal.data.timeline import merge_point_in_time

    tf_ns = timeframe_to_ms(timeframe) * 1_000_000
    cand = fr.candles
    dates = _ns(cand["date"])
    limit: int | None = None if now is None else _utc(now).value
    oi = fr.oi
    if oi_tf is not None:
        last = _last_oi(oi)
        if last is None:
            return cand.iloc[0:0].reset_index(drop=True)
        known = last + timeframe_to_ms(oi_tf) * 1_000_000
        limit = known if limit is None else min(limit, known)
    lo = 0 if after is None else _utc(after).value
    if len(dates) < 2 or bool((dates[1:] > dates[:-1]).all()):  # sorted: the ready rows are a slice
        a = 0 if after is None else int(np.searchsorted(dates, lo, "right"))
        b = len(dates) if limit is None else int(np.searchsorted(dates + tf_ns, limit, "right"))
        df = cand.iloc[a : max(a, b)].reset_index(drop=True)
    else:
        keep = np.ones(len(cand), dtype=bool)
        if limit is not None:
            keep &= dates + tf_ns <= limit
        if after is not None:
            keep &= dates > lo
        df = cand.loc[keep].reset_index(drop=True)
    if df.empty:
        return df
    has_taker = fr.taker is not None and len(fr.taker)
    if after is None:
        if oi_tf is not None:
            oi = oi.dropna(subset=_OI_COLS, how="all")
            df = merge_point_in_time(df, oi, _OI_COLS, timeframe=timeframe, other_timeframe=oi_tf)
        df = merge_point_in_time(
            df, fr.funding, ["funding_rate"], timeframe=timeframe, other_timeframe=FUNDING_TF
        )
        if has_taker:
            assert fr.taker is not None
            tk = fr.taker[["date", "taker_buy_volume"]]
            df = df.merge(tk, on="date", how="left")
        return df
    left = _ns(df["date"])
    if oi_tf is not None:
        otf_ns = timeframe_to_ms(oi_tf) * 1_000_000
        for col, vals in zip(
            _OI_COLS, _merge_known(left + tf_ns, oi, _OI_COLS, otf_ns), strict=True
        ):
            df[col] = vals
    (df["funding_rate"],) = _merge_known(
        left + tf_ns, fr.funding, ["funding_rate"], timeframe_to_ms(FUNDING_TF) * 1_000_000
    )
    if has_taker:
        assert fr.taker is not None
        df["taker_buy_volume"] = _same_date(left, fr.taker, "taker_buy_volume")
    return df


def _ns(dates: Any) -> np.ndarray:
    """Dates (a column or index, UTC) as int64 nanoseconds since the epoch."""
    return np.asarray(pd.DatetimeIndex(dates).as_unit("ns").asi8)


def _last_oi(oi: pd.DataFrame) -> int | None:
    """Date (ns) of the newest OI row with a value, None when there is none."""
    if oi.empty:
        return None
    have = ~(
        np.isnan(oi[_OI_COLS[0]].to_numpy(dtype=np.float64))
        & np.isnan(oi[_OI_COLS[1]].to_numpy(dtype=np.float64))
    )
    idx = np.flatnonzero(have)
    return int(_ns(oi["date"])[idx[-1]]) if len(idx) else None


def _merge_known(
    left_known: np.ndarray, other: pd.DataFrame | None, columns: Sequence[str], otf_ns: int
) -> list[np.ndarray]:
    """``merge_point_in_time`` in numpy: per left row (known at ``left_known``, ns: its close),
    the values of the newest row of ``other`` known by then (dated ``D``, known at ``D +
    otf_ns``; rows with every column NaN skipped), NaN before the first."""
    n = len(left_known)
    if other is None or len(other) == 0 or not set(columns) <= set(other.columns):
        return [np.full(n, np.nan) for _ in columns]
    vals = [other[c].to_numpy(dtype=np.float64) for c in columns]
    have = ~np.logical_and.reduce([np.isnan(v) for v in vals])
    known = _ns(other["date"])[have] + otf_ns
    vals = [v[have] for v in vals]
    if len(known) > 1 and not bool((known[1:] >= known[:-1]).all()):
        order = np.argsort(known, kind="stable")
        known, vals = known[order], [v[order] for v in vals]
    pos = np.searchsorted(known, left_known, "right") - 1
    hit = pos >= 0
    safe = np.where(hit, pos, 0)
    return [np.where(hit, v[safe], np.nan) if len(v) else np.full(n, np.nan) for v in vals]


def _same_date(left: np.ndarray, other: pd.DataFrame, column: str) -> np.ndarray:
    """``column`` of the ``other`` row on each left date (ns; a left join on ``date``), NaN
    where there is none; ``other``'s dates are unique (the store's rows)."""
    dates = _ns(other["date"])
    vals = other[column].to_numpy(dtype=np.float64)
    if len(dates) > 1 and not bool((dates[1:] > dates[:-1]).all()):
        order = np.argsort(dates, kind="stable")
        dates, vals = dates[order], vals[order]
    pos = np.minimum(np.searchsorted(dates, left, "left"), max(len(dates) - 1, 0))
    hit = (dates[pos] == left) if len(dates) else np.zeros(len(left), dtype=bool)
    return np.where(hit, vals[pos] if len(vals) else np.nan, np.nan)


def _seconds(dates: pd.DatetimeIndex) -> np.ndarray:
    return np.asarray(dates.as_unit("ns").asi8, dtype=np.float64) / 1e9


def _wrap(out: np.ndarray, dates: pd.DatetimeIndex, x: np.ndarray, proxy_all: bool) -> pd.DataFrame:
    cols: dict[str, np.ndarray] = {name: out[i] for i, name in enumerate(nb.OUT_NAMES)}
    cols["liq_proxy_mode"] = np.full(out.shape[1], 1.0 if proxy_all else 0.0)
    have = np.isfinite(x[:, :, nb.I_CLOSE])
    cols["liq_n_exchanges"] = have.sum(axis=1).astype(np.float64)
    # the reference exchange's bar (the first exchange with a bar at that date, as in the
    # kernel): prices, volume, OI in USD and funding, so readers need no second trip to disk
    rows = np.arange(len(x))
    ref = np.argmax(have, axis=1) if len(x) else np.zeros(0, dtype=np.int64)
    for name, i in zip(MARKET_COLUMNS[:5], _MARKET_INPUTS, strict=True):
        cols[name] = x[rows, ref, i]
    cols["open_interest_value"] = x[rows, ref, nb.I_OI] * x[rows, ref, nb.I_CLOSE]
    cols["funding_rate"] = x[rows, ref, nb.I_FUND]
    return pd.DataFrame(cols, index=pd.DatetimeIndex(dates, name="date"))


def _validate(frame: pd.DataFrame, name: str) -> None:
    from liqsignal.features import validate_frame

    if len(frame):
        validate_frame(frame, need_oi=False, name=name)


def _read_frames(
    store: FeatherStore, exchange: str, symbol: str, timeframe: str, oi_tf: str | None
) -> _Frames:
    return _Frames(
        candles=store.read(exchange, symbol, timeframe, "futures"),
        oi=(
            store.read(exchange, symbol, oi_tf, "open_interest")
            if oi_tf is not None
            else read_file(Path("/nonexistent"), "open_interest")
        ),
        funding=store.read(exchange, symbol, FUNDING_TF, "funding_rate"),
        taker=(
            store.read(exchange, symbol, timeframe, "taker_buy")
            if exchange in EXCHANGES and EXCHANGES[exchange].taker_buy
            else None
        ),
    )


def _store_symbol(store: FeatherStore, exchange: str, market: str, timeframe: str) -> str | None:
    """The stored pair of ``market`` on ``exchange``: the first settle (the client's order)
    whose candle file exists; a full symbol is taken as it is."""
    if "/" in market:
        return market
    spec = EXCHANGES.get(exchange)
    for settle in spec.settles if spec is not None else ("USDT", "USDC", "USD"):
        sym = f"{market.upper()}/{settle}:{settle}"
        if store.path(exchange, sym, timeframe, "futures").exists():
            return sym
    return None


@dataclass(frozen=True)
class StoredMarket:
    """One market's stored rows per exchange, merged point in time: the map's input.

    ``frames[i]`` is exchange ``exchanges[i]``'s candles with open interest, funding and taker
    buy volume merged as of each candle's close (None: no stored candles there); ``proxies[i]``
    says whether that exchange runs in volume-proxy mode (no open-interest history).
    """

    market: str
    timeframe: str
    exchanges: tuple[str, ...]
    symbols: tuple[str | None, ...]
    proxies: tuple[bool, ...]
    frames: tuple[pd.DataFrame | None, ...]

    @property
    def symbol(self) -> str | None:
        """The first exchange's stored pair (for leverage tiers), None if none is stored."""
        return next((s for s in self.symbols if s), None)

    def present(self) -> dict[str, pd.DataFrame]:
        """Exchange -> frame for the exchanges with at least one candle, in the given order."""
        return {
            e: f
            for e, f in zip(self.exchanges, self.frames, strict=True)
            if f is not None and len(f)
        }


def read_stored_market(
    market: str,
    exchanges: Sequence[str],
    timeframe: str,
    datadir: str | Path,
    *,
    until: pd.Timestamp | str | None = None,
    missing_oi: str = "skip",
) -> StoredMarket:
    """Read ``market`` on ``exchanges`` from Freqtrade-layout files under ``datadir``.

    Files under ``<datadir>/<exchange>/futures/``: candles at ``timeframe``, open interest at
    :func:`oi_timeframe_for`, funding at 1h, Binance taker buy volume; each merged point in time
    (:func:`liqsignal.data.timeline.merge_point_in_time`). ``until`` leaves out candles closing
    after it. An exchange without candle files gives ``None`` (logged). An exchange whose OI
    history exists upstream but has no stored OI file: ``missing_oi="skip"`` (the live
    provider's rule, so backtests equal live: its candles cannot enter the map) or ``"proxy"``
    (run it in volume-proxy mode, as ``liqsignal map`` does on candles alone). Corrupt files
    raise ``CorruptFileError``; invalid rows raise ``InputError`` naming the exchange.
    """
    if missing_oi not in ("skip", "proxy"):
        raise ConfigError(f"missing_oi: expected 'skip' or 'proxy', got {missing_oi!r}")
    names = tuple(exchanges)
    if not names or len(set(names)) != len(names):
        raise ConfigError(f"read_stored_market {market}: expected distinct exchanges, got {names}")
    store = FeatherStore(datadir)
    now = None if until is None else _utc(until)
    frames: list[pd.DataFrame | None] = []
    proxies: list[bool] = []
    symbols: list[str | None] = []
    for ex in names:
        # a folder liqsignal does not download for (a replay's, an import): OI at the candle
        # timeframe if stored
        oi_tf = oi_timeframe_for(ex, timeframe) if ex in EXCHANGES else timeframe
        sym = _store_symbol(store, ex, market, timeframe)
        symbols.append(sym)
        if sym is None:
            logger.warning("%s %s: no stored %s candles under %s", ex, market, timeframe, datadir)
            proxies.append(oi_tf is None)
            frames.append(None)
            continue
        fr = _read_frames(store, ex, sym, timeframe, oi_tf)
        if oi_tf is not None and fr.oi.empty and len(fr.candles):
            path = store.path(ex, sym, oi_tf, "open_interest")
            if missing_oi == "proxy":
                logger.info("%s %s: no stored open interest (%s): volume-proxy mode", ex, sym, path)
                oi_tf = None
            else:
                logger.warning(
                    "%s %s: no stored open interest (%s): its candles cannot enter the map",
                    ex,
                    sym,
                    path,
                )
        proxies.append(oi_tf is None)
        f = _exchange_frame(fr, timeframe, oi_tf, now=now)
        _validate(f, f"{ex} {sym} {timeframe}")
        frames.append(f)
    return StoredMarket(market, timeframe, names, tuple(symbols), tuple(proxies), tuple(frames))


def map_stored_market(
    stored: StoredMarket, config: MapConfig | Mapping[str, Any] | None = None
) -> tuple[pd.DataFrame, LiquidationMap]:
    """The aggregated map of a :class:`StoredMarket`: ``PROVIDER_COLUMNS`` indexed by ``date``
    (the union of the exchanges' bar dates) and the final engine state. The live provider runs
    the same steps on the rows it holds, so its features equal these on the same rows."""
    cfg = config if isinstance(config, MapConfig) else MapConfig.from_dict(config)
    lmap = LiquidationMap(
        _market_config(cfg, stored.symbol), exchanges=stored.exchanges, proxy=stored.proxies
    )
    dates, x = stack_inputs(stored.frames, stored.proxies)
    out = lmap.update(_seconds(dates), x)
    return _wrap(out, dates, x, all(stored.proxies)), lmap


def aggregated_features_from_store(
    market: str,
    exchanges: Sequence[str],
    timeframe: str,
    datadir: str | Path,
    config: MapConfig | Mapping[str, Any] | None = None,
    *,
    until: pd.Timestamp | str | None = None,
    return_map: bool = False,
) -> pd.DataFrame | tuple[pd.DataFrame, LiquidationMap]:
    """The aggregated ``liq_*`` columns of ``market`` over ``exchanges`` from stored files:
    :func:`read_stored_market` then :func:`map_stored_market` (the backtest twin of
    :meth:`MapProvider.features`)."""
    stored = read_stored_market(market, exchanges, timeframe, datadir, until=until)
    res, lmap = map_stored_market(stored, config)
    return (res, lmap) if return_map else res


def _utc(value: pd.Timestamp | str) -> pd.Timestamp:
    ts = pd.Timestamp(value)
    return ts.tz_localize("UTC") if ts.tzinfo is None else ts.tz_convert("UTC")


# ---------------------------------------------------------------------------------------------
# live provider


@dataclass
class _Feed:
    """One (market, exchange): its stored rows in memory and its health."""

    exchange: str
    oi_tf: str | None
    symbol: str | None = None
    frames: _Frames | None = None
    fed_until: pd.Timestamp | None = None  # newest bar of this exchange inside the map
    stale: bool = False
    since: pd.Timestamp | None = None
    error: str | None = None
    #: provider time of the last funding answer, less ``funding_phase`` (every row dated up to
    #: then is stored)
    funding_asked: pd.Timestamp | None = None
    #: how long after a settlement (or after the hour, while the interval is unknown) this feed
    #: asks for funding: spreads the markets' requests over ``FUNDING_SPREAD`` (_funding_phase)
    funding_phase: pd.Timedelta = field(default_factory=pd.Timedelta)
    #: open time of the earliest bar that rows merged since the last advance can change (a
    #: bar reads an OI or funding row dated D from D + its timeframe - the bar's timeframe on)
    touched: pd.Timestamp | None = None

    @property
    def proxy(self) -> bool:
        return self.oi_tf is None


@dataclass
class _Checkpoint:
    """The market's map as it was after its bars up to ``until``, from which late bars are
    replayed instead of rebuilding from every stored row.

    Kept at the newest bar every exchange has reached (the oldest ``fed_until``): any bar an
    exchange adds later is after its ``fed_until``, so after ``until``, and the state at
    ``until`` holds every stored row up to it, as a rebuild's would. ``lmap`` None: the live
    map itself is at ``until`` (copied only once it would move past a lagging exchange).
    Dropped when rows merged later change a bar up to ``until`` (a late funding, OI or taker
    row): the next late bar then rebuilds."""

    until: pd.Timestamp
    lmap: LiquidationMap | None
    fed_until: dict[str, pd.Timestamp | None]


@dataclass
class _Market:
    spec: MarketSpec
    config: MapConfig
    feeds: dict[str, _Feed]
    lmap: LiquidationMap | None = None
    map_until: pd.Timestamp | None = None
    feats: pd.DataFrame | None = None
    checkpoint: _Checkpoint | None = None
    #: open time of the first bar in the map that rows merged later change (the map differs
    #: from a rebuild from there on; no checkpoint is taken from it until a rebuild or replay)
    tainted: pd.Timestamp | None = None
    #: Held while the map advances and its features are published, and by every reader
    #: (features, snapshot, price, on_liquidation): a reader in another thread (the strategy,
    #: while the refresh runs in the background) never sees a new map with old features.
    lock: threading.RLock = field(default_factory=threading.RLock, repr=False)


@dataclass(frozen=True)
class _Run:
    """What :meth:`MapProvider._run` fed the map: the bar dates, kernel inputs and outputs,
    seconds in the engine (updates and the checkpoint copy), the checkpoint to keep and each
    exchange's newest bar in the map."""

    dates: pd.DatetimeIndex
    x: np.ndarray
    out: np.ndarray
    engine_s: float
    checkpoint: _Checkpoint | None
    fed_until: dict[str, pd.Timestamp | None]


#: Funding requests of the markets are spread over this long after each settlement: a row
#: dated D is first read by the bar that closes at D + 1h (``FUNDING_TF``), so any request up
#: to then is in time (10 minutes kept for slow refreshes).
FUNDING_SPREAD = pd.Timedelta(minutes=50)


def _funding_phase(exchange: str, market: str) -> pd.Timedelta:
    """A fixed delay in [0, ``FUNDING_SPREAD``) per (exchange, market), the same in every run:
    500 markets due at one settlement are asked ~10 per minute instead of all in one refresh."""
    span = int(FUNDING_SPREAD.total_seconds())
    return pd.Timedelta(seconds=zlib.crc32(f"{exchange}|{market}".encode()) % span)


def _funding_due(
    funding: pd.DataFrame,
    now: pd.Timestamp,
    asked: pd.Timestamp | None = None,
    phase: pd.Timedelta | None = None,
) -> bool:
    """Whether a new funding row may exist: the interval seen between the last stored rows
    (at least 1h, at most 8h) has passed since the newest one. Skips a request per refresh
    between settlements; a row is fetched at the first refresh after its time, before any
    candle that reads it (one closing an hour after it) is ready. With fewer than two stored
    rows the interval is unknown: due when no answer came in the last hour (``asked``: the
    time of the last answer, which held every row dated up to then; None: none yet), the
    latest that still has every row a ready candle reads (one closing by ``now`` reads rows
    dated up to ``now - 1h``). ``phase`` (< 1h, :func:`_funding_phase`) delays the request
    after a settlement; with fewer than two rows the caller records ``asked`` that much
    earlier than the answer instead, so the hourly requests keep their phase too."""
    if len(funding) < 2:
        return asked is None or now >= asked + pd.Timedelta(hours=1)
    d = pd.DatetimeIndex(funding["date"].iloc[-3:])
    gap = min((d[1:] - d[:-1]).min(), pd.Timedelta(hours=8))
    return bool(now >= d[-1] + max(gap, pd.Timedelta(hours=1)) + (phase or pd.Timedelta(0)))


def _touch(feed: _Feed, clean: pd.DataFrame, ctype: str, ftf: str, tf_ms: int) -> None:
    """Note in ``feed.touched`` the earliest bar that the merged rows ``clean`` of ``ctype``
    (at timeframe ``ftf``) can change: a candle or taker row its own bar, an OI or funding row
    dated D the bars opened from D + ``ftf`` - the bar's timeframe on (point in time)."""
    if not len(clean):
        return
    first = pd.Timestamp(clean["date"].min())
    if ctype in ("open_interest", "funding_rate"):
        first += pd.Timedelta(milliseconds=timeframe_to_ms(ftf) - tf_ms)
    if feed.touched is None or first < feed.touched:
        feed.touched = first


def _log_if_bug(e: BaseException, what: str) -> None:
    """Log ``e`` with its traceback when it is a bug (not a data, I/O or ccxt error, which the
    feed's status already tells in one line)."""
    if traceback_of(e, (ccxt.BaseError,)) is not None:
        logger.error("%s", what, exc_info=e)


def _default_clock() -> pd.Timestamp:
    return pd.Timestamp.now(tz="UTC")


def _merge_rows(old: pd.DataFrame, new: pd.DataFrame) -> pd.DataFrame:
    """The store's merge rule in memory: union, new rows win on equal dates, sorted."""
    if new.empty:
        return old
    if old.empty:
        return new.reset_index(drop=True)
    d_new = new["date"].array.as_unit("ms").asi8
    last = old["date"].array[-1:].as_unit("ms").asi8[0]
    if d_new[0] > last and (len(d_new) < 2 or bool((d_new[1:] > d_new[:-1]).all())):
        return pd.concat([old, new], ignore_index=True)  # the usual case: rows after the last
    merged = pd.concat([old, new], ignore_index=True)
    return (
        merged.drop_duplicates(subset="date", keep="last")
        .sort_values("date", kind="stable")
        .reset_index(drop=True)
    )


class MapProvider:
    """Aggregated liquidation maps of several markets, each over several exchanges, kept live.

    ``config`` is the engine's (one for all markets, or a mapping market -> MapConfig); its
    ``symbol`` is set per market. ``ccxt_config`` maps exchange -> ccxt settings (e.g. a local
    replay's urls). ``stale_after_bars``: an exchange with no new closed bar this many bar-lengths
    after one was due is stale (a failing one is stale at once). ``history_bars``: how far back an
    empty store is filled, and how many rows :meth:`features` returns. ``max_concurrency``: HTTP
    requests in flight per exchange. ``clock`` gives "now" (UTC); it decides which candles are
    closed. ``retry`` and ``history_limits`` are passed to each :class:`ExchangeClient`.
    ``heatmap_frames``: heatmap history per live map (default ``LIVE_HEATMAP_FRAMES``; None
    keeps the engine config's). Fetched rows are stored through the store's journal
    (:meth:`FeatherStore.append` / :meth:`~FeatherStore.commit`): durable once per refresh with
    one fsync per folder, folded into the feather files by threshold and at :meth:`aclose`.
    ``candle_streams``: exchanges whose closed candles come from their kline streams (ccxt.pro,
    :mod:`liqsignal.data.candle_streams`), REST only for what a stream lacks; ``stream_config``
    their :class:`~liqsignal.data.streams.StreamConfig` (see "streamed candles" below).
    """

    def __init__(
        self,
        markets: Sequence[MarketSpec],
        *,
        config: MapConfig | Mapping[str, MapConfig] | None = None,
        datadir: str | Path = "user_data/data",
        ccxt_config: Mapping[str, Mapping[str, Any]] | None = None,
        stale_after_bars: float = 2.0,
        history_bars: int = 1000,
        max_concurrency: int = 8,
        clock: Callable[[], pd.Timestamp] | None = None,
        retry: RetryPolicy | None = None,
        history_limits: bool = True,
        feed_timeout_s: float | None = None,
        heatmap_frames: int | None = LIVE_HEATMAP_FRAMES,
        candle_streams: Sequence[str] = (),
        stream_config: Any = None,
    ) -> None:
        if not markets:
            raise ConfigError("MapProvider: no markets given")
        if feed_timeout_s is not None and not (
            isinstance(feed_timeout_s, int | float) and 0 < feed_timeout_s <= 86_400
        ):
            raise ConfigError(
                f"feed_timeout_s: expected seconds in (0, 86400], got {feed_timeout_s!r}"
            )
        #: One (market, exchange) fetch may take at most this long per refresh (None: no limit);
        #: a slower venue is marked stale for the round instead of delaying every market.
        self.feed_timeout_s = feed_timeout_s
        names = [m.market for m in markets]
        if len(set(names)) != len(names):
            raise ConfigError(f"MapProvider: a market is listed twice in {names}")
        if not (isinstance(stale_after_bars, int | float) and stale_after_bars >= 0):
            raise ConfigError(f"stale_after_bars: expected a number >= 0, got {stale_after_bars!r}")
        if not isinstance(history_bars, int) or history_bars < 1:
            raise ConfigError(f"history_bars: expected an integer >= 1, got {history_bars!r}")
        if heatmap_frames is not None and not (
            isinstance(heatmap_frames, int) and 1 <= heatmap_frames <= 50_000
        ):
            raise ConfigError(
                f"heatmap_frames: expected an integer in [1, 50000] or None, got {heatmap_frames!r}"
            )
        ccxt_config = dict(ccxt_config or {})
        unknown = sorted(set(ccxt_config) - set(EXCHANGES))
        if unknown:
            raise ConfigError(f"ccxt_config: keys {unknown} are not exchanges")
        self.store = FeatherStore(datadir)
        self.stale_after_bars = float(stale_after_bars)
        self.history_bars = history_bars
        self.clock = clock or _default_clock
        self._markets: dict[str, _Market] = {}
        for spec in markets:
            if isinstance(config, Mapping):
                cfg = config.get(spec.market, MapConfig())
            else:
                cfg = config or MapConfig()
            if heatmap_frames is not None:
                cfg = cfg.replace(heatmap_frames=heatmap_frames)
            feeds = {
                ex: _Feed(
                    ex,
                    oi_timeframe_for(ex, spec.timeframe),
                    funding_phase=_funding_phase(ex, spec.market),
                )
                for ex in spec.exchanges
            }
            self._markets[spec.market] = _Market(spec, cfg, feeds)
        used = sorted({ex for m in markets for ex in m.exchanges})
        self._clients = {
            ex: ExchangeClient(
                ex,
                ccxt_config.get(ex),
                retry=retry,
                max_concurrency=max_concurrency,
                history_limits=history_limits,
            )
            for ex in used
        }
        self._lock = asyncio.Lock()
        self._appended: dict[tuple[str, str], list[Path]] = {}  # files queued this refresh
        self._init_candle_streams(candle_streams, stream_config, ccxt_config)

    # -- lifecycle --------------------------------------------------------------------------
    async def __aenter__(self) -> MapProvider:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.aclose()

    async def aclose(self) -> None:
        """Close the exchange clients (their HTTP sessions) and fold the store's journaled
        rows into the feather files (:meth:`FeatherStore.close`)."""
        try:
            await self._close_candle_streams()
            for client in self._clients.values():
                await client.close()
        finally:
            await asyncio.to_thread(self.store.close)

    @property
    def markets(self) -> list[str]:
        return list(self._markets)

    # -- refresh ----------------------------------------------------------------------------
    async def refresh(self) -> RefreshReport:
        """Fetch what is new for every (market, exchange), store it, advance the maps."""
        async with self._lock:
            return await self._refresh()

    async def _refresh(self) -> RefreshReport:
        t0 = time.perf_counter()
        now = _utc(self.clock())
        calls0 = sum(c.stats.calls for c in self._clients.values())
        new_bars: dict[tuple[str, str], int] = {}
        errors: dict[tuple[str, str], str] = {}
        store_s = [0.0]
        jobs = [
            self._fetch_feed_bounded(m, feed, now, new_bars, errors, store_s)
            for m in self._markets.values()
            for feed in m.feeds.values()
        ]
        self._appended = {}
        await asyncio.gather(*jobs)
        await self._commit(new_bars, errors, store_s)
        became: list[tuple[str, str]] = []
        recovered: list[tuple[str, str]] = []
        rebuilt: list[str] = []
        replayed: list[str] = []
        engine_s = 0.0
        for m in self._markets.values():
            for feed in m.feeds.values():
                key = (m.spec.market, feed.exchange)
                was = feed.stale
                self._update_health(m, feed, now, errors.get(key))
                if feed.stale and not was:
                    became.append(key)
                    logger.warning(
                        "%s %s: stale (%s); left out of the aggregate",
                        feed.exchange,
                        m.spec.market,
                        feed.error or "no new closed bar",
                    )
                elif was and not feed.stale:
                    recovered.append(key)
                    logger.info("%s %s: recovered", feed.exchange, m.spec.market)
            engine_s += self._advance(m, now, rebuilt, replayed)
        calls = sum(c.stats.calls for c in self._clients.values()) - calls0
        return RefreshReport(
            started=now,
            wall_s=time.perf_counter() - t0,
            engine_s=engine_s,
            requests=calls,
            new_bars=new_bars,
            errors=errors,
            became_stale=became,
            recovered=recovered,
            rebuilt=rebuilt,
            store_s=store_s[0],
            replayed=replayed,
        )

    async def _commit(
        self,
        new_bars: dict[tuple[str, str], int],
        errors: dict[tuple[str, str], str],
        store_s: list[float],
    ) -> None:
        """Make this refresh's rows durable (the store's journal, one fsync per folder; files
        that reached their threshold are compacted). A feed whose rows could not be stored is
        an error this round and forgets its in-memory rows: the next refresh reloads the store
        and asks the exchange again for what is missing."""
        t = time.perf_counter()
        try:
            failed = await asyncio.to_thread(self.store.commit)
        finally:
            store_s[0] += time.perf_counter() - t
        if not failed:
            return
        for m in self._markets.values():
            for feed in m.feeds.values():
                key = (m.spec.market, feed.exchange)
                bad = [p for p in self._appended.get(key, ()) if p in failed]
                if bad:
                    errors[key] = self._error_text(feed, m.spec.market, failed[bad[0]])
                    new_bars[key] = 0
                    feed.frames = None
                    feed.fed_until = None
                    feed.funding_asked = None
                    m.lmap = None  # rebuilt from the store once it has the rows again
                    m.checkpoint = None

    async def _fetch_feed_bounded(
        self,
        m: _Market,
        feed: _Feed,
        now: pd.Timestamp,
        new_bars: dict[tuple[str, str], int],
        errors: dict[tuple[str, str], str],
        store_s: list[float],
    ) -> None:
        """``_fetch_feed`` within ``feed_timeout_s``: a venue that does not answer in time is an
        error for this round (the feed goes stale as usual), the others are not held up."""
        coro = self._fetch_feed(m, feed, now, new_bars, errors, store_s)
        if self.feed_timeout_s is None:
            await coro
            return
        try:
            await asyncio.wait_for(coro, self.feed_timeout_s)
        except TimeoutError:
            key = (m.spec.market, feed.exchange)
            errors[key] = (
                f"{feed.exchange} {m.spec.market}: no answer within {self.feed_timeout_s:g} s "
                "(feed_timeout_s); the other venues went on"
            )

    async def _fetch_feed(
        self,
        m: _Market,
        feed: _Feed,
        now: pd.Timestamp,
        new_bars: dict[tuple[str, str], int],
        errors: dict[tuple[str, str], str],
        store_s: list[float],
    ) -> None:
        spec = m.spec
        key = (spec.market, feed.exchange)
        client = self._feed_client(spec.market, feed.exchange)
        new_bars[key] = 0
        try:
            if feed.symbol is None:
                feed.symbol = await client.symbol(spec.market)
            if feed.frames is None:
                feed.frames = await asyncio.to_thread(
                    _read_frames,
                    self.store,
                    feed.exchange,
                    feed.symbol,
                    spec.timeframe,
                    feed.oi_tf,
                )
        except Exception as e:  # DataError, ConfigError, or a bug: this feed only
            errors[key] = self._error_text(feed, spec.market, e)
            _log_if_bug(e, f"{feed.exchange} {spec.market}: unexpected error")
            return
        sym = feed.symbol
        fr = feed.frames
        tf = spec.timeframe
        tf_ms = timeframe_to_ms(tf)
        now_ms = int(now.value // 1_000_000)
        floor_ms = (now_ms // tf_ms - self.history_bars - 1) * tf_ms
        closed_until = now_ms - tf_ms  # open time of the newest closed candle, at most

        def start(df: pd.DataFrame, step_ms: int) -> int:
            if df.empty:
                return floor_ms
            return int(pd.Timestamp(df["date"].iloc[-1]).value // 1_000_000) + step_ms

        tasks: dict[str, Any] = {}
        c_since = start(fr.candles, tf_ms)
        if c_since <= closed_until:
            tasks["futures"] = client.fetch_ohlcv(sym, tf, c_since, closed_until)
            f_since = start(fr.funding, 1)
            due = _funding_due(fr.funding, now, feed.funding_asked, feed.funding_phase)
            if f_since <= now_ms and due:
                tasks["funding_rate"] = client.fetch_funding_rate_history(sym, f_since, now_ms)
            if fr.taker is not None:
                t_since = start(fr.taker, tf_ms)
                if t_since <= closed_until:
                    tasks["taker_buy"] = client.fetch_taker_buy(sym, tf, t_since, closed_until)
        if feed.oi_tf is not None:
            oi_ms = timeframe_to_ms(feed.oi_tf)
            o_since = start(fr.oi, oi_ms)
            if o_since <= now_ms:
                tasks["open_interest"] = client.fetch_open_interest_history(
                    sym, feed.oi_tf, o_since, now_ms
                )
        results = await asyncio.gather(*tasks.values(), return_exceptions=True)
        first_error: BaseException | None = None
        for ctype, res in zip(tasks, results, strict=True):
            if isinstance(res, BaseException):
                if not isinstance(res, Exception):
                    raise res
                first_error = first_error or res
                continue
            df: pd.DataFrame = res
            if ctype == "funding_rate":
                # kept only if its rows reach the store (_commit); phase earlier: see _funding_due
                feed.funding_asked = now - feed.funding_phase
            if ctype in ("futures", "taker_buy"):  # closed candles only, whatever was answered
                closed = _ns(df["date"]) + tf_ms * 1_000_000 <= now.value
                if not closed.all():
                    df = df[closed]
            if df.empty:
                continue
            ftf = (
                FUNDING_TF
                if ctype == "funding_rate"
                else (feed.oi_tf if ctype == "open_interest" else tf)
            )
            assert ftf is not None
            t_store = time.perf_counter()
            try:  # queued for the commit after every fetch: one fsync per store folder
                clean = self.store.append(feed.exchange, sym, ftf, ctype, df)
                self._appended.setdefault(key, []).append(
                    self.store.path(feed.exchange, sym, ftf, ctype)
                )
            except Exception as e:  # impossible values: keep going with the others
                first_error = first_error or e
                _log_if_bug(e, f"{feed.exchange} {sym} {ctype}: unexpected store error")
                continue
            finally:
                store_s[0] += time.perf_counter() - t_store
            if ctype == "futures":
                before = len(fr.candles)
                fr.candles = _merge_rows(fr.candles, clean)
                new_bars[key] = len(fr.candles) - before
            elif ctype == "open_interest":
                fr.oi = _merge_rows(fr.oi, clean)
            elif ctype == "funding_rate":
                fr.funding = _merge_rows(fr.funding, clean)
            elif fr.taker is not None:
                fr.taker = _merge_rows(fr.taker, clean)
            _touch(feed, clean, ctype, ftf, tf_ms)
        if first_error is not None:
            errors[key] = self._error_text(feed, spec.market, first_error)

    @staticmethod
    def _error_text(feed: _Feed, market: str, e: BaseException) -> str:
        if not isinstance(e, DataError | ConfigError):
            logger.exception("%s %s: unexpected error in refresh", feed.exchange, market)
        where = f"{feed.exchange} {market}" + (f" ({feed.symbol})" if feed.symbol else "")
        return f"{where}: {type(e).__name__}: {e}"

    def _last_ready(self, m: _Market, feed: _Feed, now: pd.Timestamp) -> pd.Timestamp | None:
        """Open time of the newest candle of ``feed`` that can enter the map now."""
        if feed.frames is None or feed.frames.candles.empty:
            return None
        tf_ns = timeframe_to_ms(m.spec.timeframe) * 1_000_000
        candles = feed.frames.candles
        limit = _utc(now).value
        if feed.oi_tf is not None:
            last = _last_oi(feed.frames.oi)
            if last is None:
                return None
            limit = min(limit, last + timeframe_to_ms(feed.oi_tf) * 1_000_000)
        ok = np.flatnonzero(_ns(candles["date"]) + tf_ns <= limit)
        return pd.Timestamp(candles["date"].iloc[ok[-1]]) if len(ok) else None

    def _update_health(self, m: _Market, feed: _Feed, now: pd.Timestamp, error: str | None) -> None:
        tf = pd.Timedelta(milliseconds=timeframe_to_ms(m.spec.timeframe))
        stale = False
        if error is not None:
            stale = True
            feed.error = error
        else:
            feed.error = None
            last = self._last_ready(m, feed, now)
            if last is None:
                stale = True
                feed.error = (
                    f"{feed.exchange} {m.spec.market}: no bar can enter the map yet "
                    "(no closed candle with known open interest)"
                )
            else:
                due = last + 2 * tf  # the next bar closes then
                stale = now >= due + self.stale_after_bars * tf
        if stale and not feed.stale:
            feed.since = now
        if not stale:
            feed.since = None
        feed.stale = stale

    # -- maps -------------------------------------------------------------------------------
    #: False: every late bar rebuilds the map from every stored row (the behaviour before
    #: checkpoints; the tests compare both)
    _checkpoints: bool = True

    def _build(self, m: _Market, now: pd.Timestamp) -> float:
        """(Re)build the market's map from every stored row; returns engine seconds."""
        feeds = list(m.feeds.values())
        frames: list[pd.DataFrame | None] = []
        for feed in feeds:
            if feed.frames is None:
                frames.append(None)
                continue
            f = _exchange_frame(feed.frames, m.spec.timeframe, feed.oi_tf, now=now)
            _validate(f, f"{feed.exchange} {feed.symbol} {m.spec.timeframe}")
            frames.append(f)
        symbol = next((f.symbol for f in feeds if f.symbol), None)
        proxies = [f.proxy for f in feeds]
        lmap = LiquidationMap(
            _market_config(m.config, symbol), exchanges=m.spec.exchanges, proxy=proxies
        )
        run = self._run(lmap, feeds, frames, None, dict.fromkeys(m.feeds), None, clean=True)
        feats = _wrap(run.out, run.dates, run.x, all(proxies)).iloc[-self.history_bars :]
        with m.lock:  # map and features published together
            m.lmap = lmap
            m.feats = feats
            m.map_until = pd.Timestamp(run.dates[-1]) if len(run.dates) else None
            m.checkpoint = run.checkpoint
            m.tainted = None
        for feed in feeds:
            feed.fed_until = run.fed_until[feed.exchange]
        return run.engine_s

    def _replay(self, m: _Market, now: pd.Timestamp, cp: _Checkpoint) -> float | None:
        """Late bars through the checkpoint: its map, then every stored row after it (stale
        exchanges too, as a rebuild takes them). Returns engine seconds, or None when the
        checkpoint does not cover the late rows (one dated at or before it): rebuild."""
        if cp.lmap is None:
            return None
        feeds = list(m.feeds.values())
        frames: list[pd.DataFrame | None] = []
        for feed in feeds:
            if feed.frames is None:
                frames.append(None)
                continue
            f = _exchange_frame(
                feed.frames,
                m.spec.timeframe,
                feed.oi_tf,
                now=now,
                after=cp.fed_until.get(feed.exchange),
            )
            if len(f) and f["date"].iloc[0] <= cp.until:
                return None  # a row the checkpoint's map lacks
            frames.append(f)
        for feed, f in zip(feeds, frames, strict=True):
            if f is not None:
                _validate(f, f"{feed.exchange} {feed.symbol} {m.spec.timeframe}")
        lmap = cp.lmap  # the checkpoint's own copy: it becomes the live map
        at_cp = _Checkpoint(cp.until, None, dict(cp.fed_until))  # that map is at cp.until
        run = self._run(lmap, feeds, frames, cp.until, cp.fed_until, at_cp, clean=True)
        old = m.feats
        kept = None if old is None else old.iloc[: int(old.index.searchsorted(cp.until, "right"))]
        new = _wrap(run.out, run.dates, run.x, all(f.proxy for f in feeds))
        feats = (new if kept is None or kept.empty else pd.concat([kept, new])).iloc[
            -self.history_bars :
        ]
        with m.lock:  # map and features published together
            m.lmap = lmap
            m.feats = feats
            m.map_until = pd.Timestamp(run.dates[-1]) if len(run.dates) else cp.until
            m.checkpoint = run.checkpoint
            m.tainted = None
        for feed in feeds:
            feed.fed_until = run.fed_until[feed.exchange]
        return run.engine_s

    def _run(
        self,
        lmap: LiquidationMap,
        feeds: list[_Feed],
        frames: list[pd.DataFrame | None],
        at: pd.Timestamp | None,
        fed_until: Mapping[str, pd.Timestamp | None],
        checkpoint: _Checkpoint | None,
        *,
        clean: bool,
    ) -> _Run:
        """Advance ``lmap`` (at its bar ``at``, each exchange fed up to ``fed_until``) over
        ``frames`` and keep the checkpoint at the newest bar every exchange with rows has
        reached: taken within this run where that bar is among the new ones, kept
        (``checkpoint``) where it is older. ``clean``: the map's bars are what a rebuild would
        give (else no new checkpoint is taken from it)."""
        dates, x = stack_inputs(frames, [f.proxy for f in feeds])
        fed = dict(fed_until)
        for feed, f in zip(feeds, frames, strict=True):
            if f is not None and len(f):
                fed[feed.exchange] = pd.Timestamp(f["date"].iloc[-1])
        n = len(dates)
        if not n:
            return _Run(dates, x, np.empty((nb.N_OUT, 0)), 0.0, checkpoint, fed)
        reached = [fed[f.exchange] for f in feeds if f.frames is not None]
        low = min((r for r in reached if r is not None), default=None)
        ts = _seconds(dates)
        cut: int | None = None  # bars fed before the checkpoint is copied (None: no copy)
        if not self._checkpoints:
            checkpoint = None
        elif not clean or low is None:
            pass  # keep the one there is (older than where the map stopped being clean)
        elif low >= dates[-1]:
            checkpoint = _Checkpoint(pd.Timestamp(dates[-1]), None, fed)  # the map itself
        elif low >= dates[0]:
            cut = int(dates.searchsorted(low, "right"))
        elif checkpoint is not None and checkpoint.lmap is None and checkpoint.until == at:
            cut = 0  # the map is at the checkpoint now and is about to pass it
        t0 = time.perf_counter()
        if cut is None:
            out = lmap.update(ts, x)
        else:
            first = lmap.update(ts[:cut], x[:cut])
            if cut:
                until = pd.Timestamp(dates[cut - 1])
                at_cut = dict(fed_until)
                for feed, f in zip(feeds, frames, strict=True):
                    if f is not None and len(f):
                        d = pd.DatetimeIndex(f["date"])
                        k = int(d.searchsorted(until, "right"))
                        if k:
                            at_cut[feed.exchange] = pd.Timestamp(d[k - 1])
                checkpoint = _Checkpoint(until, lmap.copy(), at_cut)
            else:
                assert checkpoint is not None
                checkpoint = _Checkpoint(checkpoint.until, lmap.copy(), checkpoint.fed_until)
            out = np.concatenate([first, lmap.update(ts[cut:], x[cut:])], axis=1)
        return _Run(dates, x, out, time.perf_counter() - t0, checkpoint, fed)

    def _advance(
        self, m: _Market, now: pd.Timestamp, rebuilt: list[str], replayed: list[str]
    ) -> float:
        """Feed the new ready bars of the non-stale exchanges; late bars go through the
        checkpoint (:meth:`_replay`), or a rebuild where it does not cover them."""
        touched = [f.touched for f in m.feeds.values() if f.touched is not None]
        for feed in m.feeds.values():
            feed.touched = None
        if m.lmap is None:
            if any(f.frames is not None and len(f.frames.candles) for f in m.feeds.values()):
                rebuilt.append(m.spec.market)
                return self._build(m, now)
            return 0.0
        if touched and m.map_until is not None and min(touched) <= m.map_until:
            # rows merged now change bars already in the map (a late funding, OI or taker
            # row): the map is no longer what a rebuild gives from there on
            first = min(touched)
            m.tainted = first if m.tainted is None else min(m.tainted, first)
            if m.checkpoint is not None and m.checkpoint.until >= first:
                m.checkpoint = None
        feeds = list(m.feeds.values())
        frames: list[pd.DataFrame | None] = []
        late = False
        for feed in feeds:
            if feed.stale or feed.frames is None:
                frames.append(None)
                continue
            f = _exchange_frame(
                feed.frames, m.spec.timeframe, feed.oi_tf, now=now, after=feed.fed_until
            )
            if len(f) and m.map_until is not None and f["date"].iloc[0] <= m.map_until:
                late = True  # a bar the map has already passed
            frames.append(f)
        if late:
            cp = m.checkpoint if self._checkpoints else None
            dt = None if cp is None else self._replay(m, now, cp)
            if dt is not None:
                replayed.append(m.spec.market)
                return dt
            rebuilt.append(m.spec.market)
            return self._build(m, now)
        for feed, f in zip(feeds, frames, strict=True):
            if f is not None:
                _validate(f, f"{feed.exchange} {feed.symbol} {m.spec.timeframe}")
        with m.lock:  # the map advances in place: readers wait for its features
            run = self._run(
                m.lmap,
                feeds,
                frames,
                m.map_until,
                {f.exchange: f.fed_until for f in feeds},
                m.checkpoint,
                clean=m.tainted is None,
            )
            if not len(run.dates):
                return 0.0
            new = _wrap(run.out, run.dates, run.x, all(f.proxy for f in feeds))
            old = m.feats
            m.feats = (new if old is None or old.empty else pd.concat([old, new])).iloc[
                -self.history_bars :
            ]
            m.map_until = pd.Timestamp(run.dates[-1])
            m.checkpoint = run.checkpoint
        for feed in feeds:
            feed.fed_until = run.fed_until[feed.exchange]
        return run.engine_s

    def _market(self, market: str) -> _Market:
        try:
            return self._markets[market]
        except KeyError:
            raise ConfigError(
                f"market {market!r} is not served by this provider; it serves {self.markets}"
            ) from None

    def _map(self, market: str) -> tuple[_Market, LiquidationMap]:
        m = self._market(market)
        if m.lmap is None or not m.lmap.initialized:
            raise DataError(f"{market}: no map yet (call refresh() first; errors: {self._errs(m)})")
        return m, m.lmap

    @staticmethod
    def _errs(m: _Market) -> str:
        errs = [f.error for f in m.feeds.values() if f.error]
        return "; ".join(errs) if errs else "none"

    # -- reading ----------------------------------------------------------------------------
    def status(self, market: str) -> dict[str, ExchangeStatus]:
        """Health per exchange of ``market`` as of the last refresh."""
        m = self._market(market)
        return {
            ex: ExchangeStatus(
                exchange=ex,
                symbol=f.symbol,
                stale=f.stale,
                last_bar=f.fed_until,
                error=f.error,
                since=f.since,
            )
            for ex, f in m.feeds.items()
        }

    def price(self, market: str) -> float:
        """Last close in the map: of the first non-stale exchange (all stale: the first one)."""
        with self._market(market).lock:
            return self._price(market)

    def _price(self, market: str) -> float:
        m, lmap = self._map(market)
        closes = lmap.ex[:, nb.X_LAST_CLOSE]
        order = [i for i, f in enumerate(m.feeds.values()) if not f.stale]
        order += [i for i in range(len(closes)) if i not in order]
        for i in order:
            c = float(closes[i])
            if math.isfinite(c) and c > 0:
                return c
        raise DataError(f"{market}: no price yet")

    def snapshot(self, market: str, scan_range_pct: float | None = None) -> MapSnapshot:
        """The aggregated map over the non-stale exchanges: levels (totals and one column pair
        per non-stale exchange) and clusters whose ``shares`` name only non-stale exchanges and
        sum to 1. A stale exchange's standing levels are left out (they are old and may no
        longer exist); they stay in the engine state, fading, and count again on recovery."""
        with self._market(market).lock:
            return self._snapshot(market, scan_range_pct)

    def _snapshot(self, market: str, scan_range_pct: float | None) -> MapSnapshot:
        m, lmap = self._map(market)
        stale = [i for i, f in enumerate(m.feeds.values()) if f.stale]
        ref = self._price(market)
        if not stale:
            return lmap.snapshot(ref, scan_range_pct=scan_range_pct)
        view = copy.copy(lmap)
        view.ex = lmap.ex.copy()
        for i in stale:
            view.ex[i, nb.X_SCALE_L] = 0.0
            view.ex[i, nb.X_SCALE_S] = 0.0
        snap = view.snapshot(ref, scan_range_pct=scan_range_pct)
        gone = {lmap.exchanges[i] for i in stale}
        levels = snap.levels.drop(
            columns=[c for c in snap.levels.columns if c.split("_")[0] in gone]
        )
        clusters = [
            dataclasses.replace(c, shares={k: v for k, v in c.shares.items() if k not in gone})
            for c in snap.clusters
        ]
        return MapSnapshot(snap.time, snap.price, levels, clusters)

    def features(self, market: str) -> pd.DataFrame:
        """``PROVIDER_COLUMNS`` of the aggregate, the last ``history_bars`` rows, by date."""
        m = self._market(market)
        with m.lock:
            if m.feats is None:
                return pd.DataFrame(
                    columns=list(PROVIDER_COLUMNS),
                    index=pd.DatetimeIndex([], tz="UTC", name="date"),
                    dtype="float64",
                )
            return m.feats.copy()

    def map(self, market: str) -> LiquidationMap:
        """The market's engine state (read only: do not ``update`` it)."""
        return self._map(market)[1]

    # -- realized liquidations --------------------------------------------------------------
    def on_liquidation(self, event: Any) -> float:
        """Apply one realized liquidation (a :class:`liqsignal.data.streams.StreamEvent`, or
        anything with ``market``, ``side`` and ``price``) to its market's map at once: the
        levels at and beyond its price on that side are consumed
        (:meth:`LiquidationMap.consume_to`, every exchange block: price traded there). Returns
        the USD consumed (0 for a market this provider does not serve or has no map for yet).
        A rebuild from the store (a late bar) starts from the bars again; the next closed bar
        reaches those levels anyway, since its range contains the traded price."""
        m = self._markets.get(str(getattr(event, "market", "")))
        if m is None:
            return 0.0
        with m.lock:
            if m.lmap is None or not m.lmap.initialized:
                return 0.0
            return m.lmap.consume_to(float(event.price), str(event.side))

    # -- streamed candles -----------------------------------------------------------------------
    # ``MapProvider(..., candle_streams=("binance", "bybit", "okx"))``: the candles of those
    # exchanges come from their kline streams (liqsignal.data.candle_streams), started at the
    # first refresh in its event loop. Each closed candle is buffered per feed
    # (:meth:`ingest_candles`); at the refresh the feed's candle request (and Binance's taker buy
    # request) is answered from that buffer when it holds every bar due, and goes to REST only
    # for the bars it lacks: the first fill, a reconnect gap, a bar that has not arrived
    # ``stream_grace_s`` seconds after the refresh asked for it. The rows then take the same way
    # as fetched ones (the store's journal, the refresh's commit, ``_advance``).

    def _init_candle_streams(
        self,
        exchanges: Sequence[str],
        config: Any,
        ccxt_config: Mapping[str, Mapping[str, Any]],
    ) -> None:
        from liqsignal.data.candle_streams import CandleStreams
        from liqsignal.data.streams import StreamConfig

        #: seconds a refresh waits for a bar a healthy stream has not delivered yet, then REST
        self.stream_grace_s = 2.0
        self._buffers: dict[tuple[str, str], _CandleBuffer] = {}
        self._candle_streams: list[CandleStreams] = []
        #: per exchange: bars answered from a stream, REST requests made to fill what it lacked
        self.stream_bars: dict[str, int] = {}
        self.stream_backfills: dict[str, int] = {}
        if isinstance(exchanges, str):
            raise ConfigError(f"candle_streams: expected a tuple of exchanges, got {exchanges!r}")
        names = tuple(exchanges)
        if not names:
            return
        unknown = sorted(set(names) - set(self._clients))
        if unknown:
            raise ConfigError(
                f"candle_streams: {unknown} serve none of the markets (exchanges: "
                f"{sorted(self._clients)})"
            )
        if config is not None and not isinstance(config, StreamConfig):
            raise ConfigError(f"stream_config: expected a StreamConfig, got {config!r}")
        by_tf: dict[str, dict[str, list[str]]] = {}
        for m in self._markets.values():
            for ex in m.feeds:
                if ex not in names:
                    continue
                by_tf.setdefault(m.spec.timeframe, {}).setdefault(ex, []).append(m.spec.market)
                kinds = ("futures", "taker_buy") if EXCHANGES[ex].taker_buy else ("futures",)
                cap = 2 * self.history_bars + 10
                self._buffers[(m.spec.market, ex)] = _CandleBuffer(
                    timeframe_to_ms(m.spec.timeframe), kinds, cap
                )
        for ex in names:
            self.stream_bars[ex] = 0
            self.stream_backfills[ex] = 0
        for tf, markets in by_tf.items():
            self._candle_streams.append(
                CandleStreams(
                    markets, tf, self._ingest_rows, ccxt_config=ccxt_config, config=config
                )
            )

    async def _close_candle_streams(self) -> None:
        for s in self._candle_streams:
            await s.aclose()

    def ingest_candles(self, market: str, exchange: str, df: pd.DataFrame) -> int:
        """Hand closed candles of (market, exchange) to the provider (what the kline streams
        do): ``date, open, high, low, close, volume`` and, for Binance, ``taker_buy_volume,
        taker_buy_quote_volume``. They are merged into the feed's rows and stored at the next
        refresh, which then asks REST only for the bars still missing. Returns the rows taken."""
        if (market, exchange) not in self._buffers:
            raise ConfigError(
                f"ingest_candles: {exchange} {market} is not a streamed feed of this provider "
                f"(candle_streams= names the exchanges)"
            )
        need = ["date", "open", "high", "low", "close", "volume"]
        missing = [c for c in need if c not in df.columns]
        if missing:
            raise ConfigError(f"ingest_candles {exchange} {market}: missing columns {missing}")
        dates = pd.DatetimeIndex(pd.to_datetime(df["date"], utc=True)).as_unit("ms").asi8
        cols = [df[c].to_numpy(dtype="float64") for c in need[1:]]
        nan = np.full(len(df), np.nan)
        tb = df["taker_buy_volume"].to_numpy("float64") if "taker_buy_volume" in df else nan
        tq = (
            df["taker_buy_quote_volume"].to_numpy("float64")
            if "taker_buy_quote_volume" in df
            else nan
        )
        rows = [
            (int(t), float(o), float(h), float(lo), float(c), float(v), float(b), float(q))
            for t, o, h, lo, c, v, b, q in zip(dates, *cols, tb, tq, strict=True)
        ]
        self._ingest_rows(market, exchange, rows)
        return len(rows)

    def _ingest_rows(self, market: str, exchange: str, rows: list[Any]) -> None:
        buf = self._buffers.get((market, exchange))
        if buf is not None:
            buf.add(rows)

    def _feed_client(self, market: str, exchange: str) -> Any:
        """The feed's exchange client; for a streamed feed one whose candle requests are
        answered from the stream's buffer first."""
        if (market, exchange) not in self._buffers:
            return self._clients[exchange]
        for s in self._candle_streams:
            s.start()
        return _StreamedClient(self, market, exchange)

    def _candles_live(self, market: str, exchange: str) -> bool:
        return any(s.live(market, exchange) for s in self._candle_streams)

    async def _streamed_rows(
        self,
        kind: str,
        market: str,
        exchange: str,
        symbol: str,
        timeframe: str,
        since: int,
        until: int,
    ) -> pd.DataFrame:
        """Candles (``kind`` futures) or taker buy rows of [since, until] from the stream's
        buffer, REST for the bars it lacks (one request for the span before the buffer's
        unbroken run up to the newest bar due)."""
        from liqsignal.data.exchanges import ExchangeClient

        client = self._clients[exchange]
        buf = self._buffers[(market, exchange)]
        step = buf.tf_ms
        first = -(-since // step) * step
        last = until // step * step
        if last < first:
            return ExchangeClient._rows_to_frame([], kind)
        if last not in buf.rows and self._candles_live(market, exchange):
            await buf.wait(last, self.stream_grace_s)
        run = buf.take(kind, first, last)
        fetch = client.fetch_ohlcv if kind == "futures" else client.fetch_taker_buy
        if kind == "futures":
            self.stream_bars[exchange] += len(run)
        # REST is asked one bar further than it must give (OKX's ``after`` bound is exclusive:
        # asked up to a bar, it answers up to the one before); a forming bar that comes back is
        # dropped by _fetch_feed, a bar the stream also has is the stream's
        if not run:
            self.stream_backfills[exchange] += 1
            return await fetch(symbol, timeframe, since, last + step)
        streamed = _buffer_frame(run, kind)
        if run[0][0] == first:
            return streamed
        self.stream_backfills[exchange] += 1
        rest = await fetch(symbol, timeframe, since, run[0][0])
        return _merge_rows(rest, streamed) if len(rest) else streamed


def _buffer_frame(run: list[tuple[Any, ...]], kind: str) -> pd.DataFrame:
    """Buffered rows (sorted, unique open times) as the store's frame of ``kind``: what
    ``normalize_frame`` makes of the REST answer for the same bars."""
    from liqsignal.data.store import CANDLE_COLUMNS

    arr = np.asarray(run, dtype=np.float64)
    dates = arr[:, 0].astype(np.int64).astype("datetime64[ms]")
    data: dict[str, Any] = {"date": pd.DatetimeIndex(dates).tz_localize("UTC")}
    names = CANDLE_COLUMNS[kind][1:]
    first = 1 if kind == "futures" else 6
    for k, name in enumerate(names):
        data[name] = arr[:, first + k].copy()
    return pd.DataFrame(data)


class _CandleBuffer:
    """Closed candles a stream delivered for one feed and the refresh has not taken yet."""

    def __init__(self, tf_ms: int, kinds: tuple[str, ...], cap: int) -> None:
        self.tf_ms = tf_ms
        self.rows: dict[int, tuple[Any, ...]] = {}
        self.newest = -1
        self.cap = cap
        self._floor = dict.fromkeys(kinds, -1)
        self._waiters: list[tuple[int, asyncio.Future[None]]] = []

    def add(self, rows: list[Any]) -> None:
        for r in rows:
            self.rows[int(r[0])] = tuple(r)
            self.newest = max(self.newest, int(r[0]))
        if len(self.rows) > self.cap:
            for t in sorted(self.rows)[: len(self.rows) - self.cap]:
                del self.rows[t]
        if self._waiters:
            for t, fut in self._waiters:
                if t in self.rows and not fut.done():
                    fut.set_result(None)
            self._waiters = [w for w in self._waiters if not w[1].done()]

    async def wait(self, ts: int, timeout: float) -> None:
        if ts in self.rows:
            return
        fut: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._waiters.append((ts, fut))
        await asyncio.wait([fut], timeout=timeout)
        if not fut.done():
            fut.cancel()

    def take(self, kind: str, first: int, last: int) -> list[tuple[Any, ...]]:
        """The unbroken run of rows ending at ``last`` (none when ``last`` is missing), not
        reaching before ``first``; rows before ``first`` are forgotten once every kind passed
        them. Taker rows need finite taker values."""

        def ok(t: int) -> bool:
            r = self.rows.get(t)
            return r is not None and (kind == "futures" or math.isfinite(r[6]))

        run = []
        t = last
        while t >= first and ok(t):
            run.append(self.rows[t])
            t -= self.tf_ms
        run.reverse()
        if kind in self._floor:
            self._floor[kind] = first
            low = min(self._floor.values())
            for old in [x for x in self.rows if x < low]:
                del self.rows[old]
        return run


class _StreamedClient:
    """An exchange client whose candle (and taker buy) requests of one feed are answered from
    the stream's buffer first; everything else goes to the real client."""

    def __init__(self, provider: MapProvider, market: str, exchange: str) -> None:
        self._provider = provider
        self._key = (market, exchange)
        self._client = provider._clients[exchange]

    def __getattr__(self, name: str) -> Any:
        return getattr(self._client, name)

    async def fetch_ohlcv(self, symbol: str, timeframe: str, since: int, until: int) -> Any:
        m, ex = self._key
        return await self._provider._streamed_rows(
            "futures", m, ex, symbol, timeframe, since, until
        )

    async def fetch_taker_buy(self, symbol: str, timeframe: str, since: int, until: int) -> Any:
        m, ex = self._key
        return await self._provider._streamed_rows(
            "taker_buy", m, ex, symbol, timeframe, since, until
        )
