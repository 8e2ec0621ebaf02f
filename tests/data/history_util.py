"""Shared by the history-venue tests (Bitfinex, HTX): one fetch through the real ccxt client
against a replay venue, and the check that what came back is what the replay served."""

from __future__ import annotations

import asyncio
import dataclasses

import numpy as np
import pandas as pd

from liqsignal.data.exchanges import LiquidationHistory, RetryPolicy
from liqsignal.data.liquidation_venues import HistoryClient
from liqsignal.replay.server import ReplayExchange

FAST = RetryPolicy(attempts=3, base_delay=0.01, max_delay=0.05)


def fetch(
    r: ReplayExchange,
    venue: str,
    since: int,
    until: int,
    market: str = "BTC",
    page: int | None = None,
    retry: RetryPolicy = FAST,
) -> tuple[LiquidationHistory, HistoryClient]:
    """``HistoryClient(venue).fetch_liquidations(market, since, until)`` on replay ``r``
    (``page``: the venue's page size overridden)."""

    async def run() -> tuple[LiquidationHistory, HistoryClient]:
        client = HistoryClient(venue, r.ccxt_config(venue), retry)
        if page is not None:
            client.venue = dataclasses.replace(client.venue, page=page)
        async with client:
            return await client.fetch_liquidations(market, since, until), client

    return asyncio.run(run())


def assert_same(got: pd.DataFrame, served: pd.DataFrame, amount_rtol: float = 1e-9) -> None:
    """Every served event once (by id), with its time, side, price, amount and USD."""
    got = got.sort_values(["timestamp", "id"]).reset_index(drop=True)
    want = served.sort_values(["timestamp", "id"]).reset_index(drop=True)
    assert got["id"].tolist() == [str(i) for i in want["id"]]  # none lost, none twice
    assert got["timestamp"].astype("int64").tolist() == want["timestamp"].tolist()
    assert got["side"].tolist() == want["side"].tolist()
    np.testing.assert_allclose(got["price"], want["price"], rtol=1e-12)
    np.testing.assert_allclose(got["amount"], want["amount"], rtol=amount_rtol)
    np.testing.assert_allclose(got["usd"], want["amount"] * want["price"], rtol=amount_rtol)
