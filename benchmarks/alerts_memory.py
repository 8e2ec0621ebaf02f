"""Where the alert process's resident memory goes: imports, then one live map per market.

Prints the resident set (VmRSS, MiB) after each step, and whether Freqtrade and matplotlib were
imported (the alert service must not need them). Run:

    .venv/bin/python benchmarks/alerts_memory.py --markets 2
"""

from __future__ import annotations

import argparse
import sys


def rss_mib() -> float:
    with open("/proc/self/status", encoding="ascii") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    return float("nan")


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--markets", type=int, default=2)
    a = ap.parse_args()
    steps: list[tuple[str, float]] = [("interpreter", rss_mib())]
    import numpy  # noqa: F401
    import pandas  # noqa: F401

    steps.append(("numpy + pandas", rss_mib()))
    import numba  # noqa: F401

    steps.append(("numba", rss_mib()))
    import ccxt  # noqa: F401

    steps.append(("ccxt", rss_mib()))
    import liqsignal.alerts.service  # noqa: F401

    steps.append(("liqsignal.alerts.service", rss_mib()))
    from liqsignal.config import MapConfig
    from liqsignal.datasets import load_dataset
    from liqsignal.features import compute_features

    frame = load_dataset("btc_1h").frame
    maps = []
    for _ in range(a.markets):
        _, m = compute_features(frame, MapConfig(), return_map=True)
        maps.append(m)
    steps.append((f"{a.markets} maps built on 2,174 bars", rss_mib()))
    from pathlib import Path

    from liqsignal.data.provider import aggregated_features_from_store

    datadir = Path(__file__).resolve().parents[1] / "user_data" / "data"
    if (datadir / "binance").is_dir():  # the provider's store path (point-in-time merges)
        aggregated_features_from_store("BTC", ["binance"], "1h", datadir)
        steps.append(("one map from the bundled store", rss_mib()))
    prev = 0.0
    for name, v in steps:
        print(f"{name:<34}{v:8.0f} MiB  (+{v - prev:.0f})")
        prev = v
    hm = maps[0].hm.nbytes / 2**20
    print(f"heatmap ring buffer per map: {hm:.1f} MiB at its cap of {maps[0].hm.shape[0]} frames")
    print(
        f"freqtrade imported: {'freqtrade' in sys.modules}; matplotlib imported: "
        f"{'matplotlib' in sys.modules}"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
