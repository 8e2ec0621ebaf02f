"""Alert latency: from the end of a refresh to the last sendMessage, for 50 markets.

Run: ``.venv/bin/python benchmarks/bench_alerts.py`` (``--markets 50 --rounds 5``; ``--check``
exits 1 when the median is at or above 1 s). Offline: the fake Telegram Bot API of the tests on
127.0.0.1 (tests/alerts/fake_botapi.py), one chat, a real ``TelegramSender`` and SQLite outbox,
and an in-memory provider whose refresh returns at once with every market armed in a new price
band each round (so each round sends 50 alerts). The clock starts when ``refresh()`` returns and
stops when the fake API receives the last sendMessage: event detection, message formatting,
outbox writes and the HTTP round trips. Text alerts (``pictures: false``), as digests of
``alerts.batch_max`` (10: five messages for 50 alerts) and, as the baseline in the same run, one
message per alert (``batch_max: 1``, 50 messages); the same with heatmap pictures (sendPhoto, 50
matplotlib renders, one message each) is measured too and printed for comparison.
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import sys
import tempfile
import time
from pathlib import Path
from types import SimpleNamespace

import pandas as pd

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tests" / "alerts"))

from bench_util import fake_api_sender  # noqa: E402
from fake_botapi import FakeBotAPI  # noqa: E402

from liqsignal.alerts.outbox import Outbox  # noqa: E402
from liqsignal.alerts.service import AlertService  # noqa: E402
from liqsignal.alerts.telegram import RetryPolicy  # noqa: E402
from liqsignal.config import AlertConfig  # noqa: E402
from liqsignal.engine import Cluster, MapSnapshot  # noqa: E402

TOKEN = "7000001:AAH-liqsignalBenchTokenSecret_xyz12"
T0 = pd.Timestamp("2026-01-29 10:00", tz="UTC")


class BenchProvider:
    """Every market armed each round, in a new price band."""

    def __init__(self, n: int) -> None:
        self.markets = [f"C{i:02d}/USDT:USDT" for i in range(n)]
        self.round = 0
        self.refresh_end = 0.0
        prices = [90_000.0 + 100 * i for i in range(-40, 40)]
        self.levels = pd.DataFrame(
            {"long_usd": [1e6] * 80, "short_usd": [8e5] * 80}, index=pd.Index(prices)
        )

    def _cluster(self) -> Cluster:
        low = 89_000.0 - 2_000 * self.round
        return Cluster(
            "long", low + 75, low, low + 150, 5e6, -1.0, 2, 9e6, {"binance": 0.7, "bybit": 0.3}
        )

    async def refresh(self) -> SimpleNamespace:
        self.round += 1
        self.refresh_end = time.monotonic()
        return SimpleNamespace()

    def features(self, market: str) -> pd.DataFrame:
        c = self._cluster()
        rows = []
        for k in range(30):
            rows.append(
                {
                    "date": T0 + pd.Timedelta(hours=self.round * 100 + k),
                    "close": 90_000.0,
                    "high": 90_100.0,
                    "low": 89_900.0,
                    "open_interest_value": 9e9,
                    "funding_rate": 1e-4,
                    "liq_long_armed": 1.0,
                    "liq_long_armed_score": 1.3,
                    "liq_long_cluster_price": c.price,
                    "liq_long_cluster_low": c.low,
                    "liq_long_cluster_high": c.high,
                    "liq_long_cluster_usd": c.usd,
                    "liq_long_cluster_dist_pct": -1.0,
                    "liq_long_cascade_depth": 2.0,
                    "liq_long_cascade_usd": 9e6,
                    "liq_short_armed": 0.0,
                    "liq_pred_long_usd": 0.0,
                    "liq_pred_short_usd": 0.0,
                    "liq_flush": 0.0,
                }
            )
        return pd.DataFrame(rows).set_index("date")

    def snapshot(self, market: str, scan_range_pct: float | None = None) -> MapSnapshot:
        return MapSnapshot(T0, 90_000.0, self.levels, [self._cluster()])

    def status(self, market: str) -> dict[str, SimpleNamespace]:
        return {
            ex: SimpleNamespace(exchange=ex, stale=False, since=None, last_bar=T0, error=None)
            for ex in ("binance", "bybit")
        }

    def price(self, market: str) -> float:
        return 90_000.0


async def measure(n: int, rounds: int, pictures: bool, batch_max: int = 10) -> list[float]:
    api = FakeBotAPI(valid_token=TOKEN)
    await api.start()
    out: list[float] = []
    with tempfile.TemporaryDirectory() as tmp:
        box = Outbox(Path(tmp) / "bench.sqlite")
        sender = fake_api_sender(api, box, RetryPolicy(max_age=None))
        sender.batch_max = batch_max
        provider = BenchProvider(n)
        svc = AlertService(
            provider,
            AlertConfig(chat_ids=(111,), pictures=pictures, interval_s=60, batch_max=batch_max),
            markets=provider.markets,
            sender=sender,
        )
        await svc.start()
        method = "sendPhoto" if pictures else "sendMessage"
        try:
            for _ in range(rounds):
                before = len(api.calls_to(method))
                res = await svc.tick()
                calls = api.calls_to(method)[before:]
                want = n if pictures else -(-n // batch_max)
                if len(calls) != want or res.sent != n:
                    raise SystemExit(
                        f"expected {want} {method} for {n} alerts, got {len(calls)} "
                        f"(sent {res.sent})"
                    )
                out.append(calls[-1].at - provider.refresh_end)
        finally:
            await svc.aclose()
            box.close()
            await api.stop()
    return out


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--markets", type=int, default=50)
    p.add_argument("--rounds", type=int, default=5)
    p.add_argument("--no-pictures-run", action="store_true", help="skip the sendPhoto run")
    p.add_argument("--check", action="store_true", help="exit 1 if the median is >= 1 s")
    a = p.parse_args(argv)
    one = asyncio.run(measure(a.markets, a.rounds, pictures=False, batch_max=1))
    text = asyncio.run(measure(a.markets, a.rounds, pictures=False))
    med, med1 = statistics.median(text), statistics.median(one)
    print(
        f"end of refresh -> last sendMessage, {a.markets} markets, {a.rounds} rounds, digests "
        f"of 10 ({-(-a.markets // 10)} messages): median {med:.3f} s, best {min(text):.3f} s, "
        f"worst {max(text):.3f} s (target < 1 s: {'ok' if med < 1 else 'MISSED'})"
    )
    print(
        f"baseline, one message per alert ({a.markets} messages): median {med1:.3f} s, best "
        f"{min(one):.3f} s, worst {max(one):.3f} s; ratio digest / baseline {med / med1:.2f}"
    )
    if not a.no_pictures_run:
        pics = asyncio.run(measure(a.markets, min(a.rounds, 2), pictures=True))
        print(
            f"with heatmap pictures (sendPhoto), {a.markets} markets: "
            f"median {statistics.median(pics):.3f} s ({statistics.median(pics) / a.markets:.3f} "
            "s per alert)"
        )
    return 1 if (a.check and med >= 1.0) else 0


if __name__ == "__main__":
    sys.exit(main())
