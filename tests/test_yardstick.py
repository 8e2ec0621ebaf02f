"""The yardstick and its datasets: definitions on known inputs, and the gate on the bundled data."""

from __future__ import annotations

import math

import numpy as np
import pandas as pd
import pytest

from liqsignal.cli import main
from liqsignal.datasets import (
    DATASET_NAMES,
    cascade_onsets,
    load_dataset,
    trailing_quantile,
    walk_forward_folds,
)
from liqsignal.exceptions import InputError
from liqsignal.yardstick import (
    CONTROL_NAMES,
    block_bootstrap_ci,
    control_predictors,
    gate,
    market_config,
    partial_rank,
    rank_regression_oos,
    ranks,
    score_dataset,
    spearman_fast,
)


def test_ranks_average_ties_and_spearman_matches_pandas():
    a = np.array([3.0, 1.0, 3.0, 2.0, 5.0])
    assert ranks(a).tolist() == [3.5, 1.0, 3.5, 2.0, 5.0]
    rng = np.random.default_rng(1)
    x = rng.normal(size=300)
    y = x + rng.normal(size=300)
    y[::7] = 0.0  # ties
    expected = pd.Series(x).corr(pd.Series(y), method="spearman")
    assert spearman_fast(x, y) == pytest.approx(expected, abs=1e-12)
    assert math.isnan(spearman_fast(np.ones(10), y[:10]))


def test_partial_rank_removes_what_the_controls_know():
    rng = np.random.default_rng(2)
    c1, c2, noise = rng.normal(size=(3, 2000))
    real = c1 + c2 + 0.5 * noise
    controls = np.column_stack([c1, c2])
    # a copy of a control adds nothing; the part the controls miss is found
    assert abs(partial_rank(c1 + 1e-9 * rng.normal(size=2000), real, controls)) < 0.1
    assert partial_rank(noise, real, controls) > 0.6


def test_rank_regression_predicts_test_rows_from_training_rows_only():
    rng = np.random.default_rng(3)
    X = rng.normal(size=(600, 2))
    y = X[:, 0] * 2 + X[:, 1] + 0.1 * rng.normal(size=600)
    pred = rank_regression_oos(X, y, slice(0, 300), slice(300, 600))
    assert pred.shape == (300,)
    assert spearman_fast(pred, y[300:]) > 0.9
    # the test rows' targets are never read: scrambling them changes nothing
    y2 = y.copy()
    y2[300:] = rng.normal(size=300)
    assert np.array_equal(pred, rank_regression_oos(X, y2, slice(0, 300), slice(300, 600)))


def test_block_bootstrap_interval_contains_the_estimate():
    rng = np.random.default_rng(4)
    x = rng.normal(size=500)
    y = x + rng.normal(size=500)
    lo, hi = block_bootstrap_ci(spearman_fast, [x, y], n_boot=100)
    assert lo < spearman_fast(x, y) < hi
    assert hi - lo < 0.3


def test_controls_are_known_at_the_close_and_defined_as_documented():
    ds = load_dataset("btc_1h")
    df = ds.frame
    c = control_predictors(df)
    i = 50
    pc, pl, ph = df["close"].iloc[i - 1], df["low"].iloc[i - 1], df["high"].iloc[i - 1]
    poi = df["open_interest_value"].iloc[i - 1]
    lo, hi = df["low"].iloc[i], df["high"].iloc[i]
    assert c["long"]["move_oi"].iloc[i] == pytest.approx(max(0.0, pc - lo) / pc * poi)
    assert c["long"]["extreme_oi"].iloc[i] == pytest.approx(max(0.0, pl - lo) / pc * poi)
    assert c["short"]["extreme_oi"].iloc[i] == pytest.approx(max(0.0, hi - ph) / pc * poi)
    assert c["short"]["range_oi"].iloc[i] == pytest.approx((hi - lo) / pc * poi)
    assert list(c["long"].columns) == list(CONTROL_NAMES)
    # nothing of bar i+1 reaches row i
    cut = control_predictors(df.iloc[: i + 1])
    for side in ("long", "short"):
        pd.testing.assert_series_equal(cut[side].iloc[i], c[side].iloc[i])


def test_walk_forward_folds_expand_and_never_overlap_their_test_block():
    folds = walk_forward_folds(1000, n_folds=3, warmup=200)
    assert [f.test.start for f in folds] == [400, 600, 800]
    assert folds[-1].test.stop == 1000
    for f in folds:
        assert f.train.start == 200 and f.train.stop == f.test.start
    with pytest.raises(InputError, match="too few"):
        walk_forward_folds(250, n_folds=3, warmup=200)


def test_cascade_onsets_use_past_bars_only():
    rng = np.random.default_rng(5)
    r = rng.lognormal(size=800)
    onset, bar = cascade_onsets(r, q=0.98, min_history=200)
    assert not bar[:200].any()
    thr = trailing_quantile(r, 0.98, 200)
    t = 500
    assert thr[t] == pytest.approx(np.quantile(r[:t], 0.98))
    # changing the future leaves the past flags alone
    r2 = r.copy()
    r2[600:] *= 100
    o2, _ = cascade_onsets(r2, q=0.98, min_history=200)
    assert np.array_equal(o2[:600], onset[:600])
    # an onset is the first bar of a run
    assert not np.any(onset[1:] & bar[:-1])


def test_bundled_datasets_have_realized_liquidations_and_oi():
    for name in DATASET_NAMES:
        ds = load_dataset(name)
        f = ds.frame
        assert len(f) > 1000
        assert f["date"].is_monotonic_increasing
        for col in ("realized_long_usd", "realized_short_usd", "open_interest_value", "volume"):
            assert np.isfinite(f[col]).all(), (name, col)
            assert (f[col] >= 0).all()
    assert load_dataset("btc_4h").frame["date"].diff().dropna().eq(pd.Timedelta("4h")).mean() > 0.99
    with pytest.raises(InputError, match="unknown dataset"):
        load_dataset("doge_1m")


def test_market_config_gives_eth_a_relative_grid():
    from liqsignal.config import MapConfig

    assert market_config(MapConfig(), "BTC/USDT:USDT", 95_000.0).step == 50.0
    eth = market_config(MapConfig(), "ETH/USDT:USDT", 3_000.0)
    assert eth.step is None and eth.step_bps == 5.0 and eth.symbol == "ETH/USDT:USDT"


def test_gate_names_each_failed_check():
    def side(model, base, partials):
        return {
            "all": {"spearman": {"liq_pred": model, "move_oi": base}},
            "folds": [
                {"fold": k + 1, "partial_given_controls": {"liq_pred": p}}
                for k, p in enumerate(partials)
            ],
        }

    good = {
        "dataset": "a",
        "per_bar": {"long": side(0.8, 0.7, [0.2]), "short": side(0.8, 0.7, [0.1])},
    }
    bad = {
        "dataset": "b",
        "per_bar": {"long": side(0.6, 0.7, [0.2]), "short": side(0.8, 0.7, [-0.1])},
    }
    assert gate({"datasets": [good]}).passed
    g = gate({"datasets": [good, bad]})
    assert not g.passed and g.checks == 8
    assert any("b long" in f and "does not beat" in f for f in g.failures)
    assert any("b short fold 1" in f for f in g.failures)


def test_score_dataset_structure_reports_rates_and_p_values():
    ds = load_dataset("btc_4h")
    res = score_dataset(ds, boot=20, n_shift=30)
    for side in ("long", "short"):
        t = res["touches"][side]
        assert 0 <= t["touch_rate"] <= 1 and 0 <= t["vol_matched_random_rate"] <= 1
        assert 0 < t["p_vs_circular_shift"] <= 1
        a = res["armed"][side]
        assert a["cascades"] > 0 and 0 <= a["base_rate"] <= 1
        fold = res["per_bar"][side]["folds"][0]
        assert set(fold["oos_gain_over_control_regression"]) == {"liq_pred", "standing", "same_bar"}
        lo, hi = res["per_bar"][side]["all"]["spearman_ci90"]["liq_pred"]
        assert lo <= res["per_bar"][side]["all"]["spearman"]["liq_pred"] <= hi
    claim = res["claims"]["pocket_break_volatility"]
    assert claim["treated"] > 0 and 0 < claim["p_two_sided"] <= 1


def test_evaluate_gate_passes_on_the_bundled_data(capsys):
    """The gate CI runs: the default map beats move x OI on every dataset and side, and its
    partial given all four controls is positive on every walk-forward fold."""
    rc = main(["evaluate", "--gate", "--gate-only", "--boot", "0", "--no-structure"])
    out = capsys.readouterr().out
    assert rc == 0, out
    assert "gate (24 checks" in out and "PASSED" in out
    for name in DATASET_NAMES:
        assert f"== {name}" in out


def test_evaluate_gate_fails_for_the_first_versions_rules(tmp_path, capsys):
    """The first version's rules (absolute closes, 5 % turnover) fail the gate on the 4h data."""
    cfg = tmp_path / "old.json"
    cfg.write_text(
        '{"liqsignal": {"engine": {"close_relative": false, "churn_volume_share": 0.05}}}'
    )
    rc = main(
        ["evaluate", "--config", str(cfg), "--gate", "--gate-only", "--boot", "0", "--no-structure"]
    )
    out = capsys.readouterr().out
    assert rc == 1
    assert "FAILED" in out and "eth_4h long" in out
