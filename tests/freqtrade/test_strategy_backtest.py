"""`freqtrade backtesting` of LiqTrendStrategy and its control on the bundled BTC data, offline.

Markets come from the replay exchange (one exchangeInfo request); candles, open interest and
funding from the bundled files. The guards' decisions in the run are checked against the pure
guard functions on the same candles, recomputed here from the files.
"""

from __future__ import annotations

import json
import re
import subprocess
import zipfile
from pathlib import Path

import pandas as pd
import pytest
from ft_replay_helpers import BUNDLED, FREQTRADE, ROOT, ft_env

from liqsignal.freqtrade import add_liq_columns
from liqsignal.guards import GuardConfig, entry_decision, leverage_decision
from liqsignal.replay import ReplayExchange

pytestmark = pytest.mark.slow

STRATEGIES = ROOT / "strategies"
TIMERANGE = "20251220-20260304"
STARTUP = 480  # LiqTrendStrategy.startup_candle_count
# set in the config's guards section, so it wins over the hyperoptable parameter (default 1.0):
# a wider limit makes refusals certain on any calibration of the map
GUARDS = {"entry_distance_pct": 2.0, "log_backtest_decisions": True}


def _run(args: list[str], timeout: float = 180) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [str(FREQTRADE), *args], capture_output=True, text=True, timeout=timeout, env=ft_env()
    )


@pytest.fixture(scope="module")
def backtest(tmp_path_factory) -> dict:
    """One backtesting run of both strategies (shared: it is the slow part)."""
    tmp = tmp_path_factory.mktemp("bt")
    example = json.loads((ROOT / "config.example.json").read_text())
    with ReplayExchange(BUNDLED) as rx:
        cfg = dict(example)
        cfg["liqsignal"] = {
            **example["liqsignal"],
            "guards": {**example["liqsignal"]["guards"], **GUARDS},
        }
        cfg["exchange"] = {**example["exchange"], "ccxt_config": rx.ccxt_config()}
        cfg["user_data_dir"] = str(tmp / "ud")
        cfg["strategy_path"] = str(STRATEGIES)
        (tmp / "ud").mkdir()
        (tmp / "bt").mkdir()
        path = tmp / "config.json"
        path.write_text(json.dumps(cfg))
        log = tmp / "ft.log"
        proc = _run(
            [
                "backtesting", "-c", str(path), "--datadir", str(BUNDLED),
                "--strategy-list", "LiqTrendStrategy", "LiqTrendControl",
                "--timerange", TIMERANGE, "--export", "trades",
                "--backtest-directory", str(tmp / "bt"), "--logfile", str(log),
            ]
        )  # fmt: skip
        requests = [(r.method, r.path) for r in rx.requests]
    assert proc.returncode == 0, proc.stderr[-3000:]
    (zip_path,) = (tmp / "bt").glob("*.zip")
    with zipfile.ZipFile(zip_path) as z:
        name = next(n for n in z.namelist() if n.endswith(".json") and "_config" not in n)
        result = json.loads(z.read(name))
    return {
        "requests": requests,
        "result": result["strategy"],
        "log": log.read_text(),
        "stdout": proc.stdout,
        "config": cfg,
    }


@pytest.fixture(scope="module")
def analysed() -> pd.DataFrame:
    """The sample strategy's liq columns, computed here on the same candles the backtest loads."""
    fut = pd.read_feather(BUNDLED / "futures" / "BTC_USDT_USDT-1h-futures.feather")
    start = pd.Timestamp(TIMERANGE.split("-")[0], tz="UTC") - pd.Timedelta(hours=STARTUP)
    end = pd.Timestamp(TIMERANGE.split("-")[1], tz="UTC")
    fut = fut[(fut["date"] >= start) & (fut["date"] < end)].reset_index(drop=True)

    class DP:
        def get_pair_dataframe(self, pair, timeframe, candle_type=""):
            return pd.read_feather(BUNDLED / "futures" / f"BTC_USDT_USDT-1h-{candle_type}.feather")

    example = json.loads((ROOT / "config.example.json").read_text())  # same engine settings
    df = add_liq_columns(fut, {"pair": "BTC/USDT:USDT"}, DP(), example)
    return df.set_index("date")


def test_backtest_asks_the_replay_exchange_only_for_markets(backtest):
    assert backtest["requests"] == [("GET", "/fapi/v1/exchangeInfo")]


def test_sample_and_control_both_trade_and_differ(backtest):
    res = backtest["result"]
    sample, control = res["LiqTrendStrategy"], res["LiqTrendControl"]
    assert len(sample["trades"]) >= 10 and len(control["trades"]) >= 10
    # the control runs at the strategy's target leverage, no guard touches it
    assert {t["leverage"] for t in control["trades"]} == {10.0}
    assert {t["enter_tag"] for t in control["trades"]} == {"trend"}
    # the sample also takes post-flush entries (liq columns reached the strategy)
    assert "flush_reset" in {t["enter_tag"] for t in sample["trades"]}
    assert all(1.0 <= t["leverage"] <= 10.0 for t in sample["trades"])
    # the summary table reports both
    assert "LiqTrendStrategy" in backtest["stdout"] and "LiqTrendControl" in backtest["stdout"]


def test_guard_decisions_in_the_run_match_the_pure_guards(backtest, analysed):
    trades = backtest["result"]["LiqTrendStrategy"]["trades"]
    cfg = GuardConfig(**GUARDS)  # the other thresholds: the parameters' defaults
    for t in trades:
        open_date = pd.Timestamp(t["open_date"])
        row = analysed.loc[open_date - pd.Timedelta(hours=1)]  # the signal candle
        side = "short" if t["is_short"] else "long"
        assert entry_decision(row, side, t["open_rate"], cfg).allowed, t
        want = leverage_decision(row, side, t["open_rate"], 10.0, 125.0, cfg)
        assert t["leverage"] == pytest.approx(want.leverage), t


def test_refusals_and_caps_are_logged_with_their_figures(backtest, analysed):
    log = backtest["log"]
    refusals = re.findall(
        r"guard entry BTC/USDT:USDT (long|short) candle=(\S+): refuse: dense \w+ pocket .*?"
        r"distance_pct=(-?[\d.e+-]+)",
        log,
    )
    assert refusals, "the entry guard refused nothing"
    for side, candle, dist in refusals:
        assert float(dist) <= GUARDS["entry_distance_pct"]
        row = analysed.loc[pd.Timestamp(candle)]
        assert row[f"liq_{side}_cluster_usd"] > 0
    assert "guard leverage BTC/USDT:USDT" in log
    # the guard thresholds are Freqtrade strategy parameters (hyperoptable)
    assert "Strategy Parameter(default): liq_entry_distance_pct = 1.0" in log
    # decisions are logged once per candle: no identical line twice
    lines = [ln.split(" - ", 3)[-1] for ln in log.splitlines() if "liqsignal guard " in ln]
    assert len(lines) == len(set(lines))
    assert "Traceback" not in log


def test_plot_dataframe_shows_the_liq_columns(backtest, tmp_path):
    with ReplayExchange(BUNDLED) as rx:
        cfg = dict(backtest["config"])
        cfg["exchange"] = {**cfg["exchange"], "ccxt_config": rx.ccxt_config()}
        cfg["user_data_dir"] = str(tmp_path)
        path = tmp_path / "config.json"
        path.write_text(json.dumps(cfg))
        proc = _run(
            [
                "plot-dataframe", "-c", str(path), "--datadir", str(BUNDLED),
                "--strategy", "LiqTrendStrategy", "--timerange", "20260201-20260210", "--no-trades",
            ]
        )  # fmt: skip
    assert proc.returncode == 0, proc.stderr[-3000:]
    (html,) = Path(tmp_path / "plot").glob("*.html")
    text = html.read_text()
    for col in ("liq_long_cluster_price", "liq_short_density_usd", "liq_long_armed_score",
                "liq_short_cascade_depth"):  # fmt: skip
        assert col in text
