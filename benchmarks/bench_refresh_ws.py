"""``bench_refresh.py --candles ws``: the refresh cycle with candles from the venues' kline
streams (``MapProvider(candle_streams=...)``) instead of REST polling.

The same generated markets, replay venues, manual clock and ccxt clients as the REST benchmark
(``bench_refresh.py``); each venue also runs a kline stream server
(``liqsignal.replay.ws_candles``) on the replay's data and clock, and the provider's ccxt.pro
clients subscribe to every market there (Binance 200 streams per SUBSCRIBE on one connection,
Bybit 10 topics per request, OKX 100 channels per request: ``liqsignal.data.candle_streams
.LIMITS``). REST keeps ccxt's real ``rateLimit`` (unless ``--rate-limit-ms``) and serves the
first fill, funding when due and any bar a stream lacks. After the fill the benchmark waits
until every stream is subscribed; each cycle then moves the clock one bar (the stream servers
push the closed bar within their 20 ms poll) and refreshes.

Printed: the per-cycle lines of the REST benchmark, REST requests per venue per cycle, bars
taken from the streams and REST backfills, and the same summary (first fill, steady cycle wall,
store + engine share, ratios to the single-market cycle, peak memory).
"""

from __future__ import annotations

import argparse
import asyncio
import multiprocessing
import resource
import shutil
import statistics
import tempfile
import time
from multiprocessing.connection import Connection
from pathlib import Path
from typing import Any

import pandas as pd

from liqsignal.data.exchanges import timeframe_to_ms
from liqsignal.data.provider import MapProvider, RefreshReport
from liqsignal.replay.server import ManualClock, ReplayExchange
from liqsignal.replay.ws_candles import CandleStreamServer

VENUES = ("binance", "bybit", "okx")


def _serve(venues: Path, start: pd.Timestamp, conn: Connection) -> None:
    """Replay REST servers and kline stream servers of a child process on one manual clock."""
    clock = ManualClock(start)
    servers: list[Any] = []
    configs = {}
    for venue in VENUES:
        rx = ReplayExchange(venues / venue, venues=(venue,)).start()
        rx.clock = clock
        ws = CandleStreamServer(rx, venue).start()
        servers += [ws, rx]
        configs[venue] = ws.ccxt_config()
    conn.send(configs)
    while (msg := conn.recv()) is not None:
        if isinstance(msg, str) and msg == "stats":
            conn.send({s.venue: s.topics() for s in servers if isinstance(s, CandleStreamServer)})
            continue
        clock.t = msg
        conn.send("ok")
    for s in servers:
        s.stop()


class StreamVenues:
    """The three venues (REST and kline streams) in a child process, on one manual clock."""

    def __init__(self, venues: Path, start: pd.Timestamp) -> None:
        ctx = multiprocessing.get_context("fork")
        ours, theirs = ctx.Pipe()
        self.proc = ctx.Process(target=_serve, args=(venues, start, theirs), daemon=True)
        self.proc.start()
        self.conn = ours
        self.configs: dict[str, dict[str, Any]] = ours.recv()

    def set_clock(self, t: pd.Timestamp) -> None:
        self.conn.send(t)
        assert self.conn.recv() == "ok"

    def topics(self) -> dict[str, int]:
        self.conn.send("stats")
        out: dict[str, int] = self.conn.recv()
        return out

    def stop(self) -> None:
        self.conn.send(None)
        self.proc.join(timeout=30)


async def run_provider(
    bench: Any,
    label: str,
    names: list[str],
    venues: Path,
    store: Path,
    args: argparse.Namespace,
    start: pd.Timestamp,
) -> tuple[list[RefreshReport], list[dict[str, float]], list[dict[str, int]], MapProvider]:
    clock = ManualClock(start)
    srv = StreamVenues(venues, start)
    provider = bench.bench_provider(names, srv.configs, store, args, clock, candle_streams=VENUES)
    meter = bench.CostMeter(provider)
    tf = pd.Timedelta(milliseconds=timeframe_to_ms(args.timeframe))
    reports: list[RefreshReport] = []
    floors: list[dict[str, float]] = []
    per_venue: list[dict[str, int]] = []

    def calls() -> dict[str, int]:
        return {ex: c.stats.calls for ex, c in provider._clients.items()}

    try:
        c0 = calls()
        r = await provider.refresh()
        floors.append(meter.take())
        c1 = calls()
        per_venue.append({ex: c1[ex] - c0[ex] for ex in c1})
        print(bench.line(f"{label} fill", r, floors[-1]), flush=True)
        reports.append(r)
        t = time.perf_counter()
        while not all(provider._candles_live(n, v) for n in names for v in VENUES):
            if time.perf_counter() - t > 120:
                raise RuntimeError("streams not subscribed within 120 s")
            await asyncio.sleep(0.05)
        await asyncio.sleep(0.5)  # the subscriptions' answers and first forming candles
        print(
            f"{label}: every stream subscribed {time.perf_counter() - t:.2f} s after the fill; "
            f"topics per venue {srv.topics()}",
            flush=True,
        )
        for i in range(args.cycles):
            clock.t += tf
            srv.set_clock(clock.t)
            c0 = calls()
            bars0 = dict(provider.stream_bars)
            fills0 = dict(provider.stream_backfills)
            profile = args.profile and i == args.cycles - 1 and len(names) > 1
            r = await bench.refresh_profiled(provider, profile)
            floors.append(meter.take())
            c1 = calls()
            per_venue.append({ex: c1[ex] - c0[ex] for ex in c1})
            print(bench.line(f"{label} {i + 1}", r, floors[-1]), flush=True)
            print(
                f"{'':9} REST requests per venue {per_venue[-1]}; bars from the streams "
                f"{ {v: provider.stream_bars[v] - bars0[v] for v in VENUES} }; REST backfills "
                f"{ {v: provider.stream_backfills[v] - fills0[v] for v in VENUES} }",
                flush=True,
            )
            reports.append(r)
        stats = {k: v for s in provider._candle_streams for k, v in s.stats().items()}
        print(f"{label}: streams {stats}")
    finally:
        t0 = time.perf_counter()
        await provider.aclose()
        print(
            f"{label} close (streams, compaction of the journals): {time.perf_counter() - t0:.3f} s"
        )
        srv.stop()
    return reports, floors, per_venue, provider


def main(bench: Any, args: argparse.Namespace) -> int:
    names = bench.market_names(args.markets)
    tmp = Path(tempfile.mkdtemp(prefix="bench_refresh_ws_"))
    try:
        start = bench.generate(tmp / "venues", names, args.timeframe, args.at_settlement)
        rl = "ccxt's rateLimit" if args.rate_limit_ms == "ccxt" else f"{args.rate_limit_ms} ms"
        print(
            f"{args.markets} markets x {len(VENUES)} exchanges, {args.timeframe}, candles over "
            f"the kline streams, REST at {rl} for the fill, funding and backfills, history "
            f"{args.history_bars} bars, replay servers in a child process"
        )
        one, _, _, _ = asyncio.run(
            run_provider(bench, "1 market", names[:1], tmp / "venues", tmp / "s1", args, start)
        )
        many, floors, per_venue, provider = asyncio.run(
            run_provider(
                bench, f"{args.markets} mkts", names, tmp / "venues", tmp / "s", args, start
            )
        )
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    s1, sn = bench.steady(one), bench.steady(many)
    floor = statistics.median(max(f.values()) for f in floors[1:]) / 1000
    share = (sn["store"] + sn["engine"]) / sn["wall"]
    rest = {v: statistics.median(p[v] for p in per_venue[1:]) for v in VENUES}
    print(
        f"first fill ({args.markets} markets, REST): {many[0].wall_s:.3f} s, "
        f"{many[0].requests} requests {per_venue[0]}; single market: {one[0].wall_s:.3f} s"
    )
    print(
        f"steady cycle (median of {len(many) - 1}, candles over the streams): wall "
        f"{sn['wall']:.3f} s, {sn['requests']:.0f} REST requests (per venue {rest}), store "
        f"{sn['store']:.3f} s + engine {sn['engine'] * 1000:.2f} ms = {share:.2%} of the cycle; "
        f"the slowest exchange's throttle floor {floor:.2f} s"
    )
    print(
        f"single-market steady cycle: wall {s1['wall']:.3f} s, {s1['requests']:.0f} requests, "
        f"store {s1['store'] * 1000:.1f} ms, engine {s1['engine'] * 1000:.2f} ms"
    )
    feeds = args.markets * len(VENUES)
    print(
        f"ratios N / 1 market: wall x{sn['wall'] / s1['wall']:.1f} for x{args.markets} markets "
        f"(per feed {sn['wall'] / feeds * 1000:.2f} ms vs {s1['wall'] / len(VENUES) * 1000:.2f} "
        f"ms), store x{sn['store'] / max(s1['store'], 1e-9):.1f}, engine "
        f"x{sn['engine'] / max(s1['engine'], 1e-9):.1f}"
    )
    maps = sum(m.lmap.nbytes for m in provider._markets.values() if m.lmap is not None)
    print(
        f"peak resident memory of the process: {rss:.0f} MiB (without the replay servers); "
        f"engine state of the {args.markets} maps: {maps / 2**20:.1f} MiB"
    )
    errors = sum(len(r.errors) for r in many[1:])
    if args.check and (share >= 0.10 or errors):
        print("FAIL: store + engine share of the steady cycle >= 10 % or errors in a cycle")
        return 1
    return 0
