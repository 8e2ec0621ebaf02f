"""`freqtrade lookahead-analysis` and `freqtrade recursive-analysis` on LiqTrendStrategy, offline.

The lookahead run is checked to be able to fail: a copy of the strategy that merges open interest
two hours early (rows dated before they are known) must be reported as biased.
"""

from __future__ import annotations

import json
import re
import shutil
import subprocess
from pathlib import Path

import pytest
from ft_replay_helpers import BUNDLED, FREQTRADE, ROOT, ft_env

from liqsignal.freqtrade import LIQ_COLUMNS, LIQ_FORECAST_COLUMNS
from liqsignal.replay import ReplayExchange

pytestmark = pytest.mark.slow

TIMERANGE = "20260101-20260304"
STARTUP = 480  # LiqTrendStrategy.startup_candle_count, documented in docs/freqtrade.md

LEAKY = '''

class LiqTrendLeaky(LiqTrendStrategy):
    """Wrong on purpose: each open-interest row reaches candles two hours before it is known."""

    def populate_indicators(self, dataframe, metadata):
        from liqsignal.freqtrade import merge_point_in_time

        oi = self.dp.get_pair_dataframe(metadata["pair"], "1h", candle_type="open_interest")
        early = oi.copy()
        early["date"] = early["date"] - pd.Timedelta(hours=2)
        cols = ["open_interest_amount", "open_interest_value"]
        dataframe = merge_point_in_time(dataframe, early, cols, timeframe="1h",
                                        other_timeframe="1h")
        return super().populate_indicators(dataframe, metadata)
'''


def _run(tmp: Path, strategy_path: Path, args: list[str]) -> subprocess.CompletedProcess[str]:
    example = json.loads((ROOT / "config.example.json").read_text())
    with ReplayExchange(BUNDLED) as rx:
        cfg = dict(example)
        cfg["exchange"] = {**example["exchange"], "ccxt_config": rx.ccxt_config()}
        cfg["user_data_dir"] = str(tmp / "ud")
        cfg["strategy_path"] = str(strategy_path)
        (tmp / "ud").mkdir(exist_ok=True)
        path = tmp / "config.json"
        path.write_text(json.dumps(cfg))
        env = {**ft_env(), "COLUMNS": "250"}  # rich tables unwrapped
        proc = subprocess.run(
            [str(FREQTRADE), *args, "-c", str(path), "--datadir", str(BUNDLED),
             "--timerange", TIMERANGE, "--logfile", str(tmp / "ft.log")],
            capture_output=True, text=True, timeout=240, env=env,
        )  # fmt: skip
    assert proc.returncode == 0, proc.stderr[-3000:]
    return proc


def _table(stdout: str, title: str) -> tuple[list[str], list[list[str]]]:
    """Header and rows of a rich table printed by Freqtrade."""
    lines = stdout[stdout.index(title) :].splitlines()
    rows = [
        [c.strip() for c in re.split(r"[│┃]", ln)[1:-1]] for ln in lines if ln[:1] in ("│", "┃")
    ]
    return rows[0], rows[1:]


def test_lookahead_analysis_finds_no_bias(tmp_path):
    proc = _run(tmp_path, ROOT / "strategies", [
        "lookahead-analysis", "--strategy", "LiqTrendStrategy",
        "--minimum-trade-amount", "10", "--targeted-trade-amount", "12",
    ])  # fmt: skip
    header, rows = _table(proc.stdout, "Lookahead Analysis")
    (row,) = rows
    got = dict(zip(header, row, strict=True))
    assert got["strategy"] == "LiqTrendStrategy"
    assert got["has_bias"] == "No"
    assert int(got["total_signals"]) >= 10
    assert got["biased_entry_signals"] == "0" and got["biased_exit_signals"] == "0"
    assert got["biased_indicators"] == ""


def test_lookahead_analysis_catches_open_interest_merged_early(tmp_path):
    strategies = tmp_path / "strategies"
    strategies.mkdir()
    src = (ROOT / "strategies" / "liq_trend.py").read_text()
    (strategies / "liq_trend_leaky.py").write_text(src + "\nimport pandas as pd\n" + LEAKY)
    proc = _run(tmp_path, strategies, [
        "lookahead-analysis", "--strategy", "LiqTrendLeaky",
        "--minimum-trade-amount", "10", "--targeted-trade-amount", "12",
    ])  # fmt: skip
    header, rows = _table(proc.stdout, "Lookahead Analysis")
    got = dict(zip(header, rows[0], strict=True))
    assert got["has_bias"] == "Yes"
    assert "open_interest" in got["biased_indicators"] or "liq_" in got["biased_indicators"]
    shutil.rmtree(strategies)


def test_recursive_analysis_liq_columns_stable_at_the_documented_startup(tmp_path):
    proc = _run(tmp_path, ROOT / "strategies", [
        "recursive-analysis", "--strategy", "LiqTrendStrategy",
        "--startup-candle", "50", "200", str(STARTUP),
    ])  # fmt: skip
    assert "No lookahead bias on indicators found" in (tmp_path / "ft.log").read_text()
    header, rows = _table(proc.stdout, "Recursive Analysis")
    assert header[-1] == f"{STARTUP} (from strategy)"
    table = {r[0]: dict(zip(header[1:], r[1:], strict=True)) for r in rows}

    def pct(cell: str) -> float:
        return 0.0 if cell == "-" else abs(float(cell.rstrip("%")))

    liq = {k: v for k, v in table.items() if k.startswith("liq_")}
    # a short startup moves the liq columns: the check can see a difference ...
    assert any(pct(v["50"]) > 0 for v in liq.values())
    # ... and at the documented startup every column the strategy gets is stable
    for name, cells in liq.items():
        assert name in (*LIQ_COLUMNS, *LIQ_FORECAST_COLUMNS), name  # forecast on by default
        assert pct(cells[header[-1]]) < 0.01, (name, cells)
    docs = (ROOT / "docs" / "freqtrade.md").read_text()
    assert f"startup_candle_count = {STARTUP}" in docs
