"""Liquidation-price formulas against each exchange's documented definition and worked example."""

from __future__ import annotations

import pytest

from liqsignal.exceptions import ConfigError
from liqsignal.tiers import Tier, leverage_factors, liquidation_price, load_tiers, tier_for


def test_binance_formula_matches_documented_expression():
    # Binance USD-M, isolated, one-way: LP = (WB + cumB - side*q*EP) / (q*MMR - side*q)
    # Worked example with BTCUSDT bracket 2 (0.5 %, cum 50): 1 BTC long at 60,000, 20x.
    q, ep, lev, mmr, cum = 1.0, 60_000.0, 20.0, 0.005, 50.0
    wb = q * ep / lev
    expected = (wb + cum - 1 * q * ep) / (q * mmr - 1 * q)
    got = liquidation_price("binance", "long", ep, lev, mmr=mmr, notional=q * ep, cum=cum)
    assert got == pytest.approx(expected, rel=1e-12)
    assert got == pytest.approx(57_236.18, abs=0.01)
    # at the liquidation price the margin balance equals the maintenance margin
    assert wb + q * (got - ep) == pytest.approx(q * got * mmr - cum, rel=1e-9)
    short = liquidation_price("binance", "short", ep, lev, mmr=mmr, notional=q * ep, cum=cum)
    assert wb + q * (ep - short) == pytest.approx(q * short * mmr - cum, rel=1e-9)


def test_bybit_worked_example():
    # Bybit help centre, "Liquidation Price (USDT Contract)", isolated, Example 1: long 1 BTC
    # at 20,000 USDT, 50x, MMR 0.5 %: IM 400, MM 100, LP = 20,000 - (400 - 100) = 19,700.
    lp = liquidation_price("bybit", "long", 20_000.0, 50.0, mmr=0.005, notional=20_000.0)
    assert lp == pytest.approx(19_700.0)
    # the short mirror: LP = EP + (IM - MM) / q
    sp = liquidation_price("bybit", "short", 20_000.0, 50.0, mmr=0.005, notional=20_000.0)
    assert sp == pytest.approx(20_300.0)


def test_okx_definition_margin_ratio_equals_mmr_plus_fee():
    # OKX: an isolated position is liquidated when (margin + uPnL) / position value falls to
    # the maintenance margin ratio plus the taker fee rate.
    ep, lev, mmr, fee, q = 30_000.0, 10.0, 0.004, 0.0005, 2.0
    margin = q * ep / lev
    for side, s in (("long", 1), ("short", -1)):
        lp = liquidation_price("okx", side, ep, lev, mmr=mmr, notional=q * ep, taker_fee=fee)
        ratio = (margin + s * q * (lp - ep)) / (q * lp)
        assert ratio == pytest.approx(mmr + fee, rel=1e-12)
    lp = liquidation_price("okx", "long", ep, lev, mmr=mmr, notional=q * ep, taker_fee=fee)
    assert lp == pytest.approx(27_122.05, abs=0.01)


def test_hyperliquid_documented_formula():
    # Hyperliquid docs: liq_price = price - side * margin_available / position_size / (1 - l*side),
    # l = 1 / maintenance leverage; maintenance margin is half the initial margin at max leverage.
    ep, lev, max_lev, q = 100_000.0, 10.0, 40.0, 0.5
    l_ = 1 / (2 * max_lev)
    margin_available = q * ep / lev - q * ep * l_
    for side, s in (("long", 1), ("short", -1)):
        expected = ep - s * margin_available / q / (1 - l_ * s)
        got = liquidation_price(
            "hyperliquid", side, ep, lev, mmr=0.0, notional=q * ep, max_leverage=max_lev
        )
        assert got == pytest.approx(expected, rel=1e-12)
    long_lp = liquidation_price(
        "hyperliquid", "long", ep, lev, mmr=0.0, notional=q * ep, max_leverage=max_lev
    )
    assert long_lp == pytest.approx(91_139.24, abs=0.01)


def test_bundled_btc_tiers_and_selection():
    tiers = load_tiers("BTC/USDT:USDT")
    assert tiers is not None and len(tiers) == 12
    assert tiers[0] == Tier(0.0, 50_000.0, 0.004, 125.0, 0.0)
    assert tier_for(tiers, 10_000, 125).mmr == 0.004
    assert tier_for(tiers, 100_000, 50).mmr == 0.005
    # 125x is not allowed at 100k notional: moved down to the tier that allows it
    assert tier_for(tiers, 100_000, 125).max_leverage == 125
    assert load_tiers("NOPE/USDT:USDT") is None


def test_factors_respect_max_leverage_and_renormalise():
    f, w, cap = leverage_factors(
        "binance",
        (2.0, 50.0, 125.0),
        (0.2, 0.3, 0.5),
        symbol="BTC/USDT:USDT",
        position_notional=10_000,
        taker_fee=0.0005,
        max_leverage=75.0,
        tiers_file=None,
    )
    assert cap == 75.0
    assert w.tolist() == pytest.approx([0.4, 0.6, 0.0])
    assert (f[0] < 1).all() and (f[1] > 1).all()
    assert f[0, 0] == pytest.approx((1 - 1 / 2) / (1 - 0.004))


def test_tiers_file_errors_name_the_problem(tmp_path):
    bad = tmp_path / "tiers.json"
    bad.write_text("{not json")
    with pytest.raises(ConfigError, match="not valid JSON"):
        load_tiers("BTC/USDT:USDT", str(bad))
    bad.write_text('{"BTC/USDT:USDT": [{"minNotional": 0}]}')
    with pytest.raises(ConfigError, match="row 0"):
        load_tiers("BTC/USDT:USDT", str(bad))
    with pytest.raises(ConfigError, match="no file"):
        load_tiers("BTC/USDT:USDT", str(tmp_path / "missing.json"))
