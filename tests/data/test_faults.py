"""Injected faults against the real ccxt clients: temporary ones retried (bounded, with backoff,
Retry-After honoured) without losing or duplicating rows, permanent ones named and not retried."""

from __future__ import annotations

import json
import time
from typing import Any

import pandas as pd
import pytest
from venues_util import TESTDATA, VENUES, local_ccxt_config

import liqsignal.replay.bybit
import liqsignal.replay.okx  # noqa: F401  (registers the venue)
from liqsignal.data.exchanges import ExchangeClient, RetryPolicy
from liqsignal.exceptions import ConfigError, PermanentDataError, TemporaryDataError
from liqsignal.replay import Fault, ReplayExchange
from liqsignal.replay.testing import FaultRule, Faults

CANDLES = {"binance": "/fapi/v1/klines", "bybit": "/v5/market/kline", "okx": "/api/v5/market/"}
FUNDING = {
    "binance": "/fapi/v1/fundingRate",
    "bybit": "/v5/market/funding/history",
    "okx": "/api/v5/public/funding-rate-history",
}
VENUE_ID = {"binance": "BTCUSDT", "bybit": "BTCUSDT", "okx": "BTC-USDT-SWAP"}
SINCE = int(pd.Timestamp("2026-01-01", tz="UTC").value // 1_000_000)
UNTIL = int(pd.Timestamp("2026-03-05", tz="UTC").value // 1_000_000)
FAST = RetryPolicy(attempts=3, base_delay=0.02, factor=2.0, max_delay=0.1, max_retry_after=1.0)
REFERENCE = pd.read_feather(TESTDATA / "futures" / "BTC_USDT_USDT-1h-futures.feather")


def _client(rx: ReplayExchange, venue: str, timeout_ms: int = 5000) -> ExchangeClient:
    cfg = local_ccxt_config(rx, venue, timeout_ms)
    return ExchangeClient(venue, cfg, retry=FAST, history_limits=False)


def _assert_complete(df: pd.DataFrame) -> None:
    """Every reference candle exactly once, in order, with the right prices."""
    assert len(df) == len(REFERENCE)
    assert df["date"].is_monotonic_increasing and df["date"].is_unique
    assert (df["date"].to_numpy() == REFERENCE["date"].to_numpy()).all()
    assert df["close"].to_numpy() == pytest.approx(REFERENCE["close"].to_numpy())


TEMPORARY = {
    "server_error": dict(status=503, times=2),
    "malformed": dict(times=1),
    "rate_limit": dict(retry_after=0.3, times=1),
    "timeout": dict(delay_s=0.8, times=1),
}


@pytest.mark.parametrize("kind", list(TEMPORARY))
@pytest.mark.parametrize("venue", VENUES)
async def test_temporary_fault_mid_run_is_retried_without_loss(
    venues: dict[str, tuple[ReplayExchange, Faults]], venue: str, kind: str
) -> None:
    rx, faults = venues[venue]
    # on the second page: the first is already in hand when the fault hits
    rule = faults.add(FaultRule(kind, CANDLES[venue], after=1, **TEMPORARY[kind]))  # type: ignore[arg-type]
    async with _client(rx, venue, timeout_ms=400) as ex:
        df = await ex.fetch_ohlcv("BTC", "1h", SINCE, UNTIL)
    _assert_complete(df)
    assert rule.hits == rule.times
    assert ex.stats.retries == rule.times
    if kind == "rate_limit":
        assert ex.stats.retry_after_s == [0.3]  # the server's Retry-After was honoured
        assert ex.stats.slept_s >= 0.3
    else:  # exponential backoff from base_delay
        expected = sum(min(0.02 * 2**i, 0.1) for i in range(rule.times or 0))
        assert ex.stats.slept_s == pytest.approx(expected)


@pytest.mark.parametrize("kind", ["empty_page", "duplicate_rows", "out_of_order"])
@pytest.mark.parametrize("venue", VENUES)
async def test_bad_pages_neither_lose_nor_duplicate_rows(
    venues: dict[str, tuple[ReplayExchange, Faults]], venue: str, kind: str
) -> None:
    rx, faults = venues[venue]
    rule = faults.add(FaultRule(kind, CANDLES[venue], after=1, times=1))
    async with _client(rx, venue) as ex:
        df = await ex.fetch_ohlcv("BTC", "1h", SINCE, UNTIL)
    assert rule.hits == 1
    _assert_complete(df)


@pytest.mark.parametrize("venue", VENUES)
async def test_retries_are_bounded_and_name_exchange_and_market(
    venues: dict[str, tuple[ReplayExchange, Faults]], venue: str
) -> None:
    rx, faults = venues[venue]
    faults.server_error(FUNDING[venue], status=502, times=None)
    t0 = time.monotonic()
    async with _client(rx, venue) as ex:
        with pytest.raises(TemporaryDataError, match=rf"{venue} BTC/USDT:USDT.*3 attempts"):
            await ex.fetch_funding_rate_history("BTC", SINCE, UNTIL)
    assert sum(p.startswith(FUNDING[venue]) for p in rx.paths()) == 3
    assert ex.stats.slept_s == pytest.approx(0.02 + 0.04)
    assert time.monotonic() - t0 < 5


@pytest.mark.parametrize("venue", VENUES)
async def test_symbol_delisted_mid_run_is_permanent(
    venues: dict[str, tuple[ReplayExchange, Faults]], venue: str
) -> None:
    rx, faults = venues[venue]
    faults.delist(VENUE_ID[venue], path=CANDLES[venue], after=1)
    async with _client(rx, venue) as ex:
        with pytest.raises(PermanentDataError, match=rf"{venue} BTC/USDT:USDT") as err:
            await ex.fetch_ohlcv("BTC", "1h", SINCE, UNTIL)
        assert ex.stats.retries == 0  # not retried
    assert err.value.__cause__ is not None  # raised from the ccxt error
    assert sum(p.startswith(CANDLES[venue]) for p in rx.paths()) == 2


async def test_json_of_unexpected_shape_is_asked_again(
    venues: dict[str, tuple[ReplayExchange, Faults]],
) -> None:
    """A JSON answer of the wrong shape must not pass as data nor lose the window. (ccxt's Bybit
    and OKX clients reject a body without their envelope as a permanent ExchangeError.)"""
    venue = "binance"
    rx, _ = venues[venue]
    fault = rx.faults.add(Fault(CANDLES[venue], status=200, body={"unexpected": [1]}, times=1))
    try:
        async with _client(rx, venue) as ex:
            df = await ex.fetch_ohlcv("BTC", "1h", SINCE, UNTIL)
    finally:
        rx.faults.clear()
    assert fault.hits == 1
    # ccxt makes an empty page of it; the same window is asked again instead of skipped
    klines = [r.query["startTime"] for r in rx.requests if r.path == CANDLES[venue]]
    assert klines[0] == klines[1]
    _assert_complete(df)


async def test_timeout_forever_gives_up(venues: dict[str, tuple[ReplayExchange, Faults]]) -> None:
    rx, faults = venues["bybit"]
    faults.timeout("/v5/market/open-interest", delay_s=0.5, times=None)
    async with _client(rx, "bybit", timeout_ms=150) as ex:
        with pytest.raises(TemporaryDataError, match="RequestTimeout"):
            await ex.fetch_open_interest_history("BTC", "1h", SINCE, UNTIL)
    assert ex.stats.retries == 2


def test_fault_rules_validate() -> None:
    with pytest.raises(ConfigError, match="fault kind"):
        FaultRule("explode")
    with pytest.raises(ConfigError, match="times"):
        FaultRule("timeout", times=-1)


@pytest.mark.parametrize(
    ("body", "path"),
    [
        ([[1, 2, 3, 4, 5, 6, 7], [8, 9, 10, 11, 12, 13, 14]], ()),
        (
            {"retCode": 0, "result": {"list": [["1", "2", "3", "4", "5", "6", "7"]] * 2}},
            ("result", "list"),
        ),
        ({"code": "0", "data": [["1", "2", "3", "4", "5", "6", "7"]] * 2}, ("data",)),
    ],
)
def test_row_faults_hit_the_page_not_one_row(body: Any, path: tuple[str, ...]) -> None:
    from liqsignal.replay.messages import Response
    from liqsignal.replay.testing import _rewrite_rows

    resp = Response(200, json.dumps(body).encode(), {})
    out = json.loads(_rewrite_rows(resp, "duplicate_rows", 0).body)
    for key in path:
        out = out[key]
    assert len(out) == 4  # both rows doubled, each row left whole
    assert all(len(r) == 7 for r in out)
