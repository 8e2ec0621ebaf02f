"""End to end: a real cascade from the bundled data, replayed hour by hour through the local
Binance replay, the real MapProvider (ccxt), the service and the fake Bot API.

The cascade: BTC 2026-01-29 15:00 UTC (1h bar). CoinGlass (liqsignal/resources) records 69.8M USD
of long liquidations in that bar (13.4M in the bar before), price fell from 86,979 to a low of
84,335 (-3.0 %). With default engine settings the model arms the long pocket 86,450-86,600 at the
close of the 14:00 bar. The armed alert must reach Telegram before the cascade bar is over, built
only from bars that closed before it; the consumed alert follows at its close. (The 14:00 bar is
already a smaller flush, 13.4M USD realized, reported as consumed in the same round.)
"""

from __future__ import annotations

from pathlib import Path

import pandas as pd
import pytest

from liqsignal.alerts.service import AlertConfig, AlertService
from liqsignal.data.exchanges import RetryPolicy
from liqsignal.data.provider import MapProvider, MarketSpec
from liqsignal.data.replay.server import ManualClock, ReplayExchange

from .conftest import CHAT_A

ROOT = Path(__file__).resolve().parents[2]
DATADIR = ROOT / "user_data" / "data" / "binance"
CASCADE_BAR = pd.Timestamp("2026-01-29 15:00", tz="UTC")
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
    clock = ManualClock(CASCADE_BAR - 5 * HOUR + pd.Timedelta(seconds=30))  # 10:00:30
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
    )
    sent_at: dict[str, pd.Timestamp] = {}
    events: list[tuple[pd.Timestamp, str, str]] = []
    try:
        for _ in range(7):  # 10:00:30 .. 16:00:30
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
    # built from the 14:00 bar (closed 15:00), sent at 15:00:30: before the cascade bar closes
    assert key.endswith("2026-01-29T14:00:00Z"), key
    assert t_armed < CASCADE_BAR + HOUR
    photos = api.calls_to("sendPhoto")
    assert len(photos) == 1 and photos[0].chat_id == str(CHAT_A)
    cap = photos[0].caption
    assert "BTC</b> long liquidations armed" in cap and "86,450–86,600" in cap
    assert "binance 100%" in cap and "OI " in cap and "funding" in cap
    # the cascade then consumes it, reported at the close of the cascade bar
    # (the 14:00 bar is itself a smaller flush: 13.4M USD realized; reported with the arming)
    consumed = [k for t, kind, k in events if kind == "consumed"]
    assert [k[-20:] for k in consumed] == ["2026-01-29T14:00:00Z", "2026-01-29T15:00:00Z"]
    texts = [c.text for c in api.calls_to("sendMessage")]
    assert any("long liquidations consumed" in t and "84,335" in t for t in texts), texts
    assert outbox.counts()["sent"] == len(events) and outbox.counts()["pending"] == 0
