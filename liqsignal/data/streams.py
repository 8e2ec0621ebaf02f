"""Realized liquidations live: ccxt.pro streams of several venues and markets, into the store.

:class:`LiquidationStreams` runs one :class:`VenueStream` per exchange, concurrently, each with
the real ccxt.pro client of that venue (``watch_liquidations_for_symbols`` on Binance USD-M and
OKX, one ``watch_liquidations`` per symbol on Bybit, which has no multi-symbol call), and sends
every event to the store (:class:`liqsignal.data.liquidations.LiquidationStore`) and to
callbacks (e.g. :meth:`liqsignal.data.provider.MapProvider.on_liquidation`)::

    streams = LiquidationStreams(["binance", "bybit", "okx"], ["BTC", "ETH"], datadir=...)
    await streams.run(duration=60)          # or run() until streams.stop()

What each venue stream does:

* **Normalise** each ccxt liquidation to a :class:`StreamEvent` with ``side`` the side
  liquidated: ccxt's unified ``side`` keeps the venue's meaning (Binance and OKX: the forced
  order, SELL = a long liquidated; Bybit: the position, Buy = a long liquidated; OKX's
  ``posSide`` wins when present), read with :func:`~liqsignal.data.liquidations.normalise_side`.
  ``amount`` is base units: ccxt's stream parsers leave ``contractSize`` empty, so contracts are
  multiplied by the market's contract size here (OKX BTC: 0.01 BTC per contract).
* **Never miss what ccxt parsed**: with ``newUpdates`` a ccxt watch returns only the event that
  woke it; events that arrive together (one Bybit / OKX message with several, or frames read in
  one burst) land only in ccxt's ``liquidations`` cache. The stream wraps the client's message
  handler and takes every liquidation appended to that cache by each frame (with the frame's
  arrival time); the watch calls only keep the subscriptions alive.
* **Deduplicate**: the same event seen twice (a venue resending, a replay after a reconnect) is
  dropped by its key (venue id when there is one, else symbol, time, side, price, amount); the
  store drops duplicates across restarts too. Out-of-order events are kept as they come; the
  store sorts them.
* **Stall detection**: ccxt pings every ``keep_alive`` seconds and the venue answers, so a
  healthy connection always has inbound frames; no frame for ``read_timeout`` seconds is a stall,
  handled as a disconnect.
* **Reconnect** with exponential backoff and full jitter (``backoff_base * factor**n`` capped
  at ``backoff_max``, times a random factor in ``[1 - jitter, 1]``), resubscribe, and record the
  time from the last frame of the lost connection to the first frame of the new one (the
  subscription answer) as a GAP in the store (``record_gap``), not as zero liquidations. Time the
  stream was healthy is recorded as covered (``record_coverage``, up to the last frame seen).
* A venue that is down never stops the others; a failing disk keeps the events in memory and
  retries at the next flush; a callback that raises is logged and the stream goes on.

Nothing here logs the ccxt config: API keys (not needed for these public streams) and tokens
never reach a log line; exception texts are scrubbed of every secret in the config.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import logging
import math
import random
import time
from collections import OrderedDict, deque
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import ccxt
import ccxt.pro as ccxtpro
import pandas as pd

from liqsignal.data.exchanges import EXCHANGES, _deep_merge
from liqsignal.data.liquidations import LiquidationStore, _finite, make_events, normalise_side
from liqsignal.exceptions import ConfigError, LiqsignalError, traceback_of

__all__ = [
    "STREAM_VENUES",
    "LiquidationStreams",
    "MarketStats",
    "StreamConfig",
    "StreamEvent",
    "VenueStream",
]

#: venues with a public liquidation stream in ccxt.pro, and how it is watched
STREAM_VENUES: dict[str, str] = {
    "binance": "watch_liquidations_for_symbols",  # <symbol>@forceOrder (or !forceOrder@arr)
    "bybit": "watch_liquidations",  # allLiquidation.<symbol>, one topic per symbol
    "okx": "watch_liquidations_for_symbols",  # liquidation-orders, instType SWAP
}
_SECRET_KEYS = ("apiKey", "secret", "password", "uid", "privateKey", "walletAddress", "token")

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class StreamConfig:
    """Timing of the streams. Seconds throughout.

    ``read_timeout``: no inbound frame for this long is a stall (must exceed ``keep_alive``).
    ``keep_alive``: ccxt's ping interval on these connections. ``backoff_*`` / ``jitter``:
    reconnect delays. ``connect_timeout``: a (re)connection that has not answered the
    subscription after this long is given up and retried. ``flush_interval``: how often events,
    coverage and gaps are written. ``tick``: how often the supervisor checks the connections.
    ``binance_all_markets``: subscribe to Binance's ``!forceOrder@arr`` (every symbol, filtered
    here) instead of one ``<symbol>@forceOrder`` stream per market.
    """

    read_timeout: float = 30.0
    keep_alive: float = 10.0
    backoff_base: float = 0.5
    backoff_factor: float = 2.0
    backoff_max: float = 30.0
    jitter: float = 0.5
    connect_timeout: float = 15.0
    flush_interval: float = 1.0
    tick: float = 0.25
    binance_all_markets: bool = False
    dedupe_keys: int = 200_000

    def __post_init__(self) -> None:
        for name in ("read_timeout", "keep_alive", "backoff_base", "backoff_max", "tick"):
            v = getattr(self, name)
            if not (isinstance(v, int | float) and math.isfinite(v) and v > 0):
                raise ConfigError(f"streams.{name}: expected a number > 0, got {v!r}")
        if self.read_timeout <= self.keep_alive:
            raise ConfigError(
                f"streams.read_timeout ({self.read_timeout}) must exceed keep_alive "
                f"({self.keep_alive}): a quiet healthy connection would look stalled"
            )
        if self.backoff_factor < 1:
            raise ConfigError(f"streams.backoff_factor: expected >= 1, got {self.backoff_factor}")
        if not 0 <= self.jitter <= 1:
            raise ConfigError(f"streams.jitter: expected 0..1, got {self.jitter}")

    def backoff(self, attempt: int, rng: random.Random) -> float:
        """Delay before reconnection attempt ``attempt`` (1, 2, ...)."""
        raw = min(self.backoff_max, self.backoff_base * self.backoff_factor ** max(0, attempt - 1))
        return raw * (1.0 - self.jitter * rng.random())


@dataclass(frozen=True)
class StreamEvent:
    """One realized liquidation from a stream (``side``: the side liquidated)."""

    exchange: str
    symbol: str  # ccxt symbol
    market: str  # the name the user asked for ("BTC")
    side: str
    price: float
    amount: float  # base units
    usd: float
    ts_ms: int  # the venue's event time
    id: str = ""
    received: float = 0.0  # time.perf_counter() when the frame was handed to liqsignal

    def key(self) -> tuple[Any, ...]:
        if self.id:
            return (self.symbol, "id", self.id)
        return (self.symbol, self.ts_ms, self.side, self.price, self.amount)

    def row(self) -> dict[str, Any]:
        return {
            "timestamp": self.ts_ms,
            "exchange": self.exchange,
            "symbol": self.symbol,
            "side": self.side,
            "price": self.price,
            "amount": self.amount,
            "usd": self.usd,
            "id": self.id,
        }


@dataclass
class MarketStats:
    """What the watch table shows for one (venue, market)."""

    events: int = 0
    duplicates: int = 0
    last_event_wall: float | None = None  # time.time() of the last event received
    recent: deque[tuple[float, str, float]] = field(default_factory=deque)  # (wall, side, usd)

    def add(self, ev: StreamEvent, wall: float) -> None:
        self.events += 1
        self.last_event_wall = wall
        self.recent.append((wall, ev.side, ev.usd))
        self.trim(wall)

    def trim(self, wall: float, window: float = 60.0) -> None:
        while self.recent and self.recent[0][0] < wall - window:
            self.recent.popleft()

    def usd_last(self, side: str, wall: float, window: float = 60.0) -> float:
        self.trim(wall, window)
        return sum(u for _, s, u in self.recent if s == side)


@dataclass
class Gap:
    exchange: str
    symbols: tuple[str, ...]
    start_ms: int
    end_ms: int

    @property
    def seconds(self) -> float:
        return (self.end_ms - self.start_ms) / 1000.0


class _Lost(Exception):
    """The connection is gone (closed by the server, or replaced)."""


class _Stall(_Lost):
    """No inbound frame for longer than the read timeout (or no answer to a subscription)."""


def _now_ms() -> int:
    return int(time.time() * 1000)


def _secrets_of(config: Mapping[str, Any]) -> list[str]:
    out = []
    for k in _SECRET_KEYS:
        v = config.get(k)
        if isinstance(v, str) and len(v) >= 4:
            out.append(v)
    return out


def _scrub(text: str, secrets: Sequence[str]) -> str:
    for s in secrets:
        text = text.replace(s, "***")
    return text


class VenueStream:
    """The liquidation stream of one venue for some markets, with reconnects and gaps.

    ``sink(event)`` gets every new event; ``on_gap(gap)`` every gap; ``on_covered(exchange,
    symbols, start_ms, end_ms)`` the healthy time. Normally made by :class:`LiquidationStreams`.
    """

    def __init__(
        self,
        exchange: str,
        markets: Sequence[str],
        ccxt_config: Mapping[str, Any] | None = None,
        config: StreamConfig | None = None,
        sink: Callable[[StreamEvent], None] | None = None,
        on_gap: Callable[[Gap], None] | None = None,
        on_covered: Callable[[str, tuple[str, ...], int, int], None] | None = None,
        seed: int | None = None,
    ) -> None:
        if exchange not in STREAM_VENUES:
            raise ConfigError(
                f"exchange: no liquidation stream for {exchange!r}; streams exist for "
                f"{', '.join(STREAM_VENUES)}"
            )
        if not markets:
            raise ConfigError(f"{exchange}: no markets to watch")
        self.exchange = exchange
        self.markets = list(markets)
        self.config = config or StreamConfig()
        self.sink = sink or (lambda ev: None)
        self.on_gap = on_gap or (lambda gap: None)
        self.on_covered = on_covered or (lambda ex, syms, a, b: None)
        self._rng = random.Random(seed)
        self._secrets = _secrets_of(ccxt_config or {})
        spec = EXCHANGES[exchange]
        cfg = self.config
        settings: dict[str, Any] = {
            "enableRateLimit": True,
            "newUpdates": True,
            "options": {**dict(spec.options), "liquidationsLimit": 10_000},
            "streaming": {"keepAlive": int(cfg.keep_alive * 1000), "maxPingPongMisses": 1e9},
        }
        given = dict(ccxt_config or {})
        dropped = sorted(k for k in _SECRET_KEYS if k in given)
        for k in dropped:  # public streams need no credentials: never sent, never logged
            del given[k]
        if dropped:
            logger.info(
                "%s: public liquidation streams need no credentials; ignoring %s",
                exchange,
                ", ".join(dropped),
            )
        settings = _deep_merge(settings, given)
        self.api: Any = getattr(ccxtpro, spec.ccxt_id)(settings)
        self.state = "connecting"
        self.symbols: dict[str, str] = {}  # ccxt symbol -> market name
        self.failed: str | None = None  # permanent failure text (no market resolvable, ...)
        self.errors: dict[str, str] = {}  # market -> why it is not watched
        self.connects = 0
        self.reconnects = 0
        self.stalls = 0
        self.malformed = 0
        self.duplicates = 0
        self.ignored = 0  # events of symbols not watched (OKX's channel carries every swap)
        self.events = 0
        self.gaps: list[Gap] = []
        self.lost_since_ms: int | None = None  # start of the open gap (None: none open)
        self.last_frame_ms: int | None = None
        self._covered_from: int | None = None
        self._pending: deque[tuple[Any, float]] = deque()  # (ccxt liquidation, arrival)
        self._first_frame_ms: int | None = None  # first frame of the current connection
        self._seen: OrderedDict[tuple[Any, ...], None] = OrderedDict()
        self._stop = asyncio.Event()
        self._hook()

    # -- helpers ----------------------------------------------------------------------------
    def _log(self, level: int, msg: str, *args: Any, exc: BaseException | None = None) -> None:
        """Log with the client's secrets scrubbed; ``exc``: add its traceback (for a bug in
        liqsignal's own code, whose frames hold no credentials)."""
        text = msg % args if args else msg
        logger.log(level, "%s", _scrub(text, self._secrets), exc_info=exc)

    def stop(self) -> None:
        self._stop.set()

    def _resolve(self) -> None:
        markets = self.api.markets or {}
        self.symbols.clear()
        for m in self.markets:
            if "/" in m:
                cand = [m]
            else:
                cand = [f"{m.upper()}/{s}:{s}" for s in EXCHANGES[self.exchange].settles]
            sym = next((c for c in cand if c in markets and markets[c].get("swap")), None)
            if sym is None:
                self.errors[m] = f"{self.exchange}: no linear perpetual for {m!r} (looked for "
                self.errors[m] += f"{', '.join(cand)})"
                self._log(logging.ERROR, "%s", self.errors[m])
                continue
            self.symbols[sym] = m
        if not self.symbols:
            raise ConfigError(f"{self.exchange}: none of {self.markets} is listed")

    def _watchers(self) -> dict[str, Callable[[], Any]]:
        syms = list(self.symbols)
        if self.exchange == "bybit":
            return {s: functools.partial(self.api.watch_liquidations, s) for s in syms}
        if self.exchange == "binance" and self.config.binance_all_markets:
            return {"*": lambda: self.api.watch_liquidations_for_symbols([])}
        return {"*": lambda: self.api.watch_liquidations_for_symbols(syms)}

    def _clients(self) -> list[Any]:
        return list((getattr(self.api, "clients", None) or {}).values())

    # -- events -----------------------------------------------------------------------------
    def _hook(self) -> None:
        """Wrap this client's message handler: note when each frame came (the first frame of a
        connection is the subscription's answer) and collect every liquidation ccxt parses from
        it, with the frame's arrival time."""
        orig = self.api.handle_message

        def handle(client: Any, message: Any) -> None:
            t = time.perf_counter()
            if self._first_frame_ms is None:
                self._first_frame_ms = _now_ms()
            cache = getattr(self.api, "liquidations", None)
            last = cache[-1] if cache else None
            try:
                orig(client, message)
            finally:
                cache = getattr(self.api, "liquidations", None)
                if cache and cache[-1] is not last:
                    new = []
                    for item in reversed(cache):
                        if item is last:
                            break
                        new.append(item)
                    self._pending.extend((item, t) for item in reversed(new))

        self.api.handle_message = handle

    def _drain(self) -> None:
        while self._pending:
            item, received = self._pending.popleft()
            ev = self._event(item, received)
            if ev is None:
                continue
            key = ev.key()
            if key in self._seen:
                self.duplicates += 1
                continue
            self._seen[key] = None
            if len(self._seen) > self.config.dedupe_keys:
                self._seen.popitem(last=False)
            self.events += 1
            try:
                self.sink(ev)
            except Exception as e:  # a consumer's bug must not stop the stream
                self._log(logging.ERROR, "%s: event consumer failed: %r", self.exchange, e,
                          exc=traceback_of(e))  # fmt: skip

    def _event(self, item: Any, received: float) -> StreamEvent | None:
        if not isinstance(item, Mapping):
            self.malformed += 1
            return None
        sym = item.get("symbol")
        if sym not in self.symbols:
            self.ignored += 1
            return None
        what = f"{self.exchange} {sym} liquidation"
        ts = item.get("timestamp")
        price = _finite(item.get("price"))
        contracts = _finite(item.get("contracts"))
        market = (self.api.markets or {}).get(sym) or {}
        size = _finite(item.get("contractSize")) or _finite(market.get("contractSize")) or 1.0
        base = _finite(item.get("baseValue"))
        amount = base if base is not None else (contracts * size if contracts is not None else None)
        problem = None
        if isinstance(ts, bool) or not isinstance(ts, int | float) or not math.isfinite(ts):
            problem = f"field 'timestamp' is not epoch ms: {ts!r:.40}"
        elif price is None or price <= 0:
            problem = f"field 'price' must be > 0, got {item.get('price')!r:.40}"
        elif amount is None or amount <= 0:
            problem = f"field 'contracts' must be > 0, got {item.get('contracts')!r:.40}"
        side = None
        if problem is None:
            info = item.get("info")
            if self.exchange == "okx" and isinstance(info, Mapping):
                details = info.get("details")
                if isinstance(details, list) and details and isinstance(details[0], Mapping):
                    pos = str(details[0].get("posSide", "")).lower()
                    side = pos if pos in ("long", "short") else None
            if side is None:
                try:
                    side = normalise_side(self.exchange, item.get("side"))
                except LiqsignalError as e:
                    problem = f"field 'side': {e}"
        if problem is not None or side is None:
            self.malformed += 1
            self._log(logging.WARNING, "%s dropped: %s", what, problem)
            return None
        assert price is not None and amount is not None and isinstance(ts, int | float)
        usd = _finite(item.get("quoteValue")) or amount * price
        ident = item.get("id")
        return StreamEvent(
            self.exchange,
            sym,
            self.symbols[sym],
            side,
            price,
            amount,
            usd,
            int(ts),
            "" if ident in (None, "") else str(ident),
            received,
        )

    # -- connection lifetime -----------------------------------------------------------------
    async def _close_clients(self) -> None:
        clients = self._clients()
        for c in clients:
            with contextlib.suppress(Exception):
                await asyncio.wait_for(c.close(), 2.0)
        with contextlib.suppress(Exception):
            self.api.clients = {}
        self.api.ws_dial_backoff = {}  # liqsignal's own backoff applies, not ccxt's

    def _covered(self, upto: int | None) -> None:
        if self._covered_from is not None and upto is not None and upto > self._covered_from:
            self.on_covered(self.exchange, tuple(self.symbols), self._covered_from, upto)
            self._covered_from = upto

    async def _session(self) -> None:
        """One connection: subscribe, read until it fails (raises) or the stream stops.

        The connection counts as lost when a watch raises, when no frame came for
        ``read_timeout`` (a stall), and also when ccxt's client closed or was replaced: ccxt
        deletes a client the server closed and a later watch call opens a new one by itself, with
        no error reaching the caller when no watch was pending at that moment."""
        cfg = self.config
        watchers = self._watchers()
        tasks: dict[str, asyncio.Task[Any]] = {
            k: asyncio.ensure_future(w()) for k, w in watchers.items()
        }
        started = time.monotonic()
        client: Any = None  # the ccxt client of this connection, once subscribed
        self._first_frame_ms = None
        try:
            while not self._stop.is_set():
                done, _ = await asyncio.wait(
                    tasks.values(), timeout=cfg.tick, return_when=asyncio.FIRST_COMPLETED
                )
                self._drain()
                for k, t in list(tasks.items()):
                    if t not in done:
                        continue
                    exc = t.exception()
                    if exc is not None:
                        raise exc
                    if client is not None and self._replaced(client):
                        raise _Lost("connection closed by the server")
                    tasks[k] = asyncio.ensure_future(watchers[k]())
                if client is None:
                    live = [c for c in self._clients() if not c.closed()]
                    first = self._first_frame_ms
                    if live and first is not None:
                        client = live[0]
                        self._on_subscribed(first)
                    elif time.monotonic() - started > cfg.connect_timeout:
                        raise _Stall(f"no answer within {cfg.connect_timeout:g}s of connecting")
                    continue
                if self._replaced(client):
                    raise _Lost("connection closed by the server")
                frame = getattr(client, "last_message_at", None)
                if frame is not None:
                    self.last_frame_ms = max(frame, self.last_frame_ms or 0)
                if frame is None or _now_ms() - frame > cfg.read_timeout * 1000:
                    raise _Stall(f"no frame for {cfg.read_timeout:g}s")
        finally:
            if client is not None:
                frame = getattr(client, "last_message_at", None)
                if frame is not None and frame > (self.last_frame_ms or 0):
                    self.last_frame_ms = frame
            for t in tasks.values():
                t.cancel()
            for t in tasks.values():
                with contextlib.suppress(BaseException):
                    await t
            self._drain()

    def _replaced(self, client: Any) -> bool:
        clients = getattr(self.api, "clients", None) or {}
        return bool(client.closed() or clients.get(client.url) is not client)

    def _on_subscribed(self, at_ms: int) -> None:
        self.connects += 1
        self.last_frame_ms = at_ms
        if self.lost_since_ms is not None:
            gap = Gap(self.exchange, tuple(self.symbols), self.lost_since_ms, at_ms)
            self.gaps.append(gap)
            self.lost_since_ms = None
            self._log(
                logging.WARNING,
                "%s: resubscribed after %.1fs; recorded as a gap for %s",
                self.exchange,
                gap.seconds,
                ", ".join(gap.symbols),
            )
            self.on_gap(gap)
        else:
            self._log(logging.INFO, "%s: subscribed to %s", self.exchange, ", ".join(self.symbols))
        self._covered_from = at_ms
        self.state = "connected"

    async def run(self) -> None:
        """Watch until :meth:`stop`; never raises for network trouble (it reconnects)."""
        attempt = 0
        try:
            while not self._stop.is_set():
                connects = self.connects
                try:
                    if self.api.markets is None or not self.symbols:
                        await self.api.load_markets()
                        self._resolve()
                    await self._session()
                    break  # stopped
                except ConfigError as e:
                    self.failed = str(e)
                    self.state = "failed"
                    self._log(logging.ERROR, "%s: stream not started: %s", self.exchange, e)
                    return
                except (TimeoutError, ccxt.BaseError, _Lost, OSError) as e:
                    self._lost(e)
                except Exception as e:  # a ccxt parser choking on a frame, ...
                    self._lost(e)
                await self._close_clients()
                if self.connects > connects:
                    attempt = 0  # that connection worked: start the backoff again
                attempt += 1
                delay = self.config.backoff(attempt, self._rng)
                self._log(
                    logging.INFO,
                    "%s: reconnect attempt %d in %.2fs",
                    self.exchange,
                    attempt,
                    delay,
                )
                with contextlib.suppress(asyncio.TimeoutError):
                    await asyncio.wait_for(self._stop.wait(), delay)
        finally:
            self._covered(self.last_frame_ms)
            if self.lost_since_ms is not None:  # stopped while reconnecting: the gap so far
                gap = Gap(self.exchange, tuple(self.symbols), self.lost_since_ms, _now_ms())
                self.gaps.append(gap)
                self.lost_since_ms = None
                self.on_gap(gap)
            await self._close_clients()
            with contextlib.suppress(Exception):
                await self.api.close()
            if self.state != "failed":
                self.state = "stopped"

    def _lost(self, e: BaseException) -> None:
        if isinstance(e, _Stall):
            self.stalls += 1
        was = self.state
        if was == "connected":
            self.reconnects += 1
            self._covered(self.last_frame_ms)
            self._covered_from = None
            if self.lost_since_ms is None:
                self.lost_since_ms = self.last_frame_ms or _now_ms()
        elif self.lost_since_ms is None and self.connects:
            self.lost_since_ms = self.last_frame_ms or _now_ms()
        self.state = "reconnecting"
        self._log(
            logging.WARNING,
            "%s: connection lost (%s: %s)",
            self.exchange,
            type(e).__name__,
            str(e)[:200],
        )


class _Writer:
    """Buffers events, coverage and gaps and writes them to the store off the event loop."""

    def __init__(self, store: LiquidationStore | None) -> None:
        self.store = store
        self.events: dict[str, list[dict[str, Any]]] = {}
        self.spans: list[tuple[str, str, tuple[str, ...], int, int]] = []  # kind, ex, syms, a, b
        self.written = 0
        self.failures = 0
        self.last_error: str | None = None

    def add(self, ev: StreamEvent) -> None:
        self.events.setdefault(ev.exchange, []).append(ev.row())

    def span(self, kind: str, exchange: str, symbols: tuple[str, ...], a: int, b: int) -> None:
        self.spans.append((kind, exchange, symbols, a, b))

    def pending(self) -> int:
        return sum(len(v) for v in self.events.values())

    def _write(self, events: dict[str, list[dict[str, Any]]], spans: list[Any]) -> int:
        assert self.store is not None
        n = 0
        for ex, rows in events.items():
            frame = make_events(pd.DataFrame(rows), exchange=ex, what=f"{ex} stream events")
            n += self.store.append_events(ex, frame)
        for kind, ex, syms, a, b in spans:
            if kind == "gap":
                self.store.record_gap(ex, list(syms), a, b)
            else:
                self.store.record_coverage(ex, list(syms), a, b)
        return n

    async def flush(self) -> None:
        if self.store is None or (not self.events and not self.spans):
            self.events.clear()
            self.spans.clear()
            return
        events, spans = self.events, self.spans
        self.events, self.spans = {}, []
        try:
            self.written += await asyncio.to_thread(self._write, events, spans)
            self.last_error = None
        except Exception as e:  # disk full, corrupt file, ...: keep everything, retry later
            self.failures += 1
            self.last_error = f"{type(e).__name__}: {e}"
            logger.error("liquidation store write failed (kept in memory, retried): %s", e,
                         exc_info=traceback_of(e))  # fmt: skip
            for ex, rows in events.items():
                self.events[ex] = rows + self.events.get(ex, [])
            self.spans = spans + self.spans


class LiquidationStreams:
    """Streams of several venues and markets, concurrently, into a store and callbacks.

    ``ccxt_config`` maps exchange -> ccxt settings (e.g. a local replay's overlay). ``datadir``
    None keeps nothing on disk. ``on_event`` callbacks get each new :class:`StreamEvent`.
    """

    def __init__(
        self,
        exchanges: Sequence[str],
        markets: Sequence[str],
        *,
        datadir: str | Path | None = "user_data/data",
        ccxt_config: Mapping[str, Mapping[str, Any]] | None = None,
        config: StreamConfig | None = None,
        on_event: Iterable[Callable[[StreamEvent], None]] = (),
        seed: int | None = None,
    ) -> None:
        if not exchanges:
            raise ConfigError("streams: no exchange given")
        if len(set(exchanges)) != len(exchanges):
            raise ConfigError(f"streams: an exchange is listed twice in {list(exchanges)}")
        ccxt_config = dict(ccxt_config or {})
        unknown = sorted(set(ccxt_config) - set(EXCHANGES))
        if unknown:
            raise ConfigError(f"ccxt_config: keys {unknown} are not exchanges")
        self.config = config or StreamConfig()
        self.store = LiquidationStore(datadir) if datadir is not None else None
        self.writer = _Writer(self.store)
        self.callbacks = list(on_event)
        self.stats: dict[tuple[str, str], MarketStats] = {}
        self.received: list[StreamEvent] = []  # every event, in arrival order (kept for tests)
        self.keep_events = True
        self.venues: dict[str, VenueStream] = {}
        for i, ex in enumerate(exchanges):
            self.venues[ex] = VenueStream(
                ex,
                markets,
                ccxt_config.get(ex),
                self.config,
                sink=self._on_event,
                on_gap=self._on_gap,
                on_covered=self._on_covered,
                seed=None if seed is None else seed + i,
            )
            for m in markets:
                self.stats[(ex, m)] = MarketStats()
        self._stop = asyncio.Event()

    def _on_event(self, ev: StreamEvent) -> None:
        self.stats[(ev.exchange, ev.market)].add(ev, time.time())
        if self.keep_events:
            self.received.append(ev)
        self.writer.add(ev)
        for cb in self.callbacks:
            try:
                cb(ev)
            except Exception as e:
                logger.error("liquidation callback %r failed: %r", getattr(cb, "__name__", cb),
                             e, exc_info=traceback_of(e))  # fmt: skip

    def _on_gap(self, gap: Gap) -> None:
        self.writer.span("gap", gap.exchange, gap.symbols, gap.start_ms, gap.end_ms)

    def _on_covered(self, ex: str, symbols: tuple[str, ...], a: int, b: int) -> None:
        self.writer.span("covered", ex, symbols, a, b)

    def stop(self) -> None:
        self._stop.set()
        for v in self.venues.values():
            v.stop()

    async def run(self, duration: float | None = None) -> None:
        """Run every venue until ``duration`` seconds pass or :meth:`stop`; then flush."""
        tasks = [asyncio.ensure_future(v.run()) for v in self.venues.values()]
        end = None if duration is None else time.monotonic() + duration
        try:
            while not self._stop.is_set():
                wait = self.config.flush_interval
                if end is not None:
                    wait = min(wait, max(0.0, end - time.monotonic()))
                with contextlib.suppress(asyncio.TimeoutError):
                    await asyncio.wait_for(self._stop.wait(), wait)
                for v in self.venues.values():
                    if v.state == "connected":
                        v._covered(v.last_frame_ms)
                await self.writer.flush()
                if end is not None and time.monotonic() >= end:
                    break
                if all(t.done() for t in tasks):
                    break
        finally:
            self.stop()
            await asyncio.gather(*tasks, return_exceptions=True)
            await self.writer.flush()

    # -- reading ----------------------------------------------------------------------------
    def state(self, exchange: str) -> str:
        v = self.venues[exchange]
        return v.state

    def table_rows(self, now: float | None = None) -> list[dict[str, Any]]:
        """Rows of the watch table: per venue and market."""
        wall = time.time() if now is None else now
        out = []
        for (ex, m), st in self.stats.items():
            v = self.venues[ex]
            gap_s = sum(g.seconds for g in v.gaps)
            if v.lost_since_ms is not None:
                gap_s += max(0.0, (wall * 1000 - v.lost_since_ms) / 1000.0)
            state = v.state
            if m in v.errors:
                state = "not listed"
            out.append(
                {
                    "exchange": ex,
                    "market": m,
                    "events": st.events,
                    "long_usd_1m": st.usd_last("long", wall),
                    "short_usd_1m": st.usd_last("short", wall),
                    "last_age_s": None if st.last_event_wall is None else wall - st.last_event_wall,
                    "state": state,
                    "gaps": len(v.gaps) + (1 if v.lost_since_ms is not None else 0),
                    "gap_s": gap_s,
                }
            )
        return out
