"""liq_real_long_usd / liq_real_short_usd in a real Freqtrade 2026.9 backtest (slow).

The bundled Binance BTC 1h candles with the bundled CoinGlass realized liquidations (BTC over
Binance + Bybit + OKX, 1h) imported into the store beside them; a strategy enters after hours
with large long liquidations. Checked: the columns Freqtrade's strategy saw equal the CoinGlass
bars (NaN where the file lacks an hour), and every trade opened at the candle after a bar whose
realized liquidations passed the threshold (the signal was known at that bar's close).
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from liq_util import RESOURCES, ROOT

from liqsignal.replay.server import ReplayExchange

BUNDLED = ROOT / "user_data" / "data" / "binance"
FREQTRADE = Path(sys.executable).with_name("freqtrade")
THRESHOLD = 30_000_000.0

STRATEGY = '''
import os
from freqtrade.strategy import IStrategy
from liqsignal.freqtrade import add_liq_columns


class LiqRealCheck(IStrategy):
    """Enter long after an hour with more than THRESHOLD USD of longs liquidated."""

    INTERFACE_VERSION = 3
    timeframe = "1h"
    can_short = False
    minimal_roi = {"0": 100.0}
    stoploss = -0.5
    use_exit_signal = True
    startup_candle_count = 0

    def populate_indicators(self, dataframe, metadata):
        df = add_liq_columns(dataframe, metadata, self.dp, self.config)
        cols = ["date", "liq_real_long_usd", "liq_real_short_usd"]
        df[cols].to_feather(os.environ["LIQ_REAL_OUT"])
        return df

    def populate_entry_trend(self, dataframe, metadata):
        dataframe.loc[dataframe["liq_real_long_usd"] > THRESHOLD, "enter_long"] = 1
        return dataframe

    def populate_exit_trend(self, dataframe, metadata):
        dataframe.loc[dataframe["liq_real_long_usd"] < THRESHOLD / 10, "exit_long"] = 1
        return dataframe
'''.replace("THRESHOLD", repr(THRESHOLD))


@pytest.mark.slow
def test_realized_columns_in_a_real_backtest(tmp_path: Path) -> None:
    data = tmp_path / "data"
    (data / "binance" / "futures").mkdir(parents=True)
    for f in (BUNDLED / "futures").glob("BTC_USDT_USDT-1h-*.feather"):
        shutil.copy(f, data / "binance" / "futures" / f.name)
    cg = RESOURCES / "coinglass_btc_1h_price_oi_funding_liquidations.csv"
    imp = subprocess.run(
        [sys.executable, "-m", "liqsignal", "import-liquidations", str(cg), "--exchange",
         "binance", "--symbol", "BTC/USDT:USDT", "--datadir", str(data)],
        capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    assert imp.returncode == 0, imp.stderr
    sdir = tmp_path / "strategies"
    sdir.mkdir()
    (sdir / "liq_real_check.py").write_text(STRATEGY)
    example = json.loads((ROOT / "config.example.json").read_text())
    out = tmp_path / "cols.feather"
    (tmp_path / "ud").mkdir()
    (tmp_path / "bt").mkdir()
    with ReplayExchange(BUNDLED) as rx:
        cfg = dict(example)
        cfg["exchange"] = {**example["exchange"], "ccxt_config": rx.ccxt_config()}
        cfg["user_data_dir"] = str(tmp_path / "ud")
        cfg["liqsignal"] = {**example["liqsignal"], "exchanges": ["binance"]}
        path = tmp_path / "config.json"
        path.write_text(json.dumps(cfg))
        env = {k: v for k, v in os.environ.items() if not k.startswith("PYTEST_")}
        proc = subprocess.run(
            [str(FREQTRADE), "backtesting", "-c", str(path), "--datadir", str(data / "binance"),
             "--strategy", "LiqRealCheck", "--strategy-path", str(sdir),
             "--timerange", "20251205-20260304", "--export", "trades",
             "--backtest-directory", str(tmp_path / "bt")],
            capture_output=True, text=True, timeout=300, env={**env, "LIQ_REAL_OUT": str(out)},
        )  # fmt: skip
    assert proc.returncode == 0, proc.stderr[-3000:]
    seen = pd.read_feather(out).set_index("date")
    src = pd.read_csv(cg)
    bars = pd.Series(
        src["liquidation_long_usd"].to_numpy(),
        index=pd.to_datetime(src["timestamp"], unit="ms", utc=True),
    )
    common = seen.index.intersection(bars.index)
    assert len(common) > 2000
    np.testing.assert_allclose(seen.loc[common, "liq_real_long_usd"], bars.loc[common])
    lacking = seen.index[(seen.index >= bars.index[0]) & (seen.index <= bars.index[-1])]
    lacking = lacking.difference(bars.index)
    assert len(lacking) > 0 and seen.loc[lacking, "liq_real_long_usd"].isna().all()

    (zip_path,) = (tmp_path / "bt").glob("*.zip")
    with zipfile.ZipFile(zip_path) as z:
        name = next(n for n in z.namelist() if n.endswith(".json") and "_config" not in n)
        trades = json.loads(z.read(name))["strategy"]["LiqRealCheck"]["trades"]
    assert len(trades) >= 3
    for t in trades:
        opened = pd.Timestamp(t["open_date"])
        signal = opened - pd.Timedelta(hours=1)  # the candle whose close gave the signal
        assert bars.loc[signal] > THRESHOLD, (opened, bars.get(signal))
    print(f"{len(trades)} trades, {len(common)} candles with realized liquidations")
