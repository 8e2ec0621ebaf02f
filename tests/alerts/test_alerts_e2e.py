"""End to end: a real cascade from the bundled data, replayed hour by hour through the local
Binance replay, the real MapProvider (ccxt), the service and the fake Bot API.

The cascade: BTC 2025-12-04 14:00 UTC (1h bar). CoinGlass (liqsignal/resources) records 3.9M USD
of long liquidations in that bar (0.73M in the bar before, at most 1.3M in the eight before), price
fell from 92,516 to a low of 91,801 (-0.8 %; 91,762 on Binance). With default engine settings the
service arms a long pocket at 92,600 at the close of the 09:00 bar and escalates the pocket
91,750-92,000 (40M USD) at the close of the 10:00 bar; the cascade bar trades into that pocket. The
alerts must reach Telegram before the cascade bar is over, built only from bars that closed before
it; the consumed alert for the pocket follows at its close.
(The first version's rules armed 86,450-86,600 before the 2026-01-29 15:00 cascade; the
turnover-driven map with local-contrast pockets has no pocket near price before that one.)
"""

from __future__ import annotations

from pathlib import Path

import pandas as pd
import pytest

from liqsignal.alerts.service import AlertService
from liqsignal.config import AlertConfig
from liqsignal.data.exchanges import RetryPolicy
from liqsignal.data.provider import MapProvider, MarketSpec
from liqsignal.replay.server import ManualClock, ReplayExchange

from .conftest import CHAT_A

ROOT = Path(__file__).resolve().parents[2]
DATADIR = ROOT / "user_data" / "data" / "binance"
CASCADE_BAR = pd.Timestamp("2025-12-04 14:00", tz="UTC")
HOUR = pd.Timedelta(hours=1)


@pytest.fixture
def replay():
    rx = ReplayExchange(DATADIR, venues=("binance",)).start()
    try:
        yield rx
    finally:
        rx.stop()


async def test_armed_alert_arrives_before_the_cascade_bar_closes(
    replay, make_sender, outbox, api, tmp_path
):
    clock = ManualClock(CASCADE_BAR - 5 * HOUR + pd.Timedelta(seconds=30))  # 09:00:30
    replay.clock = clock
    cfg = replay.ccxt_config("binance")
    cfg.update({"rateLimit": 1, "timeout": 5000})
    provider = MapProvider(
        [MarketSpec("BTC", ("binance",))],
        datadir=tmp_path / "data",
        ccxt_config={"binance": cfg},
        history_bars=300,
        clock=clock,
        retry=RetryPolicy(attempts=2, base_delay=0.01, max_delay=0.02, max_retry_after=0.1),
        history_limits=False,
    )
    service = AlertService(
        provider,
        AlertConfig(chat_ids=(CHAT_A,), picture_bars=48),  # default event rules
        markets=["BTC"],
        sender=make_sender(chat_ids=[CHAT_A], outbox=outbox),
        # the map's own armed flag: the cascade forecast (on by default) rewrites it from its
        # probability; alerts on the forecast are tested in tests/test_forecast.py
        freqtrade_config={"liqsignal": {"forecast": {"enabled": False}}},
    )
    sent_at: dict[str, pd.Timestamp] = {}
    events: list[tuple[pd.Timestamp, str, str]] = []
    try:
        for _ in range(7):  # 09:00:30 .. 20:00:30
            res = await service.tick()
            assert res.refresh_error is None
            for ev in res.events:
                events.append((clock.t, ev.kind, ev.key))
            for call in api.calls_to("sendPhoto") + api.calls_to("sendMessage"):
                sent_at.setdefault(call.caption or call.text or "", clock.t)
            clock.t += HOUR
    finally:
        await service.aclose()
        await provider.aclose()

    armed = [(t, k) for t, kind, k in events if kind == "armed"]
    assert armed, f"no armed event; events: {events}"
    t_armed, key = armed[0]
    # built from the 09:00 bar (closed 10:00), sent at 10:00:30: long before the cascade bar
    assert key.endswith("2025-12-04T09:00:00Z"), key
    assert t_armed < CASCADE_BAR
    # the pocket the cascade bar consumed was alerted (escalated to 40M USD) at the 10:00 close
    consumed_at_cascade = [
        k for t, kind, k in events if kind == "consumed" and k.endswith("2025-12-04T14:00:00Z")
    ]
    assert len(consumed_at_cascade) == 1, events
    band = consumed_at_cascade[0].split("|")[3]
    alerted = [
        (t, k) for t, kind, k in events if kind in ("armed", "escalated") and f"|{band}|" in k
    ]
    assert alerted and alerted[0][0] < CASCADE_BAR + HOUR, (band, events)
    photos = api.calls_to("sendPhoto")
    assert len(photos) == 2 and {p.chat_id for p in photos} == {str(CHAT_A)}
    cap = photos[0].caption
    assert "BTC</b> long liquidations armed" in cap and "92,600" in cap
    assert "binance 100%" in cap and "OI " in cap and "funding" in cap
    assert "long liquidations escalated" in photos[1].caption
    assert "91,750–92,000" in photos[1].caption
    # the cascade then consumes it, reported at the close of the cascade bar
    texts = [c.text for c in api.calls_to("sendMessage")]
    assert any("long liquidations consumed" in t and "91,762" in t for t in texts), texts
    assert outbox.counts()["sent"] == len(events) and outbox.counts()["pending"] == 0
