"""Fuzzing compute_features with bad data: every outcome is valid, finite, conserving features or
an InputError naming the column and row; a huge wick costs no more than a wide bar; bounds-checked
kernels (NUMBA_BOUNDSCHECK=1, in a subprocess) never index out of the grid."""

from __future__ import annotations

import math
import os
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from bars_util import BAD_VALUES, random_bars, random_frame
from bars_util import FRAME_COLUMNS as COLUMNS
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from liqsignal import InputError, nb
from liqsignal.config import MapConfig
from liqsignal.engine import LiquidationMap
from liqsignal.features import compute_features, compute_features_multi

ROOT = Path(__file__).resolve().parents[1]
USD_COLUMNS = [c for c in nb.OUT_NAMES if c.endswith("_usd")]


def check_outcome(df: pd.DataFrame, cfg: MapConfig) -> str:
    """'error' for an InputError naming a column and a row, 'ok' for checked features."""
    before = df.copy(deep=True)
    try:
        res, lmap = compute_features(df, cfg, return_map=True)
    except InputError as e:
        msg = str(e)
        if "bins" not in msg:  # a step that does not suit the price names the step instead
            assert any(f"'{c}'" in msg for c in [*COLUMNS, "date"]), msg
            assert "row " in msg or "missing" in msg, msg
        pd.testing.assert_frame_equal(df, before)
        return "error"
    pd.testing.assert_frame_equal(df, before)
    for c in USD_COLUMNS:
        v = res[c].to_numpy()
        assert np.isfinite(v).all(), c
        assert (v >= 0).all(), (c, v.min())
    for c in ("liq_long_cluster_dist_pct", "liq_short_cluster_dist_pct"):
        v = res[c].to_numpy()
        assert np.all(np.isnan(v) | (v >= 0)), c
    levels = lmap.levels()
    assert (levels[["long_usd", "short_usd"]].to_numpy() >= 0).all()
    acc = lmap.accounting()
    assert all(math.isfinite(v) and v >= 0 for v in acc.values()), acc
    out = sum(acc[k] for k in ("consumed_usd", "closed_usd", "decayed_usd", "dropped_usd"))
    assert out + acc["standing_usd"] == pytest.approx(acc["opened_usd"], rel=1e-7, abs=1e-9)
    return "ok"


@st.composite
def bad_frames(draw):
    seed = draw(st.integers(0, 2**32 - 1))
    rng = np.random.default_rng(seed)
    n = draw(st.integers(1, 60))
    price = draw(st.sampled_from([1e-8, 0.002, 1.0, 2300.0, 50_000.0, 1e9]))
    df = random_frame(rng, n, price, draw(st.sampled_from([0.0, 0.2])))
    for _ in range(draw(st.integers(0, 3))):
        kind = draw(st.sampled_from(["value", "wick", "nan_run", "object", "drop_oi"]))
        row = draw(st.integers(0, n - 1))
        present = [c for c in COLUMNS if c in df.columns]  # "drop_oi" may have run before
        if kind == "value":
            col = draw(st.sampled_from(present))
            value = draw(st.sampled_from(BAD_VALUES))
            if isinstance(value, str) or value is None:
                df[col] = df[col].astype(object)
            df.loc[row, col] = value
        elif kind == "wick":
            factor = draw(st.sampled_from([1e2, 1e4, 1e6]))
            if draw(st.booleans()):
                df.loc[row, "high"] = df.loc[row, "high"] * factor
            else:
                df.loc[row, "low"] = df.loc[row, "low"] / factor
        elif kind == "nan_run":
            col = draw(
                st.sampled_from(
                    [
                        c
                        for c in ("volume", "open_interest_amount", "funding_rate")
                        if c in df.columns
                    ]
                )
            )
            df.loc[row : row + draw(st.integers(1, 20)), col] = np.nan
        elif kind == "object":
            col = draw(st.sampled_from(present))
            df[col] = df[col].astype(object)
        else:
            df = df.drop(columns=["open_interest_amount"], errors="ignore")
    return df, price


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(case=bad_frames(), relative=st.booleans(), n_bins=st.sampled_from([None, 64]))
def test_random_bad_frames_give_features_or_input_error(case, relative, n_bins):
    df, price = case
    kw = {"step": None, "step_bps": 10.0} if relative else {"step": price * 1e-3}
    cfg = MapConfig(**kw, n_bins=n_bins, heatmap_frames=8, heatmap_rows=16)
    check_outcome(df, cfg)


@pytest.mark.parametrize(
    ("col", "value", "reason"),
    [
        ("high", np.inf, "infinite"),
        ("high", 1e300, "outside the plausible price range"),
        ("low", 1e-300, "outside the plausible price range"),
        ("close", -np.inf, "infinite"),
        ("volume", np.inf, "infinite"),
        ("volume", 1e300, "notional"),
        ("open_interest_amount", 1e300, "notional"),
        ("funding_rate", np.inf, "infinite"),
        ("volume", "12,5", "not a number"),
    ],
)
def test_each_bad_value_names_column_row_and_reason(col, value, reason):
    df = random_frame(np.random.default_rng(1), 20, 50_000.0, 0.0)
    if isinstance(value, str):
        df[col] = df[col].astype(object)
    if col == "low":
        df.loc[7, ["open", "close"]] = df.loc[7, "high"]
    if col == "close":
        df.loc[7, ["open", "low"]] = -np.inf
    df.loc[7, col] = value
    with pytest.raises(InputError) as ei:
        compute_features(df)
    msg = str(ei.value)
    assert f"'{col}'" in msg or (col == "close" and "'open'" in msg), msg
    assert "row 7" in msg and (reason in msg or col == "close"), msg


def test_the_issue_reproducer_is_an_input_error_not_a_segfault():
    df = pd.DataFrame(
        {
            "date": [pd.Timestamp("2025-01-01", tz="UTC")],
            "open": [5e4],
            "high": [np.inf],
            "low": [4.99e4],
            "close": [5.005e4],
            "volume": [300.0],
            "open_interest_amount": [1e3],
        }
    )
    with pytest.raises(InputError, match=r"column 'high' is infinite at row 0"):
        compute_features(df)


def test_numeric_strings_in_an_object_column_are_read_as_numbers():
    df = random_frame(np.random.default_rng(2), 30, 2300.0, 0.0)
    obj = df.copy()
    obj["volume"] = obj["volume"].map(repr).astype(object)
    pd.testing.assert_frame_equal(compute_features(obj), compute_features(df))


def test_dates_outside_pandas_range_are_an_input_error():
    df = random_frame(np.random.default_rng(3), 5, 100.0, 0.0)
    dates = df["date"].dt.tz_localize(None).to_numpy().astype("datetime64[s]")
    dates[3] = np.datetime64("2400-01-01T00:00:00", "s")
    df["date"] = pd.Series(dates)
    with pytest.raises(InputError, match=r"'date' is outside the supported range .* row 3"):
        compute_features(df)


def test_naive_and_aware_dates_mix_as_utc_in_multi():
    rng = np.random.default_rng(4)
    a = random_frame(rng, 40, 50_000.0, 0.0)
    b = a.copy()
    b["close"] = b["close"] * 1.0005
    b[["high", "open"]] = np.maximum(b[["high", "open"]].to_numpy(), b[["close"]].to_numpy())
    naive = b.copy()
    naive["date"] = naive["date"].dt.tz_localize(None)
    aware = compute_features_multi({"binance": a, "bybit": b})
    mixed = compute_features_multi({"binance": a, "bybit": naive})
    pd.testing.assert_frame_equal(aware, mixed)


def test_venues_in_different_units_are_refused_naming_both():
    rng = np.random.default_rng(5)
    per_token = random_frame(rng, 40, 0.004, 0.0)
    per_thousand = per_token.copy()
    per_thousand[["open", "high", "low", "close"]] *= 1000.0
    per_thousand["volume"] /= 1000.0
    with pytest.raises(InputError, match=r"'binance' and 'okx' quote this market in different"):
        compute_features_multi({"binance": per_token, "okx": per_thousand})


def test_a_step_far_too_small_for_the_price_is_refused_not_allocated():
    """Without auto_grid, 50 USD bins at a price of 1e10 would be 220 million bins (3.5 GB)."""
    df = random_frame(np.random.default_rng(6), 5, 1e10, 0.0)
    with pytest.raises(InputError, match=r"needs [\d,]+ bins"):
        compute_features(df, MapConfig(step=50.0, auto_grid=False))
    # with auto_grid (the default) the market gets a relative grid of bounded size instead
    res, lmap = compute_features(df, MapConfig(step=50.0), return_map=True)
    assert lmap.n_bins <= 1_000_000 and np.isfinite(res["liq_opened_usd"]).all()


def test_spread_is_bounded_by_the_grid_and_conserves_mass():
    raw = np.zeros((1, 100))
    nb.spread2_nb(raw, 0, 1.0, 2.0, 50.0, 0.0, 1.0, 1.0)  # compiled
    t0 = time.perf_counter()
    lost, lo, hi = nb.spread2_nb(raw, 0, -1e15, 1e15, 50.0, 1.0, 1.0, 0.5)
    assert time.perf_counter() - t0 < 1.0  # 2e15 bins would take days
    total = 0.5 * 1.0 + 0.5 * 0.5  # half below the cut kept at 1, half above at 0.5
    assert lost + raw.sum() == pytest.approx(total, rel=1e-12)
    assert (lo, hi) == (0, 99)
    # intervals over one edge or both: what is placed plus what is lost is the kept mass
    for a, b in [(95.2, 103.7), (-3.1, 2.4), (-2.0, 101.0), (99.4, 99.6), (-7.0, -1.0)]:
        for cut in (a - 1.0, (a + b) / 2.0, b + 1.0):
            raw[:] = 0.0
            lost, lo, hi = nb.spread2_nb(raw, 0, a, b, cut, 1.0, 0.7, 0.4)
            below = (min(max(cut, a), b) - a) / (b - a)
            assert lost + raw.sum() == pytest.approx(0.7 * below + 0.4 * (1 - below), rel=1e-12)
            assert (raw >= 0).all()
    for a, b in [(np.inf, np.inf), (np.nan, 3.0), (-np.inf, 5.0), (1e300, 1e300)]:
        raw[:] = 0.0
        lost, lo, hi = nb.spread2_nb(raw, 0, a, b, 50.0, 1.0, 1.0, 1.0)
        assert raw.sum() == 0.0 and lost == 1.0 and (lo, hi) == (-1, -1)


def _best(lmap_cfg: MapConfig, ts: np.ndarray, x: np.ndarray) -> float:
    times = []
    for _ in range(5):
        t0 = time.perf_counter()
        LiquidationMap(lmap_cfg).update(ts, x)
        times.append(time.perf_counter() - t0)
    return min(times)


def test_work_per_bar_is_bounded_whatever_the_wick():
    """Bars whose wick is 1e2 / 1e4 / 1e6 x the close cost the same: each spreads over the
    grid at most (before the bound, a 1e6 wick cost 100 x a 1e4 wick, 53 s for 50 bars)."""
    rng = np.random.default_rng(7)
    ts, x = random_bars(rng, 2000, price=50_000.0, gaps=False)
    cfg = MapConfig()
    LiquidationMap(cfg).update(ts[:10], x[:10])  # compiled
    times = {}
    for factor in (1e2, 1e6):
        xw = x.copy()
        xw[::2, 0, nb.I_HIGH] *= factor
        xw[1::2, 0, nb.I_LOW] /= factor
        times[factor] = _best(cfg, ts, xw)
    normal = _best(cfg, ts, x)
    assert times[1e6] < 2.0 * times[1e2] + 0.01, times
    assert times[1e6] < 40.0 * normal + 0.01, (times, normal)
    # what the wicks put outside the grid is counted as dropped, and the books balance
    xw = x.copy()
    xw[100, 0, nb.I_HIGH] *= 1e6
    lmap = LiquidationMap(cfg)
    out = lmap.update(ts, xw)
    dropped = out[nb.OUT_NAMES.index("liq_dropped_usd")]
    assert dropped[100] - dropped[99] > 0
    acc = lmap.accounting()
    out_sum = sum(acc[k] for k in ("consumed_usd", "closed_usd", "decayed_usd", "dropped_usd"))
    assert out_sum + acc["standing_usd"] == pytest.approx(acc["opened_usd"], rel=1e-9)


@settings(max_examples=60, deadline=None)
@given(
    seed=st.integers(0, 2**32 - 1),
    n=st.integers(2, 300),
    relative=st.booleans(),
    n_bins=st.sampled_from([None, 16, 40]),
    half_life=st.sampled_from([0.01, 1.0, 48.0]),
)
def test_standing_usd_is_never_negative(seed, n, relative, n_bins, half_life):
    """Running totals (scale x raw sums, updated by consumption, pro-rata closes, re-centring
    and spreads partly off the grid) never go below zero, even when rounding would."""
    rng = np.random.default_rng(seed)
    ts, x = random_bars(rng, n, vol=float(rng.choice([0.01, 0.2])))
    x[:, :, nb.I_OI] *= rng.choice([1.0, 1e9])
    kw = {"step": None, "step_bps": 20.0} if relative else {"step": 0.05}
    cfg = MapConfig(**kw, n_bins=n_bins, half_life_hours=half_life, recentre_frac=0.02)
    lmap = LiquidationMap(cfg)
    out = lmap.update(ts, x)
    for c in USD_COLUMNS:
        v = out[nb.OUT_NAMES.index(c)]
        assert (v[np.isfinite(v)] >= 0).all(), (c, np.nanmin(v))
    assert (lmap.ex[:, nb.X_TOT_L] >= 0).all() and (lmap.ex[:, nb.X_TOT_S] >= 0).all()


BOUNDSCHECK_SCRIPT = textwrap.dedent(
    """
    import sys
    import numpy as np
    sys.path.insert(0, {tests!r})
    from bars_util import random_bars
    from liqsignal.config import MapConfig
    from liqsignal.engine import LiquidationMap
    from numba.core import config
    assert config.BOUNDSCHECK == 1
    rng = np.random.default_rng(0)
    bad = [np.inf, -np.inf, np.nan, 1e300, 1e-300, 0.0, -5.0, 1e6]
    runs = 0
    for relative in (False, True):
        cfg = MapConfig(step=None, step_bps=20.0) if relative else MapConfig(step=0.05, n_bins=64)
        for value in bad:
            for col in range(8):
                ts, x = random_bars(rng, 25, vol=0.05)
                x[12, 0, col] = value if value != 1e6 else x[12, 0, col] * 1e6
                LiquidationMap(cfg).update(ts, x)  # must not raise IndexError
                runs += 1
    print("runs", runs)
    """
)


@pytest.mark.slow
def test_kernel_with_bounds_checking_never_indexes_outside(tmp_path):
    """The raw kernel (no validation in front) on inf / NaN / 1e300 / 1e-300 / zero / negative /
    1e6 x values in every input column, with numba's bounds checks on (a fresh cache)."""
    env = dict(os.environ, NUMBA_BOUNDSCHECK="1", NUMBA_CACHE_DIR=str(tmp_path / "cache"))
    script = BOUNDSCHECK_SCRIPT.format(tests=str(ROOT / "tests"))
    r = subprocess.run(
        [sys.executable, "-c", script], env=env, capture_output=True, text=True, timeout=300
    )
    assert r.returncode == 0, r.stderr[-3000:]
    assert "runs 128" in r.stdout
