"""Alerts through the bot's own Telegram: a sender that hands each alert to ``dp.send_msg``.

When Freqtrade's Telegram is on, a second bot on the same token would fight it for updates, and
the user already reads the bot's chat. ``BotMessageSender`` has the interface the alert service
expects of a sender (``start``, ``stop``, ``send_alert``, ``flush``, ``register_command``,
``start_polling``) and delivers the alert's text through the strategy's DataProvider, which
Freqtrade's Telegram sends as a strategy message. It needs ``telegram.allow_custom_messages:
true`` (otherwise Freqtrade drops the messages; said once in the log). Freqtrade sends strategy
messages as plain Markdown text: the alert's HTML is turned into plain text, pictures are left
out, and Telegram commands stay with Freqtrade's own bot. Freqtrade's DataProvider suppresses a
message identical to one already sent, and sends nothing outside dry-run and live.

``bot_sender_for(config, dp)`` returns the sender when the config's Telegram is enabled, else
None (the alert service then uses its own bot and outbox).
"""

from __future__ import annotations

import html
import logging
import re
from collections.abc import Mapping
from typing import Any

from liqsignal.alerts.message import Alert
from liqsignal.alerts.telegram import AlertResult, FlushResult
from liqsignal.exceptions import traceback_of

__all__ = ["BotMessageSender", "bot_sender_for", "html_to_text"]

logger = logging.getLogger(__name__)

_MAX = 4000  # Telegram's limit is 4096; Freqtrade asks messages below it


def html_to_text(text: str) -> str:
    """Telegram HTML (``<b>``, ``<i>``, ``<a>``, ``<code>``, entities) as plain text."""
    text = re.sub(r"<br\s*/?>", "\n", text, flags=re.IGNORECASE)
    text = re.sub(r'<a\s+href="([^"]*)"[^>]*>(.*?)</a>', r"\2 (\1)", text, flags=re.DOTALL)
    text = re.sub(r"<[^>]+>", "", text)
    return html.unescape(text).strip()


class BotMessageSender:
    """Deliver alerts with ``dp.send_msg`` (see the module docstring)."""

    outbox = None  # the DataProvider queues; the alert service sends each alert directly
    polling_refused: str | None = "Telegram commands are answered by Freqtrade's own bot"

    def __init__(self, dp: Any, *, always_send: bool = False) -> None:
        if not callable(getattr(dp, "send_msg", None)):
            raise TypeError("BotMessageSender needs the strategy's DataProvider (self.dp)")
        self.dp = dp
        self.always_send = always_send
        self.sent: list[str] = []

    async def start(self) -> str | None:
        return None

    async def stop(self) -> None:
        return None

    def register_command(self, name: str, callback: Any) -> None:
        """Commands are Freqtrade's own bot's; nothing is registered here."""

    def start_polling(self, freqtrade_config: Any = None) -> str | None:
        return self.polling_refused

    async def send_alert(self, alert: Alert) -> FlushResult:
        """Queue the alert's text with ``dp.send_msg``. Never raises."""
        result = FlushResult()
        try:
            text = html_to_text(alert.text)
            if len(text) > _MAX:
                text = text[: _MAX - 1] + "…"
            self.dp.send_msg(text, always_send=self.always_send)
            self.sent.append(alert.key)
            result.sent.append(AlertResult(alert.key, "sent"))
        except Exception as exc:  # never into the alert loop
            logger.warning("liqsignal alert %s not queued with dp.send_msg: %s", alert.key, exc,
                           exc_info=traceback_of(exc))  # fmt: skip
            result.failed.append(AlertResult(alert.key, "failed", error=str(exc)))
        return result

    async def flush(self) -> FlushResult:
        return FlushResult()


def bot_sender_for(config: Mapping[str, Any] | None, dp: Any) -> BotMessageSender | None:
    """A ``BotMessageSender`` when the bot's own Telegram is enabled in ``config``, else None.
    Warns once when ``telegram.allow_custom_messages`` is off (Freqtrade would drop them)."""
    tg = (config or {}).get("telegram") or {}
    if not isinstance(tg, Mapping) or not tg.get("enabled"):
        return None
    if not tg.get("allow_custom_messages"):
        logger.warning(
            "liqsignal alerts go through the bot's own Telegram, but "
            "telegram.allow_custom_messages is false: Freqtrade drops them; set it to true"
        )
    return BotMessageSender(dp)
