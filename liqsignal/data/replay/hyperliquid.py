"""Hyperliquid ``POST /info`` subset of the replay exchange, as ccxt 4.5's ``hyperliquid`` asks.

One route, ``POST /info``, dispatched on the JSON body's ``type``: ``metaAndAssetCtxs`` / ``meta``
(the perpetual universe: every ``<BASE>_USDC_USDC`` futures file pair of the replay datadir),
``spotMeta`` (ccxt loads the tokens with the markets: USDC and the bases, no spot pairs),
``exchangeStatus`` (server time), ``candleSnapshot`` (``req.coin``, ``req.interval``,
``req.startTime``, ``req.endTime``, ms: the candles opened in ``[startTime, endTime]``, at most
5000) and ``fundingHistory`` (``coin``, ``startTime``, ``endTime``: the earliest 500 rows in the
window, oldest first). Hyperliquid's conventions kept: coins by name (``BTC``), numbers as
strings, a candle carries ``t`` (open) and ``T`` (close, open + interval - 1 ms); an unknown
``type`` or a body that is not JSON answers HTTP 422 with a plain-text reason, as Hyperliquid
does. Size decimals and leverage are plausible constants, not Hyperliquid's.
"""

from __future__ import annotations

import json
from typing import Any

import numpy as np

from liqsignal.data.replay import server
from liqsignal.data.replay.server import ReplayExchange, Request, Response, json_response

__all__ = ["ccxt_config", "register"]

server.VENUES.setdefault("hyperliquid", __name__)

INTERVALS = ("1m", "3m", "5m", "15m", "30m", "1h", "2h", "4h", "8h", "12h", "1d", "3d", "1w")
MAX_CANDLES = 5000
MAX_FUNDING = 500
SZ_DECIMALS = {"BTC": 5, "ETH": 4}


def ccxt_config(url: str) -> dict[str, Any]:
    """Overlay for ``ccxt.hyperliquid`` (perpetuals only)."""
    return {
        "urls": {"api": {"public": url, "private": url}},
        "options": {"fetchMarkets": {"types": ["swap"]}, "defaultType": "swap"},
    }


class HyperliquidError(Exception):
    def __init__(self, message: str, status: int = 422) -> None:
        super().__init__(message)
        self.message, self.status = message, status


def _s(x: Any) -> str:
    if x is None or (isinstance(x, float) and np.isnan(x)):
        return "0.0"
    return np.format_float_positional(float(x), trim="-", precision=10)


class _Hyperliquid:
    def __init__(self, rx: ReplayExchange) -> None:
        self.rx = rx
        self.data = rx.data
        self.coins = {  # BTC -> BTC_USDC_USDC
            base: fp
            for base, quote, settle, fp in self.data.perpetuals()
            if quote == settle == "USDC"
        }

    @staticmethod
    def _int(obj: dict[str, Any], name: str) -> int | None:
        v = obj.get(name)
        if v is None:
            return None
        if isinstance(v, bool) or not isinstance(v, int | float):
            raise HyperliquidError(f"Failed to deserialize the JSON body: {name} must be a number")
        return int(v)

    def _coin(self, obj: dict[str, Any]) -> str:
        coin = obj.get("coin")
        if not isinstance(coin, str):
            raise HyperliquidError("Failed to deserialize the JSON body: missing field `coin`")
        return coin

    def _cap(self, req: Request) -> int:
        return req.now_ms if req.visible_until is None else min(req.now_ms, req.visible_until)

    def _last_close(self, fp: str) -> float:
        tfs = self.data.timeframes(fp, "futures")
        df = self.data.frame(fp, tfs[0], "futures") if tfs else None
        return float(df["close"].iloc[-1]) if df is not None and len(df) else 0.0

    # handlers -------------------------------------------------------------------------------
    def meta(self) -> dict[str, Any]:
        return {
            "universe": [
                {"name": coin, "szDecimals": SZ_DECIMALS.get(coin, 2), "maxLeverage": 40}
                for coin in sorted(self.coins)
            ],
            "marginTables": [],
        }

    def meta_and_ctxs(self) -> list[Any]:
        ctxs = []
        for coin in sorted(self.coins):
            px = _s(self._last_close(self.coins[coin]))
            ctxs.append(
                {
                    "funding": "0.0000125",
                    "openInterest": "0.0",
                    "prevDayPx": px,
                    "dayNtlVlm": "0.0",
                    "premium": "0.0",
                    "oraclePx": px,
                    "markPx": px,
                    "midPx": px,
                    "impactPxs": [px, px],
                    "dayBaseVlm": "0.0",
                }
            )
        return [self.meta(), ctxs]

    def spot_meta(self) -> dict[str, Any]:
        names = ["USDC", *sorted(self.coins)]
        tokens = [
            {
                "name": name,
                "szDecimals": 2,
                "weiDecimals": 8,
                "index": i,
                "tokenId": "0x" + f"{i:032x}",
                "isCanonical": True,
            }
            for i, name in enumerate(names)
        ]
        return {"tokens": tokens, "universe": []}

    def candles(self, req: Request, body: dict[str, Any]) -> list[dict[str, Any]]:
        r = body.get("req")
        if not isinstance(r, dict):
            raise HyperliquidError("Failed to deserialize the JSON body: missing field `req`")
        coin = self._coin(r)
        interval = r.get("interval")
        if interval not in INTERVALS:
            raise HyperliquidError(f"Failed to deserialize the JSON body: interval {interval!r}")
        if coin not in self.coins:
            return []
        df = self.data.frame(self.coins[coin], str(interval), "futures")
        if df is None:
            return []
        start = self._int(r, "startTime") or 0
        end = min(self._int(r, "endTime") or self._cap(req), self._cap(req))
        ts = df["ts"].to_numpy()
        lo = int(np.searchsorted(ts, start, "left"))
        hi = min(int(np.searchsorted(ts, end, "right")), lo + MAX_CANDLES)
        step = server.timeframe_to_ms(str(interval))
        return [
            {
                "t": int(row.ts),
                "T": int(row.ts) + step - 1,
                "s": coin,
                "i": interval,
                "o": _s(row.open),
                "c": _s(row.close),
                "h": _s(row.high),
                "l": _s(row.low),
                "v": _s(row.volume),
                "n": 0,
            }
            for row in df.iloc[lo:hi].itertuples(index=False)
        ]

    def funding(self, req: Request, body: dict[str, Any]) -> list[dict[str, Any]]:
        coin = self._coin(body)
        if coin not in self.coins:
            return []
        fp = self.coins[coin]
        tfs = self.data.timeframes(fp, "funding_rate")
        df = self.data.frame(fp, tfs[0], "funding_rate") if tfs else None
        if df is None:
            return []
        col = "funding_rate" if "funding_rate" in df.columns else "open"
        start = self._int(body, "startTime")
        if start is None:
            raise HyperliquidError("Failed to deserialize the JSON body: missing `startTime`")
        end = min(self._int(body, "endTime") or self._cap(req), self._cap(req))
        ts = df["ts"].to_numpy()
        lo = int(np.searchsorted(ts, start, "left"))
        hi = min(int(np.searchsorted(ts, end, "right")), lo + MAX_FUNDING)
        return [
            {
                "coin": coin,
                "fundingRate": _s(getattr(row, col)),
                "premium": "0.0",
                "time": int(row.ts),
            }
            for row in df.iloc[lo:hi].itertuples(index=False)
        ]

    def info(self, req: Request) -> Response:
        try:
            body = json.loads(req.body or b"{}")
        except ValueError:
            raise HyperliquidError("Failed to parse the request body as JSON") from None
        if not isinstance(body, dict):
            raise HyperliquidError("Failed to deserialize the JSON body: expected an object")
        kind = body.get("type")
        if kind == "meta":
            return json_response(self.meta())
        if kind == "metaAndAssetCtxs":
            return json_response(self.meta_and_ctxs())
        if kind == "spotMeta":
            return json_response(self.spot_meta())
        if kind == "exchangeStatus":
            return json_response({"time": req.now_ms, "specialStatuses": None})
        if kind == "candleSnapshot":
            return json_response(self.candles(req, body))
        if kind == "fundingHistory":
            return json_response(self.funding(req, body))
        raise HyperliquidError(f"Failed to deserialize the JSON body: unknown variant `{kind}`")


def register(rx: ReplayExchange) -> None:
    """Add the Hyperliquid route to ``rx``."""
    h = _Hyperliquid(rx)

    def handler(req: Request) -> Response:
        try:
            return h.info(req)
        except HyperliquidError as e:
            return Response(e.status, e.message.encode(), {"Content-Type": "text/plain"})

    rx.route("POST", "/info", handler)
