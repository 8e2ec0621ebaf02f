"""Bitfinex liquidation history with the real ccxt.bitfinex client against the local replay
(``liqsignal/replay/bitfinex.py``): one feed for all markets, read oldest first in pages of 500,
every page edge re-read without duplicates, one event per position id, sides from the sign of
the position amount (ccxt's ``side`` is the IS_MATCH flag), venue errors named.

Data served: the bundled real Hyperliquid liquidations, sides relabelled from the price move
(real sizes, prices and timing in Bitfinex's shapes, not Bitfinex's own liquidations).
"""

from __future__ import annotations

import asyncio
import itertools
from collections.abc import Iterator
from pathlib import Path

import ccxt.async_support as ccxt_async
import numpy as np
import pandas as pd
import pytest
from history_util import FAST, assert_same, fetch

import liqsignal.replay.bitfinex as bfx
from liqsignal.data.exchanges import LiquidationHistory, RetryPolicy
from liqsignal.data.liquidation_venues import HISTORY_VENUES, HistoryClient
from liqsignal.data.liquidations import events_from_ccxt
from liqsignal.exceptions import PermanentDataError
from liqsignal.replay._history import bundled_events
from liqsignal.replay.server import ReplayExchange
from liqsignal.replay.testing import Faults

TESTDATA = Path(__file__).resolve().parents[1] / "testdata" / "replay_binance"
SYM = "BTC/USDT:USDT"
SINCE = int(pd.Timestamp("2025-05-25", tz="UTC").value // 1_000_000)
UNTIL = int(pd.Timestamp("2025-06-06", tz="UTC").value // 1_000_000)


@pytest.fixture(scope="module")
def rx() -> Iterator[ReplayExchange]:
    with ReplayExchange(TESTDATA, venues=("bitfinex",)) as r:
        yield r


def _served(market: str = "BTC") -> pd.DataFrame:
    ev = bundled_events()
    ev["id"] = np.arange(171_000_000, 171_000_000 + len(ev))
    return ev[ev["market"] == market].reset_index(drop=True)


def _fetch(
    r: ReplayExchange, market: str = "BTC", page: int | None = None, retry: RetryPolicy = FAST
) -> tuple[LiquidationHistory, HistoryClient]:
    return fetch(r, "bitfinex", SINCE, UNTIL, market, page, retry)


_assert_same = assert_same


def test_ccxt_bitfinex_markets_and_sides(rx: ReplayExchange) -> None:
    """ccxt's side on Bitfinex is the IS_MATCH flag: a short's trigger reads 'sell' like a
    long's; liqsignal takes the side from the sign of the position amount."""

    async def run() -> tuple[dict, list]:
        api = ccxt_async.bitfinex(rx.ccxt_config("bitfinex"))
        try:
            markets = await api.load_markets()
            rows = await api.fetch_liquidations(SYM, SINCE, 500, {"sort": 1})
        finally:
            await api.close()
        return markets, rows

    markets, rows = asyncio.run(run())
    assert markets[SYM]["id"] == HISTORY_VENUES["bitfinex"].symbol_form == "tBTCF0:USTF0"
    assert markets[SYM]["swap"] and markets[SYM]["contractSize"] == 1
    triggers = [r for r in rows if r["info"][8] == 0]
    longs = [r for r in triggers if r["info"][5] > 0]
    shorts = [r for r in triggers if r["info"][5] < 0]
    assert longs and shorts
    assert {r["side"] for r in longs} == {r["side"] for r in shorts} == {"sell"}
    assert set(events_from_ccxt("bitfinex", shorts, SYM)["side"]) == {"short"}
    assert set(events_from_ccxt("bitfinex", longs, SYM)["side"]) == {"long"}


def test_history_fetched_whole_over_many_pages(rx: ReplayExchange) -> None:
    rx.clear_log()
    hist, client = _fetch(rx)
    served = _served()
    _assert_same(hist.events, served)
    pages = [r for r in rx.requests if r.path == bfx.ENDPOINT]
    # the feed holds every market and each liquidation sold into the market twice
    assert len(pages) == client.stats.calls - 1 >= 6  # + the markets
    starts = [int(p.query["start"]) for p in pages]
    assert starts == sorted(starts) and all(p.query["sort"] == "1" for p in pages)
    assert all(p.query["limit"] == "500" for p in pages)
    # every page after the first starts at the previous one's last entry: re-read, not doubled
    entries = bfx._Bitfinex(rx).entries
    for prev, nxt in itertools.pairwise(starts):
        page = entries[entries["ts"] >= prev].iloc[:500]
        assert nxt == page["ts"].iloc[-1]
    assert any((entries["ts"] == s).sum() > 1 for s in starts[1:])  # an edge inside a millisecond
    # covered from the venue's first entry (any market) to the end asked, in one span
    first_entry = int(entries["ts"].iloc[0])
    assert hist.covered == [(first_entry, UNTIL)] and hist.incomplete == []


def test_other_markets_of_the_same_feed(rx: ReplayExchange) -> None:
    hist, _ = _fetch(rx, "ETH")
    _assert_same(hist.events, _served("ETH"))
    assert set(hist.events["symbol"]) == {"ETH/USDT:USDT"}


def test_out_of_order_and_duplicated_pages(tmp_path: Path) -> None:
    with ReplayExchange(TESTDATA, venues=("bitfinex",)) as r:
        faults = Faults(r)
        # the first rule that matches a request answers it
        dup = faults.duplicate_rows(bfx.ENDPOINT, after=2, times=1)
        shuffled = faults.out_of_order(bfx.ENDPOINT, times=None)
        hist, _ = _fetch(r)
    assert dup.hits == 1 and shuffled.hits >= 5
    _assert_same(hist.events, _served())


def test_server_error_retried_nothing_lost() -> None:
    with ReplayExchange(TESTDATA, venues=("bitfinex",)) as r:
        Faults(r).server_error(bfx.ENDPOINT, status=503, after=1, times=1)
        hist, client = _fetch(r)
    assert client.stats.retries == 1
    _assert_same(hist.events, _served())


def test_venue_error_names_venue_market_and_endpoint(rx: ReplayExchange) -> None:
    """Bitfinex refuses a limit over 500 (HTTP 500 ["error", 10020, "limit: invalid"]): a
    permanent error naming the venue, the market and the endpoint, not retried."""
    rx.clear_log()
    with pytest.raises(PermanentDataError) as err:
        _fetch(rx, page=600)
    msg = str(err.value)
    assert msg.startswith("bitfinex BTC/USDT:USDT: liquidation history (GET /v2/liquidations/hist)")
    assert "BadRequest" in msg and "limit: invalid" in msg
    assert sum(r.path == bfx.ENDPOINT for r in rx.requests) == 1


def test_full_page_in_one_millisecond_is_incomplete() -> None:
    """More entries at one millisecond than a page holds cannot be read whole: that
    millisecond is reported incomplete, the cursor moves past it and the rest is read."""
    t0 = SINCE + 3_600_000
    crowd = pd.DataFrame(
        {
            "timestamp": [t0] * 520 + [t0 + 5, t0 + 9],
            "market": "BTC",
            "side": ["long"] * 521 + ["short"],
            "price": 100_000.0,
            "amount": np.linspace(0.001, 0.5, 522),
        }
    )
    with ReplayExchange(TESTDATA, venues=()) as r:
        bfx.register(r, crowd)
        hist, _ = _fetch(r)
    assert hist.incomplete == [(t0, t0)]
    assert hist.covered == [(t0 + 1, UNTIL)]
    ts = hist.events["timestamp"].astype("int64")
    assert (ts == t0).sum() == 500  # the page read: 500 positions
    # positions whose trigger was cut off are kept from their market execution entry (1 ms on)
    assert (ts == t0 + 1).sum() == len(range(500, 520, 3)) == 7
    assert ts.iloc[-2:].tolist() == [t0 + 5, t0 + 9]
    assert hist.events["side"].iloc[-1] == "short"
