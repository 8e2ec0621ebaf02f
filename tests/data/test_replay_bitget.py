"""Bitget replay venue driven by the real ccxt.bitget client and ExchangeClient.

Data served: the bundled Binance BTC slice (tests/testdata/replay_binance) as Bitget's BTCUSDT:
real numbers in Bitget's shapes, not Bitget's own figures.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Iterator
from typing import Any

import ccxt
import pandas as pd
import pytest
from liq_util import TESTDATA
from venues_util import markets_candles_funding

from liqsignal.data.exchanges import ExchangeClient, RetryPolicy
from liqsignal.exceptions import PermanentDataError
from liqsignal.replay.server import ReplayExchange

SYM = "BTC/USDT:USDT"
FUT = TESTDATA / "futures"


@pytest.fixture(scope="module")
def bitget() -> Iterator[ReplayExchange]:
    with ReplayExchange(TESTDATA, venues=("bitget",)) as rx:
        yield rx


def test_ccxt_bitget_markets_candles_funding(bitget: ReplayExchange) -> None:
    candles = ("1h", None, 5, {"until": 1767240000000})

    def too_many(api: Any) -> Awaitable[Any]:  # pageSize at most 100
        return api.fetch_funding_rate_history(SYM, None, 101)

    markets, rows, fr = markets_candles_funding(
        bitget, SYM, candles, (None, 3), too_many, ccxt.BadRequest
    )
    assert list(markets) == [SYM] and markets[SYM]["swap"] and markets[SYM]["linear"]
    src = pd.read_feather(FUT / "BTC_USDT_USDT-1h-futures.feather").set_index("date")
    times = pd.to_datetime([r[0] for r in rows], unit="ms", utc=True)
    assert len(rows) == 5 and times[-1] == pd.Timestamp(1767240000000, unit="ms", tz="UTC")
    assert [r[4] for r in rows] == list(src.loc[times, "close"])
    assert [r[5] for r in rows] == list(src.loc[times, "volume"])
    funding = pd.read_feather(FUT / "BTC_USDT_USDT-1h-funding_rate.feather")
    assert [f["timestamp"] for f in fr] == list(funding["date"].astype("int64")[-3:])


def test_client_pages_everything(bitget: ReplayExchange) -> None:
    """Candles in 200-row history pages; funding through newest-first pages of 100 (Bitget's
    funding history has no time filter), back to 2026-01-01: all 189 rows."""

    async def run() -> tuple[pd.DataFrame, pd.DataFrame, pd.DataFrame]:
        cfg = bitget.ccxt_config("bitget")
        retry = RetryPolicy(attempts=2, base_delay=0.01)
        async with ExchangeClient("bitget", cfg, retry=retry) as c:
            ohlcv = await c.fetch_ohlcv("BTC", "1h", 1767225600000, 1772668800000 - 1)
            fr = await c.fetch_funding_rate_history("BTC", 1767225600000, 1772668800000)
            part = await c.fetch_funding_rate_history("BTC", 1769904000000, 1770508800000)
            with pytest.raises(PermanentDataError, match="bitget"):
                await c.fetch_ohlcv("BTC/USDC:USDC", "1h", 1767225600000, 1767240000000)
        return ohlcv, fr, part

    ohlcv, fr, part = asyncio.run(run())
    src = pd.read_feather(FUT / "BTC_USDT_USDT-1h-futures.feather")
    funding = pd.read_feather(FUT / "BTC_USDT_USDT-1h-funding_rate.feather")
    assert len(ohlcv) == len(src) == 1512
    assert list(ohlcv["close"]) == list(src["close"])
    assert list(fr["date"]) == list(funding["date"]) and len(fr) == 189
    week = funding[(funding["date"] >= "2026-02-01") & (funding["date"] <= "2026-02-08")]
    assert list(part["date"]) == list(week["date"]) and len(part) == 22
    assert not bitget.unknown
