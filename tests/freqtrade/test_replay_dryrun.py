"""`freqtrade trade --dry-run` against the replay clock: new candles, an entry, an exit, a stop."""

from __future__ import annotations

import re
import signal
import sqlite3
from collections import Counter

import pandas as pd
import pytest
from ft_replay_helpers import STRATEGY_PATH, TESTDATA, dry_run_until

from liqsignal.replay import ReplayExchange

pytestmark = pytest.mark.slow

SPEED = 1800.0  # one 1h candle every 2 wall seconds
EXPECTED_PATHS = {
    "/fapi/v1/exchangeInfo",
    "/fapi/v1/time",
    "/fapi/v1/klines",
    "/fapi/v1/depth",
    "/fapi/v1/fundingRate",
    "/fapi/v1/markPriceKlines",
    "/futures/data/openInterestHist",
}
ANALYSED = re.compile(r"replay-test analysed BTC/USDT:USDT candle=(\S+) oi=(\S+) funding=(\S+)")


def _closed_trades(db: str) -> list[tuple]:
    try:
        with sqlite3.connect(db) as con:
            return con.execute(
                "select id, is_short, open_rate, close_rate, exit_reason from trades "
                "where is_open = 0"
            ).fetchall()
    except sqlite3.Error:
        return []  # not created yet


@pytest.mark.parametrize("stop_signal", [signal.SIGINT, signal.SIGTERM], ids=["SIGINT", "SIGTERM"])
def test_dry_run_follows_the_replay_clock(ft_config, tmp_path, stop_signal):
    log = tmp_path / "freqtrade.log"
    # Freqtrade judges candle completeness by the wall clock: serve closed candles only
    with ReplayExchange(
        TESTDATA, speed=SPEED, start="2026-02-01T00:20Z", forming_candle=False
    ) as rx:
        cfg = ft_config(
            rx.ccxt_config(),
            exchange={
                # replay time is months behind the wall clock: don't call candles outdated,
                # and re-poll every loop even when the wall-clock candle has not moved
                "outdated_offset": 10**8,
                "_ft_has_params": {"ohlcv_max_poll_interval_secs": 0},
            },
            internals={"process_throttle_secs": 1, "heartbeat_interval": 60},
        )
        db = str(tmp_path / "trades.sqlite")
        proc, stop_seconds = dry_run_until(
            [
                "-c",
                str(cfg),
                "--strategy",
                "ReplayOiStrategy",
                "--strategy-path",
                str(STRATEGY_PATH),
            ],
            tmp_path,
            log,
            lambda text: len(set(ANALYSED.findall(text))) >= 4 and bool(_closed_trades(db)),
            seconds=45,
            stop_signal=stop_signal,
        )
        replay_end = rx.clock.now_ms()
        paths = Counter(rx.paths())
        unknown = list(rx.unknown)

    text = log.read_text()
    assert proc.returncode == 130, text[-2000:]  # Freqtrade's exit code after SIGINT/SIGTERM
    assert "Cleaning up modules" in text and stop_seconds < 20
    assert "Traceback" not in text.split("calling exit")[0]

    # new candles kept arriving, and each carried the open interest of its own date
    analysed = ANALYSED.findall(text)
    dates = [pd.Timestamp(d) for d, _, _ in analysed]
    assert len(set(dates)) >= 4 and dates == sorted(dates)
    assert max(dates) + pd.Timedelta(hours=1) <= pd.Timestamp(replay_end, unit="ms", tz="UTC")
    oi = pd.read_feather(TESTDATA / "futures" / "BTC_USDT_USDT-1h-open_interest.feather")
    by_date = dict(zip(oi["date"], oi["open_interest_value"], strict=True))
    for d, value, funding in analysed:
        assert float(value) == by_date[pd.Timestamp(d)]  # same row a backtest would merge
        assert funding != "nan"

    trades = _closed_trades(db)
    assert trades, "no trade was entered and exited"
    assert all(t[4] == "exit_signal" and t[2] > 0 and t[3] > 0 for t in trades)

    assert unknown == []
    assert set(paths) <= EXPECTED_PATHS, paths
    for p in ("/fapi/v1/exchangeInfo", "/fapi/v1/klines", "/futures/data/openInterestHist",
              "/fapi/v1/fundingRate", "/fapi/v1/depth"):  # fmt: skip
        assert paths[p] >= 1, p
