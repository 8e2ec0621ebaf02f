"""Freqtrade-facing helpers, in one import for strategies.

- ``liq_informative_pairs(pairs, timeframe)``: the ``open_interest`` and ``funding_rate`` candle
  types to list in ``informative_pairs()`` so dry/live runs download them.
- ``merge_point_in_time(dataframe, other, columns, ...)``: merge another candle type into the
  strategy frame so no value from after a candle's close reaches that candle
  (:mod:`liqsignal.data.timeline` states the convention).
- ``add_liq_columns(dataframe, metadata, dp, config)``: one call in ``populate_indicators``;
  with several ``liqsignal.exchanges`` the aggregated map's columns (stored files in backtests,
  the provider registered with ``set_provider`` / ``LiqGuardMixin.liq_attach`` in dry/live;
  ``refresh_in_background``). In :mod:`liqsignal.columns`.
- ``LiqGuardMixin``: ``liq_confirm_trade_entry``, ``liq_leverage``, ``liq_custom_stoploss``, one
  line each in the strategy's callbacks, plus hyperoptable guard thresholds. In
  :mod:`liqsignal.guard_mixin`.
- ``LIQ_PLOT_CONFIG``: a ``plot_config`` for ``freqtrade plot-dataframe``.
"""

from __future__ import annotations

from liqsignal.columns import (
    AGGREGATED_COLUMNS,
    LIQ_COLUMNS,
    LIQ_FORECAST_COLUMNS,
    LIQ_PLOT_CONFIG,
    SECTION_KEYS,
    LiqConfigurationError,
    LiqContext,
    LiqSettings,
    add_liq_columns,
    liq_context,
    liq_informative_pairs,
    liq_settings,
    refresh_in_background,
    reset_liq_context,
    set_provider,
)
from liqsignal.data.timeline import merge_point_in_time, timeframe_seconds
from liqsignal.guard_mixin import LiqGuardCallbacks, LiqGuardMixin, liq_safe

__all__ = [
    "AGGREGATED_COLUMNS",
    "LIQ_COLUMNS",
    "LIQ_FORECAST_COLUMNS",
    "LIQ_PLOT_CONFIG",
    "SECTION_KEYS",
    "LiqConfigurationError",
    "LiqContext",
    "LiqGuardCallbacks",
    "LiqGuardMixin",
    "LiqSettings",
    "add_liq_columns",
    "liq_context",
    "liq_informative_pairs",
    "liq_safe",
    "liq_settings",
    "merge_point_in_time",
    "refresh_in_background",
    "reset_liq_context",
    "set_provider",
    "timeframe_seconds",
]
