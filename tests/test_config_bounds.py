"""Every key of the liqsignal section has a type and a sane range: a bad value is a ConfigError
naming the key path (``liqsignal.engine.n_bins``), never a raw AttributeError / TypeError /
MemoryError later, and no message shows a secret, even one put under the wrong key."""

from __future__ import annotations

import pytest

from liqsignal.alerts.events import EventRules
from liqsignal.config import AlertConfig, GuardConfig, MapConfig, alert_settings
from liqsignal.engine import LiquidationMap
from liqsignal.exceptions import ConfigError
from liqsignal.freqtrade import liq_settings

TOKEN = "123456789:AAH-secretsecretsecretsecretsecret00"

WRONG = ["x", True, None, [1], {"a": 1}, float("nan"), float("inf"), -1e18, 1e18]

ENGINE_BAD = {
    "exchange": [None, 123, "", ["binance"]],
    "symbol": [None, 5, ""],
    "tiers_file": [5, ["a"], ""],
    "step": ["50", True, 0, -5, 1e10, float("nan")],
    "n_bins": [10**9, 15, 100.5, "100", True],
    "heatmap_frames": [10**9, 0, 2.5, "10"],
    "heatmap_rows": [10**9, 0],
    "heatmap_bins_per_row": [10**9, 0],
    "cascade_max_depth": [10**9, 0, 3.0],
    "history_bars": [10**9, 0],
    "smooth_half_bins": [10**9, -1],
    "merge_gap_bins": [10**9, -1],
    "width": [0, 100.0, "0.5"],
    "half_life_hours": [0, 1e9],
    "scan_range_pct": [0, 150.0],
    "density_band_pct": [0, 150.0],
    "contrast_window_pct": [0, 150.0],
    "cascade_gap_pct": [0, 150.0],
    "armed_distance_pct": [0, 150.0],
    "cluster_threshold": [0, 1e9],
    "armed_size_ratio": [0, 1e9],
    "armed_oi_ratio": [0, 1e9],
    "flush_ratio": [0, 1e9],
    "armed_funding_min": [5.0, float("nan")],
    "cluster_min_usd": [-1, 1e20],
    "flush_min_usd": [-1, 1e20],
    "heatmap_every_s": [0, 1e12],
    "position_notional": [0, 1e20],
    "taker_fee": [-0.1, 0.5],
    "max_leverage": [0.5, 1e6],
    "recentre_frac": [-0.1, 2.0, True],
    "entry_spread": [2.0, True],
    "direction_long_share": [2.0, "0.5"],
    "close_long_share": [2.0],
    "proxy_volume_share": [2.0],
    "churn_volume_share": [2.0],
    "intrabar_share": [2.0],
    "close_relative": [1, "yes", None],
    "leverages": ["2,3", 5, [1.0, True], [2000.0] * 10, [2.0] * 200],
    "leverage_weights": ["x", [None] * 10, [1.0]],
}


def engine_cases():
    for key, values in ENGINE_BAD.items():
        for v in values:
            yield pytest.param(key, v, id=f"{key}={v!r}"[:60])


@pytest.mark.parametrize(("key", "value"), list(engine_cases()))
def test_bad_engine_value_names_the_key_path(key, value):
    data = {key: value}
    if key == "step":
        data["step_bps"] = None
    with pytest.raises(ConfigError) as ei:
        MapConfig.from_dict(data)
    assert f"liqsignal.engine.{key}" in str(ei.value) or (
        key in ("leverages", "leverage_weights") and "liqsignal.engine.leverage" in str(ei.value)
    ), str(ei.value)


def test_defaults_are_inside_the_ranges_and_unchanged():
    cfg = MapConfig()
    assert MapConfig.from_dict(cfg.to_dict()) == cfg
    assert (cfg.n_bins, cfg.heatmap_frames, cfg.cascade_max_depth) == (None, 2000, 10)
    guards = GuardConfig().model_dump()
    assert GuardConfig.from_dict(guards) == GuardConfig()
    assert AlertConfig.from_dict({}) == AlertConfig()


def test_a_huge_but_allowed_config_does_not_allocate_gigabytes():
    cfg = MapConfig(n_bins=1_000_000, heatmap_frames=20_000, heatmap_rows=240)
    lmap = LiquidationMap(cfg)
    assert lmap.nbytes < 100 * 2**20
    with pytest.raises(ConfigError, match=r"heatmap_frames x liqsignal.engine.heatmap_rows"):
        MapConfig(heatmap_frames=50_000, heatmap_rows=5_000)


@pytest.mark.parametrize(
    "section",
    [["step", 50], "step=50", 5, True],
    ids=["list", "string", "number", "bool"],
)
def test_engine_section_of_the_wrong_shape(section):
    with pytest.raises(ConfigError, match=r"liqsignal.engine must be a mapping"):
        liq_settings({"liqsignal": {"engine": section}})
    with pytest.raises(ConfigError, match=r"liqsignal.engine must be a mapping"):
        MapConfig.from_dict(section)  # type: ignore[arg-type]
    with pytest.raises(ConfigError, match=r"liqsignal.engine must be a mapping"):
        alert_settings({"liqsignal": {"engine": section, "alerts": {"markets": ["BTC/USDT:USDT"]}}})


@pytest.mark.parametrize("section", [["a"], "x", 3])
def test_guards_section_of_the_wrong_shape(section):
    with pytest.raises(ConfigError, match=r"liqsignal.guards must be a mapping"):
        liq_settings({"liqsignal": {"guards": section}})


@pytest.mark.parametrize("value", [None, 123, ["binance"]])
def test_engine_exchange_null_or_number(value):
    with pytest.raises(ConfigError, match=r"liqsignal.engine.exchange"):
        liq_settings({"liqsignal": {"engine": {"exchange": value}}})
    with pytest.raises(ConfigError, match=r"liqsignal.engine.exchange"):
        LiquidationMap(MapConfig(), exchanges=[value])  # type: ignore[list-item]


def test_tiers_file_not_a_path():
    with pytest.raises(ConfigError, match=r"liqsignal.engine.tiers_file"):
        liq_settings({"liqsignal": {"engine": {"tiers_file": 5}}})


GUARD_BAD = {
    "enabled": [1, "yes"],
    "entry_distance_pct": [-1, 500, "1"],
    "entry_min_usd": [-1, 1e20],
    "leverage_buffer_pct": [-1, 500],
    "min_leverage": [0.5, 1e5],
    "position_notional": [0, 1e20],
    "entry_max_prob": [1.5, -0.1],
    "leverage_prob_budget": [0, 1e9],
    "stop_min_score": [-1, 1e9],
    "stop_mode": ["sideways", 3],
    "stop_buffer_pct": [-1, 100],
    "stop_min_distance_pct": [0, 100],
    "stop_no_pocket_pct": [0, 100],
    "max_age_candles": [0, 1e9, float("inf")],
    "on_stale": ["maybe", None],
}


@pytest.mark.parametrize(
    ("key", "value"),
    [pytest.param(k, v, id=f"{k}={v!r}") for k, vs in GUARD_BAD.items() for v in vs],
)
def test_bad_guard_value_names_the_key_path(key, value):
    with pytest.raises(ConfigError, match=rf"liqsignal.guards.{key}"):
        liq_settings({"liqsignal": {"guards": {key: value}}})


ALERT_BAD = {
    "interval_s": [0, 1e9, "60"],
    "misfire_grace_s": [-1, 1e9],
    "stale_after_bars": [0, 1e9],
    "cooldown_minutes": [-1, 1e9],
    "picture_bars": [0, 10**9, 2.5],
    "history_bars": [0, 10**9],
    "max_age_s": [0, 1e12],
    "band_pct": [0, 500],
    "escalate_usd_ratio": [1.0, 1e9],
    "escalate_depth_step": [0, 10**6, True],
    "min_usd": [-1, 1e20],
    "max_distance_pct": [0, 500],
    "consumed_min_usd": [-1, 1e20],
    "polling": [1, "yes"],
    "chat_ids": [[None], [True], {"a": 1}],
    "markets": [[1, 2], {"a": 1}],
    "ccxt_config": ["binance", {"binance": "x"}],
    "token_env": [5, "not a name", ""],
}


@pytest.mark.parametrize(
    ("key", "value"),
    [pytest.param(k, v, id=f"{k}={v!r}") for k, vs in ALERT_BAD.items() for v in vs],
)
def test_bad_alert_value_names_the_key_path(key, value):
    with pytest.raises(ConfigError, match=rf"liqsignal.alerts.{key}"):
        AlertConfig.from_dict({key: value})


def test_event_rules_have_upper_bounds():
    with pytest.raises(ConfigError, match=r"band_pct"):
        EventRules(band_pct=1e9)
    with pytest.raises(ConfigError, match=r"escalate_depth_step"):
        EventRules(escalate_depth_step=True)


@pytest.mark.parametrize("exchange", ["binance", 5, ["binance"]])
def test_top_level_exchange_not_a_mapping_in_the_alert_service(exchange):
    cfg = {"exchange": exchange, "liqsignal": {"alerts": {"markets": ["BTC/USDT:USDT"]}}}
    with pytest.raises(ConfigError, match=r"^exchange must be a mapping"):
        alert_settings(cfg)


@pytest.mark.parametrize(
    "alerts",
    [
        {"token": [TOKEN]},
        {"token": {"value": TOKEN}},
        {"token": 123456789},
        {"token_env": TOKEN},
        {"token_env": TOKEN, "token": [TOKEN]},
        {"ccxt_config": {"binance": f"apiKey={TOKEN}"}},
    ],
)
def test_secrets_never_appear_in_config_errors(alerts):
    with pytest.raises(ConfigError) as ei:
        AlertConfig.from_dict(alerts)
    msg = str(ei.value)
    assert TOKEN not in msg and "secretsecret" not in msg and "123456789" not in msg, msg
    assert "liqsignal.alerts." in msg


def test_token_pasted_as_env_name_is_not_echoed_by_the_sender():
    from liqsignal.alerts.telegram import _resolve_token

    with pytest.raises(ConfigError) as ei:
        _resolve_token(None, TOKEN)
    assert TOKEN not in str(ei.value) and "secretsecret" not in str(ei.value)
