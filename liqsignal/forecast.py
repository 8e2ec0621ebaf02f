"""Cascade-risk forecasts: the probability that a liquidation cascade starts within H bars.

At the close of bar t, ``liq_long_cascade_prob`` (``liq_short_cascade_prob``) is the probability
that a long (short) cascade onset falls in bars t+1..t+H. An onset is a bar whose realized side
liquidations exceed the trailing 98th percentile of the market's own past bars, the first bar of
a run (``liqsignal.datasets.cascade_onsets``; thresholds from past data only).

The model is one standardised logistic regression per side (scikit-learn), over scale-free
features so that one model serves markets of any size and price:

- map features (``map_*``): distance and USD of the nearest cluster on the side, cascade depth
  and USD, density band, standing-map forecast part (``liq_pred_standing_*`` when present),
  same-bar predicted liquidations and the standing total, all USD as a share of open interest;
  flush state;
- map-free features (``mf_*``): range, realized volatility, returns (signed towards the side),
  OI change, funding (only when every training row has it), volume change, distance to the
  recent extreme.

A fitted model serialises to plain JSON (scaler means and scales, coefficients, intercept,
threshold) with the data it was fitted on, the ``MapConfig`` of its map features and its
out-of-sample metrics; applying it (:func:`add_forecast_columns`) is numpy arithmetic, row by
row, so the columns are point in time. :func:`forecast_report` fits walk-forward (expanding
window, past only) on the bundled datasets and scores every fold it did not fit on.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from liqsignal.config import MapConfig
from liqsignal.exceptions import ForecastError, InputError, LiqsignalError, traceback_of

__all__ = [
    "BUNDLED_MODEL",
    "FORECAST_COLUMNS",
    "MAP_FEATURES",
    "MAP_FREE_FEATURES",
    "MODEL_FORMAT",
    "ForecastError",
    "ForecastModel",
    "SideModel",
    "add_forecast_columns",
    "apply_forecast",
    "cascade_targets",
    "choose_threshold",
    "expected_calibration_error",
    "fit_forecast",
    "forecast_features",
    "forecast_on_frame",
    "forecast_report",
    "format_forecast_report",
    "load_model",
    "market_config",
    "plot_forecast",
    "report_json",
    "score_probabilities",
    "training_frames",
    "walk_forward_probabilities",
]

logger = logging.getLogger(__name__)

SIDES = ("long", "short")
MODEL_FORMAT = "liqsignal.forecast/1"
BUNDLED_MODEL = Path(__file__).parent / "resources" / "forecast_model.json"

#: Columns the forecast adds; it also rewrites ``liq_*_armed`` and ``liq_*_armed_score``.
FORECAST_COLUMNS: tuple[str, ...] = ("liq_long_cascade_prob", "liq_short_cascade_prob")

#: Map features, per side (the side's own cluster, cascade, band ...).
MAP_FEATURES: tuple[str, ...] = (
    "map_cluster_dist",
    "map_has_cluster",
    "map_cluster_usd_oi",
    "map_cascade_depth",
    "map_cascade_usd_oi",
    "map_density_oi",
    "map_density_share",
    "map_standing_oi",
    "map_pred_oi",
    "map_total_oi",
    "map_flush_side",
    "map_flush_other",
    "map_bars_since_flush",
)
#: Map-free features, per side (returns and extremes signed towards the side).
MAP_FREE_FEATURES: tuple[str, ...] = (
    "mf_range_z",
    "mf_rv_ratio",
    "mf_rv_trend",
    "mf_ret1_z",
    "mf_ret6_z",
    "mf_oi_chg1_z",
    "mf_oi_chg24",
    "mf_volume_chg",
    "mf_extreme_dist_z",
    "mf_new_extreme_z",
    "mf_funding",
)

#: The features the default model uses (chosen on the bundled data's walk-forward scores, out
#: of the lists above: the full lists overfit, pooled out-of-sample AUC about 0.50 / 0.58).
DEFAULT_MAP_FREE_FEATURES: tuple[str, ...] = (
    "mf_range_z",
    "mf_ret6_z",
    "mf_volume_chg",
    "mf_new_extreme_z",
)
DEFAULT_MAP_FEATURES: tuple[str, ...] = ("map_standing_oi", "map_pred_oi", "map_density_share")
#: L2 strength of the logistic regressions (scikit-learn's C; smaller: stronger).
DEFAULT_C = 0.01

#: Bars of history the rolling features need (rows before it get NaN probabilities).
HISTORY_BARS = 50
_SHORT, _MID, _LONG = 12, 48, 168
#: Map-feature columns the model reads from ``compute_features`` output.
_MAP_INPUTS = (
    "liq_{s}_cluster_dist_pct",
    "liq_{s}_cluster_usd",
    "liq_{s}_cascade_depth",
    "liq_{s}_cascade_usd",
    "liq_{s}_density_usd",
    "liq_pred_{s}_usd",
    "liq_{s}_total_usd",
    "liq_flush",
    "liq_bars_since_flush",
)
_STANDING = "liq_pred_standing_{s}_usd"
_FRAME_COLS = ("date", "open", "high", "low", "close", "volume")


# ------------------------------------------------------------------------------------------
# features and targets
# ------------------------------------------------------------------------------------------


def _oi_value(frame: pd.DataFrame) -> np.ndarray:
    if "open_interest_value" in frame.columns:
        oi = frame["open_interest_value"].to_numpy(dtype=np.float64)
        if np.isfinite(oi).any():
            return oi
    if "open_interest_amount" in frame.columns:
        return frame["open_interest_amount"].to_numpy(dtype=np.float64) * frame["close"].to_numpy(
            dtype=np.float64
        )
    return np.full(len(frame), np.nan)


def _share(usd: np.ndarray, oi: np.ndarray) -> np.ndarray:
    """log1p of USD per 1,000 USD of open interest (NaN USD counts as none)."""
    with np.errstate(divide="ignore", invalid="ignore"):
        r = np.where(np.isfinite(usd), usd, 0.0) / oi
    return np.log1p(1e3 * np.clip(r, 0.0, None))


def _roll_std(x: pd.Series, n: int) -> pd.Series:
    return x.rolling(n, min_periods=n).std()


def _col(features: pd.DataFrame, name: str) -> np.ndarray:
    return features[name].to_numpy(dtype=np.float64)


def forecast_features(
    frame: pd.DataFrame, features: pd.DataFrame | None, side: str
) -> pd.DataFrame:
    """The model's inputs for ``side`` at every bar, on ``frame``'s index.

    ``frame``: the candles (``date, open, high, low, close, volume``, open interest, optional
    ``funding_rate``); ``features``: ``compute_features(frame, ...)`` on the same rows (None:
    map-free features only). Every value uses bars up to and including its own (rolling
    windows of at most ``HISTORY_BARS`` bars), so row t is the same from ``frame[:t+1]``.
    Map columns missing from ``features`` are left out (``map_standing_oi`` needs
    ``liq_pred_standing_*``); ``mf_funding`` is NaN without funding.
    """
    if side not in SIDES:
        raise ValueError(f"side must be 'long' or 'short', got {side!r}")
    missing = [c for c in _FRAME_COLS if c not in frame.columns]
    if missing:
        raise InputError(f"forecast: frame is missing column(s) {missing}")
    sign = -1.0 if side == "long" else 1.0  # long cascades come with falling prices
    close = frame["close"].astype(np.float64).reset_index(drop=True)
    high = frame["high"].astype(np.float64).reset_index(drop=True)
    low = frame["low"].astype(np.float64).reset_index(drop=True)
    vol = frame["volume"].astype(np.float64).reset_index(drop=True)
    oi = _oi_value(frame)
    oi_s = pd.Series(oi)
    out: dict[str, np.ndarray] = {}

    if features is not None:
        if len(features) != len(frame):
            raise InputError(
                f"forecast: features have {len(features)} rows, the frame {len(frame)}"
            )
        s, o = side, ("short" if side == "long" else "long")
        need = [c.format(s=s) for c in _MAP_INPUTS]
        absent = [c for c in need if c not in features.columns]
        if absent:
            raise InputError(f"forecast: features are missing column(s) {absent}")
        dist = np.abs(_col(features, f"liq_{s}_cluster_dist_pct"))
        has = np.isfinite(dist)
        out["map_cluster_dist"] = np.where(has, np.clip(dist, 0.0, 10.0), 10.0)
        out["map_has_cluster"] = has.astype(np.float64)
        out["map_cluster_usd_oi"] = _share(_col(features, f"liq_{s}_cluster_usd"), oi)
        depth = _col(features, f"liq_{s}_cascade_depth")
        out["map_cascade_depth"] = np.where(np.isfinite(depth), depth, 0.0)
        out["map_cascade_usd_oi"] = _share(_col(features, f"liq_{s}_cascade_usd"), oi)
        dens = _col(features, f"liq_{s}_density_usd")
        out["map_density_oi"] = _share(dens, oi)
        other = (
            _col(features, f"liq_{o}_density_usd")
            if f"liq_{o}_density_usd" in features.columns
            else np.full(len(frame), np.nan)
        )
        with np.errstate(divide="ignore", invalid="ignore"):
            tot = np.nan_to_num(dens) + np.nan_to_num(other)
            out["map_density_share"] = np.where(tot > 0, np.nan_to_num(dens) / tot, 0.5)
        standing = _STANDING.format(s=s)
        if standing in features.columns:
            out["map_standing_oi"] = _share(_col(features, standing), oi)
        out["map_pred_oi"] = _share(_col(features, f"liq_pred_{s}_usd"), oi)
        out["map_total_oi"] = _share(_col(features, f"liq_{s}_total_usd"), oi)
        flush = _col(features, "liq_flush")
        mine = 1.0 if side == "long" else -1.0
        out["map_flush_side"] = (flush == mine).astype(np.float64)
        out["map_flush_other"] = (flush == -mine).astype(np.float64)
        since = _col(features, "liq_bars_since_flush")
        out["map_bars_since_flush"] = np.log1p(
            np.clip(np.where(np.isfinite(since), since, 500.0), 0.0, 500.0)
        )
        # no map on the row (not built yet, or missing in an aggregate): no map features
        nomap = ~np.isfinite(_col(features, f"liq_{s}_total_usd"))
        if nomap.any():
            for k in MAP_FEATURES:
                if k in out:
                    out[k] = np.where(nomap, np.nan, out[k])

    with np.errstate(divide="ignore", invalid="ignore"):
        lr = np.log(close / close.shift(1))
        rv = _roll_std(lr, _MID)
        rv_s = _roll_std(lr, _SHORT)
        rv_l = _roll_std(lr, _LONG)
        rng = np.log(high / low)
        mean_rng = rng.rolling(_MID, min_periods=_MID).mean()
        out["mf_range_z"] = np.log(rng / mean_rng).to_numpy()
        out["mf_rv_ratio"] = np.log(rv_s / rv).to_numpy()
        out["mf_rv_trend"] = np.log(rv / rv_l).to_numpy()
        out["mf_ret1_z"] = (sign * lr / rv).to_numpy()
        r6 = np.log(close / close.shift(6))
        out["mf_ret6_z"] = (sign * r6 / (rv * math.sqrt(6.0))).to_numpy()
        doi = np.log(oi_s / oi_s.shift(1))
        out["mf_oi_chg1_z"] = (doi / _roll_std(doi, _MID)).to_numpy()
        out["mf_oi_chg24"] = np.log(oi_s / oi_s.shift(24)).to_numpy()
        lv = np.log(vol.clip(lower=1e-12))
        out["mf_volume_chg"] = (lv - lv.rolling(_MID, min_periods=_MID).mean()).to_numpy()
        if side == "long":
            ext = (close - low.rolling(24, min_periods=24).min()) / close
            new = (low.shift(1) - low).clip(lower=0.0) / close
        else:
            ext = (high.rolling(24, min_periods=24).max() - close) / close
            new = (high - high.shift(1)).clip(lower=0.0) / close
        out["mf_extreme_dist_z"] = (ext / rv).to_numpy()
        out["mf_new_extreme_z"] = (new / rv).to_numpy()
        if "funding_rate" in frame.columns:
            fr = frame["funding_rate"].to_numpy(dtype=np.float64)
            out["mf_funding"] = -sign * fr * 1e4  # longs crowded when funding is positive
        else:
            out["mf_funding"] = np.full(len(frame), np.nan)
    res = pd.DataFrame(out, index=frame.index)
    res = res.replace([np.inf, -np.inf], np.nan)
    return res


def cascade_targets(
    realized: np.ndarray, horizon: int, *, q: float = 0.98, min_history: int = 200
) -> np.ndarray:
    """1.0 where a cascade onset falls in bars t+1..t+horizon, 0.0 where none does, NaN where
    that is not known (the last ``horizon`` bars, bars whose window starts before the onset
    threshold exists, and windows without an onset that hold a bar whose realized value is
    NaN, unknown, or follows one)."""
    from liqsignal.datasets import cascade_onsets, trailing_quantile

    r = np.asarray(realized, dtype=np.float64)
    onset, _ = cascade_onsets(r, q=q, min_history=min_history)
    known = np.isfinite(trailing_quantile(r, q, min_history))
    n = len(r)
    y = np.full(n, np.nan)
    c = np.concatenate([[0], np.cumsum(onset.astype(np.int64))])
    # a bar can be no onset for sure only when it and the bar before it are known
    sure = np.isfinite(r) & np.concatenate([[True], np.isfinite(r[:-1])])
    u = np.concatenate([[0], np.cumsum((~sure).astype(np.int64))])
    for t in range(n - horizon):
        if known[t + 1]:
            if c[t + horizon + 1] - c[t + 1] > 0:
                y[t] = 1.0
            elif u[t + horizon + 1] - u[t + 1] == 0:
                y[t] = 0.0
    return y


# ------------------------------------------------------------------------------------------
# the model
# ------------------------------------------------------------------------------------------


def _sigmoid(v: float) -> float:
    if v != v:  # NaN
        return math.nan
    if v >= 0:
        return 1.0 / (1.0 + math.exp(-v))
    e = math.exp(v)
    return e / (1.0 + e)


@dataclass(frozen=True)
class SideModel:
    """One side's standardised logistic regression and its armed threshold."""

    features: tuple[str, ...]
    mean: tuple[float, ...]
    scale: tuple[float, ...]
    coef: tuple[float, ...]
    intercept: float
    #: ``liq_*_armed`` fires at probability >= threshold (1.0 or more: never).
    threshold: float
    target_precision: float
    #: Precision and flag rate of the threshold on the training rows.
    train_precision: float
    train_flag_rate: float
    base_rate: float
    #: Precision of the threshold measured on walk-forward folds not used for fitting.
    test_precision: float | None = None

    def predict(self, x: np.ndarray) -> np.ndarray:
        """Probabilities for rows of ``x`` (columns in ``features`` order); NaN rows -> NaN.

        Element by element in a fixed order (no matrix product, whose rounding can depend on
        the array's length and alignment), so a row gives the same bits whatever rows come
        with it: the columns are exactly point in time.
        """
        x = np.asarray(x, dtype=np.float64)
        logit = np.full(x.shape[0], self.intercept)
        for j, (mu, sd, c) in enumerate(zip(self.mean, self.scale, self.coef, strict=True)):
            logit = logit + (x[:, j] - mu) / sd * c
        p = np.array([_sigmoid(v) for v in logit.tolist()], dtype=np.float64)
        p[~np.all(np.isfinite(x), axis=1)] = np.nan
        return p

    def to_dict(self) -> dict[str, Any]:
        return {
            "features": list(self.features),
            "mean": list(self.mean),
            "scale": list(self.scale),
            "coef": list(self.coef),
            "intercept": self.intercept,
            "threshold": self.threshold,
            "target_precision": self.target_precision,
            "train_precision": self.train_precision,
            "train_flag_rate": self.train_flag_rate,
            "base_rate": self.base_rate,
            "test_precision": self.test_precision,
        }

    @classmethod
    def from_dict(cls, d: Mapping[str, Any], where: str) -> SideModel:
        try:
            feats = tuple(str(f) for f in d["features"])
            arrays = [tuple(float(v) for v in d[k]) for k in ("mean", "scale", "coef")]
            m = cls(
                feats,
                arrays[0],
                arrays[1],
                arrays[2],
                float(d["intercept"]),
                float(d["threshold"]),
                float(d["target_precision"]),
                math.nan if d["train_precision"] is None else float(d["train_precision"]),
                float(d["train_flag_rate"]),
                float(d["base_rate"]),
                None if d.get("test_precision") is None else float(d["test_precision"]),
            )
        except (KeyError, TypeError, ValueError) as e:
            raise ForecastError(f"{where}: bad side model ({type(e).__name__}: {e})") from e
        n = len(feats)
        if n == 0 or any(len(a) != n for a in arrays):
            raise ForecastError(f"{where}: features, mean, scale and coef must have equal length")
        unknown = sorted(set(feats) - set(MAP_FEATURES) - set(MAP_FREE_FEATURES))
        if unknown:
            raise ForecastError(f"{where}: fitted on unknown feature(s) {unknown}")
        vals = [*arrays[0], *arrays[1], *arrays[2], m.intercept]
        if not all(math.isfinite(v) for v in vals) or not all(s > 0 for s in m.scale):
            raise ForecastError(f"{where}: non-finite coefficients or non-positive scales")
        return m


@dataclass(frozen=True)
class ForecastModel:
    """Both sides' models plus what they were fitted on (all of it goes into the JSON file)."""

    sides: Mapping[str, SideModel]
    horizon_bars: int
    map_features: bool
    map_config: Mapping[str, Any]
    onset_quantile: float = 0.98
    onset_min_history: int = 200
    training: Sequence[Mapping[str, Any]] = ()
    metrics: Mapping[str, Any] = field(default_factory=dict)
    created: str = ""
    source: str = ""

    @property
    def features(self) -> dict[str, tuple[str, ...]]:
        return {s: m.features for s, m in self.sides.items()}

    def to_dict(self) -> dict[str, Any]:
        return {
            "format": MODEL_FORMAT,
            "created": self.created,
            "horizon_bars": self.horizon_bars,
            "onset_quantile": self.onset_quantile,
            "onset_min_history": self.onset_min_history,
            "map_features": self.map_features,
            "map_config": dict(self.map_config),
            "market_rule": _MARKET_RULE,
            "training": [dict(t) for t in self.training],
            "sides": _jsonable({s: m.to_dict() for s, m in self.sides.items()}),
            "metrics": _jsonable(dict(self.metrics)),
            "source": self.source,
        }

    def save(self, path: str | Path) -> Path:
        p = Path(path)
        p.parent.mkdir(parents=True, exist_ok=True)
        tmp = p.with_name(p.name + ".tmp")
        tmp.write_text(json.dumps(self.to_dict(), indent=1, allow_nan=False) + "\n", "utf-8")
        tmp.replace(p)
        return p

    @classmethod
    def from_dict(cls, d: Any, where: str = "model") -> ForecastModel:
        if not isinstance(d, Mapping):
            raise ForecastError(f"{where}: expected a JSON object, got {type(d).__name__}")
        if d.get("format") != MODEL_FORMAT:
            raise ForecastError(
                f"{where}: not a liqsignal forecast model (format {d.get('format')!r}, "
                f"expected {MODEL_FORMAT!r})"
            )
        sides = d.get("sides")
        if not isinstance(sides, Mapping) or set(sides) != set(SIDES):
            raise ForecastError(f"{where}: 'sides' must hold 'long' and 'short'")
        try:
            horizon = int(d["horizon_bars"])
            map_features = bool(d["map_features"])
            map_config = dict(d["map_config"])
        except (KeyError, TypeError, ValueError) as e:
            raise ForecastError(f"{where}: missing or bad key ({type(e).__name__}: {e})") from e
        if horizon < 1:
            raise ForecastError(f"{where}: horizon_bars must be >= 1, got {horizon}")
        return cls(
            sides={s: SideModel.from_dict(sides[s], f"{where}: sides.{s}") for s in SIDES},
            horizon_bars=horizon,
            map_features=map_features,
            map_config=map_config,
            onset_quantile=float(d.get("onset_quantile", 0.98)),
            onset_min_history=int(d.get("onset_min_history", 200)),
            training=list(d.get("training") or []),
            metrics=dict(d.get("metrics") or {}),
            created=str(d.get("created", "")),
            source=str(d.get("source", "")),
        )


def _jsonable(x: Any) -> Any:
    if isinstance(x, dict):
        return {str(k): _jsonable(v) for k, v in x.items()}
    if isinstance(x, list | tuple):
        return [_jsonable(v) for v in x]
    if isinstance(x, float | np.floating):
        v = float(x)
        return v if math.isfinite(v) else None
    if isinstance(x, np.integer):
        return int(x)
    if isinstance(x, np.bool_):
        return bool(x)
    return x


def report_json(report: Mapping[str, Any]) -> dict[str, Any]:
    """``forecast_report``'s result as plain JSON types (NaN as null)."""
    out = _jsonable(dict(report))
    assert isinstance(out, dict)
    return out


def load_model(path: str | Path | None = None) -> ForecastModel:
    """Read a model file (None: the bundled default). Raises ``ForecastError`` naming the file
    when it is missing, not JSON, or not a valid model."""
    p = Path(path) if path is not None else BUNDLED_MODEL
    if not p.is_file():
        raise ForecastError(f"forecast model file {p} does not exist")
    try:
        data = json.loads(p.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as e:
        raise ForecastError(f"forecast model file {p} is not readable JSON: {e}") from e
    return ForecastModel.from_dict(data, str(p))


# ------------------------------------------------------------------------------------------
# fitting
# ------------------------------------------------------------------------------------------

#: How the map of a non-BTC market is built from the base ``MapConfig`` (absolute 50 USD bins
#: suit BTC only): symbol replaced, an absolute step becomes the same relative step at BTC's
#: 100,000 USD (50 USD: 5 bps).
_MARKET_RULE = "symbol set per market; non-BTC markets: absolute step -> step / 100000 * 1e4 bps"


def market_config(base: MapConfig, symbol: str) -> MapConfig:
    """The ``MapConfig`` for ``symbol`` derived from ``base`` (see ``_MARKET_RULE``)."""
    cfg = base.replace(symbol=symbol) if base.symbol != symbol else base
    if not symbol.upper().startswith("BTC/") and cfg.step is not None:
        cfg = cfg.replace(step=None, step_bps=float(cfg.step) / 100_000.0 * 1e4)
    return cfg


@dataclass
class _Rows:
    """One market's design rows: features per side, targets per side, dates."""

    name: str
    dates: np.ndarray  # int64 ns
    tf_ns: int
    x: dict[str, pd.DataFrame]
    y: dict[str, np.ndarray]


def training_frames(
    data: Sequence[tuple[str, pd.DataFrame, pd.DataFrame | None]],
    horizon: int,
    *,
    q: float = 0.98,
    min_history: int = 200,
) -> list[_Rows]:
    """Design rows of several markets: ``(name, frame with realized_*_usd, features)``."""
    out = []
    for name, frame, feats in data:
        for c in ("realized_long_usd", "realized_short_usd"):
            if c not in frame.columns:
                raise InputError(f"{name}: missing column {c!r} (realized liquidations)")
        d = pd.DatetimeIndex(frame["date"]).as_unit("ns").asi8
        tf = int(np.median(np.diff(d))) if len(d) > 1 else 0
        x = {s: forecast_features(frame, feats, s) for s in SIDES}
        y = {
            s: cascade_targets(
                frame[f"realized_{s}_usd"].to_numpy(dtype=np.float64), horizon, q=q,
                min_history=min_history,
            )
            for s in SIDES
        }  # fmt: skip
        out.append(_Rows(name, np.asarray(d), tf, x, y))
    return out


def _feature_list(
    rows: Sequence[_Rows],
    use_map: bool,
    masks: Sequence[np.ndarray],
    names: Sequence[str] | None = None,
) -> list[str]:
    """Of ``names`` (default: the default model's), the features every market has on every
    training row (funding only when no training row lacks it); map features only with
    ``use_map``."""
    if names is None:
        names = [*DEFAULT_MAP_FREE_FEATURES, *DEFAULT_MAP_FEATURES]
    unknown = sorted(set(names) - set(MAP_FEATURES) - set(MAP_FREE_FEATURES))
    if unknown:
        raise ForecastError(f"unknown feature(s) {unknown}")
    names = [f for f in names if use_map or not f.startswith("map_")]
    keep = []
    for f in names:
        ok = True
        for r, m in zip(rows, masks, strict=True):
            cols = r.x["long"].columns
            if f not in cols or (m.any() and not np.isfinite(r.x["long"][f].to_numpy()[m]).all()):
                ok = False
                break
        if ok:
            keep.append(f)
    return keep


def choose_threshold(
    p: np.ndarray, y: np.ndarray, target_precision: float, *, min_flags: int = 10
) -> tuple[float, float, float]:
    """The lowest probability threshold whose flags (p >= threshold) on these rows reach
    ``target_precision`` with at least ``min_flags`` flags: ``(threshold, precision,
    flag_rate)``; ``(1.0, nan, 0.0)`` when no threshold reaches it (never arms)."""
    p = np.asarray(p, dtype=np.float64)
    y = np.asarray(y, dtype=np.float64)
    ok = np.isfinite(p) & np.isfinite(y)
    p, y = p[ok], y[ok]
    if len(p) == 0:
        return 1.0, math.nan, 0.0
    order = np.argsort(-p, kind="stable")
    ps, ys = p[order], y[order]
    hits = np.cumsum(ys)
    k = np.arange(1, len(ps) + 1)
    prec = hits / k
    # a threshold must take all rows with the same probability: last index of each value
    last = np.r_[ps[1:] != ps[:-1], True]
    good = last & (prec >= target_precision) & (k >= min_flags)
    if not good.any():
        return 1.0, math.nan, 0.0
    i = int(np.flatnonzero(good)[-1])
    return float(ps[i]), float(prec[i]), float(k[i] / len(ps))


def _fit_side(
    x: np.ndarray, y: np.ndarray, feats: list[str], target_precision: float, c: float
) -> SideModel:
    from liqsignal._optional import require

    require("sklearn", extra="forecast", feature="fitting the cascade forecast")
    from sklearn.linear_model import LogisticRegression
    from sklearn.preprocessing import StandardScaler

    if len(y) < 200 or y.sum() < 5 or y.sum() == len(y):
        raise ForecastError(
            f"too little history to fit: {len(y)} labelled rows with {int(y.sum())} cascade "
            "windows (need at least 200 rows and 5 positives)"
        )
    scaler = StandardScaler().fit(x)
    scale = np.where(scaler.scale_ > 0, scaler.scale_, 1.0)
    z = (x - scaler.mean_) / scale
    lr = LogisticRegression(C=c, max_iter=2000).fit(z, y)
    m = SideModel(
        tuple(feats),
        tuple(float(v) for v in scaler.mean_),
        tuple(float(v) for v in scale),
        tuple(float(v) for v in lr.coef_[0]),
        float(lr.intercept_[0]),
        1.0,
        target_precision,
        math.nan,
        0.0,
        float(y.mean()),
    )
    thr, prec, rate = choose_threshold(m.predict(x), y, target_precision)
    return dataclasses.replace(m, threshold=thr, train_precision=prec, train_flag_rate=rate)


def _design(
    rows: Sequence[_Rows], side: str, masks: Sequence[np.ndarray], feats: list[str]
) -> tuple[np.ndarray, np.ndarray]:
    xs, ys = [], []
    for r, m in zip(rows, masks, strict=True):
        x = r.x[side][feats].to_numpy(dtype=np.float64)[m]
        y = r.y[side][m]
        ok = np.all(np.isfinite(x), axis=1) & np.isfinite(y)
        xs.append(x[ok])
        ys.append(y[ok])
    return np.concatenate(xs), np.concatenate(ys)


def _fit_rows(
    rows: Sequence[_Rows],
    masks: Sequence[np.ndarray],
    *,
    use_map: bool,
    target_precision: float,
    c: float,
    names: Sequence[str] | None = None,
) -> dict[str, SideModel]:
    feats = _feature_list(rows, use_map, masks, names)
    out = {}
    for s in SIDES:
        x, y = _design(rows, s, masks, feats)
        out[s] = _fit_side(x, y, feats, target_precision, c)
    return out


def _label_mask(r: _Rows, horizon: int, cutoff_ns: int | None, warmup: int) -> np.ndarray:
    """Rows whose label is known before ``cutoff_ns`` (label window closed), after warm-up."""
    n = len(r.dates)
    m = np.zeros(n, dtype=bool)
    m[warmup:] = True
    if cutoff_ns is not None:
        # row t's label is known at the close of bar t + horizon
        known_at = r.dates + (horizon + 1) * r.tf_ns
        m &= known_at <= cutoff_ns
    return m


def fit_forecast(
    data: Sequence[tuple[str, pd.DataFrame, pd.DataFrame | None]],
    *,
    horizon: int = 6,
    map_features: bool = True,
    target_precision: float = 0.2,
    map_config: MapConfig | None = None,
    warmup: int = 200,
    c: float = DEFAULT_C,
    features: Sequence[str] | None = None,
    training: Sequence[Mapping[str, Any]] = (),
    source: str = "",
    report: Mapping[str, Any] | None = None,
) -> ForecastModel:
    """Fit both sides on every labelled row of ``data`` (``(name, frame, features)``, frames
    with ``realized_long_usd`` / ``realized_short_usd``). Raises ``ForecastError`` when there is
    too little history (fewer than 200 labelled rows or 5 cascade windows per side).

    ``report``: ``forecast_report`` on the same data and settings; its out-of-sample figures
    are recorded in the model (``metrics``) and give each side's ``test_precision``."""
    if horizon < 1:
        raise ForecastError(f"horizon must be >= 1 bar, got {horizon}")
    rows = training_frames(data, horizon)
    masks = [_label_mask(r, horizon, None, warmup) for r in rows]
    sides = _fit_rows(rows, masks, use_map=map_features, target_precision=target_precision, c=c,
                      names=features)  # fmt: skip
    if not training:
        training = [
            {"name": r.name, "rows": int(m.sum()),
             "start": _iso(r.dates[m][0]) if m.any() else None,
             "end": _iso(r.dates[m][-1]) if m.any() else None}
            for r, m in zip(rows, masks, strict=True)
        ]  # fmt: skip
    metrics: dict[str, Any] = {}
    if report is not None:
        metrics = _model_metrics(report)
        sides = {
            s: dataclasses.replace(m, test_precision=metrics["armed_out_of_sample"][s]["precision"])
            for s, m in sides.items()
        }
    return ForecastModel(
        sides=sides,
        horizon_bars=horizon,
        map_features=map_features,
        map_config=json.loads(json.dumps((map_config or MapConfig()).to_dict())),
        training=list(training),
        metrics=metrics,
        created=datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ"),
        source=source,
    )


def _model_metrics(report: Mapping[str, Any]) -> dict[str, Any]:
    """What goes beside a model: the report's pooled scores, targets, per-fold AUC table and
    the armed thresholds' out-of-sample flags and precision (each fold with its own model)."""
    armed: dict[str, dict[str, Any]] = {}
    for s in SIDES:
        rows = [r for r in report["rows"] if r["side"] == s]
        flags = sum(r["armed"]["flags"] for r in rows)
        hits = sum(r["armed"]["flags"] * r["armed"]["precision"] for r in rows
                   if r["armed"]["flags"])  # fmt: skip
        n = sum(r["map"]["n"] for r in rows)
        armed[s] = {"flags": int(flags), "rows": int(n),
                    "precision": float(hits / flags) if flags else None}  # fmt: skip
    pooled = {
        s: {k: v for k, v in d.items() if k != "reliability"}
        for s, d in report.get("pooled", {}).items()
    }
    table = [
        {"dataset": r["dataset"], "side": r["side"], "fold": r["fold"],
         "test": f"{r['test_start']}..{r['test_end']}", "n": r["map"]["n"],
         "positives": r["map"]["positives"], "auc": r["map"]["auc"],
         "auc_map_free": r["map_free"]["auc"], "log_loss": r["map"]["log_loss"],
         "base_log_loss": r["map"]["base_log_loss"], "brier": r["map"]["brier"],
         "ece": r["map"]["ece"]}
        for r in report["rows"]
    ]  # fmt: skip
    return _jsonable({
        "note": "walk-forward, expanding window, scores on test blocks never fitted on",
        "horizon_bars": report["horizon_bars"], "n_folds": report["n_folds"],
        "pooled_out_of_sample": pooled, "targets": report["targets"],
        "armed_out_of_sample": armed, "folds": table,
    })  # fmt: skip


def _iso(ns: int) -> str:
    return pd.Timestamp(int(ns), tz="UTC").strftime("%Y-%m-%dT%H:%M:%SZ")


# ------------------------------------------------------------------------------------------
# applying
# ------------------------------------------------------------------------------------------


def add_forecast_columns(
    frame: pd.DataFrame,
    features: pd.DataFrame,
    model: ForecastModel,
    *,
    armed_prob: float | None = None,
) -> pd.DataFrame:
    """``features`` with ``FORECAST_COLUMNS`` added and ``liq_*_armed`` / ``liq_*_armed_score``
    rewritten from the model: armed = probability >= ``armed_prob`` (None: the model's
    threshold), score = probability. Rows without enough history get NaN (armed NaN too).

    ``frame``: the candles the features were computed from (same rows). Raises
    ``ForecastError`` when the features lack what the model was fitted on.
    """
    if not isinstance(model, ForecastModel):
        raise ForecastError(f"expected a ForecastModel, got {type(model).__name__}")
    out = features.copy()
    for s in SIDES:
        m = model.sides[s]
        x = forecast_features(frame, features if model.map_features else None, s)
        absent = [f for f in m.features if f not in x.columns]
        if absent:
            raise ForecastError(
                f"model fitted on other features: {absent} cannot be computed from these "
                f"columns (map features {'on' if model.map_features else 'off'})"
            )
        p = m.predict(x[list(m.features)].to_numpy(dtype=np.float64))
        thr = m.threshold if armed_prob is None else float(armed_prob)
        out[f"liq_{s}_cascade_prob"] = p
        armed = np.where(np.isfinite(p), (p >= thr).astype(np.float64), np.nan)
        out[f"liq_{s}_armed"] = armed
        out[f"liq_{s}_armed_score"] = p
    out.attrs["liq_forecast"] = forecast_info(model, armed_prob)
    return out


def forecast_info(model: ForecastModel, armed_prob: float | None = None) -> dict[str, Any]:
    """What an alert says about the forecast: horizon, threshold and measured precision."""
    info: dict[str, Any] = {"horizon_bars": model.horizon_bars, "map_features": model.map_features}
    for s in SIDES:
        m = model.sides[s]
        own = armed_prob is None or float(armed_prob) == m.threshold
        info[s] = {
            "threshold": m.threshold if armed_prob is None else float(armed_prob),
            # precision is only known for the threshold the model chose
            "precision": (m.test_precision if m.test_precision is not None
                          else m.train_precision) if own else None,
        }  # fmt: skip
    return info


_MODEL_CACHE: dict[tuple[str, int], ForecastModel] = {}


def _cached_model(path: str | None) -> ForecastModel:
    p = Path(path) if path else BUNDLED_MODEL
    try:
        stamp = p.stat().st_mtime_ns
    except OSError:
        stamp = -1
    key = (str(p), stamp)
    hit = _MODEL_CACHE.get(key)
    if hit is None:
        hit = load_model(p)
        _MODEL_CACHE.clear()
        _MODEL_CACHE[key] = hit
    return hit


_WARNED: set[tuple[Any, ...]] = set()


def apply_forecast(
    frame: pd.DataFrame,
    features: pd.DataFrame,
    config: Any = None,
    *,
    engine: MapConfig | None = None,
    context: str = "",
) -> pd.DataFrame:
    """``add_forecast_columns`` with the model the ``ForecastConfig`` names, never raising for
    a bad model or input: on any ``LiqsignalError`` the probability columns are NaN and armed /
    score NaN, with a warning naming the reason (once per reason). ``config``: a
    ``ForecastConfig`` (None: defaults); disabled returns ``features`` unchanged."""
    from liqsignal.config import ForecastConfig

    cfg = config if isinstance(config, ForecastConfig) else ForecastConfig.from_dict(config)
    if not cfg.enabled:
        return features
    try:
        model = _cached_model(cfg.model)
        if model.horizon_bars != cfg.horizon_bars:
            raise ForecastError(
                f"forecast model {cfg.model or BUNDLED_MODEL} was fitted for a horizon of "
                f"{model.horizon_bars} bars, forecast.horizon_bars is {cfg.horizon_bars}"
            )
        if engine is not None and model.map_features:
            base = model.map_config
            mine = engine.to_dict()
            diff = sorted(k for k in base if k not in ("symbol", "exchange", "step", "step_bps")
                          and base.get(k) != mine.get(k))  # fmt: skip
            if diff:
                _warn_once(("config", tuple(diff)),
                           "liqsignal forecast%s: the engine settings differ from the model's "
                           "(%s); the map features are not what it was fitted on: refit with "
                           "`liqsignal fit`", context, ", ".join(diff))  # fmt: skip
        if len(frame) < HISTORY_BARS + 1:
            _warn_once(("short", context),
                       "liqsignal forecast%s: too little history (%d bars, the forecast needs "
                       "%d): probabilities are NaN until then", context, len(frame),
                       HISTORY_BARS + 1)  # fmt: skip
        out = add_forecast_columns(frame, features, model, armed_prob=cfg.armed_prob)
        if len(frame) > HISTORY_BARS:
            _explain_last_nan(frame, features, model, out, context)
        return out
    except LiqsignalError as e:
        _warn_once(("error", str(e)), "liqsignal forecast%s: %s; cascade probabilities are NaN "
                   "(guards follow on_stale)", context, e)  # fmt: skip
        return _nan_forecast(features)


def _nan_forecast(features: pd.DataFrame) -> pd.DataFrame:
    """``features`` with the probability, armed and score columns NaN (no forecast)."""
    out = features.copy()
    for s in SIDES:
        for c in (f"liq_{s}_cascade_prob", f"liq_{s}_armed", f"liq_{s}_armed_score"):
            out[c] = np.nan
    return out


def _explain_last_nan(
    frame: pd.DataFrame,
    features: pd.DataFrame,
    model: ForecastModel,
    out: pd.DataFrame,
    context: str,
) -> None:
    """Warn (once per reason) when the last bar has no probability although the history is
    long enough: which of the model's inputs are missing there (e.g. no open interest)."""
    for s in SIDES:
        if math.isfinite(float(out[f"liq_{s}_cascade_prob"].iloc[-1])):
            continue
        x = forecast_features(frame.iloc[-HISTORY_BARS - 1 :],
                              features.iloc[-HISTORY_BARS - 1 :] if model.map_features else None,
                              s)  # fmt: skip
        bad = [f for f in model.sides[s].features if not math.isfinite(float(x[f].iloc[-1]))]
        _warn_once(("lastnan", context, s, tuple(bad)),
                   "liqsignal forecast%s: no %s cascade probability on the last bar: input(s) %s "
                   "missing there (open interest, volume or the map); the column is NaN",
                   context, s, bad)  # fmt: skip


def forecast_on_frame(feat: pd.DataFrame, config: Any = None) -> pd.DataFrame:
    """The forecast on a date-indexed frame holding both the candles (``open, high, low, close,
    volume``, open interest) and the ``liq_*`` columns, as the alert service has it. A frame
    without the candles is returned as it is (the forecast needs them); a bad model or config
    gives NaN columns and a warning (``apply_forecast``)."""
    need = ("open", "high", "low", "close", "volume")
    if feat is None or feat.empty or any(c not in feat.columns for c in need):
        return feat
    try:
        from liqsignal.config import ForecastConfig

        cfg = config if isinstance(config, ForecastConfig) else ForecastConfig.from_dict(config)
    except LiqsignalError as e:
        _warn_once(("config", str(e)), "liqsignal forecast: %s; no forecast", e)
        return feat
    frame = feat if "date" in feat.columns else feat.assign(date=feat.index)
    try:
        return apply_forecast(frame, feat, cfg)
    except Exception as e:  # the alert service keeps running on the map's columns
        _warn_once(("onframe", type(e).__name__), "liqsignal forecast failed (%s: %s); "
                   "cascade probabilities are NaN", type(e).__name__, e, exc=e)  # fmt: skip
        return _nan_forecast(feat)


def _warn_once(
    key: tuple[Any, ...], msg: str, *args: Any, exc: BaseException | None = None
) -> None:
    """Log once per ``key``; ``exc``: with its traceback when it is a bug (``traceback_of``)."""
    if key not in _WARNED:
        _WARNED.add(key)
        logger.warning(msg, *args, exc_info=traceback_of(exc))


# ------------------------------------------------------------------------------------------
# judging
# ------------------------------------------------------------------------------------------


def expected_calibration_error(y: np.ndarray, p: np.ndarray, n_bins: int = 10) -> float:
    """Bin-weighted mean |mean(p) - mean(y)| over ``n_bins`` equal-width probability bins."""
    y = np.asarray(y, dtype=np.float64)
    p = np.asarray(p, dtype=np.float64)
    if len(y) == 0:
        return math.nan
    idx = np.clip((p * n_bins).astype(np.int64), 0, n_bins - 1)
    total = 0.0
    for b in range(n_bins):
        sel = idx == b
        if sel.any():
            total += sel.sum() * abs(p[sel].mean() - y[sel].mean())
    return float(total / len(y))


def score_probabilities(
    y: np.ndarray, p: np.ndarray, *, base_rate: float | None = None
) -> dict[str, float]:
    """ROC AUC, log loss, Brier score and ECE of ``p`` against 0/1 ``y`` (sklearn.metrics),
    with the base rate of ``y`` and the log loss of the constant ``base_rate`` (the training
    rate; default: the rate of ``y`` itself). AUC is NaN when ``y`` has one class only."""
    from liqsignal._optional import require

    require("sklearn", extra="forecast", feature="scoring the cascade forecast")
    from sklearn.metrics import brier_score_loss, log_loss, roc_auc_score

    y = np.asarray(y, dtype=np.float64)
    p = np.clip(np.asarray(p, dtype=np.float64), 1e-6, 1 - 1e-6)
    rate = float(y.mean()) if len(y) else math.nan
    const = rate if base_rate is None else float(base_rate)
    both = len(np.unique(y)) == 2
    cp = np.clip(np.full(len(y), const), 1e-6, 1 - 1e-6)
    return {
        "n": int(len(y)),
        "positives": int(y.sum()),
        "base_rate": rate,
        "auc": float(roc_auc_score(y, p)) if both else math.nan,
        "log_loss": float(log_loss(y, p, labels=[0, 1])),
        "brier": float(brier_score_loss(y, p)),
        "ece": expected_calibration_error(y, p),
        "base_log_loss": float(log_loss(y, cp, labels=[0, 1])),
        "base_brier": float(brier_score_loss(y, cp)),
    }


def _flags(p: np.ndarray, y: np.ndarray, thr: float) -> dict[str, float]:
    f = p >= thr
    return {
        "threshold": float(thr),
        "flags": int(f.sum()),
        "flag_rate": float(f.mean()) if len(f) else math.nan,
        "precision": float(y[f].mean()) if f.any() else math.nan,
    }


def _market_features(frame: pd.DataFrame, cfg: MapConfig) -> pd.DataFrame:
    from liqsignal.features import compute_features

    feats = compute_features(frame, cfg)
    assert isinstance(feats, pd.DataFrame)
    return feats


def market_features(
    frames: Sequence[tuple[str, str, pd.DataFrame]],
    engine: MapConfig | None = None,
    *,
    jobs: int = 1,
    scheduler: str | None = None,
) -> list[tuple[str, pd.DataFrame, pd.DataFrame]]:
    """``(name, frame, features)`` of ``(name, symbol, frame)`` markets: the map's columns of
    each market (``market_config`` of ``engine``), one sweep task per market (``jobs`` local
    processes or a Dask ``scheduler``, ``liqsignal.sweep``)."""
    from liqsignal.sweep import Task, run_tasks

    base = engine or MapConfig()
    tasks = [
        Task((name,), _market_features, (frame, market_config(base, symbol)))
        for name, symbol, frame in frames
    ]
    feats = run_tasks(tasks, jobs=jobs, scheduler=scheduler)
    return [(name, frame, f) for (name, _, frame), f in zip(frames, feats, strict=True)]


def _bundled_data(
    names: Sequence[str] | None, *, jobs: int = 1, scheduler: str | None = None
) -> list[tuple[str, pd.DataFrame, pd.DataFrame]]:
    from liqsignal.datasets import load_datasets

    frames = [(ds.name, ds.symbol, ds.frame) for ds in load_datasets(names)]
    return market_features(frames, jobs=jobs, scheduler=scheduler)


def _fold_probabilities(
    rows: Sequence[_Rows],
    i: int,
    fold: Any,
    *,
    horizon: int,
    warmup: int,
    map_features: bool,
    pool: bool,
    target_precision: float,
    c: float,
    features: Sequence[str] | None,
) -> dict[str, Any]:
    """One sweep task of ``walk_forward_probabilities``: market ``i``'s model fitted for
    ``fold`` and its probabilities on the fold's test rows."""
    r = rows[i]
    cutoff = int(r.dates[fold.test.start])
    masks = []
    for j, rr in enumerate(rows):
        if j != i and not pool:
            masks.append(np.zeros(len(rr.dates), dtype=bool))
        else:
            masks.append(_label_mask(rr, horizon, cutoff, warmup))
    sides = _fit_rows(rows, masks, use_map=map_features, target_precision=target_precision,
                      c=c, names=features)  # fmt: skip
    p = {}
    for s in SIDES:
        m = sides[s]
        x = r.x[s][list(m.features)].to_numpy(dtype=np.float64)[fold.test]
        p[s] = m.predict(x)
    return {"fold": fold, "sides": sides, "train_rows": int(sum(mm.sum() for mm in masks)),
            "p": p}  # fmt: skip


def _walk_forward_tasks(
    rows: Sequence[_Rows], n_folds: int, warmup: int, kind: str, **kw: Any
) -> list[Any]:
    from liqsignal.datasets import walk_forward_folds
    from liqsignal.sweep import Task

    return [
        Task((kind, r.name, fold.index), _fold_probabilities, (rows, i, fold),
             {"warmup": warmup, **kw})
        for i, r in enumerate(rows)
        for fold in walk_forward_folds(len(r.dates), n_folds=n_folds, warmup=warmup)
    ]  # fmt: skip


def _assemble(
    rows: Sequence[_Rows], tasks: Sequence[Any], results: Sequence[dict[str, Any]]
) -> dict[str, Any]:
    """``walk_forward_probabilities``' result from its tasks' results (in task order)."""
    out: dict[str, Any] = {}
    for r in rows:
        out[r.name] = {"p": {s: np.full(len(r.dates), np.nan) for s in SIDES}, "y": r.y,
                       "folds": [], "dates": r.dates}  # fmt: skip
    for t, res in zip(tasks, results, strict=True):
        o = out[rows[t.args[1]].name]
        for s in SIDES:
            o["p"][s][res["fold"].test] = res["p"][s]
        o["folds"].append({k: res[k] for k in ("fold", "sides", "train_rows")})
    return out


def walk_forward_probabilities(
    data: Sequence[tuple[str, pd.DataFrame, pd.DataFrame | None]],
    *,
    horizon: int = 6,
    n_folds: int = 3,
    warmup: int = 200,
    map_features: bool = True,
    pool: bool = True,
    target_precision: float = 0.2,
    c: float = DEFAULT_C,
    features: Sequence[str] | None = None,
    jobs: int = 1,
    scheduler: str | None = None,
) -> dict[str, Any]:
    """Out-of-sample probabilities on every walk-forward test block of every market.

    Per market and fold (``datasets.walk_forward_folds``), a model is fitted on the rows whose
    label was known before the fold's first test bar (expanding window, past only): that
    market's own earlier rows and, with ``pool``, the other markets' rows of earlier dates.
    Returns ``{name: {"p": {side: array}, "y": {side: array}, "folds": [...]}}``; bars outside
    every test block have NaN probabilities. Each market and fold is one sweep task (``jobs``
    local processes or a Dask ``scheduler``, ``liqsignal.sweep``); the result is the same.
    """
    from liqsignal.sweep import run_tasks

    rows = training_frames(data, horizon)
    tasks = _walk_forward_tasks(rows, n_folds, warmup, "map", horizon=horizon,
                                map_features=map_features, pool=pool,
                                target_precision=target_precision, c=c,
                                features=features)  # fmt: skip
    return _assemble(rows, tasks, run_tasks(tasks, jobs=jobs, scheduler=scheduler))


def forecast_report(
    datasets: Sequence[str] | None = None,
    horizon: int = 6,
    *,
    n_folds: int = 3,
    warmup: int = 200,
    target_precision: float = 0.2,
    data: Sequence[tuple[str, pd.DataFrame, pd.DataFrame | None]] | None = None,
    map_features: bool = True,
    jobs: int = 1,
    scheduler: str | None = None,
) -> dict[str, Any]:
    """Walk-forward scores of the forecast and of the same model on map-free features only.

    Per dataset (bundled names, default all), side and fold: the full model's and the
    map-free model's ROC AUC, log loss, Brier score and expected calibration error on the
    fold's test block (never fitted on), the base rate, the log loss of the training base
    rate, and the armed threshold's flags and precision. ``data`` replaces the bundled
    datasets with ``(name, frame, features)`` tuples. Also the pooled out-of-sample scores per
    side over every test block, and the targets with pass / fail. The maps of the bundled
    datasets and the fits of every (model, dataset, fold) are sweep tasks: ``jobs`` local
    processes or a Dask ``scheduler`` run them (``liqsignal.sweep``), same report.
    """
    from liqsignal.sweep import run_tasks

    if data is None:
        data = _bundled_data(datasets, jobs=jobs, scheduler=scheduler)
    design = training_frames(data, horizon)
    kw = {"horizon": horizon, "pool": True, "target_precision": target_precision,
          "c": DEFAULT_C, "features": None}  # fmt: skip
    by_kind = {
        "map": _walk_forward_tasks(design, n_folds, warmup, "map", map_features=map_features,
                                   **kw),
        "map_free": _walk_forward_tasks(design, n_folds, warmup, "map_free",
                                        map_features=False, **kw),
    }  # fmt: skip
    tasks = [*by_kind["map"], *by_kind["map_free"]]
    results = run_tasks(tasks, jobs=jobs, scheduler=scheduler)
    n_map = len(by_kind["map"])
    runs = {
        "map": _assemble(design, by_kind["map"], results[:n_map]),
        "map_free": _assemble(design, by_kind["map_free"], results[n_map:]),
    }
    rows: list[dict[str, Any]] = []
    pooled: dict[str, dict[str, list[np.ndarray]]] = {
        s: {"y": [], "map": [], "map_free": []} for s in SIDES
    }
    frames = {name: frame for name, frame, _ in data}
    for name, res in runs["map"].items():
        free = runs["map_free"][name]
        dates = pd.DatetimeIndex(frames[name]["date"])
        for k, fr in enumerate(res["folds"]):
            fold = fr["fold"]
            sl = fold.test
            for s in SIDES:
                y = res["y"][s][sl]
                pm = res["p"][s][sl]
                pf = free["p"][s][sl]
                ok = np.isfinite(y) & np.isfinite(pm) & np.isfinite(pf)
                if not ok.any():
                    continue
                sm = fr["sides"][s]
                sf = free["folds"][k]["sides"][s]
                row = {
                    "dataset": name,
                    "side": s,
                    "fold": fold.index,
                    "test_start": f"{dates[sl.start]:%Y-%m-%d}",
                    "test_end": f"{dates[sl.stop - 1]:%Y-%m-%d}",
                    "train_rows": fr["train_rows"],
                    "map": score_probabilities(y[ok], pm[ok], base_rate=sm.base_rate),
                    "map_free": score_probabilities(y[ok], pf[ok], base_rate=sf.base_rate),
                    "armed": _flags(pm[ok], y[ok], sm.threshold),
                    "armed_map_free": _flags(pf[ok], y[ok], sf.threshold),
                }
                rows.append(row)
                pooled[s]["y"].append(y[ok])
                pooled[s]["map"].append(pm[ok])
                pooled[s]["map_free"].append(pf[ok])
    summary: dict[str, Any] = {}
    for s in SIDES:
        if not pooled[s]["y"]:
            continue
        y = np.concatenate(pooled[s]["y"])
        summary[s] = {
            kind: score_probabilities(y, np.concatenate(pooled[s][kind]))
            for kind in ("map", "map_free")
        }
        summary[s]["reliability"] = {
            kind: _reliability(y, np.concatenate(pooled[s][kind])) for kind in ("map", "map_free")
        }
    return {
        "horizon_bars": horizon,
        "map_features": map_features,
        "n_folds": n_folds,
        "warmup": warmup,
        "target_precision": target_precision,
        "datasets": [name for name, _, _ in data],
        "rows": rows,
        "pooled": summary,
        "targets": _targets(rows),
    }


def _reliability(y: np.ndarray, p: np.ndarray, n_bins: int = 10) -> list[dict[str, float]]:
    idx = np.clip((p * n_bins).astype(np.int64), 0, n_bins - 1)
    out = []
    for b in range(n_bins):
        sel = idx == b
        if sel.any():
            out.append({"bin": b, "n": int(sel.sum()), "mean_p": float(p[sel].mean()),
                        "rate": float(y[sel].mean())})  # fmt: skip
    return out


def _targets(rows: Sequence[Mapping[str, Any]]) -> dict[str, Any]:
    """Per row: AUC >= 0.65, AUC >= map-free + 0.05, log loss < base rate's, ECE <= 0.05."""
    checks = {"auc_0.65": 0, "auc_gain_0.05": 0, "logloss_below_base": 0, "ece_0.05": 0}
    n = 0
    for r in rows:
        m, f = r["map"], r["map_free"]
        if not math.isfinite(m["auc"]):
            continue
        n += 1
        checks["auc_0.65"] += m["auc"] >= 0.65
        checks["auc_gain_0.05"] += math.isfinite(f["auc"]) and m["auc"] - f["auc"] >= 0.05
        checks["logloss_below_base"] += m["log_loss"] < m["base_log_loss"]
        checks["ece_0.05"] += m["ece"] <= 0.05
    return {"scored_rows": n, **{k: int(v) for k, v in checks.items()},
            "all_met": n > 0 and all(v == n for v in checks.values())}  # fmt: skip


def format_forecast_report(report: Mapping[str, Any]) -> str:
    """The report as a plain-text table (one line per dataset, side and fold)."""
    h = report["horizon_bars"]
    lines = [
        f"cascade forecast, horizon {h} bars, walk-forward {report['n_folds']} folds "
        f"(scores on test blocks never fitted on)",
        "AUC/LL/ECE: the model with the map features, "
        "free: the same fitted on the map-free features only; baseLL: the training base rate's "
        "log loss; flags/prec: armed at the training threshold",
        f"{'dataset':<8}{'side':<6}{'fold':>4} {'test':<23}{'n':>5}{'pos':>5}{'base':>7}"
        f"{'AUC':>7}{'free':>7}{'LL':>7}{'freeLL':>7}{'baseLL':>7}{'Brier':>7}{'ECE':>7}"
        f"{'freeECE':>8}{'flags':>6}{'prec':>6}",
    ]

    def f3(v: float | None) -> str:
        return "   nan" if v is None or not math.isfinite(v) else f"{v:.3f}"

    for r in report["rows"]:
        m, f, a = r["map"], r["map_free"], r["armed"]
        lines.append(
            f"{r['dataset']:<8}{r['side']:<6}{r['fold']:>4} "
            f"{r['test_start'] + '..' + r['test_end']:<23}{m['n']:>5}{m['positives']:>5}"
            f"{m['base_rate']:>7.3f}{f3(m['auc']):>7}{f3(f['auc']):>7}{m['log_loss']:>7.3f}"
            f"{f['log_loss']:>7.3f}{m['base_log_loss']:>7.3f}{m['brier']:>7.3f}"
            f"{m['ece']:>7.3f}{f['ece']:>8.3f}{a['flags']:>6}{f3(a['precision']):>6}"
        )
    for s, d in report.get("pooled", {}).items():
        m, f = d["map"], d["map_free"]
        lines.append(
            f"pooled {s:<5}: AUC {f3(m['auc'])} (map-free {f3(f['auc'])}), log loss "
            f"{m['log_loss']:.3f} (map-free {f['log_loss']:.3f}, base {m['base_log_loss']:.3f}), "
            f"Brier {m['brier']:.4f}, ECE {m['ece']:.3f} (map-free {f['ece']:.3f}), "
            f"base rate {m['base_rate']:.3f}, n {m['n']}"
        )
    t = report["targets"]
    n = t["scored_rows"]
    lines.append(
        f"targets over {n} dataset/side/fold rows: AUC >= 0.65 in {t['auc_0.65']}, AUC >= "
        f"map-free + 0.05 in {t['auc_gain_0.05']}, log loss below the base rate's in "
        f"{t['logloss_below_base']}, ECE <= 0.05 in {t['ece_0.05']}; all met: {t['all_met']}"
    )
    return "\n".join(lines)


def plot_forecast(report: Mapping[str, Any], path: str | Path) -> Path:
    """Reliability diagrams (pooled out-of-sample, per side, map vs map-free) and the AUC
    table per dataset, side and fold, in one PNG."""
    from liqsignal._optional import require

    require("matplotlib", extra="plot", feature="plot_forecast").use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 3, figsize=(15, 4.8), gridspec_kw={"width_ratios": [1, 1, 1.4]})
    for ax, s in zip(axes[:2], SIDES, strict=True):
        d = report.get("pooled", {}).get(s)
        ax.plot([0, 1], [0, 1], color="grey", lw=0.8, ls="--")
        if d:
            for kind, color in (("map", "firebrick"), ("map_free", "steelblue")):
                rel = d["reliability"][kind]
                xs = [b["mean_p"] for b in rel]
                ys = [b["rate"] for b in rel]
                ns = [b["n"] for b in rel]
                ax.plot(
                    xs,
                    ys,
                    marker="o",
                    color=color,
                    label=f"{kind} (AUC {d[kind]['auc']:.3f}, ECE {d[kind]['ece']:.3f})",
                )
                for x, y, n in zip(xs, ys, ns, strict=True):
                    ax.annotate(str(n), (x, y), fontsize=6, color=color,
                                xytext=(2, 2), textcoords="offset points")  # fmt: skip
        ax.set_xlim(0, 0.6)
        ax.set_ylim(0, 1.02)  # a sparse top bin can sit at 0 or 1: keep it on the chart
        ax.set_title(f"{s} cascade within {report['horizon_bars']} bars: reliability")
        ax.set_xlabel("forecast probability (bin mean)")
        ax.set_ylabel("observed rate")
        ax.legend(fontsize=7, loc="upper left")
    ax = axes[2]
    ax.axis("off")
    cells = [
        [r["dataset"], r["side"], str(r["fold"]), f"{r['map']['auc']:.3f}",
         f"{r['map_free']['auc']:.3f}", f"{r['map']['ece']:.3f}", str(r["map"]["positives"])]
        for r in report["rows"]
    ]  # fmt: skip
    if cells:
        tab = ax.table(cellText=cells, colLabels=["dataset", "side", "fold", "AUC", "map-free",
                                                  "ECE", "pos"], loc="center")  # fmt: skip
        tab.auto_set_font_size(False)
        tab.set_fontsize(7)
        tab.scale(1, 1.1)
    ax.set_title("out-of-sample AUC per dataset, side and fold")
    fig.tight_layout()
    p = Path(path)
    p.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(p, dpi=110)
    plt.close(fig)
    return p


def bundled_training(names: Sequence[str] | None = None) -> list[dict[str, Any]]:
    """Provenance rows of the bundled datasets (for the model file)."""
    from liqsignal.datasets import load_datasets

    return [
        {"name": d.name, "symbol": d.symbol, "timeframe": d.timeframe, "span": d.span,
         "rows": len(d.frame), "source": d.source}
        for d in load_datasets(names)
    ]  # fmt: skip
