"""compute_features: validation, no mutation, point in time on real data, proxy and aggregation."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from liqsignal import nb
from liqsignal.engine import LiquidationMap
from liqsignal.exceptions import InputError
from liqsignal.features import FEATURE_COLUMNS, compute_features, compute_features_multi


def test_columns_index_and_no_mutation(btc_frame):
    df = btc_frame.iloc[:300].copy()
    df.index = pd.RangeIndex(1000, 1300)
    before = df.copy(deep=True)
    res = compute_features(df)
    pd.testing.assert_frame_equal(df, before)
    assert list(res.columns) == list(FEATURE_COLUMNS)
    assert res.index.equals(df.index)
    assert (res["liq_proxy_mode"] == 0).all()
    assert res["liq_pred_long_usd"].iloc[200:].gt(0).any()
    assert set(np.unique(res["liq_long_armed"])) <= {0.0, 1.0}


@pytest.mark.parametrize("t", [0, 1, 2, 17, 199, 200, 777, 1500, 2173])
def test_point_in_time_on_real_data(btc_frame, t):
    full = compute_features(btc_frame)
    part = compute_features(btc_frame.iloc[: t + 1])
    pd.testing.assert_series_equal(full.iloc[t], part.iloc[t], check_names=False, rtol=0, atol=0)


def test_point_in_time_at_many_rows(btc_frame):
    full = compute_features(btc_frame)
    rng = np.random.default_rng(0)
    for t in rng.choice(len(btc_frame), 40, replace=False):
        part = compute_features(btc_frame.iloc[: t + 1])
        np.testing.assert_array_equal(part.iloc[-1].to_numpy(), full.iloc[t].to_numpy())


def test_incremental_map_update_equals_full(btc_frame):
    from liqsignal.features import _seconds, prepare_inputs

    full, lmap_full = compute_features(btc_frame, return_map=True)
    lmap = LiquidationMap(lmap_full.config)
    x = prepare_inputs(btc_frame, proxy=False)[:, None, :]
    ts = _seconds(btc_frame["date"])
    rows = [lmap.update(ts[i : i + 1], x[i : i + 1]) for i in range(len(ts))]
    np.testing.assert_array_equal(np.concatenate(rows, axis=1).T, full.iloc[:, :-1].to_numpy())
    pd.testing.assert_frame_equal(lmap.levels(), lmap_full.levels())


def _bad(btc_frame, **changes):
    df = btc_frame.iloc[:50].copy()
    for col, (row, value) in changes.items():
        df.loc[df.index[row], col] = value
    return df


@pytest.mark.parametrize(
    ("col", "row", "value", "match"),
    [
        ("close", 7, np.nan, r"'close' is NaN .* row 7"),
        ("low", 3, -1.0, r"'low' must be > 0, bad at row 3"),
        ("high", 9, 1.0, r"'high' is below 'low' at row 9"),
        ("open_interest_value", 11, -5.0, r"'open_interest_value' is negative at row 11"),
        ("volume", 4, -1.0, r"'volume' is negative at row 4"),
    ],
)
def test_bad_values_name_column_and_row(btc_frame, col, row, value, match):
    with pytest.raises(InputError, match=match):
        compute_features(_bad(btc_frame, **{col: (row, value)}))


def test_bad_dates_and_shapes(btc_frame):
    df = btc_frame.iloc[:20].copy()
    dup = df.copy()
    dup.loc[dup.index[5], "date"] = dup["date"].iloc[4]
    with pytest.raises(InputError, match="duplicate at row 5"):
        compute_features(dup)
    uns = df.iloc[[0, 1, 3, 2, 4]].reset_index(drop=True)
    with pytest.raises(InputError, match=r"unsorted .* row 3"):
        compute_features(uns)
    with pytest.raises(InputError, match="is empty"):
        compute_features(df.iloc[:0])
    with pytest.raises(InputError, match="missing open interest"):
        compute_features(df.drop(columns=["open_interest_value"]))
    with pytest.raises(InputError, match=r"missing column\(s\) \['volume'\]"):
        compute_features(df.drop(columns=["volume"]))
    with pytest.raises(InputError, match="must be datetimes"):
        compute_features(df.assign(date=df["date"].astype(str)))


def test_gaps_are_legal_and_decay_by_time(btc_frame):
    df = btc_frame.iloc[:400].copy()
    gapped = pd.concat(
        [df.iloc[:200], df.iloc[200:].assign(date=df["date"].iloc[200:] + pd.Timedelta(days=30))]
    )
    a = compute_features(df)
    b = compute_features(gapped)
    # thirty days at a 48 h half-life fade the map to almost nothing
    assert b["liq_long_total_usd"].iloc[200] < a["liq_long_total_usd"].iloc[200] * 0.01


def test_volume_proxy_mode(btc_frame):
    df = btc_frame.drop(columns=["open_interest_value"]).iloc[:500]
    res = compute_features(df, proxy=True)
    assert (res["liq_proxy_mode"] == 1).all()
    assert res["liq_opened_usd"].gt(0).mean() > 0.9
    assert res["liq_pred_long_usd"].iloc[100:].gt(0).any()


def test_aggregation_over_exchanges_sums_levels_and_shares(btc_frame):
    df = btc_frame.iloc[:600]
    single = compute_features(df, {"exchange": "binance"})
    multi, m2 = compute_features_multi({"binance": df, "okx": df}, return_map=True)
    # two exchanges with the same bars: each holds its own map; the aggregate is their sum
    assert multi["liq_opened_usd"].to_numpy() == pytest.approx(
        2 * single["liq_opened_usd"].to_numpy()
    )
    lv = m2.levels()
    assert {"binance_long_usd", "okx_long_usd"} <= set(lv.columns)
    np.testing.assert_allclose(lv["long_usd"], lv["binance_long_usd"] + lv["okx_long_usd"])
    snap = m2.snapshot()
    assert snap.clusters
    for c in snap.clusters:
        assert sum(c.shares.values()) == pytest.approx(1.0)
        assert c.shares["binance"] > 0 and c.shares["okx"] > 0  # formulas differ, both present


def test_aggregation_keeps_bars_missing_from_the_reference(btc_frame):
    df = btc_frame.iloc[:300]
    holes = df.drop(index=df.index[100:110])
    res, lmap = compute_features_multi({"binance": holes, "bybit": df}, return_map=True)
    assert len(res) == len(holes)
    # bybit's bars at the reference's missing dates were processed, not dropped
    assert int(lmap.g[nb.G_NBARS]) == len(df)


def test_snapshot_clusters_agree_with_columns(btc_frame):
    res, lmap = compute_features(btc_frame, return_map=True)
    snap = lmap.snapshot()
    last = res.iloc[-1]
    longs = snap.clusters_on("long")
    if longs:
        assert longs[0].price == pytest.approx(last["liq_long_cluster_price"])
        assert longs[0].usd == pytest.approx(last["liq_long_cluster_usd"])
        assert longs[0].depth == int(last["liq_long_cascade_depth"])
    assert snap.levels["long_usd"].sum() == pytest.approx(last["liq_long_total_usd"], rel=1e-9)
