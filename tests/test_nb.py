"""Kernels against the slow pure-numpy reference (tests/reference.py), on random and edge inputs."""

from __future__ import annotations

import inspect
import re

import numpy as np
import pytest
from bars_util import random_bars
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from reference import ReferenceMap

from liqsignal import nb
from liqsignal.config import PARAM_NAMES, MapConfig
from liqsignal.engine import LiquidationMap

RTOL = 1e-9


def run_both(cfg: MapConfig, ts, x, exchanges=None, proxy=False):
    lmap = LiquidationMap(cfg, exchanges=exchanges, proxy=proxy)
    out = lmap.update(ts, x)
    ref = ReferenceMap(lmap.params, lmap.factors, lmap.weights, lmap.proxy, lmap.n_bins)
    rout = ref.run(ts, x)
    return lmap, out, ref, rout


def assert_close(out, rout, names=nb.OUT_NAMES):
    # USD columns are compared relative to the largest notional in play (a column that is
    # zero in one implementation may hold 1e-15 of rounding residue in the other).
    usd_scale = max(
        np.nanmax(np.abs(rout[names.index(c)]), initial=0.0)
        for c in ("liq_opened_usd", "liq_long_total_usd", "liq_short_total_usd")
    )
    for i, name in enumerate(names):
        b = rout[i]
        scale = np.nanmax(np.abs(b), initial=0.0)
        if name.endswith("_usd"):
            scale = max(scale, usd_scale)
        np.testing.assert_allclose(
            out[i], b, rtol=RTOL, atol=RTOL * max(scale, 1e-300), equal_nan=True, err_msg=name
        )


def test_layout_names_are_one_source():
    # positions are 0..n-1 in definition order; the name tuples are the enums' names
    assert [int(m) for m in nb.Param] == list(range(len(nb.Param)))
    assert [int(m) for m in nb.Out] == list(range(len(nb.Out)))
    assert PARAM_NAMES is nb.PARAM_NAMES == tuple(m.name for m in nb.Param)
    assert tuple(m.name for m in nb.Out) == nb.OUT_NAMES
    assert nb.N_OUT == len(set(nb.OUT_NAMES)) == len(nb.Out)
    # each side's rows are that side's columns, field f at liq_<side>_<f>
    for side, rows in (("long", nb.LONG_ROWS), ("short", nb.SHORT_ROWS)):
        for field, row in zip(nb.SideRows._fields, rows, strict=True):
            assert nb.OUT_NAMES[row] == f"liq_{side}_{field}"
    assert not set(nb.LONG_ROWS) & set(nb.SHORT_ROWS)


def test_every_output_row_is_written_on_every_bar():
    rng = np.random.default_rng(4)
    ts, x = random_bars(rng, 200, n_ex=2, vol=0.01)
    x[50:53] = np.nan  # bars no exchange has: every row NaN
    lmap = LiquidationMap(MapConfig(step=0.05), exchanges=["binance", "bybit"])
    sentinel = -1.2345e300
    out = np.full((nb.N_OUT, len(ts)), sentinel)
    lmap._allocate(float(x[0, 0, nb.I_CLOSE]))
    nb.run_nb(
        ts, x, lmap.params, lmap.factors, lmap.log_factors, lmap.weights, lmap.proxy, lmap.g,
        lmap.ex, lmap.long_raw, lmap.short_raw, lmap.work, lmap.clusters_buf, lmap.hm,
        lmap.hm_meta, out,
    )  # fmt: skip
    unwritten = [nb.OUT_NAMES[r] for r in range(nb.N_OUT) if (out[r] == sentinel).any()]
    assert unwritten == []
    assert np.isnan(out[:, 50:53]).all()


@pytest.mark.parametrize(
    ("changes", "param", "value"),
    [
        ({"scan_range_pct": 7.0}, "scan_range", 0.07),
        ({"density_band_pct": 1.5}, "density_band", 0.015),
        ({"half_life_hours": 2.0}, "half_life_s", 7200.0),
        ({"cascade_max_depth": 9}, "cascade_max_depth", 9.0),
        ({"intrabar_share": 0.25}, "intrabar_share", 0.25),
        ({"contrast_window_pct": 3.0}, "contrast_window", 0.03),
        ({"close_long_share": None}, "close_long_share", -1.0),
        ({"heatmap_bins_per_row": 3}, "heatmap_bins_per_row", 3.0),
    ],
)
def test_param_vector_is_built_by_name(changes, param, value):
    base = MapConfig(close_long_share=0.4, contrast_window_pct=None)
    cfg = base.replace(**changes)
    before, after = base.kernel_params(), cfg.kernel_params()
    assert len(after) == len(nb.Param)
    # the one setting lands at its named position, and nowhere else
    assert np.flatnonzero(before != after).tolist() == [int(nb.Param[param])]
    assert after[nb.Param[param]] == pytest.approx(value, rel=1e-12)
    assert dict(zip(PARAM_NAMES, after, strict=True))[param] == after[nb.Param[param]]


def test_every_param_is_read_by_name_in_the_kernels():
    src = inspect.getsource(nb)
    assert not re.search(r"\bp\[\d", src)  # no positional reads left
    unread = [name for name in PARAM_NAMES if f"Param.{name}]" not in src]
    assert unread == []


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    seed=st.integers(0, 2**32 - 1),
    n=st.integers(1, 120),
    vol=st.sampled_from([0.001, 0.01, 0.05]),
    relative=st.booleans(),
    n_bins=st.sampled_from([None, 40, 200]),
    churn=st.sampled_from([0.0, 0.05]),
    intrabar=st.sampled_from([0.0, 0.5, 1.0]),
    close_share=st.sampled_from([None, 0.3]),
    close_relative=st.booleans(),
)
def test_kernel_equals_reference(
    seed, n, vol, relative, n_bins, churn, intrabar, close_share, close_relative
):
    rng = np.random.default_rng(seed)
    ts, x = random_bars(rng, n, vol=vol)
    kw = {"step": None, "step_bps": 20.0} if relative else {"step": 0.05}
    cfg = MapConfig(
        **kw,
        n_bins=n_bins,
        churn_volume_share=churn,
        intrabar_share=intrabar,
        close_long_share=close_share,
        close_relative=close_relative,
        half_life_hours=float(rng.choice([1.0, 48.0])),
        smooth_half_bins=int(rng.integers(0, 3)),
        merge_gap_bins=int(rng.integers(0, 3)),
        history_bars=int(rng.integers(1, 30)),
    )
    _, out, _, rout = run_both(cfg, ts, x)
    assert_close(out, rout)


@settings(max_examples=15, deadline=None)
@given(seed=st.integers(0, 2**32 - 1), n=st.integers(1, 60))
def test_multi_exchange_kernel_equals_reference(seed, n):
    rng = np.random.default_rng(seed)
    ts, x = random_bars(rng, n, n_ex=3, vol=0.01)
    # an exchange missing some bars
    x[rng.random(n) < 0.3, 1, :] = np.nan
    cfg = MapConfig(step=0.05)
    _, out, _, rout = run_both(cfg, ts, x, exchanges=["binance", "bybit", "hyperliquid"])
    assert_close(out, rout)


def test_volume_proxy_equals_reference():
    rng = np.random.default_rng(7)
    ts, x = random_bars(rng, 80)
    x[:, :, nb.I_OI] = np.nan
    _, out, _, rout = run_both(MapConfig(step=0.05), ts, x, proxy=True)
    assert_close(out, rout)
    assert np.nansum(out[nb.OUT_NAMES.index("liq_opened_usd")]) > 0


@pytest.mark.parametrize(
    "case",
    ["one_bar", "flat", "gaps", "huge_move", "oi_to_zero", "no_bars_for_all"],
)
def test_edge_cases_equal_reference(case):
    rng = np.random.default_rng(3)
    ts, x = random_bars(rng, 60, vol=0.01, gaps=False)
    if case == "one_bar":
        ts, x = ts[:1], x[:1]
    elif case == "flat":
        x[:, :, 0:4] = 100.0
    elif case == "gaps":
        ts = ts.copy()
        ts[30:] += 30 * 86400.0
    elif case == "huge_move":
        x[30:, :, 0:4] *= 3.0
        x[45:, :, 0:4] /= 10.0
    elif case == "oi_to_zero":
        x[40:, :, nb.I_OI] = 0.0
    elif case == "no_bars_for_all":
        x[20:25] = np.nan
    lmap, out, _, rout = run_both(MapConfig(step=0.05, n_bins=300), ts, x)
    assert_close(out, rout)
    if case == "oi_to_zero":
        acc = lmap.accounting()
        # every standing level closed when OI hit zero, then only churn/decay remain
        assert out[nb.OUT_NAMES.index("liq_closed_usd")][40] > 0
        assert acc["standing_usd"] >= 0
    if case == "huge_move":
        assert out[nb.OUT_NAMES.index("liq_dropped_usd")][-1] > 0


def test_incremental_equals_full_build():
    rng = np.random.default_rng(11)
    ts, x = random_bars(rng, 400, vol=0.01)
    cfg = MapConfig(step=0.05, n_bins=120)
    full = LiquidationMap(cfg).update(ts, x)
    inc = LiquidationMap(cfg)
    parts = []
    cuts = sorted(rng.choice(np.arange(1, 400), 25, replace=False))
    start = 0
    for c in [*cuts, 400]:
        parts.append(inc.update(ts[start:c], x[start:c]))
        start = c
    # one bar at a time for the tail
    np.testing.assert_array_equal(np.concatenate(parts, axis=1), full)


def test_mass_is_conserved():
    rng = np.random.default_rng(5)
    ts, x = random_bars(rng, 500, vol=0.02)
    lmap = LiquidationMap(MapConfig(step=0.05, n_bins=100))
    lmap.update(ts, x)
    acc = lmap.accounting()
    assert acc["dropped_usd"] > 0  # the small grid loses mass at its edges, and counts it
    accounted = (
        acc["consumed_usd"]
        + acc["closed_usd"]
        + acc["decayed_usd"]
        + acc["dropped_usd"]
        + acc["standing_usd"]
    )
    assert accounted == pytest.approx(acc["opened_usd"], rel=1e-9)


def test_heatmap_is_bounded_and_ordered():
    rng = np.random.default_rng(2)
    ts, x = random_bars(rng, 300, gaps=False)
    cfg = MapConfig(step=0.05, heatmap_frames=7, heatmap_every_s=3600.0, heatmap_rows=10)
    lmap = LiquidationMap(cfg)
    lmap.update(ts, x)
    hm = lmap.heatmap()
    assert hm.long_usd.shape == (7, 10)
    assert hm.times.is_monotonic_increasing
    assert hm.times[-1].timestamp() == ts[-1]
    assert (hm.price_low < hm.closes).all() and (hm.closes < hm.price_high).all()
