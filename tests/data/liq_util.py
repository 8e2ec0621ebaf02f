"""Real liquidation data for the tests, and a Gate replay datadir built from it.

- events: real Hyperliquid BTC liquidations (liqsignal/resources/liquidations_hyperliquid.parquet,
  see its README). The file's side is 'S' on every row (meaning unknown), so sides alternate by
  row here to exercise both.
- bars: the real CoinGlass 1h long/short liquidation USD (Binance + Bybit + OKX aggregate,
  liqsignal/resources/coinglass_btc_1h_price_oi_funding_liquidations.csv).
- the Gate datadir: the bundled Binance BTC slice (tests/testdata/replay_binance) as Gate's
  BTC_USDT, with the events as its liquidation orders and the bars as the liquidation fields
  of its contract_stats: real numbers in Gate's shapes, not Gate's own figures.
"""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import pandas as pd

from liqsignal.data.liquidations import LiquidationStore

ROOT = Path(__file__).resolve().parents[2]
TESTDATA = ROOT / "tests" / "testdata" / "replay_binance"
RESOURCES = ROOT / "liqsignal" / "resources"
SYM = "BTC/USDT:USDT"


def real_events(symbol: str = SYM, coin: str = "BTC", n: int | None = None) -> pd.DataFrame:
    """The first ``n`` (default: all) real liquidations of ``coin``, labelled ``symbol``."""
    raw = pd.read_parquet(RESOURCES / "liquidations_hyperliquid.parquet")
    raw = raw[raw["coin"] == coin].reset_index(drop=True)
    if n is not None:
        raw = raw.iloc[:n]
    return pd.DataFrame(
        {
            "timestamp": raw["timestamp"],
            "symbol": symbol,
            "side": np.where(np.arange(len(raw)) % 2 == 0, "long", "short"),
            "price": raw["price"],
            "amount": raw["size_usd"] / raw["price"],
            "usd": raw["size_usd"],
        }
    )


def coinglass_bars() -> pd.DataFrame:
    cg = pd.read_csv(RESOURCES / "coinglass_btc_1h_price_oi_funding_liquidations.csv")
    return pd.DataFrame(
        {
            "date": pd.to_datetime(cg["timestamp"], unit="ms", utc=True),
            "long_liquidated_usd": cg["liquidation_long_usd"],
            "short_liquidated_usd": cg["liquidation_short_usd"],
        }
    )


def make_gate_datadir(root: Path) -> Path:
    """``<root>/gate``: the test slice plus liquidation files, written by LiquidationStore."""
    shutil.copytree(TESTDATA, root / "gate")
    store = LiquidationStore(root)
    store.append_events("gate", real_events())
    store.write_bars("gate", SYM, "1h", coinglass_bars())
    return root / "gate"
