"""The guards never raise and follow ``on_stale`` for every kind of missing, stale or malformed
data: a property test drives the pure functions and the mixin's three callbacks with random
rows, dates and arguments (NaN, inf, zero, negative, strings, None, NaT, naive dates)."""

from __future__ import annotations

import math
from datetime import UTC, datetime, timedelta
from typing import Any

import numpy as np
import pandas as pd
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from liqsignal import guards
from liqsignal.freqtrade import LiqGuardMixin

PAIR = "BTC/USDT:USDT"
NOW = datetime(2026, 2, 1, 12, 0, tzinfo=UTC)
PRICE = 50_000.0

ODD = [math.nan, math.inf, -math.inf, 0.0, -1.0, 1e300, -1e300, 1e-300, None, "x", True]


def good_row() -> dict[str, Any]:
    p = PRICE
    return {
        "liq_long_cluster_usd": 5e6,
        "liq_long_cluster_low": p * 0.983,
        "liq_long_cluster_high": p * 0.985,
        "liq_short_cluster_usd": 4e6,
        "liq_short_cluster_low": p * 1.020,
        "liq_short_cluster_high": p * 1.022,
        "liq_long_cascade_end": p * 0.95,
        "liq_short_cascade_end": p * 1.04,
        "liq_long_cascade_depth": 2.0,
        "liq_short_cascade_depth": 2.0,
        "liq_long_armed": 1.0,
        "liq_short_armed": 1.0,
        "liq_long_armed_score": 0.5,
        "liq_short_armed_score": 0.5,
        "liq_long_total_usd": 1e8,
        "liq_short_total_usd": 1e8,
        "liq_long_cascade_prob": 0.3,
        "liq_short_cascade_prob": 0.3,
    }


odd_values = st.sampled_from(ODD) | st.floats(allow_nan=True, allow_infinity=True)
rates = st.sampled_from([PRICE, PRICE * 0.99, *ODD]) | st.floats()
leverages = st.sampled_from([1, 3, 10.0, 50, 125, *ODD])
dates = st.sampled_from(
    [
        NOW - timedelta(hours=2),  # fresh (closed one hour ago)
        NOW - timedelta(days=30),  # stale
        (NOW - timedelta(hours=2)).replace(tzinfo=None),  # naive: read as UTC
        NOW + timedelta(days=3650),  # from the future
        pd.NaT,
        None,
        "2026-02-01",
        datetime(1, 1, 1, tzinfo=UTC),
        datetime(9999, 12, 31, tzinfo=UTC),
    ]
)


@st.composite
def rows(draw):
    kind = draw(st.sampled_from(["good", "damaged", "none", "empty", "not_a_mapping"]))
    if kind == "none":
        return None
    if kind == "empty":
        return {}
    if kind == "not_a_mapping":
        return draw(st.sampled_from([5, "row", [1, 2], object()]))
    row = good_row()
    if kind == "damaged":
        for key in draw(st.lists(st.sampled_from(sorted(row)), max_size=6)):
            if draw(st.booleans()):
                row[key] = draw(odd_values)
            else:
                row.pop(key, None)
    return row


configs = st.builds(
    guards.GuardConfig,
    on_stale=st.sampled_from(["open", "closed"]),
    stop_mode=st.sampled_from(["tighten", "exit"]),
    entry_max_prob=st.sampled_from([None, 0.2]),
    leverage_prob_budget=st.sampled_from([None, 0.5]),
)


def _usable(x: Any) -> bool:
    try:
        v = float(x)
    except Exception:
        return False
    return math.isfinite(v) and v > 0


@settings(max_examples=400, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    row=rows(),
    date=dates,
    now=st.sampled_from([NOW, None, pd.NaT, NOW.replace(tzinfo=None)]),
    tf=st.sampled_from([3600, 0, -60, math.nan, math.inf]),
    side=st.sampled_from(["long", "short"]),
    rate=rates,
    proposed=leverages,
    max_lev=leverages,
    cfg=configs,
)
def test_pure_guards_never_raise_and_follow_on_stale(
    row, date, now, tf, side, rate, proposed, max_lev, cfg
):
    state = guards.data_state(row, date, now, tf, cfg)
    assert state in ("ok", "missing", "stale")
    if row is None or date is None or date is pd.NaT or not isinstance(date, datetime):
        assert state == "missing"
    fresh_args = isinstance(date, datetime) and date is not pd.NaT and now is NOW and tf == 3600
    if fresh_args and date.replace(tzinfo=UTC) < NOW - timedelta(days=1) and state != "missing":
        assert state == "stale"
    e = guards.entry_decision(row, side, rate, cfg, state=state)
    lv = guards.leverage_decision(row, side, rate, proposed, max_lev, cfg, state=state)
    sd = guards.stop_decision(row, side, rate, cfg, state=state)
    assert isinstance(e.allowed, bool)
    assert isinstance(lv.leverage, float) and math.isfinite(lv.leverage)
    assert 1.0 <= lv.leverage <= 1000.0
    ratio = sd.stoploss_ratio(rate, side, proposed)
    assert ratio is None or (math.isfinite(ratio) and ratio < 0)
    if state != "ok" or not _usable(rate):
        # no usable data: on_stale decides, stops keep the strategy's own
        assert e.allowed is cfg.fail_open
        assert sd.action == "keep"
        if not cfg.fail_open:
            assert lv.leverage == 1.0


class FakeDP:
    def __init__(self, frame: Any, fail: bool = False) -> None:
        self.frame = frame
        self.fail = fail

    def get_analyzed_dataframe(self, pair: str, timeframe: str) -> tuple[Any, datetime]:
        if self.fail:
            raise RuntimeError("dataprovider broke")
        return self.frame, NOW

    def runmode(self) -> Any:  # pragma: no cover - not asked for by these callbacks
        return None


class Strat(LiqGuardMixin):
    timeframe = "1h"

    def __init__(self, dp: FakeDP, config: Any) -> None:
        self.dp = dp
        self.config = config


class Trade:
    def __init__(self, is_short: Any, leverage: Any, open_date: Any) -> None:
        self.is_short = is_short
        self.leverage = leverage
        self.open_date_utc = open_date


def _frame(row: Any, date: Any) -> Any:
    if not isinstance(row, dict):
        return row if isinstance(row, pd.DataFrame) else pd.DataFrame()
    data = {"date": [date]} | {k: [v] for k, v in row.items()}
    try:
        return pd.DataFrame(data)
    except Exception:
        return pd.DataFrame()


bad_configs = st.sampled_from(
    [
        {"exchange": {"name": "binance"}},
        {"exchange": {"name": "binance"}, "liqsignal": {"guards": {"on_stale": "closed"}}},
        {"exchange": "binance", "liqsignal": {"guards": {"on_stale": "closed"}}},
        {"exchange": None},
        {"liqsignal": {"engine": ["step", 50]}},
        {"liqsignal": {"engine": "step=50"}},
        {"liqsignal": {"guards": {"on_stale": "sometimes"}}},
        {"liqsignal": "x"},
        None,
        5,
    ]
)


@settings(max_examples=250, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    row=rows(),
    date=dates,
    now=st.sampled_from([NOW, None, pd.NaT, NOW.replace(tzinfo=None), "now"]),
    side=st.sampled_from(["long", "short", "LONG", "", None, 3]),
    rate=rates,
    proposed=leverages,
    max_lev=leverages,
    config=bad_configs,
    fail=st.booleans(),
    trade_short=st.sampled_from([True, False, None, "yes"]),
)
def test_mixin_callbacks_never_raise_into_the_bot(
    row, date, now, side, rate, proposed, max_lev, config, fail, trade_short
):
    s = Strat(FakeDP(_frame(row, date), fail=fail), config)
    allowed = s.liq_confirm_trade_entry(PAIR, rate, side, now)
    lev = s.liq_leverage(PAIR, now, rate, proposed, max_lev, side)
    stop = s.liq_custom_stoploss(PAIR, Trade(trade_short, proposed, now), now, rate)
    assert isinstance(allowed, bool)
    assert isinstance(lev, float) and math.isfinite(lev) and 1.0 <= lev <= 1000.0
    assert stop is None or (isinstance(stop, float) and math.isfinite(stop) and stop < 0)
    closed = isinstance(config, dict) and "closed" in str(config.get("liqsignal"))
    missing = (
        fail or not isinstance(row, dict) or not _usable(rate) or not isinstance(date, datetime)
    )
    # now=None is the callbacks' default: no time given, so the age is not checked (a value
    # that is not a time, or NaT, is an unknown age: stale)
    bad_now = now is not None and (not isinstance(now, datetime) or now is pd.NaT)
    missing = missing or date is pd.NaT or bad_now
    if missing:
        assert allowed is (not closed)
        assert stop is None
        if closed:
            assert lev == 1.0


def test_a_nat_candle_is_missing_not_fresh_and_closed_refuses():
    cfg = guards.GuardConfig(on_stale="closed")
    assert guards.data_state(good_row(), pd.NaT, NOW, 3600, cfg) == "missing"
    s = Strat(FakeDP(_frame(good_row(), pd.NaT)), {"liqsignal": {"guards": {"on_stale": "closed"}}})
    assert s.liq_confirm_trade_entry(PAIR, PRICE, "long", NOW + timedelta(days=30)) is False
    assert s.liq_leverage(PAIR, NOW, PRICE, 10, 125, "long") == 1.0


def test_leverage_with_no_proposed_leverage_answers_instead_of_raising():
    s = Strat(FakeDP(_frame(good_row(), NOW - timedelta(hours=2))), {"exchange": {"name": "x"}})
    assert s.liq_leverage(PAIR, NOW, PRICE, None, 125, "long") == 1.0
    assert s.liq_leverage(PAIR, NOW, PRICE, 10, None, "long") == 1.0
    assert 1.0 <= s.liq_leverage(PAIR, NOW, PRICE, 10, 125, "long") <= 10.0


def test_guard_columns_in_good_row():
    assert set(guards.GUARD_COLUMNS) <= set(good_row())
    assert np.isfinite(list(good_row().values())).all()
