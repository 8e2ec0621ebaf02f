"""Bybit v5 linear-perpetual REST subset of the replay exchange, as ccxt 4.5 asks for it.

Served paths (GET): ``/v5/market/time``, ``/v5/market/instruments-info``, ``/v5/market/kline``,
``/v5/market/mark-price-kline``, ``/v5/market/funding/history``, ``/v5/market/open-interest``,
``/v5/market/tickers``, ``/v5/market/risk-limit`` (from ``<datadir>/leverage_tiers.json``, ccxt
tiers per symbol as in Freqtrade's ``binance_leverage_tiers.json``, when the file exists).
Data comes from the replay datadir (Freqtrade layout, one venue per datadir). Row selection
follows Bybit: rows in ``[start, end]`` (``startTime``/``endTime`` for funding and open
interest), the NEWEST ``limit`` of them, newest first; ``end`` defaults to now. Errors answer
HTTP 200 with ``retCode`` (10001: bad parameter or unknown symbol), as Bybit does. Instrument
filters are plausible constants, not Bybit's real ones.
"""

from __future__ import annotations

import json
from typing import Any

import numpy as np
import pandas as pd

from liqsignal.data.replay import server
from liqsignal.data.replay.server import ReplayExchange, Request, Response, json_response

__all__ = ["ccxt_config", "register"]

server.VENUES.setdefault("bybit", __name__)

INTERVALS = {
    "1": "1m",
    "3": "3m",
    "5": "5m",
    "15": "15m",
    "30": "30m",
    "60": "1h",
    "120": "2h",
    "240": "4h",
    "360": "6h",
    "720": "12h",
    "D": "1d",
}
OI_INTERVALS = {"5min": "5m", "15min": "15m", "30min": "30m", "1h": "1h", "4h": "4h", "1d": "1d"}
URL_KEYS = ("spot", "futures", "v2", "public", "private")


def ccxt_config(url: str) -> dict[str, Any]:
    """Overlay for ``ccxt.bybit`` (linear markets only)."""
    return {
        "urls": {"api": dict.fromkeys(URL_KEYS, url)},
        "options": {"fetchMarkets": {"types": ["linear"]}, "defaultType": "swap"},
    }


class BybitError(Exception):
    def __init__(self, code: int, msg: str) -> None:
        super().__init__(msg)
        self.code, self.msg = code, msg


def _ok(result: Any, now_ms: int) -> Response:
    return json_response(
        {"retCode": 0, "retMsg": "OK", "result": result, "retExtInfo": {}, "time": now_ms}
    )


def _s(x: Any) -> str:
    if x is None or (isinstance(x, float) and np.isnan(x)):
        return ""
    return np.format_float_positional(float(x), trim="-", precision=10)


class _Bybit:
    def __init__(self, rx: ReplayExchange) -> None:
        self.rx = rx
        self.data = rx.data
        # BTCUSDT -> BTC_USDT_USDT
        self.symbols = {base + quote: fp for base, quote, _settle, fp in self.data.perpetuals()}

    # helpers --------------------------------------------------------------------------------
    def _symbol(self, req: Request) -> str:
        sym = req.query.get("symbol")
        if not sym:
            raise BybitError(10001, "params error: symbol is required")
        if sym not in self.symbols:
            raise BybitError(10001, "params error: symbol invalid")
        return sym

    @staticmethod
    def _int(req: Request, name: str) -> int | None:
        v = req.query.get(name)
        if v in (None, ""):
            return None
        try:
            return int(str(v))
        except ValueError:
            raise BybitError(10001, f"params error: {name} invalid") from None

    def _limit(self, req: Request, default: int, maximum: int) -> int:
        limit = self._int(req, "limit")
        if limit is None:
            return default
        if not 1 <= limit <= maximum:
            raise BybitError(10001, "params error: limit invalid")
        return limit

    def _window(
        self, req: Request, df: pd.DataFrame, start_key: str, end_key: str, limit: int
    ) -> pd.DataFrame:
        """Newest ``limit`` rows in [start, end] (end defaults to now), newest first."""
        ts = df["ts"].to_numpy()
        start = self._int(req, start_key)
        end = self._int(req, end_key)
        cap = req.now_ms if req.visible_until is None else min(req.now_ms, req.visible_until)
        end = cap if end is None else min(end, cap)
        lo = 0 if start is None else int(np.searchsorted(ts, start, "left"))
        hi = int(np.searchsorted(ts, end, "right"))
        lo = max(lo, hi - limit)
        return df.iloc[lo:hi].iloc[::-1] if hi > lo else df.iloc[0:0]

    def _frame(self, sym: str, tf: str, ctype: str) -> pd.DataFrame:
        df = self.data.frame(self.symbols[sym], tf, ctype)
        if df is None:
            raise BybitError(10001, f"params error: no {ctype} data for {sym} {tf}")
        return df

    # handlers -------------------------------------------------------------------------------
    def time(self, req: Request) -> Response:
        now = req.now_ms
        return _ok({"timeSecond": str(now // 1000), "timeNano": str(now * 1_000_000)}, now)

    def instruments(self, req: Request) -> Response:
        if req.query.get("category") not in (None, "linear"):
            return _ok({"category": req.query.get("category"), "list": []}, req.now_ms)
        if req.query.get("status") == "PreLaunch":
            return _ok({"category": "linear", "list": []}, req.now_ms)
        wanted = req.query.get("symbol")
        items = []
        for sym, fp in sorted(self.symbols.items()):
            if wanted and sym != wanted:
                continue
            base, quote, settle = fp.split("_")
            df = self.data.frame(fp, self.data.timeframes(fp, "futures")[0], "futures")
            launch = int(df["ts"].iloc[0]) if df is not None and len(df) else 0
            items.append(
                {
                    "symbol": sym,
                    "contractType": "LinearPerpetual",
                    "status": "Trading",
                    "baseCoin": base,
                    "quoteCoin": quote,
                    "settleCoin": settle,
                    "launchTime": str(launch),
                    "deliveryTime": "0",
                    "deliveryFeeRate": "",
                    "priceScale": "2",
                    "leverageFilter": {
                        "minLeverage": "1",
                        "maxLeverage": "100.00",
                        "leverageStep": "0.01",
                    },
                    "priceFilter": {
                        "minPrice": "0.10",
                        "maxPrice": "1999999.80",
                        "tickSize": "0.10",
                    },
                    "lotSizeFilter": {
                        "maxOrderQty": "1190.000",
                        "minOrderQty": "0.001",
                        "qtyStep": "0.001",
                        "postOnlyMaxOrderQty": "1190.000",
                        "maxMktOrderQty": "119.000",
                        "minNotionalValue": "5",
                    },
                    "unifiedMarginTrade": True,
                    "fundingInterval": 480,
                    "copyTrading": "both",
                    "upperFundingRate": "0.005",
                    "lowerFundingRate": "-0.005",
                    "isPreListing": False,
                }
            )
        return _ok({"category": "linear", "list": items}, req.now_ms)

    def _kline(self, req: Request, ctype: str, with_volume: bool) -> Response:
        sym = self._symbol(req)
        interval = req.query.get("interval", "")
        if interval not in INTERVALS:
            raise BybitError(10001, "params error: interval invalid")
        limit = self._limit(req, 200, 1000)
        df = self._frame(sym, INTERVALS[interval], ctype)
        rows = self._window(req, df, "start", "end", limit)
        out = []
        for r in rows.itertuples(index=False):
            row = [str(int(r.ts)), _s(r.open), _s(r.high), _s(r.low), _s(r.close)]
            if with_volume:
                row += [_s(r.volume), _s(float(r.volume) * float(r.close))]
            out.append(row)
        return _ok({"symbol": sym, "category": "linear", "list": out}, req.now_ms)

    def kline(self, req: Request) -> Response:
        return self._kline(req, "futures", True)

    def mark_kline(self, req: Request) -> Response:
        return self._kline(req, "mark", False)

    def funding(self, req: Request) -> Response:
        sym = self._symbol(req)
        limit = self._limit(req, 200, 200)
        fp = self.symbols[sym]
        tfs = self.data.timeframes(fp, "funding_rate")
        if not tfs:
            return _ok({"category": "linear", "list": []}, req.now_ms)
        df = self._frame(sym, tfs[0], "funding_rate")
        col = "funding_rate" if "funding_rate" in df.columns else "open"
        rows = self._window(req, df, "startTime", "endTime", limit)
        out = [
            {"symbol": sym, "fundingRate": _s(getattr(r, col)), "fundingRateTimestamp": str(r.ts)}
            for r in rows.itertuples(index=False)
        ]
        return _ok({"category": "linear", "list": out}, req.now_ms)

    def open_interest(self, req: Request) -> Response:
        sym = self._symbol(req)
        interval = req.query.get("intervalTime", "")
        if interval not in OI_INTERVALS:
            raise BybitError(10001, "params error: intervalTime invalid")
        limit = self._limit(req, 50, 200)
        df = self.data.frame(self.symbols[sym], OI_INTERVALS[interval], "open_interest")
        if df is None:
            return _ok({"symbol": sym, "category": "linear", "list": []}, req.now_ms)
        rows = self._window(req, df, "startTime", "endTime", limit)
        out = [
            {"openInterest": _s(r.open_interest_amount), "timestamp": str(r.ts)}
            for r in rows.itertuples(index=False)
        ]
        return _ok(
            {"symbol": sym, "category": "linear", "list": out, "nextPageCursor": ""}, req.now_ms
        )

    def tickers(self, req: Request) -> Response:
        wanted = req.query.get("symbol")
        if wanted is not None:
            self._symbol(req)
        out = []
        for sym, fp in sorted(self.symbols.items()):
            if wanted and sym != wanted:
                continue
            tf = self.data.timeframes(fp, "futures")[0]
            df = self.data.frame(fp, tf, "futures")
            if df is None or df.empty:
                continue
            cap = req.visible_until
            last = df if cap is None else df[df["ts"] <= cap]
            if last.empty:
                continue
            row = last.iloc[-1]
            price = _s(row["close"])
            out.append(
                {
                    "symbol": sym,
                    "lastPrice": price,
                    "markPrice": price,
                    "indexPrice": price,
                    "bid1Price": price,
                    "ask1Price": price,
                    "volume24h": _s(row["volume"]),
                    "openInterest": "",
                    "fundingRate": "",
                    "nextFundingTime": "",
                }
            )
        return _ok({"category": "linear", "list": out}, req.now_ms)

    def risk_limit(self, req: Request) -> Response:
        sym = self._symbol(req)
        path = self.data.datadir / "leverage_tiers.json"
        if not path.exists():
            raise BybitError(10001, f"params error: no risk limits for {sym} in this replay")
        tiers = json.loads(path.read_text()).get(self.data.file_pair_to_pair(self.symbols[sym]), [])
        out = [
            {
                "id": i + 1,
                "symbol": sym,
                "riskLimitValue": _s(t["maxNotional"]),
                "maintenanceMargin": _s(t["maintenanceMarginRate"]),
                "initialMargin": _s(1.0 / float(t["maxLeverage"])),
                "isLowestRisk": 1 if i == 0 else 0,
                "maxLeverage": _s(t["maxLeverage"]),
                "mmDeduction": "",
            }
            for i, t in enumerate(tiers)
        ]
        return _ok({"category": "linear", "list": out}, req.now_ms)


def _guard(fn: Any) -> Any:
    def handler(req: Request) -> Response:
        try:
            return fn(req)  # type: ignore[no-any-return]
        except BybitError as e:
            return json_response(
                {"retCode": e.code, "retMsg": e.msg, "result": {}, "retExtInfo": {}, "time": 0}
            )

    return handler


def register(rx: ReplayExchange) -> None:
    """Add the Bybit routes to ``rx``."""
    b = _Bybit(rx)
    for path, fn in (
        ("/v5/market/time", b.time),
        ("/v5/market/instruments-info", b.instruments),
        ("/v5/market/kline", b.kline),
        ("/v5/market/mark-price-kline", b.mark_kline),
        ("/v5/market/funding/history", b.funding),
        ("/v5/market/open-interest", b.open_interest),
        ("/v5/market/tickers", b.tickers),
        ("/v5/market/risk-limit", b.risk_limit),
    ):
        rx.route("GET", path, _guard(fn))
