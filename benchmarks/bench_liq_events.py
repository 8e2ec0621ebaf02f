"""Realized-liquidation latency: from the venue sending an event to the alert text being ready.

Run: ``.venv/bin/python benchmarks/bench_liq_events.py`` (``--minutes 5 --speed 10 --copies 1``;
``--check`` exits 1 when the median is not under 100 ms or the p99 not under 500 ms).

Offline and real: three local WebSocket venues (Binance USD-M, Bybit, OKX,
``liqsignal.replay.ws``) serve 50 real Binance USD-M perpetual names (from the bundled
leverage-tier file); the real ccxt.pro clients watch all 50 markets on each venue through
:class:`liqsignal.data.streams.LiquidationStreams` (which also writes the store, in its own
thread). Events are the bundled real Hyperliquid liquidations of the file's busiest stretch
(from 2025-05-25 22:09 UTC, ``--minutes`` long: 242 events in 5 minutes), sent on their real
timing ``--speed`` times faster, on every venue at once; event ``i`` goes to market
``i mod 50`` (``--copies n``: to markets ``i*n .. i*n+n-1 mod 50``, n times the load), its price
rescaled to the market's map (its USD size kept).

Per event the clock starts when the venue's server writes the frame (``time.perf_counter()`` in
the same process) and stops when liqsignal has: parsed it (ccxt), normalised it, consumed the
market's map at its price (``LiquidationMap.consume_to``), re-read the map's clusters
(``snapshot``), run the alert event detector (``EventDetector.observe``) and, when it fires,
assembled the Telegram message (``alert_for``): the point where the text would be handed to
the Telegram sender. Baseline in the same run: a bare ``websockets`` client per venue,
subscribed to the same streams on the same servers, timed from the same send to ``json.loads``
of the frame.
"""

from __future__ import annotations

import argparse
import asyncio
import copy
import json
import statistics
import sys
import tempfile
import time
from dataclasses import replace
from datetime import UTC, datetime
from importlib import resources
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
from websockets.asyncio.client import connect

from liqsignal.alerts.events import BarView, EventDetector
from liqsignal.alerts.service import alert_for
from liqsignal.config import MapConfig
from liqsignal.data.streams import LiquidationStreams, StreamConfig, StreamEvent
from liqsignal.engine import LiquidationMap
from liqsignal.evaluate import load_coinglass
from liqsignal.features import _seconds, prepare_inputs, validate_frame
from liqsignal.replay.ws import (
    LiqEvent,
    LiquidationStreamServer,
    ct_val,
    load_events,
    send_key,
)

VENUES = ("binance", "bybit", "okx")
WINDOW_START = pd.Timestamp("2025-05-25 22:09", tz="UTC")


def market_names(n: int) -> list[str]:
    """``n`` real Binance USD-M USDT perpetual bases (BTC, ETH first) from the bundled tiers."""
    with resources.as_file(
        resources.files("liqsignal") / "resources" / "binance_leverage_tiers.json"
    ) as p:
        tiers = json.loads(Path(p).read_text())
    bases = sorted(
        s.split("/")[0] for s in tiers if s.endswith("/USDT:USDT") and s.split("/")[0].isalpha()
    )
    out = ["BTC", "ETH"] + [b for b in bases if b not in ("BTC", "ETH")]
    return out[:n]


def base_map() -> LiquidationMap:
    """A map built on the bundled real CoinGlass BTC bars (each market gets a copy)."""
    df = load_coinglass().drop(columns=["realized_long_usd", "realized_short_usd"]).iloc[:1500]
    validate_frame(df, need_oi=True)
    lmap = LiquidationMap(MapConfig())
    lmap.update(_seconds(df["date"]), prepare_inputs(df, proxy=False)[:, None, :])
    return lmap


def script(markets: list[str], minutes: float, copies: int, ref_price: float) -> list[LiqEvent]:
    real = load_events(None)
    end = WINDOW_START + pd.Timedelta(minutes=minutes)
    lo, hi = int(WINDOW_START.value // 10**6), int(end.value // 10**6)
    window = [e for e in real if lo <= e.ts_ms < hi]
    first: dict[str, float] = {}
    out = []
    for i, ev in enumerate(window):
        p0 = first.setdefault(ev.market, ev.price)
        price = ref_price * ev.price / p0
        for c in range(copies):
            m = markets[(i * copies + c) % len(markets)]
            out.append(replace(ev, market=m, price=price, amount=ev.amount * ev.price / price))
    return out


class Pipeline:
    """The per-event work from a StreamEvent to an assembled alert, timed."""

    def __init__(self, markets: list[str], lmap: LiquidationMap) -> None:
        self.maps = {m: copy.deepcopy(lmap) for m in markets}
        self.detector = EventDetector()
        self.done: list[tuple[str, StreamEvent, float]] = []
        self.alerts = 0
        self.consumed = 0.0

    def __call__(self, ev: StreamEvent) -> None:
        lmap = self.maps[ev.market]
        usd = lmap.consume_to(ev.price, ev.side)
        self.consumed += usd
        snap = lmap.snapshot(ev.price)
        when = datetime.fromtimestamp(ev.ts_ms / 1000, tz=UTC)
        view = BarView(
            ev.market,
            when,
            ev.price,
            ev.price,
            ev.price,
            armed={},
            consumed_usd={ev.side: usd},
            flush=(1 if ev.side == "long" else -1) if usd > 0 else 0,
            context={"clusters": float(len(snap.clusters))},
        )
        for e in self.detector.observe(view):
            alert_for(e)
            self.alerts += 1
        self.done.append((ev.exchange, ev, time.perf_counter()))


async def bare_client(srv: LiquidationStreamServer, markets: list[str], out: list) -> None:
    """A plain websockets client on the same stream: subscribe, read, json.loads, time."""
    v = srv.venue
    url = {
        "binance": f"ws://127.0.0.1:{srv.port}/market/ws/9",
        "bybit": f"ws://127.0.0.1:{srv.port}/v5/public/linear",
        "okx": f"ws://127.0.0.1:{srv.port}/ws/v5/public",
    }[v]
    async with connect(url, max_size=2**22) as ws:
        if v == "binance":
            sub: Any = {
                "method": "SUBSCRIBE",
                "params": [f"{m.lower()}usdt@forceOrder" for m in markets],
                "id": 1,
            }
        elif v == "bybit":
            sub = {
                "op": "subscribe",
                "req_id": "1",
                "args": [f"allLiquidation.{m}USDT" for m in markets],
            }
        else:
            sub = {
                "op": "subscribe",
                "args": [{"channel": "liquidation-orders", "instType": "SWAP"}],
            }
        await ws.send(json.dumps(sub))
        async for raw in ws:
            msg = json.loads(raw)
            t = time.perf_counter()
            if v == "binance" and "o" in msg:
                o = msg["o"]
                side = "long" if o["S"] == "SELL" else "short"
                key = send_key(o["s"][:-4], o["T"], side, float(o["ap"]), float(o["l"]))
                out.append((v, key, t))
            elif v == "bybit" and "data" in msg:
                for d in msg["data"]:
                    side = "long" if d["S"] == "Buy" else "short"
                    key = send_key(d["s"][:-4], d["T"], side, float(d["p"]), float(d["v"]))
                    out.append((v, key, t))
            elif v == "okx" and "data" in msg:
                for d in msg["data"]:
                    det = d["details"][0]
                    m = d["instId"].split("-")[0]
                    amount = float(det["sz"]) * ct_val(m)
                    key = send_key(m, int(det["ts"]), det["posSide"], float(det["bkPx"]), amount)
                    out.append((v, key, t))


def pct(xs: list[float], q: float) -> float:
    return float(np.percentile(np.asarray(xs), q)) if xs else float("nan")


async def run(args: argparse.Namespace) -> dict[str, Any]:
    markets = market_names(args.markets)
    lmap = base_map()
    events = script(markets, args.minutes, args.copies, lmap.reference_price())
    servers = {v: LiquidationStreamServer(v, markets, record_sends=True).start() for v in VENUES}
    pipe = Pipeline(markets, lmap)
    base: list[tuple[str, tuple[Any, ...], float]] = []
    tmp = tempfile.TemporaryDirectory()
    try:
        streams = LiquidationStreams(
            list(VENUES),
            markets,
            datadir=tmp.name,
            ccxt_config={v: s.ccxt_config() for v, s in servers.items()},
            config=StreamConfig(read_timeout=30.0, keep_alive=5.0),
            on_event=[pipe],
        )
        task = asyncio.ensure_future(streams.run())
        clients = [asyncio.ensure_future(bare_client(s, markets, base)) for s in servers.values()]
        t_end = time.monotonic() + 60
        while any(s.complete_subscriptions() < 2 for s in servers.values()):
            if time.monotonic() > t_end:
                raise SystemExit("venues did not get their subscriptions within 60 s")
            await asyncio.sleep(0.05)
        t0 = time.perf_counter()
        await asyncio.gather(*(s.play(events, args.speed) for s in servers.values()))
        wall = time.perf_counter() - t0
        want = len(events) * len(VENUES)
        t_end = time.monotonic() + 10
        while (len(pipe.done) < want or len(base) < want) and time.monotonic() < t_end:
            await asyncio.sleep(0.05)
        streams.stop()
        await task
        for c in clients:
            c.cancel()
        await asyncio.gather(*clients, return_exceptions=True)
    finally:
        for s in servers.values():
            s.stop()
        tmp.cleanup()
    lat, own, recv, bl = [], [], [], []
    for v, ev, t_done in pipe.done:
        key = send_key(ev.market, ev.ts_ms, ev.side, ev.price, ev.amount)
        sent = (servers[v].sent_at or {}).get(key)
        if sent is None:
            continue
        lat.append((t_done - sent) * 1000)
        recv.append((ev.received - sent) * 1000)
        own.append((t_done - ev.received) * 1000)
    for v, key, t in base:
        sent = (servers[v].sent_at or {}).get(key)
        if sent is not None:
            bl.append((t - sent) * 1000)
    return {
        "markets": len(markets),
        "events_per_venue": len(events),
        "events_total": len(events) * len(VENUES),
        "wall_s": wall,
        "rate_per_s": len(events) * len(VENUES) / wall if wall else float("nan"),
        "processed": len(pipe.done),
        "matched": len(lat),
        "duplicates": sum(v.duplicates for v in streams.venues.values()),
        "per_venue": {
            v: (s.events, s.malformed, s.ignored, s.reconnects) for v, s in streams.venues.items()
        },
        "baseline_frames": len(base),
        "written": streams.writer.written,
        "alerts": pipe.alerts,
        "consumed_usd": pipe.consumed,
        "median_ms": statistics.median(lat) if lat else float("nan"),
        "p99_ms": pct(lat, 99),
        "recv_median_ms": statistics.median(recv) if recv else float("nan"),
        "own_median_ms": statistics.median(own) if own else float("nan"),
        "own_p99_ms": pct(own, 99),
        "base_median_ms": statistics.median(bl) if bl else float("nan"),
        "base_p99_ms": pct(bl, 99),
    }


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--markets", type=int, default=50)
    p.add_argument("--minutes", type=float, default=5.0, help="minutes of the real stretch")
    p.add_argument("--speed", type=float, default=10.0, help="x real rate")
    p.add_argument("--copies", type=int, default=1, help="each event on this many markets")
    p.add_argument("--check", action="store_true", help="exit 1 when a target is missed")
    args = p.parse_args()
    r = asyncio.run(run(args))
    print(
        f"{r['markets']} markets x {len(VENUES)} venues, {r['events_total']} events "
        f"({r['events_per_venue']} per venue) in {r['wall_s']:.1f} s = {r['rate_per_s']:.1f} "
        f"events/s ({args.speed:g}x the real rate, copies {args.copies})"
    )
    print(
        f"processed {r['processed']} (timed {r['matched']}, dropped as duplicates "
        f"{r['duplicates']}), baseline frames {r['baseline_frames']}, store rows "
        f"written {r['written']}, alerts assembled {r['alerts']}, map USD consumed "
        f"{r['consumed_usd']:,.0f}"
    )
    print("per venue (events, malformed, ignored, reconnects):", r["per_venue"])
    print(
        f"event sent -> alert text ready: median {r['median_ms']:.2f} ms, p99 "
        f"{r['p99_ms']:.2f} ms (targets < 100 ms, < 500 ms)"
    )
    print(
        f"  of which sent -> frame handed to ccxt's handler: median {r['recv_median_ms']:.2f} ms;"
        f" liqsignal's own work: median {r['own_median_ms']:.2f} ms, p99 {r['own_p99_ms']:.2f} ms"
    )
    print(
        f"baseline (bare websockets client, json.loads): median {r['base_median_ms']:.2f} ms, "
        f"p99 {r['base_p99_ms']:.2f} ms"
    )
    ratio = r["median_ms"] / r["base_median_ms"] if r["base_median_ms"] else float("nan")
    print(f"ratio pipeline / baseline (median): {ratio:.2f}")
    ok = r["median_ms"] < 100 and r["p99_ms"] < 500 and r["processed"] == r["events_total"]
    if args.check and not ok:
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
