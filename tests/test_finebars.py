"""A coarse map from finer candles: aggregation, point in time, interpolated OI, path controls."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from liqsignal.datasets import load_dataset
from liqsignal.exceptions import InputError
from liqsignal.features import compute_features
from liqsignal.finebars import SUMMED_COLUMNS, fine_features, fine_with_oi, path_controls


@pytest.fixture(scope="module")
def eth():
    ds = load_dataset("eth_4h")
    return ds.frame.iloc[:400].reset_index(drop=True), ds.fine


def test_interpolated_oi_meets_the_coarse_oi_at_each_coarse_close(eth):
    df, fine = eth
    f = fine_with_oi(df, fine)
    assert f["date"].iloc[0] == df["date"].iloc[0]
    assert len(f) == 4 * len(df)
    # the fine bar ending at a coarse close carries that coarse bar's OI
    for i in (10, 100, 399):
        last = f[f["date"] == df["date"].iloc[i] + pd.Timedelta("3h")]
        assert last["open_interest_value"].iloc[0] == pytest.approx(
            df["open_interest_value"].iloc[i]
        )
    # halfway between two closes: halfway between the two values
    mid = f[f["date"] == df["date"].iloc[11] + pd.Timedelta("1h")]["open_interest_value"].iloc[0]
    a, b = df["open_interest_value"].iloc[10], df["open_interest_value"].iloc[11]
    assert mid == pytest.approx(a + (b - a) / 2)


def test_fine_features_sum_the_fine_bars_and_read_the_rest_at_the_coarse_close(eth):
    df, fine = eth
    out = fine_features(df, fine)
    f = fine_with_oi(df, fine)
    raw = compute_features(f)
    i = 200
    rows = (f["date"] >= df["date"].iloc[i]) & (f["date"] < df["date"].iloc[i] + pd.Timedelta("4h"))
    for c in SUMMED_COLUMNS:
        assert out[c].iloc[i] == pytest.approx(raw.loc[rows, c].sum())
    last = raw.loc[rows].iloc[-1]
    for c in ("liq_long_cluster_price", "liq_long_total_usd", "liq_dropped_usd", "liq_flush"):
        assert out[c].iloc[i] == pytest.approx(last[c], nan_ok=True)


def test_fine_features_are_point_in_time(eth):
    df, fine = eth
    full = fine_features(df, fine)
    for t in (150, 260):
        cut = fine_features(df.iloc[: t + 1], fine)
        pd.testing.assert_series_equal(cut.iloc[t], full.iloc[t], check_names=False)


def test_path_controls_sum_the_fine_moves(eth):
    df, fine = eth
    pc = path_controls(df, fine)
    f = fine_with_oi(df, fine)
    i = 50
    rows = f.index[
        (f["date"] >= df["date"].iloc[i]) & (f["date"] < df["date"].iloc[i] + pd.Timedelta("4h"))
    ]
    prev_c = f["close"].shift(1)
    prev_oi = f["open_interest_value"].shift(1)
    exp = (np.maximum(0.0, prev_c - f["low"]) / prev_c * prev_oi).loc[rows].sum()
    assert pc["long"]["path_move_oi"].iloc[i] == pytest.approx(exp)


def test_fine_candles_must_be_finer_and_overlap(eth):
    df, fine = eth
    with pytest.raises(InputError, match="finer"):
        fine_features(df, df.drop(columns=["open_interest_value"]))
    later = fine.assign(date=fine["date"] + pd.Timedelta(days=3650))
    with pytest.raises(InputError, match="overlap"):
        fine_features(df, later)
    with pytest.raises(InputError, match="missing column 'volume'"):
        fine_features(df, fine.drop(columns=["volume"]))
