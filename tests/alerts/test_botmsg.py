"""Alerts through the bot's own Telegram: the alert service hands armed and consumed alerts to a
real Freqtrade DataProvider's ``send_msg`` (dry-run mode), as plain text, once each."""

from __future__ import annotations

import logging

import pytest
from freqtrade.data.dataprovider import DataProvider
from freqtrade.enums import RunMode

from liqsignal.alerts.botmsg import BotMessageSender, bot_sender_for, html_to_text
from liqsignal.alerts.service import AlertService

from .fake_provider import FakeProvider, M, alert_config, cluster


def _dp(mode: RunMode = RunMode.DRY_RUN) -> DataProvider:
    return DataProvider({"runmode": mode, "timeframe": "1h"}, None)


def test_html_becomes_plain_text():
    text = '<b>BTC</b> long &amp; short<br>see <a href="https://x.y/z">map</a> · <i>−1.3%</i>'
    assert html_to_text(text) == "BTC long & short\nsee map (https://x.y/z) · −1.3%"


def test_sender_only_when_the_bots_telegram_is_on(caplog):
    dp = _dp()
    assert bot_sender_for({"telegram": {"enabled": False}}, dp) is None
    assert bot_sender_for({}, dp) is None
    on = {"telegram": {"enabled": True, "allow_custom_messages": True}}
    assert isinstance(bot_sender_for(on, dp), BotMessageSender)
    with caplog.at_level(logging.WARNING):
        assert bot_sender_for({"telegram": {"enabled": True}}, dp) is not None
    assert "allow_custom_messages is false" in caplog.text
    with pytest.raises(TypeError, match="DataProvider"):
        BotMessageSender(object())


async def test_armed_and_consumed_reach_dp_send_msg_once():
    dp = _dp()
    provider = FakeProvider()
    svc = AlertService(
        provider, alert_config(pictures=False), markets=[M], sender=BotMessageSender(dp)
    )
    try:
        provider.add_bar(armed=cluster())
        res = await svc.tick()
        assert [e.kind for e in res.events] == ["armed"]
        queued = list(dp._msg_queue)
        assert len(queued) == 1
        msg = queued[0]
        assert "BTC/USDT:USDT long liquidations armed" in msg and "86,450–86,600" in msg
        assert "<b>" not in msg and "&amp;" not in msg
        await svc.tick()  # no new bar: nothing more
        provider.add_bar(low=84_335.0, close=84_898.0, high=87_000.0, pred_long=33.8e6, flush=1)
        res = await svc.tick()
        assert [e.kind for e in res.events] == ["consumed"]
        queued = list(dp._msg_queue)
        assert len(queued) == 2 and "long liquidations consumed" in queued[1]
    finally:
        await svc.aclose()


async def test_backtests_send_nothing():
    dp = _dp(RunMode.BACKTEST)
    provider = FakeProvider()
    svc = AlertService(
        provider, alert_config(pictures=False), markets=[M], sender=BotMessageSender(dp)
    )
    try:
        provider.add_bar(armed=cluster())
        await svc.tick()
        assert list(dp._msg_queue) == []  # Freqtrade's DataProvider sends only dry/live
    finally:
        await svc.aclose()
