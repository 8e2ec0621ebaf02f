"""Realized-liquidation latency: from the venue sending an event to the alert text being ready.

Run: ``.venv/bin/python benchmarks/bench_liq_events.py`` (``--minutes 5 --speed 10 --copies 1``;
``--check`` exits 1 when the median is not under 100 ms or the p99 not under 500 ms).

Offline and real: three local WebSocket venues (Binance USD-M, Bybit, OKX, ``liqsignal.replay.ws``)
serve 50 real Binance USD-M perpetual names (from the bundled leverage-tier file); the real
ccxt.pro clients watch all 50 markets on each venue through the alert service's own streams
(``alerts.live_liquidations``, ``AlertService.start_live_streams``:
:class:`liqsignal.data.streams.LiquidationStreams`, which also writes the store in its own thread),
each event through ``on_liquidation`` and the service's live worker. Events are the bundled real
Hyperliquid liquidations of the file's busiest stretch (from 2025-05-25 22:09 UTC, ``--minutes``
long: 242 events in 5 minutes), sent on their real timing ``--speed`` times faster, on every venue
at once; event ``i`` goes to market ``i mod 50`` (``--copies n``: to markets ``i*n .. i*n+n-1 mod
50``, n times the load), its price rescaled to the market's map (its USD size kept).

Per event the clock starts when the venue's server writes the frame (``time.perf_counter()`` in the
same process) and stops when the real alert service has handled it
(``AlertService.handle_liquidation`` returned: the ``on_handled`` hook): parsed (ccxt), normalised,
the market's map consumed at its price, the arming re-evaluated on the map after it, and, for an
event that raises an alert ("armed" on first sight of each market's pocket, "consumed" when a later
event trades through it), the message stored in the SQLite outbox and sent by the real
``TelegramSender`` (alerts pending together as one digest message, ``alerts.batch_max``) to the
tests' local Bot API (``tests/alerts/fake_botapi.py``), its answer received. Every market's last
bar is "armed" on both sides, so every event re-evaluates the arming (the worst case). Baseline in
the same run: a bare ``websockets`` client per venue, subscribed to the same streams on the same
servers, timed from the same send to ``json.loads`` of the frame.
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
from importlib import resources
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import numpy as np
import pandas as pd
from websockets.asyncio.client import connect

from liqsignal.alerts.outbox import Outbox
from liqsignal.alerts.service import AlertConfig, AlertService
from liqsignal.alerts.telegram import RetryPolicy, TelegramSender
from liqsignal.config import MapConfig
from liqsignal.data.streams import StreamConfig, StreamEvent
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

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tests" / "alerts"))
from fake_botapi import FakeBotAPI  # noqa: E402  (the tests' local Bot API on 127.0.0.1)

TOKEN = "7000001:AAH-liqsignalBenchTokenSecret_xyz12"
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
    # 1721 bars: the first close after bar 1500 with a pocket on both sides (long -4.6 %,
    # short +1.5 %), so events can arm and then consume them
    df = load_coinglass().drop(columns=["realized_long_usd", "realized_short_usd"]).iloc[:1721]
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


class MapsProvider:
    """The MapProvider interface over one real map per market (copies of the bundled BTC map,
    no refresh): what the alert service reads and what a realized liquidation consumes."""

    def __init__(self, markets: list[str], lmap: LiquidationMap) -> None:
        self.markets = list(markets)
        self.maps = {m: copy.deepcopy(lmap) for m in markets}
        self.consumed = 0.0
        self.row = pd.DataFrame(
            [{"liq_long_armed": 1.0, "liq_short_armed": 1.0, "liq_long_armed_score": 1.0,
              "liq_short_armed_score": 1.0, "close": lmap.reference_price()}],
            index=pd.DatetimeIndex([WINDOW_START], name="date"),
        )  # fmt: skip

    async def refresh(self) -> None:
        return None

    def features(self, market: str) -> pd.DataFrame:
        return self.row  # the last bar armed both sides: every event re-evaluates the arming

    def snapshot(self, market: str, scan_range_pct: float | None = None) -> Any:
        return self.maps[market].snapshot(scan_range_pct=scan_range_pct)

    def status(self, market: str) -> dict[str, Any]:
        return {v: SimpleNamespace(exchange=v, stale=False, since=None, last_bar=None,
                                   error=None) for v in VENUES}  # fmt: skip

    def price(self, market: str) -> float:
        return float(self.maps[market].reference_price())

    def on_liquidation(self, ev: StreamEvent) -> float:
        usd = self.maps[ev.market].consume_to(ev.price, ev.side)
        self.consumed += usd
        return usd


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
    api = FakeBotAPI(valid_token=TOKEN)
    await api.start()
    tmp_box = tempfile.TemporaryDirectory()
    box = Outbox(Path(tmp_box.name) / "bench.sqlite")
    sender = TelegramSender([111], token=TOKEN, base_url=api.base_url,
                            base_file_url=api.base_file_url, outbox=box,
                            retry=RetryPolicy(max_age=None))  # fmt: skip
    provider = MapsProvider(markets, lmap)
    tmp = tempfile.TemporaryDirectory()
    service = AlertService(
        provider,
        AlertConfig(chat_ids=(111,), pictures=False, interval_s=60, cooldown_minutes=60,
                    live_liquidations=True, datadir=tmp.name,
                    ccxt_config={v: s.ccxt_config() for v, s in servers.items()}),
        markets=markets,
        sender=sender,
    )  # fmt: skip
    await service.start()
    done: list[tuple[str, StreamEvent, float, int]] = []
    service.on_handled.append(
        lambda ev, res: done.append((ev.exchange, ev, time.perf_counter(), len(res.alerts)))
    )
    base: list[tuple[str, tuple[Any, ...], float]] = []
    try:
        # the service's own path: its streams -> on_liquidation -> the live worker
        streams = service.start_live_streams(StreamConfig(read_timeout=30.0, keep_alive=5.0))
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
        while (len(done) < want or len(base) < want) and time.monotonic() < t_end:
            await asyncio.sleep(0.05)
        await service.stop_live_streams()
        for c in clients:
            c.cancel()
        await asyncio.gather(*clients, return_exceptions=True)
        telegram_calls = len(api.calls_to("sendMessage"))
    finally:
        for s in servers.values():
            s.stop()
        await service.aclose()
        box.close()
        await api.stop()
        tmp.cleanup()
        tmp_box.cleanup()
    lat, own, recv, bl, alerting = [], [], [], [], []
    for v, ev, t_done, n_alerts in done:
        key = send_key(ev.market, ev.ts_ms, ev.side, ev.price, ev.amount)
        sent = (servers[v].sent_at or {}).get(key)
        if sent is None:
            continue
        lat.append((t_done - sent) * 1000)
        if n_alerts:
            alerting.append((t_done - sent) * 1000)
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
        "processed": len(done),
        "matched": len(lat),
        "duplicates": sum(v.duplicates for v in streams.venues.values()),
        "per_venue": {
            v: (s.events, s.malformed, s.ignored, s.reconnects) for v, s in streams.venues.items()
        },
        "baseline_frames": len(base),
        "written": streams.writer.written,
        "alerts": sum(n for *_, n in done),
        "telegram_calls": telegram_calls,
        "alert_median_ms": statistics.median(alerting) if alerting else float("nan"),
        "alert_p99_ms": pct(alerting, 99),
        "alert_events": len(alerting),
        "consumed_usd": provider.consumed,
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
        f"written {r['written']}, alerts {r['alerts']} ({r['telegram_calls']} sendMessage "
        f"calls answered), map USD consumed {r['consumed_usd']:,.0f}"
    )
    print("per venue (events, malformed, ignored, reconnects):", r["per_venue"])
    print(
        f"event sent -> handled by the alert service (for an alerting event: after its "
        f"Telegram call was answered): median {r['median_ms']:.2f} ms, p99 "
        f"{r['p99_ms']:.2f} ms (targets < 100 ms, < 500 ms)"
    )
    print(
        f"  events that sent an alert ({r['alert_events']}): median {r['alert_median_ms']:.2f} "
        f"ms, p99 {r['alert_p99_ms']:.2f} ms"
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
