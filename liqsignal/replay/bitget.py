"""Bitget v2 USDT-perpetual ("mix") REST subset of the replay exchange, as ccxt 4.5 asks for it.

Served paths (GET): ``/api/v2/public/time``, ``/api/v2/spot/public/coins`` (ccxt loads the
coins with the markets), ``/api/v2/mix/market/contracts`` (``productType=USDT-FUTURES``: every
``<BASE>_USDT_USDT`` futures file pair; the other product types are empty),
``/api/v2/mix/market/candles`` (at most 1000), ``/history-candles`` and ``/history-mark-candles``
(at most 200) and ``/api/v2/mix/market/history-fund-rate``.

Bitget's conventions kept: an envelope ``{"code": "00000", "msg": "success", "requestTime",
"data"}``; candles ``[ts, open, high, low, close, base volume, quote volume]`` as strings, the
NEWEST ``limit`` of those opened in ``[startTime, endTime]``, oldest first; funding history has no
time filter: ``pageSize`` (at most 100) rows of page ``pageNo`` (1 = newest), newest first.
Errors answer HTTP 400 with the envelope and Bitget's code (``40019`` a missing parameter,
``40020`` a bad one, ``40309`` an unknown or removed symbol). Contract filters are plausible
constants, not Bitget's.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from liqsignal.replay._venue import (
    Venue,
    VenueError,
    decimal_text,
    serves,
    timeframe_names,
)
from liqsignal.replay.messages import Request, Response, json_response
from liqsignal.replay.server import ReplayExchange

__all__ = ["ccxt_config", "register"]

GRANULARITY = timeframe_names("1m 3m 5m 15m 30m 1h 4h 6h 12h 1d 1w", upper=True)
URL_KEYS = ("spot", "mix", "user", "p2p", "broker", "margin", "common", "tax", "convert", "copy",
            "earn", "uta")  # fmt: skip


def ccxt_config(url: str) -> dict[str, Any]:
    """Overlay for ``ccxt.bitget`` (swap markets only)."""
    return {
        "urls": {"api": dict.fromkeys(URL_KEYS, url)},
        "options": {"fetchMarkets": {"types": ["swap"]}, "defaultType": "swap"},
    }


class BitgetError(VenueError):
    def response(self, req: Request) -> Response:
        body = {"code": self.code, "msg": self.msg, "requestTime": req.now_ms, "data": None}
        return json_response(body, self.status)


def _ok(data: Any, now_ms: int) -> Response:
    return json_response({"code": "00000", "msg": "success", "requestTime": now_ms, "data": data})


_s = decimal_text("0")


class _Bitget(Venue):
    error = BitgetError
    bad_param = ("40020", "Parameter {name} error")
    no_market = ("40019", "Parameter symbol cannot be empty")
    unknown_market = ("40309", "The symbol has been removed")

    def __init__(self, rx: ReplayExchange) -> None:
        super().__init__(rx, settles="USDT")  # BTCUSDT

    def _symbol(self, req: Request) -> str:
        sym = self._market(req)
        if req.query.get("productType", "").upper() != "USDT-FUTURES":
            raise BitgetError("40020", "Parameter productType error")
        return sym

    # handlers -------------------------------------------------------------------------------
    @serves("/api/v2/public/time")
    def time(self, req: Request) -> Response:
        return _ok({"serverTime": str(req.now_ms)}, req.now_ms)

    @serves("/api/v2/spot/public/coins")
    def coins(self, req: Request) -> Response:
        names = sorted({"USDT", *(fp.split("_")[0] for fp in self.markets.values())})
        return _ok(
            [
                {"coinId": str(i + 1), "coin": c, "transfer": "true", "chains": []}
                for i, c in enumerate(names)
            ],
            req.now_ms,
        )

    @serves("/api/v2/mix/market/contracts")
    def contracts(self, req: Request) -> Response:
        if req.query.get("productType", "").upper() != "USDT-FUTURES":
            return _ok([], req.now_ms)
        out = []
        for sym, fp in sorted(self.markets.items()):
            base, quote, _settle = fp.split("_")
            out.append(
                {
                    "symbol": sym,
                    "baseCoin": base,
                    "quoteCoin": quote,
                    "buyLimitPriceRatio": "0.05",
                    "sellLimitPriceRatio": "0.05",
                    "feeRateUpRatio": "0.005",
                    "makerFeeRate": "0.0002",
                    "takerFeeRate": "0.0006",
                    "openCostUpRatio": "0.01",
                    "supportMarginCoins": [quote],
                    "minTradeNum": "0.001",
                    "priceEndStep": "1",
                    "volumePlace": "3",
                    "pricePlace": "1",
                    "sizeMultiplier": "0.001",
                    "symbolType": "perpetual",
                    "minTradeUSDT": "5",
                    "maxSymbolOrderNum": "200",
                    "maxProductOrderNum": "400",
                    "maxPositionNum": "150",
                    "symbolStatus": "normal",
                    "offTime": "-1",
                    "limitOpenTime": "-1",
                    "deliveryTime": "",
                    "deliveryStartTime": "",
                    "launchTime": "",
                    "fundInterval": "8",
                    "minLever": "1",
                    "maxLever": "125",
                    "posLimit": "0.05",
                    "maintainTime": "",
                }
            )
        return _ok(out, req.now_ms)

    def _candles(self, req: Request, ctype: str, maximum: int) -> Response:
        sym = self._symbol(req)
        gran = req.query.get("granularity", "")
        if gran not in GRANULARITY:
            raise BitgetError("40020", "Parameter granularity error")
        limit = self._limit(req, 100, maximum)
        df = self.data.frame(self.markets[sym], GRANULARITY[gran], ctype)
        if df is None:
            return _ok([], req.now_ms)
        rows = df.iloc[self._newest(req, df["ts"].to_numpy(), "startTime", "endTime", limit)]
        out = []
        for r in rows.itertuples(index=False):
            vol = float(getattr(r, "volume", np.nan)) if ctype == "futures" else np.nan
            out.append(
                [
                    str(int(r.ts)),
                    _s(r.open),
                    _s(r.high),
                    _s(r.low),
                    _s(r.close),
                    _s(vol),
                    _s(vol * float(r.close)),
                ]
            )
        return _ok(out, req.now_ms)

    @serves("/api/v2/mix/market/candles")
    def candles(self, req: Request) -> Response:
        return self._candles(req, "futures", 1000)

    @serves("/api/v2/mix/market/history-candles")
    def history_candles(self, req: Request) -> Response:
        return self._candles(req, "futures", 200)

    @serves("/api/v2/mix/market/history-mark-candles")
    def history_mark_candles(self, req: Request) -> Response:
        return self._candles(req, "mark", 200)

    @serves("/api/v2/mix/market/history-fund-rate")
    def funding_history(self, req: Request) -> Response:
        sym = self._symbol(req)
        size = self._limit(req, 20, 100, "pageSize")
        page = self._limit(req, 1, 1_000_000, "pageNo")
        df, col = self.funding_of(self.markets[sym])
        visible = df[df["ts"] <= self._cap(req)].iloc[::-1]
        rows = visible.iloc[(page - 1) * size : page * size]
        return _ok(
            [
                {"symbol": sym, "fundingRate": _s(getattr(r, col)), "fundingTime": str(int(r.ts))}
                for r in rows.itertuples(index=False)
            ],
            req.now_ms,
        )


def register(rx: ReplayExchange) -> None:
    """Add the Bitget routes to ``rx``."""
    _Bitget(rx).register()
