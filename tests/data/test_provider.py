"""MapProvider with the real ccxt clients against local Binance, Bybit and OKX replays on one clock.

Each venue serves its own copy of the bundled real BTC slice (``tests/testdata/replay_binance``)
with open interest scaled per venue (Binance 1, Bybit 0.6, OKX 0.35) so the per-exchange shares
differ. A shared manual replay clock advances hour by hour; the provider reads the same clock.
"""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from venues_util import VENUES, ccxt_configs

import liqsignal.replay.bybit
import liqsignal.replay.okx  # noqa: F401  (registers the venue)
from liqsignal.config import MapConfig
from liqsignal.data.exchanges import RetryPolicy
from liqsignal.data.provider import (
    PROVIDER_COLUMNS,
    MapProvider,
    MarketSpec,
    aggregated_features_from_store,
    oi_timeframe_for,
)
from liqsignal.exceptions import ConfigError, DataError
from liqsignal.replay.server import ManualClock, ReplayExchange
from liqsignal.replay.testing import Faults

OI_SCALE = {"binance": 1.0, "bybit": 0.6, "okx": 0.35}
VENUE_ID = {"binance": "BTCUSDT", "bybit": "BTCUSDT", "okx": "BTC-USDT-SWAP"}
START = pd.Timestamp("2026-01-20 03:30", tz="UTC")  # half past: the 03:00 candle is forming
HOUR = pd.Timedelta(hours=1)
FAST = RetryPolicy(attempts=2, base_delay=0.01, max_delay=0.02, max_retry_after=0.1)
HISTORY = 150
_OI = ["open_interest_amount", "open_interest_value"]
_TAKER = ["taker_buy_volume", "taker_buy_quote_volume"]


@pytest.fixture(scope="module")
def venue_oi_scale() -> dict[str, float]:
    return OI_SCALE


@pytest.fixture
def clock(venues: dict[str, tuple[ReplayExchange, Faults]]) -> ManualClock:
    clk = ManualClock(START)
    for rx, faults in venues.values():
        rx.clock = clk
        faults.clear()
    return clk


def _provider(
    venues: dict[str, tuple[ReplayExchange, Faults]],
    clock: ManualClock,
    datadir: Path,
    **kw: object,
) -> MapProvider:
    return MapProvider(
        [MarketSpec("BTC", VENUES)],
        datadir=datadir,
        ccxt_config=ccxt_configs(venues, timeout_ms=5000),
        history_bars=HISTORY,
        clock=clock,
        retry=FAST,
        history_limits=False,
        **kw,  # type: ignore[arg-type]
    )


def _assert_same(live: pd.DataFrame, stored: pd.DataFrame) -> None:
    """Live features equal the stored-file computation on the same rows (to rounding)."""
    assert list(live.columns) == list(PROVIDER_COLUMNS) == list(stored.columns)
    tail = stored.iloc[-len(live) :]
    assert (live.index == tail.index).all()
    np.testing.assert_allclose(
        live.to_numpy(), tail.to_numpy(), rtol=1e-9, atol=1e-6, equal_nan=True
    )


def _assert_shares(provider: MapProvider, names: set[str]) -> None:
    snap = provider.snapshot("BTC", scan_range_pct=30.0)
    assert snap.clusters, "expected clusters on the real BTC slice"
    for c in snap.clusters:
        assert set(c.shares) == names
        assert math.isclose(sum(c.shares.values()), 1.0, rel_tol=1e-9)
    ex_cols = {c.split("_")[0] for c in snap.levels.columns if c not in ("long_usd", "short_usd")}
    assert ex_cols == names
    assert snap.price == provider.price("BTC") > 0


async def test_incremental_refresh_equals_full_rebuild_and_store(
    venues: dict[str, tuple[ReplayExchange, Faults]], clock: ManualClock, tmp_path: Path
) -> None:
    async with _provider(venues, clock, tmp_path) as p:
        first = await p.refresh()
        assert first.rebuilt == ["BTC"] and not first.errors and first.requests > 10
        closed = pd.Timestamp("2026-01-20 02:00", tz="UTC")  # 03:00 is still forming
        for ex in VENUES:
            assert first.new_bars[("BTC", ex)] >= HISTORY
            st = p.status("BTC")[ex]
            assert (st.stale, st.error, st.symbol) == (False, None, "BTC/USDT:USDT")
            assert st.last_bar == closed
        feats = p.features("BTC")
        assert len(feats) == HISTORY and feats.index[-1] == closed
        assert (feats["liq_n_exchanges"] == 3).all()
        # the store holds the fetched rows in Freqtrade's layout
        assert (tmp_path / "okx" / "futures" / "BTC_USDT_USDT-1h-futures.feather").exists()
        assert (
            tmp_path / "binance" / "futures" / "BTC_USDT_USDT-1h-open_interest.feather"
        ).exists()
        assert (
            tmp_path / "binance" / "futures" / "liqsignal" / "BTC_USDT_USDT-1h-taker_buy.feather"
        ).exists()

        idle = await p.refresh()  # same clock: nothing new is due, nothing is asked
        assert idle.requests == 0 and set(idle.new_bars.values()) == {0} and not idle.rebuilt

        for step in (1, 3):
            clock.t += step * HOUR
            rep = await p.refresh()
            assert not rep.errors and not rep.rebuilt and not rep.replayed and not rep.became_stale
            assert rep.new_bars == {("BTC", ex): step for ex in VENUES}
            assert 0 < rep.requests <= 3 * 4 * step  # candles, OI, funding (+ taker): few pages
            assert p.features("BTC").index[-1] == clock.t.floor("h") - HOUR
        assert rep.engine_s < rep.wall_s

        live = p.features("BTC")
        stored, full = aggregated_features_from_store(
            "BTC", VENUES, "1h", tmp_path, MapConfig(), return_map=True
        )
        _assert_same(live, stored)
        # the incremental state equals a full rebuild's, bin by bin
        inc = p.map("BTC")
        assert inc.last_time == full.last_time
        assert (inc.levels().index == full.levels().index).all()
        np.testing.assert_allclose(
            inc.levels().to_numpy(), full.levels().to_numpy(), rtol=1e-9, atol=1e-6
        )
        _assert_shares(p, set(VENUES))
        shares = {ex: sum(c.shares[ex] for c in p.snapshot("BTC", 30.0).clusters) for ex in VENUES}
        assert shares["binance"] > shares["bybit"] > shares["okx"] > 0  # follows the OI scale


@pytest.mark.parametrize(
    ("venue", "fault"),
    [("okx", "server_error"), ("bybit", "delist"), ("binance", "server_error")],
)
async def test_failing_exchange_is_stale_excluded_and_recovers(
    venues: dict[str, tuple[ReplayExchange, Faults]],
    clock: ManualClock,
    tmp_path: Path,
    venue: str,
    fault: str,
) -> None:
    others = [v for v in VENUES if v != venue]
    faults = venues[venue][1]
    async with _provider(venues, clock, tmp_path) as p:
        await p.refresh()
        if fault == "server_error":
            faults.server_error("", status=503, times=None)
        else:
            faults.delist(VENUE_ID[venue])
        clock.t += 2 * HOUR
        rep = await p.refresh()
        assert rep.became_stale == [("BTC", venue)]
        err = rep.errors[("BTC", venue)]
        assert venue in err and "BTC" in err
        assert ("TemporaryDataError" if fault == "server_error" else "PermanentDataError") in err
        assert all(rep.new_bars[("BTC", o)] == 2 for o in others)  # the others carry on
        st = p.status("BTC")
        assert st[venue].stale and st[venue].error == err and st[venue].since == clock.t
        assert all(not st[o].stale and st[o].error is None for o in others)
        feats = p.features("BTC")
        assert feats.index[-1] == clock.t.floor("h") - HOUR
        assert (feats["liq_n_exchanges"].iloc[-2:] == 2).all()
        _assert_shares(p, set(others))
        assert p.price("BTC") > 0

        clock.t += HOUR  # still failing: stays stale, not reported again
        rep = await p.refresh()
        assert rep.became_stale == [] and ("BTC", venue) in rep.errors
        assert p.status("BTC")[venue].since == clock.t - HOUR

        faults.clear()
        clock.t += HOUR
        rep = await p.refresh()
        assert rep.recovered == [("BTC", venue)] and not rep.errors
        assert rep.new_bars[("BTC", venue)] == 4  # back-filled
        # its late bars entered through the checkpoint taken before it failed, not a rebuild
        assert rep.replayed == ["BTC"] and rep.rebuilt == []
        assert not p.status("BTC")[venue].stale and p.status("BTC")[venue].since is None
        assert (p.features("BTC")["liq_n_exchanges"] == 3).all()
        _assert_shares(p, set(VENUES))
        _assert_same(
            p.features("BTC"), aggregated_features_from_store("BTC", VENUES, "1h", tmp_path)
        )


async def test_lagging_exchange_becomes_stale_after_the_allowed_bars(
    venues: dict[str, tuple[ReplayExchange, Faults]], clock: ManualClock, tmp_path: Path
) -> None:
    bybit = venues["bybit"][0]
    async with _provider(venues, clock, tmp_path, stale_after_bars=2.0) as p:
        await p.refresh()
        last = p.status("BTC")["bybit"].last_bar
        assert last is not None
        # Bybit keeps answering, but its data stops where it is (its own clock stands still)
        bybit.clock = ManualClock(clock.t.floor("h") - pd.Timedelta(milliseconds=1))
        stale_at = []
        for _ in range(5):
            clock.t += HOUR
            rep = await p.refresh()
            assert not rep.errors and rep.new_bars[("BTC", "bybit")] == 0  # lagging, no error
            if rep.became_stale:
                stale_at.append(clock.t)
        # next bar due at last + 2h (its close); stale 2 bar-lengths later
        assert stale_at == [(last + 4 * HOUR).ceil("h") + pd.Timedelta(minutes=30)]
        st = p.status("BTC")["bybit"]
        assert st.stale and st.error is None and st.last_bar == last
        feats = p.features("BTC")
        assert (feats["liq_n_exchanges"].iloc[-5:] == 2).all()  # binance and okx carried on
        _assert_shares(p, {"binance", "okx"})
        bybit.clock = clock
        clock.t += HOUR
        rep = await p.refresh()
        assert rep.recovered == [("BTC", "bybit")]
        assert rep.replayed == ["BTC"] and rep.rebuilt == []  # through the checkpoint
        assert rep.new_bars[("BTC", "bybit")] == 6
        _assert_same(
            p.features("BTC"), aggregated_features_from_store("BTC", VENUES, "1h", tmp_path)
        )


async def test_bad_arguments_and_reads_before_refresh(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="unknown 'ftx'"):
        MarketSpec("BTC", ("binance", "ftx"))
    with pytest.raises(ConfigError, match="duplicate"):
        MarketSpec("BTC", ("okx", "okx"))
    with pytest.raises(ConfigError, match="timeframe"):
        MarketSpec("BTC", ("okx",), "1x")
    with pytest.raises(ConfigError, match="listed twice"):
        MapProvider([MarketSpec("BTC", ("okx",)), MarketSpec("BTC", ("bybit",))])
    async with MapProvider([MarketSpec("ETH", ("okx",))], datadir=tmp_path) as p:
        with pytest.raises(ConfigError, match="'BTC' is not served"):
            p.status("BTC")
        with pytest.raises(DataError, match="no map yet"):
            p.snapshot("ETH")
        assert p.features("ETH").empty and list(p.features("ETH").columns) == list(PROVIDER_COLUMNS)
        assert not p.status("ETH")["okx"].stale
    assert oi_timeframe_for("okx", "15m") == "5m" and oi_timeframe_for("hyperliquid", "1h") is None


async def test_rows_the_store_could_not_take_make_the_feed_stale_and_are_fetched_again(
    venues: dict[str, tuple[ReplayExchange, Faults]],
    clock: ManualClock,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """A journal write failing for one exchange's files (disk full): that feed is an error this
    round (stale, its rows not counted) and forgets its rows; the next refresh asks again and
    the live map equals the stored-file computation."""
    from liqsignal.data.store import FeatherStore, StoreWriteError

    real_commit = FeatherStore.commit

    def okx_full(self: FeatherStore) -> dict[Path, StoreWriteError]:
        okx = [p for p, _, _ in self._batch if p.parts[-3] == "okx"]
        self._batch = [b for b in self._batch if b[0].parts[-3] != "okx"]
        failed = real_commit(self)
        failed.update({p: StoreWriteError(f"{p}: cannot write (No space left)") for p in okx})
        return failed

    async with _provider(venues, clock, tmp_path) as p:
        await p.refresh()
        clock.t += HOUR
        monkeypatch.setattr(FeatherStore, "commit", okx_full)
        rep = await p.refresh()
        monkeypatch.undo()
        assert set(rep.errors) == {("BTC", "okx")} and "No space left" in rep.errors[("BTC", "okx")]
        assert rep.new_bars[("BTC", "okx")] == 0 and p.status("BTC")["okx"].stale
        clock.t += HOUR
        rep = await p.refresh()
        assert not rep.errors and ("BTC", "okx") in rep.recovered
        live = p.features("BTC")
        stored = aggregated_features_from_store("BTC", VENUES, "1h", tmp_path, MapConfig())
        _assert_same(live, stored)


def test_funding_is_asked_at_most_hourly_while_its_interval_is_unknown() -> None:
    from liqsignal.data.provider import _funding_due

    t = pd.Timestamp("2026-01-20 03:00", tz="UTC")
    minute = pd.Timedelta(minutes=1)
    none = pd.DataFrame({"date": pd.DatetimeIndex([], tz="UTC"), "funding_rate": []})
    one = pd.DataFrame({"date": [t - 5 * HOUR], "funding_rate": [1e-4]})
    for rows in (none, one):  # fewer than two rows: no interval to expect the next one by
        assert _funding_due(rows, t)  # never answered
        assert not _funding_due(rows, t, asked=t - HOUR + minute)
        assert _funding_due(rows, t, asked=t - HOUR)
    two = pd.DataFrame({"date": [t - 16 * HOUR, t - 8 * HOUR], "funding_rate": [1e-4, 2e-4]})
    # two rows: due once the interval between them has passed, as before, whenever last asked
    assert _funding_due(two, t, asked=t - minute) and not _funding_due(two, t - minute)


def test_new_rows_are_merged_as_merge_point_in_time_merges_full_frames() -> None:
    """The live advance's numpy merges (``after`` given) give exactly the values of the
    pandas merges of a full build, row by row, on ragged random rows."""
    from liqsignal.data.provider import _exchange_frame, _Frames
    from liqsignal.data.store import normalize_frame

    rng = np.random.default_rng(7)
    t0 = pd.Timestamp("2026-01-01", tz="UTC")
    seen = 0
    for trial in range(60):
        tf, oi_tf = [("1h", "1h"), ("1m", None), ("15m", "5m"), ("1h", None)][trial % 4]
        step = pd.Timedelta(tf)
        n = int(rng.integers(1, 60))
        dates = t0 + step * np.sort(rng.choice(200, n, replace=False))
        price = 100 + rng.random(n)
        candles = normalize_frame(
            pd.DataFrame(
                {"date": dates, "open": price, "high": price + 1, "low": price - 1}
                | {"close": price, "volume": rng.random(n)}
            ),
            "futures",
        )

        def sparse(freq: pd.Timedelta, k: int, cols: list[str], ctype: str) -> pd.DataFrame:
            d = t0 + freq * np.sort(rng.choice(400, k, replace=False))
            vals = {c: np.where(rng.random(k) < 0.2, np.nan, rng.random(k)) for c in cols}
            return normalize_frame(pd.DataFrame({"date": d, **vals}), ctype)

        oi = sparse(pd.Timedelta(oi_tf or "1h"), int(rng.integers(0, 80)), _OI, "open_interest")
        funding = sparse(
            pd.Timedelta("1h"), int(rng.integers(0, 20)), ["funding_rate"], "funding_rate"
        )
        taker = sparse(step, int(rng.integers(1, 80)), _TAKER, "taker_buy") if trial % 3 else None
        fr = _Frames(candles, oi, funding, taker)
        now = t0 + step * int(rng.integers(0, 220)) + pd.Timedelta(seconds=int(rng.integers(0, 60)))
        full = _exchange_frame(fr, tf, oi_tf, now=now)
        for after in (dates[0] - step, dates[int(rng.integers(0, n))], dates[-1]):
            got = _exchange_frame(fr, tf, oi_tf, now=now, after=after)
            want = full[full["date"] > after].reset_index(drop=True)
            if want.empty:  # nothing ready: the candle columns only, as before
                assert got.empty and list(got.columns) == list(candles.columns)
                continue
            seen += 1
            pd.testing.assert_frame_equal(got, want, check_exact=True)
    assert seen > 60


def test_funding_requests_after_a_settlement_are_spread_and_all_in_time() -> None:
    """500 markets x 3 venues at 1m: after a settlement each feed asks at its own phase, about
    ten per venue and minute instead of all 500 in one refresh, every one before the first bar
    that reads the new row closes (D + 1h), none before the settlement."""
    from liqsignal.data.provider import FUNDING_SPREAD, _funding_due, _funding_phase

    d = pd.Timestamp("2026-01-20 08:00", tz="UTC")
    rows = pd.DataFrame({"date": [d - 16 * HOUR, d - 8 * HOUR], "funding_rate": [1e-4, 2e-4]})
    markets = [f"Q{i:03d}" for i in range(500)]
    for venue in ("binance", "bybit", "okx"):
        phases = [_funding_phase(venue, m) for m in markets]
        assert all(pd.Timedelta(0) <= p < FUNDING_SPREAD for p in phases)
        assert phases == [_funding_phase(venue, m) for m in markets]  # the same in every run
        first_due: dict[str, pd.Timestamp] = {}
        for k in range(-1, 61):  # one refresh a minute
            now = d + pd.Timedelta(minutes=k)
            for m, ph in zip(markets, phases, strict=True):
                if m not in first_due and _funding_due(rows, now, phase=ph):
                    first_due[m] = now
        assert len(first_due) == 500 and min(first_due.values()) >= d
        assert max(first_due.values()) < d + HOUR  # before the bar reading D closes
        per_minute = pd.Series(list(first_due.values())).value_counts()
        assert per_minute.max() <= 25, per_minute.max()  # ~10 expected; not 500 at once
    # while the interval is unknown the provider records the answer ``phase`` earlier: the
    # next hourly request comes at that phase, still within the hour of the last answer
    one = rows.iloc[-1:]
    ph = _funding_phase("okx", "Q007")
    asked = d - ph
    assert not _funding_due(one, d + HOUR - ph - pd.Timedelta(minutes=1), asked=asked)
    assert _funding_due(one, d + HOUR - ph, asked=asked)
