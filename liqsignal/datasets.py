"""Evaluation datasets with realized liquidations, walk-forward folds and cascade onsets.

Every dataset is real market data bundled in ``liqsignal/resources`` (provenance in its README):

=========  ===========================================================================
name       what
=========  ===========================================================================
btc_1h     CoinGlass BTC aggregated over Binance + Bybit + OKX, 1h, 2025-12-04 ->
           2026-03-04: price, aggregated OI, funding, realized liquidations; Binance
           volume. The development file the engine was first tuned on.
btc_4h     CoinGlass BTC 4h, 2024-11-13 -> 2025-07-31: realized liquidations on
           **Binance only**, OI aggregated over all exchanges, Binance 1h candles
           resampled to 4h for price and volume; no funding.
eth_4h     The same for ETH.
=========  ===========================================================================

Each dataset's ``frame`` is a Freqtrade-style frame (``date, open, high, low, close, volume,
open_interest_value, funding_rate``) plus ``realized_long_usd`` / ``realized_short_usd`` (the
USD of longs / shorts liquidated in the bar). Rows are bars labelled by open time; the OI is
the value at the bar's end (known at its close).

:func:`store_dataset` builds the same kind of dataset for any exchange and market from a
Freqtrade-layout data folder: candles, open interest and funding from the store, realized
liquidations from the liquidation store (:mod:`liqsignal.data.liquidations`); bars whose
realized liquidations are unknown (no coverage, a gap a stream recorded) stay NaN there and
every score leaves them out.

Walk-forward folds (:func:`walk_forward_folds`) split a dataset by time into an expanding
training window and the next block as test; :func:`cascade_onsets` marks the first bar of a
run of bars whose realized side liquidations exceed the trailing 98th percentile of the
market's own past (past data only).
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from liqsignal.exceptions import InputError

BUNDLED_COINGLASS = (
    Path(__file__).parent / "resources" / "coinglass_btc_1h_price_oi_funding_liquidations.csv"
)

BUNDLED_VOLUME = Path(__file__).parent / "resources" / "binance_btc_1h_volume.csv"

_CG_COLUMNS = (
    "timestamp",
    "price_open",
    "price_high",
    "price_low",
    "price_close",
    "liquidation_long_usd",
    "liquidation_short_usd",
    "oi_close",
)


def load_coinglass(
    path: str | Path = BUNDLED_COINGLASS, volume_path: str | Path | None = BUNDLED_VOLUME
) -> pd.DataFrame:
    """A CoinGlass 1h export as a Freqtrade-style frame plus realized liquidation columns.

    ``volume`` comes from ``volume_path`` (Binance BTC/USDT:USDT 1h volume of the same bars;
    CoinGlass exports carry none), 0 when None.
    Returns ``date, open, high, low, close, volume, open_interest_value,
    funding_rate, realized_long_usd, realized_short_usd``. CoinGlass labels bars by open time and
    ``oi_close`` is the OI at the bar's end, so it is known at the bar's close.
    """
    p = Path(path)
    if not p.is_file():
        raise InputError(f"no CoinGlass file at {p}")
    raw = pd.read_csv(p)
    absent = [c for c in _CG_COLUMNS if c not in raw.columns]
    if absent:
        raise InputError(f"{p}: missing CoinGlass column(s) {absent}")
    df = pd.DataFrame(
        {
            "date": pd.to_datetime(raw["timestamp"], unit="ms", utc=True),
            "open": raw["price_open"].astype(float),
            "high": raw["price_high"].astype(float),
            "low": raw["price_low"].astype(float),
            "close": raw["price_close"].astype(float),
            "volume": 0.0,
            "open_interest_value": raw["oi_close"].astype(float),
            "funding_rate": (
                raw["funding_close"].astype(float) / 100.0
                if "funding_close" in raw.columns
                else np.nan
            ),
            "realized_long_usd": raw["liquidation_long_usd"].astype(float),
            "realized_short_usd": raw["liquidation_short_usd"].astype(float),
        }
    )
    if volume_path is not None:
        vp = Path(volume_path)
        if not vp.is_file():
            raise InputError(f"no volume file at {vp}")
        vol = pd.read_csv(vp)
        if not {"timestamp", "volume"} <= set(vol.columns):
            raise InputError(f"{vp}: need columns timestamp (ms) and volume")
        vol_dates = pd.to_datetime(vol["timestamp"], unit="ms", utc=True)
        series = pd.Series(vol["volume"].astype(float).to_numpy(), index=vol_dates)
        df["volume"] = series.reindex(pd.DatetimeIndex(df["date"])).to_numpy()
        missing = int(df["volume"].isna().sum())
        if missing:
            raise InputError(f"{vp}: no volume for {missing} bar(s) of {p}")
    return df


__all__ = [
    "DATASET_NAMES",
    "Dataset",
    "Fold",
    "cascade_onsets",
    "load_dataset",
    "load_datasets",
    "min_bars",
    "store_dataset",
    "trailing_quantile",
    "walk_forward_folds",
]

_RES = Path(__file__).parent / "resources"
COINGLASS_1H = _RES / "coinglass_btc_1h_price_oi_funding_liquidations.csv"
VOLUME_1H = _RES / "binance_btc_1h_volume.csv"
COINGLASS_4H = _RES / "btc_eth_4h_binance_liquidations_aggregated_oi.csv"
BINANCE_1H = _RES / "binance_btc_eth_perp_1h_ohlcv.csv"

DATASET_NAMES: tuple[str, ...] = ("btc_1h", "btc_4h", "eth_4h")

_SOURCES = {
    "btc_1h": (
        "CoinGlass BTC 1h (Binance+Bybit+OKX aggregated OI and realized liquidations), "
        "Binance volume"
    ),
    "btc_4h": (
        "CoinGlass BTC 4h (Binance realized liquidations, all-exchange OI), Binance 1h "
        "candles resampled to 4h"
    ),
    "eth_4h": (
        "CoinGlass ETH 4h (Binance realized liquidations, all-exchange OI), Binance 1h "
        "candles resampled to 4h"
    ),
}


@dataclass(frozen=True)
class Dataset:
    """One market's bars with realized liquidations."""

    name: str
    symbol: str
    timeframe: str
    frame: pd.DataFrame
    source: str
    #: Finer candles of the same market over the same span (1h bars for the 4h sets), or None.
    fine: pd.DataFrame | None = None

    @property
    def span(self) -> str:
        d = self.frame["date"]
        return f"{d.iloc[0]:%Y-%m-%d} -> {d.iloc[-1]:%Y-%m-%d}"


@dataclass(frozen=True)
class Fold:
    """Walk-forward fold: fit on ``train`` (all bars before the test block), score on ``test``."""

    index: int
    train: slice
    test: slice

    def describe(self, frame: pd.DataFrame) -> str:
        d = frame["date"]
        a, b = self.test.start, self.test.stop - 1
        return f"fold {self.index}: test {d.iloc[a]:%Y-%m-%d} -> {d.iloc[b]:%Y-%m-%d}"


def walk_forward_folds(n_bars: int, n_folds: int = 3, warmup: int = 200) -> list[Fold]:
    """``n_folds`` consecutive test blocks after an initial training span, expanding window.

    Bars ``[0, warmup)`` only warm the map up. The remaining bars are cut into ``n_folds + 1``
    equal blocks: the first is training only; fold k tests on block k + 1 and trains on every
    bar before it.
    """
    if n_folds < 1:
        raise InputError(f"walk_forward_folds: n_folds must be >= 1, got {n_folds}")
    if warmup < 0:
        raise InputError(f"walk_forward_folds: warmup must be >= 0, got {warmup}")
    usable = n_bars - warmup
    block = usable // (n_folds + 1)
    if block < 20:
        raise InputError(
            f"walk_forward_folds: {n_bars} bars with a warm-up of {warmup} is too few for "
            f"{n_folds} folds (need at least {min_bars(n_folds, warmup)})"
        )
    folds = []
    for k in range(n_folds):
        start = warmup + (k + 1) * block
        stop = n_bars if k == n_folds - 1 else start + block
        folds.append(Fold(index=k + 1, train=slice(warmup, start), test=slice(start, stop)))
    return folds


def min_bars(n_folds: int = 3, warmup: int = 200) -> int:
    """Fewest bars :func:`walk_forward_folds` accepts: the warm-up and 20 per block."""
    return warmup + 20 * (n_folds + 1)


def trailing_quantile(x: np.ndarray, q: float, min_history: int) -> np.ndarray:
    """At each bar t, the ``q`` quantile of ``x[0:t]`` (bars before t only); NaN until
    ``min_history`` past values exist. Expanding window, so the threshold is point in time."""
    v = np.asarray(x, dtype=np.float64)
    s = pd.Series(v).shift(1)
    out = s.expanding(min_periods=max(1, min_history)).quantile(q).to_numpy()
    return np.asarray(out, dtype=np.float64)


def cascade_onsets(
    realized: np.ndarray, *, q: float = 0.98, min_history: int = 200
) -> tuple[np.ndarray, np.ndarray]:
    """First bars of cascade runs: realized side liquidations above the trailing ``q`` quantile
    of the market's own past bars (``min_history`` of them at least), the bar before known and
    not above its own threshold. A bar whose realized value is NaN (unknown) is never a
    cascade bar, and the bar after it is no onset (it may continue a run that bar hid).
    Returns ``(onset, cascade_bar)`` boolean arrays."""
    r = np.asarray(realized, dtype=np.float64)
    thr = trailing_quantile(r, q, min_history)
    with np.errstate(invalid="ignore"):
        bar = np.isfinite(thr) & np.isfinite(r) & (r > thr)
    prev = np.concatenate([[False], bar[:-1]])
    prev_known = np.concatenate([[True], np.isfinite(r[:-1])])
    return bar & ~prev & prev_known, bar


# ------------------------------------------------------------------------------------------
# loaders
# ------------------------------------------------------------------------------------------


def _need(df: pd.DataFrame, cols: Iterable[str], path: Path) -> None:
    absent = [c for c in cols if c not in df.columns]
    if absent:
        raise InputError(f"{path}: missing column(s) {absent}")


def _load_btc_1h() -> pd.DataFrame:
    return load_coinglass(COINGLASS_1H, VOLUME_1H)


def _load_1h_candles(symbol: str) -> pd.DataFrame:
    if not BINANCE_1H.is_file():
        raise InputError(f"dataset file missing: {BINANCE_1H}")
    px = pd.read_csv(BINANCE_1H)
    _need(px, ("time", "symbol", "open", "high", "low", "close", "volume"), BINANCE_1H)
    p = px[px["symbol"] == symbol]
    out = pd.DataFrame(
        {
            "date": pd.DatetimeIndex(pd.to_datetime(p["time"], utc=True)).as_unit("ms"),
            **{c: p[c].astype(float).to_numpy() for c in ("open", "high", "low", "close")},
            "volume": p["volume"].astype(float).to_numpy(),
        }
    )
    return out.sort_values("date").reset_index(drop=True)


def _load_4h(coin: str, candles_1h: pd.DataFrame) -> pd.DataFrame:
    """The 4h set of ``coin``: CoinGlass liquidations and OI, prices and volume resampled from
    ``candles_1h`` (``_load_1h_candles``, read once and kept as the dataset's finer candles)."""
    if not COINGLASS_4H.is_file():
        raise InputError(f"dataset file missing: {COINGLASS_4H}")
    liq = pd.read_csv(COINGLASS_4H)
    _need(liq, ("time", "coin", "binance_long_liq_usd", "binance_short_liq_usd"), COINGLASS_4H)
    _need(liq, ("agg_oi_usd_close",), COINGLASS_4H)
    p = candles_1h.set_index(pd.DatetimeIndex(candles_1h["date"]).as_unit("ns")).drop(
        columns=["date"]
    )
    agg = p.resample("4h", label="left", closed="left").agg(
        {"open": "first", "high": "max", "low": "min", "close": "last", "volume": "sum"}
    )
    count = p["close"].resample("4h", label="left", closed="left").count()
    agg = agg[count == 4]  # only complete 4h bars
    lq = liq[liq["coin"] == coin].copy()
    lq["time"] = pd.to_datetime(lq["time"], utc=True)
    lq = lq.set_index("time").sort_index()
    j = lq.join(agg, how="inner")
    j = j[np.isfinite(j["agg_oi_usd_close"].to_numpy(dtype=np.float64))]
    out = pd.DataFrame(
        {
            "date": pd.DatetimeIndex(j.index).as_unit("ms"),
            "open": j["open"].astype(float).to_numpy(),
            "high": j["high"].astype(float).to_numpy(),
            "low": j["low"].astype(float).to_numpy(),
            "close": j["close"].astype(float).to_numpy(),
            "volume": j["volume"].astype(float).to_numpy(),
            "open_interest_value": j["agg_oi_usd_close"].astype(float).to_numpy(),
            "funding_rate": np.nan,
            "realized_long_usd": j["binance_long_liq_usd"].astype(float).to_numpy(),
            "realized_short_usd": j["binance_short_liq_usd"].astype(float).to_numpy(),
        }
    )
    return out.reset_index(drop=True)


_CACHE: dict[str, Dataset] = {}


def load_dataset(name: str) -> Dataset:
    """One bundled dataset by name (see the module docstring); frames are copies."""
    if name not in DATASET_NAMES:
        raise InputError(f"unknown dataset {name!r}; choose from {list(DATASET_NAMES)}")
    if name not in _CACHE:
        fine = None
        if name == "btc_1h":
            frame, symbol, tf = _load_btc_1h(), "BTC/USDT:USDT", "1h"
        else:
            coin = name.split("_")[0].upper()
            symbol, tf = f"{coin}/USDT:USDT", "4h"
            fine = _load_1h_candles(symbol)
            frame = _load_4h(coin, fine)
        _CACHE[name] = Dataset(name, symbol, tf, frame, _SOURCES[name], fine)
    d = _CACHE[name]
    return Dataset(
        d.name,
        d.symbol,
        d.timeframe,
        d.frame.copy(),
        d.source,
        None if d.fine is None else d.fine.copy(),
    )


def load_datasets(names: Iterable[str] | None = None) -> list[Dataset]:
    """Several bundled datasets (all of them by default)."""
    return [load_dataset(n) for n in (names or DATASET_NAMES)]


# ------------------------------------------------------------------------------------------
# a user's market from the store
# ------------------------------------------------------------------------------------------

_OI_COLS = ["open_interest_amount", "open_interest_value"]
FUNDING_TF = "1h"  # the store keeps funding under Freqtrade's funding_fee_timeframe


def _stored_oi_timeframe(store: object, exchange: str, pair: str, timeframe: str) -> str | None:
    """The open-interest file to use for candles of ``timeframe``: the same timeframe, else
    the coarsest stored one that divides it (5m OI for 1h candles); None when none is stored."""
    from liqsignal.data.liquidations import divisor_file
    from liqsignal.data.store import FeatherStore
    from liqsignal.data.timeline import timeframe_seconds

    assert isinstance(store, FeatherStore)
    path = store.path(exchange, pair, timeframe, "open_interest")
    if path.is_file():
        return timeframe
    best = divisor_file(path.parent, pair, "open_interest", 1000 * timeframe_seconds(timeframe))
    return None if best is None else best[1]


def store_dataset(
    datadir: str | Path,
    exchange: str,
    pair: str,
    timeframe: str = "1h",
    *,
    n_folds: int = 3,
    warmup: int = 200,
    name: str | None = None,
    fine_timeframe: str | None = "1h",
) -> Dataset:
    """One market's dataset from a Freqtrade-layout data folder (``user_data/data``).

    Read from ``<datadir>/<exchange>/futures/``: candles ``<PAIR>-<tf>-futures.feather``; open
    interest ``<PAIR>-<tf>-open_interest.feather`` (or a finer stored timeframe dividing
    ``tf``), a row dated D known at D + its timeframe; funding ``<PAIR>-1h-funding_rate.feather``
    (optional: NaN without it); realized liquidations from the liquidation store
    (``futures/liqsignal/<PAIR>-<tf>-liquidations.feather``, or the bars built from stored
    events and their covered spans, see :meth:`LiquidationStore.bars`). OI and funding are
    merged point in time (:func:`liqsignal.data.timeline.merge_point_in_time`); candles before
    the first known OI are dropped (the map cannot run there). Bars whose realized liquidations
    are unknown keep their candles (the map needs every bar) with ``realized_*_usd`` NaN.
    When ``timeframe`` is coarser than ``fine_timeframe`` and that candle file is stored, its
    candles are the dataset's finer candles (as the bundled 4h sets carry 1h candles).

    Raises :class:`InputError` naming the missing file, or how many bars have candles, OI and
    realized liquidations known against the ``min_bars(n_folds, warmup)`` the folds need.
    """
    from liqsignal.data.liquidations import LiquidationStore, realized_from_store
    from liqsignal.data.store import FeatherStore
    from liqsignal.data.timeline import merge_point_in_time, timeframe_seconds

    store = FeatherStore(datadir)
    where = f"{exchange} {pair} {timeframe}"
    cpath = store.path(exchange, pair, timeframe, "futures")
    candles = store.read(exchange, pair, timeframe, "futures")
    if candles.empty:
        raise InputError(f"{where}: no candles stored: {cpath} is missing or empty")
    oi_tf = _stored_oi_timeframe(store, exchange, pair, timeframe)
    oi = store.read(exchange, pair, oi_tf, "open_interest") if oi_tf else None
    if oi is None or oi.dropna(subset=_OI_COLS, how="all").empty:
        raise InputError(
            f"{where}: no open interest stored: "
            f"{store.path(exchange, pair, timeframe, 'open_interest')} (or a finer timeframe "
            "dividing it) is missing or empty; the map and its controls need it "
            f"(liqsignal download -m {pair} -e {exchange} -t {timeframe} "
            "--candle-types open_interest)"
        )
    df = candles.loc[:, ["date", "open", "high", "low", "close", "volume"]]
    df = merge_point_in_time(df, oi, _OI_COLS, timeframe=timeframe, other_timeframe=str(oi_tf))
    if df["open_interest_value"].isna().all():
        df["open_interest_value"] = df["open_interest_amount"] * df["close"]
    else:
        df = df.drop(columns=["open_interest_amount"])
    funding = store.read(exchange, pair, FUNDING_TF, "funding_rate")
    df = merge_point_in_time(
        df, funding, ["funding_rate"], timeframe=timeframe, other_timeframe=FUNDING_TF
    )
    df = df[np.isfinite(df["open_interest_value"].to_numpy(dtype=np.float64))]
    df = df.reset_index(drop=True)

    lstore = LiquidationStore(datadir)
    real = realized_from_store(datadir, exchange, pair, timeframe)
    if real.empty:
        raise InputError(
            f"{where}: no realized liquidations stored: neither "
            f"{lstore.bars_path(exchange, pair, timeframe)} nor "
            f"{lstore.events_path(exchange, pair)} with covered spans "
            f"({lstore.spans_path(exchange, pair)}); see liqsignal watch, download "
            "--liquidations, import-liquidations"
        )
    # NaN where the store has no bar: outside the stored span, as unknown as a gap
    df = df.merge(real, on="date", how="left")
    known = int(
        (np.isfinite(df["realized_long_usd"]) & np.isfinite(df["realized_short_usd"])).sum()
    )
    need = min_bars(n_folds, warmup)
    if len(df) < need or known < need - warmup:
        raise InputError(
            f"{where}: too little data: {len(df)} bars with candles and open interest, {known} "
            f"of them with realized liquidations known ({len(df) - known} unknown: no coverage "
            f"or a recorded gap); {n_folds} folds after a warm-up of {warmup} need at least "
            f"{need} bars, {need - warmup} of them known (candles {cpath}, realized "
            f"{lstore.bars_path(exchange, pair, timeframe)})"
        )
    fine = None
    if fine_timeframe and timeframe_seconds(fine_timeframe) < timeframe_seconds(timeframe):
        f = store.read(exchange, pair, fine_timeframe, "futures")
        if len(f):
            tf = pd.Timedelta(seconds=timeframe_seconds(timeframe))
            d = f["date"]
            span = (d >= df["date"].iloc[0]) & (d < df["date"].iloc[-1] + tf)
            fine = f.loc[span, ["date", "open", "high", "low", "close", "volume"]]
            fine = fine.reset_index(drop=True)
    src = (
        f"store {datadir}: {exchange} candles, OI ({oi_tf}), "
        f"{'no funding' if funding.empty else 'funding'}, realized liquidations "
        f"({known} of {len(df)} bars known)"
    )
    return Dataset(name or f"{exchange}:{pair}:{timeframe}", pair, timeframe, df, src, fine)
