"""Closed candles over ccxt.pro WebSocket streams, for the live :class:`MapProvider`.

Polling every (market, exchange) over REST each bar cannot fit the venues' rate limits for
hundreds of markets (no venue has a multi-symbol klines endpoint), so the provider can take its
candles from the venues' kline streams instead: :class:`CandleStreams` runs, per venue, the real
ccxt.pro client with ``watch_ohlcv_for_symbols`` over all its markets and hands every CLOSED
candle to a sink (:meth:`MapProvider.ingest_candles`); REST is left for funding and for
backfilling what a stream did not deliver (the start, a reconnect gap, a late bar).

* **Closed**: ccxt's unified OHLCV has no "closed" flag (it keeps only ``[t, o, h, l, c, v]`` in
  its ``ohlcvs`` cache), so each frame is read as it arrives (the client's message handler is
  wrapped, as :class:`~liqsignal.data.streams.VenueStream` does) for the venue's own flag:
  Binance ``k.x`` true, Bybit ``confirm`` true, OKX the 9th field (``confirm``) ``"1"``. The
  candle's values are then ccxt's own parse of that frame (its cache entry for that open time),
  and for Binance the taker buy volume (``k.V`` / ``k.Q``, which ccxt drops). A forming candle
  is never handed on; a candle whose final frame was lost is not guessed from later frames: it
  is missing, and the provider fetches it over REST.
* **Limits** (:data:`LIMITS`): topics per subscribe request and per connection. One ccxt.pro
  client is one connection per venue here (ccxt puts every ``watch_ohlcv_for_symbols`` of a
  client on one connection); markets beyond a venue's per-connection limit get another client.
* **Reconnects**: :class:`~liqsignal.data.streams.VenueStream`'s (backoff with jitter from
  :class:`~liqsignal.data.streams.StreamConfig`, stall detection, resubscription). Candles that
  closed during a gap never arrive: the provider sees the hole and backfills it over REST.
* **Nothing twice**: a candle already handed on (same symbol and open time, or older) is dropped.
* **Bad frames**: a frame ccxt cannot parse ends the connection (ccxt's choice; the stream
  reconnects); a parsed candle with impossible values (non-finite, price <= 0, high below low) is
  counted in ``malformed``, logged and dropped, so REST fetches that bar.
"""

from __future__ import annotations

import asyncio
import functools
import logging
import math
from collections.abc import Callable, Mapping, Sequence
from typing import Any

from liqsignal.data.exchanges import EXCHANGES, _deep_merge
from liqsignal.data.streams import STREAM_VENUES, StreamConfig, VenueStream, _now_ms
from liqsignal.exceptions import ConfigError

__all__ = ["LIMITS", "CandleRow", "CandleStream", "CandleStreams"]

logger = logging.getLogger(__name__)

#: Topics per subscribe request and per connection used for each venue's kline streams:
#: Binance USD-M allows 1024 streams per connection and 10 incoming messages per second (200
#: streams per SUBSCRIBE keeps a request small); Bybit documents 10 args per request (for spot;
#: used for linear too) and no per-connection cap for linear (500 chosen); OKX limits a request
#: to 64 KB (100 candle channels are ~6 KB) and 480 subscribe requests per connection per hour,
#: with no documented channel count per connection (500 chosen).
LIMITS: dict[str, dict[str, int]] = {
    "binance": {"per_request": 200, "per_connection": 1024},
    "bybit": {"per_request": 10, "per_connection": 500},
    "okx": {"per_request": 100, "per_connection": 500},
}

#: (open time ms, open, high, low, close, volume, taker buy volume, taker buy quote volume);
#: the taker fields are NaN where the venue gives none
CandleRow = tuple[int, float, float, float, float, float, float, float]
Sink = Callable[[str, str, list[CandleRow]], None]


def _finite(x: Any) -> float | None:
    if isinstance(x, bool) or x is None:
        return None
    try:
        f = float(x)
    except (TypeError, ValueError):
        return None
    return f if math.isfinite(f) else None


class CandleStream(VenueStream):
    """The kline stream of one venue for some markets (one ccxt.pro client, one connection).

    ``sink(market, exchange, rows)`` gets the closed candles of one market, oldest first.
    Normally made by :class:`CandleStreams`.
    """

    def __init__(
        self,
        exchange: str,
        markets: Sequence[str],
        timeframe: str,
        sink: Sink,
        ccxt_config: Mapping[str, Any] | None = None,
        config: StreamConfig | None = None,
        seed: int | None = None,
    ) -> None:
        if exchange not in LIMITS:
            raise ConfigError(
                f"candle streams: no kline stream for {exchange!r}; known: {', '.join(LIMITS)}"
            )
        if len(markets) > LIMITS[exchange]["per_connection"]:
            raise ConfigError(
                f"{exchange}: {len(markets)} markets on one connection; at most "
                f"{LIMITS[exchange]['per_connection']} (use CandleStreams, which splits them)"
            )
        self._candle_sink = sink
        self._rows: list[tuple[str, CandleRow]] = []  # (ccxt symbol, row) not yet handed on
        self._last: dict[str, int] = {}  # ccxt symbol -> newest open time handed on
        self.timeframe = timeframe
        self.candles = 0  # closed candles handed on
        self.forming = 0  # forming updates seen (not handed on)
        # ccxt keeps the newest OHLCVLimit candles per symbol (default 1000: some 300 MB for
        # 1,500 feeds after a day at 1m); a closed candle is read from it at once, so a few do
        given = _deep_merge({"options": {"OHLCVLimit": 10}}, dict(ccxt_config or {}))
        super().__init__(exchange, markets, given, config, seed=seed)

    # -- subscriptions ----------------------------------------------------------------------
    def _watchers(self) -> dict[str, Callable[[], Any]]:
        syms = list(self.symbols)
        per = LIMITS[self.exchange]["per_request"]
        out: dict[str, Callable[[], Any]] = {}
        for i in range(0, len(syms), per):
            chunk = [[s, self.timeframe] for s in syms[i : i + per]]
            out[str(i)] = functools.partial(self.api.watch_ohlcv_for_symbols, chunk)
        return out

    # -- frames -----------------------------------------------------------------------------
    def _hook(self) -> None:
        """Wrap the client's message handler: after ccxt parsed a frame, take the candles the
        venue marks closed in it, with ccxt's parsed values."""
        orig = self.api.handle_message

        def handle(client: Any, message: Any) -> None:
            if self._first_frame_ms is None:
                self._first_frame_ms = _now_ms()
            orig(client, message)
            try:
                self._capture(message)
            except Exception as e:  # a frame of unexpected shape: dropped, the stream goes on
                self.malformed += 1
                self._log(logging.WARNING, "%s: candle frame dropped: %r", self.exchange, e)

        self.api.handle_message = handle

    def _closed_in(self, message: Any) -> list[tuple[str, int, float, float]]:
        """(ccxt symbol, open time, taker buy, taker buy quote) of each candle the frame marks
        closed."""
        if not isinstance(message, Mapping):
            return []
        api = self.api
        nan = math.nan
        if self.exchange == "binance":
            msg = message.get("data", message) if "stream" in message else message
            if not isinstance(msg, Mapping) or msg.get("e") != "kline":
                return []
            k = msg.get("k")
            if not isinstance(k, Mapping):
                raise ValueError(f"kline without k: {msg!r:.80}")
            if k.get("x") is not True:
                self.forming += 1
                return []
            sym = api.safe_symbol(k.get("s"), None, None, "contract")
            tb, tbq = _finite(k.get("V")), _finite(k.get("Q"))
            return [(sym, int(k["t"]), nan if tb is None else tb, nan if tbq is None else tbq)]
        if self.exchange == "bybit":
            topic = message.get("topic")
            if not isinstance(topic, str) or not topic.startswith("kline."):
                return []
            sym = api.safe_market(topic.split(".")[-1], None, None, "contract")["symbol"]
            out = []
            for d in message.get("data") or []:
                if d.get("confirm") is True:
                    out.append((sym, int(d["start"]), nan, nan))
                else:
                    self.forming += 1
            return out
        arg = message.get("arg")
        if not isinstance(arg, Mapping) or not str(arg.get("channel", "")).startswith("candle"):
            return []
        sym = api.safe_symbol(arg.get("instId"))
        out = []
        for row in message.get("data") or []:
            if len(row) > 8 and row[8] == "1":
                out.append((sym, int(row[0]), nan, nan))
            else:
                self.forming += 1
        return out

    def _capture(self, message: Any) -> None:
        closed = self._closed_in(message)
        if not closed:
            return
        for sym, ts, tb, tbq in closed:
            if sym not in self.symbols:
                self.ignored += 1
                continue
            cache = (self.api.ohlcvs.get(sym) or {}).get(self.timeframe)
            parsed = None if cache is None else cache.hashmap.get(ts)
            row = self._row(sym, ts, parsed, tb, tbq)
            if row is not None:
                self._rows.append((sym, row))
        self._drain()

    def _row(self, sym: str, ts: int, parsed: Any, tb: float, tbq: float) -> CandleRow | None:
        vals = [_finite(v) for v in (parsed or [])[1:6]]
        problem = None
        if parsed is None or len(vals) < 5 or any(v is None for v in vals):
            problem = f"values not numbers: {parsed!r:.80}"
        else:
            o, h, low, c, v = (float(x) for x in vals)  # type: ignore[arg-type]
            if min(o, h, low, c) <= 0 or v < 0 or h < max(o, c, low) or low > min(o, c):
                problem = f"impossible candle {parsed!r:.80}"
        if problem is not None:
            self.malformed += 1
            self._log(
                logging.WARNING, "%s %s candle %s dropped: %s", self.exchange, sym, ts, problem
            )
            return None
        return (ts, o, h, low, c, v, tb, tbq)

    def _drain(self) -> None:
        if not self._rows:
            return
        rows, self._rows = self._rows, []
        by: dict[str, list[CandleRow]] = {}
        for sym, row in rows:
            if row[0] <= self._last.get(sym, -1):
                self.duplicates += 1
                continue
            self._last[sym] = row[0]
            by.setdefault(sym, []).append(row)
        for sym, got in by.items():
            self.candles += len(got)
            try:
                self._candle_sink(self.symbols[sym], self.exchange, got)
            except Exception as e:  # a consumer's bug must not stop the stream
                self._log(logging.ERROR, "%s: candle consumer failed: %r", self.exchange, e)


class CandleStreams:
    """Closed candles of many markets on several venues, one :class:`CandleStream` per venue
    (more where a venue's per-connection limit is reached).

    ``markets`` maps exchange -> market names (``"BTC"``). Call :meth:`start` inside the event
    loop that should run them, :meth:`aclose` to stop.
    """

    def __init__(
        self,
        markets: Mapping[str, Sequence[str]],
        timeframe: str,
        sink: Sink,
        *,
        ccxt_config: Mapping[str, Mapping[str, Any]] | None = None,
        config: StreamConfig | None = None,
        seed: int | None = None,
    ) -> None:
        ccxt_config = ccxt_config or {}
        self.timeframe = timeframe
        self.streams: dict[str, list[CandleStream]] = {}
        self._by_market: dict[tuple[str, str], CandleStream] = {}
        for i, (ex, names) in enumerate(markets.items()):
            if ex not in STREAM_VENUES or ex not in LIMITS:
                raise ConfigError(
                    f"candle_streams: no kline stream for {ex!r}; known: {', '.join(LIMITS)}"
                )
            if ex not in EXCHANGES:
                raise ConfigError(f"candle_streams: unknown exchange {ex!r}")
            per = LIMITS[ex]["per_connection"]
            names = list(names)
            for j in range(0, len(names), per):
                part = names[j : j + per]
                s = CandleStream(
                    ex,
                    part,
                    timeframe,
                    sink,
                    ccxt_config.get(ex),
                    config,
                    seed=None if seed is None else seed + 100 * i + j,
                )
                self.streams.setdefault(ex, []).append(s)
                for m in part:
                    self._by_market[(m, ex)] = s
        self._tasks: list[asyncio.Future[None]] = []

    def start(self) -> None:
        """Start every stream as a task of the running event loop (once)."""
        if self._tasks:
            return
        self._tasks = [asyncio.ensure_future(s.run()) for ss in self.streams.values() for s in ss]

    @property
    def started(self) -> bool:
        return bool(self._tasks)

    def serves(self, market: str, exchange: str) -> bool:
        return (market, exchange) in self._by_market

    def live(self, market: str, exchange: str) -> bool:
        """Whether the stream of (market, exchange) is connected and watches that market."""
        s = self._by_market.get((market, exchange))
        return s is not None and s.state == "connected" and market in s.symbols.values()

    def stats(self) -> dict[str, dict[str, int]]:
        """Per venue: connections, candles handed on, reconnects, malformed, duplicates."""
        out = {}
        for ex, ss in self.streams.items():
            out[ex] = {
                "connections": len(ss),
                "candles": sum(s.candles for s in ss),
                "reconnects": sum(s.reconnects for s in ss),
                "malformed": sum(s.malformed for s in ss),
                "duplicates": sum(s.duplicates for s in ss),
                "gaps": sum(len(s.gaps) for s in ss),
            }
        return out

    async def aclose(self) -> None:
        for ss in self.streams.values():
            for s in ss:
                s.stop()
        if self._tasks:
            await asyncio.gather(*self._tasks, return_exceptions=True)
        self._tasks = []
