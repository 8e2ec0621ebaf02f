"""The guard report: counted in a real `freqtrade backtesting`, printed when it ends, and read
again by `liqsignal guard-report`; the counts agree with the guards' own decision log lines."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from datetime import UTC, datetime
from pathlib import Path

import pytest

from liqsignal.cli import main
from liqsignal.guard_report import GuardTally, guard_report

ROOT = Path(__file__).resolve().parents[1]
BUNDLED = ROOT / "user_data" / "data" / "binance"


def test_tally_counts_each_candle_once():
    t = GuardTally("S")
    c1 = datetime(2026, 1, 1, 10, tzinfo=UTC)
    c2 = datetime(2026, 1, 1, 11, tzinfo=UTC)
    for _ in range(3):  # Freqtrade may ask several times for one candle
        t.record("entry", "BTC/USDT:USDT", "long", c1, True, rate=100.0)
    t.record("entry", "BTC/USDT:USDT", "long", c2, False)
    t.record("stop", "BTC/USDT:USDT", "long", c2, True, trade_open=c1)
    assert t.decisions == {"entry": 2, "leverage": 0, "stop": 1}
    assert t.acted == {"entry": 1, "leverage": 0, "stop": 1}
    assert t.refused == [("BTC/USDT:USDT", "long", int(c1.timestamp() * 1000), 100.0)]
    assert t.trades["stop"] == {f"BTC/USDT:USDT|{int(c1.timestamp() * 1000)}"}
    assert GuardTally.from_dict(json.loads(json.dumps(t.to_dict()))).to_dict() == t.to_dict()


def test_missing_result_is_one_line(tmp_path, capsys):
    assert main(["guard-report", str(tmp_path)]) == 2
    err = capsys.readouterr().err.strip()
    assert err.count("\n") == 0 and "no backtest result in this folder" in err


@pytest.mark.slow
def test_backtest_prints_the_report_and_guard_report_reads_it(tmp_path, capsys):
    from liqsignal.replay import ReplayExchange

    cfg = json.loads((ROOT / "config.example.json").read_text())
    cfg["liqsignal"]["guards"]["log_backtest_decisions"] = True
    cfg["liqsignal"]["guards"]["entry_distance_pct"] = 2.0  # refusals on any map calibration
    (tmp_path / "ud").mkdir()
    cfg["user_data_dir"] = str(tmp_path / "ud")
    cfg["strategy_path"] = str(ROOT / "strategies")
    env = {k: v for k, v in os.environ.items() if not k.startswith("PYTEST_")}
    with ReplayExchange(BUNDLED) as rx:
        cfg["exchange"]["ccxt_config"] = rx.ccxt_config()
        path = tmp_path / "config.json"
        path.write_text(json.dumps(cfg))
        proc = subprocess.run(
            [str(Path(sys.executable).with_name("freqtrade")), "backtesting", "-c", str(path),
             "--datadir", str(BUNDLED), "--timerange", "20260115-20260304",
             "--strategy-list", "LiqTrendStrategy", "LiqTrendControl",
             "--logfile", str(tmp_path / "ft.log")],
            capture_output=True, text=True, timeout=300, env=env,
        )  # fmt: skip
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "liqsignal guard report:" in proc.stdout
    results = tmp_path / "ud" / "backtest_results"
    assert (results / "liqsignal_guards-LiqTrendStrategy.json").is_file()
    assert main(["guard-report", str(results), "--json"]) == 0
    rep = json.loads(capsys.readouterr().out)
    strat = rep["strategies"]["LiqTrendStrategy"]
    assert "no guard decisions" in rep["strategies"]["LiqTrendControl"]["note"]
    log = (tmp_path / "ft.log").read_text()
    lines = re.findall(
        r"liqsignal guard (entry|leverage|stop) (\S+) (\w+) candle=(\S+): (\w+)", log
    )
    per = {g: {(p, s, c) for gg, p, s, c, _ in lines if gg == g} for g in ("entry", "leverage")}
    refused = {(p, s, c) for g, p, s, c, v in lines if g == "entry" and v == "refuse"}
    g = strat["guards"]
    assert g["entry"]["decisions"] == len(per["entry"]) > 0
    assert g["entry"]["acted"] == len(refused) == g["entry"]["affected"]["n"] > 0
    assert g["leverage"]["decisions"] == len(per["leverage"])
    # allowed entries are the trades (one open trade at a time, no other entry reason)
    assert g["entry"]["decisions"] - g["entry"]["acted"] >= strat["trades"]
    for item in g.values():
        assert 0 <= item["acted"] <= item["decisions"]
    for name in ("leverage", "stop"):
        assert g[name]["affected"]["n"] + g[name]["unaffected"]["n"] == strat["trades"]
    assert g["stop"]["affected"]["n"] <= g["stop"]["acted"]
    assert g["entry"]["unaffected"]["liquidation_checked"] == strat["trades"]
    again = guard_report(results)
    assert again["strategies"]["LiqTrendStrategy"]["guards"] == g
