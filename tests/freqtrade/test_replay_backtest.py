"""`freqtrade backtesting` on the bundled BTC data, markets loaded from the replay exchange."""

from __future__ import annotations

import json
import subprocess
import time
import zipfile

import pandas as pd
import pytest
from ft_replay_helpers import BUNDLED, FREQTRADE, STRATEGY_PATH, ft_env

from liqsignal.replay import ReplayExchange

pytestmark = pytest.mark.slow


def test_backtest_reads_open_interest_and_funding_and_asks_only_markets(ft_config, tmp_path):
    with ReplayExchange(BUNDLED) as rx:
        cfg = ft_config(rx.ccxt_config())
        (tmp_path / "bt").mkdir()
        t0 = time.monotonic()
        proc = subprocess.run(
            [
                str(FREQTRADE), "backtesting", "-c", str(cfg), "--datadir", str(BUNDLED),
                "--strategy", "ReplayOiStrategy", "--strategy-path", str(STRATEGY_PATH),
                "--timerange", "20251210-20260301", "--export", "trades",
                "--backtest-directory", str(tmp_path / "bt"),
            ],
            capture_output=True, text=True, timeout=120, env=ft_env(),
        )  # fmt: skip
        elapsed = time.monotonic() - t0
    assert proc.returncode == 0, proc.stderr[-3000:]
    # backtesting needs the markets only; candles, OI and funding come from the files
    assert [(r.method, r.path) for r in rx.requests] == [("GET", "/fapi/v1/exchangeInfo")]
    assert elapsed < 60

    (zip_path,) = (tmp_path / "bt").glob("*.zip")
    with zipfile.ZipFile(zip_path) as z:
        name = next(n for n in z.namelist() if n.endswith(".json") and "_config" not in n)
        result = json.loads(z.read(name))
    trades = result["strategy"]["ReplayOiStrategy"]["trades"]
    # the strategy enters only where open interest and funding were merged in
    assert len(trades) > 20
    oi = pd.read_feather(BUNDLED / "futures" / "BTC_USDT_USDT-1h-open_interest.feather")
    first_oi = oi["date"].iloc[0]
    assert all(pd.Timestamp(t["open_date"]) > first_oi for t in trades)
    assert {t["is_short"] for t in trades} == {True, False}
    # funding fees reach trades: the 1h funding_rate and 1h mark files were joined
    assert sum(abs(t["funding_fees"]) for t in trades) > 0
