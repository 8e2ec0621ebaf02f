"""The liqsignal command: demo and evaluate end to end on bundled data (as a user runs them)."""

from __future__ import annotations

import json
import subprocess
import sys

from liqsignal.cli import main


def test_evaluate_json_reports_model_and_baseline(capsys):
    assert main(["evaluate", "--json"]) == 0
    ev = json.loads(capsys.readouterr().out)
    assert [s["side"] for s in ev["sides"]] == ["long", "short"]
    for s in ev["sides"]:
        assert s["model_spearman"] > s["baseline_spearman"]
        assert s["bars"] == ev["bars"] - 200


def test_demo_writes_picture_and_prints_clusters(tmp_path):
    proc = subprocess.run(
        [sys.executable, "-m", "liqsignal", "demo", "--out", str(tmp_path), "--json"],
        capture_output=True,
        text=True,
        timeout=300,
        check=True,
    )
    res = json.loads(proc.stdout)
    png = tmp_path / "btc_liquidation_map.png"
    assert png.is_file() and png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert png.stat().st_size > 20_000
    assert res["clusters"], "the demo map has clusters"
    assert {c["side"] for c in res["clusters"]} <= {"long", "short"}
    for c in res["clusters"]:
        if c["side"] == "long":
            assert c["high"] <= res["price"]
        else:
            assert c["low"] >= res["price"]
    assert (tmp_path / "btc_features.csv").is_file()


def test_map_from_stored_files(tmp_path, capsys):
    rc = main(
        [
            "map",
            "BTC",
            "--datadir",
            "tests/testdata/replay_binance/..",
            "--exchange",
            "replay_binance",
            "--out",
            str(tmp_path),
            "--json",
        ]
    )
    assert rc == 0
    res = json.loads(capsys.readouterr().out)
    assert res["market"] == "BTC/USDT:USDT"
    assert res["volume_proxy"] == []
    assert (tmp_path / "BTC_USDT_USDT_1h_map.png").is_file()


def test_errors_are_reported_not_raised(tmp_path, capsys):
    rc = main(["map", "NOPE", "--datadir", str(tmp_path), "--out", str(tmp_path)])
    assert rc == 2
    assert "no candles for NOPE/USDT:USDT" in capsys.readouterr().err
