"""`freqtrade trade --dry-run` of the sample strategy against the replay clock, guards logging.

A copy of ``strategies/liq_trend.py`` gets an eager subclass (enter on every candle, exit on the
next opposite candle) so the guards decide on every replayed candle within seconds.
"""

from __future__ import annotations

import json
import re
import sqlite3

import pandas as pd
import pytest
from ft_replay_helpers import ROOT, TESTDATA, dry_run_until

from liqsignal.replay import ReplayExchange

pytestmark = pytest.mark.slow

SPEED = 1800.0  # one 1h candle every 2 wall seconds
EAGER = '''

class LiqTrendEager(LiqTrendStrategy):
    """Test only: an entry on every candle so the guards decide each time."""

    minimal_roi = {"0": 10.0}

    def populate_indicators(self, dataframe, metadata):
        df = super().populate_indicators(dataframe, metadata)
        if self.dp.runmode.value in ("dry_run", "live"):
            last = df.iloc[-1]
            logging.getLogger(__name__).info(
                "liq-test analysed %s candle=%s oi=%s proxy=%s long_total=%s rows=%d oi_rows=%d",
                metadata["pair"], last["date"].isoformat(), last["open_interest_value"],
                last["liq_proxy_mode"], last["liq_long_total_usd"], len(df),
                df["open_interest_value"].notna().sum(),
            )
        return df

    def populate_entry_trend(self, dataframe, metadata):
        green = dataframe["close"] > dataframe["open"]
        dataframe.loc[green, ["enter_long", "enter_tag"]] = (1, "eager")
        dataframe.loc[~green, ["enter_short", "enter_tag"]] = (1, "eager")
        return dataframe

    def populate_exit_trend(self, dataframe, metadata):
        green = dataframe["close"] > dataframe["open"]
        dataframe.loc[~green, "exit_long"] = 1
        dataframe.loc[green, "exit_short"] = 1
        return dataframe
'''
ANALYSED = re.compile(
    r"liq-test analysed BTC/USDT:USDT candle=(\S+) oi=(\S+) proxy=(\S+) long_total=(\S+) "
    r"rows=(\d+) oi_rows=(\d+)"
)
DECISION = re.compile(
    r"liqsignal guard (entry|leverage|stop) BTC/USDT:USDT (long|short) candle=(\S+): (.*)"
)


def _trades(db: str) -> list[tuple]:
    try:
        with sqlite3.connect(db) as con:
            return con.execute(
                "select id, is_short, is_open, leverage, open_rate, close_rate from trades"
            ).fetchall()
    except sqlite3.Error:
        return []


def test_dry_run_logs_guard_decisions_on_replayed_candles(tmp_path):
    strategies = tmp_path / "strategies"
    strategies.mkdir()
    src = (ROOT / "strategies" / "liq_trend.py").read_text()
    (strategies / "liq_trend_eager.py").write_text(src + "\nimport logging\n" + EAGER)
    log = tmp_path / "freqtrade.log"
    db = str(tmp_path / "trades.sqlite")
    example = json.loads((ROOT / "config.example.json").read_text())
    with ReplayExchange(
        # dense pockets sit near price around 2026-01-25 09:00 in the bundled map
        TESTDATA,
        speed=SPEED,
        start="2026-01-25T07:20Z",
        forming_candle=False,
    ) as rx:
        cfg = dict(example)
        cfg["exchange"] = {
            **example["exchange"],
            "ccxt_config": rx.ccxt_config(),
            # replay time is months behind the wall clock (see test_replay_dryrun.py)
            "outdated_offset": 10**8,
            "_ft_has_params": {"ohlcv_max_poll_interval_secs": 0},
        }
        # the replay clock runs months behind the wall clock Freqtrade passes as current_time
        # (1e5 candles: eleven years of 1h bars, within the key's bound of 1e6)
        cfg["liqsignal"] = {**example["liqsignal"], "guards": {"max_age_candles": 1e5}}
        cfg.update(
            user_data_dir=str(tmp_path / "ud"),
            strategy_path=str(strategies),
            db_url=f"sqlite:///{db}",
            internals={"process_throttle_secs": 1, "heartbeat_interval": 60},
        )
        (tmp_path / "ud").mkdir()
        path = tmp_path / "config.json"
        path.write_text(json.dumps(cfg))
        proc, _ = dry_run_until(
            ["-c", str(path), "--strategy", "LiqTrendEager"],
            tmp_path,
            log,
            lambda text: (
                len(set(ANALYSED.findall(text))) >= 5 and any(not t[2] for t in _trades(db))
            ),
            seconds=70,
        )
        unknown = list(rx.unknown)

    text = log.read_text()
    assert proc.returncode == 130, text[-2000:]
    assert "Traceback" not in text.split("calling exit")[0]
    assert unknown == []

    # new candles arrived, each with the open interest of its own date (the backtest's rule)
    analysed = ANALYSED.findall(text)
    dates = [pd.Timestamp(d) for d, *_ in analysed]
    assert len(set(dates)) >= 5 and dates == sorted(dates)
    oi = pd.read_feather(TESTDATA / "futures" / "BTC_USDT_USDT-1h-open_interest.feather")
    by_date = dict(zip(oi["date"], oi["open_interest_value"], strict=True))
    for d, value, proxy, total, rows, oi_rows in analysed:
        assert float(value) == by_date[pd.Timestamp(d)]
        assert float(proxy) == 0.0 and float(total) >= 0  # the map ran on open interest
        assert int(rows) >= 480 and int(oi_rows) == int(rows)  # OI on the whole startup window

    # the guards decided on replayed candles, logged once per candle with reason and figures
    decisions = DECISION.findall(text)
    entries = [d for d in decisions if d[0] == "entry"]
    assert entries, "no entry decision logged"
    assert {d[0] for d in decisions} >= {"entry", "leverage"}
    assert all(re.match(r"(allow|refuse): ", d[3]) for d in entries)
    limit = 1.0  # liq_entry_distance_pct's default; the example config leaves it to the parameter
    for *_, verdict in entries:
        if m := re.search(r"distance_pct=(-?[\d.e+-]+)", verdict):
            assert verdict.startswith("refuse") == (float(m[1]) <= limit), verdict
    assert any("distance_pct=" in d[3] for d in entries), "no pocket figures in any decision"
    assert len(decisions) == len(set(decisions))
    assert all(pd.Timestamp(d[2]) in set(dates) for d in decisions)

    trades = _trades(db)
    assert any(not t[2] for t in trades), "no trade was entered and exited"
    assert all(1.0 <= t[3] <= 10.0 for t in trades)
    # each entry's leverage decision is the one the trade got
    lev_lines = [float(m) for m in re.findall(r"guard leverage .*? leverage=([\d.]+)", text)]
    for t in trades:
        assert t[3] in lev_lines or t[3] == 10.0
