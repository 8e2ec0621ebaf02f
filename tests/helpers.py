"""Helpers shared by test modules in several folders (importable as ``helpers``: pytest puts
tests/ on sys.path for tests/conftest.py)."""

from __future__ import annotations

import subprocess
import sys
from collections.abc import Mapping
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
TESTDATA = ROOT / "tests" / "testdata"


def run_liqsignal(
    *args: str,
    timeout: float = 300,
    env: Mapping[str, str] | None = None,
    cwd: Path | None = None,
    check: bool = False,
) -> subprocess.CompletedProcess[str]:
    """``python -m liqsignal ARGS`` in a fresh process (this interpreter), output captured as
    text; ``check`` raises when it exits non-zero."""
    return subprocess.run(
        [sys.executable, "-m", "liqsignal", *args],
        capture_output=True,
        text=True,
        timeout=timeout,
        env=None if env is None else dict(env),
        cwd=cwd,
        check=check,
    )


def flip_one_bit(clean: bytes, rng: np.random.Generator) -> tuple[int, bytes]:
    """``clean`` with one random bit of one random byte flipped, and that byte's offset."""
    data = bytearray(clean)
    i = int(rng.integers(0, len(data)))
    data[i] ^= 1 << int(rng.integers(0, 8))
    return i, bytes(data)
