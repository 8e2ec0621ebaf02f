"""Numba kernels of the liquidation map: numpy in, numpy out; no pandas, ccxt or logging.

The whole per-bar model (DESIGN.md order: consume, open, close, fade, read) is one kernel,
``run_nb``, that advances a state held in plain arrays over any number of bars. A full build is a
run over all bars from a fresh state; an incremental update is the same kernel over the new bars,
so both give the same numbers by construction. ``run_nb`` is a loop over bars calling one small
kernel per step (``_consume_nb``, ``_open_nb``, ``_close_nb``, ``_fade_nb``, ``_read_side_nb``,
``_flush_nb``, ``_heatmap_frame_nb``), each inlined into it.

Arrays (all float64 unless said):

- ``ts[n]``: bar open time in seconds; ``x[n, n_ex, 8]``: per bar and exchange
  ``open, high, low, close, volume, oi_amount, taker_buy_volume, funding_rate`` (NaN close: the
  exchange has no bar, as with any close that is not finite and > 0; NaN oi: no OI change known
  this bar; NaN taker/funding: unknown).
- ``p[len(Param)]``: parameters, ``p[Param.scan_range]`` and so on (``PARAM_NAMES`` order).
- ``factors[n_ex, 2, n_lev]``: liquidation price / entry price, long (0) and short (1);
  ``log_factors``: ``log(factors) / grid step`` (used by the relative grid; 0 where factor <= 0);
  ``weights[n_ex, n_lev]``; ``proxy[n_ex]`` (int64): 1 = volume-proxy mode for that exchange.
- State: ``g[G_SIZE]`` global scalars; ``ex[n_ex, X_SIZE]`` per-exchange scalars;
  ``long_raw[n_ex, n_bins]``, ``short_raw[n_ex, n_bins]``: notional divided by the side's running
  scale (decay and pro-rata closes multiply the scale, not the bins).
- ``work[1, n_bins + 2]``: scratch (one side's scanned bins); ``hm[F, 2, rows]`` and
  ``hm_meta[F, 4]``: heatmap ring buffer.
- ``out[N_OUT, n]``: features per bar, ``out[Out.liq_flush, t]`` and so on (``OUT_NAMES`` order).

Every setting reaches the kernels as an argument. The only module-level names they read are the
layout constants below (array indices: plain ints, ``IntEnum`` members and a ``NamedTuple`` of
ints), fixed in this file: numba freezes them at compile time as constants and its cache is
invalidated whenever this file changes, so they cannot go stale. ``Param`` and ``Out`` are the one
source of the parameter and column names: ``PARAM_NAMES`` and ``OUT_NAMES`` are derived from them.
"""

from __future__ import annotations

import math
from enum import IntEnum, unique
from typing import Any, NamedTuple

import numpy as np
from numba import njit

# Column layout of x
I_OPEN, I_HIGH, I_LOW, I_CLOSE, I_VOL, I_OI, I_TAKER, I_FUND = 0, 1, 2, 3, 4, 5, 6, 7
N_IN = 8

# Global state g
G_INIT = 0  # 1 once the grid is placed
G_ORIGIN = 1  # linear: price of bin 0; log: log(price of bin 0)
G_LAST_TS = 2
G_NBARS = 3
G_EMA_LC = 4  # EMA of nearest long cluster USD
G_EMA_SC = 5
G_EMA_OI = 6  # EMA of summed OI notional
G_EMA_CONS = 7  # EMA of consumed notional
G_DROPPED = 8  # cumulative notional that left the window
G_SINCE_FLUSH = 9  # bars since last flush, -1 never
G_FRAMES = 10  # heatmap frames written
G_NEXT_FRAME = 11  # ts at/after which the next frame is written
G_OPENED = 12  # cumulative notional opened
G_CONSUMED = 13  # cumulative notional consumed
G_CLOSED = 14  # cumulative notional removed by OI decreases
G_DECAYED = 15  # cumulative notional faded by decay
G_FADE_DT = 16  # last bar spacing, and its decay factor (cache of one exp)
G_FADE_F = 17
G_SIZE = 18

# Per-exchange state ex
X_SCALE_L, X_SCALE_S, X_TOT_L, X_TOT_S, X_PREV_OI, X_LTOP, X_SBOT, X_LAST_CLOSE = range(8)
X_SIZE = 8


@unique
class Param(IntEnum):
    """Position of each float parameter in ``p`` (``MapConfig.kernel_params`` builds it by name)."""

    grid_mode = 0  # 0 absolute step, 1 relative step
    grid_step = 1  # USD per bin, or log(1 + bps/1e4)
    half_life_s = 2
    entry_spread = 3
    direction_long_share = 4
    close_long_share = 5  # -1: pro rata to standing notional
    proxy_volume_share = 6
    density_band = 7
    scan_range = 8
    smooth_half_bins = 9
    cluster_threshold = 10
    cluster_min_usd = 11
    merge_gap_bins = 12
    cascade_gap = 13
    cascade_max_depth = 14
    armed_distance = 15
    armed_size_ratio = 16
    armed_oi_ratio = 17
    armed_funding_min = 18
    ema_alpha = 19
    flush_ratio = 20
    flush_min_usd = 21
    recentre_frac = 22
    heatmap_every_s = 23
    heatmap_bins_per_row = 24
    churn_volume_share = 25
    intrabar_share = 26
    close_relative = 27
    contrast_window = 28  # fraction of price; 0: dense against the scan window's mean


@unique
class Out(IntEnum):
    """Row of each feature column in ``out`` (the names are the ``liq_*`` column names)."""

    liq_pred_long_usd = 0
    liq_pred_short_usd = 1
    liq_long_cluster_price = 2
    liq_long_cluster_usd = 3
    liq_long_cluster_dist_pct = 4
    liq_long_cluster_low = 5
    liq_long_cluster_high = 6
    liq_short_cluster_price = 7
    liq_short_cluster_usd = 8
    liq_short_cluster_dist_pct = 9
    liq_short_cluster_low = 10
    liq_short_cluster_high = 11
    liq_long_cascade_depth = 12
    liq_long_cascade_usd = 13
    liq_long_cascade_end = 14
    liq_short_cascade_depth = 15
    liq_short_cascade_usd = 16
    liq_short_cascade_end = 17
    liq_long_density_usd = 18
    liq_short_density_usd = 19
    liq_long_armed = 20
    liq_long_armed_score = 21
    liq_short_armed = 22
    liq_short_armed_score = 23
    liq_flush = 24
    liq_bars_since_flush = 25
    liq_long_total_usd = 26
    liq_short_total_usd = 27
    liq_opened_usd = 28
    liq_closed_usd = 29
    liq_dropped_usd = 30
    liq_pred_standing_long_usd = 31
    liq_pred_standing_short_usd = 32


#: Parameter names in ``p`` order (``config.PARAM_NAMES`` is this tuple).
PARAM_NAMES: tuple[str, ...] = tuple(Param.__members__)
N_PARAMS = len(Param)
#: Feature column names in ``out`` row order.
OUT_NAMES: tuple[str, ...] = tuple(Out.__members__)
N_OUT = len(Out)


class SideRows(NamedTuple):
    """The rows of ``out`` that one side's read writes (``LONG_ROWS``, ``SHORT_ROWS``)."""

    cluster_price: int
    cluster_usd: int
    cluster_dist_pct: int
    cluster_low: int
    cluster_high: int
    cascade_depth: int
    cascade_usd: int
    cascade_end: int
    density_usd: int
    armed: int
    armed_score: int


def _side_rows(side: str) -> SideRows:
    """``SideRows`` of ``side`` ("long" / "short"), field ``f`` at column ``liq_<side>_<f>``."""
    return SideRows(*(int(Out[f"liq_{side}_{f}"]) for f in SideRows._fields))


LONG_ROWS = _side_rows("long")
SHORT_ROWS = _side_rows("short")

# Cluster record columns (find_clusters_nb output)
C_USD, C_PRICE, C_NEAR, C_FAR, C_NBINS = 0, 1, 2, 3, 4
C_SIZE = 5

_LN2 = math.log(2.0)
#: numba option: compile without reference counting (the function must allocate nothing).
_NO_REFCOUNT: dict[str, Any] = {"_nrt": False}


@njit(cache=True, inline="always")
def price_of_nb(i: float, mode: float, step: float, origin: float) -> float:
    """Price of (fractional) bin ``i``."""
    if mode == 0.0:
        return origin + i * step
    return math.exp(origin + i * step)


@njit(cache=True, inline="always")
def index_of_nb(price: float, mode: float, step: float, origin: float) -> float:
    """Fractional bin index of ``price`` (bin ``i`` is centred on ``price_of_nb(i)``)."""
    if mode == 0.0:
        return (price - origin) / step
    return (math.log(price) - origin) / step


@njit(cache=True)
def place_grid_nb(price: float, n_bins: int, mode: float, step: float) -> float:
    """Origin that centres ``price`` on an aligned grid (multiples of ``step``)."""
    if mode == 0.0:
        return math.floor(price / step + 0.5) * step - (n_bins // 2) * step
    return (math.floor(math.log(price) / step + 0.5) - (n_bins // 2)) * step


@njit(cache=True, inline="always")
def _clip_index_nb(i: float, lo: int, hi: int, nan_to: int) -> int:
    """Bin index ``i`` (a whole float, maybe huge or NaN) as an int clipped to [lo, hi].

    Use ``np.floor`` / ``np.ceil`` (floats) to make ``i``: numba's ``math.floor`` returns an
    int, and an infinite or huge float cast to an int is undefined (a wild index)."""
    if i != i:
        return nan_to
    if i <= lo:
        return lo
    if i >= hi:
        return hi
    return int(i)


@njit(cache=True)
def shift_nb(raw: np.ndarray, k: int) -> float:
    """Shift bins by ``k`` (new[i] = old[i + k]); return the raw mass that fell out."""
    n = raw.shape[0]
    lost = 0.0
    if k >= n or k <= -n:
        for i in range(n):
            lost += raw[i]
            raw[i] = 0.0
        return lost
    if k > 0:
        for i in range(k):
            lost += raw[i]
        for i in range(n - k):
            raw[i] = raw[i + k]
        for i in range(n - k, n):
            raw[i] = 0.0
    elif k < 0:
        m = -k
        for i in range(n - m, n):
            lost += raw[i]
        for i in range(n - 1, m - 1, -1):
            raw[i] = raw[i - m]
        for i in range(m):
            raw[i] = 0.0
    return lost


@njit(cache=True, inline="always")
def spread2_nb(
    raw: np.ndarray,
    e: int,
    a: float,
    b: float,
    cut: float,
    mass: float,
    keep_below: float,
    keep_above: float,
) -> tuple[float, int, int]:
    """Spread ``mass`` uniformly over the fractional bins [a, b] of row ``e``, keeping the share
    ``keep_below`` of the part below ``cut`` and ``keep_above`` of the part above it.

    Bin ``i`` covers [i - 0.5, i + 0.5). Returns (kept mass that fell outside the grid, lowest
    bin touched, highest bin touched); (.., -1, -1) when none. A zero-width interval is a point
    mass at ``a``, kept by the share of the side of ``cut`` it lies on. The work is bounded by
    the grid whatever ``a`` and ``b``: the loop covers the bins inside the grid only, the parts
    of an interval outside it are measured in closed form (not finite: all of it is outside).
    """
    n = raw.shape[1]
    width = b - a
    if width <= 1e-9:
        kept = mass * (keep_above if a >= cut else keep_below)
        if kept <= 0.0:
            return 0.0, -1, -1
        if not (a + 0.5 >= 0.0 and a + 0.5 < n):  # outside, or NaN
            return kept, -1, -1
        i = int(math.floor(a + 0.5))
        raw[e, i] += kept
        return 0.0, i, i
    d_below = mass * keep_below / width
    d_above = mass * keep_above / width
    mid = min(max(cut, a), b)
    lost = 0.0
    ca = a
    cb = b
    if not (a >= -0.5 and b <= n - 0.5):  # reaches past the grid (a wild wick), or NaN / inf
        lost, ca, cb = _outside_nb(
            a, b, n, mid, d_below, d_above, mass * max(keep_below, keep_above)
        )
        if not cb > ca:
            return lost, -1, -1
    i0 = int(math.floor(ca + 0.5))
    i1 = int(math.floor(cb + 0.5))
    lo_hit = -1
    hi_hit = -1
    for i in range(i0, i1 + 1):
        lo = max(ca, i - 0.5)
        hi = min(cb, i + 0.5)
        if hi <= lo:
            continue
        seg_below = min(hi, mid) - lo
        seg_above = hi - max(lo, mid)
        part = 0.0
        if seg_below > 0.0:
            part += d_below * seg_below
        if seg_above > 0.0:
            part += d_above * seg_above
        if part <= 0.0:
            continue
        if i < 0 or i >= n:  # never (clipped above); lets numba drop negative-index handling
            lost += part
            continue
        raw[e, i] += part
        if lo_hit < 0:
            lo_hit = i
        hi_hit = i
    return lost, lo_hit, hi_hit


@njit(cache=True)
def _outside_nb(
    a: float, b: float, n: int, mid: float, d_below: float, d_above: float, kept: float
) -> tuple[float, float, float]:
    """The cold part of ``spread2_nb`` for an interval reaching past the grid: the mass outside
    it (closed form) and the interval clipped to the grid; not finite: all ``kept`` outside."""
    if not (math.isfinite(a) and math.isfinite(b)):
        return (kept if kept > 0.0 else 0.0), 0.0, -1.0
    lost = 0.0
    ca = a
    cb = b
    if a < -0.5:
        lost += _seg_nb(a, min(b, -0.5), mid, d_below, d_above)
        ca = -0.5
    if b > n - 0.5:
        lost += _seg_nb(max(a, n - 0.5), b, mid, d_below, d_above)
        cb = n - 0.5
    return lost, ca, cb


@njit(cache=True, inline="always")
def _seg_nb(lo: float, hi: float, mid: float, d_below: float, d_above: float) -> float:
    """Mass of the fractional-bin interval [lo, hi] at densities d_below / d_above (cut mid)."""
    if hi <= lo:
        return 0.0
    part = 0.0
    seg_below = min(hi, mid) - lo
    seg_above = hi - max(lo, mid)
    if seg_below > 0.0:
        part += d_below * seg_below
    if seg_above > 0.0:
        part += d_above * seg_above
    return part


@njit(cache=True, inline="always")
def find_clusters_nb(
    vals: np.ndarray,
    m: int,
    i_start: int,
    direction: int,
    mode: float,
    step: float,
    origin: float,
    thr_mult: float,
    min_usd: float,
    smooth_h: int,
    merge_gap: int,
    max_k: int,
    out: np.ndarray,
    side: int,
    total: float,
    wide_h: int,
    ref: float,
    stop_gap: float,
) -> int:
    """Clusters in ``vals[:m]``, ordered from nearest to price (index 0) outward.

    ``vals[j]`` is the notional of grid bin ``i_start + direction * j``. A bin is dense when the
    mean of ``vals`` over [j - h, j + h] is at least ``thr_mult`` times the mean of ``vals[:m]``;
    runs of dense bins with gaps of at most ``merge_gap`` bins form a cluster; clusters below
    ``min_usd`` are skipped (a relative 1e-9 slack makes ties dense). ``total`` is
    ``vals[:m].sum()`` (the caller has it). Writes up to ``max_k`` rows of (usd, weighted price,
    near edge price, far edge price, bins) into ``out[side]``; returns the count.
    With ``wide_h > 0`` the reference is local instead: the mean of ``vals`` over
    [j - wide_h, j + wide_h] (local contrast, so a smooth map still has pockets near price).
    With ``stop_gap >= 0`` the search ends at the first run of dense bins whose near edge is
    farther than ``stop_gap * ref`` from the far edge of the last cluster written: clusters from
    there on cannot extend the cascade from the nearest one (``cascade_nb``'s test), which is all
    the per-bar columns read (``stop_gap < 0``: every cluster).
    """
    if m <= 0 or total <= 0.0:
        return 0
    thr = thr_mult * total / m
    # running window sum over [j - h, j + h] clipped to [0, m)
    win = 0.0
    for q in range(min(smooth_h, m - 1) + 1):
        win += vals[q]
    wide = 0.0
    if wide_h > 0:
        for q in range(min(wide_h, m - 1) + 1):
            wide += vals[q]
    count = 0
    in_run = False
    start = 0
    last = 0
    for j in range(m):
        if j > 0:
            add = j + smooth_h
            if add < m:
                win += vals[add]
            drop = j - smooth_h - 1
            if drop >= 0:
                win -= vals[drop]
            if wide_h > 0:
                add = j + wide_h
                if add < m:
                    wide += vals[add]
                drop = j - wide_h - 1
                if drop >= 0:
                    wide -= vals[drop]
        width = min(m - 1, j + smooth_h) - max(0, j - smooth_h) + 1
        if wide_h > 0:
            w_width = min(m - 1, j + wide_h) - max(0, j - wide_h) + 1
            thr = thr_mult * wide / w_width
        if win > 0.0 and win >= thr * width * (1.0 - 1e-9):  # ties (equal bins) count as dense
            if in_run and j - last - 1 <= merge_gap:
                last = j
            else:
                if in_run:
                    count = _emit_cluster_nb(
                        vals,
                        start,
                        last,
                        i_start,
                        direction,
                        mode,
                        step,
                        origin,
                        min_usd,
                        out,
                        side,
                        count,
                    )
                    if count >= max_k:
                        return count
                if count > 0 and stop_gap >= 0.0:
                    near = price_of_nb(float(i_start + direction * j), mode, step, origin)
                    if not abs(near - out[side, count - 1, C_FAR]) / ref <= stop_gap:
                        return count
                in_run = True
                start = j
                last = j
    if in_run and count < max_k:
        count = _emit_cluster_nb(
            vals, start, last, i_start, direction, mode, step, origin, min_usd, out, side, count
        )
    return count


@njit(cache=True, inline="always")
def _emit_cluster_nb(
    vals: np.ndarray,
    start: int,
    last: int,
    i_start: int,
    direction: int,
    mode: float,
    step: float,
    origin: float,
    min_usd: float,
    out: np.ndarray,
    side: int,
    count: int,
) -> int:
    usd = 0.0
    wp = 0.0
    for j in range(start, last + 1):
        usd += vals[j]
        wp += vals[j] * price_of_nb(float(i_start + direction * j), mode, step, origin)
    if usd <= 0.0 or usd < min_usd:
        return count
    out[side, count, C_USD] = usd
    out[side, count, C_PRICE] = wp / usd
    out[side, count, C_NEAR] = price_of_nb(float(i_start + direction * start), mode, step, origin)
    out[side, count, C_FAR] = price_of_nb(float(i_start + direction * last), mode, step, origin)
    out[side, count, C_NBINS] = last - start + 1
    return count + 1


@njit(cache=True, inline="always")
def wide_bins_nb(contrast: float, ref: float, mode: float, step: float) -> int:
    """Half-width in bins of the local-contrast window (0: off)."""
    if contrast <= 0.0:
        return 0
    if mode == 0.0:
        w = np.floor(contrast * ref / step + 0.5)
    else:
        w = np.floor(math.log1p(contrast) / step + 0.5)
    return _clip_index_nb(w, 1, 1 << 30, 1)


@njit(cache=True, inline="always")
def cascade_nb(
    cl: np.ndarray, side: int, first: int, k: int, ref: float, gap: float, max_depth: int
) -> tuple:
    """Depth, summed USD and far-end price of the cascade starting at cluster ``first`` of
    ``cl[side, :k]``, outward."""
    if k <= first:
        return 0, 0.0, np.nan
    depth = 1
    usd = cl[side, first, C_USD]
    end = cl[side, first, C_FAR]
    for c in range(first + 1, k):
        if depth >= max_depth:
            break
        if abs(cl[side, c, C_NEAR] - cl[side, c - 1, C_FAR]) / ref <= gap:
            depth += 1
            usd += cl[side, c, C_USD]
            end = cl[side, c, C_FAR]
        else:
            break
    return depth, usd, end


@njit(cache=True, inline="always")
def gather_side_nb(
    raw: np.ndarray,
    scales: np.ndarray,
    i_start: int,
    direction: int,
    m_max: int,
    m_band: int,
    vals: np.ndarray,
) -> tuple:
    """Combined notional (all exchanges) of bins ``i_start + direction * j`` for j < ``m_max``,
    stopping at the grid's edge, into ``vals``. Returns (bins written, their sum, the sum of
    the first ``m_band`` of them)."""
    n_ex = raw.shape[0]
    n = raw.shape[1]
    m = min(m_max, n - i_start) if direction > 0 else min(m_max, i_start + 1)
    if m <= 0 or i_start < 0 or i_start >= n:
        return 0, 0.0, 0.0
    total = 0.0
    dens = 0.0
    mb = min(m_band, m)
    if n_ex == 1:
        s0 = scales[0]
        for j in range(mb):
            v = raw[0, i_start + direction * j] * s0
            vals[j] = v
            dens += v
        total = dens
        for j in range(mb, m):
            v = raw[0, i_start + direction * j] * s0
            vals[j] = v
            total += v
        return m, total, dens
    for j in range(m):
        i = i_start + direction * j
        v = 0.0
        for e in range(n_ex):
            v += raw[e, i] * scales[e]
        vals[j] = v
        total += v
        if j < mb:
            dens += v
    return m, total, dens


@njit(cache=True, inline="always")
def side_window_nb(
    side: int, ref: float, scan: float, band: float, mode: float, step: float, origin: float
) -> tuple:
    """First bin, direction, bins to scan and bins within the density band on one side."""
    ic = index_of_nb(ref, mode, step, origin)
    if side == 0:
        i_start = int(math.floor(ic))
        far = index_of_nb(ref * (1.0 - scan), mode, step, origin)
        edge = index_of_nb(ref * (1.0 - band), mode, step, origin)
        m = i_start - int(math.ceil(far)) + 1
        m_band = i_start - int(math.ceil(edge)) + 1
        return i_start, -1, max(m, 0), max(m_band, 0)
    i_start = int(math.ceil(ic))
    far = index_of_nb(ref * (1.0 + scan), mode, step, origin)
    edge = index_of_nb(ref * (1.0 + band), mode, step, origin)
    m = int(math.floor(far)) - i_start + 1
    m_band = int(math.floor(edge)) - i_start + 1
    return i_start, 1, max(m, 0), max(m_band, 0)


@njit(cache=True)
def run_nb(
    ts: np.ndarray,
    x: np.ndarray,
    p: np.ndarray,
    factors: np.ndarray,
    log_factors: np.ndarray,
    weights: np.ndarray,
    proxy: np.ndarray,
    g: np.ndarray,
    ex: np.ndarray,
    long_raw: np.ndarray,
    short_raw: np.ndarray,
    work: np.ndarray,
    clusters: np.ndarray,
    hm: np.ndarray,
    hm_meta: np.ndarray,
    out: np.ndarray,
) -> None:
    """Advance the map over ``len(ts)`` bars, writing one feature row per bar into ``out``."""
    n_ex = x.shape[1]
    _bars_nb(
        ts,
        x,
        p,
        factors,
        log_factors,
        weights,
        proxy,
        g,
        ex,
        long_raw,
        short_raw,
        work,
        clusters,
        hm,
        hm_meta,
        out,
        np.empty(n_ex),
        np.empty(n_ex),
    )


@njit(cache=True, **_NO_REFCOUNT)
def _bars_nb(
    ts: np.ndarray,
    x: np.ndarray,
    p: np.ndarray,
    factors: np.ndarray,
    log_factors: np.ndarray,
    weights: np.ndarray,
    proxy: np.ndarray,
    g: np.ndarray,
    ex: np.ndarray,
    long_raw: np.ndarray,
    short_raw: np.ndarray,
    work: np.ndarray,
    clusters: np.ndarray,
    hm: np.ndarray,
    hm_meta: np.ndarray,
    out: np.ndarray,
    scales_l: np.ndarray,
    scales_s: np.ndarray,
) -> None:
    """The loop of ``run_nb`` over bars; ``scales_l`` / ``scales_s[n_ex]`` are scratch.

    Compiled without numba's reference counting (``_nrt=False``): it allocates nothing, and
    every array it hands to the inlined step kernels is borrowed from ``run_nb``. With
    counting on, each array argument of an inlined helper costs an incref / decref pair per
    call, which made the cut-up loop about 15 % slower than the single function it replaced.
    """
    n_ex = x.shape[1]
    vals = work[0]
    for t in range(ts.shape[0]):
        ref = _ref_price_nb(x, t)
        if ref != ref:
            # no exchange has this bar: fade by time, nothing else
            for c in range(N_OUT):
                out[c, t] = np.nan
            if g[G_INIT] == 1.0:
                _fade_nb(g, ex, long_raw, short_raw, ts[t], p[Param.half_life_s])
            continue
        if g[G_INIT] == 0.0:
            _place_nb(g, ex, ref, ts[t], long_raw.shape[1], p)
        else:
            _recentre_nb(g, ex, long_raw, short_raw, ref, p)
        pred_l, pred_s, stand_l, stand_s, opened, closed, dropped_now, oi_total, oi_known, fund = (
            _exchanges_nb(
                x, t, p, factors, log_factors, weights, proxy, g[G_ORIGIN], ex, long_raw, short_raw
            )
        )
        _fade_nb(g, ex, long_raw, short_raw, ts[t], p[Param.half_life_s])
        g[G_DROPPED] += dropped_now
        g[G_OPENED] += opened
        g[G_CONSUMED] += pred_l + pred_s
        g[G_CLOSED] += closed
        g[G_NBARS] += 1.0
        for e in range(n_ex):
            scales_l[e] = ex[e, X_SCALE_L]
            scales_s[e] = ex[e, X_SCALE_S]
        _write_totals_nb(out, t, ex, scales_l, scales_s, pred_l, pred_s, stand_l, stand_s)
        out[Out.liq_opened_usd, t] = opened
        out[Out.liq_closed_usd, t] = closed
        out[Out.liq_dropped_usd, t] = g[G_DROPPED]
        _read_side_nb(
            LONG_ROWS,
            0,
            long_raw,
            scales_l,
            vals,
            clusters,
            g,
            p,
            out,
            t,
            ref,
            oi_total,
            oi_known,
            fund,
        )
        _read_side_nb(
            SHORT_ROWS,
            1,
            short_raw,
            scales_s,
            vals,
            clusters,
            g,
            p,
            out,
            t,
            ref,
            oi_total,
            oi_known,
            fund,
        )
        _flush_nb(g, out, t, pred_l, pred_s, oi_total, oi_known, p)
        if hm.shape[0] > 0 and ts[t] >= g[G_NEXT_FRAME]:
            _heatmap_frame_nb(
                g, long_raw, short_raw, scales_l, scales_s, hm, hm_meta, ts[t], ref, p
            )


@njit(cache=True, inline="always")
def _ref_price_nb(x: np.ndarray, t: int) -> float:
    """Reference price of bar ``t``: the close of the first exchange with a bar (NaN: none)."""
    for e in range(x.shape[1]):
        if x[t, e, I_CLOSE] > 0.0 and math.isfinite(x[t, e, I_CLOSE]):
            return x[t, e, I_CLOSE]
    return np.nan


@njit(cache=True, inline="always")
def _place_nb(
    g: np.ndarray, ex: np.ndarray, ref: float, now: float, n_bins: int, p: np.ndarray
) -> None:
    """Place the grid around the first price and reset the per-exchange state."""
    g[G_ORIGIN] = place_grid_nb(ref, n_bins, p[Param.grid_mode], p[Param.grid_step])
    g[G_INIT] = 1.0
    g[G_LAST_TS] = now
    g[G_SINCE_FLUSH] = -1.0
    g[G_NEXT_FRAME] = now
    for e in range(ex.shape[0]):
        ex[e, X_SCALE_L] = 1.0
        ex[e, X_SCALE_S] = 1.0
        ex[e, X_TOT_L] = 0.0
        ex[e, X_TOT_S] = 0.0
        ex[e, X_PREV_OI] = np.nan
        ex[e, X_LTOP] = -1.0
        ex[e, X_SBOT] = float(n_bins)


@njit(cache=True, inline="always")
def _recentre_nb(
    g: np.ndarray,
    ex: np.ndarray,
    long_raw: np.ndarray,
    short_raw: np.ndarray,
    ref: float,
    p: np.ndarray,
) -> None:
    """Shift the grid so ``ref`` is central again once it strays past ``recentre_frac``."""
    mode = p[Param.grid_mode]
    step = p[Param.grid_step]
    n_bins = long_raw.shape[1]
    ic = index_of_nb(ref, mode, step, g[G_ORIGIN])
    if not abs(ic - n_bins / 2.0) > p[Param.recentre_frac] * n_bins:
        return
    kf = np.floor(ic - n_bins / 2.0 + 0.5)
    k = int(min(max(kf, -n_bins), n_bins))  # |k| >= n_bins clears the grid
    for e in range(ex.shape[0]):
        lost_l = shift_nb(long_raw[e], k)
        lost_s = shift_nb(short_raw[e], k)
        ex[e, X_TOT_L] = max(ex[e, X_TOT_L] - lost_l, 0.0)
        ex[e, X_TOT_S] = max(ex[e, X_TOT_S] - lost_s, 0.0)
        g[G_DROPPED] += lost_l * ex[e, X_SCALE_L] + lost_s * ex[e, X_SCALE_S]
        ex[e, X_LTOP] = min(ex[e, X_LTOP] - k, n_bins - 1.0)
        ex[e, X_SBOT] = max(ex[e, X_SBOT] - k, 0.0)
        if ex[e, X_LTOP] < -1.0:
            ex[e, X_LTOP] = -1.0
        if ex[e, X_SBOT] > n_bins:
            ex[e, X_SBOT] = float(n_bins)
    g[G_ORIGIN] = g[G_ORIGIN] + kf * step


@njit(cache=True, inline="always")
def _exchanges_nb(
    x: np.ndarray,
    t: int,
    p: np.ndarray,
    factors: np.ndarray,
    log_factors: np.ndarray,
    weights: np.ndarray,
    proxy: np.ndarray,
    origin: float,
    ex: np.ndarray,
    long_raw: np.ndarray,
    short_raw: np.ndarray,
) -> tuple:
    """Steps 1-3 (consume, open, close) of bar ``t`` on every exchange with a bar. Returns
    (consumed long USD, short USD, their parts standing before the bar (long, short), opened,
    closed, dropped, summed OI notional, exchanges with OI known, mean funding or NaN)."""
    pred_l = 0.0
    pred_s = 0.0
    stand_l = 0.0  # part of pred_* from levels standing before the bar (the forecast part)
    stand_s = 0.0
    opened = 0.0
    closed = 0.0
    dropped_now = 0.0
    oi_total = 0.0
    oi_known = 0
    fund_sum = 0.0
    fund_n = 0
    for e in range(x.shape[1]):
        o = x[t, e, I_OPEN]
        h = x[t, e, I_HIGH]
        lo = x[t, e, I_LOW]
        cl = x[t, e, I_CLOSE]
        if not (cl > 0.0 and math.isfinite(cl)):  # no bar (NaN), or no usable close
            continue
        ex[e, X_LAST_CLOSE] = cl
        # --- 1. consume ---
        c_l, c_s = _consume_nb(ex, long_raw, short_raw, e, lo, h, p, origin)
        pred_l += c_l
        stand_l += c_l
        pred_s += c_s
        stand_s += c_s
        # --- 2./3. open or close from the OI change ---
        tp = (h + lo + cl) / 3.0
        oi = x[t, e, I_OI]
        prev_oi_usd = ex[e, X_PREV_OI] * tp
        new_usd, close_usd = _flows_nb(ex, e, oi, x[t, e, I_VOL], tp, proxy[e], p)
        if oi == oi:
            oi_total += oi * cl
            oi_known += 1
        f = x[t, e, I_FUND]
        if f == f:
            fund_sum += f
            fund_n += 1
        if new_usd > 0.0:
            share_l = _long_share_nb(x[t, e, I_TAKER], x[t, e, I_VOL], o, cl, p)
            pred_l, pred_s, dropped_now = _open_nb(
                ex,
                long_raw,
                short_raw,
                factors,
                log_factors,
                weights,
                e,
                h,
                lo,
                tp,
                new_usd,
                share_l,
                p,
                origin,
                pred_l,
                pred_s,
                dropped_now,
            )
            opened += new_usd
        if close_usd > 0.0:
            closed = _close_nb(ex, long_raw, short_raw, e, close_usd, prev_oi_usd, p, closed)
    fund = fund_sum / fund_n if fund_n > 0 else np.nan
    return pred_l, pred_s, stand_l, stand_s, opened, closed, dropped_now, oi_total, oi_known, fund


@njit(cache=True, inline="always")
def _consume_nb(
    ex: np.ndarray,
    long_raw: np.ndarray,
    short_raw: np.ndarray,
    e: int,
    lo: float,
    h: float,
    p: np.ndarray,
    origin: float,
) -> tuple:
    """Step 1 on exchange ``e``: the bar's range consumes long levels at or above its low and
    short levels at or below its high. Returns the USD consumed (long, short)."""
    mode = p[Param.grid_mode]
    step = p[Param.grid_step]
    n_bins = long_raw.shape[1]
    c_l = 0.0
    c_s = 0.0
    i_low = _clip_index_nb(np.ceil(index_of_nb(lo, mode, step, origin)), 0, n_bins, n_bins)
    top = int(ex[e, X_LTOP])
    s = 0.0
    for i in range(i_low, top + 1):
        s += long_raw[e, i]
        long_raw[e, i] = 0.0
    if top >= i_low:
        ex[e, X_TOT_L] -= s
        c_l = s * ex[e, X_SCALE_L]
        ex[e, X_LTOP] = i_low - 1.0
    i_high = _clip_index_nb(np.floor(index_of_nb(h, mode, step, origin)), -1, n_bins - 1, -1)
    bot = int(ex[e, X_SBOT])
    s = 0.0
    for i in range(bot, i_high + 1):
        s += short_raw[e, i]
        short_raw[e, i] = 0.0
    if i_high >= bot:
        ex[e, X_TOT_S] -= s
        c_s = s * ex[e, X_SCALE_S]
        ex[e, X_SBOT] = i_high + 1.0
    if ex[e, X_TOT_L] < 0.0:
        ex[e, X_TOT_L] = 0.0
    if ex[e, X_TOT_S] < 0.0:
        ex[e, X_TOT_S] = 0.0
    return c_l, c_s


@njit(cache=True, inline="always")
def _flows_nb(
    ex: np.ndarray, e: int, oi: float, vol: float, tp: float, proxy_e: int, p: np.ndarray
) -> tuple:
    """USD opened and closed on exchange ``e`` this bar: the OI change (or a share of volume
    in proxy mode) plus turnover; records the OI for the next bar."""
    new_usd = 0.0
    close_usd = 0.0
    if proxy_e == 1:
        if vol == vol and vol > 0.0:
            new_usd = p[Param.proxy_volume_share] * vol * tp
    elif oi == oi:
        prev = ex[e, X_PREV_OI]
        if prev == prev:
            d = (oi - prev) * tp
            if d > 0.0:
                new_usd = d
            elif d < 0.0:
                close_usd = -d
        ex[e, X_PREV_OI] = oi
        # turnover: a share of traded volume opens new positions while as much closes old ones
        # (net change stays dOI)
        churn = p[Param.churn_volume_share]
        if vol == vol and vol > 0.0 and churn > 0.0:
            new_usd += churn * vol * tp
            close_usd += churn * vol * tp
    return new_usd, close_usd


@njit(cache=True, inline="always")
def _long_share_nb(tb: float, vol: float, o: float, cl: float, p: np.ndarray) -> float:
    """Share of the new notional opened long: taker buy share, else by the bar's direction."""
    if tb == tb and vol == vol and vol > 0.0:
        return min(max(tb / vol, 0.0), 1.0)
    if cl > o:
        return p[Param.direction_long_share]
    if cl < o:
        return 1.0 - p[Param.direction_long_share]
    return 0.5


@njit(cache=True, inline="always")
def _open_nb(
    ex: np.ndarray,
    long_raw: np.ndarray,
    short_raw: np.ndarray,
    factors: np.ndarray,
    log_factors: np.ndarray,
    weights: np.ndarray,
    e: int,
    h: float,
    lo: float,
    tp: float,
    new_usd: float,
    share_l: float,
    p: np.ndarray,
    origin: float,
    pred_l: float,
    pred_s: float,
    dropped: float,
) -> tuple:
    """Step 2 on exchange ``e``: spread ``new_usd`` (``share_l`` of it long) over each leverage
    tier's liquidation band. Adds the part liquidated within the bar to ``pred_l`` / ``pred_s``
    and the part off the grid to ``dropped``; returns the three."""
    mode = p[Param.grid_mode]
    step = p[Param.grid_step]
    inv_step = 1.0 / step
    entry_spread = p[Param.entry_spread]
    ea = tp - entry_spread * (tp - lo)
    eb = tp + entry_spread * (h - tp)
    if mode == 0.0:
        ka = ea * inv_step
        kb = eb * inv_step
        k0 = origin * inv_step
    else:
        ka = (math.log(ea) - origin) * inv_step
        kb = (math.log(eb) - origin) * inv_step
        k0 = 0.0
    side_usd = new_usd * share_l
    if side_usd > 0.0:
        cut = index_of_nb(lo, mode, step, origin)
        pred_l, dropped = _open_side_nb(
            ex,
            long_raw,
            factors,
            log_factors,
            weights,
            e,
            0,
            ka,
            kb,
            k0,
            cut,
            side_usd,
            p,
            pred_l,
            dropped,
        )
    side_usd = new_usd * (1.0 - share_l)
    if side_usd > 0.0:
        cut = index_of_nb(h, mode, step, origin)
        pred_s, dropped = _open_side_nb(
            ex,
            short_raw,
            factors,
            log_factors,
            weights,
            e,
            1,
            ka,
            kb,
            k0,
            cut,
            side_usd,
            p,
            pred_s,
            dropped,
        )
    return pred_l, pred_s, dropped


@njit(cache=True, inline="always")
def _open_side_nb(
    ex: np.ndarray,
    raw: np.ndarray,
    factors: np.ndarray,
    log_factors: np.ndarray,
    weights: np.ndarray,
    e: int,
    side: int,
    ka: float,
    kb: float,
    k0: float,
    cut: float,
    side_usd: float,
    p: np.ndarray,
    pred: float,
    dropped: float,
) -> tuple:
    """``_open_nb`` for one side: entries [ka, kb] (scaled bins) times each tier's factor."""
    mode = p[Param.grid_mode]
    intrabar = p[Param.intrabar_share]
    if side == 0:
        sc = ex[e, X_SCALE_L]
        keep_below = 1.0
        keep_above = 1.0 - intrabar
    else:
        sc = ex[e, X_SCALE_S]
        keep_below = 1.0 - intrabar
        keep_above = 1.0
    for j in range(weights.shape[1]):
        w = weights[e, j]
        if w <= 0.0:
            continue
        fct = factors[e, side, j]
        mass = side_usd * w
        if fct <= 0.0:
            dropped += mass
            continue
        if mode == 0.0:
            a = ka * fct - k0
            b = kb * fct - k0
        else:
            lf = log_factors[e, side, j]
            a = ka + lf
            b = kb + lf
        # levels of this bar's own entries that its range already reached (longs at or above
        # the low, shorts at or below the high): a share ``intrabar`` of them is liquidated
        # within the bar
        now_liq = intrabar * mass * _reached_share_nb(a, b, cut, side)
        pred += now_liq
        lost, i0, i1 = spread2_nb(raw, e, a, b, cut, mass / sc, keep_below, keep_above)
        if side == 0:
            ex[e, X_TOT_L] += max((mass - now_liq) / sc - lost, 0.0)
            if i1 > ex[e, X_LTOP]:
                ex[e, X_LTOP] = float(i1)
        else:
            ex[e, X_TOT_S] += max((mass - now_liq) / sc - lost, 0.0)
            if i0 >= 0 and i0 < ex[e, X_SBOT]:
                ex[e, X_SBOT] = float(i0)
        dropped += lost * sc
    return pred, dropped


@njit(cache=True, inline="always")
def _reached_share_nb(a: float, b: float, cut: float, side: int) -> float:
    """Share of the band [a, b] beyond ``cut`` (long: at or above it; short: at or below)."""
    width = b - a
    if width > 1e-9:
        if side == 0:
            f_in = (b - max(a, cut)) / width
        else:
            f_in = (min(b, cut) - a) / width
    elif side == 0:
        f_in = 1.0 if a >= cut else 0.0
    else:
        f_in = 1.0 if a <= cut else 0.0
    return min(max(f_in, 0.0), 1.0)


@njit(cache=True, inline="always")
def _close_nb(
    ex: np.ndarray,
    long_raw: np.ndarray,
    short_raw: np.ndarray,
    e: int,
    close_usd: float,
    prev_oi_usd: float,
    p: np.ndarray,
    closed: float,
) -> float:
    """Step 3 on exchange ``e``: remove ``close_usd`` pro rata from its levels; returns
    ``closed`` plus what was removed."""
    tl = ex[e, X_TOT_L] * ex[e, X_SCALE_L]
    tsh = ex[e, X_TOT_S] * ex[e, X_SCALE_S]
    if p[Param.close_relative] > 0.0 and prev_oi_usd > 0.0:
        # closes fall on all open positions; the map holds a part of them
        close_usd *= min(1.0, (tl + tsh) / prev_oi_usd)
    close_long_share = p[Param.close_long_share]
    if close_long_share < 0.0:
        tot = tl + tsh
        if tot > 0.0:
            rl = close_usd * tl / tot
            rs = close_usd * tsh / tot
        else:
            rl = 0.0
            rs = 0.0
    else:
        rl = close_usd * close_long_share
        rs = close_usd * (1.0 - close_long_share)
    closed += _remove_nb(ex, long_raw, e, X_SCALE_L, X_TOT_L, rl, tl)
    closed += _remove_nb(ex, short_raw, e, X_SCALE_S, X_TOT_S, rs, tsh)
    return closed


@njit(cache=True, inline="always")
def _write_totals_nb(
    out: np.ndarray,
    t: int,
    ex: np.ndarray,
    scales_l: np.ndarray,
    scales_s: np.ndarray,
    pred_l: float,
    pred_s: float,
    stand_l: float,
    stand_s: float,
) -> None:
    """The bar's consumed and standing totals."""
    out[Out.liq_pred_long_usd, t] = pred_l
    out[Out.liq_pred_short_usd, t] = pred_s
    tot_l = 0.0
    tot_s = 0.0
    for e in range(ex.shape[0]):
        tot_l += ex[e, X_TOT_L] * scales_l[e]
        tot_s += ex[e, X_TOT_S] * scales_s[e]
    out[Out.liq_long_total_usd, t] = tot_l
    out[Out.liq_short_total_usd, t] = tot_s
    out[Out.liq_pred_standing_long_usd, t] = stand_l
    out[Out.liq_pred_standing_short_usd, t] = stand_s


@njit(cache=True, inline="always")
def _read_side_nb(
    rows: SideRows,
    side: int,
    raw: np.ndarray,
    scales: np.ndarray,
    vals: np.ndarray,
    clusters: np.ndarray,
    g: np.ndarray,
    p: np.ndarray,
    out: np.ndarray,
    t: int,
    ref: float,
    oi_total: float,
    oi_known: int,
    fund: float,
) -> None:
    """Step 5 for one side: band density, nearest cluster, its cascade and the armed flag into
    ``out[rows.*, t]``; updates the side's EMA of the nearest cluster's USD."""
    mode = p[Param.grid_mode]
    step = p[Param.grid_step]
    origin = g[G_ORIGIN]
    i_start, direction, m_max, m_band = side_window_nb(
        side, ref, p[Param.scan_range], p[Param.density_band], mode, step, origin
    )
    m, total, dens = gather_side_nb(raw, scales, i_start, direction, m_max, m_band, vals)
    k = find_clusters_nb(
        vals,
        m,
        i_start,
        direction,
        mode,
        step,
        origin,
        p[Param.cluster_threshold],
        p[Param.cluster_min_usd],
        int(p[Param.smooth_half_bins]),
        int(p[Param.merge_gap_bins]),
        clusters.shape[1],
        clusters,
        side,
        total,
        wide_bins_nb(p[Param.contrast_window], ref, mode, step),
        ref,
        p[Param.cascade_gap],
    )
    out[rows.density_usd, t] = dens
    ema_idx = G_EMA_LC if side == 0 else G_EMA_SC
    cur = 0.0
    if k > 0:
        cur = clusters[side, 0, C_USD]
        price = clusters[side, 0, C_PRICE]
        out[rows.cluster_price, t] = price
        out[rows.cluster_usd, t] = cur
        dist = abs(ref - price) / ref
        out[rows.cluster_dist_pct, t] = dist * 100.0
        out[rows.cluster_low, t] = min(clusters[side, 0, C_NEAR], clusters[side, 0, C_FAR])
        out[rows.cluster_high, t] = max(clusters[side, 0, C_NEAR], clusters[side, 0, C_FAR])
        depth, cusd, cend = cascade_nb(
            clusters, side, 0, k, ref, p[Param.cascade_gap], int(p[Param.cascade_max_depth])
        )
        out[rows.cascade_depth, t] = depth
        out[rows.cascade_usd, t] = cusd
        out[rows.cascade_end, t] = cend
        ok, score = _armed_nb(g, p, side, cur, dist, oi_total, oi_known, fund, g[ema_idx])
        out[rows.armed, t] = 1.0 if ok else 0.0
        out[rows.armed_score, t] = score
    else:
        out[rows.cluster_price, t] = np.nan
        out[rows.cluster_usd, t] = 0.0
        out[rows.cluster_dist_pct, t] = np.nan
        out[rows.cluster_low, t] = np.nan
        out[rows.cluster_high, t] = np.nan
        out[rows.cascade_depth, t] = 0.0
        out[rows.cascade_usd, t] = 0.0
        out[rows.cascade_end, t] = np.nan
        out[rows.armed, t] = 0.0
        out[rows.armed_score, t] = 0.0
    if g[G_NBARS] <= 1.0:
        g[ema_idx] = cur
    else:
        g[ema_idx] += p[Param.ema_alpha] * (cur - g[ema_idx])


@njit(cache=True, inline="always")
def _armed_nb(
    g: np.ndarray,
    p: np.ndarray,
    side: int,
    usd: float,
    dist: float,
    oi_total: float,
    oi_known: int,
    fund: float,
    ema_c: float,
) -> tuple:
    """Armed flag and score of a nearest cluster of ``usd`` at distance ``dist`` (fraction)."""
    armed_dist = p[Param.armed_distance]
    size_ratio = usd / ema_c if ema_c > 0.0 else 1.0
    oi_on = oi_known > 0 and g[G_EMA_OI] > 0.0
    oi_ratio = oi_total / g[G_EMA_OI] if oi_on else 1.0
    prox = 1.0 - dist / armed_dist
    if prox < 0.0:
        prox = 0.0
    score = prox * min(size_ratio, 10.0) * oi_ratio
    ok = dist <= armed_dist and size_ratio >= p[Param.armed_size_ratio]
    if oi_on:
        ok = ok and oi_ratio >= p[Param.armed_oi_ratio]
    if fund == fund:
        side_fund = fund if side == 0 else -fund
        ok = ok and side_fund >= p[Param.armed_funding_min]
    return ok, score


@njit(cache=True, inline="always")
def _flush_nb(
    g: np.ndarray,
    out: np.ndarray,
    t: int,
    pred_l: float,
    pred_s: float,
    oi_total: float,
    oi_known: int,
    p: np.ndarray,
) -> None:
    """The flush flag (a bar consuming far more than usual) and the consumed and OI EMAs."""
    alpha = p[Param.ema_alpha]
    cons = pred_l + pred_s
    flush = 0.0
    big = cons >= p[Param.flush_ratio] * g[G_EMA_CONS] and cons >= p[Param.flush_min_usd]
    if g[G_NBARS] > 1.0 and g[G_EMA_CONS] > 0.0 and big and cons > 0.0:
        flush = 1.0 if pred_l >= pred_s else -1.0
    if flush != 0.0:
        g[G_SINCE_FLUSH] = 0.0
    elif g[G_SINCE_FLUSH] >= 0.0:
        g[G_SINCE_FLUSH] += 1.0
    out[Out.liq_flush, t] = flush
    out[Out.liq_bars_since_flush, t] = g[G_SINCE_FLUSH] if g[G_SINCE_FLUSH] >= 0.0 else np.nan
    if g[G_NBARS] <= 1.0:
        g[G_EMA_CONS] = cons
    else:
        g[G_EMA_CONS] += alpha * (cons - g[G_EMA_CONS])
    if oi_known > 0:
        if g[G_EMA_OI] <= 0.0:
            g[G_EMA_OI] = oi_total
        else:
            g[G_EMA_OI] += alpha * (oi_total - g[G_EMA_OI])


@njit(cache=True, inline="always")
def _heatmap_frame_nb(
    g: np.ndarray,
    long_raw: np.ndarray,
    short_raw: np.ndarray,
    scales_l: np.ndarray,
    scales_s: np.ndarray,
    hm: np.ndarray,
    hm_meta: np.ndarray,
    now: float,
    ref: float,
    p: np.ndarray,
) -> None:
    """Write the next heatmap frame: rows of ``heatmap_bins_per_row`` bins centred on ``ref``."""
    mode = p[Param.grid_mode]
    step = p[Param.grid_step]
    origin = g[G_ORIGIN]
    hm_per_row = int(p[Param.heatmap_bins_per_row])
    hm_rows = hm.shape[2]
    n_bins = long_raw.shape[1]
    ic = index_of_nb(ref, mode, step, origin)
    fidx = int(g[G_FRAMES]) % hm.shape[0]
    half = (hm_rows * hm_per_row) // 2
    first = int(math.floor(ic + 0.5)) - half
    for r in range(hm_rows):
        i0 = max(first + r * hm_per_row, 0)
        i1 = min(first + (r + 1) * hm_per_row, n_bins)
        vl = 0.0
        vs = 0.0
        for e in range(long_raw.shape[0]):
            sl = scales_l[e]
            ss = scales_s[e]
            for i in range(i0, i1):
                vl += long_raw[e, i] * sl
                vs += short_raw[e, i] * ss
        hm[fidx, 0, r] = vl
        hm[fidx, 1, r] = vs
    hm_meta[fidx, 0] = now
    hm_meta[fidx, 1] = price_of_nb(first - 0.5, mode, step, origin)
    hm_meta[fidx, 2] = price_of_nb(first + hm_rows * hm_per_row - 0.5, mode, step, origin)
    hm_meta[fidx, 3] = ref
    g[G_FRAMES] += 1.0
    every = p[Param.heatmap_every_s]
    g[G_NEXT_FRAME] = (math.floor(now / every) + 1.0) * every


@njit(cache=True, inline="always")
def _remove_nb(
    ex: np.ndarray,
    raw: np.ndarray,
    e: int,
    scale_col: int,
    tot_col: int,
    amount: float,
    side_total: float,
) -> float:
    """Remove ``amount`` USD pro rata from one side of exchange ``e``; returns what was removed."""
    if amount <= 0.0 or side_total <= 0.0:
        return 0.0
    if amount >= side_total * (1.0 - 1e-12):
        for i in range(raw.shape[1]):
            raw[e, i] = 0.0
        ex[e, tot_col] = 0.0
        ex[e, scale_col] = 1.0
        return side_total
    ex[e, scale_col] *= 1.0 - amount / side_total
    _renorm_nb(ex, raw, e, scale_col, tot_col)
    return amount


@njit(cache=True, inline="always")
def _renorm_nb(ex: np.ndarray, raw: np.ndarray, e: int, scale_col: int, tot_col: int) -> None:
    """Fold a tiny running scale back into the bins to keep raw values finite."""
    sc = ex[e, scale_col]
    if sc < 1e-100:
        for i in range(raw.shape[1]):
            raw[e, i] *= sc
        ex[e, tot_col] *= sc
        ex[e, scale_col] = 1.0


@njit(cache=True, inline="always")
def _fade_nb(
    g: np.ndarray,
    ex: np.ndarray,
    long_raw: np.ndarray,
    short_raw: np.ndarray,
    now: float,
    half_life_s: float,
) -> None:
    """Step 4: fade every level by the time since the last bar (lazily, through the scales)."""
    dt = now - g[G_LAST_TS]
    g[G_LAST_TS] = now
    if dt <= 0.0:
        return
    if dt == g[G_FADE_DT]:
        f = g[G_FADE_F]
    else:
        f = math.exp(-_LN2 * dt / half_life_s)
        g[G_FADE_DT] = dt
        g[G_FADE_F] = f
    for e in range(ex.shape[0]):
        before = ex[e, X_TOT_L] * ex[e, X_SCALE_L] + ex[e, X_TOT_S] * ex[e, X_SCALE_S]
        g[G_DECAYED] += before * (1.0 - f)
        ex[e, X_SCALE_L] *= f
        ex[e, X_SCALE_S] *= f
        _renorm_nb(ex, long_raw, e, X_SCALE_L, X_TOT_L)
        _renorm_nb(ex, short_raw, e, X_SCALE_S, X_TOT_S)


@njit(cache=True)
def side_clusters_nb(
    raw: np.ndarray,
    scales: np.ndarray,
    side: int,
    ref: float,
    p: np.ndarray,
    origin: float,
    max_k: int,
    vals: np.ndarray,
) -> np.ndarray:
    """All clusters (up to ``max_k``) on one side of ``ref`` for a snapshot, nearest first."""
    mode = p[Param.grid_mode]
    step = p[Param.grid_step]
    i_start, direction, m_max, m_band = side_window_nb(
        side, ref, p[Param.scan_range], p[Param.density_band], mode, step, origin
    )
    m, total, _dens = gather_side_nb(raw, scales, i_start, direction, m_max, m_band, vals)
    out = np.zeros((1, max_k, C_SIZE))
    k = find_clusters_nb(
        vals,
        m,
        i_start,
        direction,
        mode,
        step,
        origin,
        p[Param.cluster_threshold],
        p[Param.cluster_min_usd],
        int(p[Param.smooth_half_bins]),
        int(p[Param.merge_gap_bins]),
        max_k,
        out,
        0,
        total,
        wide_bins_nb(p[Param.contrast_window], ref, mode, step),
        ref,
        -1.0,
    )
    return out[0, :k]
