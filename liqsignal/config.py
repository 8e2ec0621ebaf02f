"""Validated settings of the map engine (MapConfig), with documented, calibrated defaults.

Every field is documented in the README's configuration table. ``MapConfig.from_dict`` reads the
``liqsignal.engine`` section of a Freqtrade config and names the offending key on bad input.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from liqsignal import nb
from liqsignal.exceptions import ConfigError

__all__ = [
    "DEFAULT_LEVERAGES",
    "DEFAULT_LEVERAGE_WEIGHTS",
    "MAX_BINS",
    "PARAM_NAMES",
    "ForecastConfig",
    "MapConfig",
    "section_kwargs",
]

#: Leverage tiers modelled by default (10 tiers, 2x..125x).
DEFAULT_LEVERAGES: tuple[float, ...] = (2.0, 3.0, 5.0, 10.0, 20.0, 25.0, 50.0, 75.0, 100.0, 125.0)
#: Share of new notional opened at each default leverage (sums to 1); calibrated on the
#: development file (see README, "Calibration").
DEFAULT_LEVERAGE_WEIGHTS: tuple[float, ...] = (
    0.04,
    0.06,
    0.12,
    0.22,
    0.18,
    0.12,
    0.12,
    0.06,
    0.05,
    0.03,
)

#: An absolute step within this range of basis points of the first price is kept as it is.
AUTO_GRID_BPS: tuple[float, float] = (1.0, 50.0)
#: The relative step (bps) that replaces an absolute step outside ``AUTO_GRID_BPS``.
AUTO_GRID_STEP_BPS = 5.0

#: Order of the float parameters handed to the kernels (``MapConfig.kernel_params``): the
#: names of ``nb.Param``, whose values are their positions in the vector.
PARAM_NAMES = nb.PARAM_NAMES


def section_kwargs(
    cls: type, data: Mapping[str, Any], section: str, exclude: tuple[str, ...] = ("extra",)
) -> dict[str, Any]:
    """The keyword arguments of a config dataclass from one config section (a mapping).

    Raises ``ConfigError`` naming ``section`` when ``data`` is not a mapping or has keys that
    are not fields of ``cls`` (the message lists the known keys).
    """
    if not isinstance(data, Mapping):
        raise ConfigError(f"{section} must be a mapping, got {type(data).__name__}")
    names = {f.name for f in dataclasses.fields(cls)} - set(exclude)
    unknown = sorted(set(data) - names)
    if unknown:
        raise ConfigError(f"{section}: unknown key(s) {unknown}; known keys: {sorted(names)}")
    return dict(data)


#: Upper bound of the grid (bins per exchange and side): 1,000,000 bins hold 16 MB per exchange.
MAX_BINS = 1_000_000

_ENGINE = "liqsignal.engine"


def _is_number(value: Any) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool) and math.isfinite(value)


def _positive(name: str, value: float) -> None:
    if not (_is_number(value) and value > 0):
        raise ConfigError(f"{_ENGINE}.{name} must be a finite number > 0, got {value!r}")


def _fraction(name: str, value: float, *, allow_zero: bool = True) -> None:
    ok = _is_number(value) and (0 <= value <= 1 if allow_zero else 0 < value <= 1)
    if not ok:
        raise ConfigError(f"{_ENGINE}.{name} must be a number in [0, 1], got {value!r}")


#: Sane ranges of the engine's numbers: (integer?, lowest, highest); a value outside (or of the
#: wrong type) is a ``ConfigError`` naming ``liqsignal.engine.<key>``. The upper bounds keep
#: memory and work per bar bounded (bins, heatmap buffer, cluster buffer, EMA spans).
_ENGINE_RANGES: dict[str, tuple[bool, float, float]] = {
    "step": (False, 1e-12, 1e9),
    "step_bps": (False, 0.01, 1000.0),
    "width": (False, 1e-3, 10.0),
    "n_bins": (True, 16, MAX_BINS),
    "max_leverage": (False, 1.0, 1000.0),
    "position_notional": (False, 1e-6, 1e12),
    "taker_fee": (False, 0.0, 0.1),
    "half_life_hours": (False, 1e-3, 1e5),
    "density_band_pct": (False, 1e-6, 50.0),
    "scan_range_pct": (False, 1e-6, 50.0),
    "smooth_half_bins": (True, 0, 10_000),
    "cluster_threshold": (False, 1e-9, 1e6),
    "contrast_window_pct": (False, 1e-6, 50.0),
    "cluster_min_usd": (False, 0.0, 1e15),
    "merge_gap_bins": (True, 0, 10_000),
    "cascade_gap_pct": (False, 1e-6, 50.0),
    "cascade_max_depth": (True, 1, 1000),
    "armed_distance_pct": (False, 1e-6, 50.0),
    "armed_size_ratio": (False, 1e-9, 1e6),
    "armed_oi_ratio": (False, 1e-9, 1e6),
    "armed_funding_min": (False, -1.0, 1.0),
    "history_bars": (True, 1, 1_000_000),
    "flush_ratio": (False, 1e-9, 1e6),
    "flush_min_usd": (False, 0.0, 1e15),
    "heatmap_every_s": (False, 1.0, 1e8),
    "heatmap_frames": (True, 1, 50_000),
    "heatmap_rows": (True, 1, 5_000),
    "heatmap_bins_per_row": (True, 1, 10_000),
}
#: Most heatmap cells (frames x rows) the ring buffer may hold: 5,000,000 cells are 80 MB.
MAX_HEATMAP_CELLS = 5_000_000


def _check_engine_types(cfg: Any) -> None:
    """Types and ranges of every engine key, naming ``liqsignal.engine.<key>``."""
    for key in ("exchange", "symbol"):
        v = getattr(cfg, key)
        if not isinstance(v, str) or not v.strip():
            raise ConfigError(f"{_ENGINE}.{key} must be a non-empty string, got {v!r}")
    if cfg.tiers_file is not None and not (isinstance(cfg.tiers_file, str) and cfg.tiers_file):
        raise ConfigError(
            f"{_ENGINE}.tiers_file must be a file path (a string) or null, got {cfg.tiers_file!r}"
        )
    for key, (integer, lo, hi) in _ENGINE_RANGES.items():
        v = getattr(cfg, key)
        if v is None and key in _NULLABLE:
            continue
        kind = "an integer" if integer else "a number"
        ok = _is_number(v) and (not integer or isinstance(v, int)) and lo <= v <= hi
        if not ok:
            null = " or null" if key in _NULLABLE else ""
            raise ConfigError(
                f"{_ENGINE}.{key} must be {kind} in [{lo:g}, {hi:g}]{null}, got {v!r}"
            )
    if cfg.heatmap_frames * cfg.heatmap_rows > MAX_HEATMAP_CELLS:
        raise ConfigError(
            f"{_ENGINE}.heatmap_frames x {_ENGINE}.heatmap_rows must be at most "
            f"{MAX_HEATMAP_CELLS:,} cells, got {cfg.heatmap_frames} x {cfg.heatmap_rows}"
        )
    for key in ("leverages", "leverage_weights"):
        v = getattr(cfg, key)
        if not isinstance(v, tuple | list) or not 1 <= len(v) <= 100:
            raise ConfigError(f"{_ENGINE}.{key} must be a list of 1 to 100 numbers, got {v!r}")
        if not all(_is_number(x) for x in v):
            raise ConfigError(f"{_ENGINE}.{key} must be a list of finite numbers, got {v!r}")
    if any(lev > 1000 for lev in cfg.leverages):
        raise ConfigError(f"{_ENGINE}.leverages: each must be in [1, 1000], got {cfg.leverages}")
    if not isinstance(cfg.extra, Mapping):
        raise ConfigError(f"{_ENGINE}.extra must be a mapping, got {cfg.extra!r}")


_NULLABLE = frozenset(
    ("step", "step_bps", "n_bins", "max_leverage", "contrast_window_pct", "close_long_share")
)


@dataclass(frozen=True)
class MapConfig:
    """Settings of one liquidation map. Percentages are in percent of price (1.5 = 1.5 %)."""

    #: Exchange whose liquidation formula applies: binance, bybit, okx, hyperliquid, or
    #: another ccxt id (falls back to the Binance formula; ``LiquidationMap.formulas`` tells).
    exchange: str = "binance"
    #: Market symbol, used to look up maintenance-margin tiers (ccxt style).
    symbol: str = "BTC/USDT:USDT"
    #: Absolute grid step in quote currency (USD). Set to None to use ``step_bps``.
    step: float | None = 50.0
    #: Relative grid step in basis points (used when ``step`` is None).
    step_bps: float | None = None
    #: An absolute ``step`` that is not within 1-50 bps of the market's first price (50 USD is
    #: 5 bps of BTC; it would be 2 % of ETH) is replaced by a 5 bps relative grid. False: keep
    #: the step as given.
    auto_grid: bool = True
    #: Half-width of the grid around price, as a fraction of price (0.55: 2x levels fit).
    width: float = 0.55
    #: Number of bins; None derives it from ``width`` and the first price.
    n_bins: int | None = None
    #: Re-centre the grid when price strays this fraction of the bins from the centre.
    recentre_frac: float = 0.05
    #: Leverage tiers modelled, and the share of new notional at each.
    leverages: tuple[float, ...] = DEFAULT_LEVERAGES
    leverage_weights: tuple[float, ...] = DEFAULT_LEVERAGE_WEIGHTS
    #: Symbol's maximum leverage; None reads it from the tiers (tiers above it are dropped).
    max_leverage: float | None = None
    #: Representative position notional (USD) that selects the maintenance-margin tier.
    position_notional: float = 10_000.0
    #: Taker fee rate, used where the exchange's formula includes it (OKX).
    taker_fee: float = 0.0005
    #: Path of a ccxt-style leverage tiers JSON; None uses the bundled Binance file.
    tiers_file: str | None = None
    #: Entries spread uniformly over this fraction of the bar's range around (H+L+C)/3.
    entry_spread: float = 1.0
    #: Long share of new positions on a green candle (1 - it on a red one) without taker data.
    direction_long_share: float = 0.55
    #: Long share of OI decreases; None: pro rata to the standing long/short notional.
    close_long_share: float | None = None
    #: Turnover: this share of bar volume x price opens new positions while the same notional
    #: of standing positions closes pro rata (net change stays dOI). 0 disables. 1.0 (the
    #: default, chosen by ``scripts/select_defaults.py`` on the first block of every bundled
    #: dataset) opens as much notional as was traded; with ``close_relative`` the map then turns
    #: over with traded volume relative to open interest.
    churn_volume_share: float = 1.0
    #: Share of a bar's new levels that the same bar's range already reached which is counted
    #: as liquidated within that bar (the order of prices inside a bar is unknown).
    intrabar_share: float = 0.5
    #: True: OI decreases (and turnover closes) remove the same *fraction* of the map as of open
    #: interest (closes fall on all open positions, the map holds a part of them; the default).
    #: False: remove the USD amount itself, so a large OI drop can wipe a small map (the first
    #: version's rule; it ranks realized liquidations worse on every bundled dataset).
    close_relative: bool = True
    #: Freshness half-life in hours (decay by wall time, so gaps decay correctly).
    half_life_hours: float = 48.0
    #: Volume-proxy mode (no OI): this share of bar volume x price counts as new notional.
    proxy_volume_share: float = 0.02
    #: Band for ``liq_*_density_usd``, percent of price.
    density_band_pct: float = 2.0
    #: How far from price clusters and cascades are searched, percent of price.
    scan_range_pct: float = 5.0
    #: Smoothing half-width in bins before thresholding.
    smooth_half_bins: int = 2
    #: A bin is dense when its smoothed notional exceeds this multiple of the scan mean (or,
    #: with ``contrast_window_pct``, of the mean of its own neighbourhood).
    cluster_threshold: float = 2.0
    #: Local contrast: compare each bin with the bins within this percent of price around it
    #: instead of the whole scan window (the default 2 %: with the turnover-driven map the scan
    #: mean put the nearest pocket at the scan's edge, 4.4 % away, and "armed" almost never
    #: fired). None: the scan window's mean (the first version).
    contrast_window_pct: float | None = 2.0
    #: Absolute USD floor for a cluster.
    cluster_min_usd: float = 0.0
    #: Runs of dense bins separated by at most this many bins merge into one cluster.
    merge_gap_bins: int = 2
    #: Cascade: next cluster counts when its near edge is within this percent of the previous
    #: cluster's far edge.
    cascade_gap_pct: float = 0.6
    #: Cascade depth cap.
    cascade_max_depth: int = 10
    #: Armed: nearest cluster within this percent of price ...
    armed_distance_pct: float = 1.5
    #: ... at least this multiple of its own recent (EMA) size ...
    armed_size_ratio: float = 1.2
    #: ... with OI at least this multiple of its EMA (skipped without OI) ...
    armed_oi_ratio: float = 1.0
    #: ... and funding on the crowded side >= this (longs: rate, shorts: -rate; skipped if NaN).
    armed_funding_min: float = 0.0
    #: Span in bars of the EMAs used for "against its own history".
    history_bars: int = 168
    #: Flush: consumed notional at least this multiple of its EMA ...
    flush_ratio: float = 4.0
    #: ... and at least this many USD.
    flush_min_usd: float = 0.0
    #: Heatmap history: one frame every this many seconds of data, at most ``heatmap_frames``
    #: frames (oldest dropped), ``heatmap_rows`` price rows of ``heatmap_bins_per_row`` bins.
    heatmap_every_s: float = 3600.0
    heatmap_frames: int = 2000
    heatmap_rows: int = 240
    heatmap_bins_per_row: int = 4
    extra: Mapping[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if self.step is None and self.step_bps is None:
            raise ConfigError(f"{_ENGINE}: set one of step (USD per bin) or step_bps")
        if self.step is not None and self.step_bps is not None:
            raise ConfigError(f"{_ENGINE}: set only one of step and step_bps, not both")
        _check_engine_types(self)
        if self.step is not None:
            _positive("step", self.step)
        if self.step_bps is not None:
            _positive("step_bps", self.step_bps)
        _positive("width", self.width)
        _fraction("recentre_frac", self.recentre_frac)
        if len(self.leverages) == 0 or len(self.leverages) != len(self.leverage_weights):
            raise ConfigError(
                f"{_ENGINE}.leverages and .leverage_weights must be non-empty and of equal "
                f"length, got {len(self.leverages)} and {len(self.leverage_weights)}"
            )
        for lev in self.leverages:
            if not (math.isfinite(lev) and lev >= 1):
                raise ConfigError(f"{_ENGINE}.leverages: each must be >= 1, got {lev!r}")
        for w in self.leverage_weights:
            if not (math.isfinite(w) and w >= 0):
                raise ConfigError(f"{_ENGINE}.leverage_weights: each must be >= 0, got {w!r}")
        if sum(self.leverage_weights) <= 0:
            raise ConfigError(f"{_ENGINE}.leverage_weights must not all be zero")
        if self.max_leverage is not None:
            _positive("max_leverage", self.max_leverage)
        _positive("position_notional", self.position_notional)
        _fraction("taker_fee", self.taker_fee)
        _fraction("entry_spread", self.entry_spread)
        _fraction("direction_long_share", self.direction_long_share)
        if self.close_long_share is not None:
            _fraction("close_long_share", self.close_long_share)
        _positive("half_life_hours", self.half_life_hours)
        _fraction("proxy_volume_share", self.proxy_volume_share)
        _fraction("churn_volume_share", self.churn_volume_share)
        _fraction("intrabar_share", self.intrabar_share)
        if not isinstance(self.auto_grid, bool):
            raise ConfigError(f"{_ENGINE}.auto_grid must be true or false, got {self.auto_grid!r}")
        if not isinstance(self.close_relative, bool):
            raise ConfigError(
                f"{_ENGINE}.close_relative must be true or false, got {self.close_relative!r}"
            )
        for name in ("density_band_pct", "scan_range_pct", "cascade_gap_pct"):
            _positive(name, getattr(self, name))
        _positive("armed_distance_pct", self.armed_distance_pct)
        _positive("cluster_threshold", self.cluster_threshold)
        if self.contrast_window_pct is not None:
            _positive("contrast_window_pct", self.contrast_window_pct)
        for name in ("smooth_half_bins", "merge_gap_bins"):
            v = getattr(self, name)
            if not isinstance(v, int) or v < 0:
                raise ConfigError(f"{_ENGINE}.{name} must be an integer >= 0, got {v!r}")
        for name in ("cascade_max_depth", "history_bars", "heatmap_frames", "heatmap_rows"):
            v = getattr(self, name)
            if not isinstance(v, int) or v < 1:
                raise ConfigError(f"{_ENGINE}.{name} must be an integer >= 1, got {v!r}")
        if not isinstance(self.heatmap_bins_per_row, int) or self.heatmap_bins_per_row < 1:
            raise ConfigError(f"{_ENGINE}.heatmap_bins_per_row must be an integer >= 1")
        for name in ("cluster_min_usd", "flush_min_usd"):
            v = getattr(self, name)
            if not (math.isfinite(v) and v >= 0):
                raise ConfigError(f"{_ENGINE}.{name} must be >= 0, got {v!r}")
        for name in ("armed_size_ratio", "armed_oi_ratio", "flush_ratio", "heatmap_every_s"):
            _positive(name, getattr(self, name))
        if not math.isfinite(self.armed_funding_min):
            raise ConfigError(f"{_ENGINE}.armed_funding_min must be finite")

    @classmethod
    def from_dict(cls, data: Mapping[str, Any] | None) -> MapConfig:
        """Build from a mapping (the ``liqsignal.engine`` config section); unknown keys fail."""
        if data is None:
            return cls()
        kwargs = section_kwargs(cls, data, _ENGINE)
        for key in ("leverages", "leverage_weights"):
            if key in kwargs:
                v = kwargs[key]
                try:
                    if isinstance(v, str | bytes | Mapping) or any(isinstance(x, bool) for x in v):
                        raise TypeError(type(v).__name__)
                    kwargs[key] = tuple(float(x) for x in v)
                except (TypeError, ValueError) as e:
                    raise ConfigError(
                        f"{_ENGINE}.{key} must be a list of numbers, got {v!r}"
                    ) from e
        return cls(**kwargs)

    def replace(self, **changes: Any) -> MapConfig:
        """A copy with some fields changed (validated again)."""
        return dataclasses.replace(self, **changes)

    def to_dict(self) -> dict[str, Any]:
        d = dataclasses.asdict(self)
        d.pop("extra", None)
        d["leverages"] = list(self.leverages)
        d["leverage_weights"] = list(self.leverage_weights)
        return d

    # --- what the kernels receive -------------------------------------------------------------
    @property
    def grid_mode(self) -> int:
        return 0 if self.step is not None else 1

    @property
    def grid_step(self) -> float:
        if self.step is not None:
            return float(self.step)
        assert self.step_bps is not None
        return math.log1p(self.step_bps / 1e4)

    def auto_grid_for(self, price: float) -> MapConfig:
        """This config, or (``auto_grid`` on and an absolute ``step`` outside
        ``AUTO_GRID_BPS`` of ``price``) the same with a relative grid of ``AUTO_GRID_STEP_BPS``:
        the 50 USD default suits BTC; ETH, SOL or DOGE get a relative step without tuning."""
        if not self.auto_grid or self.step is None or not (price > 0 and math.isfinite(price)):
            return self
        lo, hi = AUTO_GRID_BPS
        if lo <= self.step / price * 1e4 <= hi:
            return self
        return self.replace(step=None, step_bps=AUTO_GRID_STEP_BPS, n_bins=None)

    def bins_for_price(self, price: float) -> int:
        """Number of bins so that +-``width`` of ``price`` fits (or ``n_bins`` when set)."""
        if self.n_bins is not None:
            return self.n_bins
        if self.step is not None:
            n = int(math.ceil(2 * self.width * price / self.step))
        else:
            n = int(math.ceil(2 * math.log1p(self.width) / self.grid_step))
        return max(n + (n % 2), 16)

    def kernel_params(self) -> np.ndarray:
        """The float parameter vector, in ``PARAM_NAMES`` order."""
        values = {
            "grid_mode": float(self.grid_mode),
            "grid_step": self.grid_step,
            "half_life_s": self.half_life_hours * 3600.0,
            "entry_spread": self.entry_spread,
            "direction_long_share": self.direction_long_share,
            "close_long_share": -1.0 if self.close_long_share is None else self.close_long_share,
            "proxy_volume_share": self.proxy_volume_share,
            "density_band": self.density_band_pct / 100.0,
            "scan_range": self.scan_range_pct / 100.0,
            "smooth_half_bins": float(self.smooth_half_bins),
            "cluster_threshold": self.cluster_threshold,
            "cluster_min_usd": self.cluster_min_usd,
            "merge_gap_bins": float(self.merge_gap_bins),
            "cascade_gap": self.cascade_gap_pct / 100.0,
            "cascade_max_depth": float(self.cascade_max_depth),
            "armed_distance": self.armed_distance_pct / 100.0,
            "armed_size_ratio": self.armed_size_ratio,
            "armed_oi_ratio": self.armed_oi_ratio,
            "armed_funding_min": self.armed_funding_min,
            "ema_alpha": 2.0 / (self.history_bars + 1.0),
            "flush_ratio": self.flush_ratio,
            "flush_min_usd": self.flush_min_usd,
            "recentre_frac": self.recentre_frac,
            "heatmap_every_s": self.heatmap_every_s,
            "heatmap_bins_per_row": float(self.heatmap_bins_per_row),
            "churn_volume_share": self.churn_volume_share,
            "intrabar_share": self.intrabar_share,
            "close_relative": 1.0 if self.close_relative else 0.0,
            "contrast_window": (
                0.0 if self.contrast_window_pct is None else self.contrast_window_pct / 100.0
            ),
        }
        return np.array([values[n] for n in PARAM_NAMES], dtype=np.float64)


@dataclass(frozen=True)
class ForecastConfig:
    """Settings of the cascade-risk forecast (the ``liqsignal.forecast`` config section).

    See ``docs/forecast.md``: ``liq_*_cascade_prob`` is the probability that a cascade on that
    side starts within ``horizon_bars``; ``liq_*_armed`` is probability >= the threshold.
    """

    #: Add the forecast columns (and rewrite ``liq_*_armed`` from them) in ``add_liq_columns``.
    enabled: bool = True
    #: Path of a model JSON written by ``liqsignal fit``; None: the bundled default model.
    model: str | None = None
    #: Bars ahead the probability covers; must match the model's (a mismatch is an error).
    horizon_bars: int = 6
    #: Armed when the probability is at least this; None: the model's own threshold, chosen on
    #: its training data for ``target_precision``.
    armed_prob: float | None = None
    #: ``liqsignal fit``: precision the armed threshold is chosen for on the training data.
    target_precision: float = 0.2
    extra: Mapping[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if not isinstance(self.enabled, bool):
            raise ConfigError(
                f"liqsignal.forecast.enabled must be true or false, got {self.enabled!r}"
            )
        if self.model is not None and not (isinstance(self.model, str) and self.model):
            raise ConfigError(
                f"liqsignal.forecast.model must be a file path or null, got {self.model!r}"
            )
        h = self.horizon_bars
        if isinstance(h, bool) or not isinstance(h, int) or not 1 <= h <= 1000:
            raise ConfigError(
                f"liqsignal.forecast.horizon_bars must be an integer in [1, 1000], got {h!r}"
            )
        a = self.armed_prob
        if a is not None and not (
            isinstance(a, int | float) and not isinstance(a, bool) and 0.0 < a <= 1.0
        ):
            raise ConfigError(
                f"liqsignal.forecast.armed_prob must be a number in (0, 1] or null, got {a!r}"
            )
        t = self.target_precision
        if not (isinstance(t, int | float) and not isinstance(t, bool) and 0.0 < t <= 1.0):
            raise ConfigError(
                f"liqsignal.forecast.target_precision must be a number in (0, 1], got {t!r}"
            )

    @classmethod
    def from_dict(cls, data: Mapping[str, Any] | None) -> ForecastConfig:
        """Build from the ``liqsignal.forecast`` mapping; unknown keys fail, naming them."""
        if data is None:
            return cls()
        return cls(**section_kwargs(cls, data, "liqsignal.forecast"))

    def replace(self, **changes: Any) -> ForecastConfig:
        """A copy with some fields changed (validated again)."""
        return dataclasses.replace(self, **changes)
