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

from liqsignal.data.replay import server
from liqsignal.data.replay.server import ReplayExchange, Request, Response, json_response

__all__ = ["ccxt_config", "register"]

server.VENUES.setdefault("bitget", __name__)

GRANULARITY = {
    "1m": "1m",
    "3m": "3m",
    "5m": "5m",
    "15m": "15m",
    "30m": "30m",
    "1H": "1h",
    "4H": "4h",
    "6H": "6h",
    "12H": "12h",
    "1D": "1d",
    "1W": "1w",
}
URL_KEYS = ("spot", "mix", "user", "p2p", "broker", "margin", "common", "tax", "convert", "copy",
            "earn", "uta")  # fmt: skip


def ccxt_config(url: str) -> dict[str, Any]:
    """Overlay for ``ccxt.bitget`` (swap markets only)."""
    return {
        "urls": {"api": dict.fromkeys(URL_KEYS, url)},
        "options": {"fetchMarkets": {"types": ["swap"]}, "defaultType": "swap"},
    }


class BitgetError(Exception):
    def __init__(self, code: str, msg: str, status: int = 400) -> None:
        super().__init__(msg)
        self.code, self.msg, self.status = code, msg, status


def _ok(data: Any, now_ms: int) -> Response:
    return json_response({"code": "00000", "msg": "success", "requestTime": now_ms, "data": data})


def _s(x: Any) -> str:
    if x is None or (isinstance(x, float) and np.isnan(x)):
        return "0"
    return np.format_float_positional(float(x), trim="-", precision=10)


class _Bitget:
    def __init__(self, rx: ReplayExchange) -> None:
        self.rx = rx
        self.data = rx.data
        self.symbols = {  # BTCUSDT -> BTC_USDT_USDT
            base + quote: fp
            for base, quote, settle, fp in self.data.perpetuals()
            if quote == settle == "USDT"
        }

    def _symbol(self, req: Request) -> str:
        sym = req.query.get("symbol")
        if not sym:
            raise BitgetError("40019", "Parameter symbol cannot be empty")
        if sym not in self.symbols:
            raise BitgetError("40309", "The symbol has been removed")
        if req.query.get("productType", "").upper() != "USDT-FUTURES":
            raise BitgetError("40020", "Parameter productType error")
        return sym

    @staticmethod
    def _int(req: Request, name: str) -> int | None:
        v = req.query.get(name)
        if v in (None, ""):
            return None
        try:
            return int(str(v))
        except ValueError:
            raise BitgetError("40020", f"Parameter {name} error") from None

    def _limit(self, req: Request, key: str, default: int, maximum: int) -> int:
        limit = self._int(req, key)
        if limit is None:
            return default
        if not 1 <= limit <= maximum:
            raise BitgetError("40020", f"Parameter {key} error")
        return limit

    def _cap(self, req: Request) -> int:
        return req.now_ms if req.visible_until is None else min(req.now_ms, req.visible_until)

    # handlers -------------------------------------------------------------------------------
    def time(self, req: Request) -> Response:
        return _ok({"serverTime": str(req.now_ms)}, req.now_ms)

    def coins(self, req: Request) -> Response:
        names = sorted({"USDT", *(fp.split("_")[0] for fp in self.symbols.values())})
        return _ok(
            [
                {"coinId": str(i + 1), "coin": c, "transfer": "true", "chains": []}
                for i, c in enumerate(names)
            ],
            req.now_ms,
        )

    def contracts(self, req: Request) -> Response:
        if req.query.get("productType", "").upper() != "USDT-FUTURES":
            return _ok([], req.now_ms)
        out = []
        for sym, fp in sorted(self.symbols.items()):
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
        limit = self._limit(req, "limit", 100, maximum)
        df = self.data.frame(self.symbols[sym], GRANULARITY[gran], ctype)
        if df is None:
            return _ok([], req.now_ms)
        ts = df["ts"].to_numpy()
        start, end = self._int(req, "startTime"), self._int(req, "endTime")
        end = self._cap(req) if end is None else min(end, self._cap(req))
        lo = 0 if start is None else int(np.searchsorted(ts, start, "left"))
        hi = int(np.searchsorted(ts, end, "right"))
        lo = max(lo, hi - limit)
        rows = df.iloc[lo:hi] if hi > lo else df.iloc[0:0]
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

    def candles(self, req: Request) -> Response:
        return self._candles(req, "futures", 1000)

    def history_candles(self, req: Request) -> Response:
        return self._candles(req, "futures", 200)

    def history_mark_candles(self, req: Request) -> Response:
        return self._candles(req, "mark", 200)

    def funding(self, req: Request) -> Response:
        sym = self._symbol(req)
        size = self._limit(req, "pageSize", 20, 100)
        page = self._limit(req, "pageNo", 1, 1_000_000)
        fp = self.symbols[sym]
        tfs = self.data.timeframes(fp, "funding_rate")
        df = self.data.frame(fp, tfs[0], "funding_rate") if tfs else None
        if df is None:
            return _ok([], req.now_ms)
        col = "funding_rate" if "funding_rate" in df.columns else "open"
        visible = df[df["ts"] <= self._cap(req)].iloc[::-1]
        rows = visible.iloc[(page - 1) * size : page * size]
        return _ok(
            [
                {"symbol": sym, "fundingRate": _s(getattr(r, col)), "fundingTime": str(int(r.ts))}
                for r in rows.itertuples(index=False)
            ],
            req.now_ms,
        )


def _guard(fn: Any) -> Any:
    def handler(req: Request) -> Response:
        try:
            return fn(req)  # type: ignore[no-any-return]
        except BitgetError as e:
            body = {"code": e.code, "msg": e.msg, "requestTime": req.now_ms, "data": None}
            return json_response(body, e.status)

    return handler


def register(rx: ReplayExchange) -> None:
    """Add the Bitget routes to ``rx``."""
    b = _Bitget(rx)
    for path, fn in (
        ("/api/v2/public/time", b.time),
        ("/api/v2/spot/public/coins", b.coins),
        ("/api/v2/mix/market/contracts", b.contracts),
        ("/api/v2/mix/market/candles", b.candles),
        ("/api/v2/mix/market/history-candles", b.history_candles),
        ("/api/v2/mix/market/history-mark-candles", b.history_mark_candles),
        ("/api/v2/mix/market/history-fund-rate", b.funding),
    ):
        rx.route("GET", path, _guard(fn))
