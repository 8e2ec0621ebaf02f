"""MapProvider refresh cycle: 50 markets on 3 exchanges (Binance, Bybit, OKX) against local replays.

Run: ``.venv/bin/python benchmarks/bench_refresh.py [--markets 50] [--cycles 5]`` (add ``--check``
to exit 1 when the engine's share of a steady cycle is 10 % or more).

Data: the 50 markets are GENERATED from the bundled real BTC/USDT:USDT 1h slice
(``tests/testdata/replay_binance``, 1512 candles with open interest and funding): market ``k`` is
renamed ``Q<two letters>`` and its prices are rescaled by a factor from 0.001 to 3 (volumes and
OI amounts divided by it, so USD notional stays real), and each venue's open interest is scaled
(Binance 1, Bybit 0.6, OKX 0.35). Same price path for every market: speed does not depend on it.
Each venue is a replay server (``liqsignal.replay``) in this process, on 127.0.0.1, on one
manual clock that the benchmark advances one hour per cycle; the real ccxt clients talk to them
with ccxt's rate limiter at 1 ms (a real exchange's limits would add waiting, see docs/provider.md).
The servers share the process (and the GIL) with the provider, so wall times are pessimistic.

Printed per cycle: wall time, HTTP requests, engine time (``LiquidationMap.update``), time in
store writes, and the engine's share of the cycle. The first cycle fills an empty store (1000 bars
per market and exchange) and builds the maps from it; the later ones are the steady state (one new
closed bar per market and exchange).
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import shutil
import statistics
import sys
import tempfile
from pathlib import Path

import numpy as np
import pandas as pd

import liqsignal.replay.bybit
import liqsignal.replay.okx  # noqa: F401  (registers the venues)
from liqsignal.config import MapConfig
from liqsignal.data.provider import MapProvider, MarketSpec, RefreshReport
from liqsignal.replay.server import ManualClock, ReplayExchange

ROOT = Path(__file__).resolve().parents[1]
SOURCE = ROOT / "tests" / "testdata" / "replay_binance" / "futures"
VENUES = ("binance", "bybit", "okx")
OI_SCALE = {"binance": 1.0, "bybit": 0.6, "okx": 0.35}
START = pd.Timestamp("2026-02-19 20:30", tz="UTC")  # 1000+ closed bars before it


def market_names(n: int) -> list[str]:
    return [f"Q{chr(65 + k // 26)}{chr(65 + k % 26)}" for k in range(n)]  # not XBT: ccxt reads BTC


def generate(root: Path, names: list[str]) -> None:
    """One Freqtrade-layout folder per venue with ``names`` made from the BTC slice."""
    src = {
        ct: pd.read_feather(SOURCE / f"BTC_USDT_USDT-1h-{ct}.feather")
        for ct in ("futures", "funding_rate", "open_interest")
    }
    scales = np.geomspace(0.001, 3.0, len(names))
    for venue in VENUES:
        folder = root / venue / "futures"
        folder.mkdir(parents=True)
        for name, s in zip(names, scales, strict=True):
            c = src["futures"].copy()
            for col in ("open", "high", "low", "close"):
                c[col] = c[col] * s
            c["volume"] = c["volume"] / s
            oi = src["open_interest"].copy()
            oi["open_interest_amount"] = oi["open_interest_amount"] / s * OI_SCALE[venue]
            oi["open_interest_value"] = oi["open_interest_value"] * OI_SCALE[venue]
            pair = f"{name}_USDT_USDT"
            c.to_feather(folder / f"{pair}-1h-futures.feather")
            oi.to_feather(folder / f"{pair}-1h-open_interest.feather")
            src["funding_rate"].to_feather(folder / f"{pair}-1h-funding_rate.feather")


def line(label: str, r: RefreshReport) -> str:
    bars = sum(r.new_bars.values())
    return (
        f"{label:<9} wall {r.wall_s:7.3f} s  requests {r.requests:5d}  new bars {bars:6d}  "
        f"engine {r.engine_s * 1000:8.2f} ms ({r.engine_s / r.wall_s:6.2%})  "
        f"store writes {r.store_s:6.2f} s (2 writer threads)  errors {len(r.errors)}"
    )


async def run(n_markets: int, cycles: int, history_bars: int) -> list[RefreshReport]:
    names = market_names(n_markets)
    tmp = Path(tempfile.mkdtemp(prefix="bench_refresh_"))
    try:
        generate(tmp / "venues", names)
        clock = ManualClock(START)
        servers = {}
        cfg = {}
        for venue in VENUES:
            rx = ReplayExchange(tmp / "venues" / venue, venues=(venue,)).start()
            rx.clock = clock
            servers[venue] = rx
            c = rx.ccxt_config(venue)
            c.update({"rateLimit": 1, "timeout": 30_000})
            cfg[venue] = c
        provider = MapProvider(
            [MarketSpec(n, VENUES) for n in names],
            config=MapConfig(step=None, step_bps=10.0),  # relative grid: prices differ widely
            datadir=tmp / "store",
            ccxt_config=cfg,
            history_bars=history_bars,
            max_concurrency=8,
            clock=clock,
            history_limits=False,
        )
        reports = []
        try:
            first = await provider.refresh()
            print(line("fill", first), flush=True)
            reports.append(first)
            for i in range(cycles):
                clock.t += pd.Timedelta(hours=1)
                r = await provider.refresh()
                print(line(f"cycle {i + 1}", r), flush=True)
                reports.append(r)
            snap = provider.snapshot(names[0], scan_range_pct=30.0)
            shares = snap.clusters[0].shares if snap.clusters else {}
            print(f"{names[0]}: {len(snap.clusters)} clusters; nearest shares {shares}")
        finally:
            await provider.aclose()
            for rx in servers.values():
                rx.stop()
        return reports
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--markets", type=int, default=50)
    ap.add_argument("--cycles", type=int, default=5)
    ap.add_argument("--history-bars", type=int, default=1000)
    ap.add_argument("--check", action="store_true")
    args = ap.parse_args()
    logging.basicConfig(level=logging.WARNING)
    print(
        f"{args.markets} markets x {len(VENUES)} exchanges, 1h, history {args.history_bars} bars, "
        "local replay servers in-process, ccxt rateLimit 1 ms"
    )
    reports = asyncio.run(run(args.markets, args.cycles, args.history_bars))
    steady = reports[1:]
    if steady:
        wall = statistics.median(r.wall_s for r in steady)
        eng = statistics.median(r.engine_s for r in steady)
        req = statistics.median(r.requests for r in steady)
        share = statistics.median(r.engine_s / r.wall_s for r in steady)
        print(
            f"steady cycle (median of {len(steady)}): wall {wall:.3f} s, {req:.0f} requests, "
            f"engine {eng * 1000:.2f} ms = {share:.2%} of the cycle"
        )
        if args.check and share >= 0.10:
            print("FAIL: engine share of the cycle >= 10 %")
            return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
