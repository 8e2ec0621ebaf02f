"""The realized scale: point in time, shrunk toward 1, off by default, scored out of sample."""

from __future__ import annotations

import json
import math

import numpy as np
import pandas as pd
import pytest

from liqsignal.cli import main
from liqsignal.datasets import load_dataset
from liqsignal.exceptions import ConfigError
from liqsignal.realized_scale import (
    RealizedScaleConfig,
    apply_realized_scale,
    level_calibration,
    load_realized_scale,
    online_scale,
)
from liqsignal.yardstick import score_dataset


def _reference(pred, real, crossed, band, n_bands, k, h):
    """The scale of bar t from the bars before it, written out directly."""
    out = np.ones(len(pred))
    d = 1.0 if h is None else 0.5 ** (1.0 / h)
    for t in range(len(pred)):
        use = [i for i in range(t) if crossed[i] and band[i] == band[t] and np.isfinite(real[i])
               and pred[i] > 0]  # fmt: skip
        if not use:
            continue
        w = np.array([d ** (t - 1 - i) for i in use])  # the last bar weighs 1
        r = float((w * real[use]).sum())
        p = float((w * pred[use]).sum())
        n = float(w.sum())
        out[t] = (max(r, 1e-12 * p) / p) ** (n / (n + k))
    return out


@pytest.mark.parametrize("h", [None, 5.0])
def test_online_scale_matches_reference_and_uses_the_past_only(h):
    rng = np.random.default_rng(3)
    n = 120
    pred = rng.uniform(0, 10, n)
    real = pred * 0.1 * rng.uniform(0.5, 1.5, n)
    real[rng.random(n) < 0.1] = np.nan  # unknown bars teach nothing
    crossed = rng.random(n) < 0.6
    band = rng.integers(0, 2, n)
    got = online_scale(pred, real, crossed, band, 2, 4.0, h)
    np.testing.assert_allclose(got, _reference(pred, real, crossed, band, 2, 4.0, h))
    # changing bar t's realized value changes no scale up to and including bar t
    t = 60
    real2 = real.copy()
    real2[t] = 1e9
    got2 = online_scale(pred, real2, crossed, band, 2, 4.0, h)
    np.testing.assert_array_equal(got2[: t + 1], got[: t + 1])


def test_scale_shrinks_toward_one_and_learns_less_leverage():
    n = 400
    pred = np.full(n, 100.0)
    real = np.full(n, 10.0)  # a tenth of what the map said
    crossed = np.ones(n, dtype=bool)
    s = online_scale(pred, real, crossed, np.zeros(n), 1, 48.0, None)
    assert s[0] == 1.0
    assert s[1] == pytest.approx(0.1 ** (1 / 49))  # one bar of evidence: barely moved
    assert s[-1] == pytest.approx(0.1 ** (399 / 447))
    assert np.all(np.diff(s[1:]) < 0)  # more evidence, closer to 0.1
    # a NaN realized bar is left out, not read as 0
    real[:200] = np.nan
    s2 = online_scale(pred, real, crossed, np.zeros(n), 1, 48.0, None)
    assert np.all(s2[:201] == 1.0) and s2[-1] == pytest.approx(0.1 ** (199 / 247))


def test_level_calibration():
    pred = np.array([100.0, 200.0, 50.0, 10.0])
    real = np.array([10.0, 20.0, np.nan, 5.0])
    crossed = np.array([True, True, True, False])
    lc = level_calibration(pred, real, crossed, slice(0, 4))
    assert lc["crossed_bars"] == 2 and lc["ratio"] == pytest.approx(0.1)
    assert lc["log_error"] == pytest.approx(
        np.median([abs(math.log(11 / 101)), abs(math.log(21 / 201))])
    )
    assert math.isnan(level_calibration(pred, real, ~crossed, slice(0, 3))["ratio"])


def test_config_is_off_by_default_and_checked(tmp_path):
    assert not RealizedScaleConfig().enabled
    assert not load_realized_scale(None).enabled
    p = tmp_path / "c.json"
    p.write_text(json.dumps({"liqsignal": {"engine": {}}}))
    assert not load_realized_scale(p).enabled
    section = {"enabled": True, "bands_pct": [0.5, 1.5]}
    p.write_text(json.dumps({"liqsignal": {"realized_scale": section}}))
    cfg = load_realized_scale(p)
    assert cfg.enabled and cfg.bands_pct == (0.5, 1.5)
    with pytest.raises(ConfigError, match="unknown key"):
        RealizedScaleConfig.from_dict({"scale": 1})
    with pytest.raises(ConfigError, match="bands_pct"):
        RealizedScaleConfig.from_dict({"bands_pct": [1.5, 0.5]})
    with pytest.raises(ConfigError, match="prior_bars"):
        RealizedScaleConfig(prior_bars=-1)


def test_yardstick_scores_the_scaled_map_and_reports_levels():
    ds = load_dataset("btc_4h")
    off = score_dataset(ds, boot=0, structure=False)
    assert set(off["levels"]["long"]) == {"map"} and "realized_scale" not in off
    rs = RealizedScaleConfig(enabled=True)
    on = score_dataset(ds, boot=0, structure=False, realized_scale=rs)
    assert on["realized_scale"] == rs.to_dict()
    for side in ("long", "short"):
        lv = on["levels"][side]
        assert lv["map"] == off["levels"][side]["map"]
        # the map overstates what was liquidated; the scale brings it nearer (test folds)
        for m, s in zip(lv["map"]["folds"], lv["scaled"]["folds"], strict=True):
            assert m["ratio"] < 0.05 and s["ratio"] > 5 * m["ratio"]
            assert s["log_error"] < m["log_error"]
    assert on["per_bar"] != off["per_bar"]


def test_apply_keeps_the_input_and_scales_each_side():
    ds = load_dataset("btc_4h")
    from liqsignal.features import compute_features

    feats = compute_features(ds.frame)
    assert isinstance(feats, pd.DataFrame)
    before = feats.copy()
    out = apply_realized_scale(feats, ds.frame, RealizedScaleConfig(enabled=True))
    pd.testing.assert_frame_equal(feats, before)
    for side in ("long", "short"):
        s = out[f"liq_real_scale_{side}"].to_numpy()
        np.testing.assert_allclose(out[f"liq_pred_{side}_usd"], feats[f"liq_pred_{side}_usd"] * s)
        assert s[0] == 1.0 and s[-1] < 0.1


def test_calibrate_realized_scale_command(tmp_path, capsys):
    out = tmp_path / "rs.json"
    argv = ["calibrate", "--realized-scale", "--data",
            "liqsignal/resources/coinglass_btc_1h_price_oi_funding_liquidations.csv",
            "--volume", "liqsignal/resources/binance_btc_1h_volume.csv", "--folds", "2",
            "--out", str(out), "--json"]  # fmt: skip
    assert main(argv) == 0
    res = json.loads(capsys.readouterr().out)
    assert res["gate_map"] and [r["side"] for r in res["rows"]] == ["long", "short"]
    written = json.loads(out.read_text())["liqsignal"]["realized_scale"]
    assert written["enabled"] is True
    assert load_realized_scale(out).enabled
