"""HTX liquidation history with the real ccxt.htx client against the local replay
(``liqsignal/replay/htx.py``): windows of one hour, a full page (100) halves the window, base
amounts from contracts x contract size (ccxt's ``baseValue`` is HTX's ``amount``, which counts
contracts in the documented answer), sides from ``position_side`` / the forced order's side,
and an error envelope ccxt 4.5 would pass as "no rows" raised instead.

Data served: the bundled real Hyperliquid liquidations, sides relabelled from the price move
(real sizes, prices and timing in HTX's shapes, not HTX's own liquidations).
"""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from pathlib import Path

import ccxt.async_support as ccxt_async
import numpy as np
import pandas as pd
import pytest
from history_util import assert_same, fetch

import liqsignal.replay.htx as htx
from liqsignal.data.exchanges import LiquidationHistory
from liqsignal.data.liquidation_venues import HISTORY_VENUES, HistoryClient
from liqsignal.data.liquidations import events_from_ccxt
from liqsignal.exceptions import PermanentDataError
from liqsignal.replay._history import bundled_events
from liqsignal.replay.server import ReplayExchange
from liqsignal.replay.testing import Faults

TESTDATA = Path(__file__).resolve().parents[1] / "testdata" / "replay_binance"
SYM = "BTC/USDT:USDT"
SINCE = int(pd.Timestamp("2025-05-25", tz="UTC").value // 1_000_000)
UNTIL = int(pd.Timestamp("2025-05-27", tz="UTC").value // 1_000_000) - 1
HOUR = 3_600_000


@pytest.fixture(scope="module")
def rx() -> Iterator[ReplayExchange]:
    with ReplayExchange(TESTDATA, venues=("htx",)) as r:
        yield r


def _served(market: str = "BTC") -> pd.DataFrame:
    ev = bundled_events()
    ev["id"] = np.arange(150_153_000_000, 150_153_000_000 + len(ev))
    ev = ev[(ev["market"] == market) & (ev["timestamp"] >= SINCE) & (ev["timestamp"] <= UNTIL)]
    return ev.reset_index(drop=True)


def _fetch(
    r: ReplayExchange, market: str = "BTC", page: int | None = None, until: int = UNTIL
) -> tuple[LiquidationHistory, HistoryClient]:
    return fetch(r, "htx", SINCE, until, market, page)


def _assert_same(got: pd.DataFrame, served: pd.DataFrame) -> None:
    assert_same(got, served, amount_rtol=1e-6)  # the served contracts are rounded to 12 decimals


def test_ccxt_htx_markets_amounts_and_sides(rx: ReplayExchange) -> None:
    async def run() -> tuple[dict, list]:
        api = ccxt_async.htx(rx.ccxt_config("htx"))
        try:
            markets = await api.load_markets()
            rows = await api.fetch_liquidations(SYM, SINCE, 100, {"until": SINCE + 24 * HOUR})
        finally:
            await api.close()
        return markets, rows

    markets, rows = asyncio.run(run())
    assert markets[SYM]["id"] == HISTORY_VENUES["htx"].symbol_form
    assert markets[SYM]["contractSize"] == htx.CONTRACT_SIZE["BTC"] == 0.001
    assert rows
    # ccxt takes HTX's amount (= volume, contracts) as the base amount: 1000x too big for BTC
    assert all(r["baseValue"] == r["contracts"] for r in rows)
    parsed = [{**r, "baseValue": None} for r in rows]
    ev = events_from_ccxt("htx", parsed, SYM, markets)
    np.testing.assert_allclose(ev["amount"] * ev["price"], ev["usd"], rtol=1e-6)
    # the order side: buy closes a short; position_side says the same and wins when given
    by_side = {r["side"]: r["info"]["position_side"] for r in rows}
    assert by_side == {"buy": "short", "sell": "long"}
    no_pos = [{**r, "info": {k: v for k, v in r["info"].items() if k != "position_side"}}
              for r in parsed]  # fmt: skip
    assert events_from_ccxt("htx", no_pos, SYM, markets)["side"].tolist() == ev["side"].tolist()
    sells = {r["info"]["id"] for r in rows if r["side"] == "sell"}
    assert set(ev["side"][ev["id"].isin(sells)]) == {"long"}
    assert set(ev["side"][~ev["id"].isin(sells)]) == {"short"}


def test_history_fetched_whole_windows_halved(rx: ReplayExchange) -> None:
    rx.clear_log()
    hist, _ = _fetch(rx)
    served = _served()
    assert len(served) > 400
    _assert_same(hist.events, served)
    calls = [r for r in rx.requests if r.path == htx.ENDPOINT]
    spans = [(int(c.query["start_time"]), int(c.query["end_time"])) for c in calls]
    # 2025-05-25 22:00 held 319 BTC liquidations: that hour was asked in halves
    assert max(e - s + 1 for s, e in spans) == HOUR
    assert min(e - s + 1 for s, e in spans) < HOUR // 4
    assert all(c.query["limit"] == "100" and c.query["contract_code"] == "BTC-USDT" for c in calls)
    # the windows answered completely tile [first window with a liquidation, until]
    first = served["timestamp"].iloc[0] // HOUR * HOUR
    assert hist.covered == [(first, UNTIL)] and hist.incomplete == []


def test_out_of_order_and_duplicated_pages() -> None:
    with ReplayExchange(TESTDATA, venues=("htx",)) as r:
        faults = Faults(r)
        # the first rule that matches a request answers it
        # the windows are asked hour by hour; the duplicate rule, not consulted for the request
        # the error answers, sees window h as its (h+1)-th: it doubles hour 15's 27 rows
        served = _served()
        hours = pd.Series(served["timestamp"] // HOUR - SINCE // HOUR).value_counts()
        assert hours[15] == 27
        err = faults.server_error(htx.ENDPOINT, status=502, after=5, times=1)
        dup = faults.duplicate_rows(htx.ENDPOINT, after=15, times=1)
        shuffled = faults.out_of_order(htx.ENDPOINT, times=None)
        hist, client = _fetch(r)
    assert (err.hits, dup.hits) == (1, 1) and shuffled.hits > 50
    assert client.stats.retries == 1
    _assert_same(hist.events, served)


def test_error_envelope_raised_naming_venue_and_endpoint(rx: ReplayExchange) -> None:
    """HTX answers a bad parameter with HTTP 200 {"code": 4000, ...}; ccxt 4.5 raises only for
    codes it knows and returns [] here, which would read as "no liquidations"."""

    async def plain() -> list:
        api = ccxt_async.htx(rx.ccxt_config("htx"))
        try:
            return list(await api.fetch_liquidations(SYM, SINCE, 200))
        finally:
            await api.close()

    assert asyncio.run(plain()) == []
    rx.clear_log()
    with pytest.raises(PermanentDataError) as err:
        _fetch(rx, page=200)
    msg = str(err.value)
    assert msg.startswith(
        "htx BTC/USDT:USDT: liquidation history (GET /v5/market/liquidation_orders) refused"
    )
    assert "code 4000" in msg and "limit must be within [1, 100]" in msg
    assert sum(r.path == htx.ENDPOINT for r in rx.requests) == 1  # not retried


def test_full_page_in_one_millisecond_is_incomplete() -> None:
    t0 = SINCE + 2 * HOUR + 17
    crowd = pd.DataFrame(
        {
            "timestamp": [t0] * 130 + [t0 + 1, SINCE + 5 * HOUR],
            "market": "BTC",
            "side": ["short"] * 131 + ["long"],
            "price": 100_000.0,
            "amount": np.linspace(0.001, 0.5, 132),
        }
    )
    with ReplayExchange(TESTDATA, venues=()) as r:
        htx.register(r, crowd)
        hist, _ = _fetch(r, until=SINCE + 6 * HOUR - 1)
    assert hist.incomplete == [(t0, t0)]
    # the empty windows before that millisecond came before any liquidation: not counted
    assert hist.covered == [(t0 + 1, SINCE + 6 * HOUR - 1)]
    ts = hist.events["timestamp"].astype("int64")
    assert (ts == t0).sum() == 100  # what one page holds: the rest of that millisecond is lost
    assert ts.iloc[-2:].tolist() == [t0 + 1, SINCE + 5 * HOUR]
    assert hist.events["side"].iloc[-1] == "long"
