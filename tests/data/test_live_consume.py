"""A realized liquidation consumes the map's levels at and beyond its price at once."""

from __future__ import annotations

import asyncio
import time
from dataclasses import replace
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from venues_util import start_venues, stop_venues

import liqsignal.replay.bybit
import liqsignal.replay.okx  # noqa: F401  (registers the venue)
from liqsignal import nb
from liqsignal.config import MapConfig
from liqsignal.data.exchanges import RetryPolicy
from liqsignal.data.provider import MapProvider, MarketSpec
from liqsignal.data.streams import LiquidationStreams, StreamConfig
from liqsignal.engine import LiquidationMap
from liqsignal.exceptions import InputError
from liqsignal.features import _seconds, prepare_inputs, validate_frame
from liqsignal.replay.server import ManualClock
from liqsignal.replay.ws import LiquidationStreamServer, load_events


def inputs(btc_frame: pd.DataFrame, n: int) -> tuple[np.ndarray, np.ndarray]:
    df = btc_frame.iloc[:n]
    validate_frame(df, need_oi=True)
    x = prepare_inputs(df, proxy=False)[:, None, :]
    return _seconds(df["date"]), np.repeat(x, 3, axis=1)


def built_map(btc_frame: pd.DataFrame, n: int = 600) -> LiquidationMap:
    """A map built on the first ``n`` real CoinGlass BTC bars (three exchange blocks)."""
    ts, x = inputs(btc_frame, n)
    lmap = LiquidationMap(MapConfig(), exchanges=("binance", "bybit", "okx"))
    lmap.update(ts, x)
    return lmap


def standing_and_consumed(lmap: LiquidationMap) -> float:
    a = lmap.accounting()
    return a["standing_usd"] + a["consumed_usd"]


@pytest.mark.parametrize("side", ["long", "short"])
def test_consume_to_removes_levels_beyond_price_and_conserves_mass(
    btc_frame: pd.DataFrame, side: str
) -> None:
    lmap = built_map(btc_frame)
    ref = lmap.reference_price()
    levels = lmap.levels()
    col = f"{side}_usd"
    on_side = levels[levels[col] > 0]
    # an event inside the side's levels: a long liquidated below price, a short above
    price = float(
        on_side.index[on_side.index < ref][-5]
        if side == "long"
        else on_side.index[on_side.index > ref][5]
    )
    beyond = levels.index >= price if side == "long" else levels.index <= price
    expected = float(levels.loc[beyond, col].sum())
    assert expected > 0
    other = "short" if side == "long" else "long"
    before_total = standing_and_consumed(lmap)
    consumed_before = lmap.accounting()["consumed_usd"]
    got = lmap.consume_to(price, side)
    after = lmap.levels(nonzero=False)
    assert got == pytest.approx(expected, rel=1e-9)
    sel = after.index >= price if side == "long" else after.index <= price
    assert float(after.loc[sel, col].abs().sum()) == 0.0  # the levels beyond are gone
    kept = levels.loc[~beyond, col]
    assert np.allclose(after.loc[kept.index, col], kept)  # the rest untouched
    assert np.allclose(after.reindex(levels.index)[f"{other}_usd"], levels[f"{other}_usd"])
    # mass conserved: standing + consumed unchanged, consumed grew by what was returned
    assert standing_and_consumed(lmap) == pytest.approx(before_total, rel=1e-12)
    assert lmap.accounting()["consumed_usd"] - consumed_before == pytest.approx(got, rel=1e-12)
    # the state's own totals agree with the bins
    for e in range(lmap.n_exchanges):
        raw = lmap.long_raw if side == "long" else lmap.short_raw
        tot = nb.X_TOT_L if side == "long" else nb.X_TOT_S
        assert raw[e].sum() == pytest.approx(lmap.ex[e, tot], rel=1e-9)
    assert lmap.consume_to(price, side) == 0.0  # a second event at the same price: nothing left


def test_consume_then_next_bar_matches_the_map_without_the_event(btc_frame: pd.DataFrame) -> None:
    """A bar whose range contains the event's price consumes those levels anyway: after it the
    standing levels are the same with or without the live consumption; only the bar's predicted
    liquidations no longer count what the event already took."""
    n = 600
    live, ref = built_map(btc_frame, n), built_map(btc_frame, n)
    ts, x = inputs(btc_frame, n + 1)
    bar = x[n : n + 1]
    low = float(bar[0, 0, nb.I_LOW])
    took = live.consume_to(low * 1.001, "long")
    out_live = live.update(ts[n : n + 1], bar)
    out_ref = ref.update(ts[n : n + 1], bar)
    assert np.allclose(live.long_raw, ref.long_raw) and np.allclose(live.short_raw, ref.short_raw)
    i = nb.OUT_NAMES.index("liq_pred_long_usd")
    assert out_ref[i, 0] - out_live[i, 0] == pytest.approx(took, rel=1e-6)


def test_consume_to_checks_input(btc_frame: pd.DataFrame) -> None:
    lmap = built_map(btc_frame, 50)
    with pytest.raises(InputError, match="side"):
        lmap.consume_to(1.0, "sell")
    with pytest.raises(InputError, match="price"):
        lmap.consume_to(float("nan"), "long")
    with pytest.raises(InputError, match="kraken"):
        lmap.consume_to(1.0, "long", exchange="kraken")
    assert LiquidationMap(MapConfig()).consume_to(100.0, "long") == 0.0  # no grid yet


async def test_provider_applies_streamed_events_to_the_live_map(tmp_path: Path) -> None:
    """Real clients end to end: a MapProvider refreshed from the REST replay venues, and the
    ccxt.pro Binance stream from the local WebSocket venue with the provider's hook as callback.
    The event is a real Hyperliquid liquidation (time, size) placed at the price of the map's
    nearest long cluster (the bundled events are from another period and price level)."""
    venues = start_venues(tmp_path / "venues")
    clock = ManualClock(pd.Timestamp("2026-01-20 03:30", tz="UTC"))
    for rx, _ in venues.values():
        rx.clock = clock
    try:
        cfg = {v: {**rx.ccxt_config(v), "rateLimit": 1} for v, (rx, _) in venues.items()}
        provider = MapProvider(
            [MarketSpec("BTC", ("binance", "okx"))],
            datadir=tmp_path / "store",
            ccxt_config=cfg,
            history_bars=150,
            clock=clock,
            retry=RetryPolicy(attempts=2, base_delay=0.01, max_delay=0.02),
            history_limits=False,
        )
        async with provider:
            await provider.refresh()
            lmap = provider.map("BTC")
            ref = provider.price("BTC")
            cluster = provider.snapshot("BTC").clusters_on("long")[0]
            price = cluster.price
            levels = lmap.levels()
            expected = float(levels.loc[levels.index >= price, "long_usd"].sum())
            assert expected > 0 and price < ref
            consumed0 = lmap.accounting()["consumed_usd"]
            took: list[float] = []
            real = load_events(None, ["BTC"])[0]
            with LiquidationStreamServer("binance", ["BTC"]) as srv:
                streams = LiquidationStreams(
                    ["binance"],
                    ["BTC"],
                    datadir=None,
                    ccxt_config={"binance": srv.ccxt_config()},
                    config=StreamConfig(read_timeout=2.0, keep_alive=0.5, tick=0.05),
                    on_event=[lambda ev: took.append(provider.on_liquidation(ev))],
                )
                task = asyncio.ensure_future(streams.run())
                for _ in range(200):
                    if srv.ready():
                        break
                    await asyncio.sleep(0.02)
                ev = replace(real, ts_ms=int(time.time() * 1000), side="long", price=price)
                await asyncio.to_thread(srv.publish, [ev])
                for _ in range(200):
                    if took:
                        break
                    await asyncio.sleep(0.02)
                streams.stop()
                await task
            assert took == [pytest.approx(expected, rel=1e-9)]
            after = provider.map("BTC").levels(nonzero=False)
            assert float(after.loc[after.index >= price, "long_usd"].sum()) == 0.0
            assert lmap.accounting()["consumed_usd"] - consumed0 == pytest.approx(expected)
            # the provider's snapshot sees it at once: the nearest long pocket is now below
            assert all(c.high < price for c in provider.snapshot("BTC").clusters_on("long"))
    finally:
        stop_venues(venues)
