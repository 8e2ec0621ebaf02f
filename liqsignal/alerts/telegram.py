"""Deliver alerts to Telegram: the only module of liqsignal that imports python-telegram-bot.

:class:`TelegramSender` sends :class:`~liqsignal.alerts.message.Alert` s to the configured chats
and drains an :class:`~liqsignal.alerts.outbox.Outbox` in order. It never raises into the
caller (send and flush return summaries), and the bot token never reaches logs, exception
messages or reprs: python-telegram-bot logs its base URL (which contains the token) and httpx
logs every request URL, so every token handed to this module is redacted from all log records
of the process (:func:`install_token_redaction`).

Errors, and what the sender does::

    RetryAfter (429)             wait retry_after, then retry; total wait per flush is bounded
    NetworkError 5xx, TimedOut   retry with exponential backoff, bounded attempts; then leave
                                 the alert pending and stop this flush (order is kept)
    Forbidden (403), chat not    report once, stop sending to that chat for the life of the
    found (400), ChatMigrated    sender; other chats still get the alert
    other BadRequest (400)       the alert is marked failed (permanent); next alert is sent
    InvalidToken (401/404)       stop the flush, everything stays pending

Optional command polling (``/status``, ``/map BTC``, ``/clusters BTC``, ``/mute 1h``) answers
only allowed chats; refuse it with :func:`refuse_polling_reason` when Freqtrade's own Telegram
uses the same token (two pollers of one token conflict; sending from both is fine).
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime as dtm
import inspect
import logging
import os
import random
import re
import threading
import time
import urllib.parse
import warnings
from collections.abc import Awaitable, Callable, Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

from liqsignal._optional import require
from liqsignal.alerts.message import Alert, escape
from liqsignal.alerts.outbox import Outbox, OutboxEntry
from liqsignal.exceptions import ConfigError, traceback_of

require("telegram", extra="alerts", feature="Telegram alerts (liqsignal.alerts)")
import telegram  # noqa: E402
from telegram.error import (  # noqa: E402
    BadRequest,
    ChatMigrated,
    Conflict,
    Forbidden,
    InvalidToken,
    NetworkError,
    RetryAfter,
    TelegramError,
    TimedOut,
)
from telegram.request import HTTPXRequest  # noqa: E402

__all__ = [
    "CAPTION_LIMIT",
    "DEFAULT_TOKEN_ENV",
    "TEXT_LIMIT",
    "AlertResult",
    "CommandReply",
    "FlushResult",
    "RetryPolicy",
    "TelegramSender",
    "install_token_redaction",
    "parse_duration",
    "redact",
    "refuse_polling_reason",
]

logger = logging.getLogger(__name__)

DEFAULT_TOKEN_ENV = "LIQSIGNAL_TELEGRAM_TOKEN"
CAPTION_LIMIT = 1024
TEXT_LIMIT = 4096
#: Alerts pending together go out as one message (a digest) of at most this many.
DEFAULT_BATCH_MAX = 10
#: Between the alerts of a digest.
DIGEST_SEPARATOR = "\n\n"
REDACTED = "<redacted-token>"

# -- token redaction -------------------------------------------------------------------------

_SECRETS: set[str] = set()
_SECRETS_LOCK = threading.Lock()
_factory_installed = False


def _secret_forms(token: str) -> set[str]:
    forms = {token, urllib.parse.quote(token, safe=""), urllib.parse.quote_plus(token)}
    return {f for f in forms if len(f) >= 8}


def _bug(exc: BaseException) -> BaseException | None:
    """``exc_info`` for a log line: the exception when it is not Telegram's, an I/O error or
    liqsignal's own (a bug in the code, shown with its traceback; tokens are redacted from it)."""
    return traceback_of(exc, (TelegramError,))


def redact(text: str) -> str:
    """``text`` with every registered token (plain or URL-encoded) replaced."""
    for secret in sorted(_SECRETS, key=len, reverse=True):
        if secret in text:
            text = text.replace(secret, REDACTED)
    return text


def _redact_record(record: logging.LogRecord) -> None:
    try:
        message = record.getMessage()
    except Exception:  # a broken format string: redact the pieces instead
        message = " ".join([str(record.msg), *(str(a) for a in (record.args or ()))])
    cleaned = redact(message)
    if cleaned != message:
        record.msg = cleaned
        record.args = None
    if record.exc_info and record.exc_info[1] is not None and not record.exc_text:
        trace = logging.Formatter().formatException(record.exc_info)
        cleaned_trace = redact(trace)
        if cleaned_trace != trace:
            record.exc_text = cleaned_trace
    if record.stack_info:
        record.stack_info = redact(record.stack_info)


def install_token_redaction(token: str) -> None:
    """Redact ``token`` from every log record created in this process from now on.

    Installs (once) a log record factory wrapping the current one: records are cleaned when
    created, so every logger and handler (httpx, telegram, pytest's caplog, files) only ever
    sees the redacted text. Exception tracebacks attached to records are formatted and cleaned
    too.
    """
    global _factory_installed
    if not token:
        return
    with _SECRETS_LOCK:
        _SECRETS.update(_secret_forms(token))
        if _factory_installed:
            return
        previous = logging.getLogRecordFactory()

        def factory(*args: Any, **kwargs: Any) -> logging.LogRecord:
            record = previous(*args, **kwargs)
            if _SECRETS:
                _redact_record(record)
            return record

        logging.setLogRecordFactory(factory)
        _factory_installed = True


def _error_text(exc: BaseException) -> str:
    """Class name and message of an error, token removed."""
    name, text = type(exc).__name__, str(exc)
    return redact(text if text.startswith(name) else f"{name}: {text}")


# -- settings and results --------------------------------------------------------------------


@dataclass(frozen=True)
class RetryPolicy:
    """How hard to try. Times in seconds.

    ``attempts``: tries per request for network errors, 5xx and timeouts (backoff
    ``backoff_base * 2**n`` capped at ``backoff_max``, with up to 10 % jitter).
    ``max_retry_after_total``: total time a flush may wait on 429 flood control; a longer
    ``retry_after`` leaves the alert pending for the next flush.
    ``max_alert_attempts``: failed flushes after which an alert is given up.
    ``max_age``: an alert older than this when its turn comes is dropped (failed, "expired")
    instead of sent late; None sends whatever the age.
    """

    attempts: int = 4
    backoff_base: float = 1.0
    backoff_max: float = 30.0
    max_retry_after_total: float = 120.0
    max_alert_attempts: int = 10
    max_age: float | None = 3600.0
    read_timeout: float = 10.0
    write_timeout: float = 10.0
    connect_timeout: float = 5.0
    media_write_timeout: float = 30.0

    def __post_init__(self) -> None:
        if self.attempts < 1:
            raise ConfigError(f"RetryPolicy.attempts must be >= 1, got {self.attempts}")
        if self.max_alert_attempts < 1:
            raise ConfigError(
                f"RetryPolicy.max_alert_attempts must be >= 1, got {self.max_alert_attempts}"
            )
        for name in ("backoff_base", "backoff_max", "max_retry_after_total"):
            if getattr(self, name) < 0:
                raise ConfigError(f"RetryPolicy.{name} must be >= 0, got {getattr(self, name)}")

    def backoff(self, failures: int) -> float:
        delay = min(self.backoff_max, self.backoff_base * (2 ** max(0, failures - 1)))
        return delay * (1.0 + 0.1 * random.random())


@dataclass
class AlertResult:
    """What happened to one alert: ``status`` is sent, pending (retry later) or failed."""

    alert_key: str
    status: str
    message_ids: dict[str, list[int]] = field(default_factory=dict)
    error: str | None = None
    outbox_id: int | None = None


@dataclass
class FlushResult:
    """Summary of one send or flush. Never contains the token."""

    sent: list[AlertResult] = field(default_factory=list)
    failed: list[AlertResult] = field(default_factory=list)
    pending: list[AlertResult] = field(default_factory=list)
    newly_blocked_chats: dict[str, str] = field(default_factory=dict)
    stopped_early: str | None = None
    waited_s: float = 0.0
    remaining: int = 0

    @property
    def ok(self) -> bool:
        """True when nothing failed or was left pending."""
        return not self.failed and not self.pending and self.stopped_early is None


@dataclass(frozen=True)
class CommandReply:
    """A command answer: Telegram HTML text and an optional PNG."""

    text: str
    photo: bytes | None = None


CommandCallback = Callable[[list[str]], "str | CommandReply | Awaitable[str | CommandReply]"]


class _Permanent(Exception):
    """The alert cannot be delivered: mark it failed."""


class _Temporary(Exception):
    """Try again in a later flush; stop this one."""


class _ChatDead(Exception):
    """This chat cannot receive messages (blocked, kicked, unknown)."""


def _retry_after_seconds(exc: RetryAfter) -> float:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # v22.2+: int access warns, timedelta is the future type
        value: Any = exc.retry_after
    if isinstance(value, dtm.timedelta):
        return max(0.0, value.total_seconds())
    return max(0.0, float(value))


def _tg_len(text: str) -> int:
    """Length as Telegram counts it (UTF-16 code units); HTML tags counted too (safe side)."""
    return len(text.encode("utf-16-le")) // 2


def _normalise_chat(chat: int | str) -> int | str:
    if isinstance(chat, int):
        return chat
    text = str(chat).strip()
    if re.fullmatch(r"-?\d+", text):
        return int(text)
    if text.startswith("@") and len(text) > 1:
        return text
    raise ConfigError(f"chat id must be an integer or an @channelname, got {chat!r}")


def _resolve_token(token: str | None, token_env: str) -> str:
    if token:
        return token
    value = os.environ.get(token_env, "").strip()
    if not value:
        # a token pasted in place of the variable's name is a secret: never echo it
        shown = token_env if re.fullmatch(r"[A-Za-z_][A-Za-z0-9_]{0,127}", token_env) else None
        raise ConfigError(
            f"no Telegram bot token: set the environment variable {shown} "
            "or pass token= in the alert config"
            if shown
            else "no Telegram bot token: token_env must name an environment variable "
            "(letters, digits and _), not hold the token"
        )
    return value


def refuse_polling_reason(
    freqtrade_config: Mapping[str, Any] | None,
    token: str | None = None,
    token_env: str = DEFAULT_TOKEN_ENV,
) -> str | None:
    """Why liqsignal must not poll for commands, or None if it may.

    Telegram lets one process poll a token; Freqtrade's own Telegram polls when enabled, so a
    second poller on the same token gets ``Conflict`` errors and both lose commands. Sending
    alerts with the same token still works. The reason never contains the token.
    """
    if token is None:
        token = os.environ.get(token_env, "").strip() or None
    if not freqtrade_config or not token:
        return None
    tg = freqtrade_config.get("telegram") or {}
    if not isinstance(tg, Mapping) or not tg.get("enabled"):
        return None
    if str(tg.get("token") or "").strip() == token.strip():
        return (
            "Freqtrade's own Telegram bot is enabled with the same token "
            "(config telegram.enabled and telegram.token): two processes polling one token "
            "conflict, so liqsignal does not poll for commands. Alerts are still sent. "
            "Use a second bot token for liqsignal to get /status, /map, /clusters and /mute."
        )
    return None


_DURATION = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*([smhd]?)\s*$", re.IGNORECASE)


def parse_duration(text: str) -> float:
    """Seconds in ``"90s"``, ``"30m"``, ``"1h"``, ``"2d"`` (bare numbers are minutes)."""
    m = _DURATION.match(text)
    if not m:
        raise ConfigError(f"duration must look like 30m, 1h or 2d, got {text!r}")
    unit = (m.group(2) or "m").lower()
    return float(m.group(1)) * {"s": 1, "m": 60, "h": 3600, "d": 86400}[unit]


# -- the sender ------------------------------------------------------------------------------


class TelegramSender:
    """Send alerts to fixed chats through the Telegram Bot API.

    ``token``: the bot token, or None to read the environment variable ``token_env``.
    ``chat_ids``: the only chats that receive alerts and whose commands are answered.
    ``base_url`` / ``base_file_url``: a local Bot API server (``http://host:port/bot``);
    default is api.telegram.org. ``outbox``: needed for :meth:`flush` / :meth:`notify`.
    ``bot``: an already built ``telegram.Bot`` (tests); its token must be ``token``.

    Use as ``async with TelegramSender(...) as sender:`` or call :meth:`start` / :meth:`stop`.
    """

    def __init__(
        self,
        chat_ids: Iterable[int | str],
        *,
        token: str | None = None,
        token_env: str = DEFAULT_TOKEN_ENV,
        base_url: str | None = None,
        base_file_url: str | None = None,
        outbox: Outbox | None = None,
        retry: RetryPolicy | None = None,
        disable_notification: bool = False,
        batch_max: int = DEFAULT_BATCH_MAX,
        sleep: Callable[[float], Awaitable[Any]] = asyncio.sleep,
    ) -> None:
        if not (isinstance(batch_max, int) and not isinstance(batch_max, bool)
                and 1 <= batch_max <= 100):  # fmt: skip
            raise ConfigError(f"batch_max: expected an integer in [1, 100], got {batch_max!r}")
        #: At most this many pending text alerts go out as one message (1: one per alert).
        self.batch_max = batch_max
        chats = [_normalise_chat(c) for c in chat_ids]
        if not chats:
            raise ConfigError("chat_ids is empty: name at least one chat to send alerts to")
        self.chat_ids: tuple[int | str, ...] = tuple(dict.fromkeys(chats))
        secret = _resolve_token(token, token_env)
        install_token_redaction(secret)
        self.__token = secret
        self.base_url = base_url
        self.base_file_url = base_file_url
        self.outbox = outbox
        self.retry = retry or RetryPolicy()
        self.disable_notification = disable_notification
        self._sleep = sleep
        self._bot = self._build_bot()
        self._started = False
        self._dead_chats: dict[str, str] = {}
        self._wait_budget_used = 0.0
        self._flush_lock = asyncio.Lock()
        #: the flush waiting for the running one to end (callers join it: ``flush``)
        self._queued_flush: asyncio.Future[FlushResult] | None = None
        self._commands: dict[str, CommandCallback] = {}
        self._update_offset: int | None = None
        self.muted_until: float = 0.0
        self.polling_refused: str | None = None
        self._polling_task: asyncio.Task[None] | None = None
        #: Alerts whose enqueue failed (outbox busy): stored before anything else is sent.
        self._unstored: dict[str, Alert] = {}
        self._poll_failures = 0

    async def _ob(self, fn: Callable[..., Any], *args: Any, **kwargs: Any) -> Any:
        """Run one outbox call in a worker thread: SQLite never blocks the event loop."""
        return await asyncio.to_thread(fn, *args, **kwargs)

    def hold(self, alert: Alert) -> None:
        """Queue ``alert`` to be stored in the outbox by the next :meth:`flush`, before anything
        is sent (an alert the outbox refuses now, busy, is kept and stored later)."""
        self._unstored.setdefault(alert.key, alert)

    async def _store_unstored(self) -> str | None:
        """Enqueue the alerts a busy outbox refused earlier, in order; the reason if it still
        refuses (then nothing is sent: an alert is only ever sent from the outbox)."""
        assert self.outbox is not None
        if not self._unstored:
            return None
        outbox, unstored = self.outbox, dict(self._unstored)

        def store() -> tuple[list[str], BaseException | None]:  # one worker-thread hop
            done: list[str] = []
            for key, alert in unstored.items():
                try:
                    outbox.enqueue(alert)
                except Exception as exc:
                    return done, exc
                done.append(key)
            return done, None

        done, exc = await self._ob(store)
        for key in done:
            self._unstored.pop(key, None)
        return None if exc is None else _error_text(exc)

    def _build_bot(self) -> telegram.Bot:
        r = self.retry
        kwargs: dict[str, Any] = {}
        if self.base_url:
            kwargs["base_url"] = self.base_url
        if self.base_file_url:
            kwargs["base_file_url"] = self.base_file_url
        request = HTTPXRequest(
            connection_pool_size=8,
            read_timeout=r.read_timeout,
            write_timeout=r.write_timeout,
            connect_timeout=r.connect_timeout,
            media_write_timeout=r.media_write_timeout,
        )
        updates_request = HTTPXRequest(
            connection_pool_size=1,
            read_timeout=r.read_timeout,
            write_timeout=r.write_timeout,
            connect_timeout=r.connect_timeout,
        )
        return telegram.Bot(
            self.__token, request=request, get_updates_request=updates_request, **kwargs
        )

    def __repr__(self) -> str:
        return (
            f"TelegramSender(chats={list(self.chat_ids)!r}, base_url={self.base_url!r}, "
            f"outbox={self.outbox!r}, token=<hidden>)"
        )

    __str__ = __repr__

    @property
    def blocked_chats(self) -> dict[str, str]:
        """Chats this sender stopped sending to, with the reason."""
        return dict(self._dead_chats)

    # -- lifecycle -----------------------------------------------------------------------

    async def start(self) -> str | None:
        """Open the HTTP client and check the token with getMe. Returns None when ready, else
        the (redacted) reason; sending retries the start later, so this never raises."""
        if self._started:
            return None
        try:
            await self._bot.initialize()
        except Exception as exc:
            reason = _error_text(exc)
            logger.warning("Telegram start failed: %s", reason, exc_info=_bug(exc))
            return reason
        self._started = True
        logger.info("Telegram sender ready for %d chat(s)", len(self.chat_ids))
        return None

    async def stop(self) -> None:
        """Stop polling and close the HTTP client. Never raises."""
        await self.stop_polling()
        with contextlib.suppress(Exception):
            await self._bot.shutdown()
        self._started = False

    async def __aenter__(self) -> TelegramSender:
        await self.start()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.stop()

    # -- low level -----------------------------------------------------------------------

    async def _call(self, what: str, fn: Callable[[], Awaitable[Any]]) -> Any:
        """Run one Bot API call with the retry rules; raise one of the private outcomes."""
        failures = 0
        while True:
            try:
                return await fn()
            except RetryAfter as exc:
                wait = _retry_after_seconds(exc)
                budget = self.retry.max_retry_after_total - self._wait_budget_used
                if wait > budget:
                    raise _Temporary(
                        f"flood control: Telegram asks to wait {wait:g} s, more than the "
                        f"{budget:g} s left of this flush's wait budget"
                    ) from None
                logger.info("Telegram flood control on %s: waiting %g s", what, wait)
                self._wait_budget_used += wait
                await self._sleep(wait)
            except Forbidden as exc:
                raise _ChatDead(_error_text(exc)) from None
            except ChatMigrated as exc:
                raise _ChatDead(
                    f"group became a supergroup: configure chat id {exc.new_chat_id} instead"
                ) from None
            except BadRequest as exc:  # a NetworkError subclass: check it first
                if "chat not found" in exc.message.lower():
                    raise _ChatDead(_error_text(exc)) from None
                raise _Permanent(_error_text(exc)) from None
            except InvalidToken as exc:
                raise _Temporary(f"token rejected: {_error_text(exc)}") from None
            except (TimedOut, NetworkError) as exc:
                failures += 1
                if failures >= self.retry.attempts:
                    raise _Temporary(
                        f"{what} failed {failures} times, last: {_error_text(exc)}"
                    ) from None
                delay = self.retry.backoff(failures)
                logger.info(
                    "Telegram %s failed (%s), retry %d/%d in %.2f s",
                    what,
                    _error_text(exc),
                    failures,
                    self.retry.attempts - 1,
                    delay,
                )
                await self._sleep(delay)
            except TelegramError as exc:
                raise _Permanent(_error_text(exc)) from None
            except Exception as exc:  # unexpected: do not lose the alert, show the bug
                logger.error("unexpected error in %s", what, exc_info=exc)
                raise _Temporary(f"unexpected error in {what}: {_error_text(exc)}") from None

    def _plan(self, alert: Alert) -> list[tuple[str, str | None]]:
        """Parts of an alert: [("photo", caption or None), ("text", text)] as needed."""
        text = alert.text
        if _tg_len(text) > TEXT_LIMIT:  # alerts are short; cut rather than fail
            while _tg_len(text) > TEXT_LIMIT - 1:
                text = text[: len(text) - max(1, (_tg_len(text) - TEXT_LIMIT) // 2 + 1)]
            text += "…"
        if alert.photo is None:
            return [("text", text)]
        if _tg_len(alert.text) <= CAPTION_LIMIT:
            return [("photo", alert.text)]
        return [("photo", None), ("text", text)]

    async def _send_part(
        self, chat: int | str, kind: str, text: str | None, photo: bytes | None
    ) -> Any:
        if kind == "photo":
            assert photo is not None
            return await self._call(
                "sendPhoto",
                lambda: self._bot.send_photo(
                    chat_id=chat,
                    photo=bytes(photo),
                    caption=text,
                    parse_mode="HTML" if text else None,
                    disable_notification=self.disable_notification,
                ),
            )
        assert text is not None
        return await self._call(
            "sendMessage",
            lambda: self._bot.send_message(
                chat_id=chat,
                text=text,
                parse_mode="HTML",
                disable_notification=self.disable_notification,
                link_preview_options=telegram.LinkPreviewOptions(is_disabled=True),
            ),
        )

    def _report_dead(self, chat: int | str, reason: str, result: FlushResult) -> None:
        key = str(chat)
        if key in self._dead_chats:
            return
        self._dead_chats[key] = reason
        result.newly_blocked_chats[key] = reason
        logger.warning(
            "Telegram chat %s cannot receive alerts (%s): no more messages to it until restart",
            key,
            reason,
        )

    async def _deliver(
        self, alert: Alert, outbox_id: int | None, result: FlushResult
    ) -> AlertResult:
        """Send every part of ``alert`` to every live chat; raise _Temporary to stop a flush."""
        done: set[tuple[str, int]] = set()
        if self.outbox is not None and outbox_id is not None:
            done = await self._ob(self.outbox.delivered_parts, outbox_id)
        plan = self._plan(alert)
        ids: dict[str, list[int]] = {}
        delivered_somewhere = False
        for chat in self.chat_ids:
            if str(chat) in self._dead_chats:
                continue
            try:
                for part, (kind, text) in enumerate(plan):
                    if (str(chat), part) in done:
                        delivered_somewhere = True
                        continue
                    msg = await self._send_part(chat, kind, text, alert.photo)
                    ids.setdefault(str(chat), []).append(int(msg.message_id))
                    delivered_somewhere = True
                    if self.outbox is not None and outbox_id is not None:
                        await self._ob(
                            self.outbox.record_delivery, outbox_id, chat, part, msg.message_id
                        )
            except _ChatDead as exc:
                self._report_dead(chat, str(exc), result)
        if not delivered_somewhere:
            raise _Permanent(
                "no configured chat can receive messages: "
                + "; ".join(f"{c}: {r}" for c, r in self._dead_chats.items())
            )
        return AlertResult(alert.key, "sent", ids, outbox_id=outbox_id)

    # -- public sending ------------------------------------------------------------------

    async def send_alert(self, alert: Alert) -> FlushResult:
        """Send one alert right away, without the outbox. Never raises."""
        result = FlushResult()
        async with self._flush_lock:
            await self._send_alert(alert, result)
        return result

    async def _send_alert(self, alert: Alert, result: FlushResult) -> None:
        self._wait_budget_used = 0.0
        t0 = time.monotonic()
        try:
            await self._ensure_started()
            result.sent.append(await self._deliver(alert, None, result))
        except _Permanent as exc:
            result.failed.append(AlertResult(alert.key, "failed", error=str(exc)))
        except _Temporary as exc:
            result.pending.append(AlertResult(alert.key, "pending", error=str(exc)))
            result.stopped_early = str(exc)
        except Exception as exc:  # never into the caller
            result.pending.append(AlertResult(alert.key, "pending", error=_error_text(exc)))
            result.stopped_early = _error_text(exc)
        result.waited_s = time.monotonic() - t0

    async def _ensure_started(self) -> None:
        reason = await self.start()
        if reason is not None:
            raise _Temporary(f"cannot reach Telegram: {reason}")

    async def notify(self, alert: Alert) -> FlushResult:
        """Enqueue ``alert`` (idempotent on its key) and flush the outbox. Never raises.

        An alert is sent only once it is stored: when the outbox is busy (another process holds
        a write transaction) the alert is kept in memory, reported pending, and stored by the
        next ``notify`` or ``flush`` before anything is sent, so it is neither lost nor sent
        twice."""
        if self.outbox is None:
            return await self.send_alert(alert)
        self._unstored.setdefault(alert.key, alert)
        return await self.flush()

    async def flush(self) -> FlushResult:
        """Send every pending alert of the outbox, oldest first, and mark each one.

        Stops at the first alert that can only be retried later (network down, long flood
        wait), so alerts are never delivered out of order. Never raises.

        Callers arriving while a flush is already queued behind the running one join it
        instead of queueing another: that flush reads the outbox after they stored their
        alerts, so it sends them, and a burst of N alerting events costs two flushes, not N
        (each returns that flush's result, which may count the others' alerts too).
        """
        if self.outbox is None:
            result = FlushResult()
            result.stopped_early = "no outbox configured"
            return result
        while (queued := self._queued_flush) is not None:
            try:
                return await asyncio.shield(queued)
            except asyncio.CancelledError:
                task = asyncio.current_task()
                if queued.cancelled() and not (task is not None and task.cancelling()):
                    continue  # its caller was cancelled before it ran: queue one of our own
                raise
        fut: asyncio.Future[FlushResult] = asyncio.get_running_loop().create_future()
        self._queued_flush = fut
        try:
            result = await self._flush_when_free(fut)
        except BaseException:
            if self._queued_flush is fut:
                self._queued_flush = None
            fut.cancel()
            raise
        fut.set_result(result)
        return result

    async def _flush_when_free(self, fut: asyncio.Future[FlushResult]) -> FlushResult:
        result = FlushResult()
        assert self.outbox is not None
        async with self._flush_lock:
            if self._queued_flush is fut:  # running now: later callers queue the next one
                self._queued_flush = None
            t0 = time.monotonic()
            self._wait_budget_used = 0.0
            why = await self._store_unstored()
            if why is not None:
                result.stopped_early = f"outbox busy, nothing sent: {why}"
                for key in self._unstored:
                    result.pending.append(AlertResult(key, "pending", error=why))
                logger.warning("Alerts not sent yet (stored first): %s", why)
            else:
                try:
                    await self._flush(result)
                except Exception as exc:  # never into the caller
                    result.stopped_early = _error_text(exc)
                    logger.error("Telegram flush stopped: %s", result.stopped_early)
            result.waited_s = time.monotonic() - t0
            with contextlib.suppress(Exception):
                counts = await self._ob(self.outbox.counts)
                result.remaining = counts["pending"] + len(self._unstored)
        return result

    async def _flush(self, result: FlushResult) -> None:
        assert self.outbox is not None
        outbox, batch = self.outbox, self.batch_max > 1

        def read() -> tuple[list[OutboxEntry], set[int]]:  # one worker-thread hop
            pending = outbox.pending()
            ids = [e.id for e in pending]
            return pending, (outbox.partly_delivered(ids) if batch and len(ids) > 1 else set())

        entries, partial = await self._ob(read)
        if not entries:
            return
        muted = time.time() < self.muted_until
        if not muted:
            try:
                await self._ensure_started()
            except _Temporary as exc:
                result.stopped_early = str(exc)
                for e in entries:
                    result.pending.append(
                        AlertResult(e.alert.key, "pending", error=str(exc), outbox_id=e.id)
                    )
                return
        max_age = self.retry.max_age
        live = []
        for entry in entries:
            alert = entry.alert
            age = (dtm.datetime.now(dtm.UTC) - alert.created_at).total_seconds()
            if muted or (max_age is not None and age > max_age):
                why = (
                    "muted by /mute" if muted else f"expired: {age:.0f} s old, max_age {max_age:g}"
                )
                await self._ob(self.outbox.mark_failed, entry.id, why, permanent=True)
                result.failed.append(
                    AlertResult(alert.key, "failed", error=why, outbox_id=entry.id)
                )
                continue
            live.append(entry)
        i = 0
        while i < len(live):
            run = self._digest_run(live, i, partial)
            i += len(run)
            if len(run) > 1:
                outcome = await self._send_digest(run, result)
                if outcome == "stop":
                    return
                if outcome == "sent":
                    continue
            for entry in run:  # one alert, or a digest Telegram refused: one by one
                if not await self._send_entry(entry, result):
                    return

    def _digest_run(self, live: list[OutboxEntry], i: int, partial: set[int]) -> list[OutboxEntry]:
        """The pending alerts from ``live[i]`` on that go out as one message: consecutive
        text-only alerts (no picture, not partly delivered), at most ``batch_max`` of them and
        ``TEXT_LIMIT`` characters together. A burst then costs one Telegram call per chat, not
        one per alert (Telegram allows about one message per second per chat)."""
        run = [live[i]]

        def fits(e: OutboxEntry) -> bool:
            return e.alert.photo is None and e.id not in partial

        if self.batch_max < 2 or not fits(live[i]):
            return run
        size = _tg_len(live[i].alert.text)
        for e in live[i + 1 :]:
            add = _tg_len(DIGEST_SEPARATOR) + _tg_len(e.alert.text)
            if len(run) >= self.batch_max or not fits(e) or size + add > TEXT_LIMIT:
                break
            run.append(e)
            size += add
        return run

    async def _send_digest(self, run: list[OutboxEntry], result: FlushResult) -> str:
        """Send ``run`` as one message to every live chat. "sent"; "stop" (try again later,
        counted as an attempt of each); "split" (Telegram refused the digest, or no chat can
        receive: the caller sends them one by one, which names the bad one)."""
        assert self.outbox is not None
        ids = [e.id for e in run]
        await self._ob(self.outbox.note_attempts, ids)
        text = DIGEST_SEPARATOR.join(e.alert.text for e in run)
        delivered: dict[str, list[int]] = {}
        try:
            for chat in self.chat_ids:
                if str(chat) in self._dead_chats:
                    continue
                try:
                    msg = await self._send_part(chat, "text", text, None)
                except _ChatDead as exc:
                    self._report_dead(chat, str(exc), result)
                    continue
                delivered[str(chat)] = [int(msg.message_id)]
                await self._ob(self.outbox.mark_sent_together, ids, chat, msg.message_id)
        except _Permanent as exc:
            logger.warning("A digest of %d alerts was refused (%s): sending them one by one",
                           len(run), exc)  # fmt: skip
            return "split"
        except _Temporary as exc:
            for e in run:
                await self._retry_later(e, exc, result)
            result.stopped_early = str(exc)
            logger.warning("Telegram flush paused, will retry later: %s", exc)
            return "stop"
        if not delivered:
            return "split"
        await self._ob(self.outbox.mark_sent_many, ids)
        for e in run:
            result.sent.append(AlertResult(e.alert.key, "sent", dict(delivered), outbox_id=e.id))
        return "sent"

    async def _retry_later(
        self, entry: OutboxEntry, exc: BaseException, result: FlushResult
    ) -> None:
        """Count a temporary failure of ``entry``: pending again, or failed for good after
        ``max_alert_attempts``."""
        assert self.outbox is not None
        status = await self._ob(
            self.outbox.mark_failed,
            entry.id,
            str(exc),
            permanent=False,
            max_attempts=self.retry.max_alert_attempts,
        )
        item = AlertResult(entry.alert.key, status, error=str(exc), outbox_id=entry.id)
        if status == "failed":
            logger.warning("Alert %r given up after too many attempts: %s", entry.alert.key, exc)
            result.failed.append(item)
        else:
            result.pending.append(item)

    async def _send_entry(self, entry: OutboxEntry, result: FlushResult) -> bool:
        """Send one stored alert and mark it; False when the flush must stop (try later)."""
        assert self.outbox is not None
        alert = entry.alert
        await self._ob(self.outbox.note_attempt, entry.id)
        try:
            res = await self._deliver(alert, entry.id, result)
        except _Permanent as exc:
            await self._ob(self.outbox.mark_failed, entry.id, str(exc), permanent=True)
            logger.warning("Alert %r dropped: %s", alert.key, exc)
            result.failed.append(
                AlertResult(alert.key, "failed", error=str(exc), outbox_id=entry.id)
            )
            return True
        except _Temporary as exc:
            await self._retry_later(entry, exc, result)
            result.stopped_early = str(exc)
            logger.warning("Telegram flush paused, will retry later: %s", exc)
            return False
        await self._ob(self.outbox.mark_sent, entry.id)
        result.sent.append(res)
        return True

    # -- commands ------------------------------------------------------------------------

    def register_command(self, name: str, callback: CommandCallback) -> None:
        """Answer ``/name args...`` with ``callback(args)`` (sync or async), returning Telegram
        HTML or a :class:`CommandReply`. Built in: ``/help``, ``/status`` and ``/mute`` unless
        registered here (``/mute 1h`` drops alerts for an hour, ``/mute off`` ends it)."""
        clean = name.strip().lstrip("/").lower()
        if not re.fullmatch(r"[a-z0-9_]{1,32}", clean):
            raise ConfigError(f"command name must be 1-32 of a-z 0-9 _, got {name!r}")
        self._commands[clean] = callback

    def _builtin(self, cmd: str, args: list[str]) -> str | None:
        if cmd == "help":
            names = sorted({"help", "status", "mute", *self._commands})
            return "Commands: " + " ".join(f"/{n}" for n in names)
        if cmd == "status":
            counts = self.outbox.counts() if self.outbox else {}
            mute = (
                f"muted until {dtm.datetime.fromtimestamp(self.muted_until, dtm.UTC):%H:%M} UTC"
                if time.time() < self.muted_until
                else "not muted"
            )
            return f"liqsignal alerts: {mute}; outbox {escape(counts)}"
        if cmd == "mute":
            if args and args[0].lower() in ("off", "0", "no"):
                self.muted_until = 0.0
                return "Alerts unmuted."
            seconds = parse_duration(args[0] if args else "1h")
            self.muted_until = time.time() + seconds
            until = dtm.datetime.fromtimestamp(self.muted_until, dtm.UTC)
            return f"Alerts muted until {until:%Y-%m-%d %H:%M} UTC (/mute off to end)."
        return None

    async def _answer(self, cmd: str, args: list[str]) -> CommandReply:
        try:
            if cmd in self._commands:
                out = self._commands[cmd](args)
                if inspect.isawaitable(out):
                    out = await out
            else:
                out = self._builtin(cmd, args) or f"Unknown command /{escape(cmd)}. Try /help"
        except ConfigError as exc:
            out = escape(str(exc))
        except Exception as exc:
            logger.error("Command /%s failed: %s", cmd, _error_text(exc), exc_info=_bug(exc))
            out = f"/{escape(cmd)} failed: {escape(_error_text(exc))}"
        return out if isinstance(out, CommandReply) else CommandReply(str(out))

    async def poll_once(self, timeout: int = 0) -> int:
        """One getUpdates round: answer commands from allowed chats, ignore everyone else.
        Returns the number of commands answered. Never raises."""
        try:
            await self._ensure_started()
            updates = await self._bot.get_updates(
                offset=self._update_offset,
                timeout=timeout,
                allowed_updates=["message"],
                read_timeout=self.retry.read_timeout + timeout,
            )
        except Conflict as exc:
            self.polling_refused = (
                "another process polls this bot token (Telegram answered Conflict: "
                f"{_error_text(exc)}); liqsignal stopped polling, alerts are still sent"
            )
            logger.warning("Telegram command polling stopped: %s", self.polling_refused)
            return 0
        except Exception as exc:
            self._poll_failures += 1
            n = self._poll_failures
            if n & (n - 1) == 0:  # 1st, 2nd, 4th, 8th ... failure in a row: not one per second
                logger.warning(
                    "Telegram getUpdates failed (%d in a row; retrying with backoff): %s",
                    n,
                    _error_text(exc),
                    exc_info=_bug(exc),
                )
            return 0
        if self._poll_failures:
            logger.info("Telegram getUpdates works again after %d failure(s)", self._poll_failures)
            self._poll_failures = 0
        allowed = {str(c) for c in self.chat_ids}
        answered = 0
        for update in updates:
            self._update_offset = update.update_id + 1
            msg = update.effective_message
            chat = update.effective_chat
            if msg is None or chat is None or not msg.text or not msg.text.startswith("/"):
                continue
            if str(chat.id) not in allowed and (
                not chat.username or f"@{chat.username}" not in allowed
            ):
                logger.info("Ignored a command from chat %s: not an allowed chat", chat.id)
                continue
            words = msg.text.split()
            cmd = words[0][1:].split("@", 1)[0].lower()
            reply = await self._answer(cmd, words[1:])
            result = FlushResult()
            try:
                kind = "photo" if reply.photo else "text"
                await self._send_part(
                    chat.id,
                    kind,
                    reply.text[:CAPTION_LIMIT] if reply.photo else reply.text[:TEXT_LIMIT],
                    reply.photo,
                )
                answered += 1
            except _ChatDead as exc:
                self._report_dead(chat.id, str(exc), result)
            except (_Temporary, _Permanent) as exc:
                logger.warning("Could not answer /%s: %s", cmd, exc)
        return answered

    def poll_backoff_s(self, interval: float = 1.0) -> float:
        """Wait before the next getUpdates after ``_poll_failures`` failures in a row:
        doubling from ``interval`` up to 5 minutes, with
        jitter, so an outage costs a handful of requests and log lines, not one a second."""
        cap = max(interval, 300.0)
        base = min(cap, interval * 2.0 ** min(self._poll_failures, 30))
        return base * (0.5 + random.random() / 2.0)

    def start_polling(
        self,
        freqtrade_config: Mapping[str, Any] | None = None,
        interval: float = 1.0,
        long_poll: int = 20,
    ) -> str | None:
        """Answer commands in a background task on the running loop. Returns None when started,
        or the reason polling is refused (see :func:`refuse_polling_reason`)."""
        reason = refuse_polling_reason(freqtrade_config, self.__token)
        if reason:
            self.polling_refused = reason
            logger.warning("Telegram command polling refused: %s", reason)
            return reason
        self.polling_refused = None
        if self._polling_task is not None and not self._polling_task.done():
            return None

        async def loop() -> None:
            with contextlib.suppress(Exception):
                await self._ensure_started()
                await self._bot.delete_webhook(drop_pending_updates=False)
            while self.polling_refused is None:
                n = await self.poll_once(timeout=long_poll)
                if self._poll_failures:
                    await asyncio.sleep(self.poll_backoff_s(interval))
                elif n == 0:
                    await asyncio.sleep(interval)

        self._polling_task = asyncio.get_running_loop().create_task(loop())
        return None

    async def stop_polling(self) -> None:
        """Stop the polling task, if any."""
        task, self._polling_task = self._polling_task, None
        if task is not None:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await task
