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


def test_usd_ticks_read_like_a_trader_writes_them():
    from liqsignal.plot import fmt_usd

    assert [fmt_usd(v) for v in (80, 1_000, 4_500, 12_300, 2.5e6, 120e6, 3e9)] == [
        "80",
        "1k",
        "4.5k",
        "12k",
        "2.5M",
        "120M",
        "3B",
    ]


def test_mode_is_named(btc_frame):
    from liqsignal.engine import LiquidationMap
    from liqsignal.plot import map_mode

    assert map_mode(LiquidationMap(MapConfig())) == "open interest"
    assert "VOLUME-PROXY" in map_mode(LiquidationMap(MapConfig(), proxy=True))
    mixed = LiquidationMap(MapConfig(), exchanges=["binance", "okx"], proxy=[False, True])
    assert map_mode(mixed) == "open interest: binance; VOLUME PROXY: okx"


def test_pictures_take_plain_dicts(tmp_path, coinglass, btc_frame):
    """The evaluation picture reads the results' dict form as well as the objects (the
    evaluation's result types may change; their to_dict() output is what it needs)."""
    feats, lmap = compute_features(btc_frame, return_map=True)
    rep = {
        "bars": [b.to_dict() for b in evaluate_bars(coinglass, feats)],
        "touches": [t.to_dict() for t in evaluate_touches(coinglass)],
        "span": "btc_1h: 2174 bars",
    }
    q = plot_evaluation(rep, tmp_path / "e.png")
    assert q.read_bytes()[:8] == PNG and q.stat().st_size > 20_000
    p = plot_map(lmap, tmp_path / "m.png", candles=btc_frame, data_start=btc_frame["date"][0])
    assert p.read_bytes()[:8] == PNG and p.stat().st_size > 100_000
