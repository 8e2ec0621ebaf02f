"""HTX USDT-margined perpetual liquidation history of the replay exchange, as ccxt 4.5's ``htx``
asks for it (liquidation history only: no candles, open interest or funding).

Served paths (GET): ``/linear-swap-api/v1/swap_contract_info`` (ccxt's linear markets:
``<BASE>-USDT``, e.g. ``BTC/USDT:USDT``; contract sizes BTC 0.001, ETH 0.01, else 1),
``/v2/reference/currencies`` (ccxt's currencies: none) and ``/v5/market/liquidation_orders``
(what ccxt's ``fetch_liquidations`` calls for a linear swap).

``/v5/market/liquidation_orders`` in the shape ccxt's parser documents (``{"code": 200,
"message": "Success", "data": [{"id", "contract_code", "liquidation_time" (ms, text), "side"
(the forced ORDER: buy closes a short), "position_side", "volume" (contracts), "amount",
"bankrupt_price", "trade_turnover" (USDT)}], "ts"}``; ``amount`` equals ``volume`` as in that
sample, whose ``trade_turnover`` / ``bankrupt_price`` is ``volume`` x the contract size, so
``amount`` is not the base amount). The endpoint's paging is not documented where ccxt points;
assumed here, as ccxt sends it: ``contract_code``, ``start_time`` / ``end_time`` in ms
(inclusive), ``limit`` 1..100 (default 100), the newest ``limit`` rows of the window, newest
first. Errors in the same envelope, HTTP 200: ``{"code": 1013, "message": ...}`` for an unknown
contract (ccxt raises BadSymbol) and ``{"code": 4000, "message": ...}`` for a bad parameter, a
code ccxt 4.5 does not know, so ccxt returns an empty list (the liqsignal client checks the
envelope itself).

Events: :mod:`liqsignal.replay._history` (the bundled real Hyperliquid liquidations, sides
relabelled from the price move, unless a test passes its own). Faults (out-of-order or
duplicated pages, 5xx, ...) come from :class:`liqsignal.replay.testing.Faults`.
"""

from __future__ import annotations

from typing import Any

import pandas as pd

from liqsignal.replay._history import HistoryEvents
from liqsignal.replay._venue import Venue, VenueError, decimal_text, replay_cap, serves
from liqsignal.replay.messages import Request, Response, json_response
from liqsignal.replay.server import ReplayExchange

__all__ = ["CONTRACT_SIZE", "ENDPOINT", "PAGE_MAX", "ccxt_config", "register"]

PAGE_MAX = 100
CONTRACT_SIZE = {"BTC": 0.001, "ETH": 0.01}
ENDPOINT = "/v5/market/liquidation_orders"
URL_KEYS = ("status", "contract", "spot", "public", "private", "v2Public", "v2Private")

_s = decimal_text("0", 12)


def ccxt_config(url: str) -> dict[str, Any]:
    """Overlay for ``ccxt.htx``: every API at the replay, linear swaps only, ccxt's throttle at
    1 ms per cost unit (a local server)."""
    return {
        "urls": {"api": dict.fromkeys(URL_KEYS, url)},
        "rateLimit": 1,
        "options": {
            "fetchMarkets": {"types": {"spot": False, "linear": True, "inverse": False}},
            "defaultType": "swap",
        },
    }


class HtxError(VenueError):
    status = 200  # HTX answers errors with HTTP 200 and its envelope

    def response(self, req: Request) -> Response:
        return json_response(
            {"code": self.code, "message": self.msg, "ts": req.now_ms}, self.status
        )


class _Htx(Venue):
    error = HtxError
    bad_param = (4000, "Invalid parameter: {name}")
    bad_limit = (4000, "limit must be within [1, {maximum}]")
    market_key = "contract_code"
    no_market = (1066, "The contract_code field cannot be empty.")
    unknown_market = (1013, "This contract symbol doesnt exist.")

    def __init__(self, rx: ReplayExchange, events: pd.DataFrame | None = None) -> None:
        super().__init__(rx)
        self.events = HistoryEvents(events, first_id=150_153_000_000)
        self.markets = {f"{m}-USDT": m for m in self.events.markets}

    @staticmethod
    def size(base: str) -> float:
        return CONTRACT_SIZE.get(base, 1.0)

    @serves("/linear-swap-api/v1/swap_contract_info")
    def contract_info(self, req: Request) -> Response:
        data = [
            {
                "symbol": base,
                "contract_code": code,
                "contract_size": self.size(base),
                "price_tick": 0.1,
                "delivery_date": "",
                "delivery_time": "",
                "create_date": "20201021",
                "contract_status": 1,
                "settlement_date": "",
                "support_margin_mode": "all",
                "business_type": "swap",
                "pair": code,
                "contract_type": "swap",
                "trade_partition": "USDT",
            }
            for code, base in sorted(self.markets.items())
        ]
        return json_response({"status": "ok", "data": data, "ts": req.now_ms})

    @serves("/v2/reference/currencies")
    def currencies(self, req: Request) -> Response:
        return json_response({"code": 200, "data": []})

    @serves(ENDPOINT)
    def liquidation_orders(self, req: Request) -> Response:
        code = self._market(req)
        limit = self._limit(req, PAGE_MAX, PAGE_MAX)
        base = self.markets[code]
        ev, ts = self.events.of(base)
        rows = ev.iloc[self._newest(req, ts, "start_time", "end_time", limit, replay_cap(req))]
        size = self.size(base)
        data = []
        for r in rows.iloc[::-1].itertuples(index=False):
            contracts = float(r.amount) / size
            data.append(
                {
                    "id": str(r.id),
                    "contract_code": code,
                    "liquidation_time": str(int(r.timestamp)),
                    "side": "sell" if r.side == "long" else "buy",
                    "position_side": r.side,
                    "volume": _s(contracts),
                    "amount": _s(contracts),
                    "bankrupt_price": _s(r.price),
                    "trade_turnover": _s(contracts * size * float(r.price)),
                }
            )
        return json_response({"code": 200, "message": "Success", "data": data, "ts": req.now_ms})


def register(rx: ReplayExchange, events: pd.DataFrame | None = None) -> None:
    """Add the HTX routes to ``rx`` (``events``: see :mod:`liqsignal.replay._history`)."""
    _Htx(rx, events).register()
