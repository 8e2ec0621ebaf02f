"""Fixtures for alert tests: a fake Bot API on 127.0.0.1 and a fast-retrying sender against it."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator, Callable

import pytest

from liqsignal.alerts.outbox import Outbox
from liqsignal.alerts.service import AlertService
from liqsignal.alerts.telegram import RetryPolicy, TelegramSender

from .fake_botapi import FakeBotAPI
from .fake_provider import CHAT_A, CHAT_B, FakeProvider, M, alert_config

# looks like a real token: bot id, colon, 35 characters
TOKEN = "7000001:AAH-liqsignalTestTokenSecret_xyz123"

_TIMEOUTS = ("read_timeout", "write_timeout", "connect_timeout", "media_write_timeout")
# quick retries, and every HTTP timeout half a second
FAST = RetryPolicy(
    attempts=3,
    backoff_base=0.01,
    backoff_max=0.05,
    max_retry_after_total=5.0,
    **dict.fromkeys(_TIMEOUTS, 0.5),
)


class SleepRecorder:
    """Stands in for asyncio.sleep: records the requested waits, yields without waiting."""

    def __init__(self) -> None:
        self.waits: list[float] = []

    async def __call__(self, seconds: float) -> None:
        self.waits.append(seconds)
        await asyncio.sleep(0)


@pytest.fixture
async def api() -> AsyncIterator[FakeBotAPI]:
    server = FakeBotAPI(valid_token=TOKEN)
    await server.start()
    try:
        yield server
    finally:
        await server.stop()


@pytest.fixture
def sleeps() -> SleepRecorder:
    return SleepRecorder()


@pytest.fixture
def outbox(tmp_path) -> Outbox:
    box = Outbox(tmp_path / "alerts.sqlite")
    yield box
    box.close()


@pytest.fixture
async def make_sender(
    api: FakeBotAPI, sleeps: SleepRecorder
) -> AsyncIterator[Callable[..., TelegramSender]]:
    made: list[TelegramSender] = []

    def make(**kwargs) -> TelegramSender:
        kwargs.setdefault("chat_ids", [CHAT_A])
        kwargs.setdefault("token", TOKEN)
        kwargs.setdefault("base_url", api.base_url)
        kwargs.setdefault("base_file_url", api.base_file_url)
        kwargs.setdefault("retry", FAST)
        kwargs.setdefault("sleep", sleeps)
        sender = TelegramSender(**kwargs)
        made.append(sender)
        return sender

    yield make
    for s in made:
        await s.stop()


@pytest.fixture
def provider() -> FakeProvider:
    """The map provider behind ``service``; a module overrides it for a richer fake."""
    return FakeProvider()


@pytest.fixture
async def service(
    make_sender: Callable[..., TelegramSender], outbox: Outbox, provider: FakeProvider
) -> AsyncIterator[AlertService]:
    """An AlertService over ``provider`` for market M, sending to CHAT_A and CHAT_B."""
    sender = make_sender(chat_ids=[CHAT_A, CHAT_B], outbox=outbox)
    svc = AlertService(provider, alert_config(), markets=[M], sender=sender)
    yield svc
    await svc.aclose()


@pytest.fixture(autouse=True)
def _token_never_logged(caplog):
    """Over every alert test: capture all logs at DEBUG and check the token never shows."""
    caplog.set_level(logging.DEBUG)
    for name in ("httpx", "httpcore", "telegram", "aiohttp"):
        caplog.set_level(logging.DEBUG, logger=name)
    yield
    assert TOKEN not in caplog.text
    for record in caplog.records:
        assert TOKEN not in record.getMessage()
        assert TOKEN not in (record.exc_text or "")
