"""Tiny futures strategy for the replay tests: trades on open interest and funding it reads.

It enters only on bars where open interest (``open_interest`` candles) and a funding rate
(``funding_rate`` candles) were merged in, so a run with trades proves both were delivered.
"""

from __future__ import annotations

import logging
from typing import ClassVar

import pandas as pd
from freqtrade.strategy import IStrategy
from pandas import DataFrame

logger = logging.getLogger(__name__)


class ReplayOiStrategy(IStrategy):
    INTERFACE_VERSION = 3
    timeframe = "1h"
    can_short = True
    minimal_roi: ClassVar[dict[str, float]] = {"0": 10.0}
    stoploss = -0.5
    startup_candle_count = 30
    process_only_new_candles = True
    use_exit_signal = True
    # filled while running, read by the tests (in-process runs only)
    seen: ClassVar[dict[str, int]] = {}

    def informative_pairs(self) -> list[tuple[str, str, str]]:
        pairs = self.dp.current_whitelist() if self.dp else []
        return [(p, "1h", c) for p in pairs for c in ("open_interest", "funding_rate")]

    def _merge(self, df: DataFrame, pair: str, candle_type: str, cols: list[str]) -> DataFrame:
        other = self.dp.get_pair_dataframe(pair, "1h", candle_type=candle_type)
        if other is None or other.empty or not set(cols) <= set(other.columns):
            for c in cols:
                df[c] = float("nan")
            return df
        other = other[["date", *cols]]
        merged = pd.merge_asof(
            df.sort_values("date"), other.sort_values("date"), on="date", direction="backward"
        )
        merged.index = df.index
        return merged

    def populate_indicators(self, dataframe: DataFrame, metadata: dict) -> DataFrame:
        pair = metadata["pair"]
        df = self._merge(dataframe, pair, "open_interest", ["open_interest_value"])
        df = self._merge(df, pair, "funding_rate", ["funding_rate"])
        df["oi_change"] = df["open_interest_value"].pct_change(fill_method=None)
        df["sma"] = df["close"].rolling(12).mean()
        self.seen[f"{pair} oi_rows"] = int(df["open_interest_value"].notna().sum())
        self.seen[f"{pair} funding_rows"] = int(df["funding_rate"].notna().sum())
        self.seen[f"{pair} candles"] = len(df)
        if self.dp.runmode.value in ("dry_run", "live"):
            last = df.iloc[-1]
            logger.info(
                "replay-test analysed %s candle=%s oi=%s funding=%s",
                pair,
                last["date"].isoformat(),
                last["open_interest_value"],
                last["funding_rate"],
            )
        return df

    def populate_entry_trend(self, dataframe: DataFrame, metadata: dict) -> DataFrame:
        ok = dataframe["oi_change"].notna() & dataframe["funding_rate"].notna()
        up = dataframe["close"] > dataframe["sma"]
        dataframe.loc[ok & up & (dataframe["oi_change"] > 0), "enter_long"] = 1
        dataframe.loc[ok & ~up & (dataframe["oi_change"] > 0), "enter_short"] = 1
        return dataframe

    def populate_exit_trend(self, dataframe: DataFrame, metadata: dict) -> DataFrame:
        ok = dataframe["oi_change"].notna()
        dataframe.loc[ok & (dataframe["oi_change"] < 0), "exit_long"] = 1
        dataframe.loc[ok & (dataframe["oi_change"] < 0), "exit_short"] = 1
        return dataframe
