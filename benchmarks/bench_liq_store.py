"""Liquidation store appends: time per ``append_events`` as the events file grows.

Run: ``.venv/bin/python benchmarks/bench_liq_store.py`` (``--rows 30000 --batch 100``).

The bundled real Hyperliquid liquidations (all coins, 2243 events) are repeated with their
times shifted by whole days until ``--rows`` events exist, then appended in batches of
``--batch`` (what a stream flushes at once) into one symbol's file. Each append reads the file,
drops duplicates, sorts, and writes it atomically under the lock. Baseline in the same run: the
atomic write alone of the file's frame at that size (``store.write_atomic``, same lz4 level),
i.e. the least any rewrite-the-file append can cost. Printed: the median of the last 10
appends at 10 %, 50 % and 100 % of the file's final size, and its ratio to the baseline.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from pathlib import Path

import pandas as pd

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from liqsignal.data.liquidations import LiquidationStore, make_events  # noqa: E402
from liqsignal.data.store import write_atomic  # noqa: E402

SYM = "BTC/USDT:USDT"


def events(rows: int) -> pd.DataFrame:
    raw = pd.read_parquet(ROOT / "liqsignal" / "resources" / "liquidations_hyperliquid.parquet")
    parts = []
    day = 0
    while sum(len(p) for p in parts) < rows:
        parts.append(
            pd.DataFrame(
                {
                    "timestamp": raw["timestamp"] + pd.Timedelta(days=day),
                    "symbol": SYM,
                    "side": "long",
                    "price": raw["price"],
                    "usd": raw["size_usd"],
                    "amount": raw["size_usd"] / raw["price"],
                }
            )
        )
        day += 12
    return make_events(pd.concat(parts, ignore_index=True).iloc[:rows], exchange="binance")


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--rows", type=int, default=30_000)
    ap.add_argument("--batch", type=int, default=100)
    a = ap.parse_args()
    ev = events(a.rows)
    n_batches = -(-len(ev) // a.batch)
    marks = sorted({max(10, round(n_batches * f)) for f in (0.1, 0.5, 1.0)})
    took: list[float] = []
    with tempfile.TemporaryDirectory() as tmp:
        store = LiquidationStore(tmp)
        rows = []
        for i in range(n_batches):
            part = ev.iloc[i * a.batch : (i + 1) * a.batch]
            t0 = time.perf_counter()
            store.append_events("binance", part)
            took.append(time.perf_counter() - t0)
            if i + 1 in marks:
                frame = store.read_events("binance", SYM)
                base = []
                for _ in range(5):
                    t1 = time.perf_counter()
                    write_atomic(frame, Path(tmp) / "baseline.feather", compression_level=None)
                    base.append(time.perf_counter() - t1)
                rows.append((len(frame), statistics.median(took[-10:]), statistics.median(base)))
        assert len(store.read_events("binance", SYM)) == len(ev)
    print(f"{len(ev)} real events appended in {n_batches} batches of {a.batch}")
    for n, med, base_s in rows:
        print(
            f"file of {n:>7} rows: append median {med * 1000:7.1f} ms (last 10), "
            f"baseline write {base_s * 1000:6.1f} ms, ratio {med / base_s:5.2f}"
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
