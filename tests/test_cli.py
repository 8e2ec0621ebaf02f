"""The liqsignal command: demo and evaluate end to end on bundled data (as a user runs them)."""

from __future__ import annotations

import json
from pathlib import Path

import pandas as pd
from helpers import TESTDATA, run_liqsignal

from liqsignal.cli import main


def test_evaluate_json_reports_model_and_baseline(capsys):
    assert main(["evaluate", "--json"]) == 0
    ev = json.loads(capsys.readouterr().out)
    assert [s["side"] for s in ev["sides"]] == ["long", "short"]
    for s in ev["sides"]:
        assert s["model_spearman"] > s["baseline_spearman"]
        assert s["bars"] == ev["bars"] - 200
    # every further comparison carries its baseline
    assert {t["side"] for t in ev["touches"]} == {"long", "short"}
    for t in ev["touches"]:
        assert 0 <= t["random_touch_share"] <= 1 and t["clusters"] > 0
    for a in ev["armed"]["sides"]:
        assert "random_recall_mean" in a and a["cascades"] > 0
    for m in ev["events"]["markets"]:
        assert 0 <= m["random_share_mean"] <= 1 and m["events"] > 0


def test_demo_writes_picture_and_prints_clusters(tmp_path):
    proc = run_liqsignal("demo", "--out", str(tmp_path), "--json", check=True)
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
    ev_png = tmp_path / "btc_evaluation.png"
    assert ev_png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert res["seconds"] < 60
    assert {"armed", "armed_score"} <= set(res["clusters"][0])


def _map_json(tmp_path: Path, capsys, *args: str) -> dict:
    """``liqsignal map BTC ARGS`` on the bundled replay_binance slice, its --json answer."""
    common = ["--exchange", "replay_binance", "--out", str(tmp_path), "--json"]
    rc = main(["map", "BTC", *args, *common])
    assert rc == 0
    return json.loads(capsys.readouterr().out)


def test_map_from_stored_files(tmp_path, capsys):
    res = _map_json(tmp_path, capsys, "--datadir", str(TESTDATA))
    assert res["market"] == "BTC/USDT:USDT"
    assert res["volume_proxy"] == []
    assert (tmp_path / "BTC_USDT_USDT_1h_map.png").is_file()


def test_errors_are_reported_not_raised(tmp_path, capsys):
    (tmp_path / "binance" / "futures").mkdir(parents=True)
    rc = main(["map", "NOPE", "--datadir", str(tmp_path), "--out", str(tmp_path)])
    assert rc == 2
    assert "no candles for NOPE/USDT:USDT" in capsys.readouterr().err


def test_map_from_data_with_buckets(tmp_path, capsys):
    res = _map_json(tmp_path, capsys, "--from-data", str(TESTDATA), "--limit", "3")
    assert res["buckets"]["residual_share"] >= 0
    assert all(isinstance(c["armed"], bool) for c in res["clusters"])
    assert sum(c["side"] == "long" for c in res["clusters"]) <= 3


def test_calibrate_writes_section_mapconfig_reads(tmp_path, capsys, monkeypatch):
    import liqsignal.calibrate as cal
    from liqsignal.config import MapConfig

    monkeypatch.setattr(cal, "SEARCH_GRID", {"intrabar_share": (0.25, 0.75)})
    out = tmp_path / "cal.json"
    assert main(["calibrate", "--out", str(out), "--json", "--folds", "1"]) == 0
    res = json.loads(capsys.readouterr().out)
    fold = res["folds"][0]
    assert fold["train"][1] < fold["test"][0]
    assert "long_baseline" in fold["test_fitted"]
    section = json.loads(out.read_text())["liqsignal"]["engine"]
    assert MapConfig.from_dict(section).intrabar_share in (0.25, 0.75, MapConfig().intrabar_share)
    assert main(["evaluate", "--config", str(out), "--json", "--no-events"]) == 0
    assert json.loads(capsys.readouterr().out)["events"] is None


def test_alerts_command_refuses_without_chats_or_token(tmp_path, capsys, monkeypatch):
    monkeypatch.delenv("LIQSIGNAL_TELEGRAM_TOKEN", raising=False)
    cfg = tmp_path / "config.json"
    alerts = {"enabled": True, "chat_ids": [], "markets": ["BTC/USDT:USDT"]}
    cfg.write_text(json.dumps({"liqsignal": {"alerts": alerts}}))
    assert main(["alerts", "--config", str(cfg), "--once"]) == 2
    assert "chat_ids is empty" in capsys.readouterr().err
    alerts["chat_ids"] = [42]
    cfg.write_text(json.dumps({"liqsignal": {"alerts": alerts}}))
    assert main(["alerts", "--config", str(cfg), "--once", "--datadir", str(tmp_path)]) == 2
    err = capsys.readouterr().err
    assert "token" in err.lower()


def test_map_live_through_ccxt_against_the_replay(tmp_path, capsys):
    """`map --live` fetches through the real ccxt client (replay server on 127.0.0.1) into the
    store, maps, and names a failing exchange as stale instead of failing."""
    import shutil
    from pathlib import Path

    from liqsignal.replay import Fault, ReplayExchange

    src = Path(__file__).parent / "testdata" / "replay_binance"
    shutil.copytree(src, tmp_path / "replay")
    with (
        ReplayExchange(tmp_path / "replay", venues=("binance",)) as rx,
        ReplayExchange(tmp_path / "replay", venues=("okx",)) as bad,
    ):
        bad.faults.add(Fault(path_prefix="/", status=503))
        cfg = tmp_path / "ccxt.json"
        cfg.write_text(
            json.dumps({"binance": rx.ccxt_config("binance"), "okx": bad.ccxt_config("okx")})
        )
        argv = ["map", "BTC", "--live", "--exchange", "binance", "--exchange", "okx"]
        argv += ["--ccxt-config", str(cfg), "--now", "2026-03-01T00:00Z", "--history", "300"]
        argv += ["--retries", "1"]
        argv += ["--datadir", str(tmp_path / "store"), "--out", str(tmp_path), "--json"]
        argv += ["--html", str(tmp_path / "live.html")]
        assert main(argv) == 0
    res = json.loads(capsys.readouterr().out)
    assert res["last_bar"].startswith("2026-02-28 23:00")
    assert set(res["stale"]) == {"okx"} and "okx" in res["stale"]["okx"].lower()
    assert res["new_bars"]["BTC/binance"] > 0 and res["requests"] > 0
    stored = tmp_path / "store" / "binance" / "futures" / "BTC_USDT_USDT-1h-futures.feather"
    assert stored.is_file()
    assert (tmp_path / "BTC_1h_live_map.png").is_file()
    assert res["warning"] is None
    assert res["page"] == str(tmp_path / "live.html") and "plotly" in Path(res["page"]).read_text()
    assert {c["side"] for c in res["clusters"]} == {"long", "short"}, "levels on both sides"
    for c in res["clusters"]:
        assert set(c["shares"]) == {"binance"} and c["usd"] > 0
        assert c["high"] <= res["price"] if c["side"] == "long" else c["low"] >= res["price"]


def test_map_says_when_the_absolute_close_rule_emptied_the_map(tmp_path, capsys):
    """With ``close_relative: false`` the open-interest fall of 2026-02-28 evening removes
    more USD than the map holds: no clusters, and a warning that says why instead of silence."""
    cfg = tmp_path / "abs.json"
    cfg.write_text(json.dumps({"liqsignal": {"engine": {"close_relative": False}}}))
    data = tmp_path / "data" / "replay_binance" / "futures"
    data.mkdir(parents=True)
    src = Path(__file__).parent / "testdata" / "replay_binance" / "futures"
    for f in src.glob("BTC_USDT_USDT-1h-*.feather"):
        df = pd.read_feather(f)
        df[df["date"] <= pd.Timestamp("2026-02-28 23:00", tz="UTC")].to_feather(data / f.name)
    argv = ["map", "BTC", "--datadir", str(tmp_path / "data"), "--exchange", "replay_binance"]
    argv += ["--config", str(cfg), "--no-buckets", "--out", str(tmp_path), "--json"]
    assert main(argv) == 0
    out = capsys.readouterr()
    res = json.loads(out.out)
    assert res["clusters"] == [] and "close_relative" in res["warning"]
    assert "liqsignal map: warning: the map holds no levels since" in out.err
