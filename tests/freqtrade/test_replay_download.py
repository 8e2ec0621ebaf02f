"""`freqtrade download-data` through the replay exchange gives back the served files' rows."""

from __future__ import annotations

import subprocess
from collections import Counter

import numpy as np
import pandas as pd
import pytest
from ft_replay_helpers import FREQTRADE, TESTDATA, ft_env

from liqsignal.replay import ReplayExchange

pytestmark = pytest.mark.slow

CANDLE_TYPES = ("futures", "mark", "funding_rate", "open_interest")


def test_download_data_round_trips_every_candle_type(ft_config, tmp_path):
    out = tmp_path / "downloaded"
    with ReplayExchange(TESTDATA) as rx:
        cfg = ft_config(rx.ccxt_config(), exchange={"only_from_ccxt": True})
        proc = subprocess.run(
            [
                str(FREQTRADE), "download-data", "-c", str(cfg), "--datadir", str(out),
                "--timerange", "20260110-20260120", "-t", "1h", "--candle-types", *CANDLE_TYPES,
            ],
            capture_output=True, text=True, timeout=120, env=ft_env(),
        )  # fmt: skip
        paths = Counter(rx.paths())
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert set(paths) == {
        "/fapi/v1/exchangeInfo",
        "/fapi/v1/klines",
        "/fapi/v1/markPriceKlines",
        "/fapi/v1/fundingRate",
        "/futures/data/openInterestHist",
    }
    for ctype in CANDLE_TYPES:
        name = f"BTC_USDT_USDT-1h-{ctype}.feather"
        got = pd.read_feather(out / "futures" / name)
        src = pd.read_feather(TESTDATA / "futures" / name)
        got["date"] = got["date"].astype("datetime64[ms, UTC]")
        src["date"] = src["date"].astype("datetime64[ms, UTC]")
        assert got["date"].min() <= pd.Timestamp("2026-01-10", tz="UTC") + pd.Timedelta(hours=8)
        both = src.merge(got, on="date", suffixes=("_src", "_got"))
        assert len(both) == len(got) > 100, ctype
        cols = [c for c in got.columns if c != "date" and not (ctype == "mark" and c == "volume")]
        for c in cols:
            np.testing.assert_array_equal(
                both[f"{c}_src"], both[f"{c}_got"], err_msg=f"{ctype} {c}"
            )
