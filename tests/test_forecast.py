"""The cascade-risk forecast: point in time, JSON round trip, bad inputs, metrics, config."""

from __future__ import annotations

import json
import logging
import math

import numpy as np
import pytest
from sklearn.calibration import calibration_curve
from sklearn.linear_model import LogisticRegression
from sklearn.metrics import brier_score_loss, log_loss, roc_auc_score
from sklearn.preprocessing import StandardScaler

from liqsignal import forecast as fc
from liqsignal.cli import main
from liqsignal.config import ForecastConfig, MapConfig
from liqsignal.datasets import cascade_onsets, load_dataset
from liqsignal.exceptions import ConfigError, InputError
from liqsignal.features import compute_features
from liqsignal.guards import GuardConfig, entry_decision, leverage_decision


@pytest.fixture(scope="module")
def btc4h():
    ds = load_dataset("btc_4h")
    feats = compute_features(ds.frame, fc.market_config(MapConfig(), ds.symbol))
    return ds.frame, feats


@pytest.fixture(scope="module")
def model():
    return fc.load_model()


def test_shipped_model_was_fitted_with_the_current_map_defaults(model):
    """Fails when MapConfig's defaults change: refit with
    `liqsignal fit --bundled --out liqsignal/resources/forecast_model.json`."""
    now = json.loads(json.dumps(MapConfig().to_dict()))
    diff = sorted(k for k in set(now) | set(model.map_config)
                  if now.get(k) != model.map_config.get(k))  # fmt: skip
    assert diff == [], f"shipped forecast model is stale for MapConfig keys {diff}: refit it"
    assert model.horizon_bars == ForecastConfig().horizon_bars
    names = [t["name"] for t in model.training]
    assert names == ["btc_1h", "btc_4h", "eth_4h"]
    assert set(model.metrics["pooled_out_of_sample"]) == {"long", "short"}
    for s in ("long", "short"):
        assert model.sides[s].features, s
        assert 0 < model.sides[s].base_rate < 0.5


def test_point_in_time_row_t_from_the_prefix_equals_the_full_run(btc4h, model):
    frame, feats = btc4h
    full = fc.add_forecast_columns(frame, feats, model)
    assert full["liq_long_cascade_prob"].iloc[300:].notna().all()
    for t in (fc.HISTORY_BARS, 400, 777, len(frame) - 2):
        sub = frame.iloc[: t + 1]
        part = fc.add_forecast_columns(sub, compute_features(sub, fc.market_config(
            MapConfig(), "BTC/USDT:USDT")), model)  # fmt: skip
        for c in (*fc.FORECAST_COLUMNS, "liq_long_armed", "liq_short_armed_score"):
            a, b = part[c].iloc[t], full[c].iloc[t]
            assert (math.isnan(a) and math.isnan(b)) or a == b, (c, t)  # the same bits
    # armed is the probability against the threshold; the score carries the probability
    p = full["liq_short_cascade_prob"]
    ok = p.notna()
    thr = model.sides["short"].threshold
    assert ((full["liq_short_armed"][ok] > 0) == (p[ok] >= thr)).all()
    assert np.array_equal(full["liq_short_armed_score"][ok], p[ok])
    assert full["liq_long_cascade_prob"].iloc[:10].isna().all()  # no history yet: NaN, not 0
    assert frame.equals(load_dataset("btc_4h").frame)  # inputs untouched


def test_json_round_trip_and_predictions_match_sklearn(btc4h, tmp_path):
    frame, feats = btc4h
    m = fc.fit_forecast([("btc_4h", frame, feats)], horizon=6)
    path = m.save(tmp_path / "m.json")
    back = fc.load_model(path)
    assert back.to_dict() == m.to_dict()
    assert "pickle" not in path.read_text()
    # the same standardised logistic regression fitted by sklearn directly
    rows = fc.training_frames([("btc_4h", frame, feats)], 6)[0]
    side = back.sides["long"]
    x = rows.x["long"][list(side.features)].to_numpy()
    y = rows.y["long"]
    ok = np.all(np.isfinite(x), axis=1) & np.isfinite(y)
    ok[:200] = False
    sc = StandardScaler().fit(x[ok])
    lr = LogisticRegression(C=fc.DEFAULT_C, max_iter=2000).fit(sc.transform(x[ok]), y[ok])
    want = lr.predict_proba(sc.transform(x[ok]))[:, 1]
    np.testing.assert_allclose(side.predict(x[ok]), want, rtol=1e-6, atol=1e-9)


def test_metrics_against_sklearn_on_known_inputs():
    y = np.array([0, 0, 1, 1, 0, 1, 0, 0, 1, 0], dtype=float)
    p = np.array([0.12, 0.43, 0.37, 0.83, 0.22, 0.91, 0.05, 0.64, 0.71, 0.15])
    got = fc.score_probabilities(y, p, base_rate=0.3)
    assert got["auc"] == pytest.approx(roc_auc_score(y, p))
    assert got["log_loss"] == pytest.approx(log_loss(y, p))
    assert got["brier"] == pytest.approx(brier_score_loss(y, p))
    assert got["base_log_loss"] == pytest.approx(log_loss(y, np.full(10, 0.3)))
    assert got["base_rate"] == pytest.approx(0.4) and got["positives"] == 4
    # ECE by hand: bins [0.1,0.2) -> p .1 .15 y 0 0; ... weighted |mean p - mean y|
    ece = fc.expected_calibration_error(y, p)
    prob_true, prob_pred = calibration_curve(y, p, n_bins=10, strategy="uniform")
    idx = np.clip((p * 10).astype(int), 0, 9)
    counts = np.bincount(idx, minlength=10)
    counts = counts[counts > 0]
    assert ece == pytest.approx(float(np.sum(counts * np.abs(prob_true - prob_pred)) / 10))
    hand = fc.expected_calibration_error(np.array([0, 1, 1, 1.0]), np.array([0.1, 0.1, 0.9, 0.9]))
    assert hand == pytest.approx((2 * 0.4 + 2 * 0.1) / 4)
    one = fc.score_probabilities(np.zeros(5), np.full(5, 0.1))
    assert math.isnan(one["auc"]) and one["ece"] == pytest.approx(0.1)


def test_cascade_targets_and_threshold_choice_on_known_inputs():
    r = np.r_[np.ones(10), 50.0, 50.0, np.ones(5), 80.0, np.ones(4)]
    onset, _ = cascade_onsets(r, q=0.9, min_history=5)
    assert np.flatnonzero(onset).tolist() == [10, 17]
    y = fc.cascade_targets(r, 3, q=0.9, min_history=5)
    assert np.isnan(y[:4]).all() and np.isnan(y[-3:]).all()  # unknown threshold / future
    assert y[7] == 1.0 and y[6] == 0.0 and y[9] == 1.0 and y[10] == 0.0 and y[14] == 1.0
    p = np.array([0.9, 0.8, 0.7, 0.6, 0.5, 0.4])
    yy = np.array([1, 0, 1, 0, 0, 0.0])
    assert fc.choose_threshold(p, yy, 0.5, min_flags=1) == (0.6, 0.5, pytest.approx(4 / 6))
    thr, prec, rate = fc.choose_threshold(p, yy, 0.6, min_flags=2)
    assert (thr, prec, rate) == (0.7, pytest.approx(2 / 3), 0.5)
    assert fc.choose_threshold(p, yy, 0.9, min_flags=2)[0] == 1.0  # unreachable: never arms


def test_bad_model_files_name_the_file_and_reason(tmp_path, model):
    with pytest.raises(fc.ForecastError, match="does not exist"):
        fc.load_model(tmp_path / "nope.json")
    bad = tmp_path / "bad.json"
    bad.write_text("{not json")
    with pytest.raises(fc.ForecastError, match=r"bad\.json is not readable JSON"):
        fc.load_model(bad)
    bad.write_text(json.dumps({"format": "other"}))
    with pytest.raises(fc.ForecastError, match="not a liqsignal forecast model"):
        fc.load_model(bad)
    d = model.to_dict()
    d["sides"]["long"]["features"][0] = "mf_tomorrows_price"
    bad.write_text(json.dumps(d))
    with pytest.raises(fc.ForecastError, match=r"sides\.long: fitted on unknown feature"):
        fc.load_model(bad)
    d = model.to_dict()
    d["sides"]["short"]["coef"] = d["sides"]["short"]["coef"][:-1]
    bad.write_text(json.dumps(d))
    with pytest.raises(fc.ForecastError, match="equal length"):
        fc.load_model(bad)


def test_model_on_other_features_and_fallback_to_nan_with_a_warning(btc4h, model, tmp_path,
                                                                   caplog):  # fmt: skip
    frame, feats = btc4h
    assert model.map_features and "map_standing_oi" in model.sides["long"].features
    no_standing = feats.drop(columns=["liq_pred_standing_long_usd"])
    with pytest.raises(fc.ForecastError, match=r"other features: \['map_standing_oi'\]"):
        fc.add_forecast_columns(frame, no_standing, model)
    with caplog.at_level(logging.WARNING, logger="liqsignal.forecast"):
        out = fc.apply_forecast(frame, no_standing, ForecastConfig())
    assert out["liq_long_cascade_prob"].isna().all() and out["liq_long_armed"].isna().all()
    assert out["liq_short_cascade_prob"].isna().all()
    assert any("other features" in r.getMessage() for r in caplog.records)
    # a missing model file: NaN columns and the file named in the warning
    caplog.clear()
    with caplog.at_level(logging.WARNING, logger="liqsignal.forecast"):
        out = fc.apply_forecast(frame, feats, {"model": str(tmp_path / "missing.json")})
    assert out["liq_short_armed_score"].isna().all()
    assert any("missing.json does not exist" in r.getMessage() for r in caplog.records)
    # another horizon than the model's
    caplog.clear()
    with caplog.at_level(logging.WARNING, logger="liqsignal.forecast"):
        out = fc.apply_forecast(frame, feats, {"horizon_bars": 12})
    assert out["liq_long_cascade_prob"].isna().all()
    assert any("horizon of 6 bars" in r.getMessage() for r in caplog.records)
    # too little history: a warning, NaN rows (never a zero)
    caplog.clear()
    short = frame.iloc[:30]
    with caplog.at_level(logging.WARNING, logger="liqsignal.forecast"):
        out = fc.apply_forecast(short, feats.iloc[:30], ForecastConfig())
    assert out["liq_long_cascade_prob"].isna().all()
    assert any("too little history" in r.getMessage() for r in caplog.records)
    assert fc.apply_forecast(frame, feats, {"enabled": False}) is feats
    # no open interest: no share of OI, so no probability, and the warning names the inputs
    caplog.clear()
    with caplog.at_level(logging.WARNING, logger="liqsignal.forecast"):
        out = fc.apply_forecast(frame.drop(columns=["open_interest_value"]), feats, None)
    assert out["liq_long_cascade_prob"].isna().all()
    assert any("no long cascade probability on the last bar" in r.getMessage()
               and "map_standing_oi" in r.getMessage() for r in caplog.records)  # fmt: skip


def test_too_little_history_to_fit(btc4h):
    frame, feats = btc4h
    with pytest.raises(fc.ForecastError, match="too little history to fit"):
        fc.fit_forecast([("tiny", frame.iloc[:300], feats.iloc[:300])])
    with pytest.raises(InputError, match="realized_long_usd"):
        fc.fit_forecast([("x", frame.drop(columns=["realized_long_usd"]), feats)])


def test_config_validation_names_the_key_path():
    assert ForecastConfig.from_dict(None) == ForecastConfig()
    c = ForecastConfig.from_dict({"horizon_bars": 12, "armed_prob": 0.25, "model": "m.json"})
    assert (c.horizon_bars, c.armed_prob, c.model) == (12, 0.25, "m.json")
    for bad, key in (({"horizon_bars": 0}, "horizon_bars"), ({"horizon_bars": 2.5}, "horizon_bars"),
                     ({"armed_prob": 1.5}, "armed_prob"), ({"armed_prob": True}, "armed_prob"),
                     ({"target_precision": 0}, "target_precision"), ({"enabled": "yes"}, "enabled"),
                     ({"model": ""}, "model")):  # fmt: skip
        with pytest.raises(ConfigError, match=rf"liqsignal\.forecast\.{key}"):
            ForecastConfig.from_dict(bad)
    with pytest.raises(ConfigError, match=r"liqsignal\.forecast: unknown key\(s\) \[.horizon.\]"):
        ForecastConfig.from_dict({"horizon": 6})
    with pytest.raises(ConfigError, match=r"guards\.entry_max_prob"):
        GuardConfig.from_dict({"entry_max_prob": 2.0})
    with pytest.raises(ConfigError, match=r"guards\.leverage_prob_budget"):
        GuardConfig.from_dict({"leverage_prob_budget": 0})
    from liqsignal.freqtrade import liq_settings

    s = liq_settings({"liqsignal": {"forecast": {"armed_prob": 0.3}}})
    assert s.forecast.armed_prob == 0.3
    with pytest.raises(ConfigError, match=r"forecast\.armed_prob"):
        liq_settings({"liqsignal": {"forecast": {"armed_prob": -1}}})


def test_probability_guards_refuse_cap_and_follow_on_stale():
    row = {"liq_long_cascade_prob": 0.3, "liq_short_cascade_prob": 0.05,
           "liq_long_cluster_usd": math.nan, "liq_long_cluster_low": math.nan,
           "liq_long_cluster_high": math.nan, "liq_short_cluster_usd": math.nan,
           "liq_short_cluster_low": math.nan, "liq_short_cluster_high": math.nan,
           "liq_long_cascade_end": math.nan, "liq_short_cascade_end": math.nan}  # fmt: skip
    cfg = GuardConfig(entry_max_prob=0.2, leverage_prob_budget=1.0)
    d = entry_decision(row, "long", 100.0, cfg)
    assert not d.allowed and "probability 0.300 above 0.200" in d.reason
    assert entry_decision(row, "short", 100.0, cfg).allowed
    assert entry_decision(row, "long", 100.0, GuardConfig()).allowed  # rule off by default
    lev = leverage_decision(row, "long", 100.0, 20, 125, cfg)
    assert lev.leverage == 3.0 and "cascade probability 0.300" in lev.reason  # floor(1 / 0.3)
    assert leverage_decision(row, "short", 100.0, 20, 125, cfg).leverage == 20.0  # 1/0.05 = 20
    nan_row = {**row, "liq_long_cascade_prob": math.nan}
    assert entry_decision(nan_row, "long", 100.0, cfg).allowed  # on_stale open
    closed = cfg.replace(on_stale="closed")
    d = entry_decision(nan_row, "long", 100.0, closed)
    assert not d.allowed and "no long cascade probability, fail-closed" in d.reason
    assert leverage_decision(nan_row, "long", 100.0, 20, 125, closed).leverage == 1.0


def test_report_and_cli_fit_on_a_users_file(btc4h, tmp_path, capsys):
    frame, feats = btc4h
    rep = fc.forecast_report(data=[("btc_4h", frame, feats)], n_folds=2)
    assert {r["side"] for r in rep["rows"]} == {"long", "short"}
    for r in rep["rows"]:
        for kind in ("map", "map_free"):
            assert r[kind]["n"] > 0 and 0 <= r[kind]["ece"] <= 1
    text = fc.format_forecast_report(rep)
    assert "btc_4h" in text and "pooled long" in text and "targets over" in text
    png = fc.plot_forecast(rep, tmp_path / "f.png")
    assert png.stat().st_size > 10_000
    csv = tmp_path / "mine.csv"
    frame.to_csv(csv, index=False)
    out = tmp_path / "model.json"
    assert main(["fit", "--data", str(csv), "--out", str(out), "--folds", "2"]) == 0
    m = fc.load_model(out)
    assert m.training[0]["name"] == "mine" and m.training[0]["rows"] == len(frame)
    assert "model written to" in capsys.readouterr().out
    frame.drop(columns=["realized_short_usd"]).to_csv(csv, index=False)
    assert main(["fit", "--data", str(csv), "--out", str(out)]) == 2
    assert "missing column(s) ['realized_short_usd']" in capsys.readouterr().err


def test_alerts_carry_probability_side_horizon_and_precision(btc4h, model):
    from liqsignal.alerts.events import Event
    from liqsignal.alerts.message import alert_for, format_cluster_alert
    from liqsignal.alerts.views import bar_view

    text = format_cluster_alert(market="BTC/USDT:USDT", side="short", price_low=101.0,
                                price_high=102.0, usd=5e6, distance_pct=1.5, price=100.0,
                                probability=0.234, horizon_bars=6, threshold=0.162,
                                precision=0.167)  # fmt: skip
    assert "23%</b> that short liquidations cascade within 6 bars" in text
    assert "armed at 16%, measured precision 17%" in text and "score" not in text
    frame, feats = btc4h
    on = frame.set_index("date").join(feats.set_index(frame["date"]))
    out = fc.forecast_on_frame(on)
    assert out["liq_short_cascade_prob"].iloc[-1] == pytest.approx(
        fc.add_forecast_columns(frame, feats, model)["liq_short_cascade_prob"].iloc[-1]
    )
    assert fc.forecast_on_frame(feats) is feats  # no candles: left as it is
    # a bar whose short side the forecast arms, with a short pocket: the alert says it all
    p = out["liq_short_cascade_prob"]
    hit = out[(p >= model.sides["short"].threshold) & out["liq_short_cluster_low"].notna()]
    assert len(hit) > 0
    when = hit.index[0]
    view = bar_view("BTC/USDT:USDT", None, out.loc[:when], float(hit["close"].iloc[0]))
    assert view is not None
    pocket = view.armed["short"]
    assert pocket is not None and pocket.probability == pytest.approx(p.loc[when])
    assert pocket.horizon_bars == 6 and pocket.threshold == model.sides["short"].threshold
    assert pocket.precision == model.sides["short"].test_precision
    ev = Event("armed", "BTC/USDT:USDT", when.to_pydatetime(), side="short", pocket=pocket,
               price=float(hit["close"].iloc[0]))  # fmt: skip
    msg = alert_for(ev).text
    assert f"{p.loc[when] * 100:.0f}%</b> that short liquidations cascade within 6 bars" in msg
    assert f"measured precision {model.sides['short'].test_precision * 100:.0f}%" in msg


def test_add_liq_columns_carries_the_forecast_and_survives_a_failing_one(monkeypatch, caplog):
    import liqsignal.columns as columns
    import liqsignal.freqtrade as lf

    frame = (
        load_dataset("btc_1h")
        .frame.iloc[:600]
        .drop(columns=["realized_long_usd", "realized_short_usd"])
    )
    out = lf.add_liq_columns(frame, {"pair": "BTC/USDT:USDT"}, None, {"timeframe": "1h"})
    p = out["liq_short_cascade_prob"]
    assert p.iloc[:40].isna().all() and p.iloc[100:].notna().all()
    assert ((out["liq_short_armed"].iloc[100:] > 0) == (p.iloc[100:] >= fc.load_model().sides[
        "short"].threshold)).all()  # fmt: skip

    def boom(*a, **k):
        raise RuntimeError("unexpected")

    monkeypatch.setattr(columns, "apply_forecast", boom)
    with caplog.at_level(logging.WARNING, logger="liqsignal.freqtrade"):
        bad = lf.add_liq_columns(frame, {"pair": "BTC/USDT:USDT"}, None, {"timeframe": "1h"})
    assert bad["liq_short_cascade_prob"].isna().all() and bad["liq_long_armed"].isna().all()
    assert bad["liq_long_total_usd"].equals(out["liq_long_total_usd"])  # the map survives
    assert any("failed (RuntimeError: unexpected)" in r.getMessage() for r in caplog.records)
