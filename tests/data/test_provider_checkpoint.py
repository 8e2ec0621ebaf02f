"""Late bars through the map's checkpoint: bitwise the result of a rebuild.

Two providers refresh side by side against the same Binance, Bybit and OKX replays (real ccxt
clients, one manual clock): one as it runs (checkpoints on), one that rebuilds the market's map
from every stored row at each late bar (the behaviour before checkpoints). After every refresh
both must hold bitwise-equal features and engine state, and both must equal the computation on
the stored files (:func:`aggregated_features_from_store`), bit for bit.

Bybit's replay clock runs 91 minutes behind, so each of its candles arrives one refresh after
the other venues' (a lagging venue, not stale). Binance's funding (the reference exchange's, in
the features) has an extra row at 04:00 between its 8-hourly ones: the provider, expecting the
next row at 08:00, fetches it only then, after bars that read it entered the map, so the
checkpoint holding those bars is dropped and that refresh rebuilds.
"""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from venues_util import TESTDATA, VENUES, Venues, ccxt_configs, stop_venues

import liqsignal.replay.bybit
import liqsignal.replay.okx  # noqa: F401  (registers the venues)
from liqsignal.config import MapConfig
from liqsignal.data.exchanges import RetryPolicy
from liqsignal.data.provider import (
    LIVE_HEATMAP_FRAMES,
    MapProvider,
    MarketSpec,
    RefreshReport,
    aggregated_features_from_store,
)
from liqsignal.engine import LiquidationMap
from liqsignal.replay.server import ManualClock, ReplayExchange
from liqsignal.replay.testing import Faults

START = pd.Timestamp("2026-01-20 03:30", tz="UTC")
HOUR = pd.Timedelta(hours=1)
FAST = RetryPolicy(attempts=2, base_delay=0.01, max_delay=0.02, max_retry_after=0.1)
EXTRA_FUNDING = pd.Timestamp("2026-01-20 04:00", tz="UTC")
STATE = ("g", "ex", "long_raw", "short_raw", "hm", "hm_meta")


class _Behind(ManualClock):
    """A replay clock ``lag`` behind ``main``."""

    def __init__(self, main: ManualClock, lag: pd.Timedelta) -> None:
        super().__init__(main.t)
        self.main, self.lag = main, lag

    def now_ms(self) -> int:
        return int((self.main.t - self.lag).value // 1_000_000)


@pytest.fixture(scope="module")
def running_venues(tmp_path_factory: pytest.TempPathFactory) -> Venues:  # type: ignore[misc]
    root = tmp_path_factory.mktemp("venues")
    out: Venues = {}
    for venue in VENUES:
        shutil.copytree(TESTDATA, root / venue)
        oi_path = root / venue / "futures" / "BTC_USDT_USDT-1h-open_interest.feather"
        oi = pd.read_feather(oi_path)
        scale = {"binance": 1.0, "bybit": 0.6, "okx": 0.35}[venue]
        for col in ("open_interest_amount", "open_interest_value"):
            oi[col] = oi[col] * scale
        oi.to_feather(oi_path)
        if venue == "binance":
            f_path = root / venue / "futures" / "BTC_USDT_USDT-1h-funding_rate.feather"
            f = pd.read_feather(f_path)
            extra = pd.DataFrame({"date": [EXTRA_FUNDING], "funding_rate": [0.0009]})
            extra["date"] = extra["date"].astype(f["date"].dtype)
            f = pd.concat([f, extra]).sort_values("date", ignore_index=True)
            f.to_feather(f_path)
        rx = ReplayExchange(root / venue, venues=(venue,)).start()
        out[venue] = (rx, Faults(rx))
    yield out
    stop_venues(out)


@pytest.fixture
def clock(venues: Venues) -> ManualClock:
    clk = ManualClock(START)
    for rx, faults in venues.values():
        rx.clock = clk
        faults.clear()
    return clk


def _provider(
    venues: Venues, datadir: Path, clock: ManualClock, *, checkpoints: bool
) -> MapProvider:
    p = MapProvider(
        [MarketSpec("BTC", VENUES)],
        datadir=datadir,
        ccxt_config=ccxt_configs(venues, timeout_ms=5000),
        history_bars=150,
        clock=clock,
        retry=FAST,
        history_limits=False,
    )
    p._checkpoints = checkpoints
    return p


def _bits(a: np.ndarray) -> np.ndarray:
    return np.ascontiguousarray(a, dtype=np.float64).view(np.int64)


def _assert_identical(a: pd.DataFrame, b: pd.DataFrame) -> None:
    assert list(a.columns) == list(b.columns)
    assert a.index.equals(b.index)
    assert np.array_equal(_bits(a.to_numpy()), _bits(b.to_numpy())), "features differ"


def _assert_same_state(a: LiquidationMap, b: LiquidationMap) -> None:
    assert a.last_time == b.last_time
    for name in STATE:
        assert np.array_equal(_bits(getattr(a, name)), _bits(getattr(b, name))), name
    _assert_identical(a.levels(), b.levels())


def _assert_all_equal(cp: MapProvider, rb: MapProvider, datadir: Path) -> None:
    """Checkpointed == rebuilding == the stored-file computation, bit for bit."""
    live = cp.features("BTC")
    _assert_identical(live, rb.features("BTC"))
    _assert_same_state(cp.map("BTC"), rb.map("BTC"))
    cfg = MapConfig().replace(heatmap_frames=LIVE_HEATMAP_FRAMES)
    stored, full = aggregated_features_from_store(
        "BTC", VENUES, "1h", datadir, cfg, return_map=True
    )
    _assert_identical(live, stored.iloc[-len(live) :])
    _assert_same_state(cp.map("BTC"), full)
    assert cp.status("BTC") == rb.status("BTC")


async def _both(cp: MapProvider, rb: MapProvider) -> tuple[RefreshReport, RefreshReport]:
    return await cp.refresh(), await rb.refresh()


async def test_a_venue_a_bar_late_replays_from_the_checkpoint_bitwise_as_a_rebuild(
    venues: Venues, clock: ManualClock, tmp_path: Path
) -> None:
    venues["bybit"][0].clock = _Behind(clock, pd.Timedelta(minutes=91))
    async with (
        _provider(venues, tmp_path / "cp", clock, checkpoints=True) as cp,
        _provider(venues, tmp_path / "rb", clock, checkpoints=False) as rb,
    ):
        a, b = await _both(cp, rb)
        assert a.rebuilt == b.rebuilt == ["BTC"]  # the first build
        _assert_all_equal(cp, rb, tmp_path / "cp")
        assert cp.status("BTC")["bybit"].last_bar == cp.status("BTC")["okx"].last_bar - HOUR
        ck = cp._markets["BTC"].checkpoint
        assert ck is not None and ck.lmap is not None  # one copy, at Bybit's newest bar
        assert ck.until == cp.status("BTC")["bybit"].last_bar
        seen = []
        for _ in range(7):  # 04:30 ... 10:30
            clock.t += HOUR
            a, b = await _both(cp, rb)
            assert not a.errors and not b.errors and not a.became_stale
            assert a.new_bars == b.new_bars == {("BTC", ex): 1 for ex in VENUES}
            assert b.rebuilt == ["BTC"] and b.replayed == []  # every refresh has a late bar
            seen.append("rebuilt" if a.rebuilt else "replayed" if a.replayed else "-")
            assert a.engine_s < b.engine_s * 2 + 0.05
            _assert_all_equal(cp, rb, tmp_path / "cp")
            ck = cp._markets["BTC"].checkpoint
            if ck is not None:
                assert ck.until == cp.status("BTC")["bybit"].last_bar
            feats = cp.features("BTC")
            assert feats["liq_n_exchanges"].iloc[-1] == 2  # Bybit's newest bar comes next time
            assert (feats["liq_n_exchanges"].iloc[:-1] == 3).all()
        # 08:30: Binance's 04:00 and 08:00 funding rows arrive together; bars from 04:00 on read
        # the 04:00 one, and the checkpoint (at Bybit's 05:00 bar) holds them: a rebuild
        assert seen == ["replayed"] * 4 + ["rebuilt"] + ["replayed"] * 2


@pytest.mark.parametrize("venue", ["okx", "binance"])
async def test_a_recovering_venue_replays_from_the_checkpoint_bitwise_as_a_rebuild(
    venues: Venues, clock: ManualClock, tmp_path: Path, venue: str
) -> None:
    async with (
        _provider(venues, tmp_path / "cp", clock, checkpoints=True) as cp,
        _provider(venues, tmp_path / "rb", clock, checkpoints=False) as rb,
    ):
        await _both(cp, rb)
        # no venue lags: the checkpoint is the live map itself, nothing is copied
        ck = cp._markets["BTC"].checkpoint
        assert ck is not None and ck.lmap is None
        venues[venue][1].server_error("", status=503, times=None)
        for _ in range(3):
            clock.t += HOUR
            a, b = await _both(cp, rb)
            assert ("BTC", venue) in a.errors and a.errors.keys() == b.errors.keys()
            assert not a.rebuilt and not a.replayed
            _assert_identical(cp.features("BTC"), rb.features("BTC"))
            _assert_same_state(cp.map("BTC"), rb.map("BTC"))
            ck = cp._markets["BTC"].checkpoint  # held at the failing venue's last bar
            assert ck is not None and ck.lmap is not None
            assert ck.until == cp.status("BTC")[venue].last_bar
        venues[venue][1].clear()
        clock.t += HOUR
        a, b = await _both(cp, rb)
        assert a.recovered == b.recovered == [("BTC", venue)]
        assert a.new_bars[("BTC", venue)] == 4
        assert a.replayed == ["BTC"] and a.rebuilt == [] and b.rebuilt == ["BTC"]
        _assert_all_equal(cp, rb, tmp_path / "cp")
        assert (cp.features("BTC")["liq_n_exchanges"] == 3).all()
        ck = cp._markets["BTC"].checkpoint
        assert ck is not None and ck.lmap is None  # caught up: no copy kept
