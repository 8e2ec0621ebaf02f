"""Local WebSocket liquidation streams of Binance USD-M, Bybit v5 and OKX v5 on 127.0.0.1.

One :class:`LiquidationStreamServer` per venue serves, on one port:

* the venue's public liquidation stream over WebSocket, in the venue's own message shape:

  - ``binance``: ``/market/ws/<n>`` (where ccxt.pro connects; ``/ws`` too), ``SUBSCRIBE`` of
    ``<symbol>@forceOrder`` or ``!forceOrder@arr``, answered ``{"result": null, "id": ..}``;
    events ``{"e": "forceOrder", "E": .., "o": {"s", "S", "o", "f", "q", "p", "ap", "X", "l",
    "z", "T"}}`` with ``S`` the side of the forced order (SELL closes a long);
  - ``bybit``: ``/v5/public/linear``, ``{"op": "subscribe", "args": ["allLiquidation.BTCUSDT"]}``,
    ``{"op": "ping"}`` answered with ``ret_msg: pong``; events
    ``{"topic": "allLiquidation.BTCUSDT", "type": "snapshot", "ts": .., "data": [{"T", "s", "S",
    "v", "p"}]}`` with ``S`` the side of the position (Buy: a long was liquidated);
  - ``okx``: ``/ws/v5/public``, ``{"op": "subscribe", "args": [{"channel": "liquidation-orders",
    "instType": "SWAP"}]}``, text ``ping`` answered ``pong``; events ``{"arg": {..}, "data":
    [{"instId", "instFamily", "instType", "uly", "details": [{"bkPx", "sz", "side", "posSide",
    "ts", ..}]}]}`` with ``side`` the order side and ``sz`` in contracts (``ctVal`` base each);

* the few REST answers ccxt needs before it can watch (the instrument list: Binance
  ``/fapi/v1/exchangeInfo``, Bybit ``/v5/market/instruments-info``, OKX
  ``/api/v5/public/instruments``), for the markets given; anything else answers 404 and is logged.

Events are venue-neutral :class:`LiqEvent` (``side`` is the side liquidated, ``amount`` in base
units); :meth:`LiquidationStreamServer.publish` sends them now, :meth:`play` on their own time
scale. Faults for tests: :meth:`disconnect` (drop every connection, or after ``n`` more events),
:meth:`stall` (connections stay open, nothing is sent, pings are not answered), :meth:`malformed`
(a frame that is not valid JSON, or JSON of the wrong shape); duplicates and out-of-order events
are scripts (:func:`with_duplicates`, :func:`out_of_order`). ``throttle_ms=1000`` on Binance
sends, as Binance does, only the latest liquidation per symbol per second. ``server.sent``
counts events per symbol actually written to a socket, ``server.dropped`` the ones a stalled
or closing connection did not get.

Command line (serves a file of events, for ``liqsignal watch`` offline)::

    python -m liqsignal.replay.ws --venue binance --port 8790 --markets BTC ETH

prints the ccxt overlay as JSON (``{"binance": {...}}``, what ``liqsignal watch --ccxt-config``
reads) and replays the events until Ctrl-C.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import itertools
import json
import logging
import random
import signal
import sys
import threading
import time
from collections import Counter
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, replace
from http import HTTPStatus
from importlib import resources
from pathlib import Path
from typing import Any
from urllib.parse import parse_qsl, urlsplit

import pandas as pd

from liqsignal._optional import require
from liqsignal.exceptions import ConfigError
from liqsignal.replay._venue import LocalService
from liqsignal.replay.binance import URL_KEYS as BINANCE_URL_KEYS
from liqsignal.replay.bybit import URL_KEYS as BYBIT_URL_KEYS
from liqsignal.replay.okx import instrument as okx_instrument

require("websockets", extra="replay", feature="the replay exchange's WebSocket streams")
from websockets.asyncio.server import Server, ServerConnection, serve  # noqa: E402
from websockets.datastructures import Headers  # noqa: E402
from websockets.exceptions import ConnectionClosed  # noqa: E402
from websockets.http11 import Request as HttpRequest  # noqa: E402
from websockets.http11 import Response as HttpResponse  # noqa: E402

__all__ = [
    "CT_VAL",
    "VENUES",
    "LiqEvent",
    "LiquidationStreamServer",
    "events_from_frame",
    "load_events",
    "out_of_order",
    "with_duplicates",
]

logger = logging.getLogger(__name__)

VENUES = ("binance", "bybit", "okx")
#: OKX contract size (base per contract) of the replay, as in the REST replay (plausible values)
CT_VAL = {"BTC": 0.01, "ETH": 0.1}
_SIDES = ("long", "short")


@dataclass(frozen=True)
class LiqEvent:
    """One liquidation as the replay knows it: ``side`` is the side LIQUIDATED (``long`` /
    ``short``), ``market`` the base coin (``BTC``), ``amount`` in base units, ``ts_ms`` epoch ms."""

    ts_ms: int
    market: str
    side: str
    price: float
    amount: float

    def __post_init__(self) -> None:
        if self.side not in _SIDES:
            raise ConfigError(f"LiqEvent.side: expected long or short, got {self.side!r}")
        if not (self.price > 0 and self.amount > 0):
            raise ConfigError(
                f"LiqEvent {self.market} at {self.ts_ms}: price and amount must be > 0, "
                f"got {self.price!r}, {self.amount!r}"
            )


def _num(x: float) -> str:
    """Decimal text as the venues send numbers (no exponent, trailing zeros trimmed)."""
    text = f"{x:.10f}".rstrip("0").rstrip(".")
    return text or "0"


def send_key(market: str, ts_ms: int, side: str, price: float, amount: float) -> tuple[Any, ...]:
    """Key of an event in ``LiquidationStreamServer.sent_at`` (for latency measurements)."""
    return (market, int(ts_ms), side, round(float(price), 4), round(float(amount), 6))


def ct_val(market: str) -> float:
    return CT_VAL.get(market.upper(), 1.0)


# ---------------------------------------------------------------------------------------------
# venue shapes: symbols, events, instrument lists, overlays


def venue_symbol(venue: str, market: str) -> str:
    m = market.upper()
    if venue == "okx":
        return f"{m}-USDT-SWAP"
    return f"{m}USDT"


def encode_event(venue: str, ev: LiqEvent) -> dict[str, Any]:
    """The venue's stream message for one event."""
    sym = venue_symbol(venue, ev.market)
    if venue == "binance":
        side = "SELL" if ev.side == "long" else "BUY"  # the forced order closes the position
        q = _num(ev.amount)
        return {
            "e": "forceOrder",
            "E": ev.ts_ms + 2,
            "o": {
                "s": sym,
                "S": side,
                "o": "LIMIT",
                "f": "IOC",
                "q": q,
                "p": _num(ev.price),
                "ap": _num(ev.price),
                "X": "FILLED",
                "l": q,
                "z": q,
                "T": ev.ts_ms,
            },
        }
    if venue == "bybit":
        side = "Buy" if ev.side == "long" else "Sell"  # Bybit: the side of the position
        return {
            "topic": f"allLiquidation.{sym}",
            "type": "snapshot",
            "ts": ev.ts_ms + 2,
            "data": [
                {"T": ev.ts_ms, "s": sym, "S": side, "v": _num(ev.amount), "p": _num(ev.price)}
            ],
        }
    if venue == "okx":
        contracts = ev.amount / ct_val(ev.market)
        return {
            "arg": {"channel": "liquidation-orders", "instType": "SWAP"},
            "data": [
                {
                    "details": [
                        {
                            "bkLoss": "0",
                            "bkPx": _num(ev.price),
                            "ccy": "",
                            "posSide": ev.side,
                            "side": "sell" if ev.side == "long" else "buy",
                            "sz": _num(contracts),
                            "ts": str(ev.ts_ms),
                        }
                    ],
                    "instFamily": f"{ev.market.upper()}-USDT",
                    "instId": sym,
                    "instType": "SWAP",
                    "uly": f"{ev.market.upper()}-USDT",
                }
            ],
        }
    raise ConfigError(f"unknown stream venue {venue!r}; known: {', '.join(VENUES)}")


def _binance_instruments(markets: Sequence[str], now_ms: int) -> dict[str, Any]:
    symbols = []
    for m in markets:
        sym = venue_symbol("binance", m)
        symbols.append(
            {
                "symbol": sym,
                "pair": sym,
                "contractType": "PERPETUAL",
                "deliveryDate": 4133404800000,
                "onboardDate": 1569398400000,
                "status": "TRADING",
                "baseAsset": m,
                "quoteAsset": "USDT",
                "marginAsset": "USDT",
                "pricePrecision": 2,
                "quantityPrecision": 3,
                "baseAssetPrecision": 8,
                "quotePrecision": 8,
                "underlyingType": "COIN",
                "underlyingSubType": [],
                "triggerProtect": "0.0500",
                "liquidationFee": "0.012500",
                "marketTakeBound": "0.05",
                "filters": [
                    {
                        "filterType": "PRICE_FILTER",
                        "minPrice": "0.01",
                        "maxPrice": "10000000",
                        "tickSize": "0.01",
                    },
                    {
                        "filterType": "LOT_SIZE",
                        "minQty": "0.001",
                        "maxQty": "100000000",
                        "stepSize": "0.001",
                    },
                    {
                        "filterType": "MARKET_LOT_SIZE",
                        "minQty": "0.001",
                        "maxQty": "10000000",
                        "stepSize": "0.001",
                    },
                    {"filterType": "MIN_NOTIONAL", "notional": "5"},
                ],
                "orderTypes": ["LIMIT", "MARKET"],
                "timeInForce": ["GTC", "IOC", "FOK", "GTX"],
            }
        )
    return {
        "timezone": "UTC",
        "serverTime": now_ms,
        "futuresType": "U_MARGINED",
        "rateLimits": [],
        "exchangeFilters": [],
        "assets": [{"asset": "USDT", "marginAvailable": True, "autoAssetExchange": "0"}],
        "symbols": symbols,
    }


def _bybit_instruments(markets: Sequence[str], query: dict[str, str], now_ms: int) -> Any:
    items = []
    if query.get("category") in (None, "linear") and query.get("status") != "PreLaunch":
        for m in markets:
            items.append(
                {
                    "symbol": venue_symbol("bybit", m),
                    "contractType": "LinearPerpetual",
                    "status": "Trading",
                    "baseCoin": m,
                    "quoteCoin": "USDT",
                    "settleCoin": "USDT",
                    "launchTime": "1585526400000",
                    "deliveryTime": "0",
                    "priceScale": "2",
                    "leverageFilter": {
                        "minLeverage": "1",
                        "maxLeverage": "100.00",
                        "leverageStep": "0.01",
                    },
                    "priceFilter": {"minPrice": "0.01", "maxPrice": "1999999", "tickSize": "0.01"},
                    "lotSizeFilter": {
                        "maxOrderQty": "1190.000",
                        "minOrderQty": "0.001",
                        "qtyStep": "0.001",
                        "maxMktOrderQty": "119.000",
                        "minNotionalValue": "5",
                    },
                    "unifiedMarginTrade": True,
                    "fundingInterval": 480,
                    "isPreListing": False,
                }
            )
    result = {"category": "linear", "list": items, "nextPageCursor": ""}
    return {"retCode": 0, "retMsg": "OK", "result": result, "retExtInfo": {}, "time": now_ms}


def _okx_instruments(markets: Sequence[str], query: dict[str, str]) -> Any:
    data = []
    if query.get("instType") == "SWAP":
        for m in markets:
            ct = _num(ct_val(m))
            inst = venue_symbol("okx", m)
            data.append(okx_instrument(inst, m, "USDT", "USDT", ct, 1606468572000, "0.01"))
    return {"code": "0", "msg": "", "data": data}


def ccxt_overlay(venue: str, host: str, port: int) -> dict[str, Any]:
    """ccxt.pro constructor settings that send every REST and WebSocket URL of ``venue`` here."""
    http = f"http://{host}:{port}"
    ws = f"ws://{host}:{port}"
    if venue == "binance":
        ws_keys = ("spot", "margin", "linear", "inverse", "papi")
        api: dict[str, Any] = {k: f"{http}{p}" for k, p in BINANCE_URL_KEYS.items()}
        api["ws"] = {k: f"{ws}/ws" for k in ws_keys}
        api["ws"]["ws-api"] = {k: f"{ws}/ws-api" for k in ("spot", "linear", "inverse")}
        return {"urls": {"api": api}, "options": {"fetchMarkets": {"types": ["linear"]}}}
    if venue == "bybit":
        api = dict.fromkeys(BYBIT_URL_KEYS, http)
        public = {k: f"{ws}/v5/public/{k}" for k in ("spot", "inverse", "option", "linear")}
        private = {
            "spot": {"unified": f"{ws}/v5/private", "nonUnified": f"{ws}/spot/private/v3"},
            "contract": f"{ws}/v5/private",
            "usdc": f"{ws}/trade/option/usdcPrivate/v1",
            "trade": f"{ws}/v5/trade",
        }
        api["ws"] = {"public": public, "private": private}
        return {
            "urls": {"api": api},
            "options": {"fetchMarkets": {"types": ["linear"]}, "defaultType": "swap"},
        }
    if venue == "okx":
        return {
            "urls": {"api": {"rest": http, "ws": f"{ws}/ws/v5"}},
            "options": {"fetchMarkets": {"types": ["swap"]}, "defaultType": "swap"},
        }
    raise ConfigError(f"unknown stream venue {venue!r}; known: {', '.join(VENUES)}")


# ---------------------------------------------------------------------------------------------
# scripts


def with_duplicates(events: Sequence[LiqEvent], every: int = 3) -> list[LiqEvent]:
    """Every ``every``-th event sent twice in a row (a venue resending after a hiccup)."""
    if every < 1:
        raise ConfigError(f"duplicate every: expected >= 1, got {every}")
    out: list[LiqEvent] = []
    for i, ev in enumerate(events):
        out.append(ev)
        if i % every == every - 1:
            out.append(ev)
    return out


def out_of_order(events: Sequence[LiqEvent], window: int = 4, seed: int = 0) -> list[LiqEvent]:
    """Events shuffled within consecutive blocks of ``window`` (late deliveries)."""
    if window < 1:
        raise ConfigError(f"reorder window: expected >= 1, got {window}")
    rng = random.Random(seed)
    out: list[LiqEvent] = []
    for i in range(0, len(events), window):
        block = list(events[i : i + window])
        rng.shuffle(block)
        out.extend(block)
    return out


BUNDLED_EVENTS = "liquidations_hyperliquid.parquet"


def events_from_frame(df: pd.DataFrame, source: str = "frame") -> list[LiqEvent]:
    """Events from a frame of ``timestamp, market (or symbol / coin), side, price, amount (or
    size_usd or usd)``. ``side`` is long/short (the side liquidated). A file whose side column
    holds one label for every row (the bundled Hyperliquid file: ``S`` on all 2,243 rows, meaning
    not documented) gets the side from the price move since the market's previous event: a fall
    liquidates longs, a rise shorts (the first event of a market: long)."""
    cols = set(df.columns)
    mcol = next((c for c in ("market", "coin", "symbol") if c in cols), None)
    if "timestamp" not in cols or mcol is None or "price" not in cols:
        raise ConfigError(
            f"{source}: expected columns timestamp, market (or coin/symbol), price, side, "
            f"amount (or size_usd/usd); got {sorted(cols)}"
        )
    ts = pd.to_datetime(df["timestamp"], utc=True)
    price = pd.to_numeric(df["price"], errors="coerce")
    if "amount" in cols:
        amount = pd.to_numeric(df["amount"], errors="coerce")
    elif "size_usd" in cols or "usd" in cols:
        amount = pd.to_numeric(df["size_usd" if "size_usd" in cols else "usd"]) / price
    else:
        raise ConfigError(f"{source}: no amount, size_usd or usd column")
    market = df[mcol].astype(str).str.split("/").str[0].str.upper()
    raw_side = df["side"].astype(str).str.lower() if "side" in cols else None
    derive = raw_side is None or not set(raw_side.unique()) <= set(_SIDES)
    if derive and raw_side is not None and raw_side.nunique() > 1:
        raise ConfigError(
            f"{source}: column side holds {sorted(raw_side.unique())[:5]}; expected long/short"
        )
    out: list[LiqEvent] = []
    last_price: dict[str, float] = {}
    order = ts.argsort(kind="stable")
    for i in order:
        p, a = float(price.iloc[i]), float(amount.iloc[i])
        m = str(market.iloc[i])
        if not (p > 0 and a > 0):
            raise ConfigError(f"{source}: row {i}: price {p!r} / amount {a!r} must be > 0")
        if derive:
            prev = last_price.get(m, p)
            side = "short" if p > prev else "long"
            last_price[m] = p
        else:
            assert raw_side is not None
            side = str(raw_side.iloc[i])
        out.append(LiqEvent(int(ts.iloc[i].value // 1_000_000), m, side, p, a))
    return out


def load_events(path: str | Path | None = None, markets: Iterable[str] | None = None) -> list:
    """Events of a CSV / Parquet file (default: the bundled real Hyperliquid liquidations),
    restricted to ``markets`` when given."""
    if path is None:
        with resources.as_file(resources.files("liqsignal") / "resources" / BUNDLED_EVENTS) as p:
            df = pd.read_parquet(p)
        source = f"bundled {BUNDLED_EVENTS}"
    else:
        p = Path(path)
        if not p.is_file():
            raise ConfigError(f"events file {p} does not exist")
        df = pd.read_parquet(p) if p.suffix in (".parquet", ".pq") else pd.read_csv(p)
        source = str(p)
    events = events_from_frame(df, source)
    if markets is not None:
        wanted = {m.upper() for m in markets}
        events = [e for e in events if e.market in wanted]
    return events


# ---------------------------------------------------------------------------------------------
# the server


class _Conn:
    """One client connection: what it subscribed, whether it is stalled."""

    _ids = itertools.count(1)

    def __init__(self, ws: ServerConnection, path: str) -> None:
        self.ws = ws
        self.path = path
        self.id = f"{next(self._ids):08x}"
        self.topics: set[str] = set()  # venue symbols subscribed; "*" = all
        self.stalled = False


class LiquidationStreamServer(LocalService):
    """A venue's liquidation stream (and instrument list) on 127.0.0.1, in a background thread.

    ``with LiquidationStreamServer("bybit", ["BTC", "ETH"]) as srv:`` then give
    ``srv.ccxt_config()`` to a ccxt.pro client, and ``srv.publish([...])``.
    """

    def __init__(
        self,
        venue: str,
        markets: Sequence[str] = ("BTC", "ETH"),
        port: int = 0,
        host: str = "127.0.0.1",
        record_sends: bool = False,
        throttle_ms: int = 0,
    ) -> None:
        if venue not in VENUES:
            raise ConfigError(f"unknown stream venue {venue!r}; known: {', '.join(VENUES)}")
        if throttle_ms < 0 or (throttle_ms and venue != "binance"):
            raise ConfigError(f"throttle_ms: Binance only, >= 0; got {throttle_ms} for {venue}")
        #: Binance: at most the latest liquidation per symbol per this many ms (0: every event)
        self.throttle_ms = int(throttle_ms)
        self._held: dict[str, LiqEvent] = {}
        self._last_push: dict[str, float] = {}
        self.throttled: Counter[str] = Counter()  # events replaced by a later one in a window
        self._tasks: set[asyncio.Task[None]] = set()
        self.venue = venue
        self.name = f"{venue} stream server"
        self.markets = [m.upper() for m in markets]
        self.host = host
        self._port = port
        self._loop: asyncio.AbstractEventLoop | None = None
        self._thread: threading.Thread | None = None
        self._server: Server | None = None
        self._conns: set[_Conn] = set()
        self._ready = threading.Event()
        self._lock = threading.Lock()
        self._disconnect_after: int | None = None
        self._stall_new = False
        self.sent: Counter[str] = Counter()  # events written, per market
        self.dropped: Counter[str] = Counter()  # events a stalled/closing connection missed
        self.connects = 0
        self.subscribes: list[tuple[str, Any]] = []  # (connection id, subscribe args)
        self.pings = 0
        #: with ``record_sends``: :func:`send_key` -> time.perf_counter() when first sent
        self.sent_at: dict[tuple[Any, ...], float] | None = {} if record_sends else None
        self.http_paths: list[str] = []
        self.unknown_http: list[str] = []

    # lifecycle ------------------------------------------------------------------------------
    def start(self) -> LiquidationStreamServer:
        if self._thread is not None:
            return self
        self._thread = threading.Thread(target=self._run, name=f"ws-{self.venue}", daemon=True)
        self._thread.start()
        if not self._ready.wait(10) or self._server is None:
            raise ConfigError(f"{self.venue} stream server did not start on {self.host}")
        logger.info("%s liquidation stream at %s", self.venue, self.ws_url)
        return self

    def _run(self) -> None:
        loop = asyncio.new_event_loop()
        self._loop = loop
        try:
            loop.run_until_complete(self._open())
        except OSError as e:
            logger.error(
                "%s stream server cannot bind %s:%s: %s", self.venue, self.host, self._port, e
            )
            self._ready.set()
            return
        self._ready.set()
        loop.run_forever()
        loop.close()

    async def _open(self) -> None:
        self._server = await serve(
            self._handle,
            self.host,
            self._port,
            process_request=self._http,
            ping_interval=None,  # the venues' own keep-alive is the client's job
            max_size=2**20,
        )

    def stop(self) -> None:
        loop, thread = self._loop, self._thread
        if loop is None or thread is None:
            return

        async def _close() -> None:
            if self._server is not None:
                self._server.close()
                for c in list(self._conns):
                    c.ws.transport.abort()
                with contextlib.suppress(Exception):
                    await asyncio.wait_for(self._server.wait_closed(), 2)
            loop.stop()

        if loop.is_running():
            asyncio.run_coroutine_threadsafe(_close(), loop)
        thread.join(timeout=5)
        self._thread = None
        self._loop = None
        self._server = None

    def _bound_port(self) -> int | None:
        if self._server is None:
            return None
        return int(next(iter(self._server.sockets)).getsockname()[1])

    @property
    def ws_url(self) -> str:
        path = {"binance": "/ws", "bybit": "/v5/public/linear", "okx": "/ws/v5/public"}
        return f"ws://{self.host}:{self.port}{path[self.venue]}"

    def ccxt_config(self) -> dict[str, Any]:
        """ccxt.pro settings for this venue (all its URLs on this server)."""
        return ccxt_overlay(self.venue, self.host, self.port)

    @property
    def connections(self) -> int:
        return len(self._conns)

    def subscribed(self) -> int:
        """Open connections that have subscribed to something."""
        return sum(1 for c in self._conns if c.topics and not c.stalled)

    def ready(self, markets: Iterable[str] | None = None) -> bool:
        """Whether every market (default: all served) is subscribed on a live connection."""
        live = [c for c in list(self._conns) if not c.stalled]
        for m in markets or self.markets:
            sym = venue_symbol(self.venue, m)
            if not any(self._wants(c, sym) for c in live):
                return False
        return True

    # HTTP -----------------------------------------------------------------------------------
    def _http(self, connection: ServerConnection, request: HttpRequest) -> HttpResponse | None:
        if request.headers.get("Upgrade", "").lower() == "websocket":
            return None
        split = urlsplit(request.path)
        query = dict(parse_qsl(split.query))
        self.http_paths.append(split.path)
        now = int(time.time() * 1000)
        body: Any = None
        if self.venue == "binance" and split.path == "/fapi/v1/exchangeInfo":
            body = _binance_instruments(self.markets, now)
        elif self.venue == "binance" and split.path == "/fapi/v1/time":
            body = {"serverTime": now}
        elif self.venue == "bybit" and split.path == "/v5/market/instruments-info":
            body = _bybit_instruments(self.markets, query, now)
        elif self.venue == "bybit" and split.path == "/v5/market/time":
            body = {"retCode": 0, "retMsg": "OK", "result": {"timeSecond": str(now // 1000)}}
        elif self.venue == "okx" and split.path == "/api/v5/public/instruments":
            body = _okx_instruments(self.markets, query)
        elif self.venue == "okx" and split.path == "/api/v5/public/time":
            body = {"code": "0", "msg": "", "data": [{"ts": str(now)}]}
        if body is None:
            self.unknown_http.append(split.path)
            logger.warning("%s stream server: no route for GET %s", self.venue, split.path)
            return self._json({"code": -5000, "msg": f"Path GET {split.path} not found"}, 404)
        return self._json(body, 200)

    @staticmethod
    def _json(obj: Any, status: int) -> HttpResponse:
        raw = json.dumps(obj, separators=(",", ":")).encode()
        headers = Headers(
            [
                ("Content-Type", "application/json"),
                ("Content-Length", str(len(raw))),
                ("Connection", "close"),
            ]
        )
        return HttpResponse(status, HTTPStatus(status).phrase, headers, raw)

    # WebSocket ------------------------------------------------------------------------------
    async def _handle(self, ws: ServerConnection) -> None:
        conn = _Conn(ws, ws.request.path if ws.request is not None else "")
        self._conns.add(conn)
        if self._stall_new:
            conn.stalled = True
            ws.transport.pause_reading()
        self.connects += 1
        try:
            async for raw in ws:
                if conn.stalled:
                    continue
                await self._on_message(conn, raw if isinstance(raw, str) else raw.decode())
        except ConnectionClosed:
            pass
        finally:
            self._conns.discard(conn)

    async def _on_message(self, conn: _Conn, raw: str) -> None:
        if self.venue == "okx" and raw == "ping":
            self.pings += 1
            await conn.ws.send("pong")
            return
        if not await self._admit(conn, raw):
            return
        try:
            msg = json.loads(raw)
        except ValueError:
            await self._send_error(conn, raw)
            return
        if not isinstance(msg, dict):
            await self._send_error(conn, raw)
            return
        await self._dispatch(conn, msg)

    async def _admit(self, conn: _Conn, raw: str) -> bool:
        """Whether a client frame is taken (a subclass enforces a venue's limits here)."""
        return True

    async def _dispatch(self, conn: _Conn, msg: dict[str, Any]) -> None:
        if self.venue == "binance":
            await self._binance(conn, msg)
        elif self.venue == "bybit":
            await self._bybit(conn, msg)
        else:
            await self._okx(conn, msg)

    async def _send_error(self, conn: _Conn, raw: str) -> None:
        if self.venue == "binance":
            err: Any = {"error": {"code": 3, "msg": "Invalid JSON"}, "id": None}
        elif self.venue == "bybit":
            err = {"success": False, "ret_msg": "error:invalid op", "conn_id": conn.id}
        else:
            err = {"event": "error", "msg": f"Illegal request: {raw[:60]}", "code": "60012"}
        await conn.ws.send(json.dumps(err))

    async def _binance(self, conn: _Conn, msg: dict[str, Any]) -> None:
        method, rid, params = msg.get("method"), msg.get("id"), msg.get("params") or []
        if method == "SUBSCRIBE":
            bad = [p for p in params if not self._binance_stream(p)]
            if bad:
                await conn.ws.send(
                    json.dumps(
                        {
                            "error": {
                                "code": 2,
                                "msg": f"Invalid request: invalid stream {bad[0]}",
                            },
                            "id": rid,
                        }
                    )
                )
                return
            for p in params:
                conn.topics.add(self._binance_stream(p) or "")
            self.subscribes.append((conn.id, list(params)))
            await conn.ws.send(json.dumps({"result": None, "id": rid}))
        elif method == "UNSUBSCRIBE":
            for p in params:
                conn.topics.discard(self._binance_stream(p) or "")
            await conn.ws.send(json.dumps({"result": None, "id": rid}))
        elif method == "LIST_SUBSCRIPTIONS":
            await conn.ws.send(json.dumps({"result": sorted(conn.topics), "id": rid}))
        else:
            await conn.ws.send(
                json.dumps({"error": {"code": 1, "msg": f"Unknown method {method!r}"}, "id": rid})
            )

    def _binance_stream(self, name: Any) -> str | None:
        if name == "!forceOrder@arr":
            return "*"
        if isinstance(name, str) and name.endswith("@forceOrder"):
            sym = name[: -len("@forceOrder")].upper()
            if sym in {venue_symbol("binance", m) for m in self.markets}:
                return sym
        return None

    async def _bybit(self, conn: _Conn, msg: dict[str, Any]) -> None:
        op, rid = msg.get("op"), msg.get("req_id")
        if op == "ping":
            self.pings += 1
            reply = {"success": True, "ret_msg": "pong", "conn_id": conn.id, "req_id": rid}
            await conn.ws.send(json.dumps({**reply, "op": "ping"}))
            return
        if op in ("subscribe", "unsubscribe"):
            args = msg.get("args") or []
            known = {venue_symbol("bybit", m) for m in self.markets}
            bad = [
                a
                for a in args
                if not (isinstance(a, str) and a.startswith("allLiquidation."))
                or a.split(".", 1)[1] not in known
            ]
            if bad:
                err = f"error:handler not found,topics:{bad[0]}"
                await conn.ws.send(
                    json.dumps(
                        {
                            "success": False,
                            "ret_msg": err,
                            "conn_id": conn.id,
                            "req_id": rid,
                            "op": op,
                        }
                    )
                )
                return
            for a in args:
                sym = a.split(".", 1)[1]
                (conn.topics.add if op == "subscribe" else conn.topics.discard)(sym)
            if op == "subscribe":
                self.subscribes.append((conn.id, list(args)))
            await conn.ws.send(
                json.dumps(
                    {"success": True, "ret_msg": "", "conn_id": conn.id, "req_id": rid, "op": op}
                )
            )
            return
        await self._send_error(conn, json.dumps(msg))

    async def _okx(self, conn: _Conn, msg: dict[str, Any]) -> None:
        op = msg.get("op")
        args = msg.get("args") or []
        if op not in ("subscribe", "unsubscribe"):
            await self._send_error(conn, json.dumps(msg))
            return
        for arg in args:
            name = arg.get("channel") if isinstance(arg, dict) else arg
            if not (
                isinstance(arg, dict)
                and arg.get("channel") == "liquidation-orders"
                and arg.get("instType") == "SWAP"
            ):
                await conn.ws.send(
                    json.dumps(
                        {
                            "event": "error",
                            "msg": f"channel:{name} doesn't exist",
                            "code": "60018",
                            "connId": conn.id,
                        }
                    )
                )
                return
            if op == "subscribe":
                conn.topics.add("*")
                self.subscribes.append((conn.id, arg))
            else:
                conn.topics.discard("*")
            await conn.ws.send(json.dumps({"event": op, "arg": arg, "connId": conn.id}))

    # sending --------------------------------------------------------------------------------
    def _wants(self, conn: _Conn, sym: str) -> bool:
        return "*" in conn.topics or sym in conn.topics

    async def _send_events(self, events: Sequence[LiqEvent]) -> None:
        for ev in events:
            if not self.throttle_ms or self._throttle(ev):
                await self._push(ev)

    def _throttle(self, ev: LiqEvent) -> bool:
        """Binance's rule: per symbol, at most the latest liquidation per ``throttle_ms``; an
        event inside the window waits for its end, replacing (dropping) one already waiting.
        True: send it now."""
        now = time.monotonic()
        last = self._last_push.get(ev.market)
        window = self.throttle_ms / 1000.0
        if last is None or now - last >= window:
            self._last_push[ev.market] = now
            return True
        if ev.market in self._held:
            self.throttled[ev.market] += 1
        else:
            asyncio.get_running_loop().call_later(last + window - now, self._release, ev.market)
        self._held[ev.market] = ev
        return False

    def _release(self, market: str) -> None:
        ev = self._held.pop(market, None)
        if ev is not None:
            self._last_push[market] = time.monotonic()
            task = asyncio.ensure_future(self._push(ev))
            self._tasks.add(task)
            task.add_done_callback(self._tasks.discard)

    async def _push(self, ev: LiqEvent) -> None:
        sym = venue_symbol(self.venue, ev.market)
        text = json.dumps(encode_event(self.venue, ev), separators=(",", ":"))
        if self.sent_at is not None:
            self.sent_at[send_key(ev.market, ev.ts_ms, ev.side, ev.price, ev.amount)] = (
                time.perf_counter()
            )
        for conn in list(self._conns):
            if not self._wants(conn, sym):
                continue
            if conn.stalled:
                self.dropped[ev.market] += 1
                continue
            try:
                await conn.ws.send(text)
                self.sent[ev.market] += 1
            except ConnectionClosed:
                self.dropped[ev.market] += 1
        if self._disconnect_after is not None:
            self._disconnect_after -= 1
            if self._disconnect_after <= 0:
                self._disconnect_after = None
                self._abort_all()

    def _abort_all(self) -> None:
        for c in list(self._conns):
            c.ws.transport.abort()  # like a dropped TCP connection: no close frame
            self._conns.discard(c)

    def _call(self, coro: Any, timeout: float = 10.0) -> Any:
        if self._loop is None:
            raise ConfigError(f"{self.venue} stream server is not running")
        return asyncio.run_coroutine_threadsafe(coro, self._loop).result(timeout)

    def publish(self, events: Iterable[LiqEvent]) -> None:
        """Send events now, in the given order, to every connection subscribed to them."""
        self._call(self._send_events(list(events)))

    def send_raw(self, text: str) -> None:
        """Send a raw text frame to every subscribed connection (malformed frames)."""

        async def _go() -> None:
            for c in list(self._conns):
                if c.topics and not c.stalled:
                    with contextlib.suppress(ConnectionClosed):
                        await c.ws.send(text)

        self._call(_go())

    def malformed(self, kind: str = "truncated") -> str:
        """Send one bad frame: ``truncated`` (not valid JSON) or ``shape`` (valid JSON of the
        venue's envelope with unusable fields). Returns the frame."""
        sym = venue_symbol(self.venue, self.markets[0])
        if kind == "truncated":
            text = json.dumps(
                encode_event(
                    self.venue, LiqEvent(int(time.time() * 1000), self.markets[0], "long", 1.0, 1.0)
                )
            )[:37]
        elif self.venue == "binance":
            text = json.dumps(
                {
                    "e": "forceOrder",
                    "E": 1,
                    "o": {"s": sym, "S": "SELL", "ap": "x", "l": None, "T": "soon"},
                }
            )
        elif self.venue == "bybit":
            text = json.dumps(
                {
                    "topic": f"allLiquidation.{sym}",
                    "type": "snapshot",
                    "ts": 1,
                    "data": [{"s": sym, "S": "Buy", "v": "", "p": "NaN"}],
                }
            )
        else:
            text = json.dumps(
                {
                    "arg": {"channel": "liquidation-orders", "instType": "SWAP"},
                    "data": [
                        {"instId": sym, "details": [{"side": "sell", "sz": "-3", "bkPx": "0"}]}
                    ],
                }
            )
        self.send_raw(text)
        return text

    def disconnect(self, after: int | None = None) -> None:
        """Drop every connection now (``after=None``) or after ``after`` more events."""
        if after is None:
            self._call(self._abort_async())
        else:
            self._disconnect_after = after

    async def _abort_async(self) -> None:
        self._abort_all()

    def stall(self, new_connections: bool = False) -> None:
        """Stop sending to (and answering) the open connections, which stay open. With
        ``new_connections`` later connections stall too (a venue that hangs)."""
        self._stall_new = new_connections
        self._call(self._stall_async())

    async def _stall_async(self) -> None:
        for c in list(self._conns):
            c.stalled = True
            c.ws.transport.pause_reading()  # no pong either, even to protocol-level pings

    def resume(self) -> None:
        """New connections are served normally again (stalled ones stay stalled)."""
        self._stall_new = False

    def complete_subscriptions(self) -> int:
        """Live connections subscribed to every market served."""
        syms = [venue_symbol(self.venue, m) for m in self.markets]
        return sum(
            1
            for c in list(self._conns)
            if not c.stalled and all(self._wants(c, sym) for sym in syms)
        )

    def wait_ready(self, timeout: float = 10.0) -> bool:
        """Block until every market is subscribed (True) or ``timeout`` passes (False)."""
        end = time.monotonic() + timeout
        while time.monotonic() < end:
            if self.ready():
                return True
            time.sleep(0.01)
        return False

    async def play(
        self,
        events: Sequence[LiqEvent],
        speed: float = 1.0,
        rebase: bool = True,
        disconnect_every: int = 0,
    ) -> int:
        """Send ``events`` on their own clock, ``speed`` times real time (call from any event
        loop; returns when the last is sent). With ``rebase`` timestamps are moved so that the
        first event is now and the others keep their spacing divided by ``speed`` (the stream
        looks live). ``disconnect_every``: drop every connection after each n events.
        Returns how many were sent."""
        if not events:
            return 0
        if speed <= 0:
            raise ConfigError(f"replay speed: expected > 0, got {speed!r}")
        t0 = events[0].ts_ms
        now0 = int(time.time() * 1000)
        start = time.monotonic()
        n = 0
        for ev in events:
            offset_s = (ev.ts_ms - t0) / 1000.0 / speed
            delay = start + offset_s - time.monotonic()
            if delay > 0:
                await asyncio.sleep(delay)
            ts = now0 + int(offset_s * 1000) if rebase else ev.ts_ms
            fut = asyncio.run_coroutine_threadsafe(
                self._send_events([replace(ev, ts_ms=ts)]), self._loop_or_fail()
            )
            await asyncio.wrap_future(fut)
            n += 1
            if disconnect_every and n % disconnect_every == 0:
                self.disconnect()
        return n

    def _loop_or_fail(self) -> asyncio.AbstractEventLoop:
        if self._loop is None:
            raise ConfigError(f"{self.venue} stream server is not running")
        return self._loop


# ---------------------------------------------------------------------------------------------
# command line


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(
        prog="python -m liqsignal.replay.ws",
        description="Serve a venue's liquidation stream on 127.0.0.1 from a file of events.",
    )
    p.add_argument("--venue", action="append", choices=VENUES, help="repeat for several venues")
    p.add_argument("--port", type=int, default=8790, help="port of the first venue; next +1, ...")
    p.add_argument("--markets", nargs="+", default=["BTC", "ETH"], help="base coins served")
    p.add_argument(
        "--events",
        default=None,
        help="CSV/Parquet of events (timestamp, market, side, price, amount); "
        "default: the bundled real Hyperliquid liquidations",
    )
    p.add_argument("--speed", type=float, default=60.0, help="replay speed x real time")
    p.add_argument("--loop", action="store_true", help="start the file again at its end")
    p.add_argument("--duplicate-every", type=int, default=0, help="send every n-th event twice")
    p.add_argument("--reorder-window", type=int, default=0, help="shuffle events in blocks of n")
    p.add_argument(
        "--disconnect-every", type=int, default=0, help="drop connections every n events"
    )
    p.add_argument(
        "--binance-throttle-ms",
        type=int,
        default=0,
        help="Binance: send at most the latest event per symbol per this many ms (Binance: 1000)",
    )
    p.add_argument("--overlay", default=None, help="also write the ccxt overlay JSON to this file")
    p.add_argument("-v", "--verbose", action="store_true")
    a = p.parse_args(argv)
    logging.basicConfig(
        level=logging.DEBUG if a.verbose else logging.INFO,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
    )
    venues = a.venue or ["binance"]
    try:
        events = load_events(a.events, a.markets)
        if not events:
            raise ConfigError(f"no events for markets {a.markets} in {a.events or BUNDLED_EVENTS}")
        if a.reorder_window:
            events = out_of_order(events, a.reorder_window)
        if a.duplicate_every:
            events = with_duplicates(events, a.duplicate_every)
        servers = [
            LiquidationStreamServer(
                v,
                a.markets,
                port=a.port + i if a.port else 0,
                throttle_ms=a.binance_throttle_ms if v == "binance" else 0,
            ).start()
            for i, v in enumerate(venues)
        ]
    except (ConfigError, OSError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    overlay = {s.venue: s.ccxt_config() for s in servers}
    text = json.dumps(overlay, indent=2)
    print(text, flush=True)
    if a.overlay:
        Path(a.overlay).write_text(text + "\n")
    print(
        f"{len(events)} events for {', '.join(a.markets)} at {a.speed:g}x on "
        + ", ".join(f"{s.venue} {s.ws_url}" for s in servers)
        + "; Ctrl-C stops",
        file=sys.stderr,
        flush=True,
    )
    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())

    async def player() -> None:
        while True:
            plays = [s.play(events, a.speed, disconnect_every=a.disconnect_every) for s in servers]
            await asyncio.gather(*plays)
            if not a.loop:
                break
        while True:
            await asyncio.sleep(3600)

    async def until_stopped() -> None:
        task = asyncio.ensure_future(player())
        while not stop.is_set() and not task.done():
            await asyncio.sleep(0.2)
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task

    try:
        asyncio.run(until_stopped())
    except KeyboardInterrupt:
        pass
    finally:
        for s in servers:
            s.stop()
        sent = {s.venue: sum(s.sent.values()) for s in servers}
        print(f"sent events per venue: {sent}", file=sys.stderr)
        held = {s.venue: sum(s.throttled.values()) for s in servers if s.throttle_ms}
        if held:
            print(f"withheld by the Binance throttle: {held}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
