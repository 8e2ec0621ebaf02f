"""liqsignal.freqtrade: point-in-time merges on the bundled files, add_liq_columns, the mixin."""

from __future__ import annotations

import json
import logging
import re
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pytest

from liqsignal.config import MapConfig
from liqsignal.exceptions import ConfigError
from liqsignal.features import FEATURE_COLUMNS, compute_features
from liqsignal.freqtrade import (
    LIQ_COLUMNS,
    LIQ_PLOT_CONFIG,
    SECTION_KEYS,
    LiqGuardMixin,
    add_liq_columns,
    liq_informative_pairs,
    liq_settings,
    merge_point_in_time,
    timeframe_seconds,
)
from liqsignal.guards import GuardConfig

ROOT = Path(__file__).resolve().parents[1]
FUT = ROOT / "user_data" / "data" / "binance" / "futures"
PAIR = "BTC/USDT:USDT"


def _read(kind: str, tf: str = "1h") -> pd.DataFrame:
    return pd.read_feather(FUT / f"BTC_USDT_USDT-{tf}-{kind}.feather")


@pytest.fixture(scope="module")
def candles() -> pd.DataFrame:
    df = _read("futures")
    return df[df["date"] >= pd.Timestamp("2025-11-20", tz="UTC")].reset_index(drop=True)


@pytest.fixture(scope="module")
def oi() -> pd.DataFrame:
    return _read("open_interest")


@pytest.fixture(scope="module")
def funding() -> pd.DataFrame:
    return _read("funding_rate")


class FakeDP:
    """What add_liq_columns and the mixin ask of Freqtrade's DataProvider."""

    def __init__(self, frames: dict[tuple[str, str], pd.DataFrame] | None = None) -> None:
        self.frames = frames or {}
        self.analyzed: pd.DataFrame | None = None
        self.asked: list[tuple[str, str, str]] = []
        self.fail = False

    def get_pair_dataframe(self, pair: str, timeframe: str, candle_type: str = "") -> pd.DataFrame:
        self.asked.append((pair, timeframe, candle_type))
        return self.frames.get((timeframe, candle_type), pd.DataFrame())

    def get_analyzed_dataframe(self, pair: str, timeframe: str) -> tuple[pd.DataFrame, datetime]:
        if self.fail:
            raise RuntimeError("dataprovider broke")
        df = self.analyzed if self.analyzed is not None else pd.DataFrame()
        return df, datetime.now(UTC)


# -- point in time ---------------------------------------------------------------------------


def test_oi_merge_convention_on_the_bundled_files(candles, oi):
    """1h candles get the OI row of their own open time: never a row dated after it."""
    merged = merge_point_in_time(
        candles, oi, ["open_interest_value"], timeframe="1h", other_timeframe="1h"
    )
    series = oi.set_index("date")["open_interest_value"]
    have = merged["open_interest_value"].notna()
    assert have.sum() > 2000
    same_date = 0
    for d, v in zip(merged.loc[have, "date"], merged.loc[have, "open_interest_value"], strict=True):
        known = series[series.index <= d]  # rows dated at or before the candle's open
        assert v == known.iloc[-1]  # the latest of them, never a later row
        same_date += bool(known.index[-1] == d)
    assert same_date > 0.95 * have.sum()  # nearly every candle has its own-dated row
    # candles before the first OI row get nothing, and the input frame is unchanged
    first = oi["date"].iloc[0]
    assert merged.loc[merged["date"] < first, "open_interest_value"].isna().all()
    assert "open_interest_value" not in candles.columns


def test_oi_row_from_after_a_candles_close_never_reaches_it(candles, oi):
    """Change every OI row dated after a cut: no candle closing at or before the cut moves."""
    cut = pd.Timestamp("2026-01-20 12:00", tz="UTC")
    changed = oi.copy()
    later = changed["date"] > cut - pd.Timedelta(hours=1)  # rows known after the cut
    changed.loc[later, ["open_interest_amount", "open_interest_value"]] *= 3.0
    a = merge_point_in_time(candles, oi, ["open_interest_amount"], timeframe="1h",
                            other_timeframe="1h")  # fmt: skip
    b = merge_point_in_time(candles, changed, ["open_interest_amount"], timeframe="1h",
                            other_timeframe="1h")  # fmt: skip
    closed = candles["date"] + pd.Timedelta(hours=1) <= cut
    pd.testing.assert_series_equal(
        a.loc[closed, "open_interest_amount"], b.loc[closed, "open_interest_amount"]
    )
    assert not np.allclose(a.loc[~closed, "open_interest_amount"].dropna(),
                           b.loc[~closed, "open_interest_amount"].dropna())  # fmt: skip
    # and the liq columns of those candles do not move either
    fa = compute_features(a[closed | ~closed])
    fb = compute_features(b)
    assert isinstance(fa, pd.DataFrame) and isinstance(fb, pd.DataFrame)
    pd.testing.assert_frame_equal(fa[closed.to_numpy()], fb[closed.to_numpy()])
    assert not fa[~closed.to_numpy()].equals(fb[~closed.to_numpy()])


def test_slower_oi_reaches_faster_candles_only_after_its_own_close(oi):
    """5m candles with 1h OI: the row dated 10:00 is used from the 10:55 candle (closes 11:00)."""
    dates = pd.date_range("2026-01-10 09:00", "2026-01-10 12:00", freq="5min", tz="UTC")
    five = pd.DataFrame({"date": dates, "close": 1.0})
    m = merge_point_in_time(five, oi, ["open_interest_value"], timeframe="5m",
                            other_timeframe="1h")  # fmt: skip
    by_date = dict(zip(oi["date"], oi["open_interest_value"], strict=True))
    at = dict(zip(m["date"], m["open_interest_value"], strict=True))
    ts = pd.Timestamp
    assert at[ts("2026-01-10 10:50", tz="UTC")] == by_date[ts("2026-01-10 09:00", tz="UTC")]
    assert at[ts("2026-01-10 10:55", tz="UTC")] == by_date[ts("2026-01-10 10:00", tz="UTC")]
    assert at[ts("2026-01-10 11:00", tz="UTC")] == by_date[ts("2026-01-10 10:00", tz="UTC")]


def test_funding_merge_is_backward_only(candles, funding):
    m = merge_point_in_time(candles, funding, ["funding_rate"], timeframe="1h",
                            other_timeframe="1h")  # fmt: skip
    f = funding.set_index("date")["funding_rate"]
    for _, r in m.dropna(subset=["funding_rate"]).sample(200, random_state=1).iterrows():
        known = f[f.index <= r["date"]]
        assert r["funding_rate"] == known.iloc[-1]


def test_merge_without_data_gives_nan_columns(candles):
    for other in (None, pd.DataFrame(), pd.DataFrame({"date": candles["date"]})):
        m = merge_point_in_time(candles, other, ["open_interest_value"], timeframe="1h",
                                other_timeframe="1h")  # fmt: skip
        assert m["open_interest_value"].isna().all() and len(m) == len(candles)


# -- add_liq_columns ---------------------------------------------------------------------------


def test_add_liq_columns_matches_compute_features_on_the_merged_frame(candles, oi, funding):
    dp = FakeDP({("1h", "open_interest"): oi, ("1h", "funding_rate"): funding})
    before = candles.copy()
    out = add_liq_columns(candles, {"pair": PAIR}, dp, {"timeframe": "1h"})
    pd.testing.assert_frame_equal(candles, before)  # input not mutated
    assert set(LIQ_COLUMNS) <= set(out.columns) and len(out) == len(candles)
    assert set(FEATURE_COLUMNS) - set(out.columns) == {"liq_dropped_usd"}  # a running total
    assert (out["liq_proxy_mode"] == 0).all()
    assert ("BTC/USDT:USDT", "1h", "open_interest") in dp.asked
    merged = merge_point_in_time(candles, oi, ["open_interest_amount", "open_interest_value"],
                                 timeframe="1h", other_timeframe="1h")  # fmt: skip
    merged = merge_point_in_time(merged, funding, ["funding_rate"], timeframe="1h",
                                 other_timeframe="1h")  # fmt: skip
    plain = compute_features(merged, MapConfig())
    assert isinstance(plain, pd.DataFrame)
    # the forecast (on by default) adds the probabilities and rewrites armed / armed_score
    from liqsignal.forecast import add_forecast_columns, load_model
    from liqsignal.freqtrade import LIQ_FORECAST_COLUMNS

    expected = add_forecast_columns(merged, plain, load_model())
    cols = [*LIQ_COLUMNS, *LIQ_FORECAST_COLUMNS]
    pd.testing.assert_frame_equal(out[cols], expected[cols])
    # with the forecast off, the columns are compute_features' own
    no_forecast = {"timeframe": "1h", "liqsignal": {"forecast": {"enabled": False}}}
    off = add_liq_columns(candles, {"pair": PAIR}, dp, no_forecast)
    pd.testing.assert_frame_equal(off[list(LIQ_COLUMNS)], plain[list(LIQ_COLUMNS)])
    assert not set(LIQ_FORECAST_COLUMNS) & set(off.columns)


def test_add_liq_columns_falls_back_to_volume_proxy_and_says_so_once(candles, caplog):
    dp = FakeDP()  # no open interest, no funding
    with caplog.at_level(logging.WARNING, logger="liqsignal.freqtrade"):
        out = add_liq_columns(candles, {"pair": "ETH/USDT:USDT"}, dp, {"timeframe": "1h"})
        add_liq_columns(candles, {"pair": "ETH/USDT:USDT"}, dp, {"timeframe": "1h"})
    assert (out["liq_proxy_mode"] == 1).all()
    assert out["liq_long_total_usd"].iloc[-1] > 0
    proxy_lines = [r for r in caplog.records if "volume-proxy" in r.getMessage()]
    assert len(proxy_lines) == 1 and "ETH/USDT:USDT" in proxy_lines[0].getMessage()


def test_add_liq_columns_config_section_and_timeframe_inference(candles, oi):
    dp = FakeDP({("1h", "open_interest"): oi})
    cfg = {"liqsignal": {"engine": {"half_life_hours": 12.0}}}  # no timeframe key: inferred
    out = add_liq_columns(candles, {"pair": PAIR}, dp, cfg)
    ref = add_liq_columns(candles, {"pair": PAIR}, dp, {"timeframe": "1h"})
    assert not np.allclose(out["liq_long_total_usd"], ref["liq_long_total_usd"])
    with pytest.raises(ConfigError, match="half_life_hours"):
        add_liq_columns(candles, {"pair": PAIR}, dp, {"liqsignal": {"engine": {
            "half_life_hours": -1}}})  # fmt: skip


def test_liq_settings_names_bad_keys_and_reads_the_example_config():
    bybit = liq_settings({"exchange": {"name": "bybit"}, "liqsignal": {}})
    assert bybit.engine.exchange == "bybit"  # the bot's venue unless the engine section says
    pinned = {"exchange": {"name": "bybit"}, "liqsignal": {"engine": {"exchange": "okx"}}}
    assert liq_settings(pinned).engine.exchange == "okx"
    with pytest.raises(ConfigError, match=r"liqsignal: unknown key\(s\) \['guard'\]"):
        liq_settings({"liqsignal": {"guard": {}}})
    with pytest.raises(ConfigError, match=r"guards\.on_stale"):
        liq_settings({"liqsignal": {"guards": {"on_stale": "sometimes"}}})
    example = json.loads((ROOT / "config.example.json").read_text())
    section = example["liqsignal"]
    assert list(section) == list(SECTION_KEYS)
    s = liq_settings(example)
    assert s.engine.exchange == "binance" and s.guards.enabled
    assert set(section["engine"]) <= set(MapConfig.model_fields)
    assert s.guard_keys == frozenset(section["guards"])
    assert example["margin_mode"] == "isolated" and example["dry_run"] is True
    assert {"token", "chat_id"} <= set(example["telegram"]) and not example["telegram"]["enabled"]
    assert example["entry_pricing"]["use_order_book"] and example["exit_pricing"]["use_order_book"]


def test_docs_document_every_liqsignal_key():
    text = (ROOT / "docs" / "freqtrade.md").read_text()
    example = json.loads((ROOT / "config.example.json").read_text())["liqsignal"]
    keys = set(SECTION_KEYS) | set(GuardConfig.model_fields) | set(MapConfig.model_fields)
    keys |= set(example["alerts"])
    missing = sorted(k for k in keys if f"`{k}`" not in text)
    assert missing == []


def test_plot_config_and_informative_pairs():
    cols = [c for c in LIQ_PLOT_CONFIG["main_plot"]]
    for sub in LIQ_PLOT_CONFIG["subplots"].values():
        cols += list(sub)
    assert cols and set(cols) <= set(LIQ_COLUMNS)
    pairs = liq_informative_pairs([PAIR, "ETH/USDT:USDT"], "1h")
    assert (PAIR, "1h", "open_interest") in pairs and (
        "ETH/USDT:USDT",
        "1h",
        "funding_rate",
    ) in pairs
    assert timeframe_seconds("5m") == 300 and timeframe_seconds("1d") == 86400
    with pytest.raises(ConfigError, match="timeframe"):
        timeframe_seconds("soon")


# -- the mixin ---------------------------------------------------------------------------------


class Strat(LiqGuardMixin):
    timeframe = "1h"

    def __init__(self, dp: FakeDP, config: dict[str, Any] | None = None) -> None:
        self.dp = dp
        self.config = config or {"exchange": {"name": "binance"}}


class Trade:
    def __init__(self, is_short: bool, leverage: float = 1.0) -> None:
        self.is_short = is_short
        self.leverage = leverage


def _analyzed(candles, oi) -> pd.DataFrame:
    dp = FakeDP({("1h", "open_interest"): oi})
    return add_liq_columns(candles, {"pair": PAIR}, dp, {"timeframe": "1h"})


def _replayed(full: pd.DataFrame, dp: FakeDP, n: int) -> Iterator[tuple[pd.Series, datetime]]:
    """The last ``n`` candles of ``full`` one at a time, as a live bot meets them: ``dp`` serves
    the frame up to the candle; yields its row and the time the next candle opens."""
    for i in range(len(full) - n, len(full)):
        dp.analyzed = full.iloc[: i + 1]
        row = full.iloc[i]
        yield row, row["date"].to_pydatetime() + timedelta(hours=1)


def _decision_lines(caplog) -> list[str]:
    return [r.getMessage() for r in caplog.records if "liqsignal guard " in r.getMessage()]


def test_mixin_entry_matches_the_pure_guard_and_logs_once_per_candle(candles, oi, caplog):
    from liqsignal.guards import entry_decision

    full = _analyzed(candles, oi)
    dp = FakeDP()
    cfg = GuardConfig(entry_distance_pct=2.0)
    s = Strat(dp, {"liqsignal": {"guards": {"entry_distance_pct": 2.0}}})
    refused = allowed = 0
    with caplog.at_level(logging.INFO, logger="liqsignal.freqtrade"):
        for row, now in _replayed(full, dp, 300):
            for side in ("long", "short"):
                got = s.liq_confirm_trade_entry(PAIR, row["close"], side, now)
                s.liq_confirm_trade_entry(PAIR, row["close"], side, now)  # same candle again
                want = entry_decision(row, side, row["close"], cfg).allowed
                assert got == want
                refused += not got
                allowed += got
    assert refused > 0 and allowed > 0  # both outcomes occur on real data
    lines = _decision_lines(caplog)
    assert len(lines) == 600  # one per candle and side, not two
    assert all(re.search(r"guard entry BTC/USDT:USDT (long|short) candle=\S+: (allow|refuse)", ln)
               for ln in lines)  # fmt: skip
    assert any(
        re.search(r"refuse: dense (long|short) pocket", ln) and "distance_pct=" in ln
        for ln in lines
    )


def test_mixin_leverage_and_stop(candles, oi, caplog):
    full = _analyzed(candles, oi)
    dp = FakeDP()
    s = Strat(dp)
    caps = tightened = 0
    with caplog.at_level(logging.INFO, logger="liqsignal.freqtrade"):
        for row, now in _replayed(full, dp, 500):
            for side in ("long", "short"):
                lev = s.liq_leverage(PAIR, now, row["close"], 50, 125, side)
                assert 1.0 <= lev <= 50
                caps += lev < 50
                sl = s.liq_custom_stoploss(PAIR, Trade(side == "short", 5.0), now, row["close"])
                armed = row[f"liq_{side}_armed"] > 0
                assert (sl is not None) == armed
                if sl is not None:
                    assert -1.0 < sl < 0
                    # the stop price Freqtrade derives (value / leverage) is beyond the pocket
                    stop = row["close"] * (1 - abs(sl) / 5.0 * (1 if side == "long" else -1))
                    c = row["close"]
                    edge = row[f"liq_{side}_cluster_{'high' if side == 'long' else 'low'}"]
                    if np.isnan(edge):  # armed by the forecast without a pocket: 1 % away
                        want = c * (0.99 if side == "long" else 1.01)
                    elif side == "long":  # just above the pocket, never within 0.1 % of price
                        want = min(row["liq_long_cluster_high"] * 1.002, c * 0.999)
                    else:
                        want = max(row["liq_short_cluster_low"] * 0.998, c * 1.001)
                    assert stop == pytest.approx(want)
                    tightened += 1
    assert caps > 50 and tightened > 0
    assert any("guard leverage" in ln and "capped 50x" in ln for ln in _decision_lines(caplog))
    assert any("guard stop" in ln and "tighten:" in ln for ln in _decision_lines(caplog))


def test_mixin_stale_and_missing_data_fail_open_or_closed_logged_once(candles, oi, caplog):
    full = _analyzed(candles, oi)
    dp = FakeDP()
    dp.analyzed = full
    late = full["date"].iloc[-1].to_pydatetime() + timedelta(hours=10)
    s_open = Strat(dp)
    s_closed = Strat(dp, {"liqsignal": {"guards": {"on_stale": "closed"}}})
    with caplog.at_level(logging.INFO, logger="liqsignal.freqtrade"):
        for _ in range(3):
            assert s_open.liq_confirm_trade_entry(PAIR, 1.0, "long", late) is True
            assert s_closed.liq_confirm_trade_entry(PAIR, 1.0, "long", late) is False
            assert s_open.liq_leverage(PAIR, late, 1.0, 10, 125, "long") == 10
            assert s_closed.liq_leverage(PAIR, late, 1.0, 10, 125, "long") == 1.0
            assert s_closed.liq_custom_stoploss(PAIR, Trade(False), late, 1.0) is None
    warnings = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert sum("stale liq data" in w for w in warnings) == 2  # once per strategy
    # missing: empty dataframe, and a dataprovider that raises: never an exception
    dp.analyzed = pd.DataFrame()
    assert s_closed.liq_confirm_trade_entry(PAIR, 1.0, "short", late) is False
    dp.fail = True
    assert s_open.liq_confirm_trade_entry(PAIR, 1.0, "short", late) is True
    assert s_open.liq_custom_stoploss(PAIR, Trade(True), late, 1.0) is None
    # recovery is said once
    dp.fail = False
    dp.analyzed = full
    now = full["date"].iloc[-1].to_pydatetime() + timedelta(hours=1)
    caplog.clear()
    with caplog.at_level(logging.INFO, logger="liqsignal.freqtrade"):
        s_open.liq_confirm_trade_entry(PAIR, full["close"].iloc[-1], "long", now)
    assert any("current again" in r.getMessage() for r in caplog.records)


def test_mixin_never_raises_on_a_broken_config(caplog):
    s = Strat(FakeDP(), {"liqsignal": {"guards": {"entry_distance_pct": "far"}}})
    with caplog.at_level(logging.WARNING, logger="liqsignal.freqtrade"):
        assert s.liq_confirm_trade_entry(PAIR, 1.0, "long", None) is True
        assert s.liq_leverage(PAIR, None, 1.0, 7, 125, "short") == 7
        assert s.liq_custom_stoploss(PAIR, Trade(False), None, 1.0) is None
    assert any("guards.entry_distance_pct" in r.getMessage() for r in caplog.records)


def test_hyperopt_parameters_apply_unless_the_config_sets_the_key():
    s = Strat(FakeDP())
    old = s.liq_entry_distance_pct.value
    assert s.liq_guard_config().entry_distance_pct == old
    s.liq_entry_distance_pct.value = 2.5
    try:
        assert s.liq_guard_config().entry_distance_pct == 2.5
        fixed = Strat(FakeDP(), {"liqsignal": {"guards": {"entry_distance_pct": 0.4}}})
        assert fixed.liq_guard_config().entry_distance_pct == 0.4
    finally:
        s.liq_entry_distance_pct.value = old  # the parameter lives on the class

    class Off(Strat):
        liq_guards_enabled = False

    assert Off(FakeDP()).liq_guard_config().enabled is False


def test_freqtrade_detects_the_guard_parameters_in_their_hyperopt_spaces():
    import importlib.util

    from freqtrade.strategy.hyper import detect_all_parameters

    spec = importlib.util.spec_from_file_location(
        "liq_trend_for_test", ROOT / "strategies" / "liq_trend.py"
    )
    assert spec and spec.loader
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    spaces = detect_all_parameters(mod.LiqTrendStrategy)
    assert {"liq_entry_distance_pct", "liq_leverage_buffer_pct"} <= set(spaces["buy"])
    assert {"liq_stop_min_score", "liq_stop_buffer_pct"} <= set(spaces["sell"])
    for name, field in LiqGuardMixin._LIQ_PARAMS.items():
        param = getattr(mod.LiqTrendStrategy, field)
        assert param.optimize and param.value == getattr(GuardConfig(), name)
