"""ExchangeClient with the real ccxt clients against the local Binance, Bybit and OKX replays."""

from __future__ import annotations

import dataclasses
import json
import shutil
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pandas as pd
import pytest

import liqsignal.replay.bybit
import liqsignal.replay.okx  # noqa: F401  (registers the venue)
from liqsignal.data.exchanges import (
    EXCHANGES,
    ExchangeClient,
    RetryPolicy,
    _retry_after_seconds,
    timeframe_to_ms,
)
from liqsignal.exceptions import ConfigError, PermanentDataError
from liqsignal.replay.server import ReplayExchange
from liqsignal.replay.testing import Faults

TESTDATA = Path(__file__).resolve().parents[1] / "testdata" / "replay_binance"
VENUES = ("binance", "bybit", "okx")
SINCE = int(pd.Timestamp("2026-01-01", tz="UTC").value // 1_000_000)
UNTIL = int(pd.Timestamp("2026-03-05", tz="UTC").value // 1_000_000)
FAST = RetryPolicy(attempts=3, base_delay=0.01, max_delay=0.05, max_retry_after=1.0)


def _source(ctype: str) -> pd.DataFrame:
    return pd.read_feather(TESTDATA / "futures" / f"BTC_USDT_USDT-1h-{ctype}.feather")


@pytest.fixture(scope="module")
def servers(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, ReplayExchange]]:
    """One replay server per venue, each over a copy of the bundled real BTC slice."""
    root = tmp_path_factory.mktemp("venues")
    out: dict[str, ReplayExchange] = {}
    for venue in VENUES:
        shutil.copytree(TESTDATA, root / venue)
        rx = ReplayExchange(root / venue, venues=(venue,)).start()
        Faults(rx)
        out[venue] = rx
    yield out
    for rx in out.values():
        rx.stop()


def _client(rx: ReplayExchange, venue: str, **kw: Any) -> ExchangeClient:
    cfg = rx.ccxt_config(venue)
    cfg.update({"rateLimit": 1, "timeout": kw.pop("timeout", 5000)})
    return ExchangeClient(venue, cfg, retry=kw.pop("retry", FAST), history_limits=False, **kw)


@pytest.mark.parametrize("venue", VENUES)
async def test_fetches_match_the_served_files(
    servers: dict[str, ReplayExchange], venue: str
) -> None:
    rx = servers[venue]
    rx.clear_log()
    async with _client(rx, venue) as ex:
        assert await ex.symbol("BTC") == "BTC/USDT:USDT"
        assert await ex.symbol("btc") == "BTC/USDT:USDT"
        candles = await ex.fetch_ohlcv("BTC", "1h", SINCE, UNTIL)
        oi = await ex.fetch_open_interest_history("BTC", "1h", SINCE, UNTIL)
        funding = await ex.fetch_funding_rate_history("BTC", SINCE, UNTIL)
        mark = await ex.fetch_ohlcv("BTC", "1h", SINCE, UNTIL, price="mark")
        now_oi = await ex.fetch_open_interest("BTC")
    src = _source("futures")
    assert len(candles) == len(src) == 1512  # more than one page on every venue
    assert (candles["date"].to_numpy() == src["date"].to_numpy()).all()
    for col in ("open", "high", "low", "close"):
        assert candles[col].to_numpy() == pytest.approx(src[col].to_numpy())
        assert mark[col].to_numpy() == pytest.approx(_source("mark")[col].to_numpy())
    assert candles["volume"].to_numpy() == pytest.approx(src["volume"].to_numpy(), rel=1e-9)
    src_oi = _source("open_interest")
    assert len(oi) == len(src_oi)
    assert oi["open_interest_amount"].to_numpy() == pytest.approx(
        src_oi["open_interest_amount"].to_numpy(), rel=1e-9
    )
    src_f = _source("funding_rate")
    assert funding["funding_rate"].to_numpy() == pytest.approx(src_f["funding_rate"].to_numpy())
    assert len(now_oi) == 1 and now_oi["open_interest_amount"].iloc[0] > 0
    # several pages were asked, from the venue's own endpoints
    assert len(rx.requests) > 5 and not rx.unknown


@pytest.mark.parametrize("venue", ["binance", "okx"])
async def test_since_defaults_to_one_page_before_until(
    servers: dict[str, ReplayExchange], venue: str
) -> None:
    async with _client(servers[venue], venue) as ex:
        df = await ex.fetch_ohlcv("BTC", "1h", until=UNTIL)
    page = EXCHANGES[venue].ohlcv_page
    assert len(df) == page
    assert df["date"].iloc[0] == pd.Timestamp(UNTIL - page * 3_600_000, unit="ms", tz="UTC")


async def test_binance_taker_buy_volume(servers: dict[str, ReplayExchange]) -> None:
    async with _client(servers["binance"], "binance") as ex:
        assert ex.has("takerBuyVolume")
        taker = await ex.fetch_taker_buy("BTC", "1h", SINCE, UNTIL)
        candles = await ex.fetch_ohlcv("BTC", "1h", SINCE, UNTIL)
    assert list(taker.columns) == ["date", "taker_buy_volume", "taker_buy_quote_volume"]
    assert (taker["date"].to_numpy() == candles["date"].to_numpy()).all()
    assert (taker["taker_buy_volume"] <= candles["volume"] + 1e-9).all()
    assert (taker["taker_buy_volume"] > 0).mean() > 0.9


async def test_unknown_market_is_permanent_and_named(servers: dict[str, ReplayExchange]) -> None:
    async with _client(servers["bybit"], "bybit") as ex:
        with pytest.raises(PermanentDataError, match=r"bybit.*'NOPE'.*NOPE/USDT:USDT"):
            await ex.symbol("NOPE")
        with pytest.raises(PermanentDataError, match="not listed"):
            await ex.symbol("ETH/USDT:USDT")


async def test_hyperliquid_maps_to_usdc_without_network() -> None:
    async with ExchangeClient("hyperliquid") as ex:
        ex.api.set_markets(
            [
                {
                    "id": "0",
                    "symbol": "BTC/USDC:USDC",
                    "base": "BTC",
                    "quote": "USDC",
                    "settle": "USDC",
                    "baseId": "BTC",
                    "quoteId": "USDC",
                    "settleId": "USDC",
                    "type": "swap",
                    "spot": False,
                    "future": False,
                    "option": False,
                    "swap": True,
                    "linear": True,
                    "contract": True,
                    "active": True,
                }
            ]
        )
        ex._markets_loaded = True
        assert await ex.symbol("BTC") == "BTC/USDC:USDC"
        assert ex.oi_timeframe("1h") is None  # no OI history there
        with pytest.raises(PermanentDataError, match="hyperliquid"):
            await ex.fetch_open_interest_history("BTC", "1h", SINCE, UNTIL)


def test_capabilities_and_oi_timeframes() -> None:
    assert set(EXCHANGES) >= {"binance", "bybit", "okx", "bitget", "gate", "hyperliquid"}
    bybit = ExchangeClient("bybit")
    okx = ExchangeClient("okx")
    assert bybit.oi_timeframe("15m") == "15m"
    assert okx.oi_timeframe("15m") == "5m"  # finest OKX OI that divides 15m
    assert okx.oi_timeframe("4h") == "1h"
    assert bybit.oi_timeframe("1m") is None
    assert not bybit.has("takerBuyVolume")
    assert bybit.api.enableRateLimit and okx.api.enableRateLimit


def test_config_passthrough_and_validation() -> None:
    ex = ExchangeClient("okx", {"urls": {"api": {"rest": "http://127.0.0.1:9"}}, "timeout": 1234})
    assert ex.api.urls["api"]["rest"] == "http://127.0.0.1:9"
    assert ex.api.timeout == 1234
    assert ex.api.options["fetchMarkets"]["types"] == ["swap"]
    with pytest.raises(ConfigError, match="exchange"):
        ExchangeClient("ftx")
    with pytest.raises(ConfigError, match="max_concurrency"):
        ExchangeClient("bybit", max_concurrency=0)
    with pytest.raises(ConfigError, match="timeframe"):
        timeframe_to_ms("1x")
    with pytest.raises(ConfigError, match="attempts"):
        RetryPolicy(attempts=0)


async def test_bad_timeframes_are_config_errors(servers: dict[str, ReplayExchange]) -> None:
    async with _client(servers["okx"], "okx") as ex:
        with pytest.raises(ConfigError, match="open interest history accepts 5m, 1h, 1d"):
            await ex.fetch_open_interest_history("BTC", "15m", SINCE, UNTIL)
        with pytest.raises(ConfigError, match="no '7m' candles"):
            await ex.fetch_ohlcv("BTC", "7m", SINCE, UNTIL)


@pytest.mark.parametrize("venue", ["bybit", "okx"])
async def test_newest_first_windows_shrink_instead_of_losing_rows(
    servers: dict[str, ReplayExchange], venue: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A window sized for 24h funding over 8h funding holds 3x the page: halve, lose nothing."""
    small = dataclasses.replace(EXCHANGES[venue], funding_page=50, funding_window_h=24)
    monkeypatch.setitem(EXCHANGES, venue, small)
    async with _client(servers[venue], venue) as ex:
        funding = await ex.fetch_funding_rate_history("BTC", SINCE, UNTIL)
    src = _source("funding_rate")
    assert len(funding) == len(src) == 189
    assert (funding["date"].to_numpy() == src["date"].to_numpy()).all()


async def test_call_classifies_errors_without_network() -> None:
    import ccxt

    calls: list[str] = []

    def failing(*errors: Exception) -> Any:
        async def fn() -> str:
            calls.append("x")
            if len(calls) <= len(errors):
                raise errors[len(calls) - 1]
            return "ok"

        return fn

    async with ExchangeClient("gate", retry=FAST) as ex:
        shape = failing(KeyError(0), ccxt.RequestTimeout("slow"))
        assert await ex._call("ohlcv 1h", "BTC/USDT:USDT", shape) == "ok"
        assert ex.stats.retries == 2 and len(calls) == 3
        calls.clear()
        with pytest.raises(
            PermanentDataError, match="gate BTC/USDT:USDT: ohlcv 1h refused: BadSymbol"
        ):
            await ex._call("ohlcv 1h", "BTC/USDT:USDT", failing(ccxt.BadSymbol("gone")))
        assert len(calls) == 1


async def test_bybit_leverage_tiers(
    servers: dict[str, ReplayExchange], tmp_path_factory: pytest.TempPathFactory
) -> None:
    """Plumbing only: the replay serves Binance's real BTC brackets (bundled resource) in Bybit's
    risk-limit shape; ccxt parses them and the client normalises them."""
    resource = (
        Path(__file__).resolve().parents[2] / "liqsignal/resources/binance_leverage_tiers.json"
    )
    btc = {"BTC/USDT:USDT": json.loads(resource.read_text())["BTC/USDT:USDT"]}
    datadir = servers["bybit"].data.datadir
    (datadir / "leverage_tiers.json").write_text(json.dumps(btc))
    try:
        async with _client(servers["bybit"], "bybit") as ex:
            tiers = await ex.fetch_leverage_tiers("BTC")
    finally:
        (datadir / "leverage_tiers.json").unlink()
    src = btc["BTC/USDT:USDT"]
    assert len(tiers) == len(src) > 3
    assert [t["maxNotional"] for t in tiers] == [t["maxNotional"] for t in src]
    assert [t["maintenanceMarginRate"] for t in tiers] == [t["maintenanceMarginRate"] for t in src]
    assert tiers[0]["minNotional"] == 0 and tiers[1]["minNotional"] == src[0]["maxNotional"]
    async with _client(servers["bybit"], "bybit") as ex:
        with pytest.raises(PermanentDataError, match="bybit BTC/USDT:USDT: leverage tiers"):
            await ex.fetch_leverage_tiers("BTC")


def test_retry_after_parsing() -> None:
    assert _retry_after_seconds({"Retry-After": "2"}) == 2.0
    assert _retry_after_seconds({"retry-after": "0.5"}) == 0.5
    assert _retry_after_seconds({"Content-Type": "x"}) is None
    assert _retry_after_seconds(None) is None
    assert 0 <= (_retry_after_seconds({"Retry-After": "Wed, 21 Oct 2015 07:28:00 GMT"}) or 0) < 1
