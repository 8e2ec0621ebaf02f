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

import numpy as np
import pandas as pd

from liqsignal.config import MapConfig
from liqsignal.exceptions import InputError
from liqsignal.features import compute_features

__all__ = [
    "BUNDLED_COINGLASS",
    "BarEvaluation",
    "baseline_predictions",
    "evaluate_bars",
    "load_coinglass",
    "partial_spearman",
    "spearman",
]

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


def _ranks(a: np.ndarray) -> np.ndarray:
    return pd.Series(a).rank(method="average").to_numpy()


def spearman(a: np.ndarray | pd.Series, b: np.ndarray | pd.Series) -> float:
    """Spearman rank correlation (average ranks for ties); NaN pairs are excluded."""
    x = np.asarray(a, dtype=np.float64)
    y = np.asarray(b, dtype=np.float64)
    ok = np.isfinite(x) & np.isfinite(y)
    if ok.sum() < 3:
        return math.nan
    rx = _ranks(x[ok])
    ry = _ranks(y[ok])
    if rx.std() == 0 or ry.std() == 0:
        return math.nan
    return float(np.corrcoef(rx, ry)[0, 1])


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
