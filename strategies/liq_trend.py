"""Sample futures strategy using liqsignal's liquidation-map columns and risk guards.

``LiqTrendStrategy``: EMA trend entries (long and short) plus a post-flush reset entry, guarded
by the liquidation map: no long into a dense long pocket just below price, no short under a dense
short pocket just above, leverage capped so the position's own liquidation lies beyond the
cascade, stop tightened when a pocket on the position's side is armed.

``LiqTrendControl``: the same trend entries without liq columns or guards, for comparison.

With several venues in the config's ``liqsignal.exchanges`` the same ``add_liq_columns`` call
gives the aggregated map's columns (stored files of those venues in backtests; in dry/live the
``MapProvider`` registered with ``liqsignal.freqtrade.set_provider``, see docs/freqtrade.md).

Run (offline, replay exchange for the markets; see docs/freqtrade.md)::

    freqtrade backtesting -c config.json --strategy LiqTrendStrategy \
        --strategy-path strategies --datadir user_data/data/binance --timerange 20251210-20260304
"""

# --- Do not remove these imports ---
from __future__ import annotations

from typing import Any, ClassVar

import talib.abstract as ta
from freqtrade.strategy import IntParameter, IStrategy
from pandas import DataFrame

from liqsignal.freqtrade import (
    LIQ_PLOT_CONFIG,
    LiqGuardCallbacks,
    add_liq_columns,
    liq_informative_pairs,
)


class LiqTrendStrategy(LiqGuardCallbacks, IStrategy):
    """
    EMA trend follower for USD-M perpetuals with liquidation-map guards.

    Entries:
    - trend: fast EMA above the slow EMA and close crossing above the fast EMA (long), the mirror
      for shorts;
    - post-flush reset: within ``flush_window`` candles after a long flush (stacked long
      leverage liquidated, ``liq_flush`` = +1) a green candle enters long; the mirror after a
      short flush.
    Exits: the fast EMA crossing the slow EMA against the trade, ROI, stoploss, and the
    liquidation guard's stop.
    """

    INTERFACE_VERSION = 3

    can_short: bool = True
    timeframe = "1h"

    # Minimal ROI designed for the strategy (profit ratios of the stake, leverage included).
    minimal_roi: ClassVar[dict[str, float]] = {"0": 0.6, "48": 0.3, "120": 0.1}

    # Stoploss on the stake: at 10x leverage, -0.3 is a 3 % adverse price move.
    stoploss = -0.3
    trailing_stop = False
    use_custom_stoploss = True

    process_only_new_candles = True
    use_exit_signal = True
    exit_profit_only = False

    # The liquidation map carries state (fading levels, EMAs of cluster size and OI): 480 1h
    # candles make the liq columns stable (tests/freqtrade/test_lookahead.py checks it with
    # ``freqtrade recursive-analysis``), and fit one Binance request in dry/live runs (499
    # candles, 500 open-interest rows per request).
    startup_candle_count: int = 480

    # Leverage the strategy wants before the guard caps it.
    target_leverage: ClassVar[float] = 10.0
    # False in the control: no liq columns, no guards, no flush entries.
    use_liq: ClassVar[bool] = True

    fast_ema = IntParameter(10, 40, default=20, space="buy", optimize=True, load=True)
    slow_ema = IntParameter(40, 120, default=50, space="buy", optimize=True, load=True)
    flush_window = IntParameter(1, 6, default=3, space="buy", optimize=True, load=True)

    order_types: ClassVar[dict[str, Any]] = {
        "entry": "market",
        "exit": "market",
        "stoploss": "market",
        "stoploss_on_exchange": False,
    }
    order_time_in_force: ClassVar[dict[str, str]] = {"entry": "GTC", "exit": "GTC"}

    plot_config: ClassVar[dict[str, Any]] = {
        **LIQ_PLOT_CONFIG,
        "main_plot": {
            **LIQ_PLOT_CONFIG["main_plot"],
            "ema_fast": {"color": "royalblue"},
            "ema_slow": {"color": "orange"},
        },
    }

    def informative_pairs(self) -> list[tuple[str, str, str]]:
        """Open interest and funding candles of the whitelist (downloaded in dry/live runs)."""
        if not self.use_liq or not self.dp:
            return []
        return liq_informative_pairs(self.dp.current_whitelist(), self.timeframe)

    def populate_indicators(self, dataframe: DataFrame, metadata: dict) -> DataFrame:
        if self.use_liq:
            dataframe = add_liq_columns(dataframe, metadata, self.dp, self.config)
        for n in {self.fast_ema.value, self.slow_ema.value}:
            dataframe[f"ema_{n}"] = ta.EMA(dataframe, timeperiod=n)
        dataframe["ema_fast"] = dataframe[f"ema_{self.fast_ema.value}"]
        dataframe["ema_slow"] = dataframe[f"ema_{self.slow_ema.value}"]
        return dataframe

    def populate_entry_trend(self, dataframe: DataFrame, metadata: dict) -> DataFrame:
        fast, slow, close = dataframe["ema_fast"], dataframe["ema_slow"], dataframe["close"]
        cross_up = (close > fast) & (close.shift(1) <= fast.shift(1))
        cross_down = (close < fast) & (close.shift(1) >= fast.shift(1))
        has_volume = dataframe["volume"] > 0

        dataframe.loc[(fast > slow) & cross_up & has_volume, ["enter_long", "enter_tag"]] = (
            1,
            "trend",
        )
        dataframe.loc[(fast < slow) & cross_down & has_volume, ["enter_short", "enter_tag"]] = (
            1,
            "trend",
        )
        if self.use_liq:
            recent = dataframe["liq_bars_since_flush"] <= self.flush_window.value
            last_flush = dataframe["liq_flush"].replace(0.0, float("nan")).ffill()
            green = close > dataframe["open"]
            red = close < dataframe["open"]
            dataframe.loc[recent & (last_flush > 0) & green & has_volume,
                          ["enter_long", "enter_tag"]] = (1, "flush_reset")  # fmt: skip
            dataframe.loc[recent & (last_flush < 0) & red & has_volume,
                          ["enter_short", "enter_tag"]] = (1, "flush_reset")  # fmt: skip
        return dataframe

    def populate_exit_trend(self, dataframe: DataFrame, metadata: dict) -> DataFrame:
        fast, slow = dataframe["ema_fast"], dataframe["ema_slow"]
        dataframe.loc[(fast < slow) & (fast.shift(1) >= slow.shift(1)), "exit_long"] = 1
        dataframe.loc[(fast > slow) & (fast.shift(1) <= slow.shift(1)), "exit_short"] = 1
        return dataframe


class LiqTrendControl(LiqTrendStrategy):
    """The same trend strategy with liq columns and guards off (the comparison baseline).

    The callbacks stay wired (with the guards off they return the proposed leverage and keep
    the stoploss), so the two differ only in what liqsignal computes and decides.
    """

    use_liq: ClassVar[bool] = False
    liq_guards_enabled: ClassVar[bool] = False
    plot_config: ClassVar[dict[str, Any]] = {
        "main_plot": {"ema_fast": {"color": "royalblue"}, "ema_slow": {"color": "orange"}}
    }
