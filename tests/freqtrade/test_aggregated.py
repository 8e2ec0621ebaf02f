"""add_liq_columns with several ``liqsignal.exchanges``: the aggregated columns in backtests (from
stored files of several exchanges) and dry/live (from a registered provider), point in time; and
the mixin's backtest fast path (per-pair arrays) against the DataProvider path."""

from __future__ import annotations

import json
import logging
import subprocess
import threading
import time
import zipfile
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pytest
from ft_replay_helpers import BUNDLED, FREQTRADE, ROOT, TESTDATA, ft_env

from liqsignal.config import MapConfig
from liqsignal.data.provider import ExchangeStatus, aggregated_features_from_store
from liqsignal.data.store import FeatherStore
from liqsignal.exceptions import ConfigError
from liqsignal.freqtrade import (
    AGGREGATED_COLUMNS,
    LIQ_COLUMNS,
    LiqGuardMixin,
    add_liq_columns,
    liq_context,
    liq_settings,
    refresh_in_background,
    set_provider,
)
from liqsignal.guard_mixin import _same
from liqsignal.guards import GUARD_COLUMNS

PAIR = "BTC/USDT:USDT"
SCALE = {"binance": 1.0, "bybit": 0.6, "okx": 0.35}  # open interest per venue
TYPES = ("futures", "open_interest", "funding_rate")


def _src(kind: str) -> pd.DataFrame:
    return pd.read_feather(TESTDATA / "futures" / f"BTC_USDT_USDT-1h-{kind}.feather")


def write_store(
    root: Path,
    cut: dict[str, pd.Timestamp] | None = None,
    exchanges: tuple[str, ...] = ("binance", "bybit", "okx"),
) -> Path:
    """Freqtrade-layout files of BTC/USDT:USDT on ``exchanges`` under ``root`` (the replay slice,
    open interest scaled per venue); ``cut[ex]``: that venue's rows end before this date."""
    store = FeatherStore(root)
    for ex in exchanges:
        for kind in TYPES:
            df = _src(kind)
            if kind == "open_interest":
                df[["open_interest_amount", "open_interest_value"]] *= SCALE[ex]
            if cut and ex in cut:
                df = df[df["date"] < cut[ex]]
            path = store.path(ex, PAIR, "1h", kind)
            path.parent.mkdir(parents=True, exist_ok=True)
            df.reset_index(drop=True).to_feather(path)
    return root


class DP:
    """The parts of Freqtrade's DataProvider add_liq_columns uses, reading one exchange's files."""

    def __init__(self, root: Path, runmode: str = "backtest", exchange: str = "binance") -> None:
        self.root, self.runmode, self.exchange = root, runmode, exchange
        self.analyzed: pd.DataFrame | None = None

    def get_pair_dataframe(self, pair: str, timeframe: str, candle_type: str = "") -> pd.DataFrame:
        p = FeatherStore(self.root).path(self.exchange, pair, timeframe, candle_type)
        return pd.read_feather(p) if p.exists() else pd.DataFrame()

    def get_analyzed_dataframe(self, pair: str, timeframe: str) -> tuple[pd.DataFrame, datetime]:
        df = self.analyzed if self.analyzed is not None else pd.DataFrame()
        return df, datetime.now(UTC)


def _config(root: Path, exchanges: list[str]) -> dict[str, Any]:
    return {
        "timeframe": "1h",
        "exchange": {"name": "binance"},
        "datadir": str(root / "binance"),  # Freqtrade's datadir: <user_data>/data/<exchange>
        "liqsignal": {"exchanges": exchanges},
    }


def _engine(cfg: dict[str, Any]) -> MapConfig:
    return liq_settings(cfg).engine.replace(symbol=PAIR)


@pytest.fixture(scope="module")
def root(tmp_path_factory) -> Path:
    return write_store(tmp_path_factory.mktemp("agg") / "data")


@pytest.fixture(scope="module")
def candles() -> pd.DataFrame:
    return _src("futures")


def _at(feats: pd.DataFrame, dates: pd.Series) -> pd.DataFrame:
    idx = pd.DatetimeIndex(feats.index).as_unit("ns")
    pos = idx.get_indexer(pd.DatetimeIndex(dates).as_unit("ns"))
    out = feats.reindex(columns=list(AGGREGATED_COLUMNS)).to_numpy()[np.maximum(pos, 0)]
    out[pos < 0] = np.nan
    return pd.DataFrame(out, columns=list(AGGREGATED_COLUMNS))


# -- backtest: stored files of several exchanges -----------------------------------------------


def test_settings_put_the_bots_exchange_first():
    cfg = {"exchange": {"name": "binance"}, "liqsignal": {"exchanges": ["okx", "binance", "bybit"]}}
    assert liq_settings(cfg).exchanges == ("binance", "okx", "bybit")
    assert liq_settings({"exchange": {"name": "binance"}}).exchanges == ("binance",)
    # one id alone is a list of one, as for the alert service (liqsignal.config)
    assert liq_settings({"liqsignal": {"exchanges": "okx"}}).exchanges == ("okx",)
    with pytest.raises(ConfigError, match=r"liqsignal\.exchanges"):
        liq_settings({"liqsignal": {"exchanges": 5}})


def test_backtest_columns_equal_aggregated_features_from_store(root, candles):
    cfg = _config(root, ["okx", "binance", "bybit"])  # the bot's exchange goes first
    before = candles.copy()
    out = add_liq_columns(candles, {"pair": PAIR}, DP(root), cfg)
    pd.testing.assert_frame_equal(candles, before)
    assert len(out) == len(candles) and set(AGGREGATED_COLUMNS) <= set(out.columns)
    ref = aggregated_features_from_store(
        "BTC", ("binance", "okx", "bybit"), "1h", root, _engine(cfg)
    )
    assert isinstance(ref, pd.DataFrame)
    expected = _at(ref, candles["date"])
    got = out[list(AGGREGATED_COLUMNS)].reset_index(drop=True)
    # the forecast (on by default) rewrites armed / armed_score from its probabilities,
    # computed on the same aggregated columns and the bot's own candles and open interest
    from liqsignal.forecast import FORECAST_COLUMNS, add_forecast_columns, load_model

    frame = out.drop(columns=[*AGGREGATED_COLUMNS, *FORECAST_COLUMNS]).reset_index(drop=True)
    expected = add_forecast_columns(frame, expected, load_model())
    pd.testing.assert_frame_equal(got, expected[list(AGGREGATED_COLUMNS)])
    probs = out[list(FORECAST_COLUMNS)].reset_index(drop=True)
    pd.testing.assert_frame_equal(probs, expected[list(FORECAST_COLUMNS)])
    assert probs["liq_short_cascade_prob"].notna().mean() > 0.9
    assert got["liq_long_total_usd"].iloc[-1] > 0
    assert (got["liq_n_exchanges"].dropna() == 3).mean() > 0.99
    # own open interest and funding are still merged, as with one exchange
    assert out["open_interest_value"].notna().sum() > 1000 and "funding_rate" in out
    # the aggregate is not the single-exchange map: the other venues add their levels
    single = add_liq_columns(candles, {"pair": PAIR}, DP(root), _config(root, ["binance"]))
    assert "liq_n_exchanges" not in single
    ratio = got["liq_long_total_usd"].iloc[-1] / single["liq_long_total_usd"].iloc[-1]
    assert 1.5 < ratio < 2.5  # about 1 + 0.6 + 0.35


def test_single_exchange_behaviour_is_unchanged(root, candles):
    dp = DP(root)
    a = add_liq_columns(candles, {"pair": PAIR}, dp, _config(root, ["binance"]))
    b = add_liq_columns(candles, {"pair": PAIR}, dp, {"timeframe": "1h"})
    pd.testing.assert_frame_equal(a[list(LIQ_COLUMNS)], b[list(LIQ_COLUMNS)])


def test_backtest_columns_are_point_in_time(root, candles, tmp_path):
    """Files that end at ``cut`` give the same columns on every candle closed by then."""
    cfg = _config(root, ["binance", "bybit", "okx"])
    full = add_liq_columns(candles, {"pair": PAIR}, DP(root), cfg)
    cut = pd.Timestamp("2026-02-10 13:00", tz="UTC")
    short_root = write_store(tmp_path / "data", {ex: cut for ex in SCALE})
    short_cfg = _config(short_root, ["binance", "bybit", "okx"])
    early = candles[candles["date"] < cut].reset_index(drop=True)
    part = add_liq_columns(early, {"pair": PAIR}, DP(short_root), short_cfg)
    n = len(early)
    assert n > 900 and part["liq_long_total_usd"].iloc[-1] > 0
    pd.testing.assert_frame_equal(
        part[list(AGGREGATED_COLUMNS)].reset_index(drop=True),
        full[list(AGGREGATED_COLUMNS)].iloc[:n].reset_index(drop=True),
    )


def test_missing_exchange_is_flagged_by_liq_n_exchanges(root, candles, tmp_path, caplog):
    cut = pd.Timestamp("2026-02-20", tz="UTC")
    r = write_store(tmp_path / "data", {"okx": cut})
    with caplog.at_level(logging.WARNING, logger="liqsignal.freqtrade"):
        out = add_liq_columns(
            candles, {"pair": PAIR}, DP(r), _config(r, ["binance", "okx", "bybit"])
        )
    late = out["date"] >= cut
    assert (out.loc[late, "liq_n_exchanges"] == 2).all()
    assert (out.loc[~late & out["liq_n_exchanges"].notna(), "liq_n_exchanges"] == 3).mean() > 0.99
    assert any("2 of 3 exchanges" in r.getMessage() for r in caplog.records)


# -- dry/live: the registered provider, no I/O ---------------------------------------------------


class FakeProvider:
    """What add_liq_columns reads of a MapProvider: markets, features(), status()."""

    def __init__(self, feats: pd.DataFrame, stale: tuple[str, ...] = ()) -> None:
        self.feats, self.stale, self.calls = feats, stale, 0
        self.markets = ["BTC"]

    def features(self, market: str) -> pd.DataFrame:
        self.calls += 1
        return self.feats.copy()

    def status(self, market: str) -> dict[str, ExchangeStatus]:
        return {
            ex: ExchangeStatus(exchange=ex, symbol=PAIR, stale=ex in self.stale, last_bar=None,
                               error="timeout" if ex in self.stale else None, since=None)
            for ex in ("binance", "bybit", "okx")
        }  # fmt: skip


def test_live_reads_the_registered_provider(root, candles, caplog):
    cfg = _config(root, ["binance", "bybit", "okx"])
    ref = aggregated_features_from_store(
        "BTC", ("binance", "bybit", "okx"), "1h", root, _engine(cfg)
    )
    assert isinstance(ref, pd.DataFrame)
    tail = ref.iloc[-300:].copy()
    tail.iloc[-5:, tail.columns.get_loc("liq_n_exchanges")] = 2.0  # okx stale for 5 bars
    provider = FakeProvider(tail, stale=("okx",))
    set_provider(provider)
    with caplog.at_level(logging.WARNING, logger="liqsignal.freqtrade"):
        out = add_liq_columns(candles, {"pair": PAIR}, DP(root, runmode="dry_run"), cfg)
    assert provider.calls == 1
    got = out[list(AGGREGATED_COLUMNS)].reset_index(drop=True)
    # the forecast (on by default) rewrites armed / armed_score from its probabilities
    from liqsignal.forecast import FORECAST_COLUMNS, add_forecast_columns, load_model

    frame = out.drop(columns=[*AGGREGATED_COLUMNS, *FORECAST_COLUMNS]).reset_index(drop=True)
    expected = add_forecast_columns(frame, _at(tail, candles["date"]), load_model())
    pd.testing.assert_frame_equal(got, expected[list(AGGREGATED_COLUMNS)])
    assert got["liq_long_total_usd"].iloc[:-300].isna().all()  # no borrowing: NaN before
    assert out["liq_short_cascade_prob"].iloc[:-300].isna().all()  # no map, no probability
    assert out["liq_short_cascade_prob"].iloc[-250:].notna().all()
    assert got["liq_n_exchanges"].iloc[-1] == 2
    msgs = [r.getMessage() for r in caplog.records]
    assert any("BTC: okx stale" in m for m in msgs)


def test_live_without_provider_falls_back_to_the_stored_files(root, candles, caplog):
    cfg = _config(root, ["binance", "bybit", "okx"])
    with caplog.at_level(logging.WARNING, logger="liqsignal.freqtrade"):
        live = add_liq_columns(candles, {"pair": PAIR}, DP(root, runmode="live"), cfg)
    bt = add_liq_columns(candles, {"pair": PAIR}, DP(root), cfg)
    pd.testing.assert_frame_equal(live[list(AGGREGATED_COLUMNS)], bt[list(AGGREGATED_COLUMNS)])
    assert any("no provider features" in r.getMessage() for r in caplog.records)


def test_refresh_in_background_refreshes_outside_the_callbacks_and_stops():
    class P:
        def __init__(self) -> None:
            self.n, self.closed = 0, False

        async def refresh(self) -> None:
            self.n += 1
            if self.n == 2:
                raise RuntimeError("venue down")

        async def aclose(self) -> None:
            self.closed = True

    p = P()
    stop = threading.Event()
    t = refresh_in_background(p, 0.01, stop=stop)
    deadline = time.monotonic() + 5
    while p.n < 3 and time.monotonic() < deadline:
        time.sleep(0.01)
    stop.set()
    t.join(5)
    assert p.n >= 3 and p.closed and not t.is_alive()  # a failing cycle did not end it


# -- the mixin's backtest fast path --------------------------------------------------------------


class Strat(LiqGuardMixin):
    timeframe = "1h"

    def __init__(self, dp: DP, config: dict[str, Any]) -> None:
        self.dp, self.config = dp, config


def test_fast_rows_equal_the_dataprovider_slice_and_detect_changed_columns(root, candles):
    dp = DP(root)
    cfg = _config(root, ["binance", "bybit", "okx"])
    out = add_liq_columns(candles, {"pair": PAIR}, dp, cfg)
    strat = Strat(dp, cfg)
    gc = strat.liq_guard_config()
    t0 = candles["date"].iloc[600].to_pydatetime()
    for k in range(0, 200):
        now = t0 + timedelta(minutes=17 * k)
        # Freqtrade's slice: up to the last candle closed at ``now``
        dp.analyzed = out[out["date"] + pd.Timedelta(hours=1) <= now].iloc[-1000:]
        fast = strat._liq_fast_row(PAIR, now, "1h", 3600, GUARD_COLUMNS)
        ref = strat._liq_dp_row(PAIR, "1h", GUARD_COLUMNS)
        assert fast is not None and fast[1] == ref[1] and _same(fast[0], ref[0])
    assert liq_context(dp).rows[PAIR].checked and not liq_context(dp).rows[PAIR].bad
    _row, date, state = strat._liq_row(PAIR, t0, gc)
    assert state == "ok" and date == candles["date"].iloc[599].to_pydatetime()
    # a strategy that changes a guard column after add_liq_columns: the check sees it
    changed = out.copy()
    changed["liq_long_armed"] = 1.0
    add_liq_columns(candles, {"pair": PAIR}, dp, cfg)  # fresh arrays, not yet checked
    dp.analyzed = changed[changed["date"] + pd.Timedelta(hours=1) <= t0]
    strat._liq_fast_row(PAIR, t0, "1h", 3600, GUARD_COLUMNS)
    assert liq_context(dp).rows[PAIR].bad
    assert strat._liq_fast_row(PAIR, t0, "1h", 3600, GUARD_COLUMNS) is None  # dp path now
    # dry/live runs never keep arrays
    live = DP(root, runmode="dry_run")
    add_liq_columns(candles, {"pair": PAIR}, live, _config(root, ["binance"]))
    assert PAIR not in liq_context(live).rows


CHECK_STRATEGY = '''
import atexit, json, os
from liq_trend import LiqTrendStrategy
from liqsignal.guard_mixin import _same
from liqsignal.guard_mixin import _same
from liqsignal.guards import GUARD_COLUMNS

STATS = {"calls": 0, "fast": 0, "equal": 0, "missing": 0, "first": None, "bad": []}
atexit.register(lambda: open(os.environ["LIQ_CHECK_OUT"], "w").write(json.dumps(STATS)))


class LiqTrendCheck(LiqTrendStrategy):
    """Every guard read: the fast path and Freqtrade's get_analyzed_dataframe, compared."""

    def _liq_row(self, pair, now, cfg, columns=GUARD_COLUMNS):
        ref = self._liq_dp_row(pair, self.timeframe, columns)
        fast = self._liq_fast_row(pair, now, self.timeframe, 3600, columns)
        STATS["calls"] += 1
        STATS["missing"] += ref[0] is None
        if fast is not None:
            STATS["fast"] += 1
            if fast[1] == ref[1] and _same(fast[0], ref[0]):
                STATS["equal"] += 1
            elif len(STATS["bad"]) < 5:
                STATS["bad"].append([str(now), str(fast[1]), str(ref[1])])
        STATS["first"] = STATS["first"] or str(now)
        return super()._liq_row(pair, now, cfg, columns)
'''


@pytest.mark.slow
def test_fast_rows_equal_get_analyzed_dataframe_over_a_real_backtest(tmp_path):
    from liqsignal.replay import ReplayExchange

    sdir = tmp_path / "strategies"
    sdir.mkdir()
    (sdir / "liq_trend.py").write_text((ROOT / "strategies" / "liq_trend.py").read_text())
    (sdir / "liq_check.py").write_text(CHECK_STRATEGY)
    example = json.loads((ROOT / "config.example.json").read_text())
    out = tmp_path / "stats.json"
    with ReplayExchange(BUNDLED) as rx:
        cfg = dict(example)
        cfg["exchange"] = {**example["exchange"], "ccxt_config": rx.ccxt_config()}
        cfg["user_data_dir"] = str(tmp_path / "ud")
        guards = {**example["liqsignal"]["guards"], "entry_distance_pct": 2.0}
        cfg["liqsignal"] = {**example["liqsignal"], "guards": guards}
        (tmp_path / "ud").mkdir()
        (tmp_path / "bt").mkdir()
        path = tmp_path / "config.json"
        path.write_text(json.dumps(cfg))
        proc = subprocess.run(
            [str(FREQTRADE), "backtesting", "-c", str(path), "--datadir", str(BUNDLED),
             "--strategy", "LiqTrendCheck", "--strategy-path", str(sdir),
             "--timerange", "20251220-20260304", "--export", "trades",
             "--backtest-directory", str(tmp_path / "bt")],
            capture_output=True, text=True, timeout=300,
            env={**ft_env(), "LIQ_CHECK_OUT": str(out)},
        )  # fmt: skip
    assert proc.returncode == 0, proc.stderr[-3000:]
    stats = json.loads(out.read_text())
    (zip_path,) = (tmp_path / "bt").glob("*.zip")
    with zipfile.ZipFile(zip_path) as z:
        name = next(n for n in z.namelist() if n.endswith(".json") and "_config" not in n)
        trades = json.loads(z.read(name))["strategy"]["LiqTrendCheck"]["trades"]
    assert len(trades) >= 10
    # every callback read (entries, leverage, each open-trade candle's stop) took the fast
    # path and found exactly the row Freqtrade's slice ends at
    print(f"fast path over a real backtest: {stats}")
    assert stats["calls"] > 1000, stats
    assert stats["fast"] == stats["calls"] and stats["equal"] == stats["calls"], stats
    assert stats["missing"] == 0
