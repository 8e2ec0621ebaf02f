"""Predicted versus realized liquidations: rank correlations against a move-and-OI baseline.

The per-bar check (issue "engine"): Spearman rank correlation of ``liq_pred_long_usd`` with
realized long liquidations (short likewise), the same for a baseline that knows only the bar's
move and the previous open interest, and the partial rank correlation of the map with realized
given the baseline. Small effects are reported as small; nothing here is tuned on test data.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from liqsignal.config import MapConfig
from liqsignal.datasets import BUNDLED_COINGLASS, load_coinglass
from liqsignal.exceptions import InputError
from liqsignal.features import compute_features

__all__ = [
    "BUNDLED_COINGLASS",
    "BUNDLED_EVENTS",
    "ArmedEvaluation",
    "BarEvaluation",
    "EventBandEvaluation",
    "TouchEvaluation",
    "baseline_predictions",
    "cascade_onsets",
    "evaluate_armed",
    "evaluate_bars",
    "evaluate_event_bands",
    "evaluate_touches",
    "load_candles",
    "load_coinglass",
    "load_events",
    "partial_spearman",
    "spearman",
]


def baseline_predictions(df: pd.DataFrame) -> pd.DataFrame:
    """Move-and-OI baseline: long = max(0, prev_close - low) / prev_close * prev_OI (USD)."""
    pc = df["close"].shift(1)
    if "open_interest_value" in df.columns:
        poi = df["open_interest_value"].shift(1)
    else:
        poi = (df["open_interest_amount"] * df["close"]).shift(1)
    long_ = np.maximum(0.0, pc - df["low"]) / pc * poi
    short = np.maximum(0.0, df["high"] - pc) / pc * poi
    return pd.DataFrame({"base_long_usd": long_, "base_short_usd": short}, index=df.index)


def spearman(a: np.ndarray | pd.Series, b: np.ndarray | pd.Series) -> float:
    """Spearman rank correlation (average ranks for ties); NaN pairs are excluded (NaN when
    fewer than 3 pairs or a constant): ``liqsignal.stats.spearman_fast``."""
    from liqsignal.stats import spearman_fast

    return spearman_fast(np.asarray(a, dtype=np.float64), np.asarray(b, dtype=np.float64))


def partial_spearman(model: np.ndarray, real: np.ndarray, base: np.ndarray) -> float:
    """Partial rank correlation of ``model`` with ``real`` given ``base``."""
    m = np.asarray(model, dtype=np.float64)
    r = np.asarray(real, dtype=np.float64)
    b = np.asarray(base, dtype=np.float64)
    ok = np.isfinite(m) & np.isfinite(r) & np.isfinite(b)
    r_mr = spearman(m[ok], r[ok])
    r_br = spearman(b[ok], r[ok])
    r_mb = spearman(m[ok], b[ok])
    den = math.sqrt(max(1e-300, (1 - r_br**2) * (1 - r_mb**2)))
    return (r_mr - r_br * r_mb) / den


@dataclass(frozen=True)
class BarEvaluation:
    """Per-bar rank figures for one side."""

    side: str
    bars: int
    model_spearman: float
    baseline_spearman: float
    partial_given_baseline: float
    model_baseline_spearman: float
    zero_prediction_share: float

    def to_dict(self) -> dict[str, float | int | str]:
        return asdict(self)


def evaluate_bars(
    df: pd.DataFrame,
    features: pd.DataFrame | None = None,
    config: MapConfig | None = None,
    *,
    warmup: int = 200,
) -> list[BarEvaluation]:
    """Rank figures per side on a frame with ``realized_long_usd`` / ``realized_short_usd``."""
    for c in ("realized_long_usd", "realized_short_usd"):
        if c not in df.columns:
            raise InputError(f"evaluate: missing realized liquidation column {c!r}")
    if len(df) <= warmup + 3:
        raise InputError(f"evaluate: {len(df)} bars is too few for a warm-up of {warmup}")
    feats = features if features is not None else compute_features(df, config)
    assert isinstance(feats, pd.DataFrame)
    base = baseline_predictions(df)
    out = []
    for side in ("long", "short"):
        pred = feats[f"liq_pred_{side}_usd"].to_numpy()[warmup:]
        real = df[f"realized_{side}_usd"].to_numpy()[warmup:]
        b = base[f"base_{side}_usd"].to_numpy()[warmup:]
        out.append(
            BarEvaluation(
                side=side,
                bars=len(pred),
                model_spearman=spearman(pred, real),
                baseline_spearman=spearman(b, real),
                partial_given_baseline=partial_spearman(pred, real, b),
                model_baseline_spearman=spearman(pred, b),
                zero_prediction_share=float(np.mean(pred == 0)),
            )
        )
    return out


# ------------------------------------------------------------------------------------------
# Event lists, cluster touches, armed flags: each figure with its random baseline.
# ------------------------------------------------------------------------------------------

BUNDLED_EVENTS = Path(__file__).parent / "resources" / "liquidations_hyperliquid.parquet"

#: Where the bundled Binance candles live in a source checkout (not in an installed wheel).
REPO_DATADIR = Path(__file__).resolve().parents[1] / "user_data" / "data"

_SIDE_WORDS = {
    "long": "long",
    "short": "short",
    "sell": "long",  # a long is liquidated by a forced sell
    "buy": "short",
}


def load_events(path: str | Path = BUNDLED_EVENTS, coin: str | None = None) -> pd.DataFrame:
    """Per-event liquidations as ``timestamp, coin, side, price, size_usd``.

    Accepts parquet or CSV with ``timestamp`` (datetime or ms), ``price``, ``size_usd`` (or
    ``size`` in base units), optional ``side`` and ``coin``. ``side`` becomes ``long`` / ``short``
    when it says so (``long``/``short``, or ``sell``/``buy`` for the forced order), else
    ``unknown``: the bundled Hyperliquid file marks every row ``S`` although its BTC events sit
    near bar highs and its DOGE events near bar lows, so its side is treated as unknown and an
    event counts against the bands on whichever side of price it fell.
    """
    p = Path(path)
    if not p.is_file():
        raise InputError(f"no event file at {p}")
    raw = pd.read_parquet(p) if p.suffix == ".parquet" else pd.read_csv(p)
    for c in ("timestamp", "price"):
        if c not in raw.columns:
            raise InputError(f"{p}: missing event column {c!r}")
    ts = raw["timestamp"]
    if pd.api.types.is_numeric_dtype(ts):
        ts = pd.to_datetime(ts, unit="ms", utc=True)
    else:
        ts = pd.to_datetime(ts, utc=True)
    price = raw["price"].astype(float)
    if "size_usd" in raw.columns:
        size = raw["size_usd"].astype(float)
    elif "size" in raw.columns:
        size = raw["size"].astype(float) * price
    else:
        raise InputError(f"{p}: need column 'size_usd' (USD) or 'size' (base units)")
    side = (
        raw["side"].astype(str).str.lower().map(_SIDE_WORDS).fillna("unknown")
        if "side" in raw.columns
        else pd.Series("unknown", index=raw.index)
    )
    out = pd.DataFrame(
        {
            "timestamp": pd.DatetimeIndex(ts),
            "coin": raw["coin"].astype(str).to_numpy() if "coin" in raw.columns else "",
            "side": side.to_numpy(),
            "price": price.to_numpy(),
            "size_usd": size.to_numpy(),
        }
    )
    bad = ~(np.isfinite(out["price"]) & (out["price"] > 0) & np.isfinite(out["size_usd"]))
    if bad.any():
        raise InputError(f"{p}: bad price or size at row {int(np.flatnonzero(bad)[0])}")
    if coin is not None:
        out = out[out["coin"].str.upper() == coin.upper()]
    return out.sort_values("timestamp", kind="stable").reset_index(drop=True)


def load_candles(datadir: str | Path, coin: str, timeframe: str = "1h") -> pd.DataFrame:
    """Stored futures candles of ``coin``/USDT:USDT with open interest and funding merged point
    in time, through the one stored-market path (:func:`liqsignal.data.provider.
    read_stored_market`; no stored OI: the candles alone). ``datadir`` is an exchange's
    ``<datadir>/<exchange>/futures`` folder (the exchange is its parent's name) or a store root
    (then Binance's)."""
    from liqsignal.data.provider import read_stored_market

    base = Path(datadir)
    root, exchange = (
        (base.parent.parent, base.parent.name) if base.name == "futures" else (base, "binance")
    )
    path = root / exchange / "futures" / f"{coin.upper()}_USDT_USDT-{timeframe}-futures.feather"
    if not path.is_file():
        raise InputError(f"no candles for {coin} at {path}")
    pair = f"{coin.upper()}/USDT:USDT"
    stored = read_stored_market(pair, [exchange], timeframe, root, missing_oi="proxy")
    frame = stored.frames[0]
    if frame is None or frame.empty:
        raise InputError(f"no closed candles for {coin} at {path}")
    return frame


@dataclass(frozen=True)
class BandSet:
    """Dense bands on one bar as distances from the reference price (fractions, signed)."""

    ref: float
    lo: np.ndarray  # signed fractional distance of each band's lower edge from ref
    hi: np.ndarray  # ... and of its upper edge (long bands negative, short bands positive)
    side: np.ndarray  # 0 long, 1 short


def _bands_of(lmap: Any, scan_range_pct: float | None) -> BandSet:
    from liqsignal.clusters import clusters_from_state

    ref = lmap.reference_price()
    if not math.isfinite(ref):
        return BandSet(ref, np.zeros(0), np.zeros(0), np.zeros(0, dtype=np.int64))
    cl = clusters_from_state(lmap, ref, 50, scan_range_pct)
    lo = np.array([c.low / ref - 1.0 for c in cl])
    hi = np.array([c.high / ref - 1.0 for c in cl])
    side = np.array([0 if c.side == "long" else 1 for c in cl], dtype=np.int64)
    return BandSet(ref, lo, hi, side)


def _captured(prices: np.ndarray, sides: np.ndarray, ref: float, bands: BandSet) -> np.ndarray:
    """Which events (price, side code: 0 long, 1 short, -1 unknown) fall in a band."""
    if bands.lo.size == 0 or prices.size == 0:
        return np.zeros(prices.size, dtype=bool)
    rel = prices[:, None] / ref - 1.0
    inside = (rel >= bands.lo[None, :] - 1e-12) & (rel <= bands.hi[None, :] + 1e-12)
    side_ok = (sides[:, None] < 0) | (sides[:, None] == bands.side[None, :])
    return np.asarray((inside & side_ok).any(axis=1))


@dataclass(frozen=True)
class EventBandEvaluation:
    """Realized event notional inside the predicted dense bands, against random bands."""

    market: str
    events: int
    events_usd: float
    bars_with_events: int
    horizon_bars: int
    model_share: float  # share of event USD inside bands predicted at the previous bar's close
    random_share_mean: float  # same, bands of random other bars placed at this bar's price
    random_share_p95: float
    p_value: float  # share of random draws at least as high as the model
    band_width_pct_mean: float  # mean summed band width per bar, percent of price
    proxy_mode: bool
    random_shares: tuple[float, ...] = ()

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d.pop("random_shares")
        return d


def evaluate_event_bands(
    bars: pd.DataFrame,
    events: pd.DataFrame,
    config: MapConfig | None = None,
    *,
    proxy: bool = False,
    market: str = "",
    scan_range_pct: float | None = None,
    horizon_bars: int = 1,
    n_random: int = 500,
    seed: int = 0,
) -> EventBandEvaluation:
    """Share of event notional that fell inside the bands predicted one bar earlier.

    The map is built point in time over all of ``bars``; for every bar from the first event's
    bar to the last, the dense bands (all clusters within the scan range) are read at the
    previous bar's close and expressed as distances from that close. An event of bar t counts
    when its price lies in one of those bands (on its own side when the side is known).
    Random bands: the band set of a randomly drawn other bar of the window, at the same
    distances from price, placed at bar t's reference price (``n_random`` draws). So the random
    bands have the distances, widths and number of the predicted ones; only the timing is lost.
    """
    from liqsignal.engine import LiquidationMap
    from liqsignal.features import _seconds, prepare_inputs, validate_frame

    cfg = config or MapConfig()
    validate_frame(bars, need_oi=not proxy, name=f"{market or 'bars'} candles")
    if len(events) == 0:
        raise InputError("evaluate_event_bands: no events")
    dates = pd.DatetimeIndex(bars["date"]).as_unit("ns")
    step = dates[1:] - dates[:-1]
    if len(dates) < 3:
        raise InputError("evaluate_event_bands: need at least 3 bars")
    tf = pd.Timedelta(np.median(step.asi8), unit="ns")
    ev_bar = pd.DatetimeIndex(events["timestamp"]).as_unit("ns").floor(tf)
    pos = dates.get_indexer(ev_bar)
    keep = pos > 0  # the band needs the previous bar's close
    if not keep.any():
        raise InputError(f"{market}: no event falls in the candles ({dates[0]} .. {dates[-1]})")
    pos = pos[keep]
    prices = events["price"].to_numpy(dtype=np.float64)[keep]
    size = events["size_usd"].to_numpy(dtype=np.float64)[keep]
    sides = events["side"].map({"long": 0, "short": 1}).fillna(-1).to_numpy(dtype=np.int64)[keep]
    if horizon_bars < 1:
        raise InputError("evaluate_event_bands: horizon_bars must be >= 1")
    first, last = max(int(pos.min()) - horizon_bars + 1, 1), int(pos.max())
    lmap = LiquidationMap(cfg, proxy=proxy)
    x = prepare_inputs(bars, proxy=proxy)[:, None, :]
    ts = _seconds(bars["date"])
    lmap.update(ts[:first], x[:first])
    band_sets: list[BandSet] = []
    for t in range(first, last + 1):
        band_sets.append(_bands_of(lmap, scan_range_pct))  # state at bar t-1's close
        lmap.update(ts[t : t + 1], x[t : t + 1])
    by_bar: dict[int, np.ndarray] = {}
    for t in np.unique(pos):
        by_bar[int(t)] = np.flatnonzero(pos == t)
    total = float(size.sum())

    def share(assign: list[BandSet] | None) -> float:
        got = 0.0
        for t, idx in by_bar.items():
            hit = np.zeros(idx.size, dtype=bool)
            for k in range(max(t - horizon_bars + 1, first), t + 1):
                own = band_sets[k - first]  # bands read at bar k-1's close
                b = own if assign is None else assign[k - first]
                placed = BandSet(own.ref, b.lo, b.hi, b.side)
                hit |= _captured(prices[idx], sides[idx], own.ref, placed)
            got += float(size[idx][hit].sum())
        return got / total if total > 0 else math.nan

    model = share(None)
    rng = np.random.default_rng(seed)
    rand = []
    n_sets = len(band_sets)
    for _ in range(n_random):
        draw = rng.integers(0, n_sets, size=n_sets)
        rand.append(share([band_sets[i] for i in draw]))
    r = np.asarray(rand)
    widths = [float(np.sum(b.hi - b.lo)) * 100.0 for b in band_sets]
    return EventBandEvaluation(
        market=market,
        events=int(keep.sum()),
        events_usd=total,
        bars_with_events=len(by_bar),
        horizon_bars=horizon_bars,
        model_share=model,
        random_share_mean=float(r.mean()) if r.size else math.nan,
        random_share_p95=float(np.percentile(r, 95)) if r.size else math.nan,
        p_value=float((np.sum(r >= model) + 1) / (r.size + 1)),
        band_width_pct_mean=float(np.mean(widths)) if widths else 0.0,
        proxy_mode=proxy,
        random_shares=tuple(float(v) for v in r),
    )


@dataclass(frozen=True)
class TouchEvaluation:
    """Share of top-K clusters price reached within H bars, against levels at the same
    distances at random times."""

    side: str
    top_k: int
    horizon_bars: int
    origins: int
    clusters: int
    model_touch_share: float
    random_touch_share: float  # expected share for levels at the same distances, any time
    z: float  # (model - random) / binomial standard error (origins are H bars apart)
    median_distance_pct: float
    distances_pct: tuple[float, ...] = ()
    touched: tuple[bool, ...] = ()
    curve_distance_pct: tuple[float, ...] = ()
    curve_random_share: tuple[float, ...] = ()

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        for k in ("distances_pct", "touched", "curve_distance_pct", "curve_random_share"):
            d.pop(k)
        return d


def _excursions(df: pd.DataFrame, horizon: int) -> tuple[np.ndarray, np.ndarray]:
    """Per bar t: the largest fall (low) and rise (high) over bars t+1..t+H, as fractions of
    the close of t; NaN where the horizon runs past the data."""
    c = df["close"].to_numpy(dtype=np.float64)
    lo = df["low"].to_numpy(dtype=np.float64)
    hi = df["high"].to_numpy(dtype=np.float64)
    n = len(c)
    down = np.full(n, np.nan)
    up = np.full(n, np.nan)
    if n > horizon:
        lo_w = np.lib.stride_tricks.sliding_window_view(lo[1:], horizon).min(axis=1)
        hi_w = np.lib.stride_tricks.sliding_window_view(hi[1:], horizon).max(axis=1)
        m = lo_w.size
        down[:m] = 1.0 - lo_w / c[:m]
        up[:m] = hi_w / c[:m] - 1.0
    return down, up


def evaluate_touches(
    df: pd.DataFrame,
    config: MapConfig | None = None,
    *,
    top_k: int = 3,
    horizon_bars: int = 24,
    warmup: int = 200,
    proxy: bool = False,
    scan_range_pct: float | None = None,
) -> list[TouchEvaluation]:
    """Did price reach the biggest clusters within H bars, more often than levels as far away?

    Origins every ``horizon_bars`` bars after the warm-up (so windows do not overlap). At each,
    the ``top_k`` clusters per side by USD within the scan range; a long cluster is touched
    when a low within the next H bars reaches its upper (near) edge, a short one when a high
    reaches its lower edge. The random baseline for a cluster at near-edge distance d is the
    share of *all* bars (after warm-up, full horizon available) from which price moved at
    least d that way within H bars: random levels at the same distances at random times.
    """
    from liqsignal.clusters import clusters_from_state
    from liqsignal.engine import LiquidationMap
    from liqsignal.features import _seconds, prepare_inputs, validate_frame

    cfg = config or MapConfig()
    validate_frame(df, need_oi=not proxy)
    if horizon_bars < 1 or top_k < 1:
        raise InputError("evaluate_touches: horizon_bars and top_k must be >= 1")
    down, up = _excursions(df, horizon_bars)
    n = len(df)
    origins = list(range(max(warmup, 1) - 1, n - horizon_bars, horizon_bars))
    if len(origins) < 2:
        raise InputError(f"evaluate_touches: {n} bars is too few for H={horizon_bars}")
    lmap = LiquidationMap(cfg, proxy=proxy)
    x = prepare_inputs(df, proxy=proxy)[:, None, :]
    ts = _seconds(df["date"])
    done = 0
    dist: dict[str, list[float]] = {"long": [], "short": []}
    hit: dict[str, list[bool]] = {"long": [], "short": []}
    for t in origins:
        lmap.update(ts[done : t + 1], x[done : t + 1])
        done = t + 1
        ref = lmap.reference_price()
        if not math.isfinite(ref):
            continue
        cl = clusters_from_state(lmap, ref, 50, scan_range_pct)
        for side, move in (("long", down[t]), ("short", up[t])):
            mine = sorted((c for c in cl if c.side == side), key=lambda c: -c.usd)[:top_k]
            for c in mine:
                d = (ref - c.high) / ref if side == "long" else (c.low - ref) / ref
                d = max(d, 0.0)
                dist[side].append(d)
                hit[side].append(bool(move >= d))
    valid = np.arange(n) >= max(warmup, 1) - 1
    out = []
    for side, move_all in (("long", down), ("short", up)):
        mv = move_all[valid & np.isfinite(move_all)]
        mv_sorted = np.sort(mv)
        d_arr = np.asarray(dist[side])
        h_arr = np.asarray(hit[side], dtype=bool)

        def p_touch(d: np.ndarray, mv_sorted: np.ndarray = mv_sorted) -> np.ndarray:
            if mv_sorted.size == 0:
                return np.full(d.shape, np.nan)
            return 1.0 - np.searchsorted(mv_sorted, d, side="left") / mv_sorted.size

        p = p_touch(d_arr)
        k = d_arr.size
        model = float(h_arr.mean()) if k else math.nan
        rand = float(p.mean()) if k else math.nan
        se = math.sqrt(float(np.sum(p * (1 - p)))) / k if k else math.nan
        grid = np.linspace(0.0, max(float(d_arr.max()) if k else 0.05, 0.01), 60)
        out.append(
            TouchEvaluation(
                side=side,
                top_k=top_k,
                horizon_bars=horizon_bars,
                origins=len(origins),
                clusters=k,
                model_touch_share=model,
                random_touch_share=rand,
                z=(model - rand) / se if k and se > 0 else math.nan,
                median_distance_pct=float(np.median(d_arr)) * 100 if k else math.nan,
                distances_pct=tuple(float(v) * 100 for v in d_arr),
                touched=tuple(bool(v) for v in h_arr),
                curve_distance_pct=tuple(float(v) * 100 for v in grid),
                curve_random_share=tuple(float(v) for v in p_touch(grid)),
            )
        )
    return out


def cascade_onsets(
    realized: np.ndarray, *, ratio: float = 5.0, window: int = 168, min_usd: float = 0.0
) -> np.ndarray:
    """Bars where a cascade starts: realized liquidations at least ``ratio`` x their trailing
    mean over the previous ``window`` bars (and ``min_usd``), the bar before not a cascade bar.
    """
    r = np.asarray(realized, dtype=np.float64)
    r0 = np.where(np.isfinite(r), r, 0.0)
    csum = np.concatenate([[0.0], np.cumsum(r0)])
    n = r.size
    idx = np.arange(n)
    lo = np.maximum(idx - window, 0)
    cnt = idx - lo
    with np.errstate(invalid="ignore", divide="ignore"):
        mean = (csum[idx] - csum[lo]) / cnt
    bar = (cnt >= window) & (r0 >= ratio * mean) & (r0 >= min_usd) & (r0 > 0)
    prev = np.concatenate([[False], bar[:-1]])
    return np.asarray(bar & ~prev)


def _flag_scores(
    flags: np.ndarray, onsets: np.ndarray, horizon: int
) -> tuple[float, float, list[int]]:
    """Precision (flag bars followed by an onset within 1..H bars), recall (onsets with a flag
    in the H bars before) and lead times (bars from the first such flag to the onset)."""
    f = np.flatnonzero(flags)
    o = np.flatnonzero(onsets)
    if f.size == 0:
        prec = math.nan
    elif o.size == 0:
        prec = 0.0
    else:
        j = np.searchsorted(o, f + 1, side="left")  # first onset after each flag
        has = j < o.size
        gap = np.where(has, o[np.minimum(j, o.size - 1)] - f, horizon + 1)
        prec = float(np.mean(gap <= horizon))
    leads: list[int] = []
    caught = 0
    for on in o:
        k0 = np.searchsorted(f, on - horizon, side="left")
        k1 = np.searchsorted(f, on, side="left")
        if k1 > k0:
            caught += 1
            leads.append(int(on - f[k0]))
    rec = caught / o.size if o.size else math.nan
    return prec, rec, leads


@dataclass(frozen=True)
class ArmedEvaluation:
    """Armed flags as a forecast of cascades, against randomly shifted flags at the same rate."""

    side: str
    bars: int
    flags: int
    flag_rate: float
    cascades: int
    horizon_bars: int
    precision: float
    recall: float
    lead_bars_median: float
    random_precision_mean: float
    random_precision_p95: float
    random_recall_mean: float
    random_recall_p95: float
    cascade_base_rate: float  # share of bars followed by an onset within H bars
    p_value_recall: float
    random_precisions: tuple[float, ...] = ()
    random_recalls: tuple[float, ...] = ()

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d.pop("random_precisions")
        d.pop("random_recalls")
        return d


def evaluate_armed(
    df: pd.DataFrame,
    features: pd.DataFrame,
    *,
    horizon_bars: int = 6,
    ratio: float = 5.0,
    window: int = 168,
    warmup: int = 200,
    n_random: int = 500,
    seed: int = 0,
) -> list[ArmedEvaluation]:
    """Per side: does ``liq_<side>_armed`` at a bar's close precede a cascade of realized
    ``<side>`` liquidations within ``horizon_bars``?

    Random flags: the model's own flag series shifted circularly by a random offset (same rate,
    same clumping), ``n_random`` times.
    """
    out = []
    rng = np.random.default_rng(seed)
    for side in ("long", "short"):
        real = df[f"realized_{side}_usd"].to_numpy(dtype=np.float64)[warmup:]
        flags = features[f"liq_{side}_armed"].to_numpy(dtype=np.float64)[warmup:] > 0
        onsets = cascade_onsets(real, ratio=ratio, window=window)
        onsets[: min(window, onsets.size)] = False
        n = real.size
        prec, rec, leads = _flag_scores(flags, onsets, horizon_bars)
        rp, rr = [], []
        if flags.any() and n > 2 * horizon_bars:
            for _ in range(n_random):
                s = int(rng.integers(horizon_bars, n - horizon_bars))
                p_, r_, _ = _flag_scores(np.roll(flags, s), onsets, horizon_bars)
                rp.append(p_)
                rr.append(r_)
        rpa = np.asarray(rp, dtype=np.float64)
        rra = np.asarray(rr, dtype=np.float64)
        o = np.flatnonzero(onsets)
        base = np.zeros(n, dtype=bool)
        for on in o:
            base[max(0, on - horizon_bars) : on] = True
        out.append(
            ArmedEvaluation(
                side=side,
                bars=n,
                flags=int(flags.sum()),
                flag_rate=float(flags.mean()) if n else math.nan,
                cascades=int(o.size),
                horizon_bars=horizon_bars,
                precision=prec,
                recall=rec,
                lead_bars_median=float(np.median(leads)) if leads else math.nan,
                random_precision_mean=float(np.nanmean(rpa)) if rpa.size else math.nan,
                random_precision_p95=float(np.nanpercentile(rpa, 95)) if rpa.size else math.nan,
                random_recall_mean=float(np.nanmean(rra)) if rra.size else math.nan,
                random_recall_p95=float(np.nanpercentile(rra, 95)) if rra.size else math.nan,
                cascade_base_rate=float(base.mean()) if n else math.nan,
                p_value_recall=(
                    float((np.sum(rra >= rec) + 1) / (rra.size + 1))
                    if rra.size and math.isfinite(rec)
                    else math.nan
                ),
                random_precisions=tuple(float(v) for v in rpa),
                random_recalls=tuple(float(v) for v in rra),
            )
        )
    return out
