"""One settings object for the whole ``liqsignal`` section: the strategy, the alert service and
the CLI read the same keys with the same rules (exchange order, unknown keys, secrets)."""

from __future__ import annotations

import json

import pytest

from liqsignal.cli import _load_engine_config
from liqsignal.config import (
    SECTION_KEYS,
    AlertConfig,
    ForecastConfig,
    GuardConfig,
    LiqsignalConfig,
    MapConfig,
    alert_settings,
    load_settings,
    resolve_exchanges,
)
from liqsignal.exceptions import ConfigError
from liqsignal.freqtrade import liq_settings

M = "BTC/USDT:USDT"
TOKEN = "123456789:AAH-secretsecretsecretsecretsecret00"


def _config(exchanges, name="binance"):
    cfg = {"exchange": {"pair_whitelist": [M]}, "liqsignal": {"alerts": {"chat_ids": [1]}}}
    if name is not None:
        cfg["exchange"]["name"] = name
    if exchanges is not None:
        cfg["liqsignal"]["exchanges"] = exchanges
    return cfg


@pytest.mark.parametrize(
    ("exchanges", "name", "expected"),
    [
        (["bybit", "binance"], "binance", ("binance", "bybit")),  # the review's case
        (["bybit", "okx"], "binance", ("binance", "bybit", "okx")),  # the bot's venue added
        (["Bybit", "OKX", "bybit"], None, ("bybit", "okx")),  # lower-cased, repeats dropped
        ("okx", "binance", ("binance", "okx")),  # one id as a string
        (None, "bybit", ("bybit",)),
        (None, None, ("binance",)),
    ],
)
def test_strategy_alerts_and_cli_resolve_the_same_exchanges(tmp_path, exchanges, name, expected):
    cfg = _config(exchanges, name)
    strategy = liq_settings(cfg)
    alerts = alert_settings(cfg)
    assert strategy.exchanges == expected
    assert alerts.exchanges == expected
    assert alerts.markets[0].exchanges == expected  # what the provider aggregates, in order
    path = tmp_path / "config.json"
    path.write_text(json.dumps(cfg))
    cli_engine = _load_engine_config(str(path))
    # the reference venue (the first) picks the engine's formula, for all three readers
    assert strategy.engine.exchange == alerts.engine.exchange == cli_engine.exchange == expected[0]
    assert strategy.engine == alerts.engine == cli_engine
    assert resolve_exchanges(LiqsignalConfig.from_dict(cfg["liqsignal"]).exchanges, name) == (
        expected
    )


def test_an_engine_exchange_set_explicitly_is_kept():
    cfg = _config(["bybit"], "okx")
    cfg["liqsignal"]["engine"] = {"exchange": "binance"}
    assert liq_settings(cfg).engine.exchange == alert_settings(cfg).engine.exchange == "binance"
    assert liq_settings(cfg).exchanges == ("okx", "bybit")


@pytest.mark.parametrize("reader", ["strategy", "alerts", "cli"])
def test_a_misspelt_section_key_is_an_error_for_every_reader(tmp_path, reader):
    cfg = _config(None)
    cfg["liqsignal"]["alert"] = cfg["liqsignal"].pop("alerts")
    path = tmp_path / "config.json"
    path.write_text(json.dumps(cfg))
    read = {"strategy": liq_settings, "alerts": alert_settings}.get(
        reader, lambda c: _load_engine_config(str(path))
    )
    with pytest.raises(ConfigError) as ei:
        read(cfg)
    assert str(ei.value) == (
        f"liqsignal: unknown key(s) ['alert']; known keys: {sorted(SECTION_KEYS)}"
    )


def test_messages_name_the_key_path_and_say_what_was_expected():
    cases = {
        "liqsignal.engine.n_bins must be an integer in [16, 1e+06] or null, got 15": {
            "engine": {"n_bins": 15}
        },
        "liqsignal.alerts.chat_ids[1] must be an integer chat id or an @channel name, got null": {
            "alerts": {"chat_ids": [1, None]}
        },
        "liqsignal.guards.on_stale must be one of ['open', 'closed'], got a string": {
            "guards": {"on_stale": "sometimes"}
        },
        "liqsignal.forecast.horizon_bars must be an integer in [1, 1000], got 2.5": {
            "forecast": {"horizon_bars": 2.5}
        },
        "liqsignal.exchanges[1] must be a non-empty string, got 5": {"exchanges": ["okx", 5]},
        "liqsignal.engine.leverages[0] must be a number in [1, 1000], got 0.5": {
            "engine": {"leverages": [0.5] + [2.0] * 9}
        },
        "liqsignal.engine: set only one of step and step_bps, not both": {
            "engine": {"step_bps": 5}
        },
    }
    for expected, section in cases.items():
        with pytest.raises(ConfigError) as ei:
            load_settings({"liqsignal": section})
        assert str(ei.value) == expected


def test_per_market_engine_errors_name_the_market():
    cfg = _config(None)
    cfg["liqsignal"]["alerts"]["market_engines"] = {M: {"n_bins": 10**9}}
    with pytest.raises(ConfigError) as ei:
        alert_settings(cfg)
    assert str(ei.value).startswith(f"liqsignal.alerts.market_engines[{M!r}].n_bins must be")


@pytest.mark.parametrize(
    "alerts",
    [
        {"interval_s": TOKEN},  # pasted into a number
        {"markets": {"BTC": TOKEN}},
        {"timeframe": [TOKEN]},
        {"chat_ids": [{"token": TOKEN}]},
        {"bot_token": TOKEN},  # a misspelt key
        {"token": 123456789},
        {"token_env": TOKEN},
        {"ccxt_config": {"binance": {"apiKey": TOKEN, "secret": 5}, "okx": TOKEN}},
        {"ccxt_config": TOKEN},
    ],
)
def test_a_token_pasted_into_a_wrong_key_never_reaches_the_message(alerts):
    for build in (
        lambda: AlertConfig.from_dict(alerts),
        lambda: AlertConfig(**alerts),
        lambda: load_settings({"liqsignal": {"alerts": alerts}}),
    ):
        with pytest.raises(ConfigError) as ei:
            build()
        msg = str(ei.value)
        assert "liqsignal.alerts" in msg, msg
        assert "secretsecret" not in msg and "123456789" not in msg, msg
        # nor in the chained exception a traceback would print
        assert ei.value.__suppress_context__ or ei.value.__cause__ is None


def test_secrets_stay_out_of_reprs():
    cfg = _config(["bybit"])
    cfg["liqsignal"]["alerts"] |= {"token": TOKEN, "ccxt_config": {"bybit": {"apiKey": TOKEN}}}
    s = alert_settings(cfg)
    assert s.alerts.bot_token == TOKEN
    assert s.ccxt_config == {"bybit": {"apiKey": TOKEN}}
    for text in (repr(s), str(s), repr(s.alerts), str(s.alerts)):
        assert "secretsecret" not in text
    assert "token=SecretStr('**********')" in repr(s.alerts)


def test_every_section_of_config_example_is_one_model_and_defaults_are_stable():
    assert SECTION_KEYS == ("engine", "guards", "alerts", "exchanges", "forecast")
    for cls in (MapConfig, GuardConfig, AlertConfig, ForecastConfig):
        assert cls.from_dict(None) == cls() == cls.from_dict({})
        with pytest.raises(ConfigError, match=rf"^{cls.PATH}: unknown key\(s\) \['nope'\]"):
            cls.from_dict({"nope": 1})
        with pytest.raises(ConfigError, match=rf"^{cls.PATH} must be a mapping, got a list$"):
            cls.from_dict([1])  # type: ignore[arg-type]
    engine = MapConfig()
    assert engine.replace(n_bins=2400).n_bins == 2400
    with pytest.raises(ConfigError, match=r"liqsignal.engine.n_bins"):
        engine.replace(n_bins=10)
    assert type(engine.kernel_params()[0]) is not object  # a float vector for the kernel
    assert engine.kernel_params().dtype.kind == "f"


def test_cli_reads_a_bare_engine_section_and_names_the_file_on_bad_json(tmp_path):
    bare = tmp_path / "engine.json"
    bare.write_text(json.dumps({"step_bps": 5, "step": None}))
    assert _load_engine_config(str(bare)).step_bps == 5
    section = tmp_path / "section.json"  # a bare liqsignal section, as `liqsignal fit` takes
    section.write_text(json.dumps({"engine": {"n_bins": 2400}, "forecast": {"horizon_bars": 4}}))
    assert _load_engine_config(str(section)).n_bins == 2400
    from liqsignal.cli_forecast import _config

    engine, forecast = _config(str(section))
    assert (engine.n_bins, forecast.horizon_bars) == (2400, 4)
    assert _config(str(bare))[0].step_bps == 5
    bad = tmp_path / "bad.json"
    bad.write_text('{"liqsignal": {"engine": {"n_bins": 3}}}')
    with pytest.raises(ConfigError, match=r"^liqsignal.engine.n_bins must be"):
        _load_engine_config(str(bad))


def test_a_config_that_is_not_a_mapping_or_path():
    with pytest.raises(ConfigError, match="got a number"):
        load_settings(5)  # type: ignore[arg-type]


def test_docs_list_every_key_with_its_type_range_and_default():
    from pathlib import Path

    from liqsignal.config import key_table

    text = (Path(__file__).resolve().parents[1] / "docs" / "configuration.md").read_text()
    for cls in (LiqsignalConfig, MapConfig, GuardConfig, AlertConfig, ForecastConfig):
        section = text.split(f"### `{cls.PATH}` ")[1].split("###")[0]
        for key, must, default in key_table(cls):
            assert f"| `{key}` | {must} | `{default}` |" in section, (cls.PATH, key)
