"""Paths and helpers for running the real Freqtrade 2026.9 as a subprocess in the replay tests."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
STRATEGY_PATH = Path(__file__).resolve().parent / "strategies"
TESTDATA = ROOT / "tests" / "testdata" / "replay_binance"
BUNDLED = ROOT / "user_data" / "data" / "binance"
FREQTRADE = Path(sys.executable).with_name("freqtrade")


def ft_env() -> dict[str, str]:
    """Environment for a Freqtrade subprocess: without pytest's variables.

    Freqtrade skips its logging setup (``--logfile`` included) when ``PYTEST_VERSION`` is set.
    """
    return {k: v for k, v in os.environ.items() if not k.startswith("PYTEST_")}


def dry_run_until(
    args: list[str],
    cwd: Path,
    log: Path,
    done: Callable[[str], bool],
    *,
    seconds: float,
    stop_signal: int = signal.SIGINT,
) -> tuple[subprocess.Popen[str], float]:
    """Run ``freqtrade trade --dry-run ARGS --logfile LOG`` (stderr to ``cwd/stderr.txt``) until
    ``done(log text)`` or ``seconds`` pass, then stop it with ``stop_signal``.

    Fails if Freqtrade stopped by itself or does not stop within 20 s of the signal; returns the
    finished process and how many seconds it took to stop.
    """
    with (cwd / "stderr.txt").open("w") as stderr:  # console copy of the log, wrapped
        proc = subprocess.Popen(
            [str(FREQTRADE), "trade", "--dry-run", *args, "--logfile", str(log)],
            stdout=subprocess.DEVNULL, stderr=stderr, text=True, cwd=cwd, env=ft_env(),
        )  # fmt: skip
        t0 = time.monotonic()
        try:
            while time.monotonic() - t0 < seconds and proc.poll() is None:
                time.sleep(0.5)
                if done(log.read_text() if log.exists() else ""):
                    break
            assert proc.poll() is None, f"freqtrade stopped by itself: {log.read_text()[-3000:]}"
        finally:
            proc.send_signal(stop_signal)
            t_stop = time.monotonic()
            try:
                proc.wait(timeout=20)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
                pytest.fail("freqtrade did not stop within 20 s of the signal")
    return proc, time.monotonic() - t_stop
