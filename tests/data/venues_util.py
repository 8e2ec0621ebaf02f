"""Local Binance, Bybit and OKX replay servers over the bundled test slice (shared by tests)."""

from __future__ import annotations

import asyncio
import contextlib
import shutil
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping
from pathlib import Path
from typing import Any

import ccxt.async_support as ccxt_async
import pandas as pd
import pytest

from liqsignal.replay.server import ReplayExchange
from liqsignal.replay.testing import Faults

TESTDATA = Path(__file__).resolve().parents[1] / "testdata" / "replay_binance"
VENUES = ("binance", "bybit", "okx")

Venues = dict[str, tuple[ReplayExchange, Faults]]


def start_venues(root: Path, oi_scale: Mapping[str, float] | None = None) -> Venues:
    """One replay server per venue, each on its own copy of the test slice (open interest
    scaled per venue when ``oi_scale`` is given), with a fault injector."""
    out: Venues = {}
    for venue in VENUES:
        shutil.copytree(TESTDATA, root / venue)
        if oi_scale is not None:
            oi_path = root / venue / "futures" / "BTC_USDT_USDT-1h-open_interest.feather"
            oi = pd.read_feather(oi_path)
            for col in ("open_interest_amount", "open_interest_value"):
                oi[col] = oi[col] * oi_scale[venue]
            oi.to_feather(oi_path)
        rx = ReplayExchange(root / venue, venues=(venue,)).start()
        out[venue] = (rx, Faults(rx))
    return out


def stop_venues(venues: Venues) -> None:
    for rx, _ in venues.values():
        rx.stop()


def local_ccxt_config(rx: ReplayExchange, venue: str, timeout_ms: int) -> dict[str, Any]:
    """ccxt settings for ``venue`` on a local replay: its URLs, a 1 ms rate limit (nothing to
    protect on 127.0.0.1) and the request timeout in ms."""
    cfg: dict[str, Any] = rx.ccxt_config(venue)
    cfg.update({"rateLimit": 1, "timeout": timeout_ms})
    return cfg


def ccxt_configs(venues: Venues, timeout_ms: int) -> dict[str, dict[str, Any]]:
    """``local_ccxt_config`` of every venue, by venue."""
    return {venue: local_ccxt_config(rx, venue, timeout_ms) for venue, (rx, _) in venues.items()}


@contextlib.asynccontextmanager
async def ccxt_client(rx: ReplayExchange, venue: str) -> AsyncIterator[Any]:
    """The real async ccxt client of ``venue`` pointed at the replay ``rx``; closed on exit."""
    api = getattr(ccxt_async, venue)(rx.ccxt_config(venue))
    try:
        yield api
    finally:
        await api.close()


def markets_candles_funding(
    rx: ReplayExchange,
    symbol: str,
    ohlcv: tuple[Any, ...],
    funding: tuple[Any, ...],
    refused: Callable[[Any], Awaitable[Any]],
    error: type[Exception],
) -> tuple[dict, list, list]:
    """Through the real ccxt client of the one venue ``rx`` serves: its markets,
    ``fetch_ohlcv(symbol, *ohlcv)`` and ``fetch_funding_rate_history(symbol, *funding)``; the
    call ``refused`` makes on the client must raise ``error``."""
    (venue,) = rx.venues

    async def run() -> tuple[dict, list, list]:
        async with ccxt_client(rx, venue) as api:
            markets = await api.load_markets()
            rows = await api.fetch_ohlcv(symbol, *ohlcv)
            fr = await api.fetch_funding_rate_history(symbol, *funding)
            with pytest.raises(error):
                await refused(api)
        return markets, rows, fr

    return asyncio.run(run())
