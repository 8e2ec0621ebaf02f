"""Mistakes a new user makes on the command line: one line on stderr that names the problem and
the fix, a non-zero exit (2 for usage errors), never a traceback. One row per case."""

from __future__ import annotations

import argparse
import json
import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest

from liqsignal.cli import build_parser, main, normalize_market

ROOT = Path(__file__).resolve().parents[1]
TESTDATA = ROOT / "tests" / "testdata"  # holds replay_binance/futures/BTC_USDT_USDT-1h-*
DATA = ["--datadir", str(TESTDATA), "--exchange", "replay_binance", "--no-buckets", "--json"]


def _files(tmp: Path) -> dict[str, str]:
    files = {
        "trailing_comma.json": '{"liqsignal": {"engine": {"step": 50,}}}',
        "array.json": "[1, 2]",
        "guards_only.json": json.dumps({"liqsignal": {"guards": {"entry_distance_pct": 1.5}}}),
        "bad_engine_key.json": json.dumps({"liqsignal": {"engine": {"stepp": 50}}}),
    }
    for name, text in files.items():
        (tmp / name).write_text(text)
    bad = tmp / "corrupt" / "replay_binance" / "futures"
    bad.mkdir(parents=True)
    (bad / "BTC_USDT_USDT-1h-futures.feather").write_bytes(b"ARROW1 not really a feather file")
    paths = {name.split(".")[0]: str(tmp / name) for name in files}
    return paths | {"corrupt": str(tmp / "corrupt")}


# (id, argv with {placeholders}, exit code, substrings of the one stderr line)
CASES = [
    ("config-missing", ["map", "BTC", "--config", "/nonexistent.json", *DATA], 2,
     ["--config /nonexistent.json: no such file"]),
    ("config-trailing-comma", ["map", "BTC", "--config", "{trailing_comma}", *DATA], 2,
     ["invalid JSON at line 1, column 38", "trailing commas"]),
    ("config-not-object", ["map", "BTC", "--config", "{array}", *DATA], 2,
     ["expected a JSON object, got list"]),
    ("config-bad-engine-key", ["map", "BTC", "--config", "{bad_engine_key}", *DATA], 2,
     ["stepp"]),
    ("exchange-unknown", ["map", "BTC", "--exchange", "kraken", "--datadir", str(TESTDATA)], 2,
     ["--exchange kraken: no stored data", "cannot download from it", "replay_binance"]),
    ("exchange-no-data", ["map", "BTC", "--exchange", "okx", "--datadir", str(TESTDATA)], 2,
     ["--exchange okx: no stored data", "liqsignal download --exchanges okx"]),
    ("market-no-candles", ["map", "XRP", *DATA], 2,
     ["no candles for XRP/USDT:USDT on replay_binance", "stored there: BTC_USDT_USDT-1h"]),
    ("limit-negative", ["map", "BTC", "--limit", "-1"], 2,
     ["argument --limit: expected a number >= 1, got -1", "liqsignal map --help"]),
    ("limit-not-a-number", ["map", "BTC", "--limit", "many"], 2,
     ["argument --limit: expected a whole number, got 'many'"]),
    ("range-zero", ["map", "BTC", "--range", "0"], 2, ["argument --range: expected a number > 0"]),
    ("history-zero", ["map", "BTC", "--live", "--history", "0"], 2, ["argument --history"]),
    ("warmup-negative", ["evaluate", "--warmup", "-5"], 2,
     ["argument --warmup: expected a number >= 0, got -5"]),
    ("calibrate-folds-zero", ["calibrate", "--folds", "0"], 2, ["argument --folds"]),
    ("until-before-since", ["download", "--markets", "BTC", "--since", "2026-02-10", "--until",
                            "2026-02-01", "--datadir", "{tmp}"], 2,
     ["until (2026-02-01 00:00:00+00:00) is before since", "swap them"]),
    ("unknown-command", ["mapp", "BTC"], 2, ["invalid choice: 'mapp'", "liqsignal --help"]),
    ("market-missing", ["map"], 2, ["required: market"]),
    ("replay-no-datadir", ["replay", "--port", "0"], 2, ["required: --datadir"]),
    ("replay-bad-datadir", ["replay", "--datadir", "{tmp}/nothing", "--port", "0"], 2,
     ["nothing"]),
    ("now-not-a-time", ["map", "BTC", "--live", "--now", "notadate"], 2,
     ["argument --now: expected a time like 2026-03-01T00:00Z, got 'notadate'"]),
    ("ccxt-config-missing", ["map", "BTC", "--live", "--ccxt-config", "/nonexistent.json"], 2,
     ["--ccxt-config /nonexistent.json"]),
    ("since-not-a-date", ["download", "--markets", "BTC", "--since", "yesterday", "--datadir",
                          "{tmp}"], 2, ["since: expected a date like 2026-01-01 or 30d"]),
    ("alerts-config-missing", ["alerts", "--config", "/nonexistent.json", "--once"], 2,
     ["/nonexistent.json"]),
    ("guard-report-nothing", ["guard-report", "{tmp}"], 2, ["no backtest result in this folder"]),
    ("demo-out-unwritable", ["demo", "--out", "/proc/nope/out"], 2,
     ["/proc/nope", "check the path"]),
    ("demo-range-negative", ["demo", "--range", "-5"], 2,
     ["argument --range: expected a number > 0"]),
    ("replay-port-out-of-range", ["replay", "--datadir", str(TESTDATA / "replay_binance"), "--port",
     "99999"], 2, ["a port is 0-65535"]),
    ("replay-port-negative", ["replay", "--datadir", str(TESTDATA / "replay_binance"), "--port",
     "-1"], 2, ["a port is 0-65535"]),
    ("replay-speed-nan", ["replay", "--datadir", str(TESTDATA / "replay_binance"), "--speed",
     "nan"], 2, ["expected a finite number > 0"]),
    ("map-corrupt-file", ["map", "BTC", "--datadir", "{corrupt}", "--exchange", "replay_binance",
     "--no-buckets", "--json"], 2, ["cannot be read as feather", "left in place"]),
]  # fmt: skip


def _run(argv: list[str], capsys: pytest.CaptureFixture[str]) -> tuple[int, str, str]:
    try:
        rc = main(argv)
    except SystemExit as e:  # argparse: usage errors, --help, --version
        rc = int(e.code or 0)
    out = capsys.readouterr()
    return rc, out.out, out.err


@pytest.mark.parametrize(
    ("argv", "code", "expect"), [c[1:] for c in CASES], ids=[c[0] for c in CASES]
)
def test_user_mistake_gets_one_line(argv, code, expect, tmp_path, capsys):
    subst = {**_files(tmp_path), "tmp": str(tmp_path)}
    argv = [a.format(**subst) for a in argv]
    rc, _, err = _run(argv, capsys)
    assert rc == code, err
    lines = [ln for ln in err.splitlines() if ln.strip()]
    assert len(lines) == 1, err
    assert "Traceback" not in err and lines[0].split(":")[0].startswith(("liqsignal", "error"))
    for piece in expect:
        assert piece in lines[0]


@pytest.mark.parametrize("spelling", ["btc", "BTC", "BTCUSDT", "btc/usdt", "BTC/USDT:USDT"])
def test_market_spellings_mean_the_perpetual(spelling, capsys):
    assert normalize_market(spelling) == "BTC/USDT:USDT"
    rc, out, err = _run(["map", spelling, *DATA, "--limit", "2"], capsys)
    assert rc == 0, err
    assert json.loads(out)["market"] == "BTC/USDT:USDT"


def test_other_quotes_and_settles_are_kept():
    assert normalize_market("ethusdc") == "ETH/USDC:USDC"
    assert normalize_market("SOL/USDC") == "SOL/USDC:USDC"
    assert normalize_market("BTC/USD:BTC") == "BTC/USD:BTC"


def test_freqtrade_style_config_without_engine_section_means_defaults(tmp_path, capsys):
    """A config with only ``liqsignal.guards`` (no engine) is a Freqtrade config whose engine
    takes the defaults: the map runs and gives what it gives without the config."""
    files = _files(tmp_path)
    rc, out, err = _run(["map", "BTC", "--config", files["guards_only"], *DATA], capsys)
    assert rc == 0, err
    rc2, out2, _ = _run(["map", "BTC", *DATA], capsys)
    assert rc2 == 0
    a, b = json.loads(out), json.loads(out2)
    assert a["clusters"] == b["clusters"] and a["clusters"]


def test_version(capsys):
    rc, out, _ = _run(["--version"], capsys)
    assert rc == 0 and out.startswith("liqsignal ") and out.strip() != "liqsignal"


def test_replay_help_lists_its_real_options(capsys):
    rc, out, _ = _run(["replay", "--help"], capsys)
    assert rc == 0
    for opt in ("--datadir", "--port", "--venue", "--speed", "--start", "--no-forming-candle"):
        assert opt in out
    assert "bybit" in out and "okx" in out


def test_every_map_option_has_help():
    parser = build_parser()
    sub = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction))
    for name in ("map", "replay", "demo", "evaluate", "calibrate", "download"):
        for action in sub.choices[name]._actions:
            assert action.help and action.help != argparse.SUPPRESS, (name, action.dest)


def test_replay_runs_as_the_readme_writes_it(tmp_path):
    """`liqsignal replay --datadir ... --port ...` serves and prints the overlay."""
    proc = subprocess.Popen(
        [sys.executable, "-m", "liqsignal", "replay", "--datadir", str(TESTDATA / "replay_binance"),
         "--port", "0"],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, cwd=ROOT,
    )  # fmt: skip
    try:
        assert proc.stdout is not None
        text = ""
        while True:  # the overlay is one JSON object over several lines
            line = proc.stdout.readline()
            assert line, proc.stderr.read() if proc.stderr else ""
            text += line
            if line.startswith("}"):
                break
        overlay = json.loads(text)
        url = overlay["ccxt_config"]["urls"]["api"]["fapiPublic"]
        assert url.startswith("http://127.0.0.1:")
    finally:
        proc.send_signal(signal.SIGTERM)
        _, err = proc.communicate(timeout=20)
    assert proc.returncode == 0 and "served" in err


@pytest.mark.slow
def test_bad_guard_key_inside_freqtrade_is_one_line(tmp_path):
    """A misspelt ``liqsignal.guards`` key in a real `freqtrade backtesting`: one ERROR line
    naming the key, exit 2, no "Fatal exception!" traceback."""
    from liqsignal.replay import ReplayExchange

    cfg = json.loads((ROOT / "config.example.json").read_text())
    cfg["liqsignal"]["guards"]["entry_distnce_pct"] = 1.0
    (tmp_path / "ud").mkdir()
    cfg["user_data_dir"] = str(tmp_path / "ud")
    cfg["strategy_path"] = str(ROOT / "strategies")
    env = {k: v for k, v in os.environ.items() if not k.startswith("PYTEST_")}
    with ReplayExchange(TESTDATA / "replay_binance") as rx:
        cfg["exchange"]["ccxt_config"] = rx.ccxt_config()
        path = tmp_path / "config.json"
        path.write_text(json.dumps(cfg))
        proc = subprocess.run(
            [str(Path(sys.executable).with_name("freqtrade")), "backtesting", "-c", str(path),
             "--datadir", str(TESTDATA / "replay_binance"), "--timerange", "20260201-20260210",
             "--logfile", str(tmp_path / "ft.log")],
            capture_output=True, text=True, timeout=180, env=env,
        )  # fmt: skip
    log = (tmp_path / "ft.log").read_text()
    assert proc.returncode == 2, log[-2000:]
    assert "Fatal exception" not in log and "Traceback" not in log
    errors = [ln for ln in log.splitlines() if " - ERROR - " in ln]
    assert len(errors) == 1 and "guards: unknown key(s) ['entry_distnce_pct']" in errors[0]


def test_download_from_the_replay_gets_past_open_interest(tmp_path, capsys):
    """`download --since/--until` against the replay: open interest months before today is not
    clamped to Binance's 30 days (the replay on 127.0.0.1 serves what its files hold)."""
    from liqsignal.data.download import loopback_config
    from liqsignal.replay import ReplayExchange

    with ReplayExchange(TESTDATA / "replay_binance") as rx:
        overlay = tmp_path / "overlay.json"
        overlay.write_text(json.dumps({"binance": rx.ccxt_config()}))
        assert loopback_config(rx.ccxt_config())
        argv = ["download", "--markets", "BTC", "--exchanges", "binance", "--ccxt-config"]
        argv += [str(overlay), "--since", "2026-02-01", "--until", "2026-02-02"]
        argv += ["--candle-types", "futures", "open_interest", "--datadir", str(tmp_path), "--json"]
        rc, out, err = _run(argv, capsys)
    assert rc == 0, err
    jobs = {j["candle_type"]: j for j in json.loads(out)["jobs"]}
    assert jobs["open_interest"]["status"] == "ok"
    assert jobs["open_interest"]["rows_added"] >= 24 and jobs["futures"]["rows_added"] == 25
    assert not loopback_config({"urls": {"api": {"a": "https://fapi.binance.com/fapi/v1"}}})
    assert not loopback_config({})


def test_a_config_that_never_arms_is_said_loudly(capsys):
    """calibrate and evaluate print one warning line when the config arms on no bar (the stop
    guard and armed alerts would then never act); a config that arms says nothing."""
    from liqsignal.cli import _armed_bars, _warn_never_arms
    from liqsignal.config import MapConfig
    from liqsignal.evaluate import load_coinglass

    df = load_coinglass()
    never = _armed_bars(df, MapConfig(armed_size_ratio=1e5), 200)
    assert never == {"long": 0, "short": 0}
    _warn_never_arms("calibrate", never, "out/calibrated.json")
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("liqsignal calibrate: warning: the config")
    assert "never arms" in err[0] and "stop guard never tightens" in err[0]
    arms = _armed_bars(df, MapConfig(armed_size_ratio=1e-6, armed_oi_ratio=1e-6), 200)
    assert arms["long"] + arms["short"] > 0
    _warn_never_arms("evaluate", arms, None)
    assert capsys.readouterr().err == ""
