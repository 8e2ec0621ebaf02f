"""``liqsignal watch`` and ``python -m liqsignal.replay.ws``: the commands as documented,
against the local WebSocket venues, with the real ccxt.pro clients."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import threading
import time
from dataclasses import replace
from pathlib import Path

import pytest

from liqsignal.cli import main
from liqsignal.data.liquidations import LiquidationStore
from liqsignal.replay.ws import LiquidationStreamServer, load_events

VENUES = ("binance", "bybit", "okx")


def test_watch_writes_store_and_prints_table(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    servers = {v: LiquidationStreamServer(v, ["BTC", "ETH"]).start() for v in VENUES}
    try:
        overlay = tmp_path / "ws.json"
        overlay.write_text(json.dumps({v: s.ccxt_config() for v, s in servers.items()}))
        real = load_events(None, ["BTC", "ETH"])[:30]
        shift = int(time.time() * 1000) - real[0].ts_ms
        script = [replace(e, ts_ms=e.ts_ms + shift) for e in real]

        def feed() -> None:
            end = time.monotonic() + 10
            while time.monotonic() < end and not all(s.ready() for s in servers.values()):
                time.sleep(0.02)
            for s in servers.values():
                s.publish(script)

        th = threading.Thread(target=feed, daemon=True)
        th.start()
        argv = ["watch", "--markets", "BTC", "ETH", "--datadir", str(tmp_path / "data")]
        for v in VENUES:
            argv += ["--exchange", v]
        argv += ["--ccxt-config", str(overlay), "--duration", "4", "--refresh", "0.5"]
        rc = main(argv)
        th.join(5)
    finally:
        for s in servers.values():
            s.stop()
    out = capsys.readouterr().out
    assert rc == 0, out
    assert "lower bound" in out and "binance*" in out
    for v in VENUES:
        assert f"{v}: 30 events, 0 duplicates dropped" in out
    assert "90 new events written" in out
    store = LiquidationStore(tmp_path / "data")
    for v in VENUES:
        n = sum(len(store.read_events(v, f"{m}/USDT:USDT")) for m in ("BTC", "ETH"))
        assert n == 30


def test_watch_bad_ccxt_config_names_the_key(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    bad = tmp_path / "bad.json"
    bad.write_text(json.dumps({"binance": ["not", "an", "object"]}))
    rc = main(["watch", "--ccxt-config", str(bad), "--duration", "1"])
    err = capsys.readouterr().err
    assert rc == 2 and "'binance'" in err and "object" in err
    rc = main(["watch", "--ccxt-config", str(tmp_path / "missing.json"), "--duration", "1"])
    assert rc == 2 and "does not exist" in capsys.readouterr().err


def test_documented_offline_commands(tmp_path: Path) -> None:
    """docs/data.md: the replay command in one terminal, ``liqsignal watch`` in another."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("PYTEST")}
    server = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "liqsignal.replay.ws",
            "--venue",
            "binance",
            "--venue",
            "bybit",
            "--venue",
            "okx",
            "--port",
            "0",
            "--markets",
            "BTC",
            "ETH",
            "--speed",
            "20000",
            "--loop",
            "--overlay",
            str(tmp_path / "ws_overlay.json"),
        ],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=env,
        cwd=tmp_path,
    )
    try:
        for _ in range(200):
            if (tmp_path / "ws_overlay.json").exists():
                break
            time.sleep(0.05)
        liqsignal = Path(sys.executable).with_name("liqsignal")
        run = subprocess.run(
            [
                str(liqsignal),
                "watch",
                "--exchange",
                "binance",
                "--exchange",
                "bybit",
                "--exchange",
                "okx",
                "--markets",
                "BTC",
                "ETH",
                "--ccxt-config",
                "ws_overlay.json",
                "--duration",
                "4",
            ],
            capture_output=True,
            text=True,
            env=env,
            cwd=tmp_path,
            timeout=60,
        )
    finally:
        server.terminate()
        _, err = server.communicate(timeout=10)
    assert run.returncode == 0, run.stdout + run.stderr
    for v in VENUES:
        line = next(ln for ln in run.stdout.splitlines() if ln.startswith(f"{v}: "))
        assert int(line.split()[1]) > 0, line
    assert "sent events per venue" in err
    assert (tmp_path / "user_data" / "data" / "binance" / "futures" / "liqsignal").is_dir()
