"""Smoke run of benchmarks/bench_refresh.py (the store's journal under a refresh cycle): two
markets, one steady cycle, every figure the benchmark promises is printed."""

from __future__ import annotations

import importlib.util
import re
import sys
from pathlib import Path

import pytest

BENCH = Path(__file__).resolve().parents[2] / "benchmarks" / "bench_refresh.py"


def test_bench_refresh_smoke(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    spec = importlib.util.spec_from_file_location("bench_refresh", BENCH)
    assert spec is not None and spec.loader is not None
    bench = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(bench)
    argv = ["bench_refresh.py", "--markets", "2", "--cycles", "1", "--history-bars", "30",
            "--rate-limit-ms", "1"]  # fmt: skip
    monkeypatch.setattr(sys, "argv", argv)
    assert bench.main() == 0
    out = capsys.readouterr().out
    assert "errors 0" in out and "errors 1" not in out
    for pattern in (
        r"first fill \(2 markets\): [0-9.]+ s",
        r"steady cycle \(median of 1\): wall [0-9.]+ s, [0-9]+ requests",
        r"store [0-9.]+ s \+ engine [0-9.]+ ms = [0-9.]+% of the cycle",
        r"single-market steady cycle: wall [0-9.]+ s",
        r"ratios N / 1 market: wall x[0-9.]+ for x2 markets",
        r"peak resident memory of the process: [0-9]+ MiB",
    ):
        assert re.search(pattern, out), f"missing {pattern!r} in:\n{out}"
