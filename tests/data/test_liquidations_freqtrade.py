"""liq_real_long_usd / liq_real_short_usd in add_liq_columns: from the store, NaN where unknown,
point in time (a candle's row holds only what was liquidated during that candle)."""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pytest
from liq_util import SYM, TESTDATA, coinglass_bars, real_events

from liqsignal.data.liquidations import REALIZED_COLUMNS, LiquidationStore, realized_columns
from liqsignal.freqtrade import LIQ_COLUMNS, add_liq_columns

H = pd.Timedelta(hours=1)


class DP:
    """The part of Freqtrade's DataProvider add_liq_columns asks for (OI and funding files)."""

    def get_pair_dataframe(self, pair: str, timeframe: str, candle_type: str = "") -> pd.DataFrame:
        path = TESTDATA / "futures" / f"BTC_USDT_USDT-{timeframe}-{candle_type}.feather"
        return pd.read_feather(path) if path.exists() else pd.DataFrame()


@pytest.fixture(scope="module")
def candles() -> pd.DataFrame:
    return pd.read_feather(TESTDATA / "futures" / "BTC_USDT_USDT-1h-futures.feather")


def _config(root: Path) -> dict[str, Any]:
    # Freqtrade's datadir is <user_data/data>/<exchange>; the store is its parent
    return {"timeframe": "1h", "exchange": {"name": "binance"}, "datadir": str(root / "binance")}


def test_columns_from_per_bar_store(candles: pd.DataFrame, tmp_path: Path) -> None:
    store = LiquidationStore(tmp_path)
    cg = coinglass_bars()
    store.write_bars("binance", SYM, "1h", cg)
    store.record_gap("binance", SYM, "2026-02-01 10:30", "2026-02-01 10:31")
    before = candles.copy()
    out = add_liq_columns(candles, {"pair": SYM}, DP(), _config(tmp_path))
    pd.testing.assert_frame_equal(candles, before)  # input not mutated
    assert set(LIQ_COLUMNS) | set(REALIZED_COLUMNS) <= set(out.columns)
    got = out.set_index("date")
    c = cg.set_index("date")
    common = got.index.intersection(c.index)
    assert len(common) > 1400
    gap_bar = pd.Timestamp("2026-02-01 10:00", tz="UTC")
    ok = common[common != gap_bar]
    np.testing.assert_allclose(got.loc[ok, "liq_real_long_usd"], c.loc[ok, "long_liquidated_usd"])
    np.testing.assert_allclose(got.loc[ok, "liq_real_short_usd"], c.loc[ok, "short_liquidated_usd"])
    # unknown is NaN: the gap's bar, and candles without a stored bar; never 0 for them
    assert np.isnan(got.loc[gap_bar, "liq_real_long_usd"])
    missing = got.index.difference(c.index)
    assert len(missing) > 0 and got.loc[missing, "liq_real_long_usd"].isna().all()


def test_events_point_in_time(candles: pd.DataFrame, tmp_path: Path) -> None:
    """Real Hyperliquid events moved onto the candles' span by a whole number of days, so they
    fall on these candles; each lands in the candle during which it happened."""
    ev = real_events()
    shift = (candles["date"].iloc[100].floor("1D") - ev["timestamp"].iloc[0].floor("1D")).days
    ev["timestamp"] = ev["timestamp"] + pd.Timedelta(days=shift)
    t0, t1 = ev["timestamp"].min().floor("1h"), ev["timestamp"].max().ceil("1h")
    store = LiquidationStore(tmp_path)
    store.append_events("binance", ev)
    store.record_coverage("binance", SYM, t0, t1)
    out = add_liq_columns(candles, {"pair": SYM}, DP(), _config(tmp_path)).set_index("date")
    inside = (out.index >= t0) & (out.index + H <= t1)
    assert out.loc[~inside, "liq_real_long_usd"].isna().all()  # not covered: unknown
    real = out.loc[inside, ["liq_real_long_usd", "liq_real_short_usd"]]
    assert not real.isna().any().any() and (real.to_numpy() == 0).any()
    for date, row in real.iterrows():
        during = ev[(ev["timestamp"] >= date) & (ev["timestamp"] < date + H)]
        for side in ("long", "short"):
            expect = during.loc[during["side"] == side, "usd"].sum()
            assert row[f"liq_real_{side}_usd"] == pytest.approx(expect, rel=1e-12, abs=1e-9)
    # an event at a candle's close belongs to the next candle, not to the one closing
    close = real.index[5] + H
    extra = ev.iloc[:1].assign(timestamp=close, usd=1e9, amount=1e9 / ev["price"].iloc[0])
    store.append_events("binance", extra)
    again = realized_columns(out.reset_index(), tmp_path, "binance", SYM, "1h")
    again.index = out.index
    side = f"liq_real_{extra['side'].iloc[0]}_usd"
    assert again.loc[real.index[5], side] == pytest.approx(real.loc[real.index[5], side])
    assert again.loc[close, side] >= 1e9


def test_no_store_no_columns_and_bad_store_logged(
    candles: pd.DataFrame, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    out = add_liq_columns(candles, {"pair": SYM}, DP(), _config(tmp_path))
    assert not set(REALIZED_COLUMNS) & set(out.columns)
    path = LiquidationStore(tmp_path).events_path("binance", SYM)
    path.parent.mkdir(parents=True)
    path.write_bytes(b"broken")
    with caplog.at_level(logging.WARNING, logger="liqsignal.freqtrade"):
        out = add_liq_columns(candles, {"pair": SYM}, DP(), _config(tmp_path))
    assert not set(REALIZED_COLUMNS) & set(out.columns)  # the strategy keeps running
    assert any("realized liquidations of binance" in r.getMessage() for r in caplog.records)


def test_finer_bars_summed_only_when_complete(tmp_path: Path) -> None:
    """5m per-bar sums (Gate's finest) give 1h candles their sum; an hour with a missing
    5-minute bar is unknown."""
    cg = coinglass_bars().iloc[:6]
    fine = pd.DataFrame(
        {
            "date": [d + pd.Timedelta(minutes=5 * k) for d in cg["date"] for k in range(12)],
            "long_liquidated_usd": np.repeat(cg["long_liquidated_usd"].to_numpy() / 12, 12),
            "short_liquidated_usd": np.repeat(cg["short_liquidated_usd"].to_numpy() / 12, 12),
        }
    ).drop(index=[30])  # the third hour lacks one 5m bar
    store = LiquidationStore(tmp_path)
    store.write_bars("gate", SYM, "5m", fine)
    frame = pd.DataFrame({"date": cg["date"]})
    real = realized_columns(frame, tmp_path, "gate", SYM, "1h")
    expect = cg["long_liquidated_usd"].to_numpy().copy()
    expect[2] = np.nan
    np.testing.assert_allclose(real["liq_real_long_usd"], expect, rtol=1e-12)
