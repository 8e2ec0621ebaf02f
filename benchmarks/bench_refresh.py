"""MapProvider refresh cycle: N markets on 3 exchanges (Binance, Bybit, OKX) against local replays.

Run: ``.venv/bin/python benchmarks/bench_refresh.py [--markets 500] [--timeframe 1m] [--cycles 3]
[--history-bars 300] [--rate-limit-ms ccxt|1] [--max-concurrency 8] [--candles rest|ws]
[--at-settlement] [--profile] [--check]``.

Data: the markets are GENERATED from the bundled real BTC/USDT:USDT 1h slice
(``tests/testdata/replay_binance``, 1512 candles with funding): market ``k`` is renamed
``Q<letters>`` and its prices rescaled by a factor from 0.001 to 3 (volumes divided by it, so USD
notional stays real); the candles are relabelled to the benchmark's timeframe (one bar per
``--timeframe``, the same price path), funding keeps its 8h rows. Each venue is a replay server
(``liqsignal.replay``) in this process, on 127.0.0.1, on one manual clock that the benchmark
advances one bar per cycle. The real ccxt clients talk to them with ccxt's own ``rateLimit`` per
exchange (Binance USD-M 50 ms, Bybit 20 ms, OKX 110 ms per unit of ccxt's endpoint cost) and at
most ``--max-concurrency`` requests in flight per exchange; ``--rate-limit-ms 1`` sets 1 ms
instead (what the machine can do when the exchanges' limits are not the bound). The servers run
in a child process (``--servers process``, the default: like remote exchanges they take no CPU
time of the provider's process, but they share the machine's two cores with it) or in this one
(``--servers thread``: they share its GIL, and the peak memory counts them).

First a single market is filled and refreshed (the baseline), then the N markets. Printed per
cycle: wall time, HTTP requests, engine time (``LiquidationMap.update``), store time (queueing,
the journal commit with its fsyncs, compactions), their shares, markets rebuilt from every
stored row and markets replayed from their checkpoint, then the requests per market by exchange
and endpoint path; for the steady state (one new
closed bar per market and exchange) the median, the ratios to the single-market cycle, the
rate-limit floor (per exchange: the sum of ccxt's cost x ``rateLimit`` over that cycle's
requests, the time ccxt's throttle alone needs), and the peak resident memory of the process.
"""

from __future__ import annotations

import argparse
import asyncio
import cProfile
import io
import logging
import multiprocessing
import pstats
import resource
import shutil
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from multiprocessing.connection import Connection
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

import liqsignal.replay.bybit
import liqsignal.replay.okx  # noqa: F401  (registers the venues)
from liqsignal.config import MapConfig
from liqsignal.data.exchanges import timeframe_to_ms
from liqsignal.data.provider import MapProvider, MarketSpec, RefreshReport
from liqsignal.replay.server import ManualClock, ReplayExchange

ROOT = Path(__file__).resolve().parents[1]
SOURCE = ROOT / "tests" / "testdata" / "replay_binance" / "futures"
VENUES = ("binance", "bybit", "okx")


def market_names(n: int) -> list[str]:
    """``QAAA`` ... (three letters: up to 17,576 markets; never a real coin ccxt remaps)."""
    return [f"Q{chr(65 + k // 676)}{chr(65 + k // 26 % 26)}{chr(65 + k % 26)}" for k in range(n)]


def generate(
    root: Path, names: list[str], timeframe: str, at_settlement: bool = False
) -> pd.Timestamp:
    """One Freqtrade-layout folder per venue; returns the clock's start (``history`` bars of
    room before it, about 100 bars after it; ``at_settlement``: one bar before the first funding
    settlement after that, so the steady cycles start as every market's funding falls due)."""
    src_c = pd.read_feather(SOURCE / "BTC_USDT_USDT-1h-futures.feather")
    src_f = pd.read_feather(SOURCE / "BTC_USDT_USDT-1h-funding_rate.feather")
    tf = pd.Timedelta(milliseconds=timeframe_to_ms(timeframe))
    end = pd.Timestamp("2026-02-20", tz="UTC")
    dates = end - tf * np.arange(len(src_c))[::-1]
    candles = src_c.assign(date=pd.DatetimeIndex(dates).as_unit("ms"))
    # funding every 8h over the relabelled span, the source's rates in turn
    f_dates = pd.date_range(end - tf * len(src_c) - pd.Timedelta(hours=8), end, freq="8h")
    rates = np.resize(src_f["funding_rate"].to_numpy(), len(f_dates))
    funding = pd.DataFrame({"date": f_dates.as_unit("ms"), "funding_rate": rates})
    scales = np.geomspace(0.001, 3.0, len(names))
    for venue in VENUES:
        folder = root / venue / "futures"
        folder.mkdir(parents=True)
        for name, s in zip(names, scales, strict=True):
            c = candles.copy()
            for col in ("open", "high", "low", "close"):
                c[col] = c[col] * s
            c["volume"] = c["volume"] / s
            pair = f"{name}_USDT_USDT"
            c.to_feather(folder / f"{pair}-{timeframe}-futures.feather")
            funding.to_feather(folder / f"{pair}-1h-funding_rate.feather")
    start = pd.Timestamp(end - tf * 100)
    if at_settlement:
        start = pd.Timestamp(f_dates[f_dates > start][0]) - tf
    return start


def _serve(venues: Path, start: pd.Timestamp, conn: Connection) -> None:
    """The replay servers of a separate process: their ccxt settings out, clock times in."""
    clock = ManualClock(start)
    servers = []
    configs = {}
    for venue in VENUES:
        rx = ReplayExchange(venues / venue, venues=(venue,)).start()
        rx.clock = clock
        servers.append(rx)
        configs[venue] = rx.ccxt_config(venue)
    conn.send(configs)
    while (msg := conn.recv()) is not None:
        clock.t = msg
        conn.send("ok")
    for rx in servers:
        rx.stop()


class Venues:
    """The three replay servers on one manual clock: in this process (``"thread"``: they share
    its GIL with the provider) or in a child process (``"process"``: as remote exchanges are,
    they cost the provider no CPU time, though they still share the machine's two cores)."""

    def __init__(self, venues: Path, start: pd.Timestamp, mode: str) -> None:
        self.proc: multiprocessing.process.BaseProcess | None = None
        self.servers: list[ReplayExchange] = []
        if mode == "process":
            ours, theirs = multiprocessing.get_context("fork").Pipe()
            self.proc = multiprocessing.get_context("fork").Process(
                target=_serve, args=(venues, start, theirs), daemon=True
            )
            self.proc.start()
            self.conn = ours
            self.configs: dict[str, dict[str, Any]] = ours.recv()
            return
        self.clock = ManualClock(start)
        self.configs = {}
        for venue in VENUES:
            rx = ReplayExchange(venues / venue, venues=(venue,)).start()
            rx.clock = self.clock
            self.servers.append(rx)
            self.configs[venue] = rx.ccxt_config(venue)

    def set_clock(self, t: pd.Timestamp) -> None:
        if self.proc is not None:
            self.conn.send(t)
            assert self.conn.recv() == "ok"
        else:
            self.clock.t = t

    def stop(self) -> None:
        if self.proc is not None:
            self.conn.send(None)
            self.proc.join(timeout=30)
        for rx in self.servers:
            rx.stop()


class CostMeter:
    """ccxt's throttle cost of every request, per exchange (cost x rateLimit = ms it waits),
    and the requests per exchange and endpoint path."""

    def __init__(self, provider: MapProvider) -> None:
        self.ms: dict[str, float] = dict.fromkeys(provider._clients, 0.0)
        self.paths: dict[tuple[str, str], int] = {}
        for ex, client in provider._clients.items():
            api = client.api
            orig: Callable[..., Any] = api.calculate_rate_limiter_cost

            def wrapped(*a: Any, _ex: str = ex, _o: Any = orig, _api: Any = api, **k: Any) -> Any:
                cost = _o(*a, **k)
                self.ms[_ex] += float(cost) * float(_api.rateLimit)
                path = str(a[2] if len(a) > 2 else k.get("path", "?"))
                self.paths[(_ex, path)] = self.paths.get((_ex, path), 0) + 1
                return cost

            api.calculate_rate_limiter_cost = wrapped

    def take(self) -> dict[str, float]:
        out, self.ms = self.ms, dict.fromkeys(self.ms, 0.0)
        return out

    def take_paths(self) -> dict[tuple[str, str], int]:
        out, self.paths = self.paths, {}
        return out


def request_line(paths: dict[tuple[str, str], int], markets: int) -> str:
    """Requests per exchange (and per market) and endpoint of one cycle."""
    per_ex: dict[str, list[str]] = {}
    for (ex, path), n in sorted(paths.items()):
        per_ex.setdefault(ex, []).append(f"{path} {n / markets:g}")
    return "; ".join(
        f"{ex} {sum(n for (e, _), n in paths.items() if e == ex) / markets:g} ({', '.join(v)})"
        for ex, v in per_ex.items()
    )


def line(label: str, r: RefreshReport, floor: dict[str, float]) -> str:
    bars = sum(r.new_bars.values())
    worst = max(floor, key=lambda e: floor[e]) if floor else "-"
    return (
        f"{label:<9} wall {r.wall_s:8.3f} s  requests {r.requests:5d}  new bars {bars:7d}  "
        f"engine {r.engine_s * 1000:9.2f} ms ({r.engine_s / r.wall_s:6.2%})  "
        f"store {r.store_s:7.3f} s ({r.store_s / r.wall_s:6.2%})  "
        f"throttle floor {floor.get(worst, 0.0) / 1000:7.2f} s ({worst})  "
        f"rebuilt {len(r.rebuilt)}  replayed {len(r.replayed)}  errors {len(r.errors)}"
    )


async def run_provider(
    label: str,
    names: list[str],
    venues: Path,
    store: Path,
    args: argparse.Namespace,
    start: pd.Timestamp,
) -> tuple[list[RefreshReport], list[dict[str, float]], MapProvider]:
    clock = ManualClock(start)
    venues_srv = Venues(venues, start, args.servers)
    provider = bench_provider(names, venues_srv.configs, store, args, clock)
    meter = CostMeter(provider)
    tf = pd.Timedelta(milliseconds=timeframe_to_ms(args.timeframe))
    reports: list[RefreshReport] = []
    floors: list[dict[str, float]] = []
    try:
        r = await provider.refresh()
        floors.append(meter.take())
        print(line(f"{label} fill", r, floors[-1]), flush=True)
        meter.take_paths()
        reports.append(r)
        for i in range(args.cycles):
            clock.t += tf
            venues_srv.set_clock(clock.t)
            last = i == args.cycles - 1
            r = await refresh_profiled(provider, args.profile and last and len(names) > 1)
            floors.append(meter.take())
            print(line(f"{label} {i + 1}", r, floors[-1]), flush=True)
            print(
                f"{'':<9} requests per market: {request_line(meter.take_paths(), len(names))}",
                flush=True,
            )
            reports.append(r)
    finally:
        t = time.perf_counter()
        await provider.aclose()
        print(f"{label} close (compaction of the journals): {time.perf_counter() - t:.3f} s")
        venues_srv.stop()
    return reports, floors, provider


def steady(reports: list[RefreshReport]) -> dict[str, float]:
    s = reports[1:]
    return {
        "wall": statistics.median(r.wall_s for r in s),
        "engine": statistics.median(r.engine_s for r in s),
        "store": statistics.median(r.store_s for r in s),
        "requests": statistics.median(r.requests for r in s),
    }


def bench_provider(
    names: list[str],
    configs: dict[str, dict[str, Any]],
    store: Path,
    args: argparse.Namespace,
    clock: ManualClock,
    **extra: Any,
) -> MapProvider:
    """The benchmarks' provider: ``names`` on the three venues at ``configs`` (the replays'
    ccxt settings, with ``--rate-limit-ms``), a relative grid, the manual clock."""
    cfg = {}
    for venue, c in configs.items():
        c["timeout"] = 120_000
        if args.rate_limit_ms != "ccxt":
            c["rateLimit"] = int(args.rate_limit_ms)
        cfg[venue] = c
    return MapProvider(
        [MarketSpec(n, VENUES, args.timeframe) for n in names],
        config=MapConfig(step=None, step_bps=10.0),  # relative grid: prices differ widely
        datadir=store,
        ccxt_config=cfg,
        history_bars=args.history_bars,
        max_concurrency=args.max_concurrency,
        clock=clock,
        history_limits=False,
        **extra,
    )


async def refresh_profiled(provider: MapProvider, profile: bool) -> RefreshReport:
    """``provider.refresh()``, under cProfile when ``profile`` (the top functions printed)."""
    if not profile:
        return await provider.refresh()
    prof = cProfile.Profile()
    prof.enable()
    try:
        r = await provider.refresh()
    finally:
        prof.disable()
    buf = io.StringIO()
    st = pstats.Stats(prof, stream=buf)
    st.sort_stats("tottime").print_stats(20)
    st.sort_stats("cumulative").print_stats(r"liqsignal|ccxt/async_support/base", 30)
    print(buf.getvalue())
    return r


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--markets", type=int, default=500)
    ap.add_argument("--timeframe", default="1m")
    ap.add_argument("--cycles", type=int, default=3)
    ap.add_argument("--history-bars", type=int, default=300)
    ap.add_argument("--max-concurrency", type=int, default=8)
    ap.add_argument(
        "--rate-limit-ms",
        default="ccxt",
        help="'ccxt' (each exchange's own rateLimit, the default) or milliseconds for all",
    )
    ap.add_argument(
        "--servers",
        choices=("process", "thread"),
        default="process",
        help="replay servers in a child process (default) or in this one",
    )
    ap.add_argument(
        "--candles",
        choices=("rest", "ws"),
        default="rest",
        help="candles by REST polling (default) or over the venues' kline streams "
        "(bench_refresh_ws.py)",
    )
    ap.add_argument(
        "--at-settlement",
        action="store_true",
        help="start the steady cycles at a funding settlement (every market's funding due)",
    )
    ap.add_argument("--profile", action="store_true", help="cProfile the last N-market cycle")
    ap.add_argument(
        "--check", action="store_true", help="exit 1 when store+engine is 10 %% or more of a cycle"
    )
    args = ap.parse_args()
    if args.cycles < 1 or args.markets < 1:
        ap.error("--markets and --cycles must be at least 1")
    logging.basicConfig(level=logging.WARNING)
    if args.candles == "ws":
        sys.path.insert(0, str(Path(__file__).resolve().parent))
        import bench_refresh_ws

        shared = {"market_names": market_names, "generate": generate, "CostMeter": CostMeter}
        shared.update(line=line, steady=steady, refresh_profiled=refresh_profiled)
        shared.update(bench_provider=bench_provider)
        return bench_refresh_ws.main(argparse.Namespace(**shared), args)
    names = market_names(args.markets)
    tmp = Path(tempfile.mkdtemp(prefix="bench_refresh_"))
    try:
        start = generate(tmp / "venues", names, args.timeframe, args.at_settlement)
        where = "a child" if args.servers == "process" else "this"
        rl = "ccxt's rateLimit" if args.rate_limit_ms == "ccxt" else f"{args.rate_limit_ms} ms"
        print(
            f"{args.markets} markets x {len(VENUES)} exchanges, {args.timeframe}, history "
            f"{args.history_bars} bars, replay servers in {where} process, {rl}, at most "
            f"{args.max_concurrency} requests in flight per exchange"
        )
        one, _, _ = asyncio.run(
            run_provider("1 market", names[:1], tmp / "venues", tmp / "store1", args, start)
        )
        many, floors, provider = asyncio.run(
            run_provider(f"{args.markets} mkts", names, tmp / "venues", tmp / "store", args, start)
        )
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # KiB on Linux
    maps = sum(m.lmap.nbytes for m in provider._markets.values() if m.lmap is not None)
    s1, sn = steady(one), steady(many)
    floor = statistics.median(max(f.values()) for f in floors[1:]) / 1000
    feeds = args.markets * len(VENUES)
    share = (sn["store"] + sn["engine"]) / sn["wall"]
    print(
        f"first fill ({args.markets} markets): {many[0].wall_s:.3f} s, {many[0].requests} "
        f"requests; single market: {one[0].wall_s:.3f} s"
    )
    print(
        f"steady cycle (median of {len(many) - 1}): wall {sn['wall']:.3f} s, "
        f"{sn['requests']:.0f} requests, store {sn['store']:.3f} s + engine "
        f"{sn['engine'] * 1000:.2f} ms = {share:.2%} of the cycle; the slowest exchange's "
        f"throttle floor {floor:.2f} s"
    )
    print(
        f"single-market steady cycle: wall {s1['wall']:.3f} s, {s1['requests']:.0f} requests, "
        f"store {s1['store'] * 1000:.1f} ms, engine {s1['engine'] * 1000:.2f} ms"
    )
    print(
        f"ratios N / 1 market: wall x{sn['wall'] / s1['wall']:.1f} for x{args.markets} markets "
        f"(per feed {sn['wall'] / feeds * 1000:.2f} ms vs {s1['wall'] / len(VENUES) * 1000:.2f} "
        f"ms), requests x{sn['requests'] / max(s1['requests'], 1):.1f}, store "
        f"x{sn['store'] / max(s1['store'], 1e-9):.1f}, engine "
        f"x{sn['engine'] / max(s1['engine'], 1e-9):.1f}"
    )
    print(
        f"peak resident memory of the process: {rss:.0f} MiB "
        f"({'without' if args.servers == 'process' else 'with'} the replay servers); "
        f"engine state of the {args.markets} maps: {maps / 2**20:.1f} MiB"
    )
    if args.check and share >= 0.10:
        print("FAIL: store + engine share of the steady cycle >= 10 %")
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
