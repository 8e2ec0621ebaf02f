"""Run the alert service: refresh the map on a schedule, detect events, send them to Telegram.

One job, three parts, all on one asyncio loop:

- an APScheduler ``AsyncIOScheduler`` interval job (misfires coalesced, one instance at a time)
  calls :meth:`AlertService.tick`: refresh the provider, then :meth:`AlertService.evaluate`;
- ``evaluate`` reads each market's snapshot, features and feed status, asks the
  :class:`~liqsignal.alerts.events.EventDetector` what happened, renders the messages (and a
  heatmap PNG with the armed pocket marked), writes them to the SQLite outbox, then flushes the
  outbox through :class:`~liqsignal.alerts.telegram.TelegramSender` (marked sent after);
- optional Telegram commands ``/status``, ``/map BTC``, ``/clusters BTC``, ``/mute 1h``.

Standalone: ``liqsignal alerts --config config.json`` (:mod:`liqsignal.cli_alerts`) stops
cleanly on SIGINT/SIGTERM. The service's other rooms: the provider's data as the detector's
inputs in :mod:`liqsignal.alerts.views`, message texts in :mod:`liqsignal.alerts.message`, the
picture in :func:`liqsignal.plot.render_pocket_png`. Inside Freqtrade: from the strategy's
``bot_start`` call :func:`start_in_background` (a thread with its own loop; the strategy keeps
reading the same provider) and ``stop()`` it in ``bot_cleanup``/at exit.

Settings: ``liqsignal.config.alert_settings`` reads a Freqtrade-style config into
``liqsignal.config.Settings`` (``AlertConfig`` from ``liqsignal.alerts``, markets from
``liqsignal.alerts.markets`` or ``exchange.pair_whitelist``, exchanges by
``liqsignal.config.resolve_exchanges``, the engine from ``liqsignal.engine``).
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import logging
import math
import signal
import threading
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pandas as pd

from liqsignal.alerts.events import (
    Event,
    EventDetector,
    EventRules,
    Pocket,
)
from liqsignal.alerts.message import (
    Alert,
    alert_for,
    escape,
    fmt_pct,
    fmt_price,
    fmt_price_range,
    fmt_usd,
    signed_distance,
)
from liqsignal.alerts.outbox import Outbox
from liqsignal.alerts.views import Provider, bar_view, feeds_of, market_context
from liqsignal.config import AlertConfig, ForecastConfig, Settings, alert_settings
from liqsignal.exceptions import ConfigError, LiqsignalError, traceback_of
from liqsignal.forecast import forecast_on_frame
from liqsignal.plot import render_pocket_png

__all__ = [
    "AlertService",
    "TickResult",
    "start_in_background",
]

logger = logging.getLogger(__name__)

SIDES = ("long", "short")


# -- the service -----------------------------------------------------------------------------


@dataclass
class TickResult:
    """What one tick did. Times from ``time.perf_counter``."""

    refreshed: bool = False
    refresh_error: str | None = None
    events: list[Event] = field(default_factory=list)
    alerts: list[Alert] = field(default_factory=list)
    sent: int = 0
    pending: int = 0
    failed: int = 0
    refresh_end: float = 0.0
    done: float = 0.0


class AlertService:
    """Refresh, detect, render, store, send. Build it, then :meth:`run` (standalone),
    :meth:`start_in_background` (inside Freqtrade) or call :meth:`tick` yourself.

    ``provider``: a ``MapProvider`` (or anything with its interface). ``sender``: a
    ``TelegramSender``; None builds one from the config (token from the config or the
    environment). ``refresh=False``: only evaluate (someone else refreshes the provider).
    """

    def __init__(
        self,
        provider: Provider,
        config: AlertConfig,
        *,
        markets: Sequence[str],
        sender: Any = None,
        outbox: Outbox | None = None,
        freqtrade_config: Mapping[str, Any] | None = None,
        refresh: bool = True,
    ) -> None:
        if not markets:
            raise ConfigError("liqsignal.alerts.markets: no market to watch")
        self.provider = provider
        self.config = config
        self.markets = tuple(markets)
        self.freqtrade_config = freqtrade_config or {}
        section = self.freqtrade_config.get("liqsignal") or {}
        raw = section.get("forecast") if isinstance(section, Mapping) else None
        try:  # parsed once (a bad section: the forecast's own warning, NaN columns, per tick)
            self._forecast: Any = ForecastConfig.from_dict(raw)
        except LiqsignalError:
            self._forecast = raw
        self.refresh_enabled = refresh
        self.detector = EventDetector(EventRules(**config.rule_values()))
        self._own_outbox = outbox is None and sender is None
        self.outbox = outbox if outbox is not None else getattr(sender, "outbox", None)
        self.sender = sender
        self.last_tick: TickResult | None = None
        self.last_refresh_at: datetime | None = None
        self.ticks = 0
        self._started = False
        self._tick_lock = asyncio.Lock()
        self._pruned_at = -math.inf
        self._live: asyncio.Queue[Any] = asyncio.Queue()
        self._live_lock = asyncio.Lock()
        #: Called with (event, TickResult) after each realized liquidation is handled (its
        #: alerts answered by Telegram): monitoring, benchmarks.
        self.on_handled: list[Callable[[Any, TickResult], None]] = []
        self._streams: Any = None
        self._live_tasks: list[asyncio.Task[Any]] = []
        self._thread: threading.Thread | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._stop_event: asyncio.Event | None = None
        self._ready = threading.Event()
        self.scheduler: Any = None
        #: What the outbox holds of the detector's tracked pockets, per (market, side).
        self._saved_tracked: dict[tuple[str, str], Any] = {}
        self._empty_warned: set[str] = set()
        self._job_task: asyncio.Task[Any] | None = None

    # -- lifecycle -----------------------------------------------------------------------

    def _build_sender(self) -> Any:
        from liqsignal.alerts.telegram import RetryPolicy, TelegramSender

        if not self.config.chat_ids:
            raise ConfigError("liqsignal.alerts.chat_ids is empty: name the chats to alert")
        sender = TelegramSender(
            self.config.chat_ids,
            token=self.config.bot_token,
            token_env=self.config.token_env,
            base_url=self.config.base_url,
            base_file_url=self.config.base_file_url,
            outbox=None,
            retry=RetryPolicy(max_age=self.config.max_age_s),
            disable_notification=self.config.disable_notification,
            batch_max=int(self.config.batch_max),
        )  # token checked first: no outbox file for a config that cannot send
        if self.outbox is None:
            self.outbox = Outbox(self.config.outbox)
        sender.outbox = self.outbox
        return sender

    async def start(self) -> None:
        """Open the sender, restore cooldowns from the outbox, resend what a previous run left
        pending, and start command polling if configured. Idempotent."""
        if self._started:
            return
        if self.sender is None:
            self.sender = self._build_sender()
        if self.outbox is None:
            self.outbox = getattr(self.sender, "outbox", None)
        if self.outbox is not None:
            stored = self.outbox.keys()  # keys and pocket USD only: no texts or pictures
            keys = list(stored)
            usd = {k: u for k, u in stored.items() if u is not None}
            tracked = self.outbox.tracked() if hasattr(self.outbox, "tracked") else []
            n = self.detector.restore(keys, usd, tracked=tracked)
            self._saved_tracked = {(str(t["market"]), str(t["side"])): t for t in tracked}
            logger.info(
                "Alert state restored from %d stored alert(s), %d tracked pocket(s)",
                n,
                len(tracked),
            )
        self._register_commands()
        await self.sender.start()
        if self.outbox is not None and self.outbox.counts().get("pending", 0):
            res = await self.sender.flush()
            logger.info(
                "Resent %d alert(s) left pending by the last run (%d still pending)",
                len(res.sent),
                res.remaining,
            )
        if self.config.polling:
            reason = self.sender.start_polling(self.freqtrade_config)
            if reason:
                logger.warning("Not answering Telegram commands: %s", reason)
        self._started = True

    async def aclose(self) -> None:
        """Stop polling, close the sender (and the outbox it owns). Never raises."""
        if self.sender is not None:
            with contextlib.suppress(Exception):
                await self.sender.stop()
        if self._own_outbox and self.outbox is not None:
            with contextlib.suppress(Exception):
                self.outbox.close()
        self._started = False

    # -- one round -----------------------------------------------------------------------

    async def tick(self) -> TickResult:
        """Refresh the provider (unless disabled), then evaluate. Never raises; one round at
        a time."""
        async with self._tick_lock:
            result = TickResult()
            if self.refresh_enabled:
                try:
                    await self.provider.refresh()
                    result.refreshed = True
                    self.last_refresh_at = datetime.now(UTC)
                except Exception as exc:
                    result.refresh_error = f"{type(exc).__name__}: {exc}"
                    logger.error(
                        "Refresh failed: %s",
                        result.refresh_error,
                        exc_info=traceback_of(exc),
                    )
            result.refresh_end = time.perf_counter()
            try:
                await self._evaluate(result)
            except Exception:
                logger.exception("Alert evaluation failed")
            await self._prune_outbox()
            result.done = time.perf_counter()
            self.ticks += 1
            self.last_tick = result
            return result

    async def _prune_outbox(self, every_s: float = 3600.0) -> None:
        """At most once per ``every_s``: delete sent alerts older than
        ``alerts.outbox_keep_days`` and drop pictures of sent alerts older than
        ``alerts.outbox_photo_days`` (the outbox would otherwise only grow)."""
        now = time.monotonic()
        if self.outbox is None or now - self._pruned_at < every_s:
            return
        self._pruned_at = now
        keep = float(self.config.outbox_keep_days) * 86_400.0
        photos = float(self.config.outbox_photo_days) * 86_400.0
        try:
            n = await asyncio.to_thread(self.outbox.prune, keep, photos)
        except LiqsignalError as exc:  # busy or damaged: the next round tries again
            logger.warning("Outbox not pruned: %s", exc)
            return
        if n:
            logger.info("Outbox: %d sent alert(s) older than %g days deleted", n, keep / 86_400)

    async def evaluate(self) -> TickResult:
        """Detect, store and send events for the provider's current state (no refresh)."""
        async with self._tick_lock:
            result = TickResult(refresh_end=time.perf_counter())
            await self._evaluate(result)
            result.done = time.perf_counter()
            return result

    async def _evaluate(self, result: TickResult) -> None:
        if not self._started:
            await self.start()
        now = datetime.now(UTC)
        pictures: list[tuple[int, Any, pd.DataFrame, Pocket]] = []
        for market in self.markets:
            try:
                events, snap, feat = self._market_events(market, now)
            except Exception as exc:
                logger.error("Cannot evaluate %s: %s: %s", market, type(exc).__name__, exc,
                             exc_info=traceback_of(exc))  # fmt: skip
                continue
            stale = self.detector.stale_exchanges(market)
            for ev in events:
                result.events.append(ev)
                if ev.kind in ("stale", "recovered") and not self.config.stale_notices:
                    continue
                if self.outbox is not None and self.outbox.has_key(ev.key):
                    continue
                result.alerts.append(alert_for(ev, now=now, stale=stale))
                if self.config.pictures and ev.pocket is not None and ev.kind != "consumed":
                    pictures.append((len(result.alerts) - 1, snap, feat, ev.pocket))
        if pictures:
            bars = self.config.picture_bars

            def render_all() -> list[bytes | None]:
                out: list[bytes | None] = []
                for i, snap, feat, pocket in pictures:
                    try:
                        out.append(
                            render_pocket_png(
                                snap,
                                feat,
                                market=result.alerts[i].market,
                                pocket=pocket,
                                label=_pocket_label(pocket),
                                bars=bars,
                            )
                        )
                    except Exception as exc:
                        logger.warning("Picture failed: %s: %s", type(exc).__name__, exc,
                                       exc_info=traceback_of(exc))  # fmt: skip
                        out.append(None)
                return out

            pngs = await asyncio.to_thread(render_all)
            for (i, *_), png in zip(pictures, pngs, strict=True):
                if png is not None:
                    result.alerts[i] = dataclasses.replace(result.alerts[i], photo=png)
        await self._deliver(result)
        for ev in result.events:
            logger.info("Alert event %s", ev.key)

    async def _deliver(self, result: TickResult) -> None:
        """Store ``result.alerts`` in the outbox, then send what is pending (the outbox is
        the record: an alert is sent only once stored); save the tracked pockets."""
        if not result.alerts and (self.outbox is None or not self.outbox.counts()["pending"]):
            await self._save_tracked()
            return
        if self.outbox is not None:
            hold = getattr(self.sender, "hold", None)
            for alert in result.alerts:
                if hold is not None:
                    hold(alert)  # the sender stores it first, and sends only what is stored
                    continue
                try:
                    await asyncio.to_thread(self.outbox.enqueue, alert)
                except Exception as exc:
                    logger.error("Could not store alert %r: %s", alert.key, exc,
                                 exc_info=traceback_of(exc))  # fmt: skip
            res = await self.sender.flush()
            await self._save_tracked()
        else:
            res = None
            for alert in result.alerts:
                r = await self.sender.send_alert(alert)
                result.sent += len(r.sent)
                result.failed += len(r.failed)
                result.pending += len(r.pending)
        if res is not None:
            result.sent, result.failed, result.pending = (
                len(res.sent),
                len(res.failed),
                res.remaining,
            )

    # -- realized liquidations, as they happen -------------------------------------------

    def on_liquidation(self, event: Any) -> None:
        """Callback for :class:`~liqsignal.data.streams.LiquidationStreams` (``on_event``):
        queue one realized liquidation for :meth:`handle_liquidation` on the service's loop."""
        self._live.put_nowait(event)

    async def _live_worker(self) -> None:
        """Each queued event into :meth:`handle_liquidation`, as its own task: detection runs
        one event at a time in arrival order (``_live_lock`` is first come, first served), while
        the alerts of earlier events are still being sent, so a quiet event never waits for a
        Telegram call. At stop, events already taken are finished (their alerts stored)."""
        inflight: set[asyncio.Task[Any]] = set()
        try:
            while True:
                event = await self._live.get()
                task = asyncio.create_task(self._handle_logged(event))
                inflight.add(task)
                task.add_done_callback(inflight.discard)
        finally:
            if inflight:
                await asyncio.wait(inflight, timeout=10.0)

    async def _handle_logged(self, event: Any) -> None:
        try:
            result = await self.handle_liquidation(event)
        except Exception:  # one bad event must not end live alerting
            logger.exception("Realized liquidation %r not handled", event)
            return
        for hook in self.on_handled:
            try:
                hook(event, result)
            except Exception as exc:
                logger.warning("on_handled hook failed: %s", exc, exc_info=traceback_of(exc))

    async def handle_liquidation(self, event: Any) -> TickResult:
        """One realized liquidation (``market``, ``side`` liquidated, ``price``, ``ts_ms``):
        consume the market's map at its price at once (``provider.on_liquidation``), send
        "consumed" when it traded through the pocket an "armed" alert is tracking, and
        re-evaluate the arming against the map after the event (``EventDetector.
        observe_liquidation``). Alerts go through the outbox like a bar's, without a picture
        (the picture waits for the next bar; a live alert should be quick)."""
        result = TickResult()
        market = str(getattr(event, "market", ""))
        side, price = str(getattr(event, "side", "")), float(getattr(event, "price", math.nan))
        if market not in self.markets or side not in SIDES or not (price > 0 and price < math.inf):
            return result  # another market's, or not a usable event: the map is not touched
        async with self._live_lock:
            consume = getattr(self.provider, "on_liquidation", None)
            usd = float(consume(event)) if consume is not None else 0.0
            ts = getattr(event, "ts_ms", None)
            when = datetime.fromtimestamp(ts / 1000.0, UTC) if ts else datetime.now(UTC)
            feat = self.provider.features(market).tail(25)
            events = self.detector.observe_liquidation(
                market,
                when,
                price,
                side,
                usd,
                # the map changed only if the event consumed levels: only then can the
                # pocket nearest price be another one (and a snapshot costs a few ms)
                rearm=self._rearm_pockets(market, feat, price) if usd > 0 else None,
                context=market_context(feat),
            )
            for ev in events:
                result.events.append(ev)
                if self.outbox is None or not self.outbox.has_key(ev.key):
                    result.alerts.append(alert_for(ev, now=when))
        # delivered outside the lock: the next event is detected while this one is sent (the
        # sender sends one flush at a time, the pending alerts as one digest, in order)
        if result.alerts:
            await self._deliver(result)
        for ev in result.events:
            logger.info("Alert event %s (realized liquidation)", ev.key)
        result.done = time.perf_counter()
        return result

    def start_live_streams(self, config: Any = None) -> Any:
        """With ``alerts.live_liquidations``: the venues' realized-liquidation streams of the
        service's markets (ccxt pro, written to the store), each event into
        :meth:`handle_liquidation` through the live worker; None otherwise. ``run`` calls it;
        ``config``: the streams' :class:`~liqsignal.data.streams.StreamConfig`. Stop with
        :meth:`stop_live_streams`."""
        if not self.config.live_liquidations:
            return None
        from liqsignal.data.streams import LiquidationStreams

        venues = list(dict.fromkeys(ex for m in self.markets for ex in self.provider.status(m)))
        streams = LiquidationStreams(
            venues,
            list(self.markets),
            datadir=self.config.datadir,
            ccxt_config=dict(self.config.ccxt_config or {}) or None,
            config=config,
            on_event=[self.on_liquidation],
        )
        streams.keep_events = False
        self._live_tasks = [
            asyncio.create_task(streams.run(), name="liqsignal-live-streams"),
            asyncio.create_task(self._live_worker(), name="liqsignal-live-alerts"),
        ]
        self._streams = streams
        logger.info("live realized liquidations: %s on %s", ", ".join(self.markets), venues)
        return streams

    async def stop_live_streams(self) -> None:
        """Stop the streams gracefully (their last events written to the store: up to 10 s,
        then cancelled), then the live worker (events it has taken are finished)."""
        streams, tasks = self._streams, self._live_tasks
        if streams is not None:
            streams.stop()
        for t in tasks:
            if t.get_name() != "liqsignal-live-streams":
                t.cancel()
            with contextlib.suppress(BaseException):
                await asyncio.wait_for(t, 10.0)  # cancels it on timeout
        self._streams, self._live_tasks = None, []

    def _rearm_pockets(self, market: str, feat: pd.DataFrame, price: float) -> dict[str, Any]:
        """Per side the last bar armed: the pocket nearest price in the map now."""
        if feat.empty:
            return {}
        row = feat.iloc[-1]
        sides = [s for s in SIDES if float(row.get(f"liq_{s}_armed", 0.0) or 0.0) > 0]
        if not sides:
            return {}
        try:
            snap = self.provider.snapshot(market)
        except LiqsignalError as exc:
            logger.warning("No map of %s to re-arm from: %s", market, exc)
            return {}
        out: dict[str, Any] = {}
        for side in sides:
            near = min(snap.clusters_on(side), key=lambda c: abs(c.price - price), default=None)
            if near is None:
                continue
            score = row.get(f"liq_{side}_armed_score")
            out[side] = Pocket(
                side,
                near.low,
                near.high,
                near.price,
                near.usd,
                (near.price - price) / price * 100.0,
                max(1, int(near.depth)),
                near.cascade_usd,
                dict(near.shares),
                None if score is None or not math.isfinite(float(score)) else float(score),
            )
        return out

    def _warn_if_empty(self, market: str, snap: Any, price: float) -> None:
        """Warn once per market while its map holds no levels (it can then never alert)."""
        levels = getattr(snap, "levels", None)
        empty = levels is None or len(levels) == 0
        if empty and market not in self._empty_warned:
            self._empty_warned.add(market)
            logger.warning(
                "%s: the liquidation map holds no levels at price %s, so it cannot alert; check "
                "the grid (liqsignal.engine step / step_bps, or liqsignal.alerts.market_engines) "
                "and that open interest arrives for it",
                market,
                fmt_price(price) if math.isfinite(price) and price > 0 else price,
            )
        elif not empty and market in self._empty_warned:
            self._empty_warned.discard(market)
            logger.info("%s: the map holds levels again", market)

    async def _save_tracked(self) -> None:
        """Keep the outbox's copy of the pockets each side tracks in step with the detector."""
        outbox = self.outbox
        if outbox is None or not hasattr(outbox, "save_tracked"):
            return
        for market in self.markets:
            for side in ("long", "short"):
                state = self.detector.tracked_state(market, side)
                if self._saved_tracked.get((market, side)) == state:
                    continue
                try:
                    await asyncio.to_thread(outbox.save_tracked, market, side, state)
                except Exception as exc:  # retried next round (the copy is left unchanged)
                    logger.warning("Could not save the tracked %s %s pocket: %s", market, side,
                                   exc, exc_info=traceback_of(exc))  # fmt: skip
                    continue
                self._saved_tracked[(market, side)] = state

    def _market_events(self, market: str, now: datetime) -> tuple[list[Event], Any, pd.DataFrame]:
        events: list[Event] = []
        try:
            status = self.provider.status(market)
        except Exception as exc:
            logger.warning("No status for %s: %s", market, exc, exc_info=traceback_of(exc))
            status = {}
        feeds = feeds_of(status)
        events += self.detector.observe_feeds(market, feeds, now)
        if feeds and all(f.stale for f in feeds):
            return events, None, pd.DataFrame()
        # the provider's features carry the reference exchange's prices, OI and funding
        feat = self.provider.features(market).tail(max(self.config.picture_bars, 25))
        feat = forecast_on_frame(feat, self._forecast)
        snap = self.provider.snapshot(market)
        price = float(getattr(snap, "price", 0.0) or self.provider.price(market))
        self._warn_if_empty(market, snap, price)
        view = bar_view(market, snap, feat, price)
        if view is not None:
            events += self.detector.observe(view)
        return events, snap, feat

    # -- commands ------------------------------------------------------------------------

    def find_market(self, text: str) -> str:
        """``BTC`` or ``btc/usdt:usdt`` -> the configured market; ConfigError if none."""
        t = text.strip().upper()
        for m in self.markets:
            if m.upper() == t or m.upper().split("/")[0] == t:
                return m
        raise ConfigError(f"unknown market {text!r}; watching: {', '.join(self.markets)}")

    def clusters_text(self, market: str, limit: int = 4) -> str:
        snap = self.provider.snapshot(market)
        lines = [f"<b>{escape(market)}</b> price {fmt_price(snap.price)}"]
        for side in ("short", "long"):
            cl = sorted(snap.clusters_on(side), key=lambda c: abs(c.distance_pct))[:limit]
            lines.append(f"<b>{side}</b> pockets ({'above' if side == 'short' else 'below'}):")
            if not cl:
                lines.append("  none in range")
            for c in cl:
                shares = " ".join(f"{escape(k)} {v * 100:.0f}%" for k, v in c.shares.items())
                lines.append(
                    f"  {fmt_price_range(c.low, c.high)} · {fmt_usd(c.usd)} · "
                    f"{fmt_pct(signed_distance(side, c.distance_pct))} · depth {c.depth}"
                    + (f" · {shares}" if shares else "")
                )
        stale = self.detector.stale_exchanges(market)
        if stale:
            lines.append(f"<i>stale: {escape(', '.join(stale))}</i>")
        return "\n".join(lines)

    def status_text(self) -> str:
        lines = ["<b>liqsignal alerts</b>"]
        when = (
            f"{self.last_refresh_at:%Y-%m-%d %H:%M:%S} UTC" if self.last_refresh_at else "not yet"
        )
        lines.append(f"last refresh {when}; {self.ticks} round(s)")
        for m in self.markets:
            try:
                feeds = feeds_of(self.provider.status(m))
                parts = [f"{f.exchange} {'STALE' if f.stale else 'ok'}" for f in feeds]
                lines.append(f"{escape(m)}: {escape(', '.join(parts) or 'no status')}")
            except Exception as exc:
                lines.append(f"{escape(m)}: status unavailable ({escape(type(exc).__name__)})")
        sender = self.sender
        if sender is not None:
            muted = time.time() < getattr(sender, "muted_until", 0.0)
            lines.append("muted" if muted else "not muted")
            if sender.outbox is not None:
                lines.append(f"outbox {escape(sender.outbox.counts())}")
            if getattr(sender, "polling_refused", None):
                lines.append(f"<i>{escape(sender.polling_refused)}</i>")
        return "\n".join(lines)

    def _register_commands(self) -> None:
        from liqsignal.alerts.telegram import CommandReply

        sender = self.sender
        if sender is None or not hasattr(sender, "register_command"):
            return

        def status(args: list[str]) -> str:
            return self.status_text()

        def clusters(args: list[str]) -> str:
            return self.clusters_text(self.find_market(args[0] if args else self.markets[0]))

        async def map_(args: list[str]) -> CommandReply:
            market = self.find_market(args[0] if args else self.markets[0])
            snap = self.provider.snapshot(market)
            feat = self.provider.features(market).tail(max(self.config.picture_bars, 25))
            png = await asyncio.to_thread(
                render_pocket_png, snap, feat, market=market, bars=self.config.picture_bars
            )
            return CommandReply(self.clusters_text(market, limit=2), photo=png)

        sender.register_command("status", status)
        sender.register_command("clusters", clusters)
        sender.register_command("map", map_)

    # -- scheduling ----------------------------------------------------------------------

    async def _job(self) -> None:
        self._job_task = asyncio.current_task()
        try:
            await self.tick()
        except asyncio.CancelledError:
            # shutdown during a round (say a Telegram flood wait): unsent alerts stay in the
            # outbox for the next start; not re-raised, so the scheduler logs no ERROR traceback
            logger.info("liqsignal alerts: the running round was stopped by shutdown")
        finally:
            self._job_task = None

    async def run(self, stop: asyncio.Event | None = None, *, install_signals: bool = True) -> None:
        """Run until ``stop`` is set (or SIGINT/SIGTERM, when ``install_signals`` and on the
        main thread): an interval job, first run now, misfires coalesced, one at a time."""
        from liqsignal._optional import require

        require("apscheduler", extra="alerts", feature="the alert service's schedule")
        from apscheduler.schedulers.asyncio import AsyncIOScheduler
        from apscheduler.triggers.interval import IntervalTrigger

        loop = asyncio.get_running_loop()
        stop = stop or asyncio.Event()
        self._stop_event = stop
        installed: list[signal.Signals] = []
        if install_signals and threading.current_thread() is threading.main_thread():
            for sig in (signal.SIGINT, signal.SIGTERM):
                try:
                    loop.add_signal_handler(sig, stop.set)
                    installed.append(sig)
                except (NotImplementedError, RuntimeError):  # pragma: no cover - Windows
                    pass
        scheduler = AsyncIOScheduler(event_loop=loop, timezone=UTC)
        self.scheduler = scheduler
        try:
            await self.start()
            scheduler.add_job(
                self._job,
                IntervalTrigger(seconds=self.config.interval_s, timezone=UTC),
                id="liqsignal-alerts",
                name="liqsignal alerts: refresh and evaluate",
                coalesce=True,
                max_instances=1,
                misfire_grace_time=max(1, int(self.config.misfire_grace_s)) or None,
                next_run_time=datetime.now(UTC),
            )
            scheduler.start()
            self.start_live_streams()
            self._ready.set()
            logger.info(
                "liqsignal alerts running: %d market(s), every %g s",
                len(self.markets),
                self.config.interval_s,
            )
            await stop.wait()
            logger.info("liqsignal alerts stopping")
        finally:
            self._ready.set()
            await self.stop_live_streams()
            if scheduler.running:
                scheduler.shutdown(wait=False)
            for sig in installed:
                loop.remove_signal_handler(sig)
            job = self._job_task
            if job is not None and not job.done():
                job.cancel()  # a round waiting (flood control, a slow venue) ends now
                with contextlib.suppress(BaseException):
                    await asyncio.wait_for(asyncio.shield(job), 10.0)
            async with self._tick_lock:  # a round started outside the scheduler
                pass
            await self.aclose()

    # -- inside Freqtrade ----------------------------------------------------------------

    def start_in_background(self, timeout: float = 30.0) -> AlertService:
        """Run :meth:`run` in a daemon thread with its own event loop; return at once (after
        the scheduler is up, at most ``timeout`` s). The caller's loop is never blocked."""
        if self._thread is not None and self._thread.is_alive():
            return self
        self._ready.clear()

        def target() -> None:
            loop = asyncio.new_event_loop()
            self._loop = loop
            asyncio.set_event_loop(loop)
            try:
                self._stop_event = asyncio.Event()
                loop.run_until_complete(self.run(self._stop_event, install_signals=False))
            except Exception:
                logger.exception("liqsignal alerts thread stopped on an error")
            finally:
                self._ready.set()
                with contextlib.suppress(Exception):
                    loop.run_until_complete(loop.shutdown_asyncgens())
                loop.close()

        self._thread = threading.Thread(target=target, name="liqsignal-alerts", daemon=True)
        self._thread.start()
        self._ready.wait(timeout)
        return self

    def stop(self, timeout: float = 30.0) -> bool:
        """Stop the background thread (finishing a running round) and wait for it. Returns
        True when it ended within ``timeout``."""
        thread, loop, ev = self._thread, self._loop, self._stop_event
        if thread is None:
            return True
        if loop is not None and ev is not None and not loop.is_closed():
            with contextlib.suppress(RuntimeError):
                loop.call_soon_threadsafe(ev.set)
        thread.join(timeout)
        alive = thread.is_alive()
        if not alive:
            self._thread = None
        return not alive

    @property
    def running(self) -> bool:
        return self._thread is not None and self._thread.is_alive()


def _provider_from_settings(settings: Settings) -> Any:
    from liqsignal.data.provider import MapProvider, MarketSpec

    a = settings.alerts
    specs = [MarketSpec(m.market, m.exchanges, m.timeframe) for m in settings.markets]
    return MapProvider(
        specs,
        config=dict(settings.engines) or settings.engine,
        datadir=a.datadir,
        ccxt_config=dict(settings.ccxt_config) if settings.ccxt_config else None,
        stale_after_bars=a.stale_after_bars,
        history_bars=a.history_bars,
        feed_timeout_s=a.venue_timeout_s or a.interval_s / 2.0,
    )


def start_in_background(
    config: Mapping[str, Any] | str | Path,
    *,
    provider: Provider | None = None,
    refresh: bool = True,
    sender: Any = None,
    outbox: Outbox | None = None,
) -> AlertService | None:
    """From a strategy's ``bot_start``: read the Freqtrade config (``self.config``), start the
    alert service in a background thread sharing ``provider``, return it (call ``.stop()`` on
    exit). Returns None when ``liqsignal.alerts.enabled`` is false. Raises ``ConfigError`` on a
    bad config, before any thread starts."""
    settings = alert_settings(config)
    if not settings.alerts.enabled:
        logger.info("liqsignal alerts disabled (liqsignal.alerts.enabled is false)")
        return None
    prov = provider if provider is not None else _provider_from_settings(settings)
    service = AlertService(
        prov,
        settings.alerts,
        markets=[m.market for m in settings.markets],
        sender=sender,
        outbox=outbox,
        freqtrade_config=settings.freqtrade_config,
        refresh=refresh,
    )
    if sender is None:
        service.sender = service._build_sender()  # token and chats checked here, not later
    return service.start_in_background()


def _pocket_label(pocket: Pocket | None) -> str | None:
    return f"armed {pocket.side} pocket {fmt_usd(pocket.usd)}" if pocket is not None else None
