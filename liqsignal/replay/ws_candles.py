"""Local WebSocket candle (kline) streams of Binance USD-M, Bybit v5 and OKX v5 on 127.0.0.1.

One :class:`CandleStreamServer` per venue serves the candles of a :class:`ReplayExchange` (its
data and its clock, so the REST replay and the stream give the same rows) in the venue's own
stream shape, to the real ccxt.pro clients:

* ``binance``: any ``/ws`` path (ccxt.pro connects to ``/market/ws/<n>``: USD-M klines live on
  the ``market`` endpoint), ``SUBSCRIBE`` of ``<symbol>@kline_<interval>``, answered
  ``{"result": null, "id": ..}``; events ``{"e": "kline", "E", "s", "k": {"t", "T", "s", "i",
  "o", "c", "h", "l", "v", "n", "x", "q", "V", "Q", "B"}}`` with ``x`` true on the candle's
  final update. A ``/stream`` path (a combined stream) wraps events ``{"stream", "data"}``.
  Binance's rules are enforced: at most 1024 streams per connection and 10 incoming messages
  per second (a connection over either is closed, as Binance does).
* ``bybit``: ``/v5/public/linear``, ``{"op": "subscribe", "args": ["kline.1.BTCUSDT"]}``;
  events ``{"topic": "kline.1.BTCUSDT", "type": "snapshot", "ts", "data": [{"start", "end",
  "interval", "open", "close", "high", "low", "volume", "turnover", "confirm", "timestamp"}]}``
  with ``confirm`` true on the final update. At most ``10`` args per subscribe request (more is
  answered ``success: false``).
* ``okx``: ``/ws/v5/business`` (where ccxt.pro subscribes to candles), ``{"op": "subscribe",
  "args": [{"channel": "candle1m", "instId": "BTC-USDT-SWAP"}]}``, text ``ping`` answered
  ``pong``; events ``{"arg": {..}, "data": [[ts, o, h, l, c, vol (contracts), volCcy (base),
  volCcyQuote, confirm]]}`` with ``confirm`` ``"1"`` on the final update. A subscribe request
  over 64 KB is refused (OKX's limit).

When the replay clock passes a candle's close the server sends, to every connection subscribed
to it, that candle's final update and then the first update of the new candle (forming: the
REST replay's forming rule, the close moving from the open towards the source close). A new
subscription gets the forming candle at once. A candle that closed while a client was not
connected is never sent to it: the client must fetch it over REST, as with a real venue. The
clock is polled every ``poll_s`` seconds (:meth:`tick` sends at once).

Faults for tests (from :class:`~liqsignal.replay.ws.LiquidationStreamServer`): ``disconnect``,
``stall``, ``send_raw`` and :meth:`malformed`.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import time
from collections import Counter
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

import numpy as np

from liqsignal.exceptions import ConfigError
from liqsignal.replay.binance import INTERVALS as BINANCE_INTERVALS
from liqsignal.replay.bybit import INTERVALS as BYBIT_INTERVALS
from liqsignal.replay.okx import BARS as OKX_BARS
from liqsignal.replay.okx import CT_VAL as OKX_CT_VAL
from liqsignal.replay.server import ReplayExchange, timeframe_to_ms
from liqsignal.replay.ws import LiquidationStreamServer, _Conn

__all__ = ["CANDLE_LIMITS", "CandleStreamServer"]

logger = logging.getLogger(__name__)

#: what each replay venue enforces (the venues' documented rules; None: not enforced)
CANDLE_LIMITS: dict[str, dict[str, int | None]] = {
    "binance": {"per_connection": 1024, "per_request": None, "messages_per_s": 10},
    "bybit": {"per_connection": None, "per_request": 10, "messages_per_s": None},
    "okx": {"per_connection": None, "per_request": None, "request_bytes": 65536},
}

_BYBIT_NAME = {tf: name for name, tf in BYBIT_INTERVALS.items()}
_OKX_NAME = {tf: name for name, tf in OKX_BARS.items() if not name.endswith("utc")}


def _text(x: float, nan: str = "0") -> str:
    if not np.isfinite(x):
        return nan
    return np.format_float_positional(float(x), trim="-", precision=10)


def _binance_text(x: float) -> str:
    return "0" if not np.isfinite(x) else np.format_float_positional(float(x), trim="-")


@dataclass
class _Series:
    """One market's candles at one timeframe, as arrays."""

    ts: np.ndarray
    o: np.ndarray
    h: np.ndarray
    low: np.ndarray
    c: np.ndarray
    v: np.ndarray
    qv: np.ndarray
    tb: np.ndarray
    tbq: np.ndarray
    trades: np.ndarray


class CandleStreamServer(LiquidationStreamServer):
    """A venue's kline stream on 127.0.0.1 over a :class:`ReplayExchange`'s data and clock.

    ``with CandleStreamServer(rx, "okx") as srv:`` then give ``srv.ccxt_config()`` (REST on
    ``rx``, WebSocket here) to a ccxt.pro client. ``rx.clock`` is read at every poll, so a clock
    set on ``rx`` after construction (a shared :class:`ManualClock`) is followed.
    """

    def __init__(
        self,
        rx: ReplayExchange,
        venue: str,
        port: int = 0,
        host: str = "127.0.0.1",
        poll_s: float = 0.02,
        forming: bool = True,
    ) -> None:
        self.rx = rx
        #: venue market id -> file pair
        self.pairs: dict[str, str] = {}
        for base, quote, settle, fp in rx.data.perpetuals():
            if quote != settle:
                continue
            vid = f"{base}-{quote}-SWAP" if venue == "okx" else f"{base}{quote}"
            self.pairs[vid] = fp
        super().__init__(
            venue, sorted({fp.split("_")[0] for fp in self.pairs.values()}), port, host
        )
        self.name = f"{venue} candle stream server"
        if poll_s <= 0:
            raise ConfigError(f"poll_s: expected seconds > 0, got {poll_s!r}")
        self.poll_s = float(poll_s)
        self.forming = forming
        self.limits = CANDLE_LIMITS[venue]
        self._series: dict[tuple[str, str], _Series | None] = {}
        self._bar: dict[str, int] = {}  # timeframe -> open time of the newest bar announced
        self.closed_sent: Counter[str] = Counter()  # final updates written, per venue symbol
        self.refused: list[str] = []  # why a subscription or connection was refused
        self._ticker: asyncio.Task[None] | None = None
        self._msg_times: dict[str, list[float]] = {}
        self._sub_at: dict[tuple[str, str], int] = {}  # (connection, topic) -> replay ms

    # -- lifecycle -------------------------------------------------------------------------
    async def _open(self) -> None:
        await super()._open()
        self._ticker = asyncio.ensure_future(self._poll())

    async def _poll(self) -> None:
        while True:
            await asyncio.sleep(self.poll_s)
            try:
                await self._tick()
            except Exception:  # a bug here must show, and not stop the stream
                logger.exception("%s: candle tick failed", self.name)

    def stop(self) -> None:
        loop, task = self._loop, self._ticker
        if loop is not None and task is not None and loop.is_running():
            loop.call_soon_threadsafe(task.cancel)
        self._ticker = None
        super().stop()

    def tick(self) -> None:
        """Send what the clock has closed now (instead of waiting for the next poll)."""
        self._call(self._tick())

    def ccxt_config(self) -> dict[str, Any]:
        """ccxt.pro settings: REST on the replay exchange, WebSocket on this server."""
        cfg = self.rx.ccxt_config(self.venue)
        ws = f"ws://{self.host}:{self.port}"
        api = dict(cfg["urls"]["api"])
        if self.venue == "binance":
            api["ws"] = {k: f"{ws}/ws" for k in ("spot", "margin", "linear", "inverse", "papi")}
        elif self.venue == "bybit":
            api["ws"] = {
                "public": {
                    k: f"{ws}/v5/public/{k}" for k in ("spot", "inverse", "option", "linear")
                },
                "private": {"contract": f"{ws}/v5/private"},
            }
        else:
            api["ws"] = f"{ws}/ws/v5"
        return {**cfg, "urls": {**cfg["urls"], "api": api}}

    @property
    def ws_url(self) -> str:
        path = {"binance": "/market/ws", "bybit": "/v5/public/linear", "okx": "/ws/v5/business"}
        return f"ws://{self.host}:{self.port}{path[self.venue]}"

    def ready(self, markets: Iterable[str] | None = None) -> bool:
        """Whether every served market (or ``markets``, venue ids) has a live subscription."""
        live = [c for c in list(self._conns) if not c.stalled]
        want = list(markets) if markets is not None else list(self.pairs)
        subscribed = {t.split("|")[0] for c in live for t in c.topics}
        return all(m in subscribed for m in want)

    def topics(self) -> int:
        """Topics subscribed over all live connections."""
        return sum(len(c.topics) for c in list(self._conns) if not c.stalled)

    # -- data ------------------------------------------------------------------------------
    def _data(self, vid: str, tf: str) -> _Series | None:
        key = (vid, tf)
        if key in self._series:
            return self._series[key]
        df = self.rx.data.frame(self.pairs[vid], tf, "futures")
        s = None
        if df is not None and len(df):

            def col(name: str) -> np.ndarray | None:
                return df[name].to_numpy(dtype="float64") if name in df.columns else None

            o, h, low, c, v = (col(n) for n in ("open", "high", "low", "close", "volume"))
            assert o is not None and h is not None and low is not None and c is not None
            assert v is not None
            qv = col("quote_volume")
            qv = v * (o + h + low + c) / 4.0 if qv is None else qv  # the REST replay's rules
            tb = col("taker_buy_volume")
            tb = v / 2.0 if tb is None else tb
            tbq = col("taker_buy_quote_volume")
            tbq = qv * (tb / np.where(v > 0, v, 1.0)) if tbq is None else tbq
            trades = col("trades")
            s = _Series(
                df["ts"].to_numpy(dtype="int64"),
                o,
                h,
                low,
                c,
                v,
                qv,
                tb,
                tbq,
                np.zeros(len(df)) if trades is None else trades,
            )
        self._series[key] = s
        return s

    def _message(
        self, vid: str, tf: str, bar: int, now: int, closed: bool, conn: _Conn
    ) -> str | None:
        s = self._data(vid, tf)
        if s is None:
            return None
        i = int(np.searchsorted(s.ts, bar))
        if i >= len(s.ts) or s.ts[i] != bar:
            return None
        period = timeframe_to_ms(tf)
        o, h, low, c = float(s.o[i]), float(s.h[i]), float(s.low[i]), float(s.c[i])
        v, qv, tb, tbq = float(s.v[i]), float(s.qv[i]), float(s.tb[i]), float(s.tbq[i])
        trades = int(s.trades[i])
        if not closed:  # forming: as the REST replay serves the current candle
            frac = min(1.0, max(0.0, (now - bar) / period))
            c = o + (c - o) * frac
            h, low = max(o, c), min(o, c)
            v, qv, tb, tbq = v * frac, qv * frac, tb * frac, tbq * frac
            trades = int(trades * frac)
        msg: Any
        if self.venue == "binance":
            n = _binance_text
            msg = {
                "e": "kline",
                "E": now,
                "s": vid,
                "k": {
                    "t": bar,
                    "T": bar + period - 1,
                    "s": vid,
                    "i": tf,
                    "f": 0,
                    "L": 0,
                    "o": n(o),
                    "c": n(c),
                    "h": n(h),
                    "l": n(low),
                    "v": n(v),
                    "n": trades,
                    "x": closed,
                    "q": n(qv),
                    "V": n(tb),
                    "Q": n(tbq),
                    "B": "0",
                },
            }
            if conn.path.startswith("/stream"):
                msg = {"stream": f"{vid.lower()}@kline_{tf}", "data": msg}
        elif self.venue == "bybit":
            msg = {
                "topic": f"kline.{_BYBIT_NAME[tf]}.{vid}",
                "type": "snapshot",
                "ts": now,
                "data": [
                    {
                        "start": bar,
                        "end": bar + period - 1,
                        "interval": _BYBIT_NAME[tf],
                        "open": _text(o, ""),
                        "close": _text(c, ""),
                        "high": _text(h, ""),
                        "low": _text(low, ""),
                        "volume": _text(v, ""),
                        "turnover": _text(v * c, ""),
                        "confirm": closed,
                        "timestamp": now,
                    }
                ],
            }
        else:
            ct = OKX_CT_VAL.get(vid.split("-")[0], 1.0)
            msg = {
                "arg": {"channel": f"candle{_OKX_NAME[tf]}", "instId": vid},
                "data": [
                    [
                        str(bar),
                        _text(o, ""),
                        _text(h, ""),
                        _text(low, ""),
                        _text(c, ""),
                        _text(v / ct, ""),
                        _text(v, ""),
                        _text(v * c, ""),
                        "1" if closed else "0",
                    ]
                ],
            }
        return json.dumps(msg, separators=(",", ":"))

    # -- sending ---------------------------------------------------------------------------
    async def _tick(self) -> None:
        now = self.rx.clock.now_ms()
        tfs = set(self._bar) | {t.split("|")[1] for c in list(self._conns) for t in c.topics}
        for tf in tfs:
            period = timeframe_to_ms(tf)
            cur = now // period * period
            last = self._bar.get(tf)
            if last is None or cur <= last:
                self._bar.setdefault(tf, cur)
                continue
            closed = list(range(max(last, cur - 1000 * period), cur, period))
            self._bar[tf] = cur
            for conn in list(self._conns):
                if conn.stalled:
                    continue
                for topic in sorted(conn.topics):
                    vid, ttf = topic.split("|")
                    if ttf != tf:
                        continue
                    since = self._sub_at.get((conn.id, topic), 0)
                    for bar in closed:
                        if bar + period > since:  # it closed while subscribed
                            await self._send(conn, vid, tf, bar, now, True)
                    if self.forming:
                        await self._send(conn, vid, tf, cur, now, False)

    async def _send(self, conn: _Conn, vid: str, tf: str, bar: int, now: int, closed: bool) -> None:
        text = self._message(vid, tf, bar, now, closed, conn)
        if text is None:
            return
        try:
            await conn.ws.send(text)
        except Exception:  # the connection went: the client backfills what it missed
            return
        if closed:
            self.closed_sent[vid] += 1

    async def _subscribed(self, conn: _Conn, topics: list[tuple[str, str]]) -> None:
        """A new subscription gets the forming candle (the venues send it within a second)."""
        now = self.rx.clock.now_ms()
        for vid, tf in topics:
            self._sub_at.setdefault((conn.id, f"{vid}|{tf}"), now)
            period = timeframe_to_ms(tf)
            self._bar.setdefault(tf, now // period * period)
            if self.forming:
                await self._send(conn, vid, tf, now // period * period, now, False)

    # -- requests --------------------------------------------------------------------------
    def _rate_ok(self, conn: _Conn) -> bool:
        per_s = self.limits.get("messages_per_s")
        if not per_s:
            return True
        t = time.monotonic()
        times = [x for x in self._msg_times.get(conn.id, []) if x > t - 1.0] + [t]
        self._msg_times[conn.id] = times
        return len(times) <= per_s

    async def _refuse(self, conn: _Conn, why: str) -> None:
        self.refused.append(why)
        logger.warning("%s: %s; connection closed", self.name, why)
        with contextlib.suppress(Exception):
            await conn.ws.close(1008, why[:100])

    async def _admit(self, conn: _Conn, raw: str) -> bool:
        """The venue's limits: messages per second, bytes per request."""
        if not self._rate_ok(conn):
            await self._refuse(conn, f"more than {self.limits['messages_per_s']} messages a second")
            return False
        limit_bytes = self.limits.get("request_bytes")
        if limit_bytes and len(raw.encode()) > limit_bytes:
            await conn.ws.send(
                json.dumps(
                    {
                        "event": "error",
                        "msg": f"request over {limit_bytes} bytes",
                        "code": "60029",
                        "connId": conn.id,
                    }
                )
            )
            self.refused.append(f"request of {len(raw)} bytes")
            return False
        return True

    async def _dispatch(self, conn: _Conn, msg: dict[str, Any]) -> None:
        if self.venue == "binance":
            await self._binance_kline(conn, msg)
        elif self.venue == "bybit":
            await self._bybit_kline(conn, msg)
        else:
            await self._okx_kline(conn, msg)

    def _topic(self, vid: str, tf: str | None) -> tuple[str, str] | None:
        if tf is None or vid not in self.pairs:
            return None
        return (vid, tf)

    async def _binance_kline(self, conn: _Conn, msg: dict[str, Any]) -> None:
        method, rid, params = msg.get("method"), msg.get("id"), msg.get("params") or []
        if method not in ("SUBSCRIBE", "UNSUBSCRIBE"):
            await conn.ws.send(
                json.dumps({"error": {"code": 1, "msg": f"Unknown method {method!r}"}, "id": rid})
            )
            return
        topics = []
        for p in params:
            t = None
            if isinstance(p, str) and "@kline_" in p:
                sym, interval = p.split("@kline_", 1)
                t = self._topic(sym.upper(), interval if interval in BINANCE_INTERVALS else None)
            if t is None:
                err = {"code": 2, "msg": f"Invalid request: invalid stream {p}"}
                await conn.ws.send(json.dumps({"error": err, "id": rid}))
                return
            topics.append(t)
        if method == "UNSUBSCRIBE":
            for vid, tf in topics:
                conn.topics.discard(f"{vid}|{tf}")
            await conn.ws.send(json.dumps({"result": None, "id": rid}))
            return
        cap = self.limits["per_connection"]
        new = {f"{v}|{tf}" for v, tf in topics} - conn.topics
        if cap is not None and len(conn.topics) + len(new) > cap:
            await self._refuse(conn, f"more than {cap} streams on one connection")
            return
        conn.topics |= new
        self.subscribes.append((conn.id, list(params)))
        await conn.ws.send(json.dumps({"result": None, "id": rid}))
        await self._subscribed(conn, topics)

    async def _bybit_kline(self, conn: _Conn, msg: dict[str, Any]) -> None:
        op, rid = msg.get("op"), msg.get("req_id")
        if op == "ping":
            self.pings += 1
            reply = {"success": True, "ret_msg": "pong", "conn_id": conn.id, "req_id": rid}
            await conn.ws.send(json.dumps({**reply, "op": "ping"}))
            return
        if op not in ("subscribe", "unsubscribe"):
            await self._send_error(conn, json.dumps(msg))
            return
        args = msg.get("args") or []
        cap = self.limits["per_request"]

        def fail(text: str) -> str:
            reply = {"success": False, "ret_msg": text, "conn_id": conn.id, "req_id": rid}
            return json.dumps({**reply, "op": op})

        if cap is not None and len(args) > cap:
            self.refused.append(f"{len(args)} args in one request")
            await conn.ws.send(fail(f"args size >{cap}"))
            return
        topics = []
        for a in args:
            t = None
            parts = a.split(".") if isinstance(a, str) else []
            if len(parts) == 3 and parts[0] == "kline":
                t = self._topic(parts[2], BYBIT_INTERVALS.get(parts[1]))
            if t is None:
                await conn.ws.send(fail(f"error:handler not found,topics:{a}"))
                return
            topics.append(t)
        for vid, tf in topics:
            (conn.topics.add if op == "subscribe" else conn.topics.discard)(f"{vid}|{tf}")
        ok = {"success": True, "ret_msg": "", "conn_id": conn.id, "req_id": rid, "op": op}
        await conn.ws.send(json.dumps(ok))
        if op == "subscribe":
            self.subscribes.append((conn.id, list(args)))
            await self._subscribed(conn, topics)

    async def _okx_kline(self, conn: _Conn, msg: dict[str, Any]) -> None:
        op = msg.get("op")
        if op not in ("subscribe", "unsubscribe"):
            await self._send_error(conn, json.dumps(msg))
            return
        topics = []
        for arg in msg.get("args") or []:
            ch = arg.get("channel") if isinstance(arg, dict) else None
            t = None
            if isinstance(ch, str) and ch.startswith("candle"):
                t = self._topic(str(arg.get("instId")), OKX_BARS.get(ch[len("candle") :]))
            if t is None:
                err = {"event": "error", "msg": f"channel:{ch} doesn't exist", "code": "60018"}
                await conn.ws.send(json.dumps({**err, "connId": conn.id}))
                return
            (conn.topics.add if op == "subscribe" else conn.topics.discard)(f"{t[0]}|{t[1]}")
            await conn.ws.send(json.dumps({"event": op, "arg": arg, "connId": conn.id}))
            topics.append(t)
        if op == "subscribe":
            self.subscribes.append((conn.id, msg.get("args")))
            await self._subscribed(conn, topics)

    # -- faults ----------------------------------------------------------------------------
    def malformed(self, kind: str = "truncated") -> str:
        """Send one bad candle frame to every subscribed connection: ``truncated`` (not valid
        JSON) or ``shape`` (the venue's envelope with unusable fields). Returns the frame."""
        vid = next(iter(self.pairs))
        if kind == "truncated":
            text = '{"e":"kline","E":1,"s":"' if self.venue == "binance" else '{"topic":"kline.'
            if self.venue == "okx":
                text = '{"arg":{"channel":"candle1m","instId":"'
        elif self.venue == "binance":
            k = {"t": "soon", "s": vid, "i": "1m", "o": "x", "x": True, "V": None}
            text = json.dumps({"e": "kline", "E": 1, "s": vid, "k": k})
        elif self.venue == "bybit":
            bad = {"start": None, "open": "NaN", "volume": "", "confirm": True}
            text = json.dumps({"topic": f"kline.1.{vid}", "type": "snapshot", "data": [bad]})
        else:
            text = json.dumps(
                {
                    "arg": {"channel": "candle1m", "instId": vid},
                    "data": [["x", "-1", "1", "1", "1", "1", "1", "1", "1"]],
                }
            )
        self.send_raw(text)
        return text
