"""AlertService against the fake Bot API on 127.0.0.1: the real sendPhoto/sendMessage requests,
cooldowns, consumed and stale notices, faults, restart from the outbox, commands, the scheduler
(signals, no overlap) and the background thread; AlertConfig errors."""

from __future__ import annotations

import asyncio
import os
import signal
import threading
import time

import pytest

from liqsignal.alerts.outbox import Outbox
from liqsignal.alerts.service import AlertService
from liqsignal.alerts.telegram import TelegramSender
from liqsignal.config import alert_settings
from liqsignal.exceptions import ConfigError

from .conftest import CHAT_A, CHAT_B, FAST, TOKEN
from .fake_botapi import Fault
from .fake_provider import M, alert_config, cluster

PNG = b"\x89PNG\r\n\x1a\n"


async def test_armed_alert_is_one_photo_per_chat_with_the_whole_story(
    service, provider, api, outbox
):
    provider.add_bar(armed=cluster())
    res = await service.tick()
    assert res.refreshed and [e.kind for e in res.events] == ["armed"]
    photos = api.calls_to("sendPhoto")
    assert sorted(c.chat_id for c in photos) == [str(CHAT_A), str(CHAT_B)]
    cap = photos[0].caption
    for part in (
        "BTC/USDT:USDT</b> long liquidations armed",
        "86,450–86,600",
        "5.01M USD",
        "−0.5% from price 87,000",
        "Cascade: 3 pockets in a row, 12.5M USD",
        "binance 60% · bybit 40%",
        "OI 9.19B USD",
        "funding +0.0059%",
    ):
        assert part in cap, part
    assert photos[0].photo.startswith(PNG) and len(photos[0].photo) > 5000
    assert api.calls_to("sendMessage") == []
    assert outbox.counts() == {"pending": 0, "sent": 1, "failed": 0}
    # a refresh without a new bar, and the same pocket next bar: nothing more is sent
    await service.tick()
    provider.add_bar(armed=cluster(usd=5.5e6))
    await service.tick()
    assert len(api.calls_to("sendPhoto")) == 2


async def test_hovering_pocket_does_not_spam_but_growth_escalates(service, provider, api):
    for armed in (True, False, True, False, True):
        provider.add_bar(armed=cluster() if armed else None)
        await service.tick()
    assert len(api.calls_to("sendPhoto")) == 2  # one alert, two chats
    provider.add_bar(armed=cluster(usd=9e6))
    res = await service.tick()
    assert [e.kind for e in res.events] == ["escalated"]
    caps = [c.caption for c in api.calls_to("sendPhoto")[2:]]
    assert len(caps) == 2 and all("liquidations escalated" in c and "9.00M USD" in c for c in caps)


async def test_consumed_after_price_trades_through(service, provider, api):
    provider.add_bar(armed=cluster())
    await service.tick()
    provider.add_bar(low=84_335.0, close=84_898.0, high=87_000.0, pred_long=33.8e6, flush=1)
    res = await service.tick()
    assert [e.kind for e in res.events] == ["consumed"]
    texts = [c.text for c in api.calls_to("sendMessage")]
    assert len(texts) == 2
    assert "long liquidations consumed" in texts[0] and "~33.8M USD flushed" in texts[0]
    assert "87,000 → 84,335 (−3.1%) in 60 min" in texts[0]


async def test_stale_exchange_gives_one_notice_and_one_recovery(service, provider, api):
    provider.stale[M].add("bybit")
    for _ in range(4):
        provider.add_bar()
        await service.tick()
    texts = [c.text for c in api.calls_to("sendMessage")]
    assert len(texts) == 2 and all("Data stale: bybit BTC/USDT:USDT" in t for t in texts)
    assert "bybit: timeout" in texts[0]
    provider.stale[M].clear()
    provider.add_bar()
    await service.tick()
    await service.tick()
    texts = [c.text for c in api.calls_to("sendMessage")][2:]
    assert len(texts) == 2 and all("Data recovered: bybit" in t for t in texts)


async def test_armed_while_an_exchange_is_stale_says_so(service, provider, api):
    provider.stale[M].add("bybit")
    provider.add_bar(armed=cluster())
    await service.tick()
    cap = api.calls_to("sendPhoto")[0].caption
    assert "data stale on bybit" in cap


@pytest.mark.parametrize(
    "fault",
    [Fault.retry_after(2), Fault.status(500), Fault.status(502), Fault.timeout(0.8), Fault.drop()],
    ids=["429", "500", "502", "timeout", "drop"],
)
async def test_faults_are_retried_and_delivered_once(
    make_sender, outbox, provider, api, sleeps, fault
):
    sender = make_sender(chat_ids=[CHAT_A], outbox=outbox)
    svc = AlertService(provider, alert_config(chat_ids=(CHAT_A,)), markets=[M], sender=sender)
    api.fail("sendPhoto", fault)
    provider.add_bar(armed=cluster())
    res = await svc.tick()
    await svc.aclose()
    assert res.sent == 1 and res.pending == 0
    assert len(api.attempts_of("sendPhoto")) >= 2
    ok = api.calls_to("sendPhoto")
    assert [c.chat_id for c in ok] == [str(CHAT_A)]
    if fault.retry_after_s:
        assert 2 in sleeps.waits
    else:
        assert sleeps.waits  # backoff happened


async def test_blocked_chat_reported_once_other_chat_still_served(service, provider, api, caplog):
    api.fail("sendPhoto", Fault.status(403), chat_id=CHAT_B)
    provider.add_bar(armed=cluster())
    await service.tick()
    provider.add_bar(armed=cluster(low=80_000, high=80_150, usd=6e6))
    await service.tick()
    ok = [c.chat_id for c in api.calls_to("sendPhoto")]
    assert ok == [str(CHAT_A), str(CHAT_A)]
    assert len([c for c in api.attempts_of("sendPhoto") if c.chat_id == str(CHAT_B)]) == 1
    assert caplog.text.count("cannot receive alerts") == 1


async def test_refresh_failure_is_logged_and_evaluation_goes_on(service, provider, api, caplog):
    provider.fail_refresh = RuntimeError("exchange down")
    provider.add_bar(armed=cluster())
    res = await service.tick()
    assert res.refresh_error == "RuntimeError: exchange down"
    assert len(api.calls_to("sendPhoto")) == 2
    assert "Refresh failed" in caplog.text


async def test_restart_resends_unsent_and_never_repeats(make_sender, tmp_path, provider, api):
    path = tmp_path / "outbox.sqlite"
    box1 = Outbox(path)
    api.fail("sendPhoto", Fault.status(500), times=3)  # every attempt of the first run fails
    svc1 = AlertService(
        provider,
        alert_config(chat_ids=(CHAT_A,)),
        markets=[M],
        sender=make_sender(chat_ids=[CHAT_A], outbox=box1),
    )
    provider.add_bar(armed=cluster())
    res = await svc1.tick()
    assert res.pending == 1 and api.calls_to("sendPhoto") == []
    await svc1.aclose()
    box1.close()

    box2 = Outbox(path)  # the restart: new process state, same file
    svc2 = AlertService(
        provider,
        alert_config(chat_ids=(CHAT_A,)),
        markets=[M],
        sender=make_sender(chat_ids=[CHAT_A], outbox=box2),
    )
    await svc2.start()  # resends what was left
    assert len(api.calls_to("sendPhoto")) == 1
    await svc2.tick()  # same bar again
    provider.add_bar(armed=cluster())  # the same pocket still armed: cooldown restored
    await svc2.tick()
    assert len(api.calls_to("sendPhoto")) == 1
    assert box2.counts() == {"pending": 0, "sent": 1, "failed": 0}
    await svc2.aclose()

    box3 = Outbox(path)  # a third start: nothing pending, nothing sent
    svc3 = AlertService(
        provider,
        alert_config(chat_ids=(CHAT_A,)),
        markets=[M],
        sender=make_sender(chat_ids=[CHAT_A], outbox=box3),
    )
    await svc3.start()
    assert len(api.calls_to("sendPhoto")) == 1
    await svc3.aclose()
    box2.close()
    box3.close()


async def test_commands_answer_allowed_chats_only(service, provider, api):
    await service.start()
    api.add_update(CHAT_A, "/clusters BTC")
    api.add_update(CHAT_A, "/status")
    api.add_update(CHAT_A, "/map btc")
    api.add_update(999, "/status")  # a stranger
    api.add_update(CHAT_A, "/clusters DOGE")
    n = await service.sender.poll_once()
    assert n == 4
    texts = [c.text for c in api.calls_to("sendMessage")]
    assert all(c.chat_id == str(CHAT_A) for c in api.calls_to("sendMessage"))
    assert "86,450–86,600" in texts[0] and "depth 3" in texts[0] and "binance 60%" in texts[0]
    assert "last refresh" in texts[1] and "binance ok" in texts[1] and "outbox" in texts[1]
    assert "unknown market" in texts[2] and "BTC/USDT:USDT" in texts[2]
    photo = api.calls_to("sendPhoto")
    assert len(photo) == 1 and photo[0].chat_id == str(CHAT_A) and photo[0].photo.startswith(PNG)


async def test_polling_refused_when_freqtrade_bot_uses_the_token(
    make_sender, outbox, provider, api
):
    ft = {"telegram": {"enabled": True, "token": TOKEN, "chat_id": str(CHAT_A)}}
    svc = AlertService(
        provider,
        alert_config(polling=True),
        markets=[M],
        freqtrade_config=ft,
        sender=make_sender(chat_ids=[CHAT_A], outbox=outbox),
    )
    await svc.start()
    assert "Freqtrade's own Telegram bot" in svc.sender.polling_refused
    assert "Freqtrade's own Telegram bot" in svc.status_text()
    provider.add_bar(armed=cluster())
    await svc.tick()  # sending still works
    assert len(api.calls_to("sendPhoto")) == 1
    assert api.attempts_of("getUpdates") == []
    await svc.aclose()


async def test_scheduler_runs_ticks_without_overlap_and_stops_on_sigterm(service, provider):
    service.config = alert_config(interval_s=0.05, misfire_grace_s=0.0)
    provider.refresh_delay = 0.15  # longer than the interval: runs must not overlap
    loop = asyncio.get_running_loop()
    loop.call_later(0.8, os.kill, os.getpid(), signal.SIGTERM)
    t0 = time.monotonic()
    await asyncio.wait_for(service.run(), 5)
    assert time.monotonic() - t0 < 3
    assert provider.refreshes >= 3 and provider.max_in_refresh == 1
    assert not service.scheduler.running
    assert service.sender._started is False  # closed on the way out
    # our handler is gone: SIGTERM has its default disposition again
    assert signal.getsignal(signal.SIGTERM) in (signal.SIG_DFL, None)


async def test_background_thread_never_blocks_and_stops(api, tmp_path, provider):
    box = Outbox(tmp_path / "bg.sqlite")
    sender = TelegramSender(
        [CHAT_A],
        token=TOKEN,
        base_url=api.base_url,
        base_file_url=api.base_file_url,
        outbox=box,
        retry=FAST,
    )
    provider.add_bar(armed=cluster())
    provider.refresh_delay = 0.3  # a slow refresh in the thread does not stall this loop
    svc = AlertService(
        provider, alert_config(chat_ids=(CHAT_A,), interval_s=0.2), markets=[M], sender=sender
    )
    t0 = time.monotonic()
    svc.start_in_background()
    started = time.monotonic() - t0
    assert svc.running and started < 2
    # this loop keeps serving the fake API while the thread refreshes and sends
    lag = 0.0
    for _ in range(100):
        t = time.monotonic()
        await asyncio.sleep(0.02)
        lag = max(lag, time.monotonic() - t - 0.02)
        if api.calls_to("sendPhoto"):
            break
    assert [c.chat_id for c in api.calls_to("sendPhoto")] == [str(CHAT_A)]
    assert lag < 0.2
    assert any(t.name == "liqsignal-alerts" for t in threading.enumerate())
    assert await asyncio.to_thread(svc.stop, 10)
    assert not svc.running
    assert not any(t.name == "liqsignal-alerts" for t in threading.enumerate())
    box.close()


# -- config --------------------------------------------------------------------------------


def test_settings_from_freqtrade_config():
    cfg = {
        "timeframe": "1h",
        "exchange": {"name": "binance", "pair_whitelist": ["BTC/USDT:USDT", "ETH/USDT:USDT"]},
        "liqsignal": {
            "engine": {"armed_distance_pct": 2.0},
            "exchanges": ["binance", "bybit"],
            "alerts": {"chat_ids": [111, "@chan"], "cooldown_minutes": 30, "token": "secret-x"},
        },
    }
    s = alert_settings(cfg)
    assert [m.market for m in s.markets] == ["BTC/USDT:USDT", "ETH/USDT:USDT"]
    assert s.markets[0].exchanges == ("binance", "bybit")
    assert s.engine.armed_distance_pct == 2.0
    assert s.alerts.rule_values()["cooldown_s"] == 1800
    assert "secret-x" not in repr(s.alerts)


@pytest.mark.parametrize(
    ("section", "key"),
    [
        ({"chat_id": [1]}, "unknown key(s) ['chat_id']"),
        ({"interval_s": 0}, "liqsignal.alerts.interval_s"),
        ({"interval_s": "1m"}, "liqsignal.alerts.interval_s"),
        ({"polling": "yes"}, "liqsignal.alerts.polling"),
        ({"chat_ids": [1.5]}, "liqsignal.alerts.chat_ids"),
        ({"band_pct": -1}, "liqsignal.alerts.band_pct"),
        ({"escalate_usd_ratio": 0.5}, "liqsignal.alerts.escalate_usd_ratio"),
        ({"max_age_s": 0}, "liqsignal.alerts.max_age_s"),
    ],
)
def test_config_errors_name_the_key(section, key):
    with pytest.raises(ConfigError) as ei:
        alert_settings({"exchange": {"pair_whitelist": [M]}, "liqsignal": {"alerts": section}})
    assert key in str(ei.value)


def test_config_needs_markets_and_a_readable_file(tmp_path):
    with pytest.raises(ConfigError, match="pair_whitelist"):
        alert_settings({"liqsignal": {"alerts": {"chat_ids": [1]}}})
    bad = tmp_path / "c.json"
    bad.write_text("{not json")
    with pytest.raises(ConfigError, match="not valid JSON"):
        alert_settings(bad)


def test_no_token_is_a_config_error_naming_the_variable(monkeypatch, provider):
    monkeypatch.delenv("LIQSIGNAL_NO_SUCH_TOKEN", raising=False)
    svc = AlertService(provider, alert_config(token_env="LIQSIGNAL_NO_SUCH_TOKEN"), markets=[M])
    with pytest.raises(ConfigError, match="LIQSIGNAL_NO_SUCH_TOKEN"):
        svc._build_sender()
    assert svc.outbox is None  # nothing was created for a config that cannot send
