"""`freqtrade hyperopt` of LiqTrendStrategy offline: the guard thresholds are hyperopted.

Markets come from the replay exchange; a few epochs over the bundled BTC data (with open
interest). The epochs must vary the liq guard parameters and finish without errors.
"""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

import pytest
from ft_replay_helpers import BUNDLED, FREQTRADE, ROOT, ft_env

from liqsignal.replay import ReplayExchange

pytestmark = pytest.mark.slow


def test_hyperopt_varies_the_guard_parameters(tmp_path: Path) -> None:
    example = json.loads((ROOT / "config.example.json").read_text())
    with ReplayExchange(BUNDLED) as rx:
        cfg = dict(example)
        cfg["exchange"] = {**example["exchange"], "ccxt_config": rx.ccxt_config()}
        cfg["user_data_dir"] = str(tmp_path / "ud")
        cfg["strategy_path"] = str(ROOT / "strategies")
        (tmp_path / "ud").mkdir()
        path = tmp_path / "config.json"
        path.write_text(json.dumps(cfg))
        log = tmp_path / "ft.log"
        proc = subprocess.run(
            [
                str(FREQTRADE), "hyperopt", "-c", str(path), "--datadir", str(BUNDLED),
                "--strategy", "LiqTrendStrategy", "--hyperopt-loss", "SharpeHyperOptLossDaily",
                "--spaces", "buy", "sell", "-e", "6", "-j", "1", "--random-state", "1",
                "--timerange", "20260101-20260304", "--logfile", str(log), "--print-json",
                "--disable-param-export",
            ],
            capture_output=True,
            text=True,
            timeout=400,
            env=ft_env(),
        )  # fmt: skip
    text = log.read_text() if log.exists() else ""
    assert proc.returncode == 0, (proc.stderr[-3000:], text[-3000:])
    assert "Traceback" not in text
    # the best epoch's parameters, printed as JSON, include the four liq guard thresholds, and
    # the search moved them away from their defaults
    best = json.loads(proc.stdout.strip().splitlines()[-1])
    liq = {k: v for k, v in best["params"].items() if k.startswith("liq_")}
    assert set(liq) == {
        "liq_entry_distance_pct",
        "liq_leverage_buffer_pct",
        "liq_stop_buffer_pct",
        "liq_stop_min_score",
    }
    defaults = {
        "liq_entry_distance_pct": 1.0,
        "liq_leverage_buffer_pct": 1.0,
        "liq_stop_buffer_pct": 0.2,
        "liq_stop_min_score": 0.0,
    }
    assert any(abs(liq[k] - defaults[k]) > 1e-9 for k in liq)
    assert "Best result" in proc.stdout
