"""Random-walk bars for kernel tests and the fault campaign (imported by test modules and
benchmarks; not a fixture)."""

from __future__ import annotations

import numpy as np
import pandas as pd

#: The input columns of a frame, and values a damaged one may hold in them.
FRAME_COLUMNS = ["open", "high", "low", "close", "volume", "open_interest_amount", "funding_rate"]
BAD_VALUES = [np.inf, -np.inf, np.nan, 1e300, 1e-300, 0.0, -1.0, 1e15, "abc", None]


def random_bars(
    rng: np.random.Generator,
    n: int,
    *,
    price: float = 100.0,
    vol: float = 0.01,
    gaps: bool = True,
    n_ex: int = 1,
) -> tuple[np.ndarray, np.ndarray]:
    """Random-walk bars for the kernel: ts[n] seconds and x[n, n_ex, 8]."""
    step = rng.choice([60.0, 3600.0]) if gaps else 3600.0
    dts = np.full(n, step)
    if gaps:
        dts *= np.where(rng.random(n) < 0.1, rng.integers(2, 50, n), 1)
    ts = 1.7e9 + np.cumsum(dts)
    x = np.full((n, n_ex, 8), np.nan)
    for e in range(n_ex):
        r = rng.normal(0, vol, n)
        close = price * np.exp(np.cumsum(r))
        open_ = np.concatenate([[price], close[:-1]]) * np.exp(rng.normal(0, vol / 4, n))
        hi = np.maximum(open_, close) * np.exp(np.abs(rng.normal(0, vol, n)))
        lo = np.minimum(open_, close) * np.exp(-np.abs(rng.normal(0, vol, n)))
        volume = rng.exponential(100.0, n)
        oi = np.maximum(1000.0 + np.cumsum(rng.normal(0, 30, n)), 0.0)
        x[:, e, 0] = open_
        x[:, e, 1] = hi
        x[:, e, 2] = lo
        x[:, e, 3] = close
        x[:, e, 4] = volume
        x[:, e, 5] = oi
        x[:, e, 6] = np.where(rng.random(n) < 0.5, volume * rng.random(n), np.nan)
        x[:, e, 7] = np.where(rng.random(n) < 0.7, rng.normal(0, 1e-4, n), np.nan)
    return ts, x


def random_frame(
    rng: np.random.Generator, n: int, price: float, gap_share: float = 0.2
) -> pd.DataFrame:
    """``n`` random-walk 1h bars from ``price`` as a dataframe (``FRAME_COLUMNS`` and a UTC
    ``date``); a share ``gap_share`` of the steps skips 1 to 198 hours."""
    _ts, x = random_bars(rng, n, price=price, vol=0.02, gaps=False)
    steps = np.where(rng.random(n) < gap_share, rng.integers(2, 200, n), 1)
    dates = pd.Timestamp("2025-01-01", tz="UTC") + pd.to_timedelta(np.cumsum(steps), unit="h")
    cols = {"open": 0, "high": 1, "low": 2, "close": 3, "volume": 4}
    return pd.DataFrame(
        {"date": dates}
        | {c: x[:, 0, k] for c, k in cols.items()}
        | {"open_interest_amount": x[:, 0, 5], "funding_rate": x[:, 0, 7]}
    )
