"""Late bars through the map's checkpoint: bitwise the result of a rebuild.

Two providers refresh side by side against the same Binance, Bybit and OKX replays (real ccxt
clients, one manual clock): one as it runs (checkpoints on), one that rebuilds the market's map
from every stored row at each late bar (the behaviour before checkpoints). After every refresh
both must hold bitwise-equal features and engine state, and both must equal the computation on
the stored files (:func:`aggregated_features_from_store`), bit for bit.

Bybit's replay clock runs 91 minutes behind, so each of its candles arrives one refresh after
the other venues' (a lagging venue, not stale). Binance's funding (the reference exchange's, in
the features) has an extra row at 04:00 between its 8-hourly ones: the provider, expecting the
next row at 08:00 (plus its funding phase), fetches it only then, after bars that read it
entered the map, so the checkpoint holding those bars is dropped and that refresh rebuilds.
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
    _funding_phase,
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
        # 09:30: Binance's 04:00 and 08:00 funding rows arrive together (Binance BTC asks
        # 43 min after a settlement, its funding phase: the first refresh after 08:43); bars
        # from 04:00 on read the 04:00 one, and the checkpoint holds them: a rebuild
        assert _funding_phase("binance", "BTC") == pd.Timedelta(minutes=43, seconds=9)
        assert seen == ["replayed"] * 5 + ["rebuilt"] + ["replayed"]


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


async def test_on_a_bar_boundary_every_venue_delivers_its_newest_bar_in_few_requests(
    venues: Venues, clock: ManualClock, tmp_path: Path
) -> None:
    """The clock exactly on the hour: OKX's newest closed candle comes in the same refresh as
    the other venues' (it came one refresh late, forcing a rebuild in every refresh, when its
    exclusive end bound cut it off), and a steady refresh asks each venue once per kind."""
    clock.t = pd.Timestamp("2026-01-20 04:00", tz="UTC")
    async with _provider(venues, tmp_path, clock, checkpoints=True) as p:
        await p.refresh()
        for _ in range(2):
            clock.t += HOUR
            for rx, _ in venues.values():
                rx.clear_log()
            rep = await p.refresh()
            assert not rep.errors and not rep.rebuilt and not rep.replayed
            assert rep.new_bars == {("BTC", ex): 1 for ex in VENUES}
            newest = clock.t - HOUR
            assert {st.last_bar for st in p.status("BTC").values()} == {newest}
            asked = {
                v: sorted(r.path.rsplit("/", 1)[-1] for r in rx.requests)
                for v, (rx, _) in venues.items()
            }
            assert asked == {
                "binance": ["klines", "klines", "openInterestHist"],  # candles, taker buy, OI
                "bybit": ["kline", "open-interest"],
                "okx": ["history-candles", "open-interest-history"],
            }
            limits = [
                r.query.get("limit")
                for r in venues["binance"][0].requests
                if r.path.endswith("/klines")  # the three requests run concurrently
            ]
            assert limits == ["1", "1"]  # one new candle: the 1-unit request weight
            ck = p._markets["BTC"].checkpoint
            assert ck is not None and ck.lmap is None and ck.until == newest  # nothing copied


def test_a_map_copy_is_independent_and_continues_bitwise_as_the_original() -> None:
    from liqsignal import nb

    rng = np.random.default_rng(3)
    n = 120
    close = 100 * np.exp(np.cumsum(rng.normal(0, 0.004, n)))
    x = np.full((n, 1, nb.N_IN), np.nan)
    x[:, 0, nb.I_OPEN] = np.r_[close[0], close[:-1]]
    x[:, 0, nb.I_HIGH] = np.maximum(x[:, 0, nb.I_OPEN], close) * 1.002
    x[:, 0, nb.I_LOW] = np.minimum(x[:, 0, nb.I_OPEN], close) * 0.998
    x[:, 0, nb.I_CLOSE] = close
    x[:, 0, nb.I_VOL] = rng.uniform(10, 100, n)
    ts = 1_768_000_000.0 + 3600.0 * np.arange(n)
    a = LiquidationMap(MapConfig(heatmap_frames=24), proxy=True)
    a.update(ts[:60], x[:60])
    b = a.copy()
    before = {name: getattr(b, name).copy() for name in STATE}
    out_a = a.update(ts[60:90], x[60:90])  # the original moves on: the copy stays as it was
    for name in STATE:
        assert np.array_equal(_bits(getattr(b, name)), _bits(before[name])), name
    assert b.consume_to(float(b.reference_price()) * 0.9, "long") > 0  # its own arrays
    c = LiquidationMap(MapConfig(heatmap_frames=24), proxy=True)
    c.update(ts[:60], x[:60])
    assert not np.array_equal(_bits(b.long_raw), _bits(c.long_raw))  # consumed in b only
    d = c.copy()
    out_d = d.update(ts[60:90], x[60:90])
    assert np.array_equal(_bits(out_a), _bits(out_d))
    a.update(ts[90:], x[90:])
    d.update(ts[90:], x[90:])
    _assert_same_state(a, d)
