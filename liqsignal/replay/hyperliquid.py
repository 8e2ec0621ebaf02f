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

from liqsignal.replay._venue import Venue, VenueError, decimal_text, serves
from liqsignal.replay.messages import Request, Response, json_response
from liqsignal.replay.server import ReplayExchange, timeframe_to_ms

__all__ = ["ccxt_config", "register"]

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


class HyperliquidError(VenueError):
    """Hyperliquid answers a request it cannot read with HTTP 422 and a plain-text reason."""

    status = 422

    def __init__(self, message: str) -> None:
        super().__init__(None, message)

    def response(self, req: Request) -> Response:
        return Response(self.status, self.msg.encode(), {"Content-Type": "text/plain"})


_s = decimal_text("0.0")


class _Hyperliquid(Venue):
    error = HyperliquidError
    method = "POST"

    def __init__(self, rx: ReplayExchange) -> None:
        super().__init__(rx, "{base}", settles="USDC")  # coins by name: BTC

    @staticmethod
    def _field_int(obj: dict[str, Any], name: str) -> int | None:
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

    def _last_close(self, fp: str) -> float:
        df = self.first_frame(fp, "futures")
        return float(df["close"].iloc[-1]) if df is not None and len(df) else 0.0

    # handlers -------------------------------------------------------------------------------
    def meta(self) -> dict[str, Any]:
        return {
            "universe": [
                {"name": coin, "szDecimals": SZ_DECIMALS.get(coin, 2), "maxLeverage": 40}
                for coin in sorted(self.markets)
            ],
            "marginTables": [],
        }

    def meta_and_ctxs(self) -> list[Any]:
        ctxs = []
        for coin in sorted(self.markets):
            px = _s(self._last_close(self.markets[coin]))
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
        names = ["USDC", *sorted(self.markets)]
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
        if coin not in self.markets:
            return []
        df = self.data.frame(self.markets[coin], str(interval), "futures")
        if df is None:
            return []
        start = self._field_int(r, "startTime") or 0
        end = min(self._field_int(r, "endTime") or self._cap(req), self._cap(req))
        ts = df["ts"].to_numpy()
        lo = int(np.searchsorted(ts, start, "left"))
        hi = min(int(np.searchsorted(ts, end, "right")), lo + MAX_CANDLES)
        step = timeframe_to_ms(str(interval))
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

    def funding_history(self, req: Request, body: dict[str, Any]) -> list[dict[str, Any]]:
        coin = self._coin(body)
        if coin not in self.markets:
            return []
        df, col = self.funding_of(self.markets[coin])
        if df.empty:  # no funding file
            return []
        start = self._field_int(body, "startTime")
        if start is None:
            raise HyperliquidError("Failed to deserialize the JSON body: missing `startTime`")
        end = min(self._field_int(body, "endTime") or self._cap(req), self._cap(req))
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

    @serves("/info")
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
            return json_response(self.funding_history(req, body))
        raise HyperliquidError(f"Failed to deserialize the JSON body: unknown variant `{kind}`")


def register(rx: ReplayExchange) -> None:
    """Add the Hyperliquid route to ``rx``."""
    _Hyperliquid(rx).register()
