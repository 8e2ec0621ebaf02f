"""Hyperliquid replay venue driven by the real ccxt.hyperliquid client and ExchangeClient.

Data served: the bundled Binance BTC slice (tests/testdata/replay_binance: 1h candles and 8h
funding) as Hyperliquid's BTC (BTC/USDC:USDC): real numbers in Hyperliquid's shapes, not
Hyperliquid's own figures (its funding is hourly; these rows are Binance's 8-hourly ones).
"""

from __future__ import annotations

import asyncio
import shutil
from collections.abc import Awaitable, Iterator
from typing import Any

import ccxt
import pandas as pd
import pytest
from liq_util import TESTDATA
from venues_util import markets_candles_funding

from liqsignal.data.exchanges import ExchangeClient, RetryPolicy
from liqsignal.replay.server import ReplayExchange

SYM = "BTC/USDC:USDC"
FUT = TESTDATA / "futures"


@pytest.fixture(scope="module")
def hl(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ReplayExchange]:
    root = tmp_path_factory.mktemp("hl")
    (root / "futures").mkdir()
    for ct in ("futures", "funding_rate"):
        shutil.copy(
            FUT / f"BTC_USDT_USDT-1h-{ct}.feather",
            root / "futures" / f"BTC_USDC_USDC-1h-{ct}.feather",
        )
    with ReplayExchange(root, venues=("hyperliquid",)) as rx:
        yield rx


def test_ccxt_hyperliquid_markets_candles_funding(hl: ReplayExchange) -> None:
    since = 1767225600000

    def bad_timeframe(api: Any) -> Awaitable[Any]:
        return api.fetch_ohlcv(SYM, "7m", since, 3)

    markets, rows, fr = markets_candles_funding(
        hl, SYM, ("1h", since, 3), (since, 2), bad_timeframe, ccxt.BaseError
    )
    assert list(markets) == [SYM] and markets[SYM]["swap"] and markets[SYM]["settle"] == "USDC"
    src = pd.read_feather(FUT / "BTC_USDT_USDT-1h-futures.feather")
    assert [r[0] for r in rows] == [1767225600000 + i * 3_600_000 for i in range(3)]
    assert [r[4] for r in rows] == list(src["close"][:3])
    assert [r[5] for r in rows] == list(src["volume"][:3])
    funding = pd.read_feather(FUT / "BTC_USDT_USDT-1h-funding_rate.feather")
    assert [f["fundingRate"] for f in fr] == list(funding["funding_rate"][:2])


def test_client_pages_everything(hl: ReplayExchange) -> None:
    async def run() -> tuple[pd.DataFrame, pd.DataFrame]:
        cfg = hl.ccxt_config("hyperliquid")
        retry = RetryPolicy(attempts=2, base_delay=0.01)
        async with ExchangeClient("hyperliquid", cfg, retry=retry) as c:
            assert await c.symbol("BTC") == SYM
            ohlcv = await c.fetch_ohlcv("BTC", "1h", 1767225600000, 1772668800000 - 1)
            fr = await c.fetch_funding_rate_history("BTC", 1767225600000, 1772668800000)
        return ohlcv, fr

    ohlcv, fr = asyncio.run(run())
    src = pd.read_feather(FUT / "BTC_USDT_USDT-1h-futures.feather")
    funding = pd.read_feather(FUT / "BTC_USDT_USDT-1h-funding_rate.feather")
    assert len(ohlcv) == len(src) == 1512  # four pages of 500, none lost, none twice
    assert list(ohlcv["close"]) == list(src["close"])
    assert list(fr["date"]) == list(funding["date"]) and len(fr) == 189
    assert not hl.unknown
