"""Realized liquidations in the alert service: an event consumes the map at once, sends
"consumed" when it trades through the pocket an "armed" alert tracks (not again at the next
bar), and re-arms on the map after the event; through the real TelegramSender and the fake
Bot API on 127.0.0.1."""

from __future__ import annotations

import pandas as pd
import pytest

from liqsignal.alerts.service import AlertService
from liqsignal.data.streams import StreamEvent

from .fake_provider import T0, FakeProvider, M, alert_config, cluster

H = pd.Timedelta(hours=1)


class LiveProvider(FakeProvider):
    """FakeProvider whose map a realized liquidation consumes (as MapProvider.on_liquidation)."""

    def __init__(self) -> None:
        super().__init__()
        self.consumed: list[tuple[str, float]] = []
        self.after: dict[str, object] = {}

    def on_liquidation(self, event) -> float:
        self.consumed.append((event.side, event.price))
        c = self._armed[event.market]
        if event.side == "long" and event.price <= c.high:
            self._armed[event.market] = self.after.get("long", c)  # the pocket is gone
            return c.usd
        return 0.0


def _event(price: float, side: str = "long", minutes: int = 30) -> StreamEvent:
    ts = int((T0 + 1 * H + pd.Timedelta(minutes=minutes)).timestamp() * 1000)
    return StreamEvent("binance", M, M, side, price, 1.0, price, ts, id=f"{price}-{minutes}")


@pytest.fixture
def provider():
    return LiveProvider()


async def test_event_through_the_armed_pocket_is_consumed_at_once_and_once(
    service, provider, api, outbox
):
    provider.add_bar(armed=cluster())  # bar 1: long pocket 86,450-86,600 armed
    await service.tick()
    assert len(api.calls_to("sendPhoto")) == 2
    above = await service.handle_liquidation(_event(86_700.0, minutes=10))
    assert above.events == [] and provider.consumed == [("long", 86_700.0)]
    res = await service.handle_liquidation(_event(86_520.0, minutes=31))
    assert [e.kind for e in res.events] == ["consumed"]
    texts = [c.text for c in api.calls_to("sendMessage")]
    assert len(texts) == 2 and all("long liquidations consumed" in t for t in texts)
    assert "5.01M USD" in texts[0]
    assert outbox.counts()["sent"] == 2
    # the bar that closes later trades through the same pocket (without the event, this bar
    # would report it): no second "consumed"
    provider.add_bar(low=86_300.0, close=86_800.0, pred_long=6e6)
    bar = await service.tick()
    assert [e.kind for e in bar.events] == []
    assert len(api.calls_to("sendMessage")) == 2


async def test_event_re_arms_on_the_map_after_it(service, provider, api):
    provider.add_bar(armed=cluster())
    await service.tick()
    provider.after["long"] = cluster(low=85_100.0, high=85_250.0, usd=7e6, dist=-2.0)
    res = await service.handle_liquidation(_event(86_500.0))
    assert [e.kind for e in res.events] == ["consumed", "armed"]
    armed = res.events[1]
    assert armed.pocket is not None and armed.pocket.low == 85_100.0 and armed.pocket.usd == 7e6
    # the armed alert of the new pocket is sent now, as text (its picture waits for a bar)
    texts = [c.text for c in api.calls_to("sendMessage")]
    assert sum("long liquidations armed" in t for t in texts) == 2
    # and the next bar arming the same pocket is within its cooldown: nothing more
    provider.add_bar(armed=cluster(low=85_100.0, high=85_250.0, usd=7e6, dist=-2.0))
    assert (await service.tick()).events == []


async def test_unknown_market_and_bad_events_change_nothing(service, provider, api):
    provider.add_bar(armed=cluster())
    await service.tick()
    other = StreamEvent("binance", "ETH/USDT:USDT", "ETH/USDT:USDT", "long", 1.0, 1.0, 1.0, 1)
    assert (await service.handle_liquidation(other)).events == []
    assert (await service.handle_liquidation(_event(float("nan")))).events == []
    assert (await service.handle_liquidation(_event(86_500.0, side="sideways"))).events == []
    assert provider.consumed == []  # neither another market's nor an unusable event
    assert len(api.calls_to("sendMessage")) == 0


async def test_live_liquidations_run_the_real_ccxt_stream_into_the_service(
    make_sender, outbox, api, tmp_path
):
    """live_liquidations: the service runs the real ccxt pro Binance client against a local
    forceOrder stream; a liquidation through the armed pocket is "consumed" on Telegram before
    any new bar, and written to the liquidation store."""
    import asyncio
    import time

    from liqsignal.data.liquidations import LiquidationStore
    from liqsignal.replay.ws import LiqEvent, LiquidationStreamServer

    class OneVenue(LiveProvider):
        def __init__(self) -> None:
            FakeProvider.__init__(self, markets=("BTC",))
            self.consumed, self.after = [], {}

        def status(self, market):
            return {"binance": super().status(market)["binance"]}

    provider = OneVenue()
    provider.add_bar("BTC", armed=cluster())
    with LiquidationStreamServer("binance", ["BTC"]) as srv:
        cfg = alert_config(
            live_liquidations=True,
            ccxt_config={"binance": srv.ccxt_config()},
            datadir=str(tmp_path),
            interval_s=3600,
        )
        svc = AlertService(provider, cfg, markets=["BTC"], sender=make_sender(outbox=outbox))
        stop = asyncio.Event()
        task = asyncio.create_task(svc.run(stop, install_signals=False))
        end = time.monotonic() + 20
        while not (srv.ready() and api.calls_to("sendPhoto")) and time.monotonic() < end:
            await asyncio.sleep(0.05)
        assert srv.ready() and len(api.calls_to("sendPhoto")) == 1  # the bar's armed alert
        at = int((T0 + 1.5 * H).timestamp() * 1000)  # within the bar's tracking window
        await asyncio.to_thread(srv.publish, [LiqEvent(at, "BTC", "long", 86_520.0, 2.0)])
        while not api.calls_to("sendMessage") and time.monotonic() < end:
            await asyncio.sleep(0.05)
        stop.set()
        await asyncio.wait_for(task, 20)
    (msg,) = api.calls_to("sendMessage")
    assert "BTC</b> long liquidations consumed" in msg.params["text"]
    assert provider.consumed == [("long", 86_520.0)]
    assert LiquidationStore(tmp_path).has_data("binance", "BTC/USDT:USDT")


async def test_a_quiet_event_is_not_held_up_by_an_earlier_events_telegram_call(
    service, provider, api
):
    """The live worker detects events in arrival order while earlier alerts are being sent."""
    import asyncio

    provider.add_bar(armed=cluster())
    await service.tick()
    release = asyncio.Event()
    real_flush = service.sender.flush

    async def slow_flush():
        await release.wait()  # a Telegram call that takes long
        return await real_flush()

    service.sender.flush = slow_flush
    worker = asyncio.create_task(service._live_worker())
    service.on_liquidation(_event(86_520.0, minutes=31))  # through the pocket: alerts
    service.on_liquidation(_event(86_900.0, minutes=32))  # quiet
    for _ in range(200):
        if len(provider.consumed) == 2:
            break
        await asyncio.sleep(0.01)
    assert provider.consumed == [("long", 86_520.0), ("long", 86_900.0)]  # both, in order
    assert api.calls_to("sendMessage") == []  # the first one's alert is still on its way
    release.set()
    for _ in range(200):
        if api.calls_to("sendMessage"):
            break
        await asyncio.sleep(0.01)
    worker.cancel()
    with pytest.raises(asyncio.CancelledError):
        await worker
    texts = [c.text for c in api.calls_to("sendMessage")]
    assert texts and all("long liquidations consumed" in t for t in texts)
