"""The grid suits each market by default: 50 USD for BTC, a 5 bps relative step elsewhere."""

from __future__ import annotations

import pytest

from liqsignal.config import MapConfig
from liqsignal.datasets import load_dataset
from liqsignal.exceptions import ConfigError
from liqsignal.features import compute_features


def test_btc_keeps_the_absolute_step_and_eth_gets_a_relative_one():
    btc = load_dataset("btc_4h").frame.iloc[:300]
    eth = load_dataset("eth_4h").frame.iloc[:300]
    _, m_btc = compute_features(btc, return_map=True)
    assert m_btc.config.step == 50.0 and m_btc.config.grid_mode == 0
    _, m_eth = compute_features(eth, MapConfig(symbol="ETH/USDT:USDT"), return_map=True)
    assert m_eth.config.step is None and m_eth.config.step_bps == 5.0
    feats = compute_features(eth, MapConfig(symbol="ETH/USDT:USDT"))
    # ETH has pockets on the relative grid; at 50 USD a bin is ~2 % of price
    assert (feats["liq_long_cluster_usd"].iloc[200:] > 0).mean() > 0.02
    fixed = MapConfig(symbol="ETH/USDT:USDT", auto_grid=False)
    _, m_fixed = compute_features(eth, fixed, return_map=True)
    assert m_fixed.config.step == 50.0


def test_auto_grid_rule_and_validation():
    cfg = MapConfig()
    assert cfg.auto_grid_for(95_000.0) is cfg
    assert cfg.auto_grid_for(3_000.0).step_bps == 5.0
    assert cfg.auto_grid_for(float("nan")) is cfg
    rel = MapConfig(step=None, step_bps=10.0)
    assert rel.auto_grid_for(3_000.0) is rel
    with pytest.raises(ConfigError, match="auto_grid"):
        MapConfig(auto_grid="yes")  # type: ignore[arg-type]
