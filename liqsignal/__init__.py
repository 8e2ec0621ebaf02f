"""liqsignal: liquidation maps for crypto derivatives, for Freqtrade strategies and alerts.

The public API is listed in ``__all__``; everything else is internal. Freqtrade-facing helpers
live in ``liqsignal.freqtrade`` (imported on demand: it imports Freqtrade), the live provider in
``liqsignal.data.provider`` and the alert service in ``liqsignal.alerts.service``.
"""

from __future__ import annotations

from liqsignal.config import ForecastConfig, MapConfig
from liqsignal.engine import Cluster, HeatmapHistory, LiquidationMap, MapSnapshot
from liqsignal.evaluate import evaluate_bars, load_coinglass
from liqsignal.exceptions import (
    ConfigError,
    CorruptFileError,
    DataError,
    ForecastError,
    InputError,
    LiqsignalError,
    PermanentDataError,
    TemporaryDataError,
)
from liqsignal.features import FEATURE_COLUMNS, compute_features, compute_features_multi
from liqsignal.forecast import add_forecast_columns, forecast_report, format_forecast_report
from liqsignal.guards import GuardConfig
from liqsignal.tiers import liquidation_price

__all__ = [
    "FEATURE_COLUMNS",
    "Cluster",
    "ConfigError",
    "CorruptFileError",
    "DataError",
    "ForecastConfig",
    "ForecastError",
    "GuardConfig",
    "HeatmapHistory",
    "InputError",
    "LiqsignalError",
    "LiquidationMap",
    "MapConfig",
    "MapSnapshot",
    "PermanentDataError",
    "TemporaryDataError",
    "add_forecast_columns",
    "compute_features",
    "compute_features_multi",
    "evaluate_bars",
    "forecast_report",
    "format_forecast_report",
    "liquidation_price",
    "load_coinglass",
]
__version__ = "0.1.0"
