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

import pandas as pd

from liqsignal.replay._venue import Venue, VenueError, decimal_text, serves
from liqsignal.replay.messages import Request, Response, json_response
from liqsignal.replay.server import ReplayExchange, timeframe_to_ms

__all__ = ["ccxt_config", "register"]

_MINUTE_INTERVALS = ("1m", "3m", "5m", "15m", "30m", "1h", "2h", "4h", "6h", "12h")
#: interval name (minutes, and D for a day) -> timeframe
INTERVALS = {**{str(timeframe_to_ms(tf) // 60_000): tf for tf in _MINUTE_INTERVALS}, "D": "1d"}
OI_INTERVALS = {"5min": "5m", "15min": "15m", "30min": "30m", "1h": "1h", "4h": "4h", "1d": "1d"}
URL_KEYS = ("spot", "futures", "v2", "public", "private")


def ccxt_config(url: str) -> dict[str, Any]:
    """Overlay for ``ccxt.bybit`` (linear markets only)."""
    return {
        "urls": {"api": dict.fromkeys(URL_KEYS, url)},
        "options": {"fetchMarkets": {"types": ["linear"]}, "defaultType": "swap"},
    }


class BybitError(VenueError):
    status = 200  # Bybit answers errors with HTTP 200 and a retCode

    def response(self, req: Request) -> Response:
        body = {"retCode": self.code, "retMsg": self.msg, "result": {}, "retExtInfo": {}, "time": 0}
        return json_response(body, self.status)


def _ok(result: Any, now_ms: int) -> Response:
    return json_response(
        {"retCode": 0, "retMsg": "OK", "result": result, "retExtInfo": {}, "time": now_ms}
    )


_s = decimal_text("")


class _Bybit(Venue):
    error = BybitError
    bad_param = (10001, "params error: {name} invalid")
    no_market = (10001, "params error: symbol is required")
    unknown_market = (10001, "params error: symbol invalid")

    # helpers --------------------------------------------------------------------------------
    def _window(
        self, req: Request, df: pd.DataFrame, start_key: str, end_key: str, limit: int
    ) -> pd.DataFrame:
        """Newest ``limit`` rows in [start, end] (end defaults to now), newest first."""
        rows = self._newest(req, df["ts"].to_numpy(), start_key, end_key, limit)
        return df.iloc[rows].iloc[::-1]

    def _frame(self, sym: str, tf: str, ctype: str) -> pd.DataFrame:
        df = self.data.frame(self.markets[sym], tf, ctype)
        if df is None:
            raise BybitError(10001, f"params error: no {ctype} data for {sym} {tf}")
        return df

    # handlers -------------------------------------------------------------------------------
    @serves("/v5/market/time")
    def time(self, req: Request) -> Response:
        now = req.now_ms
        return _ok({"timeSecond": str(now // 1000), "timeNano": str(now * 1_000_000)}, now)

    @serves("/v5/market/instruments-info")
    def instruments(self, req: Request) -> Response:
        if req.query.get("category") not in (None, "linear"):
            return _ok({"category": req.query.get("category"), "list": []}, req.now_ms)
        if req.query.get("status") == "PreLaunch":
            return _ok({"category": "linear", "list": []}, req.now_ms)
        wanted = req.query.get("symbol")
        items = []
        for sym, fp in sorted(self.markets.items()):
            if wanted and sym != wanted:
                continue
            base, quote, settle = fp.split("_")
            launch = self.listed_ms(fp)
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
        sym = self._market(req)
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

    @serves("/v5/market/kline")
    def kline(self, req: Request) -> Response:
        return self._kline(req, "futures", True)

    @serves("/v5/market/mark-price-kline")
    def mark_kline(self, req: Request) -> Response:
        return self._kline(req, "mark", False)

    @serves("/v5/market/funding/history")
    def funding_history(self, req: Request) -> Response:
        sym, limit, df, col = self.market_funding(req, 200, 200)
        rows = self._window(req, df, "startTime", "endTime", limit)
        out = [
            {"symbol": sym, "fundingRate": _s(getattr(r, col)), "fundingRateTimestamp": str(r.ts)}
            for r in rows.itertuples(index=False)
        ]
        return _ok({"category": "linear", "list": out}, req.now_ms)

    @serves("/v5/market/open-interest")
    def open_interest(self, req: Request) -> Response:
        sym = self._market(req)
        interval = req.query.get("intervalTime", "")
        if interval not in OI_INTERVALS:
            raise BybitError(10001, "params error: intervalTime invalid")
        limit = self._limit(req, 50, 200)
        df = self.data.frame(self.markets[sym], OI_INTERVALS[interval], "open_interest")
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

    @serves("/v5/market/tickers")
    def tickers(self, req: Request) -> Response:
        wanted = req.query.get("symbol")
        if wanted is not None:
            self._market(req)
        out = []
        for sym, fp in sorted(self.markets.items()):
            if wanted and sym != wanted:
                continue
            df = self.first_frame(fp, "futures")
            last = None if df is None else self.visible(df, req)
            if last is None or last.empty:
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

    @serves("/v5/market/risk-limit")
    def risk_limit(self, req: Request) -> Response:
        sym = self._market(req)
        path = self.data.datadir / "leverage_tiers.json"
        if not path.exists():
            raise BybitError(10001, f"params error: no risk limits for {sym} in this replay")
        tiers = json.loads(path.read_text()).get(self.data.file_pair_to_pair(self.markets[sym]), [])
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


def register(rx: ReplayExchange) -> None:
    """Add the Bybit routes to ``rx``."""
    _Bybit(rx).register()
