"""LiquidationMap: the map's state for one market on one or more exchanges, around the kernels.

A ``LiquidationMap`` owns the state arrays the numba kernel ``nb.run_nb`` advances. ``update``
feeds it bars (one or many, as arrays); a full build is the same call on all bars from a fresh
map, so incremental and full results are equal by construction. Snapshots (levels per price,
clusters, heatmap history) are read from the current state without changing it; every cluster
of a snapshot (``clusters_from_state``) comes from the same kernels as the per-bar columns.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import pandas as pd

from liqsignal import nb
from liqsignal.config import MAX_BINS, MapConfig
from liqsignal.exceptions import InputError
from liqsignal.tiers import formula_of, leverage_factors

__all__ = [
    "MAX_BINS",
    "OUT_NAMES",
    "Cluster",
    "HeatmapHistory",
    "LiquidationMap",
    "MapSnapshot",
    "clusters_from_state",
]

OUT_NAMES = nb.OUT_NAMES


@dataclass(frozen=True)
class Cluster:
    """A dense pocket of liquidation levels on one side of price."""

    side: str  # "long" (below price) or "short" (above)
    price: float  # USD-weighted centre
    low: float
    high: float
    usd: float
    distance_pct: float  # from the reference price, percent
    depth: int  # cascade depth counted from this cluster outward (1 = alone)
    cascade_usd: float  # USD through the cascade starting here
    shares: dict[str, float]  # per-exchange share of ``usd``


@dataclass(frozen=True)
class MapSnapshot:
    """The map at one moment: levels per price, clusters each side, per-exchange detail."""

    time: pd.Timestamp | None
    price: float
    levels: pd.DataFrame  # index price; long_usd, short_usd, and per-exchange columns
    clusters: list[Cluster]

    def clusters_on(self, side: str) -> list[Cluster]:
        return [c for c in self.clusters if c.side == side]


@dataclass(frozen=True)
class HeatmapHistory:
    """Downsampled frames of the map through time, oldest first (bounded by config)."""

    times: pd.DatetimeIndex
    closes: np.ndarray  # reference close per frame
    price_low: np.ndarray  # lower price edge of row 0 per frame
    price_high: np.ndarray  # upper price edge of the last row per frame
    long_usd: np.ndarray  # [frames, rows]
    short_usd: np.ndarray  # [frames, rows]
    log_rows: bool  # rows uniform in log price (relative grid) instead of price


class LiquidationMap:
    """Liquidation map of one market, optionally aggregated over several exchanges.

    ``exchanges`` names the exchange of each input column block (their liquidation formulas
    differ); ``proxy[e]`` puts exchange ``e`` in volume-proxy mode (no open interest).
    """

    def __init__(
        self,
        config: MapConfig | None = None,
        exchanges: Sequence[str] | None = None,
        proxy: Sequence[bool] | bool = False,
    ) -> None:
        self.config = config or MapConfig()
        self.exchanges = tuple(exchanges) if exchanges else (self.config.exchange,)
        n_ex = len(self.exchanges)
        if isinstance(proxy, bool):
            proxy = [proxy] * n_ex
        if len(proxy) != n_ex:
            raise InputError(f"proxy has {len(proxy)} entries for {n_ex} exchanges")
        self.proxy = np.array([1 if p else 0 for p in proxy], dtype=np.int64)
        cfg = self.config
        n_lev = len(cfg.leverages)
        self.factors = np.empty((n_ex, 2, n_lev))
        self.weights = np.empty((n_ex, n_lev))
        self.max_leverage: list[float] = []
        for e, name in enumerate(self.exchanges):
            f, w, cap = leverage_factors(
                name,
                cfg.leverages,
                cfg.leverage_weights,
                symbol=cfg.symbol,
                position_notional=cfg.position_notional,
                taker_fee=cfg.taker_fee,
                max_leverage=cfg.max_leverage,
                tiers_file=cfg.tiers_file,
            )
            self.factors[e] = f
            self.weights[e] = w
            self.max_leverage.append(cap)
        self.formulas = tuple(formula_of(e) for e in self.exchanges)
        self.params = cfg.kernel_params()
        with np.errstate(divide="ignore"):
            logf = np.log(np.where(self.factors > 0, self.factors, 1.0)) / self.params[1]
        self.log_factors = np.where(self.factors > 0, logf, 0.0)
        self.g = np.zeros(nb.G_SIZE)
        self.ex = np.zeros((n_ex, nb.X_SIZE))
        self.long_raw = np.zeros((n_ex, 0))
        self.short_raw = np.zeros((n_ex, 0))
        self.work = np.zeros((1, 0))
        self.clusters_buf = np.zeros((2, cfg.cascade_max_depth + 1, nb.C_SIZE))
        self.hm = np.zeros((cfg.heatmap_frames, 2, cfg.heatmap_rows))
        self.hm_meta = np.zeros((cfg.heatmap_frames, 4))
        self.last_time: float | None = None

    # ------------------------------------------------------------------------------------
    @property
    def n_exchanges(self) -> int:
        return len(self.exchanges)

    @property
    def initialized(self) -> bool:
        return bool(self.g[nb.G_INIT] == 1.0)

    @property
    def n_bins(self) -> int:
        return int(self.long_raw.shape[1])

    @property
    def nbytes(self) -> int:
        """Bytes held by the state (grid arrays, scratch and heatmap ring buffer)."""
        arrays = (self.g, self.ex, self.long_raw, self.short_raw, self.work, self.clusters_buf)
        return sum(a.nbytes for a in arrays) + self.hm.nbytes + self.hm_meta.nbytes

    def copy(self) -> LiquidationMap:
        """An independent copy of the map (a checkpoint): every array the kernels or
        :meth:`consume_to` change is copied, so updating either map leaves the other as it
        was; feeding both the same later bars gives bitwise-equal results. The configuration
        (immutable) is shared."""
        new = object.__new__(LiquidationMap)
        new.__dict__.update(self.__dict__)
        for name, value in self.__dict__.items():
            if isinstance(value, np.ndarray):
                setattr(new, name, value.copy())
        new.max_leverage = list(self.max_leverage)
        return new

    def _allocate(self, price: float) -> None:
        auto = self.config.auto_grid_for(price)
        if auto is not self.config:
            # the absolute step does not suit this market's price: a relative grid instead
            self.config = auto
            self.params = auto.kernel_params()
            with np.errstate(divide="ignore"):
                logf = np.log(np.where(self.factors > 0, self.factors, 1.0)) / self.params[1]
            self.log_factors = np.where(self.factors > 0, logf, 0.0)
        n = self.config.bins_for_price(price)
        if n > MAX_BINS:
            raise InputError(
                f"the first close {price:.6g} at a grid step of {self.config.step} USD needs "
                f"{n:,} bins (more than {MAX_BINS:,}): the step does not suit this market; use "
                "a relative grid (engine.step: null, engine.step_bps: 5) or a larger step"
            )
        n_ex = self.n_exchanges
        self.long_raw = np.zeros((n_ex, n))
        self.short_raw = np.zeros((n_ex, n))
        # scan window + smoothing never exceeds the grid, so n bins of scratch suffice
        self.work = np.zeros((1, n + 2))

    def update(self, ts: np.ndarray, x: np.ndarray) -> np.ndarray:
        """Advance over bars ``ts[n]`` (seconds) with inputs ``x[n, n_exchanges, 8]``.

        Returns the features ``[len(OUT_NAMES), n]`` (one row per name). Inputs must already be
        validated (``features.prepare_inputs`` does that); times must increase across calls.
        """
        ts = np.ascontiguousarray(ts, dtype=np.float64)
        x = np.ascontiguousarray(x, dtype=np.float64)
        if x.ndim != 3 or x.shape[1] != self.n_exchanges or x.shape[2] != nb.N_IN:
            raise InputError(
                f"inputs must have shape (n, {self.n_exchanges}, {nb.N_IN}), got {x.shape}"
            )
        if ts.shape[0] != x.shape[0]:
            raise InputError(f"{ts.shape[0]} times for {x.shape[0]} rows of inputs")
        n = ts.shape[0]
        out = np.empty((nb.N_OUT, n))
        if n == 0:
            return out
        if self.last_time is not None and ts[0] <= self.last_time:
            raise InputError(
                f"bar time {pd.Timestamp(ts[0], unit='s', tz='UTC')} is not after the last "
                f"bar already in the map ({pd.Timestamp(self.last_time, unit='s', tz='UTC')})"
            )
        if not self.initialized:
            closes = x[:, :, nb.I_CLOSE]
            finite = np.isfinite(closes) & (closes > 0)
            if finite.any():
                first = closes[finite][0]
                self._allocate(float(first))
        nb.run_nb(
            ts,
            x,
            self.params,
            self.factors,
            self.log_factors,
            self.weights,
            self.proxy,
            self.g,
            self.ex,
            self.long_raw,
            self.short_raw,
            self.work,
            self.clusters_buf,
            self.hm,
            self.hm_meta,
            out,
        )
        self.last_time = float(ts[-1])
        return out

    # ------------------------------------------------------------------------------------
    def price_of(self, idx: np.ndarray | float) -> np.ndarray:
        origin = self.g[nb.G_ORIGIN]
        step = self.params[1]
        i = np.asarray(idx, dtype=np.float64)
        if self.config.grid_mode == 0:
            return np.asarray(origin + i * step)
        return np.asarray(np.exp(origin + i * step))

    def levels(self, *, nonzero: bool = True) -> pd.DataFrame:
        """Notional per price bin: ``long_usd``, ``short_usd`` and ``<exchange>_long_usd`` ..."""
        if not self.initialized:
            return pd.DataFrame(columns=["long_usd", "short_usd"], index=pd.Index([], name="price"))
        sl = self.ex[:, nb.X_SCALE_L][:, None]
        ss = self.ex[:, nb.X_SCALE_S][:, None]
        lv = self.long_raw * sl
        sv = self.short_raw * ss
        data: dict[str, np.ndarray] = {"long_usd": lv.sum(axis=0), "short_usd": sv.sum(axis=0)}
        if self.n_exchanges > 1:
            for e, name in enumerate(self.exchanges):
                data[f"{name}_long_usd"] = lv[e]
                data[f"{name}_short_usd"] = sv[e]
        df = pd.DataFrame(data, index=pd.Index(self.price_of(np.arange(self.n_bins)), name="price"))
        if nonzero:
            df = df[(df["long_usd"] > 0) | (df["short_usd"] > 0)]
        return df

    def reference_price(self) -> float:
        closes = self.ex[:, nb.X_LAST_CLOSE]
        finite = closes[np.isfinite(closes) & (closes > 0)]
        return float(finite[0]) if finite.size else math.nan

    def snapshot(
        self,
        price: float | None = None,
        max_clusters: int = 50,
        scan_range_pct: float | None = None,
    ) -> MapSnapshot:
        """Levels and all clusters within the scan range of ``price`` (default: last close).

        ``scan_range_pct`` widens (or narrows) the search for this snapshot only; by default it
        is the config's, so the nearest cluster equals the per-bar columns of the last bar.
        """
        ref = self.reference_price() if price is None else float(price)
        time = pd.Timestamp(self.last_time, unit="s", tz="UTC") if self.last_time else None
        levels = self.levels()
        if not self.initialized or not math.isfinite(ref):
            return MapSnapshot(time, ref, levels, [])
        clusters = clusters_from_state(self, ref, max_clusters, scan_range_pct)
        return MapSnapshot(time, ref, levels, clusters)

    def heatmap(self) -> HeatmapHistory:
        """The bounded heatmap history, oldest frame first."""
        total = int(self.g[nb.G_FRAMES])
        cap = self.hm.shape[0]
        k = min(total, cap)
        order = np.arange(total - k, total) % cap if cap else np.arange(0)
        return HeatmapHistory(
            times=pd.DatetimeIndex(pd.to_datetime(self.hm_meta[order, 0], unit="s", utc=True)),
            closes=self.hm_meta[order, 3].copy(),
            price_low=self.hm_meta[order, 1].copy(),
            price_high=self.hm_meta[order, 2].copy(),
            long_usd=self.hm[order, 0, :].copy(),
            short_usd=self.hm[order, 1, :].copy(),
            log_rows=self.config.grid_mode == 1,
        )

    def consume_to(self, price: float, side: str, exchange: str | None = None) -> float:
        """A realized liquidation at ``price`` on ``side`` ("long" / "short" liquidated): price
        traded there, so the levels at and beyond it on that side are consumed now, not at the
        next bar. Long levels at or above ``price``, short levels at or below it (the kernel's
        bar rule with ``price`` as the bar's low / high). ``exchange`` limits it to that
        exchange's block (default: every block of the market). Returns the USD consumed, which
        is added to ``accounting()["consumed_usd"]`` (mass is conserved). A later bar does not
        count these levels again in its ``liq_pred_*`` (they are gone)."""
        if side not in ("long", "short"):
            raise InputError(f"consume_to: side must be 'long' or 'short', got {side!r}")
        if not (isinstance(price, int | float) and math.isfinite(price) and price > 0):
            raise InputError(f"consume_to: price must be a number > 0, got {price!r}")
        if not self.initialized:
            return 0.0
        if exchange is None:
            blocks = range(self.n_exchanges)
        elif exchange in self.exchanges:
            blocks = range(self.exchanges.index(exchange), self.exchanges.index(exchange) + 1)
        else:
            raise InputError(f"consume_to: {exchange!r} is not in this map ({self.exchanges})")
        origin, step, n = float(self.g[nb.G_ORIGIN]), float(self.params[1]), self.n_bins
        pos = nb.index_of_nb(float(price), float(self.params[0]), step, origin)
        usd = 0.0
        for e in blocks:
            if side == "long":
                lo, hi = max(0, math.ceil(pos)), int(self.ex[e, nb.X_LTOP])
                raw, tot, scale = self.long_raw, nb.X_TOT_L, nb.X_SCALE_L
            else:
                lo, hi = int(self.ex[e, nb.X_SBOT]), min(n - 1, math.floor(pos))
                raw, tot, scale = self.short_raw, nb.X_TOT_S, nb.X_SCALE_S
            if hi < lo:
                continue
            s = float(raw[e, lo : hi + 1].sum())
            raw[e, lo : hi + 1] = 0.0
            self.ex[e, tot] = max(0.0, self.ex[e, tot] - s)
            if side == "long":
                self.ex[e, nb.X_LTOP] = lo - 1.0
            else:
                self.ex[e, nb.X_SBOT] = hi + 1.0
            usd += s * float(self.ex[e, scale])
        self.g[nb.G_CONSUMED] += usd
        return usd

    def accounting(self) -> dict[str, float]:
        """Where the notional went: opened, consumed, closed, decayed, dropped, standing."""
        g = self.g
        standing = float(
            (self.ex[:, nb.X_TOT_L] * self.ex[:, nb.X_SCALE_L]).sum()
            + (self.ex[:, nb.X_TOT_S] * self.ex[:, nb.X_SCALE_S]).sum()
        )
        return {
            "opened_usd": float(g[nb.G_OPENED]),
            "consumed_usd": float(g[nb.G_CONSUMED]),
            "closed_usd": float(g[nb.G_CLOSED]),
            "decayed_usd": float(g[nb.G_DECAYED]),
            "dropped_usd": float(g[nb.G_DROPPED]),
            "standing_usd": standing,
        }


def clusters_from_state(
    lmap: LiquidationMap, ref: float, max_clusters: int = 50, scan_range_pct: float | None = None
) -> list[Cluster]:
    """Every cluster within the scan range on each side of ``ref``, nearest first per side.

    The per-bar columns (nearest cluster, cascade, armed, flush) come from ``nb.run_nb``; this
    lists *all* clusters of the current state for snapshots, tables, alerts and pictures with
    the same ``find_clusters_nb`` and ``cascade_nb``, so both agree. ``scan_range_pct`` widens
    (or narrows) the search for this call only."""
    cfg = lmap.config
    p = lmap.params.copy()
    if scan_range_pct is not None:
        p[nb.Param.scan_range] = scan_range_pct / 100.0
    origin = float(lmap.g[nb.G_ORIGIN])
    n = lmap.n_bins
    vals = np.zeros(n + 2)
    bin_prices = lmap.price_of(np.arange(n))
    result: list[Cluster] = []
    for side, name, raw, scale_col in (
        (0, "long", lmap.long_raw, nb.X_SCALE_L),
        (1, "short", lmap.short_raw, nb.X_SCALE_S),
    ):
        scales = np.ascontiguousarray(lmap.ex[:, scale_col])
        cl = nb.side_clusters_nb(raw, scales, side, ref, p, origin, max_clusters, vals)
        per_ex = raw * scales[:, None]
        for c in range(cl.shape[0]):
            depth, cusd, _end = nb.cascade_nb(
                cl[None], 0, c, cl.shape[0], ref, cfg.cascade_gap_pct / 100.0, cfg.cascade_max_depth
            )
            lo = float(min(cl[c, nb.C_NEAR], cl[c, nb.C_FAR]))
            hi = float(max(cl[c, nb.C_NEAR], cl[c, nb.C_FAR]))
            mask = (bin_prices >= lo - 1e-9 * hi) & (bin_prices <= hi * (1 + 1e-12))
            by_ex = per_ex[:, mask].sum(axis=1)
            tot = float(by_ex.sum())
            shares = {
                lmap.exchanges[e]: (float(by_ex[e]) / tot if tot > 0 else 0.0)
                for e in range(lmap.n_exchanges)
            }
            usd = float(cl[c, nb.C_USD])
            price = float(cl[c, nb.C_PRICE])
            result.append(
                Cluster(
                    side=name,
                    price=price,
                    low=lo,
                    high=hi,
                    usd=usd,
                    distance_pct=abs(ref - price) / ref * 100.0,
                    depth=int(depth),
                    cascade_usd=float(cusd),
                    shares=shares,
                )
            )
    return result
