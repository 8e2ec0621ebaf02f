"""The replay exchange's Binance USD-M API, checked with the real ccxt clients (no network)."""

from __future__ import annotations

import json
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import ccxt
import numpy as np
import pandas as pd
import pytest

from liqsignal.exceptions import ConfigError
from liqsignal.replay import Fault, ReplayExchange

DATADIR = Path(__file__).resolve().parents[1] / "testdata" / "replay_binance"
FUT = DATADIR / "futures"
PAIR = "BTC/USDT:USDT"
H = 3_600_000


def _file(ctype: str) -> pd.DataFrame:
    df = pd.read_feather(FUT / f"BTC_USDT_USDT-1h-{ctype}.feather")
    df["ts"] = df["date"].astype("datetime64[ms, UTC]").astype("int64")
    return df


@pytest.fixture(scope="module")
def rx():
    with ReplayExchange(DATADIR) as server:
        yield server


@pytest.fixture
def usdm(rx):
    rx.clear_log()
    ex = ccxt.binanceusdm(rx.ccxt_config())
    ex.load_markets()
    return ex


def test_load_markets_both_clients_ask_only_exchange_info(rx):
    for ex in (
        ccxt.binanceusdm(rx.ccxt_config()),
        ccxt.binance(
            {
                **rx.ccxt_config(),
                "options": {"defaultType": "swap", "fetchMarkets": {"types": ["linear"]}},
            }
        ),
    ):
        rx.clear_log()
        markets = ex.load_markets(reload=True)
        m = markets[PAIR]
        assert (m["swap"], m["linear"], m["settle"], m["id"]) == (True, True, "USDT", "BTCUSDT")
        assert m["precision"]["price"] == 0.1 and m["limits"]["cost"]["min"] == 100
        assert rx.paths() == ["/fapi/v1/exchangeInfo"]
        assert rx.unknown == []
        src = _file("futures")
        rows = ex.fetch_ohlcv(PAIR, "1h", since=int(src["ts"].iloc[3]), limit=3)
        assert [r[4] for r in rows] == src["close"].iloc[3:6].tolist()
        assert rx.paths()[-1] == "/fapi/v1/klines"


def test_fetch_ohlcv_paginates_and_equals_the_file(rx, usdm):
    src = _file("futures")
    assert len(src) > 1000  # needs more than one request
    got: list[list[float]] = []
    since = int(src["ts"].iloc[0])
    while True:  # the way Freqtrade pages: since = last open + 1
        page = usdm.fetch_ohlcv(PAIR, "1h", since=since, limit=1000)
        if not page:
            break
        got += page
        since = page[-1][0] + 1
    assert rx.paths().count("/fapi/v1/klines") == 3  # 1000 + 512 + empty
    arr = np.array(got)
    assert arr[:, 0].tolist() == src["ts"].tolist()
    np.testing.assert_array_equal(arr[:, 1:], src[["open", "high", "low", "close", "volume"]])
    # ccxt's own pagination gives the same rows
    auto = usdm.fetch_ohlcv(PAIR, "1h", since=int(src["ts"].iloc[0]), params={"paginate": True})
    assert [r[0] for r in auto] == src["ts"].tolist()


def test_mark_ohlcv_is_served_from_the_mark_file(usdm):
    src = _file("mark")
    rows = usdm.fetch_mark_ohlcv(PAIR, "1h", since=int(src["ts"].iloc[10]), limit=5)
    assert [r[0] for r in rows] == src["ts"].iloc[10:15].tolist()
    assert [r[4] for r in rows] == src["close"].iloc[10:15].tolist()


def test_raw_klines_carry_binance_columns_and_taker_volume(rx, usdm, tmp_path):
    src = _file("futures")
    start = int(src["ts"].iloc[100])
    raw = usdm.fapiPublicGetKlines(
        {"symbol": "BTCUSDT", "interval": "1h", "startTime": start, "limit": 3}
    )
    assert len(raw) == 3 and all(len(r) == 12 for r in raw)
    r0 = raw[0]
    assert r0[6] == start + H - 1  # close time
    vol, taker = float(r0[5]), float(r0[9])
    assert taker == pytest.approx(vol / 2)  # no taker split in the source: neutral half
    assert float(r0[10]) == pytest.approx(float(r0[7]) / 2)

    # a source file with real taker columns is served as is
    fut = tmp_path / "futures"
    fut.mkdir()
    df = pd.read_feather(FUT / "BTC_USDT_USDT-1h-futures.feather").iloc[:50]
    rng = np.random.default_rng(7)
    df["taker_buy_volume"] = df["volume"] * rng.uniform(0.2, 0.8, len(df))
    df["trades"] = rng.integers(1000, 9000, len(df))
    df.to_feather(fut / "BTC_USDT_USDT-1h-futures.feather")
    with ReplayExchange(tmp_path) as other:
        ex = ccxt.binanceusdm(other.ccxt_config())
        raw2 = ex.fapiPublicGetKlines({"symbol": "BTCUSDT", "interval": "1h", "limit": 50})
    assert [float(r[9]) for r in raw2] == df["taker_buy_volume"].tolist()
    assert [int(r[8]) for r in raw2] == df["trades"].tolist()


def test_kline_window_semantics_match_binance(usdm):
    src = _file("futures")
    ts = src["ts"].tolist()
    get = usdm.fapiPublicGetKlines
    # no start/end: the most recent `limit`
    assert [r[0] for r in get({"symbol": "BTCUSDT", "interval": "1h", "limit": 4})] == ts[-4:]
    # endTime only: the last `limit` at or before endTime (inclusive)
    rows = get({"symbol": "BTCUSDT", "interval": "1h", "endTime": ts[50], "limit": 3})
    assert [r[0] for r in rows] == ts[48:51]
    # start and end: from start, capped by limit and by end
    rows = get(
        {
            "symbol": "BTCUSDT",
            "interval": "1h",
            "startTime": ts[5] - 1,
            "endTime": ts[9],
            "limit": 100,
        }
    )
    assert [r[0] for r in rows] == ts[5:10]
    # default limit is 500; over 1500 is refused like Binance does
    assert len(get({"symbol": "BTCUSDT", "interval": "1h", "startTime": ts[0]})) == 500
    with pytest.raises(ccxt.BadRequest, match="limit"):
        get({"symbol": "BTCUSDT", "interval": "1h", "limit": 1501})
    with pytest.raises(ccxt.BadSymbol):
        get({"symbol": "NOPEUSDT", "interval": "1h"})
    # a coarser interval is resampled from the 1h file
    four = get({"symbol": "BTCUSDT", "interval": "4h", "startTime": ts[0], "limit": 2})
    first = src.iloc[0:4]
    assert float(four[0][2]) == first["high"].max() and float(four[0][4]) == first["close"].iloc[-1]
    assert float(four[0][5]) == pytest.approx(first["volume"].sum())


def test_funding_rate_history_equals_the_file(rx, usdm):
    src = _file("funding_rate")
    rows = usdm.fetch_funding_rate_history(PAIR, since=int(src["ts"].iloc[0]), limit=1000)
    assert [r["timestamp"] for r in rows] == src["ts"].tolist()
    assert [r["fundingRate"] for r in rows] == pytest.approx(src["funding_rate"].tolist(), abs=1e-9)
    q = rx.requests[-1].query
    assert rx.requests[-1].path == "/fapi/v1/fundingRate" and q["limit"] == "1000"


def test_open_interest_history_and_current(rx, usdm):
    src = _file("open_interest")
    since = int(src["ts"].iloc[0])
    rows = usdm.fetch_open_interest_history(PAIR, "1h", since=since, limit=500)
    assert [r["timestamp"] for r in rows] == src["ts"].iloc[:500].tolist()
    assert [r["openInterestValue"] for r in rows] == src["open_interest_value"].iloc[:500].tolist()
    assert [r["openInterestAmount"] for r in rows] == src["open_interest_amount"].iloc[
        :500
    ].tolist()
    assert rx.requests[-1].path == "/futures/data/openInterestHist"
    with pytest.raises(ccxt.BadRequest):
        usdm.fetch_open_interest_history(PAIR, "1h", since=since, limit=501)
    # 4h history: the 1h snapshots that fall on the 4h grid
    rows4 = usdm.fetch_open_interest_history(PAIR, "4h", since=since, limit=10)
    assert rows4 and all(r["timestamp"] % (4 * H) == 0 for r in rows4)
    on_grid = src[src["ts"] % (4 * H) == 0]
    assert [r["openInterestValue"] for r in rows4] == on_grid["open_interest_value"].iloc[
        :10
    ].tolist()
    now = usdm.fetch_open_interest(PAIR)
    assert now["openInterestAmount"] == src["open_interest_amount"].iloc[-1]


def test_order_book_is_one_tick_wide_around_the_last_close(usdm):
    last_close = float(_file("futures")["close"].iloc[-1])
    book = usdm.fetch_order_book(PAIR, 20)
    bid, ask = book["bids"][0][0], book["asks"][0][0]
    assert len(book["bids"]) == len(book["asks"]) == 20
    assert bid <= last_close < ask or bid < last_close <= ask
    assert ask - bid == pytest.approx(0.1)
    assert all(b[0] > c[0] for b, c in zip(book["bids"], book["bids"][1:], strict=False))
    with pytest.raises(ccxt.BadRequest):
        usdm.fetch_order_book(PAIR, 7)  # Binance accepts 5, 10, 20, 50, 100, 500, 1000 only


def test_replay_clock_hides_the_future_and_forms_the_current_candle():
    src = _file("futures")
    start = src["ts"].iloc[600] + H // 2  # half way through candle 600
    with ReplayExchange(DATADIR, speed=3600.0, start=int(start)) as rx:
        ex = ccxt.binanceusdm(rx.ccxt_config())
        rows = ex.fetch_ohlcv(PAIR, "1h", limit=10)
        now = rx.clock.now_ms()
        # closed candles are the file's, the last one is the forming candle 600
        assert [r[0] for r in rows] == src["ts"].iloc[591:601].tolist()
        assert [r[4] for r in rows[:-1]] == src["close"].iloc[591:600].tolist()
        o, c = src["open"].iloc[600], src["close"].iloc[600]
        forming = rows[-1]
        assert forming[1] == o and min(o, c) <= forming[4] <= max(o, c)
        assert forming[5] < src["volume"].iloc[600]
        assert all(r[0] <= now for r in rows)
        # future rows of funding and open interest are hidden too
        fund = ex.fetch_funding_rate_history(PAIR, since=int(src["ts"].iloc[0]), limit=1000)
        assert fund and all(r["timestamp"] <= now for r in fund)
        oi = ex.fetch_open_interest_history(PAIR, "1h", limit=500)
        assert oi and max(r["timestamp"] for r in oi) <= now
        # about one replay hour per wall second: a new candle arrives
        time.sleep(1.2)
        later = ex.fetch_ohlcv(PAIR, "1h", limit=3)
        assert later[-1][0] == src["ts"].iloc[601]
        assert ex.fetch_time() >= now + H


def test_without_forming_candle_only_closed_candles_are_served():
    src = _file("futures")
    start = src["ts"].iloc[600] + H // 2
    with ReplayExchange(DATADIR, speed=1.0, start=int(start), forming_candle=False) as rx:
        ex = ccxt.binanceusdm(rx.ccxt_config())
        rows = ex.fetch_ohlcv(PAIR, "1h", limit=3)
        assert [r[0] for r in rows] == src["ts"].iloc[597:600].tolist()
        assert rows[-1][4] == src["close"].iloc[599]
        # the book sits at the current candle's open: nothing of its future is used
        book = ex.fetch_order_book(PAIR, 5)
        assert book["bids"][0][0] < src["open"].iloc[600] <= book["asks"][0][0]


def test_unknown_paths_answer_404_and_are_logged(rx):
    ex = ccxt.binanceusdm(rx.ccxt_config())
    ex.load_markets()
    with pytest.raises(ccxt.BaseError, match="not found"):
        ex.fapiPublicGetAggTrades({"symbol": "BTCUSDT"})
    assert rx.unknown and rx.unknown[-1].path == "/fapi/v1/aggTrades"
    # every Binance host of the client is redirected here, private and spot ones too
    assert all(url.startswith(rx.url) for url in ex.urls["api"].values())


def test_fault_hook_returns_a_fixed_status(rx):
    ex = ccxt.binanceusdm(rx.ccxt_config())
    ex.load_markets()
    fault = rx.faults.add(Fault("/fapi/v1/klines", status=503, times=1))
    try:
        with pytest.raises(ccxt.ExchangeNotAvailable):
            ex.fetch_ohlcv(PAIR, "1h", limit=2)
        assert len(ex.fetch_ohlcv(PAIR, "1h", limit=2)) == 2
        assert fault.hits == 1
    finally:
        rx.faults.clear()


def test_bad_datadir_and_speed_are_named(tmp_path):
    with pytest.raises(ConfigError, match="futures/"):
        ReplayExchange(tmp_path)
    with pytest.raises(ConfigError, match="speed"):
        ReplayExchange(DATADIR, speed=0)
    with pytest.raises(ConfigError, match="'yesterday' not understood"):
        ReplayExchange(DATADIR, speed=10, start="yesterday")
    with pytest.raises(ConfigError, match="unknown replay venue 'kraken'"):
        ReplayExchange(DATADIR, venues=["kraken"])


def test_command_line_prints_the_overlay_and_stops_on_sigint(tmp_path):
    shutil.copytree(DATADIR, tmp_path / "dd")
    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "liqsignal.replay",
            "--datadir",
            str(tmp_path / "dd"),
            "--port",
            "0",
            "--speed",
            "60",
            "--start",
            "2026-02-01T00:00Z",
        ],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        lines = []
        assert proc.stdout is not None
        for line in proc.stdout:
            lines.append(line)
            if line.startswith("}"):
                break
        overlay = json.loads("".join(lines))["ccxt_config"]
        ex = ccxt.binanceusdm(overlay)
        assert PAIR in ex.load_markets()
        server_time = ex.fetch_time()
        assert abs(server_time - pd.Timestamp("2026-02-01", tz="UTC").value // 10**6) < 10 * H
    finally:
        proc.send_signal(signal.SIGINT)
        _, err = proc.communicate(timeout=10)
    assert proc.returncode == 0, err
    assert "served" in err and "/fapi/v1/time" not in err.split("unknown paths:")[-1]


def test_open_interest_rows_are_snapshots_at_their_date():
    """Row T is the open interest at instant T: its implied price is the close of candle T-1h."""
    oi = _file("open_interest")
    close = _file("futures").set_index("ts")["close"]
    implied = (oi["open_interest_value"] / oi["open_interest_amount"]).to_numpy()
    prev_close = close.reindex(oi["ts"] - H).to_numpy()  # candle that ends at T
    own_close = close.reindex(oi["ts"]).to_numpy()  # candle that starts at T
    err_prev = np.nanmax(np.abs(implied / prev_close - 1))
    err_own = np.nanmean(np.abs(implied / own_close - 1))
    assert err_prev < 0.002  # aggregate vs Binance price: a few basis points
    assert err_own > 3 * np.nanmean(np.abs(implied / prev_close - 1))
