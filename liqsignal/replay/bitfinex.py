"""Bitfinex v2 public liquidation history of the replay exchange, as ccxt 4.5's ``bitfinex`` asks
for it (liquidation history only: no candles, open interest or funding).

Served paths (GET, under ``/v2``): ``/conf/pub:info:pair,pub:info:pair:futures,pub:list:pair:
securities,pub:list:pair:margin`` (ccxt's markets: the perpetuals ``t<BASE>F0:USTF0``, e.g.
``BTC/USDT:USDT``), ``/conf/pub:list:currency,...`` (ccxt's currencies) and
``/liquidations/hist`` (https://docs.bitfinex.com/reference/rest-public-liquidations).

``/liquidations/hist`` as the venue documents it: one feed for ALL markets (no symbol
parameter; ccxt filters the market asked), ``start`` / ``end`` in ms (inclusive), ``limit``,
``sort`` (``1`` oldest first, ``-1`` newest first, the default), the ``limit`` rows nearest the
sort's start. Each entry is wrapped in a list: ``[["pos", POS_ID, MTS, null, SYMBOL, ±AMOUNT,
BASE_PRICE, null, IS_MATCH, IS_MARKET_SOLD, null, PRICE_ACQUIRED]]``; ``AMOUNT`` > 0 is a long
position, < 0 a short. Assumed where the page does not say: ``limit`` at most 500 (ccxt's own
paging of this endpoint asks 500), default 100; a liquidation is its trigger entry (IS_MATCH 0)
and, for a position sold into the market (every third here), a market execution entry
(IS_MATCH 1) 1 ms later under the same POS_ID; ``BASE_PRICE`` (the entry price) is the
liquidation price 2 % above (long) or below (short). Errors as Bitfinex answers them: HTTP 500
``["error", 10020, "limit: invalid"]``.

Events: :mod:`liqsignal.replay._history` (the bundled real Hyperliquid liquidations, sides
relabelled from the price move, unless a test passes its own). Faults (out-of-order or
duplicated pages, 5xx, ...) come from :class:`liqsignal.replay.testing.Faults`.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import pandas as pd

from liqsignal.replay._history import HistoryEvents
from liqsignal.replay._venue import Venue, VenueError, replay_cap, serves
from liqsignal.replay.messages import Request, Response, json_response
from liqsignal.replay.server import ReplayExchange

__all__ = ["ENDPOINT", "MARKETS_CONF", "PAGE_MAX", "ccxt_config", "register"]

PREFIX = "/v2"
PAGE_MAX = 500
PAGE_DEFAULT = 100
MARKETS_CONF = "pub:info:pair,pub:info:pair:futures,pub:list:pair:securities,pub:list:pair:margin"
CURRENCIES_CONF = (
    "pub:list:currency,pub:map:currency:sym,pub:map:currency:label,pub:map:currency:unit,"
    "pub:map:currency:undl,pub:map:currency:pool,pub:map:currency:explorer,"
    "pub:map:currency:tx:fee,pub:map:tx:method,pub:info:tx:status,pub:list:currency:margin"
)
ENDPOINT = "/v2/liquidations/hist"


def ccxt_config(url: str) -> dict[str, Any]:
    """Overlay for ``ccxt.bitfinex``: every API at the replay, no throttle beyond 1 ms per
    cost unit (Bitfinex's 3 requests a minute would make a test wait 20 s per page)."""
    return {"urls": {"api": dict.fromkeys(("v1", "public", "private"), url)}, "rateLimit": 1}


class BitfinexError(VenueError):
    status = 500

    def response(self, req: Request) -> Response:
        return json_response(["error", self.code, self.msg], self.status)


def market_id(base: str) -> str:
    """Bitfinex's perpetual of ``base`` settled in USDt: ``tBTCF0:USTF0``."""
    return f"t{base}F0:USTF0"


class _Bitfinex(Venue):
    error = BitfinexError
    prefix = PREFIX
    bad_param = (10020, "{name}: invalid")

    def __init__(self, rx: ReplayExchange, events: pd.DataFrame | None = None) -> None:
        super().__init__(rx)
        self.events = HistoryEvents(events, first_id=171_000_000)
        self.entries = self._entries()

    def _entries(self) -> pd.DataFrame:
        """One trigger entry per event, plus a market execution entry for every third."""
        ev = self.events.frame
        signed = np.where(ev["side"] == "long", ev["amount"], -ev["amount"])
        base_price = np.where(ev["side"] == "long", ev["price"] * 1.02, ev["price"] / 1.02)
        trig = pd.DataFrame(
            {
                "ts": ev["timestamp"].to_numpy(dtype="int64"),
                "id": ev["id"].to_numpy(),
                "symbol": [market_id(m) for m in ev["market"]],
                "amount": signed,
                "base_price": base_price,
                "is_match": 0,
                "is_market_sold": np.where(np.arange(len(ev)) % 3 == 2, 1, 0),
                "price": ev["price"].to_numpy(dtype="float64"),
            }
        )
        execution = trig[trig["is_market_sold"] == 1].copy()
        execution["ts"] += 1
        execution["is_match"] = 1
        out = pd.concat([trig, execution], ignore_index=True)
        return out.sort_values(["ts", "is_match"], kind="stable").reset_index(drop=True)

    @serves(f"/conf/{MARKETS_CONF}")
    def markets_conf(self, req: Request) -> Response:
        info = [None, None, None, "0.0002", "100", None, None, None, 0.01, 0.005]
        futures = [[market_id(m)[1:], info] for m in self.events.markets]
        return json_response([[], futures, [], []])

    @serves(f"/conf/{CURRENCIES_CONF}")
    def currencies_conf(self, req: Request) -> Response:
        ids = [*self.events.markets, "UST"]
        labels = [[c, c] for c in ids]
        return json_response([ids, [], labels, [], [], [], [], [], [], [], []])

    @serves("/liquidations/hist")
    def liquidations(self, req: Request) -> Response:
        limit = self._limit(req, PAGE_DEFAULT, PAGE_MAX)
        sort = req.query.get("sort", "-1")
        if sort not in ("1", "-1"):
            raise BitfinexError(10020, "sort: invalid")
        start, end = self._int(req, "start"), self._int(req, "end")
        cap = replay_cap(req)
        end = cap if end is None else min(end, cap)
        ts = self.entries["ts"].to_numpy()
        lo = 0 if start is None else int(np.searchsorted(ts, start, "left"))
        hi = int(np.searchsorted(ts, end, "right"))
        if sort == "1":
            rows = self.entries.iloc[lo : min(hi, lo + limit)]
        else:
            rows = self.entries.iloc[max(lo, hi - limit) : hi].iloc[::-1]
        out = [
            [
                [
                    "pos",
                    int(r.id),
                    int(r.ts),
                    None,
                    r.symbol,
                    float(r.amount),
                    float(r.base_price),
                    None,
                    int(r.is_match),
                    int(r.is_market_sold),
                    None,
                    float(r.price),
                ]
            ]
            for r in rows.itertuples(index=False)
        ]
        return json_response(out)


def register(rx: ReplayExchange, events: pd.DataFrame | None = None) -> None:
    """Add the Bitfinex routes to ``rx`` (``events``: see :mod:`liqsignal.replay._history`)."""
    _Bitfinex(rx, events).register()
