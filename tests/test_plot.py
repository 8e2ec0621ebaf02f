"""Pictures: both PNGs are written and non-trivial; leverage buckets add up to the full map."""

from __future__ import annotations

import numpy as np
import pytest

from liqsignal.config import MapConfig
from liqsignal.evaluate import evaluate_bars, evaluate_touches
from liqsignal.features import compute_features
from liqsignal.plot import leverage_bucket_levels, plot_evaluation, plot_map

PNG = b"\x89PNG\r\n\x1a\n"


def test_buckets_sum_close_to_full_map(btc_frame):
    cfg = MapConfig()
    buckets, info = leverage_bucket_levels({"binance": btc_frame}, cfg)
    assert set(buckets) == {"2-5x", "10-25x", "50-125x"}
    total = sum(float(b["long_usd"].sum() + b["short_usd"].sum()) for b in buckets.values())
    assert total == pytest.approx(info["buckets_usd"])
    # approximate (pro-rata closes couple the leverages) but not far off
    assert info["residual_share"] < 0.3


def test_buckets_exact_without_coupling(btc_frame):
    """With no closes shared out between leverages (no turnover, OI in base units only
    rising) every step is linear per leverage and the split is exact."""
    frame = btc_frame.iloc[:300].drop(columns=["open_interest_value"])
    frame["open_interest_amount"] = np.linspace(1e4, 2e4, len(frame))
    cfg = MapConfig(churn_volume_share=0.0)
    _, info = leverage_bucket_levels({"binance": frame}, cfg)
    assert info["residual_share"] < 1e-9


def test_pictures_written(tmp_path, coinglass, btc_frame):
    feats, lmap = compute_features(btc_frame, return_map=True)
    buckets, _ = leverage_bucket_levels({"binance": btc_frame}, MapConfig())
    p = plot_map(lmap, tmp_path / "m.png", buckets=buckets, armed={"long": True}, note="n")
    assert p.read_bytes()[:8] == PNG and p.stat().st_size > 30_000
    rep = {"bars": evaluate_bars(coinglass, feats), "touches": evaluate_touches(coinglass)}
    q = plot_evaluation(rep, tmp_path / "e.png")
    assert q.read_bytes()[:8] == PNG and q.stat().st_size > 20_000
