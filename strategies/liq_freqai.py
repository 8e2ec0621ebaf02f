"""FreqAI example: a classifier that reads the liquidation-map features, with the liq guards.

``LiqFreqAIStrategy`` gives FreqAI a few price features per ``indicator_periods_candles``
(``feature_engineering_expand_all``) and the liquidation-map features once on the base timeframe
(``feature_engineering_standard`` -> ``liqsignal.freqai.add_liq_features``, ``%-liq_*``). The
target says whether the close ``label_period_candles`` ahead is higher ("up") or not ("down").
Entries follow the prediction where FreqAI trusts it (``do_predict == 1``); the guards of
``LiqGuardMixin`` refuse entries into a dense pocket, cap leverage and tighten stops as in the
sample strategy. A showcase of the wiring, not a strategy to run with money.

Run offline (replay exchange for the markets, FreqAI's XGBoost classifier)::

    freqtrade backtesting -c config.json -c config.replay.json -c config.freqai.json \
        --strategy LiqFreqAIStrategy --strategy-path strategies --freqaimodel \
        XGBoostClassifier --datadir user_data/data/binance --timerange 20260201-20260220
"""

# --- Do not remove these imports ---
from __future__ import annotations

from typing import Any, ClassVar

import numpy as np
import talib.abstract as ta
from freqtrade.strategy import IStrategy
from pandas import DataFrame

from liqsignal.freqai import add_liq_features
from liqsignal.freqtrade import LiqGuardCallbacks, liq_informative_pairs


class LiqFreqAIStrategy(LiqGuardCallbacks, IStrategy):
    """
    FreqAI classifier on price and liquidation-map features, guarded by the map.
    """

    INTERFACE_VERSION = 3

    can_short: bool = True
    timeframe = "1h"
    minimal_roi: ClassVar[dict[str, float]] = {"0": 0.3, "24": 0.1}
    stoploss = -0.3
    use_custom_stoploss = True
    process_only_new_candles = True
    use_exit_signal = True
    # the map's state needs 480 candles to settle (see LiqTrendStrategy)
    startup_candle_count: int = 480
    target_leverage: ClassVar[float] = 5.0

    order_types: ClassVar[dict[str, Any]] = {
        "entry": "market",
        "exit": "market",
        "stoploss": "market",
        "stoploss_on_exchange": False,
    }

    def informative_pairs(self) -> list[tuple[str, str, str]]:
        """Open interest and funding candles of the whitelist (downloaded in dry/live runs)."""
        if not self.dp:
            return []
        return liq_informative_pairs(self.dp.current_whitelist(), self.timeframe)

    # -- FreqAI features and target

    def feature_engineering_expand_all(
        self, dataframe: DataFrame, period: int, metadata: dict, **kwargs: Any
    ) -> DataFrame:
        dataframe["%-rsi-period"] = ta.RSI(dataframe, timeperiod=period)
        dataframe["%-roc-period"] = ta.ROC(dataframe, timeperiod=period)
        dataframe["%-natr-period"] = ta.NATR(dataframe, timeperiod=period)
        return dataframe

    def feature_engineering_expand_basic(
        self, dataframe: DataFrame, metadata: dict, **kwargs: Any
    ) -> DataFrame:
        dataframe["%-pct-change"] = dataframe["close"].pct_change()
        return dataframe

    def feature_engineering_standard(
        self, dataframe: DataFrame, metadata: dict, **kwargs: Any
    ) -> DataFrame:
        dataframe = add_liq_features(dataframe, metadata, self.dp, self.config)
        dataframe["%-hour_of_day"] = dataframe["date"].dt.hour
        return dataframe

    def set_freqai_targets(self, dataframe: DataFrame, metadata: dict, **kwargs: Any) -> DataFrame:
        n = int(self.freqai_info["feature_parameters"]["label_period_candles"])
        ahead = dataframe["close"].shift(-n)
        dataframe["&s-up_or_down"] = np.where(ahead > dataframe["close"], "up", "down")
        return dataframe

    # -- populate_*

    def populate_indicators(self, dataframe: DataFrame, metadata: dict) -> DataFrame:
        # FreqAI calls the feature functions above and adds the prediction columns
        return self.freqai.start(dataframe, metadata, self)

    def populate_entry_trend(self, dataframe: DataFrame, metadata: dict) -> DataFrame:
        ok = dataframe["do_predict"] == 1
        dataframe.loc[ok & (dataframe["&s-up_or_down"] == "up"), ["enter_long", "enter_tag"]] = (
            1,
            "freqai_up",
        )
        dataframe.loc[ok & (dataframe["&s-up_or_down"] == "down"), ["enter_short", "enter_tag"]] = (
            1,
            "freqai_down",
        )
        return dataframe

    def populate_exit_trend(self, dataframe: DataFrame, metadata: dict) -> DataFrame:
        dataframe.loc[dataframe["&s-up_or_down"] == "down", "exit_long"] = 1
        dataframe.loc[dataframe["&s-up_or_down"] == "up", "exit_short"] = 1
        return dataframe
