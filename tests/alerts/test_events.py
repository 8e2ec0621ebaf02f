"""Event detection: armed, escalated, consumed with cooldowns per market, side and band;
stale and recovered once; cooldowns restored from outbox keys."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from liqsignal.alerts.events import (
    BarView,
    EventDetector,
    EventRules,
    FeedState,
    Pocket,
    parse_event_key,
)
from liqsignal.exceptions import ConfigError

T0 = datetime(2026, 1, 29, 10, tzinfo=UTC)
H = timedelta(hours=1)
M = "BTC/USDT:USDT"


def pocket(price=86_500.0, usd=5e6, depth=1, side="long", dist=-0.5) -> Pocket:
    return Pocket(side, price - 75, price + 75, price, usd, dist, depth, usd * depth, {"b": 1.0})


def bar(i, *, armed=None, low=86_900.0, high=87_100.0, price=87_000.0, cons=0.0, flush=0):
    return BarView(
        M,
        T0 + i * H,
        price,
        low,
        high,
        armed={"long": armed} if armed else {},
        consumed_usd={"long": cons, "short": 0.0},
        flush=flush,
    )


def test_armed_once_then_cooldown_then_again():
    det = EventDetector(EventRules(cooldown_s=3 * 3600))
    assert [e.kind for e in det.observe(bar(0, armed=pocket()))] == ["armed"]
    # hovering at the threshold: armed, not armed, armed again within the cooldown -> quiet
    assert det.observe(bar(1)) == []
    assert det.observe(bar(2, armed=pocket(86_520))) == []
    # the same bar seen again (refresh without a new bar) raises nothing
    assert det.observe(bar(2, armed=pocket())) == []
    evs = det.observe(bar(3, armed=pocket()))
    assert [e.kind for e in evs] == ["armed"]
    assert evs[0].key.startswith(f"armed|{M}|long|b")


def test_other_band_and_other_side_are_independent():
    det = EventDetector(EventRules(band_pct=0.5))
    det.observe(bar(0, armed=pocket(86_500)))
    far = pocket(84_000)  # many bands away
    assert [e.kind for e in det.observe(bar(1, armed=far))] == ["armed"]
    short = BarView(
        M, T0 + 2 * H, 87_000, 86_900, 87_100, armed={"short": pocket(88_000, side="short")}
    )
    evs = det.observe(short)
    assert [(e.kind, e.side) for e in evs] == [("armed", "short")]


def test_escalation_on_growth_or_depth_only():
    det = EventDetector(EventRules(escalate_usd_ratio=1.5, escalate_depth_step=2))
    det.observe(bar(0, armed=pocket(usd=5e6)))
    assert det.observe(bar(1, armed=pocket(usd=7e6))) == []  # +40 %: not a step
    evs = det.observe(bar(2, armed=pocket(usd=8e6)))  # +60 % over the last alert
    assert [e.kind for e in evs] == ["escalated"]
    assert det.observe(bar(3, armed=pocket(usd=9e6))) == []  # measured from 8M now
    assert [e.kind for e in det.observe(bar(4, armed=pocket(usd=9e6, depth=3)))] == ["escalated"]


def test_rules_filter_small_and_far_pockets():
    det = EventDetector(EventRules(min_usd=1e6, max_distance_pct=1.0))
    assert det.observe(bar(0, armed=pocket(usd=5e5))) == []
    assert det.observe(bar(1, armed=pocket(dist=-1.4))) == []
    assert len(det.observe(bar(2, armed=pocket()))) == 1


def test_consumed_when_price_trades_through_alerted_pocket():
    det = EventDetector()
    det.observe(bar(0, armed=pocket(86_500), price=87_000))
    evs = det.observe(bar(1, low=84_300, price=84_900, cons=33.8e6))
    assert [e.kind for e in evs] == ["consumed"]
    ev = evs[0]
    assert ev.consumed_usd == pytest.approx(33.8e6)
    assert ev.price_before == 87_000 and ev.price_extreme == 84_300
    assert ev.armed_at == T0 and ev.pocket is not None
    # no second consumed for the same pocket
    assert det.observe(bar(2, low=84_000, cons=5e6)) == []


def test_flush_without_alerted_pocket_is_reported_with_cooldown():
    det = EventDetector(EventRules(consumed_min_usd=1e6))
    assert det.observe(bar(0, cons=5e5, flush=1)) == []  # under the floor
    evs = det.observe(bar(1, low=85_000, cons=2e7, flush=1))
    assert [e.kind for e in evs] == ["consumed"] and evs[0].pocket is None
    assert det.observe(bar(2, low=85_010, cons=2e7, flush=1)) == []  # same band, cooldown


def test_stale_once_and_recovered_once():
    det = EventDetector()
    now = T0
    down = FeedState("bybit", True, since=T0, error="timeout")
    up = FeedState("bybit", False)
    kinds = []
    for i in range(5):
        kinds += [
            e.kind for e in det.observe_feeds(M, [down, FeedState("binance", False)], now + i * H)
        ]
    assert kinds == ["stale"]
    assert det.stale_exchanges(M) == ["bybit"]
    evs = det.observe_feeds(M, [up], now + 6 * H)
    assert [e.kind for e in evs] == ["recovered"] and evs[0].stale_since == T0
    assert det.observe_feeds(M, [up], now + 7 * H) == []


def test_restore_from_keys_keeps_cooldowns_and_stale_state():
    det = EventDetector()
    armed = det.observe(bar(0, armed=pocket()))[0]
    stale = det.observe_feeds(M, [FeedState("okx", True, since=T0)], T0)[0]
    assert parse_event_key(armed.key)[:3] == ("armed", M, "long")
    fresh = EventDetector()
    assert fresh.restore([armed.key, stale.key, "not|an|event"]) == 2
    assert fresh.observe(bar(1, armed=pocket())) == []
    assert fresh.observe_feeds(M, [FeedState("okx", True, since=T0)], T0 + H) == []
    assert [e.kind for e in fresh.observe_feeds(M, [FeedState("okx", False)], T0 + H)] == [
        "recovered"
    ]


@pytest.mark.parametrize(
    ("kwargs", "name"),
    [
        ({"cooldown_s": -1}, "cooldown_s"),
        ({"band_pct": 0}, "band_pct"),
        ({"escalate_usd_ratio": 1.0}, "escalate_usd_ratio"),
        ({"escalate_depth_step": 0}, "escalate_depth_step"),
        ({"max_distance_pct": -2}, "max_distance_pct"),
    ],
)
def test_rules_errors_name_the_key(kwargs, name):
    with pytest.raises(ConfigError, match=name):
        EventRules(**kwargs)
