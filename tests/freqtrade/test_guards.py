"""liqsignal.guards: entry refusal, leverage cap, stop, stale data; GuardConfig validation."""

from __future__ import annotations

import math
from datetime import UTC, datetime, timedelta

import numpy as np
import pytest

from liqsignal.exceptions import ConfigError
from liqsignal.guards import (
    GUARD_COLUMNS,
    GuardConfig,
    data_state,
    entry_decision,
    leverage_decision,
    max_safe_leverage,
    stop_decision,
)
from liqsignal.tiers import liquidation_price, load_tiers, tier_for

NOW = datetime(2026, 2, 1, 12, 0, tzinfo=UTC)


def make_row(price: float = 100_000.0, **over: float) -> dict[str, float]:
    """A last analysed candle: a long pocket 1.5-1.7 % below, a short pocket 2-2.2 % above."""
    row = {
        "close": price,
        "liq_long_cluster_usd": 5e6,
        "liq_long_cluster_low": price * 0.983,
        "liq_long_cluster_high": price * 0.985,
        "liq_short_cluster_usd": 4e6,
        "liq_short_cluster_low": price * 1.020,
        "liq_short_cluster_high": price * 1.022,
        "liq_long_cascade_end": price * 0.95,
        "liq_short_cascade_end": price * 1.04,
        "liq_long_armed": 0.0,
        "liq_short_armed": 0.0,
        "liq_long_armed_score": 0.0,
        "liq_short_armed_score": 0.0,
        "liq_long_total_usd": 1e8,
        "liq_short_total_usd": 1e8,
    }
    row.update(over)
    return row


def test_guard_columns_are_feature_columns():
    from liqsignal.features import FEATURE_COLUMNS

    assert set(GUARD_COLUMNS) <= set(FEATURE_COLUMNS)


@pytest.mark.parametrize(
    ("key", "value"),
    [
        ("entry_distance_pct", -1.0),
        ("entry_distance_pct", float("nan")),
        ("leverage_buffer_pct", "1"),
        ("min_leverage", 0.5),
        ("stop_mode", "panic"),
        ("on_stale", "maybe"),
        ("max_age_candles", 0),
        ("enabled", 1),
        ("position_notional", 0.0),
        ("stop_min_distance_pct", 0.0),
    ],
)
def test_config_errors_name_the_key(key, value):
    with pytest.raises(ConfigError, match=f"guards.{key}"):
        GuardConfig.from_dict({key: value})


def test_config_from_dict_unknown_key_and_ints():
    with pytest.raises(ConfigError, match=r"unknown key\(s\) \['entry_distance'\]"):
        GuardConfig.from_dict({"entry_distance": 1})
    with pytest.raises(ConfigError, match="mapping"):
        GuardConfig.from_dict(["entry_distance_pct"])  # type: ignore[arg-type]
    cfg = GuardConfig.from_dict({"entry_distance_pct": 2, "on_stale": "closed"})
    assert cfg.entry_distance_pct == 2.0 and not cfg.fail_open
    assert GuardConfig.from_dict(None) == GuardConfig()


@pytest.mark.parametrize("price", [100_000.0, 2_500.0, 0.12])
def test_entry_refuses_long_into_a_near_long_pocket_and_short_under_a_near_short_pocket(price):
    row = make_row(price)
    # long pocket's near edge is 1.5 % below price, short pocket's 2 % above
    assert not entry_decision(row, "long", price, GuardConfig(entry_distance_pct=1.6)).allowed
    assert entry_decision(row, "long", price, GuardConfig(entry_distance_pct=1.4)).allowed
    assert not entry_decision(row, "short", price, GuardConfig(entry_distance_pct=2.1)).allowed
    assert entry_decision(row, "short", price, GuardConfig(entry_distance_pct=1.9)).allowed
    refused = entry_decision(row, "long", price, GuardConfig(entry_distance_pct=1.6))
    assert "long pocket" in refused.reason and "below" in refused.reason
    assert refused.figures["distance_pct"] == pytest.approx(1.5)
    # the other side's pocket never blocks: a short pocket above does not stop a long
    far_long = make_row(price, liq_long_cluster_low=price * 0.5, liq_long_cluster_high=price * 0.6)
    assert entry_decision(far_long, "long", price, GuardConfig(entry_distance_pct=3.0)).allowed


def test_entry_uses_the_live_rate_and_the_size_floor():
    row = make_row(100_000.0)
    cfg = GuardConfig(entry_distance_pct=1.0)
    assert entry_decision(row, "long", 100_000.0, cfg).allowed  # 1.5 % away
    assert not entry_decision(row, "long", 99_300.0, cfg).allowed  # rate fell to 0.8 % away
    assert entry_decision(row, "long", 98_000.0, cfg).allowed  # below the pocket: traded through
    big = GuardConfig(entry_distance_pct=2.0, entry_min_usd=6e6)
    assert entry_decision(row, "long", 100_000.0, big).allowed  # 5M pocket is below the floor
    none = make_row(100_000.0, liq_long_cluster_usd=0.0, liq_long_cluster_low=math.nan)
    assert entry_decision(none, "long", 100_000.0, GuardConfig(entry_distance_pct=50)).allowed


def test_entry_fail_open_and_fail_closed():
    for state in ("stale", "missing"):
        d = entry_decision(None, "long", 1.0, GuardConfig(), state=state)
        assert d.allowed and "fail-open" in d.reason and state in d.reason
        d = entry_decision(None, "short", 1.0, GuardConfig(on_stale="closed"), state=state)
        assert not d.allowed and "fail-closed" in d.reason
    off = GuardConfig(on_stale="closed", entry_enabled=False)
    assert entry_decision(None, "long", 1.0, off, state="missing").allowed
    with pytest.raises(ValueError, match="side"):
        entry_decision(make_row(), "up", 1.0, GuardConfig())


def _lp(side: str, entry: float, lev: float, notional: float = 10_000.0) -> float:
    tiers = load_tiers("BTC/USDT:USDT")
    assert tiers
    t = tier_for(tiers, notional, lev)
    return liquidation_price("binance", side, entry, lev, mmr=t.mmr, notional=notional, cum=t.cum)


@pytest.mark.parametrize("side", ["long", "short"])
def test_leverage_cap_puts_own_liquidation_beyond_the_cascade_plus_buffer(side):
    rng = np.random.default_rng(7)
    cfg = GuardConfig(leverage_buffer_pct=1.0)
    for _ in range(40):
        price = float(rng.uniform(20_000, 120_000))
        dist = float(rng.uniform(0.005, 0.2))
        end = price * (1 - dist) if side == "long" else price * (1 + dist)
        row = make_row(price, **{f"liq_{side}_cascade_end": end})
        proposed = float(rng.integers(1, 126))
        d = leverage_decision(row, side, price, proposed, 125.0, cfg, symbol="BTC/USDT:USDT")
        assert 1.0 <= d.leverage <= proposed
        limit = end * 0.99 if side == "long" else end * 1.01
        assert d.figures["limit_price"] == pytest.approx(limit)
        lp = _lp(side, price, d.leverage)
        if d.leverage > 1.0:
            assert (lp <= limit) if side == "long" else (lp >= limit)
        if d.leverage < proposed:  # capped: one more x would liquidate inside the limit
            lp_next = _lp(side, price, d.leverage + 1)
            assert (lp_next > limit) if side == "long" else (lp_next < limit)
            assert "capped" in d.reason


def test_leverage_never_above_proposed_or_exchange_max_and_min_one():
    cfg = GuardConfig()
    # the cascade ends 1 % below price: 20x (liquidation about 4.6 % below) is already beyond
    shallow = make_row(100_000.0, liq_long_cascade_end=99_000.0)
    assert leverage_decision(shallow, "long", 100_000.0, 20, 125, cfg).leverage == 20
    assert leverage_decision(shallow, "long", 100_000.0, 200, 30, cfg).leverage == 30
    # a cascade reaching 40 % down leaves only about 2x; 60 % down not even 1x: minimum 1
    deep = make_row(100_000.0, liq_long_cascade_end=60_000.0)
    assert leverage_decision(deep, "long", 100_000.0, 20, 125, cfg).leverage == 2.0
    deeper = make_row(100_000.0, liq_long_cascade_end=40_000.0)
    assert leverage_decision(deeper, "long", 100_000.0, 20, 125, cfg).leverage == 1.0
    floor = GuardConfig(min_leverage=3.0)
    assert leverage_decision(deeper, "long", 100_000.0, 20, 125, floor).leverage == 3.0
    assert leverage_decision(deeper, "long", 100_000.0, 2, 125, floor).leverage == 2.0
    assert leverage_decision(deeper, "long", 100_000.0, float("nan"), 125, cfg).leverage == 1.0
    gone = make_row(100_000.0, liq_long_cascade_end=101_000.0)  # price already below it
    assert leverage_decision(gone, "long", 100_000.0, 20, 125, cfg).leverage == 20
    nan = make_row(100_000.0, liq_short_cascade_end=math.nan)  # no cascade: no cap
    assert leverage_decision(nan, "short", 100_000.0, 20, 125, cfg).leverage == 20


def test_leverage_stale_fail_open_keeps_proposed_fail_closed_gives_minimum():
    d = leverage_decision(None, "long", 1.0, 10, 125, GuardConfig(), state="stale")
    assert d.leverage == 10 and "fail-open" in d.reason
    d = leverage_decision(None, "long", 1.0, 10, 125, GuardConfig(on_stale="closed"), state="stale")
    assert d.leverage == 1.0 and "fail-closed" in d.reason


def test_max_safe_leverage_is_monotone_in_the_limit():
    levs = [max_safe_leverage("long", 100_000.0, 100_000.0 * (1 - d)) for d in (0.01, 0.05, 0.2)]
    assert levs[0] > levs[1] > levs[2] >= 1.0  # a farther limit allows less leverage
    assert max_safe_leverage("short", 100.0, 100.5, upper=50) == 50.0  # 50x: about 1.5 % up
    assert max_safe_leverage("short", 100.0, 1e9, upper=50) == 1.0  # unreachable: minimum


def test_stop_tightens_beyond_an_armed_pocket_on_the_positions_side():
    price = 100_000.0
    row = make_row(price, liq_long_armed=1.0, liq_long_armed_score=0.8)
    d = stop_decision(row, "long", price, GuardConfig(stop_buffer_pct=0.2))
    assert d.action == "tighten"
    assert d.stop_rate == pytest.approx(price * 0.985 * 1.002)
    ratio = d.stoploss_ratio(price, "long")
    assert ratio is not None and ratio == pytest.approx(-(1 - 0.985 * 1.002))
    # Freqtrade divides custom_stoploss by the leverage: the stop price must come out the same
    for lev in (1.0, 5.0, 10.0):
        r = d.stoploss_ratio(price, "long", lev)
        assert r is not None and price * (1 - abs(r / lev)) == pytest.approx(d.stop_rate)
    # a short position does not care about the armed long pocket below
    assert stop_decision(row, "short", price, GuardConfig()).action == "keep"
    srow = make_row(price, liq_short_armed=1.0, liq_short_armed_score=0.5)
    s = stop_decision(srow, "short", price, GuardConfig(stop_buffer_pct=0.2))
    assert s.action == "tighten" and s.stop_rate == pytest.approx(price * 1.020 * 0.998)
    assert s.stoploss_ratio(price, "short") == pytest.approx(-(1.020 * 0.998 - 1))
    # pocket right at price: the stop is never closer than stop_min_distance_pct
    close = make_row(price, liq_long_armed=1.0, liq_long_cluster_high=price * 0.9999)
    c = stop_decision(close, "long", price, GuardConfig(stop_min_distance_pct=0.1))
    assert c.stop_rate == pytest.approx(price * 0.999)
    # score below the threshold, or stop mode "exit"
    assert stop_decision(row, "long", price, GuardConfig(stop_min_score=1.0)).action == "keep"
    e = stop_decision(row, "long", price, GuardConfig(stop_mode="exit"))
    assert e.action == "exit" and e.stop_rate == pytest.approx(price * 0.999)


def test_stop_keeps_the_strategy_stop_on_bad_data():
    for cfg in (GuardConfig(), GuardConfig(on_stale="closed")):
        d = stop_decision(None, "long", 1.0, cfg, state="missing")
        assert d.action == "keep" and d.stoploss_ratio(1.0, "long") is None


def test_data_state():
    row = make_row()
    tf = 3600.0
    candle = NOW - timedelta(hours=1)  # closed right now
    cfg = GuardConfig(max_age_candles=2)
    assert data_state(row, candle, NOW, tf, cfg) == "ok"
    assert data_state(row, candle, NOW + timedelta(hours=2), tf, cfg) == "ok"
    assert data_state(row, candle, NOW + timedelta(hours=2, seconds=1), tf, cfg) == "stale"
    assert data_state(None, candle, NOW, tf, cfg) == "missing"
    assert data_state(row, None, NOW, tf, cfg) == "missing"
    nan = make_row(liq_long_total_usd=math.nan)
    assert data_state(nan, candle, NOW, tf, cfg) == "missing"
    partial = {k: v for k, v in row.items() if k != "liq_short_armed"}
    assert data_state(partial, candle, NOW, tf, cfg) == "missing"


def test_master_switch_turns_every_guard_off():
    off = GuardConfig(enabled=False)
    near = make_row(100_000.0, liq_long_cascade_end=99_900.0, liq_long_armed=1.0)
    assert entry_decision(near, "long", 100_000.0, off).allowed
    assert leverage_decision(near, "long", 100_000.0, 20, 125, off).leverage == 20
    assert stop_decision(near, "long", 100_000.0, off).action == "keep"
