"""liqsignal.column_cache and its use in add_liq_columns: a hyperopt epoch on the same candles
reuses the computed liq columns; any change to the candles or the settings computes anew."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pytest

import liqsignal.columns as ft
from liqsignal.column_cache import ColumnCache, frame_fingerprint

ROOT = Path(__file__).resolve().parents[1]
FUT = ROOT / "user_data" / "data" / "binance" / "futures"
PAIR = "BTC/USDT:USDT"


@pytest.fixture(scope="module")
def candles() -> pd.DataFrame:
    df = pd.read_feather(FUT / "BTC_USDT_USDT-1h-futures.feather")
    return df[df["date"] >= pd.Timestamp("2026-01-01", tz="UTC")].reset_index(drop=True)


class _DP:
    def __init__(self, runmode: str, frames: dict[tuple[str, str], pd.DataFrame]) -> None:
        self.runmode = runmode
        self.frames = frames

    def get_pair_dataframe(self, pair: str, timeframe: str, candle_type: str = "") -> pd.DataFrame:
        return self.frames.get((timeframe, candle_type), pd.DataFrame())


@pytest.fixture
def dp() -> _DP:
    oi = pd.read_feather(FUT / "BTC_USDT_USDT-1h-open_interest.feather")
    fr = pd.read_feather(FUT / "BTC_USDT_USDT-1h-funding_rate.feather")
    return _DP("hyperopt", {("1h", "open_interest"): oi, ("1h", "funding_rate"): fr})


def test_fingerprint_sees_every_value_the_index_and_the_columns(candles: pd.DataFrame) -> None:
    fp = frame_fingerprint(candles)
    assert frame_fingerprint(candles.copy()) == fp
    one = candles.copy()
    one.loc[len(one) - 1, "close"] = np.nextafter(one["close"].iloc[-1], np.inf)
    shifted = candles.copy()
    shifted.index = shifted.index + 1
    later = candles.copy()
    later.loc[5, "date"] = later.loc[5, "date"] + pd.Timedelta(seconds=1)
    renamed = candles.rename(columns={"volume": "vol"})
    cut = candles.iloc[:-1]
    fps = {frame_fingerprint(f) for f in (one, shifted, later, renamed, cut)}
    assert fp not in fps and len(fps) == 5


def test_cache_hit_is_a_fresh_copy_and_misses_on_another_key(candles: pd.DataFrame) -> None:
    cache = ColumnCache(max_bytes=2**20)
    calls: list[int] = []

    def compute() -> pd.DataFrame:
        calls.append(1)
        return pd.DataFrame({"a": candles["close"] * 2.0, "b": candles["volume"]})

    a = cache.frame(("k", 1), candles, compute)
    b = cache.frame(("k", 1), candles.copy(), compute)
    assert len(calls) == 1 and (cache.hits, cache.misses) == (1, 1)
    pd.testing.assert_frame_equal(a, b, check_exact=True)
    b.loc[0, "a"] = -1.0  # the caller's frame is its own
    c = cache.frame(("k", 1), candles, compute)
    assert c.loc[0, "a"] == a.loc[0, "a"]
    cache.frame(("k", 2), candles, compute)
    assert len(calls) == 2


def test_cache_is_bounded_by_bytes_and_off_at_zero(candles: pd.DataFrame) -> None:
    block = pd.DataFrame({"a": candles["close"].astype("float64")})
    size = block.to_numpy().nbytes
    cache = ColumnCache(max_bytes=2 * size)
    for k in range(3):
        cache.frame(k, candles, lambda: block)
    assert len(cache) == 2 and cache.nbytes == 2 * size
    cache.frame(0, candles, lambda: block)  # the oldest went first
    assert cache.misses == 4
    off = ColumnCache(max_bytes=0)
    off.frame(0, candles, lambda: block)
    off.frame(0, candles, lambda: block)
    assert len(off) == 0 and off.misses == 0


def test_hyperopt_epochs_reuse_the_liq_columns(
    candles: pd.DataFrame, dp: _DP, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(ft, "COLUMN_CACHE", ColumnCache())
    calls: list[int] = []
    real = ft.compute_features

    def counting(*a: Any, **k: Any) -> Any:
        calls.append(1)
        return real(*a, **k)

    monkeypatch.setattr(ft, "compute_features", counting)
    cfg = {"timeframe": "1h"}
    first = ft.add_liq_columns(candles.copy(), {"pair": PAIR}, dp, cfg)
    again = ft.add_liq_columns(candles.copy(), {"pair": PAIR}, dp, cfg)
    assert len(calls) == 1
    pd.testing.assert_frame_equal(first, again, check_exact=True)
    # the same result a run without the cache computes (point in time unchanged)
    plain = ft.add_liq_columns(candles.copy(), {"pair": PAIR}, _DP("other", dp.frames), cfg)
    pd.testing.assert_frame_equal(first, plain, check_exact=True)
    assert len(calls) == 2
    # other engine settings, or one candle more: computed anew
    other = {"timeframe": "1h", "liqsignal": {"engine": {"half_life_hours": 12}}}
    ft.add_liq_columns(candles.copy(), {"pair": PAIR}, dp, other)
    extra = candles.iloc[[-1]].assign(date=candles["date"].iloc[-1] + pd.Timedelta(hours=1))
    longer = pd.concat([candles, extra], ignore_index=True)
    ft.add_liq_columns(longer, {"pair": PAIR}, dp, cfg)
    assert len(calls) == 4
