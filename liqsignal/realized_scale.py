"""The map's mass scaled by what was really liquidated where price crossed its levels.

Where a bar's range crossed levels that stood on the map before it (``liq_pred_standing_*`` >
0, a *crossed* bar) the realized liquidations of that side say how much leverage really sat
there. The scale of a side (optionally per band of how deep the bar crossed, in % of the
previous close) at bar t is the ratio of realized to predicted USD over the crossed bars
**before** t, exponentially weighted (``half_life_bars``) and shrunk toward 1 in log space
by ``prior_bars`` pseudo-bars at ratio 1::

    s_t = (R / P) ** (N / (N + k))     R, P: weighted sums of realized and predicted USD on
                                       crossed bars < t with realized known; N: their weighted
                                       count; k = prior_bars

so a market whose pockets keep liquidating less than the map says gets a scale below 1 (less
leverage sat there) and one with few crossed bars stays near 1. Bars whose realized value is
unknown (NaN) teach nothing. The scale multiplies ``liq_pred_*_usd``, ``liq_pred_standing_*``
and ``liq_*_cluster_usd`` of bar t; it is point in time (learned from earlier bars only), so
the yardstick's walk-forward folds score it out of sample with nothing tuned on them.

Off by default (``RealizedScaleConfig.enabled``); the config section is
``liqsignal.realized_scale``; ``liqsignal calibrate --realized-scale`` measures it against the
unscaled map and writes the section, ``liqsignal evaluate --config`` scores a config with it.
"""

from __future__ import annotations

import json
import math
from collections.abc import Mapping
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from liqsignal.exceptions import ConfigError

__all__ = [
    "SECTION",
    "RealizedScaleConfig",
    "apply_realized_scale",
    "crossed_bars",
    "level_calibration",
    "load_realized_scale",
    "online_scale",
]

SECTION = "liqsignal.realized_scale"
SIDES = ("long", "short")


@dataclass(frozen=True)
class RealizedScaleConfig:
    """Settings of the realized scale (module docstring); off unless ``enabled``."""

    enabled: bool = False
    #: pseudo crossed bars at ratio 1 that the scale is shrunk toward
    prior_bars: float = 48.0
    #: half-life of a crossed bar's weight, in bars; None: every past bar weighs the same
    half_life_bars: float | None = 720.0
    #: edges of the crossing-depth bands in % of the previous close (empty: one scale a side)
    bands_pct: tuple[float, ...] = ()

    def __post_init__(self) -> None:
        if not isinstance(self.enabled, bool):
            raise ConfigError(f"{SECTION}.enabled must be true or false, got {self.enabled!r}")
        if not (_number(self.prior_bars) and self.prior_bars >= 0):
            raise ConfigError(
                f"{SECTION}.prior_bars must be a number >= 0, got {self.prior_bars!r}"
            )
        h = self.half_life_bars
        if h is not None and not (_number(h) and h > 0):
            raise ConfigError(f"{SECTION}.half_life_bars must be > 0 or null, got {h!r}")
        edges = tuple(self.bands_pct)
        if not all(_number(e) and e > 0 for e in edges) or list(edges) != sorted(set(edges)):
            raise ConfigError(
                f"{SECTION}.bands_pct must be increasing numbers > 0, got {list(edges)!r}"
            )
        object.__setattr__(self, "bands_pct", tuple(float(e) for e in edges))

    @classmethod
    def from_dict(cls, data: Mapping[str, Any] | None) -> RealizedScaleConfig:
        """From the ``liqsignal.realized_scale`` section; unknown keys are a ConfigError."""
        if data is None:
            return cls()
        if not isinstance(data, Mapping):
            raise ConfigError(f"{SECTION} must be an object, got {type(data).__name__}")
        known = {"enabled", "prior_bars", "half_life_bars", "bands_pct"}
        unknown = sorted(set(data) - known)
        if unknown:
            raise ConfigError(f"{SECTION}: unknown key(s) {unknown}; known: {sorted(known)}")
        kw = dict(data)
        if "bands_pct" in kw:
            if not isinstance(kw["bands_pct"], list | tuple):
                raise ConfigError(f"{SECTION}.bands_pct must be a list, got {kw['bands_pct']!r}")
            kw["bands_pct"] = tuple(kw["bands_pct"])
        return cls(**kw)

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["bands_pct"] = list(self.bands_pct)
        return d


def _number(v: Any) -> bool:
    return isinstance(v, int | float) and not isinstance(v, bool) and math.isfinite(v)


def load_realized_scale(path: str | Path | None) -> RealizedScaleConfig:
    """The ``liqsignal.realized_scale`` section of a JSON config file (default: off)."""
    if path is None:
        return RealizedScaleConfig()
    try:
        data = json.loads(Path(path).read_text(encoding="utf-8"))
    except (OSError, json.JSONDecodeError) as e:
        raise ConfigError(f"--config {path}: not a readable JSON file ({e})") from e
    section = data.get("liqsignal") if isinstance(data, dict) else None
    if not isinstance(section, dict):
        return RealizedScaleConfig()
    return RealizedScaleConfig.from_dict(section.get("realized_scale"))


def crossed_bars(features: pd.DataFrame, side: str) -> np.ndarray:
    """Bars whose range reached levels that stood on the map before them."""
    stand = features[f"liq_pred_standing_{side}_usd"].to_numpy(dtype=np.float64)
    return np.nan_to_num(stand) > 0


def _depth_pct(frame: pd.DataFrame, side: str) -> np.ndarray:
    """How far the bar went beyond the previous close on ``side``, in % (known at its close)."""
    c = frame["close"].to_numpy(dtype=np.float64)
    pc = np.concatenate([[np.nan], c[:-1]])
    if side == "long":
        move = pc - frame["low"].to_numpy(dtype=np.float64)
    else:
        move = frame["high"].to_numpy(dtype=np.float64) - pc
    return np.asarray(np.maximum(move, 0.0) / pc * 100.0)


def online_scale(
    pred: np.ndarray,
    real: np.ndarray,
    crossed: np.ndarray,
    band: np.ndarray,
    n_bands: int,
    prior_bars: float,
    half_life_bars: float | None,
) -> np.ndarray:
    """Per bar, the scale learned from the crossed bars before it (module docstring)."""
    n = len(pred)
    decay = 1.0 if half_life_bars is None else 0.5 ** (1.0 / half_life_bars)
    r_sum = np.zeros(n_bands)
    p_sum = np.zeros(n_bands)
    w_sum = np.zeros(n_bands)
    out = np.ones(n)
    for t in range(n):
        b = int(band[t])
        if w_sum[b] > 0 and p_sum[b] > 0:
            ratio = max(r_sum[b], 1e-12 * p_sum[b]) / p_sum[b]
            out[t] = ratio ** (w_sum[b] / (w_sum[b] + prior_bars))
        r_sum *= decay
        p_sum *= decay
        w_sum *= decay
        p, r = pred[t], real[t]
        if crossed[t] and math.isfinite(r) and math.isfinite(p) and p > 0:
            r_sum[b] += r
            p_sum[b] += p
            w_sum[b] += 1.0
    return out


def apply_realized_scale(
    features: pd.DataFrame, frame: pd.DataFrame, cfg: RealizedScaleConfig
) -> pd.DataFrame:
    """``features`` with each side's mass scaled by :func:`online_scale` (a copy; adds
    ``liq_real_scale_long`` / ``_short``). ``frame`` carries ``realized_*_usd``."""
    out = features.copy()
    edges = np.asarray(cfg.bands_pct, dtype=np.float64)
    for side in SIDES:
        pred = out[f"liq_pred_{side}_usd"].to_numpy(dtype=np.float64)
        real = frame[f"realized_{side}_usd"].to_numpy(dtype=np.float64)
        depth = np.nan_to_num(_depth_pct(frame, side))
        band = np.searchsorted(edges, depth, side="right") if edges.size else np.zeros(len(pred))
        s = online_scale(
            pred,
            real,
            crossed_bars(out, side),
            band,
            edges.size + 1,
            cfg.prior_bars,
            cfg.half_life_bars,
        )
        for col in (f"liq_pred_{side}_usd", f"liq_pred_standing_{side}_usd",
                    f"liq_{side}_cluster_usd"):  # fmt: skip
            if col in out.columns:
                out[col] = out[col].to_numpy(dtype=np.float64) * s
        out[f"liq_real_scale_{side}"] = s
    return out


def level_calibration(
    pred: np.ndarray, real: np.ndarray, crossed: np.ndarray, rows: slice
) -> dict[str, float]:
    """Predicted against realized USD on the crossed bars of ``rows`` with realized known:
    ``ratio`` = sum realized / sum predicted (1 is calibrated), ``log_error`` = median
    |ln((realized + 1) / (predicted + 1))| per bar (0 is perfect; ln 2 = off by 2x)."""
    p = np.asarray(pred, dtype=np.float64)[rows]
    r = np.asarray(real, dtype=np.float64)[rows]
    ok = np.asarray(crossed)[rows] & np.isfinite(p) & np.isfinite(r)
    if not ok.any():
        return {"crossed_bars": 0, "pred_usd": 0.0, "real_usd": 0.0, "ratio": math.nan,
                "log_error": math.nan}  # fmt: skip
    ps, rs = float(p[ok].sum()), float(r[ok].sum())
    return {
        "crossed_bars": int(ok.sum()),
        "pred_usd": ps,
        "real_usd": rs,
        "ratio": rs / ps if ps > 0 else math.nan,
        "log_error": float(np.median(np.abs(np.log((r[ok] + 1.0) / (p[ok] + 1.0))))),
    }
