"""Paths and helpers for running the real Freqtrade 2026.9 as a subprocess in the replay tests."""

from __future__ import annotations

import os
import sys
from pathlib import Path

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
