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


@pytest.mark.parametrize("venue", VENUES)
async def test_the_candle_opened_at_until_is_answered(
    servers: dict[str, ReplayExchange], venue: str
) -> None:
    """``until`` is inclusive on every venue: OKX's ``after`` (what ccxt makes of ``until``) is
    exclusive, so the client asks ``until + 1`` there; before, the candle opened exactly at
    ``until`` (the newest closed one, when the clock is on a bar boundary) came a refresh late."""
    t = int(pd.Timestamp("2026-02-01 12:00", tz="UTC").value // 1_000_000)
    async with _client(servers[venue], venue) as ex:
        df = await ex.fetch_ohlcv("BTC", "1h", t - 2 * 3_600_000, t)
        mark = await ex.fetch_ohlcv("BTC", "1h", t - 2 * 3_600_000, t, price="mark")
        one = await ex.fetch_ohlcv("BTC", "1h", t, t)
    expected = pd.date_range(end=pd.Timestamp(t, unit="ms", tz="UTC"), periods=3, freq="1h")
    assert list(df["date"]) == list(mark["date"]) == list(expected)
    assert list(one["date"]) == [expected[-1]]


async def test_binance_pages_ask_only_the_rows_the_window_holds(
    servers: dict[str, ReplayExchange],
) -> None:
    """Binance weighs a kline request by its limit (1 below 100 rows, 5 at 1000): a refresh's
    one or two new candles ask a limit of 1 or 2; a long range still asks full pages."""
    rx = servers["binance"]
    t = int(pd.Timestamp("2026-02-01 12:00", tz="UTC").value // 1_000_000)
    async with _client(rx, "binance") as ex:
        rx.clear_log()
        two = await ex.fetch_ohlcv("BTC", "1h", t - 3_600_000, t)
        taker = await ex.fetch_taker_buy("BTC", "1h", t - 3_600_000, t)
        small = [r.query.get("limit") for r in rx.requests if r.path.endswith("/klines")]
        rx.clear_log()
        full = await ex.fetch_ohlcv("BTC", "1h", SINCE, UNTIL - 3_600_000)  # the last candle
        big = [r.query.get("limit") for r in rx.requests if r.path.endswith("/klines")]
    assert len(two) == len(taker) == 2 and small == ["2", "2"]
    assert len(full) == 1512 and big == ["1000", "512"]


def _rows_frame_pandas(rows: list[tuple[int, list[float]]], ctype: str) -> pd.DataFrame:
    """The pandas path of ``_rows_to_frame`` (the reference of its numpy fast path)."""
    from liqsignal.data.store import CANDLE_COLUMNS, normalize_frame

    columns = CANDLE_COLUMNS[ctype]
    if not rows:
        return normalize_frame(pd.DataFrame(columns=columns), ctype)
    df = pd.DataFrame([[ts, *vals] for ts, vals in rows], columns=columns)
    return normalize_frame(
        df.drop_duplicates(subset="date", keep="last").sort_values("date"), ctype
    )


@pytest.mark.parametrize(
    ("ctype", "rows"),
    [
        ("futures", []),
        ("futures", [(1_769_947_200_000, [1.0, 2.0, 0.5, 1.5, 10.0])]),
        ("funding_rate", [(1_769_947_200_000, [1e-4]), (1_769_976_000_000, [float("nan")])]),
        # unsorted, and a date answered twice: the last answer wins
        (
            "open_interest",
            [
                (1_769_950_800_000, [3.0, 30.0]),
                (1_769_947_200_000, [1.0, 10.0]),
                (1_769_950_800_000, [4.0, 40.0]),
            ],
        ),
        ("taker_buy", [(0, [1.0, 2.0]), (-60_000, [3.0, 4.0])]),
        # not what the parsers give: the pandas path, as before
        ("funding_rate", [(1_769_947_200_000.5, [1e-4])]),
        ("funding_rate", [(10**17, [1e-4])]),
    ],
)
def test_rows_to_frame_fast_path_equals_the_pandas_path(
    ctype: str, rows: list[tuple[int, list[float]]]
) -> None:
    got = ExchangeClient._rows_to_frame(rows, ctype)
    ref = _rows_frame_pandas(rows, ctype)
    pd.testing.assert_frame_equal(got, ref, check_exact=True)
    assert got["date"].dtype == ref["date"].dtype == "datetime64[ms, UTC]"
    if len(rows) > 1 and ctype == "open_interest":
        assert list(got["open_interest_amount"]) == [1.0, 4.0]


def test_rows_to_frame_keeps_the_store_checks() -> None:
    from liqsignal.exceptions import InputError

    with pytest.raises(InputError, match="column 'date'"):
        ExchangeClient._rows_to_frame([(None, [1.0])], "funding_rate")  # type: ignore[list-item]
