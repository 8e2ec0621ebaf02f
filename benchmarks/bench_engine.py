"""Engine speed and memory, each figure printed with its ratio to a baseline run in the same run.

Run: ``.venv/bin/python benchmarks/bench_engine.py`` (add ``--check`` to exit 1 when a target
is missed). Input: one year of 1-minute bars (525,600) made from the bundled real Binance
BTC/USDT:USDT 5m candles of 2023-2024 (user_data/data/binance_2023_2024), relabelled at 1-minute
spacing; open interest is not in that data, so cumulative signed volume stands in for it
(speed does not depend on its values). Grid: default 50 USD step with 2,400 bins, default 10
leverage tiers. Baseline: the pure-numpy reference model (tests/reference.py) on the first bars.

Other data, same run: one year of synthetic 1-minute bars with small ranges and an open-interest
random walk (``synthetic_small_range_minutes``: a price walk from 100 USD with 3 bps moves and
1 bp wicks, so the 50 USD step gives way to the relative 5 bps grid, as on any low-priced
market), printed with its ratio to the real series.
"""

from __future__ import annotations

import argparse
import gc
import statistics
import sys
import time
from pathlib import Path

import numpy as np
import pandas as pd

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tests"))

from reference import ReferenceMap  # noqa: E402

from liqsignal.config import MapConfig  # noqa: E402
from liqsignal.engine import LiquidationMap  # noqa: E402
from liqsignal.features import _seconds, compute_features, prepare_inputs  # noqa: E402

N_BARS = 525_600
DATA = (
    ROOT
    / "user_data"
    / "data"
    / "binance_2023_2024"
    / "futures"
    / "BTC_USDT_USDT-5m-futures.feather"
)


def one_year_of_minutes() -> pd.DataFrame:
    d = pd.read_feather(DATA)
    reps = -(-N_BARS // len(d))
    df = pd.concat([d] * reps, ignore_index=True).iloc[:N_BARS].copy()
    df["date"] = pd.date_range("2023-01-01", periods=N_BARS, freq="1min", tz="UTC")
    signed = np.where(df["close"] >= df["open"], 1.0, -1.0) * df["volume"]
    df["open_interest_amount"] = 100_000.0 + np.cumsum(signed) * 0.05
    df["open_interest_amount"] -= min(0.0, df["open_interest_amount"].min()) - 1000.0
    return df


def synthetic_small_range_minutes(n: int = N_BARS, seed: int = 14) -> pd.DataFrame:
    """``n`` synthetic 1-minute bars: a price walk from 100 USD (3 bps per minute), wicks of
    about 1 bp beyond open / close, exponential volume and an OI random walk (kept > 0)."""
    rng = np.random.default_rng(seed)
    close = 100.0 * np.exp(np.cumsum(rng.normal(0.0, 3e-4, n)))
    open_ = np.concatenate([[100.0], close[:-1]])
    high = np.maximum(open_, close) * (1.0 + np.abs(rng.normal(0.0, 1e-4, n)))
    low = np.minimum(open_, close) * (1.0 - np.abs(rng.normal(0.0, 1e-4, n)))
    oi = 3.0e7 + np.cumsum(rng.normal(0.0, 15_000.0, n))
    oi -= min(0.0, float(oi.min())) - 3.0e5
    return pd.DataFrame(
        {
            "date": pd.date_range("2023-01-01", periods=n, freq="1min", tz="UTC"),
            "open": open_,
            "high": high,
            "low": low,
            "close": close,
            "volume": rng.exponential(15_000.0, n),
            "open_interest_amount": oi,
        }
    )


def best_of(fn, repeat: int = 3) -> float:
    times = []
    for _ in range(repeat):
        gc.collect()
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return min(times)


def best_of_pair(fn_a, fn_b, repeat: int = 3) -> tuple[float, float]:
    """Best times of ``fn_a`` and ``fn_b`` over ``repeat`` rounds, alternating their order."""
    ta: list[float] = []
    tb: list[float] = []
    for i in range(repeat):
        for fn, times in ((fn_a, ta), (fn_b, tb)) if i % 2 == 0 else ((fn_b, tb), (fn_a, ta)):
            gc.collect()
            t0 = time.perf_counter()
            fn()
            times.append(time.perf_counter() - t0)
    return min(ta), min(tb)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--check", action="store_true", help="exit 1 when a target is missed")
    ap.add_argument("--reference-bars", type=int, default=3000)
    a = ap.parse_args()
    df = one_year_of_minutes()
    cfg = MapConfig(n_bins=2400)
    x = prepare_inputs(df, proxy=False)[:, None, :]
    ts = _seconds(df["date"])
    # compile / warm the cache
    LiquidationMap(cfg).update(ts[:2000], x[:2000])

    # other data: the synthetic small-range series, same config, timed interleaved with the
    # real one (so a change of load on the machine moves both)
    syn = synthetic_small_range_minutes()
    xs = prepare_inputs(syn, proxy=False)[:, None, :]
    tss = _seconds(syn["date"])
    syn_map = LiquidationMap(cfg)
    syn_map.update(tss[:2000], xs[:2000])
    t_kernel, t_syn_kernel = best_of_pair(
        lambda: LiquidationMap(cfg).update(ts, x), lambda: LiquidationMap(cfg).update(tss, xs)
    )
    t_full, t_syn_full = best_of_pair(
        lambda: compute_features(df, cfg), lambda: compute_features(syn, cfg), repeat=2
    )
    nr = a.reference_bars

    def run_ref() -> None:
        m = LiquidationMap(cfg)
        m._allocate(float(x[0, 0, 3]))
        ReferenceMap(m.params, m.factors, m.weights, m.proxy, m.n_bins).run(ts[:nr], x[:nr])

    t_ref = best_of(run_ref, repeat=1)
    # the first version's rules (absolute closes, 5 % turnover, scan-mean pockets), same run
    first = cfg.replace(close_relative=False, churn_volume_share=0.05, contrast_window_pct=None)
    LiquidationMap(first).update(ts[:2000], x[:2000])
    t_first = best_of(lambda: LiquidationMap(first).update(ts, x))
    kernel_rate = N_BARS / t_kernel
    full_rate = N_BARS / t_full
    ref_rate = nr / t_ref

    # incremental update, one bar, Python call included
    m = LiquidationMap(cfg)
    m.update(ts[:10_000], x[:10_000])
    lat = []
    for i in range(10_000, 30_000):
        t0 = time.perf_counter_ns()
        m.update(ts[i : i + 1], x[i : i + 1])
        lat.append(time.perf_counter_ns() - t0)
    med_us = statistics.median(lat) / 1000
    p99_us = float(np.percentile(lat, 99)) / 1000
    # baseline for the call: an empty numpy call of the same shape of work (array creation)
    base = []
    for _ in range(20_000):
        t0 = time.perf_counter_ns()
        np.empty((31, 1))
        base.append(time.perf_counter_ns() - t0)
    empty_us = statistics.median(base) / 1000

    lm = LiquidationMap(cfg)
    lm.update(ts[:1000], x[:1000])
    state = lm.nbytes - lm.hm.nbytes - lm.hm_meta.nbytes
    feats = compute_features(df.iloc[:100_000], cfg)
    per_bar = feats.memory_usage(index=False).sum() / len(feats)

    print(
        f"bars: {N_BARS:,} (1-minute), grid bins: {lm.n_bins}, leverage tiers: {len(cfg.leverages)}"
    )
    print(f"kernel full build:        {t_kernel:8.3f} s  {kernel_rate:12,.0f} bars/s")
    print(f"compute_features (pandas):{t_full:8.3f} s  {full_rate:12,.0f} bars/s")
    print(f"numpy reference ({nr:,} bars):{t_ref:6.3f} s  {ref_rate:12,.0f} bars/s")
    print(f"ratio kernel / reference: {kernel_rate / ref_rate:10.1f}x")
    print(
        f"first version's rules:    {t_first:8.3f} s  {N_BARS / t_first:12,.0f} bars/s "
        f"(defaults / first version time ratio {t_kernel / t_first:.3f})"
    )
    syn_grid = "relative" if syn_map.config.grid_mode == 1 else "absolute"
    print(
        f"synthetic small-range 1m ({N_BARS:,} bars, {syn_grid} grid, {syn_map.n_bins} bins): "
        f"kernel {N_BARS / t_syn_kernel:,.0f} bars/s ({t_kernel / t_syn_kernel:.3f} of the real "
        f"series' rate), compute_features {N_BARS / t_syn_full:,.0f} bars/s "
        f"({t_full / t_syn_full:.3f} of the real series' rate)"
    )
    print(
        f"incremental update, 1 bar: median {med_us:.2f} us, p99 {p99_us:.2f} us "
        f"(empty numpy call {empty_us:.2f} us)"
    )
    hm_kib = (lm.hm.nbytes + lm.hm_meta.nbytes) / 1024
    print(
        f"memory: state {state / 1024:.1f} KiB for {lm.n_bins} bins "
        f"({state / lm.n_bins:.1f} B/bin), heatmap buffer {hm_kib:.0f} KiB "
        f"(cap {cfg.heatmap_frames} frames), features {per_bar:.0f} B/bar"
    )
    checks = {
        "kernel >= 1,000,000 bars/s": kernel_rate >= 1_000_000,
        "kernel >= 100x reference": kernel_rate / ref_rate >= 100,
        "update median < 20 us": med_us < 20,
    }
    for name, ok in checks.items():
        print(f"{'PASS' if ok else 'MISS'}  {name}")
    return 0 if (all(checks.values()) or not a.check) else 1


if __name__ == "__main__":
    sys.exit(main())
