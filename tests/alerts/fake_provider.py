"""A stand-in for the alert service's MapProvider, driven bar by bar by the test, and the alert
settings the alert tests start from."""

from __future__ import annotations

import asyncio
from types import SimpleNamespace

import pandas as pd

from liqsignal.config import AlertConfig
from liqsignal.engine import Cluster, MapSnapshot

# the two chats the alert config and the test senders send to
CHAT_A = 111
CHAT_B = 222

M = "BTC/USDT:USDT"
T0 = pd.Timestamp("2026-01-29 10:00", tz="UTC")
H = pd.Timedelta(hours=1)


def cluster(side="long", low=86_450.0, high=86_600.0, usd=5.01e6, dist=-0.52, depth=3):
    return Cluster(
        side,
        (low + high) / 2,
        low,
        high,
        usd,
        dist,
        depth,
        usd * 2.5,
        {"binance": 0.6, "bybit": 0.4},
    )


class FakeProvider:
    """The MapProvider interface, driven bar by bar by the test."""

    def __init__(self, markets=(M,)):
        self.markets = list(markets)
        self.rows: dict[str, list[dict]] = {m: [] for m in self.markets}
        self.stale: dict[str, set[str]] = {m: set() for m in self.markets}
        self.refreshes = 0
        self.fail_refresh: Exception | None = None
        self.refresh_delay = 0.0
        self.in_refresh = 0
        self.max_in_refresh = 0
        for m in self.markets:
            self.add_bar(m)

    def add_bar(
        self,
        market=M,
        *,
        armed=None,
        low=86_900.0,
        high=87_100.0,
        close=87_000.0,
        pred_long=0.0,
        flush=0,
    ):
        rows = self.rows[market]
        t = T0 + len(rows) * H
        c = armed or cluster()
        rows.append(
            {
                "date": t,
                "close": close,
                "high": high,
                "low": low,
                "open_interest_value": 9.1e9 * (1 + 0.01 * len(rows)),
                "funding_rate": 5.9e-5,
                "liq_long_armed": 1.0 if armed else 0.0,
                "liq_long_armed_score": 1.17 if armed else 0.0,
                "liq_long_cluster_price": c.price,
                "liq_long_cluster_low": c.low,
                "liq_long_cluster_high": c.high,
                "liq_long_cluster_usd": c.usd,
                "liq_long_cluster_dist_pct": c.distance_pct,
                "liq_long_cascade_depth": float(c.depth),
                "liq_long_cascade_usd": c.cascade_usd,
                "liq_short_armed": 0.0,
                "liq_pred_long_usd": pred_long,
                "liq_pred_short_usd": 0.0,
                "liq_flush": float(flush),
            }
        )
        self._armed = {market: c}

    async def refresh(self):
        self.in_refresh += 1
        self.max_in_refresh = max(self.max_in_refresh, self.in_refresh)
        try:
            self.refreshes += 1
            if self.refresh_delay:
                await asyncio.sleep(self.refresh_delay)
            if self.fail_refresh:
                raise self.fail_refresh
            return SimpleNamespace(became_stale=[], recovered=[])
        finally:
            self.in_refresh -= 1

    def features(self, market):
        return pd.DataFrame(self.rows[market]).set_index("date")

    def snapshot(self, market, scan_range_pct=None):
        row = self.rows[market][-1]
        prices = [86_000.0 + 50 * i for i in range(40)]
        levels = pd.DataFrame(
            {
                "long_usd": [1e6 if p < 87_000 else 0.0 for p in prices],
                "short_usd": [0.0 if p < 87_000 else 8e5 for p in prices],
            },
            index=pd.Index(prices, name="price"),
        )
        return MapSnapshot(row["date"], row["close"], levels, [self._armed.get(market, cluster())])

    def status(self, market):
        return {
            ex: SimpleNamespace(
                exchange=ex,
                symbol=market,
                stale=ex in self.stale[market],
                last_bar=self.rows[market][-1]["date"],
                error="bybit: timeout" if ex in self.stale[market] else None,
                since=self.rows[market][-1]["date"] if ex in self.stale[market] else None,
            )
            for ex in ("binance", "bybit")
        }

    def price(self, market):
        return self.rows[market][-1]["close"]


def alert_config(**kw) -> AlertConfig:
    kw.setdefault("chat_ids", (CHAT_A, CHAT_B))
    kw.setdefault("picture_bars", 24)
    kw.setdefault("cooldown_minutes", 600)
    return AlertConfig(**kw)
