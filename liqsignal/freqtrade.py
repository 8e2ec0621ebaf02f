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

from liqsignal import columns as _columns
from liqsignal import guard_mixin as _guard_mixin
from liqsignal.columns import *  # noqa: F403  (this module gathers the two for strategies)
from liqsignal.data.timeline import merge_point_in_time, timeframe_seconds
from liqsignal.guard_mixin import *  # noqa: F403

__all__ = [
    *_columns.__all__,
    *_guard_mixin.__all__,
    "merge_point_in_time",
    "timeframe_seconds",
]
