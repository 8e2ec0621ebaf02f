"""Rank statistics shared by the evaluation modules (no other import of the package)."""

from __future__ import annotations

import math

import numpy as np

__all__ = ["ranks", "spearman_fast"]


def ranks(a: np.ndarray) -> np.ndarray:
    """Average ranks (1-based) with ties sharing their mean rank."""
    a = np.asarray(a, dtype=np.float64)
    order = np.argsort(a, kind="mergesort")
    s = a[order]
    n = s.size
    r = np.empty(n, dtype=np.float64)
    if n == 0:
        return r
    # group ties
    edges = np.flatnonzero(np.diff(s) != 0) + 1
    starts = np.concatenate([[0], edges])
    ends = np.concatenate([edges, [n]])
    mean_rank = (starts + ends - 1) / 2.0 + 1.0
    r[order] = np.repeat(mean_rank, ends - starts)
    return r


def spearman_fast(x: np.ndarray, y: np.ndarray) -> float:
    """Spearman rank correlation of finite pairs (NaN when fewer than 3 or a constant), in
    [-1, 1]."""
    x = np.asarray(x, dtype=np.float64)
    y = np.asarray(y, dtype=np.float64)
    ok = np.isfinite(x) & np.isfinite(y)
    if ok.sum() < 3:
        return math.nan
    rx = ranks(x[ok])
    ry = ranks(y[ok])
    sx = rx.std()
    sy = ry.std()
    if sx == 0 or sy == 0:
        return math.nan
    r = float(np.mean((rx - rx.mean()) * (ry - ry.mean())) / (sx * sy))
    return min(1.0, max(-1.0, r))  # rounding may leave |r| a hair above 1
