"""Build the bundled Freqtrade data folders under user_data/data/ from /work/shared/data.

Re-runnable and deterministic: the same inputs give byte-identical feather files. The inputs are
not shipped with the project, so the output is committed; provenance is in user_data/data/README.md.

Writes (Freqtrade 2026.9 futures layout, pair ``BTC/USDT:USDT`` -> ``BTC_USDT_USDT``):

* ``user_data/data/binance/futures/``: 1h ``futures`` candles, ``mark`` (a copy of the trade
  candles, see README), ``funding_rate`` for BTC, ETH, SOL, DOGE, HYPE (Binance rows of the
  multi-venue set, 2025-03 -> 2026-03), and ``open_interest`` for BTC (CoinGlass,
  2025-12 -> 2026-03).
* ``user_data/data/binance_2023_2024/futures/``: BTC and ETH 5m and 1h candles copied, the 8h
  funding converted to the 2026.9 ``1h-funding_rate`` layout, the real 8h mark candles stored as
  ``1h-mark`` (rows at funding times only, which is all Freqtrade's funding-fee join reads).
* ``tests/testdata/replay_binance/futures/``: a small BTC slice for the replay tests.

Usage: ``python scripts/build_user_data.py [--source /work/shared/data] [--out user_data/data]``
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import pandas as pd

ROOT = Path(__file__).resolve().parents[1]
COINS = ("BTC", "ETH", "SOL", "DOGE", "HYPE")
OHLCV = ["date", "open", "high", "low", "close", "volume"]
# Test slice: BTC 1h, 2026-01-01 .. 2026-03-04 (1500+ candles so ccxt must paginate)
TEST_START = pd.Timestamp("2026-01-01", tz="UTC")
TEST_END = pd.Timestamp("2026-03-05", tz="UTC")


def _write(df: pd.DataFrame, path: Path) -> None:
    """Write a feather file (zstd level 19: pyarrow and Freqtrade read it; small to commit)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    df = df.reset_index(drop=True)
    df["date"] = pd.to_datetime(df["date"], utc=True).astype("datetime64[ms, UTC]")
    df.to_feather(path, compression="zstd", compression_level=19)
    print(
        f"wrote {path.relative_to(ROOT)}: {len(df)} rows, {df['date'].iloc[0]} -> "
        f"{df['date'].iloc[-1]}, {path.stat().st_size / 1024:.0f} KiB"
    )


def _check_hourly_unique(df: pd.DataFrame, what: str) -> None:
    if df["date"].duplicated().any():
        first = df.loc[df["date"].duplicated(), "date"].iloc[0]
        raise SystemExit(f"{what}: duplicate date {first}")
    if not df["date"].is_monotonic_increasing:
        raise SystemExit(f"{what}: dates are not sorted")


def multi_venue(src: Path) -> dict[str, dict[str, pd.DataFrame]]:
    """Binance 1h candles and funding of the multi-venue set, per coin."""
    candles = pd.read_parquet(src / "multi_venue_2025_2026" / "candles.parquet")
    funding = pd.read_parquet(src / "multi_venue_2025_2026" / "funding_rates.parquet")
    out: dict[str, dict[str, pd.DataFrame]] = {}
    for coin in COINS:
        c = candles[(candles["venue"] == "binance") & (candles["coin"] == coin)]
        c = c.sort_values("timestamp").rename(
            columns={
                "timestamp": "date",
                "o": "open",
                "h": "high",
                "l": "low",
                "c": "close",
                "v": "volume",
            }
        )[OHLCV]
        _check_hourly_unique(c, f"{coin} candles")
        f = funding[(funding["venue"] == "binance") & (funding["coin"] == coin)].copy()
        # Binance stamps funding a few ms after the hour (16:00:00.001); Freqtrade joins funding
        # and mark on the exact date, so floor to the hour.
        f["date"] = f["timestamp"].dt.floor("h")
        f = f.sort_values("date")[["date", "funding_rate"]]
        _check_hourly_unique(f, f"{coin} funding")
        out[coin] = {"futures": c, "mark": c.copy(), "funding_rate": f}
    return out


def coinglass_oi(src: Path) -> pd.DataFrame:
    """BTC open interest (USD, Binance+Bybit+OKX) as snapshots dated at the bar's close."""
    g = pd.read_csv(src / "coinglass_btc_2025_2026" / "btc_1h_price_oi_funding_liquidations.csv")
    label = pd.to_datetime(g["timestamp"], unit="ms", utc=True)  # bar open time
    oi = pd.DataFrame(
        {
            # oi_close is the value at the bar's end: date it there (Binance openInterestHist
            # convention: a row's timestamp is the moment of the snapshot).
            "date": label + pd.Timedelta(hours=1),
            "open_interest_amount": g["oi_close"] / g["price_close"],
            "open_interest_value": g["oi_close"].astype("float64"),
        }
    ).sort_values("date")
    _check_hourly_unique(oi, "BTC open interest")
    return oi


def old_binance(src: Path, pair: str) -> dict[str, pd.DataFrame]:
    """2023-2024 files: candles as they are, 8h funding and mark in the 2026.9 layout."""
    d = src / "binance_futures_2023_2024"
    out = {
        "5m-futures": pd.read_feather(d / f"{pair}-5m-futures.feather")[OHLCV],
        "1h-futures": pd.read_feather(d / f"{pair}-1h-futures.feather")[OHLCV],
    }
    f = pd.read_feather(d / f"{pair}-8h-funding_rate.feather")
    f = pd.DataFrame({"date": f["date"].dt.floor("h"), "funding_rate": f["open"]})
    _check_hourly_unique(f, f"{pair} funding")
    out["1h-funding_rate"] = f
    m = pd.read_feather(d / f"{pair}-8h-mark.feather")[OHLCV]
    m["date"] = m["date"].dt.floor("h")
    _check_hourly_unique(m, f"{pair} mark")
    out["1h-mark"] = m
    return out


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--source", type=Path, default=Path("/work/shared/data"))
    p.add_argument("--out", type=Path, default=ROOT / "user_data" / "data")
    p.add_argument("--testdata", type=Path, default=ROOT / "tests" / "testdata" / "replay_binance")
    a = p.parse_args(argv)
    if not (a.source / "multi_venue_2025_2026").is_dir():
        raise SystemExit(f"source folder {a.source} has no multi_venue_2025_2026/: wrong --source?")

    fut = a.out / "binance" / "futures"
    mv = multi_venue(a.source)
    for coin, frames in mv.items():
        for ctype, df in frames.items():
            _write(df, fut / f"{coin}_USDT_USDT-1h-{ctype}.feather")
    oi = coinglass_oi(a.source)
    _write(oi, fut / "BTC_USDT_USDT-1h-open_interest.feather")

    old = a.out / "binance_2023_2024" / "futures"
    for pair in ("BTC_USDT_USDT", "ETH_USDT_USDT"):
        for kind, df in old_binance(a.source, pair).items():
            _write(df, old / f"{pair}-{kind}.feather")

    tfut = a.testdata / "futures"
    for ctype, df in [*mv["BTC"].items(), ("open_interest", oi)]:
        sl = df[(df["date"] >= TEST_START) & (df["date"] < TEST_END)]
        _write(sl, tfut / f"BTC_USDT_USDT-1h-{ctype}.feather")
    return 0


if __name__ == "__main__":
    sys.exit(main())
