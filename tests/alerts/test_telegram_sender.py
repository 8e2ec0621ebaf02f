"""Tests for TelegramSender: real python-telegram-bot HTTP against the fake Bot API."""

from __future__ import annotations

import asyncio
import dataclasses
import importlib
import logging
import sys
import time
from datetime import UTC, datetime, timedelta

import pytest

from liqsignal.alerts.message import Alert
from liqsignal.alerts.outbox import Outbox
from liqsignal.alerts.telegram import (
    CAPTION_LIMIT,
    CommandReply,
    RetryPolicy,
    TelegramSender,
    parse_duration,
    refuse_polling_reason,
)
from liqsignal.exceptions import ConfigError

from .conftest import CHAT_A, CHAT_B, FAST, TOKEN
from .fake_botapi import Fault

PNG = b"\x89PNG\r\n\x1a\n" + bytes(range(256)) * 8


def alert(i: int, text: str | None = None, photo: bytes | None = None, **kw) -> Alert:
    return Alert(key=f"armed|BTC|{i}", kind="armed", market="BTC/USDT:USDT", side="long",
                 text=text or f"<b>BTC</b> pocket {i}", photo=photo, **kw)  # fmt: skip


def sent_texts(api, method="sendMessage"):
    return [
        (c.chat_id, c.text if method == "sendMessage" else c.caption) for c in api.calls_to(method)
    ]


async def test_text_alert_goes_to_every_configured_chat(api, make_sender, outbox):
    sender = make_sender(chat_ids=[CHAT_A, str(CHAT_B)], outbox=outbox)
    result = await sender.notify(alert(1))
    assert result.ok and [r.alert_key for r in result.sent] == ["armed|BTC|1"]
    assert sent_texts(api) == [("111", "<b>BTC</b> pocket 1"), ("222", "<b>BTC</b> pocket 1")]
    assert all(c.params["parse_mode"] == "HTML" for c in api.calls_to("sendMessage"))
    assert api.calls_to("getMe"), "start() checks the token with getMe"
    entry = outbox.get(result.sent[0].outbox_id)
    assert entry.status == "sent" and set(entry.message_ids) == {"111", "222"}
    assert result.sent[0].message_ids == entry.message_ids


async def test_photo_with_caption_uploads_the_exact_bytes(api, make_sender):
    sender = make_sender()
    result = await sender.send_alert(alert(2, photo=PNG))
    assert result.ok
    (call,) = api.calls_to("sendPhoto")
    assert call.photo == PNG and call.caption == "<b>BTC</b> pocket 2" and call.chat_id == "111"
    assert api.calls_to("sendMessage") == []


async def test_long_text_sends_photo_then_text(api, make_sender):
    long_text = "<b>BTC</b> " + "x" * (CAPTION_LIMIT + 10)
    sender = make_sender()
    result = await sender.send_alert(alert(3, text=long_text, photo=PNG))
    assert result.ok and len(result.sent[0].message_ids["111"]) == 2
    assert [c.method for c in api.calls if c.method != "getMe"] == ["sendPhoto", "sendMessage"]
    assert api.calls_to("sendPhoto")[0].caption is None
    assert api.calls_to("sendPhoto")[0].photo == PNG
    assert api.calls_to("sendMessage")[0].text == long_text


async def test_retry_after_is_honoured(api, make_sender, sleeps, outbox):
    api.fail("sendMessage", Fault.retry_after(2))
    sender = make_sender(outbox=outbox)
    result = await sender.notify(alert(4))
    assert result.ok
    assert sleeps.waits == [2.0]
    assert [c.answered for c in api.attempts_of("sendMessage")] == ["429", "ok"]


async def test_retry_after_really_waits(api, make_sender):
    api.fail("sendMessage", Fault.retry_after(1))
    sender = make_sender(sleep=asyncio.sleep)
    t0 = time.monotonic()
    result = await sender.send_alert(alert(5))
    assert result.ok and time.monotonic() - t0 >= 1.0


async def test_retry_after_beyond_budget_leaves_alert_pending(api, make_sender, sleeps, outbox):
    api.fail("sendMessage", Fault.retry_after(60))  # budget in FAST is 5 s
    sender = make_sender(outbox=outbox)
    first = await sender.notify(alert(6))
    assert not first.ok and first.stopped_early and "flood control" in first.stopped_early
    assert sleeps.waits == [] and first.remaining == 1
    assert outbox.pending()[0].attempts == 1
    second = await sender.flush()
    assert second.ok and second.remaining == 0
    assert len(api.calls_to("sendMessage")) == 1


@pytest.mark.parametrize(
    "fault",
    [Fault.status(500), Fault.status(502, raw_body="<html>502 Bad Gateway</html>"),
     Fault.timeout(0.8), Fault.drop()],
    ids=["500", "502-html", "timeout", "drop"],
)  # fmt: skip
async def test_temporary_errors_are_retried_with_backoff(api, make_sender, sleeps, fault):
    api.fail("sendMessage", fault)
    sender = make_sender()
    result = await sender.send_alert(alert(7))
    assert result.ok, result
    assert len(api.attempts_of("sendMessage")) == 2
    assert len(sleeps.waits) == 1 and 0.01 <= sleeps.waits[0] <= 0.011


async def test_attempts_are_bounded_and_order_is_kept(api, make_sender, sleeps, outbox):
    api.fail("sendMessage", Fault.status(500), times=FAST.attempts)
    sender = make_sender(outbox=outbox, batch_max=1)  # one message per alert
    outbox.enqueue(alert(8))
    outbox.enqueue(alert(9))
    result = await sender.flush()
    assert not result.ok and result.remaining == 2
    assert len(api.attempts_of("sendMessage")) == FAST.attempts  # then stopped, 9 not tried
    assert all(c.text.endswith("pocket 8") for c in api.attempts_of("sendMessage"))
    assert sleeps.waits == pytest.approx([0.01, 0.02], rel=0.11)
    assert [e.attempts for e in outbox.pending()] == [1, 0]
    assert "failed 3 times" in outbox.pending()[0].last_error
    again = await sender.flush()
    assert again.ok
    assert [t for _, t in sent_texts(api)] == ["<b>BTC</b> pocket 8", "<b>BTC</b> pocket 9"]


async def test_a_burst_goes_out_as_one_digest_with_bounded_attempts(
    api, make_sender, sleeps, outbox
):
    api.fail("sendMessage", Fault.status(500), times=FAST.attempts)
    sender = make_sender(outbox=outbox)  # batch_max 10 by default
    for i in (8, 9):
        outbox.enqueue(alert(i))
    result = await sender.flush()
    assert not result.ok and result.remaining == 2
    assert len(api.attempts_of("sendMessage")) == FAST.attempts  # one digest, tried 3 times
    assert all(c.text == "<b>BTC</b> pocket 8\n\n<b>BTC</b> pocket 9"
               for c in api.attempts_of("sendMessage"))  # fmt: skip
    assert [e.attempts for e in outbox.pending()] == [1, 1]  # an attempt of each
    again = await sender.flush()
    assert again.ok and [r.alert_key for r in again.sent] == [alert(8).key, alert(9).key]
    (mid,) = {tuple(r.message_ids["111"]) for r in again.sent}  # the same message
    assert [t for _, t in sent_texts(api)] == ["<b>BTC</b> pocket 8\n\n<b>BTC</b> pocket 9"]
    stored = {e.alert.key: e for e in outbox.entries("sent")}
    assert {k: stored[k].message_ids for k in stored} == {
        alert(8).key: {"111": list(mid)},
        alert(9).key: {"111": list(mid)},
    }


async def test_digest_limits_and_pictures_and_a_refused_digest(api, make_sender, outbox):
    sender = make_sender(outbox=outbox, batch_max=3)
    for i in range(7):
        outbox.enqueue(alert(i))
    photo = alert(7, photo=PNG)
    outbox.enqueue(photo)
    outbox.enqueue(alert(8))
    assert (await sender.flush()).ok
    texts = [t for _, t in sent_texts(api)]
    assert texts == [
        "<b>BTC</b> pocket 0\n\n<b>BTC</b> pocket 1\n\n<b>BTC</b> pocket 2",
        "<b>BTC</b> pocket 3\n\n<b>BTC</b> pocket 4\n\n<b>BTC</b> pocket 5",
        "<b>BTC</b> pocket 6",  # the picture's alert goes alone, in its place
        "<b>BTC</b> pocket 8",
    ]
    assert len(api.calls_to("sendPhoto")) == 1
    # a digest Telegram refuses (400) is sent one by one: only the bad alert fails
    api.fail("sendMessage", Fault.status(400, "Bad Request: can't parse entities"), times=2)
    for i in (20, 21):
        outbox.enqueue(alert(i))
    res = await sender.flush()
    assert [r.alert_key for r in res.failed] == [alert(20).key]
    assert [r.alert_key for r in res.sent] == [alert(21).key]
    assert outbox.counts()["pending"] == 0


async def test_digest_too_long_for_one_message_is_split(api, make_sender, outbox):
    sender = make_sender(outbox=outbox)
    long = [dataclasses.replace(alert(i), text="x" * 1500) for i in range(4)]
    for a in long:
        outbox.enqueue(a)
    assert (await sender.flush()).ok
    assert [len(t) for _, t in sent_texts(api)] == [1500 * 2 + 2, 1500 * 2 + 2]


async def test_alert_given_up_after_max_alert_attempts(api, make_sender, outbox):
    policy = RetryPolicy(attempts=1, backoff_base=0, max_alert_attempts=2, read_timeout=0.5)
    api.fail("sendMessage", Fault.status(503), times=2)
    sender = make_sender(outbox=outbox, retry=policy)
    outbox.enqueue(alert(10))
    assert (await sender.flush()).pending
    second = await sender.flush()
    assert [r.status for r in second.failed] == ["failed"]
    assert outbox.counts() == {"pending": 0, "sent": 0, "failed": 1}


async def test_forbidden_chat_is_reported_once_and_skipped(api, make_sender, outbox, caplog):
    api.fail("sendMessage", Fault.status(403), chat_id=CHAT_B)
    sender = make_sender(chat_ids=[CHAT_A, CHAT_B], outbox=outbox)
    first = await sender.notify(alert(11))
    second = await sender.notify(alert(12))
    assert first.newly_blocked_chats == {"222": "Forbidden: bot was blocked by the user"}
    assert second.newly_blocked_chats == {}
    assert first.ok and second.ok  # delivered to the chat that still works
    assert [c.chat_id for c in api.attempts_of("sendMessage")] == ["111", "222", "111"]
    warnings = [r for r in caplog.records if "cannot receive alerts" in r.getMessage()]
    assert len(warnings) == 1 and "222" in warnings[0].getMessage()
    assert sender.blocked_chats == {"222": "Forbidden: bot was blocked by the user"}


async def test_chat_not_found_everywhere_fails_the_alert(api, make_sender, outbox):
    api.fail("sendMessage", Fault.status(400, "Bad Request: chat not found"))
    sender = make_sender(outbox=outbox)
    result = await sender.notify(alert(13))
    assert result.newly_blocked_chats == {"111": "BadRequest: Chat not found"}
    assert [r.status for r in result.failed] == ["failed"]
    assert "no configured chat" in result.failed[0].error
    assert outbox.counts()["failed"] == 1


async def test_bad_request_drops_only_that_alert(api, make_sender, outbox):
    api.fail("sendMessage", Fault.status(400))
    sender = make_sender(outbox=outbox, batch_max=1)  # one by one (a digest: test above)
    outbox.enqueue(alert(14))
    outbox.enqueue(alert(15))
    result = await sender.flush()
    assert [r.alert_key for r in result.failed] == ["armed|BTC|14"]
    assert [r.alert_key for r in result.sent] == ["armed|BTC|15"]
    assert "parse entities" in result.failed[0].error


async def test_restart_sends_exactly_the_remaining(api, make_sender, tmp_path):
    path = tmp_path / "restart.sqlite"
    box = Outbox(path)
    for i in range(3):
        box.enqueue(alert(20 + i))
    first = make_sender(outbox=box, batch_max=1)  # one message per alert
    api.fail("sendMessage", Fault.timeout(5.0), after=1)  # the first goes through...
    task = asyncio.create_task(first.flush())
    for _ in range(200):  # ...until the second alert's request hangs at the server
        if len(api.attempts_of("sendMessage")) == 2:
            break
        await asyncio.sleep(0.01)
    assert [c.answered for c in api.attempts_of("sendMessage")] == ["ok", "timeout"]
    task.cancel()  # crash: the process dies mid-request
    with pytest.raises(asyncio.CancelledError):
        await task
    await first.stop()
    box.close()

    box2 = Outbox(path)
    second = make_sender(outbox=box2, batch_max=1)
    result = await second.flush()
    again = await second.flush()
    box2.close()
    assert [r.alert_key for r in result.sent] == ["armed|BTC|21", "armed|BTC|22"]
    assert again.sent == [] and again.remaining == 0
    texts = [t for _, t in sent_texts(api)]
    assert texts == [f"<b>BTC</b> pocket {i}" for i in (20, 21, 22)]


async def test_token_never_leaks_from_a_rejected_token(api, make_sender, outbox, caplog):
    # python-telegram-bot puts the token into InvalidToken's message on initialize
    api.valid_token = "7000001:AAH-someOtherTokenTheServerExpects"
    sender = make_sender(outbox=outbox)
    result = await sender.notify(alert(30))
    assert not result.ok and result.remaining == 1
    assert "rejected" in result.stopped_early and TOKEN not in result.stopped_early
    assert "<redacted-token>" in result.stopped_early
    assert TOKEN not in str(result) and TOKEN not in repr(sender) and TOKEN not in str(sender)
    # the URLs httpx and telegram log were there, only redacted
    assert "/bot<redacted-token>/getMe" in caplog.text
    api.valid_token = TOKEN
    assert (await sender.flush()).ok


async def test_token_redacted_from_exception_tracebacks_in_logs(caplog):
    log = logging.getLogger("liqsignal.test")
    try:
        raise RuntimeError(f"GET https://api.telegram.org/bot{TOKEN}/getMe failed")
    except RuntimeError:
        log.exception("boom with %s", TOKEN)
    record = caplog.records[-1]
    assert "<redacted-token>" in record.getMessage() and "<redacted-token>" in record.exc_text
    # the autouse fixture checks TOKEN is absent from caplog.text and every record


async def test_missing_token_names_the_env_var(monkeypatch, api):
    monkeypatch.delenv("LIQSIGNAL_TELEGRAM_TOKEN", raising=False)
    with pytest.raises(ConfigError, match="LIQSIGNAL_TELEGRAM_TOKEN"):
        TelegramSender([CHAT_A])
    monkeypatch.setenv("LIQSIGNAL_TELEGRAM_TOKEN", TOKEN)
    sender = TelegramSender([CHAT_A], base_url=api.base_url, retry=FAST)
    assert (await sender.send_alert(alert(31))).ok
    await sender.stop()
    with pytest.raises(ConfigError, match="chat id"):
        TelegramSender(["not a chat"], token=TOKEN)
    with pytest.raises(ConfigError, match="empty"):
        TelegramSender([], token=TOKEN)


def test_missing_library_says_what_to_install(monkeypatch):
    monkeypatch.setitem(sys.modules, "telegram", None)
    monkeypatch.delitem(sys.modules, "liqsignal.alerts.telegram")
    hint = r"python-telegram-bot.*pip install 'liqsignal\[alerts\]'"
    with pytest.raises(ImportError, match=hint):
        importlib.import_module("liqsignal.alerts.telegram")


def test_polling_refused_when_freqtrade_uses_the_token():
    ft_same = {"telegram": {"enabled": True, "token": TOKEN, "chat_id": "111"}}
    reason = refuse_polling_reason(ft_same, TOKEN)
    assert reason and "same token" in reason and TOKEN not in reason
    assert refuse_polling_reason({"telegram": {"enabled": False, "token": TOKEN}}, TOKEN) is None
    other = {"telegram": {"enabled": True, "token": "123:other"}}
    assert refuse_polling_reason(other, TOKEN) is None
    assert refuse_polling_reason(None, TOKEN) is None


async def test_start_polling_refused_but_sending_works(api, make_sender):
    sender = make_sender()
    reason = sender.start_polling({"telegram": {"enabled": True, "token": TOKEN}})
    assert reason and "Alerts are still sent" in reason
    assert (await sender.send_alert(alert(32))).ok
    assert api.attempts_of("getUpdates") == []


async def test_commands_answered_only_to_allowed_chats(api, make_sender, outbox):
    sender = make_sender(chat_ids=[CHAT_A], outbox=outbox)
    asked: list[list[str]] = []

    async def clusters(args: list[str]) -> str:
        asked.append(args)
        return f"clusters for {args[0]}"

    sender.register_command("clusters", clusters)
    sender.register_command("map", lambda args: CommandReply(f"map {args[0]}", photo=PNG))
    api.add_update(CHAT_A, "/clusters BTC")
    api.add_update(999, "/clusters BTC")  # a stranger
    api.add_update(CHAT_A, "/map@liqsignal_test_bot BTC")
    last = api.add_update(CHAT_A, "hello, not a command")
    assert await sender.poll_once() == 2
    assert asked == [["BTC"]]
    assert sent_texts(api) == [("111", "clusters for BTC")]
    (photo,) = api.calls_to("sendPhoto")
    assert photo.chat_id == "111" and photo.caption == "map BTC" and photo.photo == PNG
    assert await sender.poll_once() == 0  # offset moved past the answered updates
    assert api.calls_to("getUpdates")[-1].params["offset"] == str(last + 1)
    assert all(c.chat_id != "999" for c in api.calls if c.chat_id)


async def test_status_and_mute_drop_alerts(api, make_sender, outbox):
    sender = make_sender(outbox=outbox)
    api.add_update(CHAT_A, "/mute 1h")
    api.add_update(CHAT_A, "/status")
    assert await sender.poll_once() == 2
    mute_reply, status_reply = (t for _, t in sent_texts(api))
    assert mute_reply.startswith("Alerts muted until")
    assert "muted until" in status_reply and "outbox" in status_reply
    result = await sender.notify(alert(33))
    assert [r.error for r in result.failed] == ["muted by /mute"]
    assert len(api.calls_to("sendMessage")) == 2  # only the two command answers
    api.add_update(CHAT_A, "/mute off")
    await sender.poll_once()
    assert (await sender.notify(alert(34))).ok


async def test_background_polling_answers_and_stops(api, make_sender):
    sender = make_sender()
    sender.register_command("status", lambda args: "all good")
    assert sender.start_polling(None, interval=0.02, long_poll=0) is None
    api.add_update(CHAT_A, "/status")
    for _ in range(200):
        if api.calls_to("sendMessage"):
            break
        await asyncio.sleep(0.01)
    await sender.stop_polling()
    assert sent_texts(api) == [("111", "all good")]
    assert api.calls_to("deleteWebhook")


async def test_old_alerts_expire_instead_of_arriving_late(api, make_sender, outbox):
    sender = make_sender(outbox=outbox)
    old = alert(35, created_at=datetime.now(UTC) - timedelta(hours=2))
    result = await sender.notify(old)
    assert [r.error.split(":")[0] for r in result.failed] == ["expired"]
    assert api.calls_to("sendMessage") == []


def test_parse_duration():
    assert parse_duration("90s") == 90 and parse_duration("30m") == 1800
    assert parse_duration("1h") == 3600 and parse_duration("2d") == 172800
    assert parse_duration("15") == 900
    with pytest.raises(ConfigError, match="duration"):
        parse_duration("soon")


async def test_server_down_never_raises(api, make_sender, outbox):
    sender = make_sender(outbox=outbox)
    await api.stop()  # connection refused from now on
    result = await sender.notify(alert(36))
    assert not result.ok and result.remaining == 1
    assert "cannot reach Telegram" in result.stopped_early
    assert outbox.pending()[0].alert.key == "armed|BTC|36"


async def test_too_long_text_is_cut_to_the_limit(api, make_sender):
    sender = make_sender()
    result = await sender.send_alert(alert(37, text="\U0001f4a5" * 3000))  # 6000 UTF-16 units
    assert result.ok
    (call,) = api.calls_to("sendMessage")
    assert call.text.endswith("…") and len(call.text.encode("utf-16-le")) // 2 <= 4096


async def test_polling_conflict_stops_polling(api, make_sender):
    api.fail("getUpdates", Fault(kind="error", code=409, description="Conflict: terminated by "
                                 "other getUpdates request"))  # fmt: skip
    sender = make_sender()
    assert sender.start_polling(None, interval=0.01, long_poll=0) is None
    for _ in range(200):
        if sender.polling_refused:
            break
        await asyncio.sleep(0.01)
    assert sender.polling_refused and "another process polls" in sender.polling_refused
    await asyncio.sleep(0.05)
    assert len(api.attempts_of("getUpdates")) == 1
    assert (await sender.send_alert(alert(38))).ok


async def test_a_burst_of_flushes_joins_the_queued_one_and_sends_each_alert_once(
    api, make_sender, outbox
):
    """Twenty callers notify at once: the first flush runs, the second queues, the other
    eighteen join the queued one (which reads the outbox after they stored their alerts)."""
    sender = make_sender(outbox=outbox)
    runs = []
    real = sender._flush_when_free

    async def counted(fut):
        runs.append(fut)
        return await real(fut)

    sender._flush_when_free = counted
    results = await asyncio.gather(*(sender.notify(alert(100 + i)) for i in range(20)))
    assert len(runs) == 2  # not 20
    assert len({id(r) for r in results[1:]}) == 1  # the 19 share the queued flush's result
    assert results[-1].remaining == 0 and len(results[-1].sent) == 19
    assert outbox.counts() == {"pending": 0, "sent": 20, "failed": 0}
    texts = [t for _, t in sent_texts(api)]
    assert len(texts) == 3  # the first alert alone, then digests of 10 and 9
    body = "\n\n".join(texts)
    assert all(body.count(f"pocket {100 + i}") == 1 for i in range(20))
    # a cancelled caller does not take the joined callers down with it
    sender._flush_when_free = real
    api.fail("sendMessage", Fault.timeout(0.3), times=1)
    outbox.enqueue(alert(200))
    first = asyncio.create_task(sender.flush())
    await asyncio.sleep(0.05)  # first is sending (its request hangs at the server)
    second = asyncio.create_task(sender.notify(alert(201)))  # queues the next flush
    await asyncio.sleep(0)
    third = asyncio.create_task(sender.notify(alert(202)))  # joins it
    await asyncio.sleep(0)
    second.cancel()
    await first
    res = await third
    assert second.cancelled() and res.remaining == 0
    assert outbox.counts()["pending"] == 0 and outbox.counts()["sent"] == 23
