"""Binance USD-M futures REST subset of the replay exchange, as ccxt 4.5 and Freqtrade ask for it.

Served paths (all GET): ``/fapi/v1/exchangeInfo``, ``/fapi/v1/time``, ``/fapi/v1/ping``,
``/fapi/v1/klines``, ``/fapi/v1/markPriceKlines``, ``/fapi/v1/fundingRate``,
``/fapi/v1/premiumIndex``, ``/fapi/v1/openInterest``, ``/fapi/v1/depth``,
``/fapi/v1/ticker/price``, ``/fapi/v2/ticker/price``, ``/fapi/v1/ticker/24hr``,
``/fapi/v1/ticker/bookTicker``, ``/futures/data/openInterestHist``.

Row selection follows Binance: ``startTime``/``endTime`` inclusive on the row's open time (funding
time, snapshot time); with a start, the first ``limit`` rows from it; otherwise the last ``limit``
rows up to ``endTime`` (or up to now). Limits out of range answer 400 ``-1130`` as Binance does.
What is synthetic (filters, order book, taker volume when the file has none, the forming candle)
is described in ``docs/replay.md``.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np
import pandas as pd

from liqsignal.replay._venue import Venue, VenueError, decimal_text, serves
from liqsignal.replay.messages import Request, Response, json_response
from liqsignal.replay.server import ReplayExchange, timeframe_to_ms

__all__ = ["ccxt_config", "register"]

PERPETUAL_DELIVERY = 4133404800000
INTERVALS = ("1m", "3m", "5m", "15m", "30m", "1h", "2h", "4h", "6h", "8h", "12h", "1d", "3d", "1w")
OI_PERIODS = ("5m", "15m", "30m", "1h", "2h", "4h", "6h", "12h", "1d")
DEPTH_LIMITS = (5, 10, 20, 50, 100, 500, 1000)
# (tickSize, stepSize, min notional) of a few real symbols; others derive from the price level.
KNOWN_FILTERS: dict[str, tuple[str, str, str]] = {
    "BTCUSDT": ("0.10", "0.001", "100"),
    "ETHUSDT": ("0.01", "0.001", "20"),
    "SOLUSDT": ("0.0100", "1", "5"),
    "DOGEUSDT": ("0.000010", "1", "5"),
    "HYPEUSDT": ("0.0010", "0.01", "5"),
}
# ccxt url key -> path on this server (every Binance host is redirected, so nothing leaks out)
URL_KEYS = {
    "fapiPublic": "/fapi/v1",
    "fapiPublicV2": "/fapi/v2",
    "fapiPublicV3": "/fapi/v3",
    "fapiPrivate": "/fapi/v1",
    "fapiPrivateV2": "/fapi/v2",
    "fapiPrivateV3": "/fapi/v3",
    "fapiData": "/futures/data",
    "public": "/api/v3",
    "private": "/api/v3",
    "v1": "/api/v1",
    "sapi": "/sapi/v1",
    "sapiV2": "/sapi/v2",
    "sapiV3": "/sapi/v3",
    "sapiV4": "/sapi/v4",
    "dapiPublic": "/dapi/v1",
    "dapiPrivate": "/dapi/v1",
    "dapiPrivateV2": "/dapi/v2",
    "dapiData": "/futures/data",
    "eapiPublic": "/eapi/v1",
    "eapiPrivate": "/eapi/v1",
    "papi": "/papi/v1",
    "papiV2": "/papi/v2",
}


def ccxt_config(url: str) -> dict[str, Any]:
    """Overlay for ccxt.binance / ccxt.binanceusdm and Freqtrade's ``exchange.ccxt_config``."""
    return {
        "urls": {"api": {k: f"{url}{p}" for k, p in URL_KEYS.items()}},
        "options": {"fetchMarkets": {"types": ["linear"]}},
    }


class BinanceError(VenueError):
    """An error Binance would answer with HTTP 400 and ``{"code", "msg"}``."""

    def response(self, req: Request) -> Response:
        return json_response({"code": self.code, "msg": self.msg}, self.status)


#: Binance-style decimal string without exponent; the shortest that round-trips exactly
_num = decimal_text("0", None)


def _decimals(s: str) -> int:
    return len(s.split(".")[1]) if "." in s else 0


class _Binance(Venue):
    """Handlers; one instance per ReplayExchange."""

    error = BinanceError
    bad_param = (-1100, "Illegal characters found in parameter '{name}'.")
    bad_limit = (-1130, "Data sent for parameter 'limit' is not valid.")

    # helpers ----------------------------------------------------------------------------
    @staticmethod
    def _mandatory(req: Request, key: str) -> str:
        value = req.query.get(key)
        if value is None:
            raise BinanceError(-1102, f"Mandatory parameter '{key}' was not sent.")
        return value

    def _choice(self, req: Request, key: str, allowed: tuple[str, ...]) -> str:
        value = self._mandatory(req, key)
        if value not in allowed:
            raise BinanceError(-1120, f"Invalid {key}.")
        return value

    def _required_symbol(self, req: Request) -> str:
        sym = self._mandatory(req, "symbol")
        if sym not in self.markets:
            raise BinanceError(-1121, "Invalid symbol.")
        return sym

    def _symbol(self, req: Request) -> str | None:
        """The query's symbol, or None when it names none (every symbol)."""
        return self._required_symbol(req) if "symbol" in req.query else None

    @staticmethod
    def _select(
        ts: np.ndarray, start: int | None, end: int | None, limit: int, visible: int | None
    ) -> tuple[int, int]:
        """Binance row window [lo, hi) over sorted ``ts``."""
        hi_cap = len(ts) if visible is None else int(np.searchsorted(ts, visible, "right"))
        lo = 0 if start is None else int(np.searchsorted(ts, start, "left"))
        hi = hi_cap if end is None else min(hi_cap, int(np.searchsorted(ts, end, "right")))
        if lo >= hi:
            return lo, lo
        if start is None:
            return max(lo, hi - limit), hi
        return lo, min(hi, lo + limit)

    def _frame(self, sym: str, tf: str, ctype: str) -> pd.DataFrame | None:
        return self.data.frame(self.markets[sym], tf, ctype)

    def _price(self, sym: str, req: Request, ctype: str = "futures") -> float:
        """Last trade price at replay now: the forming candle's close, or the last close."""
        fp = self.markets[sym]
        tfs = self.data.timeframes(fp, ctype) or self.data.timeframes(fp, "futures")
        df = self.data.frame(fp, tfs[0], ctype) if tfs else None
        if df is None or df.empty:
            df = self.data.frame(fp, self.data.timeframes(fp, "futures")[0], "futures")
            tfs = self.data.timeframes(fp, "futures")
        assert df is not None
        ts = df["ts"].to_numpy()
        vis = req.visible_until
        i = len(ts) - 1 if vis is None else int(np.searchsorted(ts, vis, "right")) - 1
        if i < 0:
            return float(df["open"].iloc[0])
        row = df.iloc[i]
        period = timeframe_to_ms(tfs[0])
        if vis is not None and ts[i] + period > vis:
            if not self.rx.forming_candle:
                return float(row["open"])  # known at the candle's start: no look-ahead
            frac = (vis - ts[i]) / period
            return float(row["open"] + (row["close"] - row["open"]) * frac)
        return float(row["close"])

    def _filters(self, sym: str) -> tuple[str, str, str]:
        if sym in KNOWN_FILTERS:
            return KNOWN_FILTERS[sym]
        df = self._frame(sym, self.data.timeframes(self.markets[sym], "futures")[0], "futures")
        price = float(df["close"].median()) if df is not None and len(df) else 1.0
        mag = math.floor(math.log10(price)) if price > 0 else 0
        tick = f"{10.0 ** (mag - 4):.{max(0, 4 - mag)}f}"
        step_exp = max(0, mag - 1)
        step = "1" if step_exp == 0 else f"{10.0**-step_exp:.{step_exp}f}"
        return tick, step, "5"

    # endpoints ----------------------------------------------------------------------------
    @serves("/fapi/v1/exchangeInfo")
    def exchange_info(self, req: Request) -> Response:
        symbols = []
        for sym, fp in sorted(self.markets.items()):
            base, quote, settle = fp.split("_")
            tick, step, notional = self._filters(sym)
            onboard = self.listed_ms(fp)
            symbols.append(
                {
                    "symbol": sym,
                    "pair": sym,
                    "contractType": "PERPETUAL",
                    "deliveryDate": PERPETUAL_DELIVERY,
                    "onboardDate": onboard,
                    "status": "TRADING",
                    "maintMarginPercent": "2.5000",
                    "requiredMarginPercent": "5.0000",
                    "baseAsset": base,
                    "quoteAsset": quote,
                    "marginAsset": settle,
                    "pricePrecision": _decimals(tick),
                    "quantityPrecision": _decimals(step),
                    "baseAssetPrecision": 8,
                    "quotePrecision": 8,
                    "underlyingType": "COIN",
                    "underlyingSubType": [],
                    "settlePlan": 0,
                    "triggerProtect": "0.0500",
                    "liquidationFee": "0.012500",
                    "marketTakeBound": "0.05",
                    "maxMoveOrderLimit": 10000,
                    "filters": [
                        {
                            "filterType": "PRICE_FILTER",
                            "minPrice": tick,
                            "maxPrice": "10000000",
                            "tickSize": tick,
                        },
                        {
                            "filterType": "LOT_SIZE",
                            "minQty": step,
                            "maxQty": "100000000",
                            "stepSize": step,
                        },
                        {
                            "filterType": "MARKET_LOT_SIZE",
                            "minQty": step,
                            "maxQty": "10000000",
                            "stepSize": step,
                        },
                        {"filterType": "MAX_NUM_ORDERS", "limit": 200},
                        {"filterType": "MAX_NUM_ALGO_ORDERS", "limit": 10},
                        {"filterType": "MIN_NOTIONAL", "notional": notional},
                        {
                            "filterType": "PERCENT_PRICE",
                            "multiplierUp": "1.0500",
                            "multiplierDown": "0.9500",
                            "multiplierDecimal": "4",
                        },
                    ],
                    "orderTypes": [
                        "LIMIT",
                        "MARKET",
                        "STOP",
                        "STOP_MARKET",
                        "TAKE_PROFIT",
                        "TAKE_PROFIT_MARKET",
                        "TRAILING_STOP_MARKET",
                    ],
                    "timeInForce": ["GTC", "IOC", "FOK", "GTX", "GTD"],
                    "permissionSets": ["GRID", "COPY"],
                }
            )
        return json_response(
            {
                "timezone": "UTC",
                "serverTime": req.now_ms,
                "futuresType": "U_MARGINED",
                "rateLimits": [
                    {
                        "rateLimitType": "REQUEST_WEIGHT",
                        "interval": "MINUTE",
                        "intervalNum": 1,
                        "limit": 2400,
                    }
                ],
                "exchangeFilters": [],
                "assets": [
                    {"asset": a, "marginAvailable": True, "autoAssetExchange": "0"}
                    for a in sorted({fp.split("_")[2] for fp in self.markets.values()})
                ],
                "symbols": symbols,
            }
        )

    @serves("/fapi/v1/time")
    def time(self, req: Request) -> Response:
        return json_response({"serverTime": req.now_ms})

    @serves("/fapi/v1/ping")
    def ping(self, req: Request) -> Response:
        return json_response({})

    def _klines(self, req: Request, ctype: str) -> Response:
        sym = self._required_symbol(req)
        interval = self._choice(req, "interval", INTERVALS)
        limit = self._limit(req, 500, 1500)
        df = self._frame(sym, interval, ctype)
        if df is None or df.empty:
            return json_response([])
        start, end = self._int(req, "startTime"), self._int(req, "endTime")
        ts = df["ts"].to_numpy()
        period = timeframe_to_ms(interval)
        visible = req.visible_until
        if visible is not None and not self.rx.forming_candle:
            visible -= period  # closed candles only: open + period <= now
        lo, hi = self._select(ts, start, end, limit, visible)
        part = df.iloc[lo:hi]
        o = part["open"].to_numpy(dtype="float64").copy()
        h = part["high"].to_numpy(dtype="float64").copy()
        low = part["low"].to_numpy(dtype="float64").copy()
        c = part["close"].to_numpy(dtype="float64").copy()
        v = part["volume"].to_numpy(dtype="float64").copy()
        has = part.columns
        qv = (
            part["quote_volume"].to_numpy(dtype="float64").copy() if "quote_volume" in has else None
        )
        trades = part["trades"].to_numpy().copy() if "trades" in has else None
        tb = (
            part["taker_buy_volume"].to_numpy(dtype="float64").copy()
            if "taker_buy_volume" in has
            else None
        )
        tbq = (
            part["taker_buy_quote_volume"].to_numpy(dtype="float64").copy()
            if "taker_buy_quote_volume" in has
            else None
        )
        vis = req.visible_until
        if vis is not None and len(part) and ts[hi - 1] + period > vis:
            # forming candle: close moves linearly from open to the source close, volumes pro rata
            frac = (vis - ts[hi - 1]) / period
            c[-1] = o[-1] + (c[-1] - o[-1]) * frac
            h[-1] = max(o[-1], c[-1])
            low[-1] = min(o[-1], c[-1])
            v[-1] *= frac
            for arr in (qv, tb, tbq):
                if arr is not None:
                    arr[-1] *= frac
            if trades is not None:
                trades[-1] = int(trades[-1] * frac)
        if qv is None:
            qv = v * (o + h + low + c) / 4.0  # estimate: volume times the bar's mean price
        if tb is None:
            tb = v / 2.0  # no taker split in the source: neutral half
        if tbq is None:
            tbq = qv * (tb / np.where(v > 0, v, 1.0))
        mark = ctype == "mark"
        rows = []
        for i, t in enumerate(part["ts"].to_numpy().tolist()):
            rows.append(
                [
                    t,
                    _num(o[i]),
                    _num(h[i]),
                    _num(low[i]),
                    _num(c[i]),
                    "0" if mark else _num(v[i]),
                    t + period - 1,
                    "0" if mark else _num(qv[i]),
                    0 if mark or trades is None else int(trades[i]),
                    "0" if mark else _num(tb[i]),
                    "0" if mark else _num(tbq[i]),
                    "0",
                ]
            )
        return json_response(rows)

    @serves("/fapi/v1/klines")
    def klines(self, req: Request) -> Response:
        return self._klines(req, "futures")

    @serves("/fapi/v1/markPriceKlines")
    def mark_price_klines(self, req: Request) -> Response:
        return self._klines(req, "mark")

    @serves("/fapi/v1/fundingRate")
    def funding_rate(self, req: Request) -> Response:
        sym = self._symbol(req)
        limit = self._limit(req, 100, 1000)
        start, end = self._int(req, "startTime"), self._int(req, "endTime")
        syms = [sym] if sym else sorted(self.markets)
        out: list[dict[str, Any]] = []
        for s in syms:
            df = self._frame(s, "1h", "funding_rate")
            if df is None or df.empty:
                continue
            ts = df["ts"].to_numpy()
            lo, hi = self._select(ts, start, end, limit, req.visible_until)
            mark = self._frame(s, "1h", "mark")
            mark_open = (
                dict(zip(mark["ts"].tolist(), mark["open"].tolist(), strict=True))
                if mark is not None
                else {}
            )
            col = "funding_rate" if "funding_rate" in df.columns else "open"
            for t, r in zip(ts[lo:hi].tolist(), df[col].iloc[lo:hi].tolist(), strict=True):
                mp = mark_open.get(t)
                out.append(
                    {
                        "symbol": s,
                        "fundingTime": t,
                        "fundingRate": f"{r:.8f}",
                        "markPrice": "" if mp is None else _num(mp),
                    }
                )
        out.sort(key=lambda d: d["fundingTime"])
        return json_response(out[-limit:] if start is None else out[:limit])

    def _premium(self, sym: str, req: Request) -> dict[str, Any]:
        price = self._price(sym, req)
        mark_price = self._price(sym, req, "mark")
        df = self._frame(sym, "1h", "funding_rate")
        last_rate, next_time = 0.0, 0
        if df is not None and len(df):
            ts = df["ts"].to_numpy()
            now = req.now_ms
            i = int(np.searchsorted(ts, now, "right"))
            col = "funding_rate" if "funding_rate" in df.columns else "open"
            if i > 0:
                last_rate = float(df[col].iloc[i - 1])
            next_time = int(ts[i]) if i < len(ts) else 0
        if not next_time:
            next_time = (req.now_ms // 28_800_000 + 1) * 28_800_000
        return {
            "symbol": sym,
            "markPrice": _num(mark_price),
            "indexPrice": _num(price),
            "estimatedSettlePrice": _num(price),
            "lastFundingRate": f"{last_rate:.8f}",
            "interestRate": "0.00010000",
            "nextFundingTime": next_time,
            "time": req.now_ms,
        }

    @serves("/fapi/v1/premiumIndex")
    def premium_index(self, req: Request) -> Response:
        sym = self._symbol(req)
        if sym:
            return json_response(self._premium(sym, req))
        return json_response([self._premium(s, req) for s in sorted(self.markets)])

    def _oi_frame(self, sym: str, period: str) -> pd.DataFrame | None:
        return self._frame(sym, period, "open_interest")

    @serves("/futures/data/openInterestHist")
    def open_interest_hist(self, req: Request) -> Response:
        sym = self._required_symbol(req)
        period = self._choice(req, "period", OI_PERIODS)
        limit = self._limit(req, 30, 500)
        df = self._oi_frame(sym, period)
        if df is None or df.empty:
            return json_response([])
        ts = df["ts"].to_numpy()
        lo, hi = self._select(
            ts, self._int(req, "startTime"), self._int(req, "endTime"), limit, req.visible_until
        )
        part = df.iloc[lo:hi]
        rows = [
            {
                "symbol": sym,
                "sumOpenInterest": _num(a),
                "sumOpenInterestValue": _num(v),
                "timestamp": t,
            }
            for t, a, v in zip(
                part["ts"].tolist(),
                part["open_interest_amount"].tolist(),
                part["open_interest_value"].tolist(),
                strict=True,
            )
        ]
        return json_response(rows)

    @serves("/fapi/v1/openInterest")
    def open_interest(self, req: Request) -> Response:
        sym = self._required_symbol(req)
        fp = self.markets[sym]
        tfs = self.data.timeframes(fp, "open_interest")
        if not tfs:
            raise BinanceError(
                -1121, f"no open interest in the replay datadir for {sym} ({fp}-<tf>-open_interest)"
            )
        df = self._oi_frame(sym, tfs[0])
        assert df is not None
        ts = df["ts"].to_numpy()
        vis = req.visible_until
        i = len(ts) - 1 if vis is None else int(np.searchsorted(ts, vis, "right")) - 1
        if i < 0:
            raise BinanceError(-1121, f"no open interest for {sym} before replay time {vis}")
        amount = float(df["open_interest_amount"].iloc[i])
        return json_response({"openInterest": _num(amount), "symbol": sym, "time": req.now_ms})

    def _book(self, sym: str, req: Request, limit: int) -> tuple[list[list[str]], list[list[str]]]:
        tick_s, step_s, _ = self._filters(sym)
        tick, step = float(tick_s), float(step_s)
        price = self._price(sym, req)
        best_bid = math.floor(price / tick) * tick
        if best_bid >= price:
            best_bid -= tick
        best_ask = best_bid + tick
        pd_, qd = _decimals(tick_s), _decimals(step_s)
        base_qty = max(step, round(25_000.0 / max(price, 1e-12) / step) * step)
        bids, asks = [], []
        for i in range(limit):
            qty = f"{base_qty * (1 + 0.25 * i):.{qd}f}"
            bids.append([f"{best_bid - i * tick:.{pd_}f}", qty])
            asks.append([f"{best_ask + i * tick:.{pd_}f}", qty])
        return bids, asks

    @serves("/fapi/v1/depth")
    def depth(self, req: Request) -> Response:
        sym = self._required_symbol(req)
        limit = self._int(req, "limit") or 500
        if limit not in DEPTH_LIMITS:
            raise BinanceError(-1130, "Data sent for parameter 'limit' is not valid.")
        bids, asks = self._book(sym, req, limit)
        return json_response(
            {
                "lastUpdateId": req.now_ms,
                "E": req.now_ms,
                "T": req.now_ms,
                "bids": bids,
                "asks": asks,
            }
        )

    @serves("/fapi/v1/ticker/bookTicker")
    def book_ticker(self, req: Request) -> Response:
        sym = self._symbol(req)
        out = []
        for s in [sym] if sym else sorted(self.markets):
            bids, asks = self._book(s, req, 1)
            out.append(
                {
                    "symbol": s,
                    "bidPrice": bids[0][0],
                    "bidQty": bids[0][1],
                    "askPrice": asks[0][0],
                    "askQty": asks[0][1],
                    "time": req.now_ms,
                    "lastUpdateId": req.now_ms,
                }
            )
        return json_response(out[0] if sym else out)

    @serves("/fapi/v1/ticker/price", "/fapi/v2/ticker/price")
    def ticker_price(self, req: Request) -> Response:
        sym = self._symbol(req)
        out = [
            {"symbol": s, "price": _num(self._price(s, req)), "time": req.now_ms}
            for s in ([sym] if sym else sorted(self.markets))
        ]
        return json_response(out[0] if sym else out)

    @serves("/fapi/v1/ticker/24hr")
    def ticker_24hr(self, req: Request) -> Response:
        sym = self._symbol(req)
        out = []
        for s in [sym] if sym else sorted(self.markets):
            fp = self.markets[s]
            tf = self.data.timeframes(fp, "futures")[0]
            df = self.data.frame(fp, tf, "futures")
            assert df is not None
            now = req.now_ms
            vis = req.visible_until
            ts = df["ts"].to_numpy()
            hi = len(ts) if vis is None else int(np.searchsorted(ts, vis, "right"))
            end = int(ts[hi - 1]) if hi else now
            lo = int(np.searchsorted(ts, end - 86_400_000, "right"))
            part = df.iloc[lo:hi]
            last = self._price(s, req)
            first = float(part["open"].iloc[0]) if len(part) else last
            vol = float(part["volume"].sum())
            out.append(
                {
                    "symbol": s,
                    "priceChange": _num(last - first),
                    "priceChangePercent": f"{(last / first - 1) * 100 if first else 0:.3f}",
                    "weightedAvgPrice": _num(last),
                    "lastPrice": _num(last),
                    "lastQty": "0",
                    "openPrice": _num(first),
                    "highPrice": _num(float(part["high"].max()) if len(part) else last),
                    "lowPrice": _num(float(part["low"].min()) if len(part) else last),
                    "volume": _num(vol),
                    "quoteVolume": _num(vol * last),
                    "openTime": int(part["ts"].iloc[0]) if len(part) else now,
                    "closeTime": now,
                    "firstId": 0,
                    "lastId": 0,
                    "count": 0,
                }
            )
        return json_response(out[0] if sym else out)


def register(rx: ReplayExchange) -> None:
    """Add the Binance USD-M routes to ``rx``."""
    _Binance(rx).register()
