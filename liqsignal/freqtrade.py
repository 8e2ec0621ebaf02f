"""Freqtrade-facing helpers: liq columns in populate_indicators, guards in the callbacks.

- ``liq_informative_pairs(pairs, timeframe)``: the ``open_interest`` and ``funding_rate`` candle
  types to list in ``informative_pairs()`` so dry/live runs download them.
- ``merge_point_in_time(dataframe, other, columns, ...)``: merge another candle type into the
  strategy frame so no value from after a candle's close reaches that candle (convention below).
- ``add_liq_columns(dataframe, metadata, dp, config)``: one call in ``populate_indicators``.
- ``LiqGuardMixin``: ``liq_confirm_trade_entry``, ``liq_leverage``, ``liq_custom_stoploss``, one
  line each in the strategy's callbacks, plus hyperoptable guard thresholds.
- ``LIQ_PLOT_CONFIG``: a ``plot_config`` for ``freqtrade plot-dataframe``.

Point-in-time convention. Freqtrade stores ``open_interest`` rows labelled like candles, by open
time, and in dry/live runs drops the row dated at the forming candle's open as incomplete. So a
row dated ``D`` of timeframe ``tf_oi`` is treated as known at ``D + tf_oi`` and merged into the
strategy candle opened at ``T`` (closing at ``T + tf``) only when ``D + tf_oi <= T + tf``: with
equal timeframes, the candle gets the row of its own date, never a later one. Backtests and live
runs see the same values. (The bundled Binance rows are snapshots taken at their timestamp, so
this lags the snapshot at the candle's close by one candle: conservative, never ahead.) Funding
rows (``funding_rate``, dated at settlement) follow the same rule with the funding timeframe.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any, ClassVar

import pandas as pd

from liqsignal.config import MapConfig
from liqsignal.exceptions import ConfigError, LiqsignalError
from liqsignal.features import FEATURE_COLUMNS, compute_features
from liqsignal.guards import (
    GUARD_COLUMNS,
    GuardConfig,
    data_state,
    entry_decision,
    leverage_decision,
    stop_decision,
)

try:  # the mixin's hyperoptable parameters; the rest of the module works without Freqtrade
    from freqtrade.strategy import DecimalParameter
except ImportError as e:  # pragma: no cover - freqtrade is a dependency
    raise ImportError("liqsignal.freqtrade needs Freqtrade: pip install 'freqtrade>=2026.9'") from e

__all__ = [
    "LIQ_COLUMNS",
    "LIQ_PLOT_CONFIG",
    "SECTION_KEYS",
    "LiqGuardMixin",
    "LiqSettings",
    "add_liq_columns",
    "liq_informative_pairs",
    "liq_settings",
    "merge_point_in_time",
    "timeframe_seconds",
]

logger = logging.getLogger(__name__)

#: Keys of the ``liqsignal`` section of a Freqtrade config.
SECTION_KEYS: tuple[str, ...] = ("engine", "guards", "alerts", "exchanges")

_OI_COLS = ("open_interest_amount", "open_interest_value")

#: Columns ``add_liq_columns`` adds: ``FEATURE_COLUMNS`` without ``liq_dropped_usd``, a running
#: total since the map started, which depends on where the data starts (no fixed startup makes
#: it stable; ``freqtrade recursive-analysis`` shows it), so it stays out of strategy frames.
LIQ_COLUMNS: tuple[str, ...] = tuple(c for c in FEATURE_COLUMNS if c != "liq_dropped_usd")
_TF_UNITS = {"s": 1, "m": 60, "h": 3600, "d": 86400, "w": 604800}

#: ``plot_config`` for ``freqtrade plot-dataframe``: cluster prices and cascade ends on the
#: price chart, densities, armed scores and cascade depth in subplots.
LIQ_PLOT_CONFIG: dict[str, Any] = {
    "main_plot": {
        "liq_long_cluster_price": {"color": "firebrick"},
        "liq_short_cluster_price": {"color": "seagreen"},
        "liq_long_cascade_end": {"color": "salmon"},
        "liq_short_cascade_end": {"color": "mediumaquamarine"},
    },
    "subplots": {
        "liq density (USD within band)": {
            "liq_long_density_usd": {"color": "firebrick", "type": "bar"},
            "liq_short_density_usd": {"color": "seagreen", "type": "bar"},
        },
        "liq armed": {
            "liq_long_armed_score": {"color": "firebrick"},
            "liq_short_armed_score": {"color": "seagreen"},
            "liq_flush": {"color": "black", "type": "bar"},
        },
        "liq cascade depth": {
            "liq_long_cascade_depth": {"color": "firebrick"},
            "liq_short_cascade_depth": {"color": "seagreen"},
        },
    },
}


def timeframe_seconds(timeframe: str) -> int:
    """Seconds of a Freqtrade timeframe such as "5m", "1h", "1d"."""
    try:
        n, unit = int(timeframe[:-1]), timeframe[-1]
        return n * _TF_UNITS[unit]
    except (ValueError, KeyError, IndexError) as e:
        raise ConfigError(f"timeframe {timeframe!r} is not like '5m', '1h' or '1d'") from e


@dataclass(frozen=True)
class LiqSettings:
    """The parsed ``liqsignal`` section: the engine's and the guards' settings."""

    engine: MapConfig
    guards: GuardConfig
    #: Keys set explicitly under ``liqsignal.guards`` (they win over hyperoptable parameters).
    guard_keys: frozenset[str] = frozenset()


def liq_settings(config: Mapping[str, Any] | MapConfig | None) -> LiqSettings:
    """Read the ``liqsignal`` section of a Freqtrade config (or take a ``MapConfig``).

    Raises ``ConfigError`` naming the key on bad input; a missing section means defaults.
    """
    if isinstance(config, MapConfig):
        return LiqSettings(config, GuardConfig())
    section = (config or {}).get("liqsignal") or {}
    if not isinstance(section, Mapping):
        raise ConfigError(f"liqsignal: expected a mapping, got {type(section).__name__}")
    unknown = sorted(set(section) - set(SECTION_KEYS))
    if unknown:
        raise ConfigError(f"liqsignal: unknown key(s) {unknown}; known keys: {list(SECTION_KEYS)}")
    guards = section.get("guards") or {}
    engine = dict(section.get("engine") or {})
    exchange = (config or {}).get("exchange")
    if "exchange" not in engine and isinstance(exchange, Mapping) and exchange.get("name"):
        engine["exchange"] = str(exchange["name"])  # the bot's venue picks the formula
    return LiqSettings(
        MapConfig.from_dict(engine),
        GuardConfig.from_dict(guards),
        frozenset(guards) if isinstance(guards, Mapping) else frozenset(),
    )


def liq_informative_pairs(
    pairs: Sequence[str], timeframe: str, *, funding_timeframe: str = "1h"
) -> list[tuple[str, str, str]]:
    """``(pair, timeframe, candle_type)`` for the open interest and funding of ``pairs``."""
    out: list[tuple[str, str, str]] = []
    for p in pairs:
        out.append((p, timeframe, "open_interest"))
        out.append((p, funding_timeframe, "funding_rate"))
    return out


def merge_point_in_time(
    dataframe: pd.DataFrame,
    other: pd.DataFrame | None,
    columns: Sequence[str],
    *,
    timeframe: str,
    other_timeframe: str,
) -> pd.DataFrame:
    """``dataframe`` with ``columns`` of ``other`` merged point in time (module docstring).

    A row of ``other`` dated ``D`` reaches the candle opened at ``T`` only when ``D +
    other_timeframe <= T + timeframe``; candles before the first such row get NaN. Returns a new
    frame on ``dataframe``'s index; ``dataframe`` is not changed.
    """
    out = dataframe.copy()
    if other is None or len(other) == 0 or not set(columns) <= set(other.columns):
        for c in columns:
            out[c] = math.nan
        return out
    tf = pd.Timedelta(seconds=timeframe_seconds(timeframe))
    otf = pd.Timedelta(seconds=timeframe_seconds(other_timeframe))
    left = pd.DataFrame({"_known": pd.DatetimeIndex(dataframe["date"]) + tf})
    left["_pos"] = range(len(left))
    right = other[["date", *columns]].dropna(subset=list(columns), how="all")
    right = pd.DataFrame(
        {"_known": pd.DatetimeIndex(right["date"]) + otf, **{c: right[c] for c in columns}}
    )
    right["_known"] = right["_known"].astype(left["_known"].dtype)
    right = right.sort_values("_known")
    merged = pd.merge_asof(left.sort_values("_known"), right, on="_known", direction="backward")
    merged = merged.sort_values("_pos")
    for c in columns:
        out[c] = merged[c].to_numpy(dtype="float64")
    return out


def _warn_once(key: tuple[Any, ...], msg: str, *args: Any) -> None:
    if key not in _WARNED:
        _WARNED.add(key)
        logger.warning(msg, *args)


_WARNED: set[tuple[Any, ...]] = set()


def add_liq_columns(
    dataframe: pd.DataFrame,
    metadata: Mapping[str, Any],
    dp: Any,
    config: Mapping[str, Any] | MapConfig | None = None,
    *,
    timeframe: str | None = None,
    oi_timeframe: str | None = None,
    funding_timeframe: str = "1h",
    proxy: bool | None = None,
) -> pd.DataFrame:
    """Return ``dataframe`` with open interest, funding and the ``LIQ_COLUMNS`` added.

    Open interest and funding come from Freqtrade's ``open_interest`` / ``funding_rate`` candle
    types via ``dp.get_pair_dataframe`` (files in backtests, the exchange cache that
    ``informative_pairs`` fills in dry/live runs), merged point in time. ``config`` is the
    strategy's ``self.config`` (its ``liqsignal.engine`` section is used) or a ``MapConfig``.
    ``proxy=None`` picks volume-proxy mode when no open interest is available for the pair
    (logged once). Bad engine settings raise ``ConfigError``; bad candles raise ``InputError``.
    """
    pair = str(metadata["pair"])
    if timeframe is None:
        timeframe = _config_timeframe(config, dataframe)
    oi_tf = oi_timeframe or timeframe
    settings = liq_settings(config)
    engine = settings.engine
    if engine.symbol != pair and ":" in pair:
        engine = engine.replace(symbol=pair)
    df = dataframe
    have_oi = [c for c in _OI_COLS if c in df.columns and df[c].notna().any()]
    if not have_oi and proxy is not True:
        oi = _pair_frame(dp, pair, oi_tf, "open_interest")
        cols = [c for c in _OI_COLS if oi is not None and c in oi.columns]
        if cols:
            df = merge_point_in_time(df, oi, cols, timeframe=timeframe, other_timeframe=oi_tf)
            have_oi = [c for c in cols if df[c].notna().any()]
    if "funding_rate" not in df.columns:
        fr = _pair_frame(dp, pair, funding_timeframe, "funding_rate")
        df = merge_point_in_time(
            df, fr, ["funding_rate"], timeframe=timeframe, other_timeframe=funding_timeframe
        )
    use_proxy = proxy if proxy is not None else not have_oi
    if use_proxy and proxy is None:
        _warn_once(
            ("proxy", pair, timeframe),
            "liqsignal: no open interest for %s %s: liq columns in volume-proxy mode "
            "(lower fidelity; liq_proxy_mode = 1)",
            pair,
            timeframe,
        )
    feats = compute_features(df, engine, proxy=bool(use_proxy))
    assert isinstance(feats, pd.DataFrame)
    # one float block for the new columns: row reads in the guards stay cheap
    liq = pd.DataFrame(
        feats[list(LIQ_COLUMNS)].to_numpy(dtype="float64"), index=df.index, columns=LIQ_COLUMNS
    )
    keep = df.drop(columns=[c for c in LIQ_COLUMNS if c in df.columns])
    return pd.concat([keep, liq], axis=1)


def _config_timeframe(config: Any, dataframe: pd.DataFrame) -> str:
    if isinstance(config, Mapping) and isinstance(config.get("timeframe"), str):
        return str(config["timeframe"])
    d = pd.DatetimeIndex(dataframe["date"])
    if len(d) < 2:
        raise ConfigError("add_liq_columns: pass timeframe= (the config has none)")
    step = int((d[1:] - d[:-1]).min().total_seconds())
    for unit, sec in sorted(_TF_UNITS.items(), key=lambda kv: -kv[1]):
        if step % sec == 0:
            return f"{step // sec}{unit}"
    return f"{step}s"


def _pair_frame(dp: Any, pair: str, timeframe: str, candle_type: str) -> pd.DataFrame | None:
    if dp is None:
        return None
    try:
        frame = dp.get_pair_dataframe(pair, timeframe, candle_type=candle_type)
    except Exception as e:  # Freqtrade raises various errors for a missing file
        _warn_once(("frame", pair, timeframe, candle_type), "liqsignal: no %s %s %s data: %s",
                   pair, timeframe, candle_type, e)  # fmt: skip
        return None
    if frame is None or len(frame) == 0:
        return None
    return frame


class LiqGuardMixin:
    """Guards for an ``IStrategy``: put it before ``IStrategy`` in the bases.

    Callbacks, one line each::

        def confirm_trade_entry(self, pair, order_type, amount, rate, time_in_force,
                                current_time, entry_tag, side, **kwargs) -> bool:
            return self.liq_confirm_trade_entry(pair, rate, side, current_time)

        def leverage(self, pair, current_time, current_rate, proposed_leverage, max_leverage,
                     entry_tag, side, **kwargs) -> float:
            return self.liq_leverage(pair, current_time, current_rate, 10, max_leverage, side)

        def custom_stoploss(self, pair, trade, current_time, current_rate, current_profit,
                            after_fill, **kwargs) -> float | None:
            return self.liq_custom_stoploss(pair, trade, current_time, current_rate)

    They read the last analysed candle (``dp.get_analyzed_dataframe``; no network), never
    raise into the bot, and log each decision at INFO once per pair, guard and candle.
    Thresholds come from the ``liqsignal.guards`` config keys when set there, else from the
    hyperoptable parameters below (their defaults, a hyperopt epoch or the parameter file).
    """

    liq_guards_enabled: ClassVar[bool] = True

    liq_entry_distance_pct = DecimalParameter(
        0.2, 3.0, default=1.0, decimals=2, space="buy", optimize=True, load=True
    )
    liq_leverage_buffer_pct = DecimalParameter(
        0.0, 5.0, default=1.0, decimals=1, space="buy", optimize=True, load=True
    )
    liq_stop_min_score = DecimalParameter(
        0.0, 2.0, default=0.0, decimals=2, space="sell", optimize=True, load=True
    )
    liq_stop_buffer_pct = DecimalParameter(
        0.0, 1.0, default=0.2, decimals=2, space="sell", optimize=True, load=True
    )

    _LIQ_PARAMS: ClassVar[dict[str, str]] = {
        "entry_distance_pct": "liq_entry_distance_pct",
        "leverage_buffer_pct": "liq_leverage_buffer_pct",
        "stop_min_score": "liq_stop_min_score",
        "stop_buffer_pct": "liq_stop_buffer_pct",
    }

    # -- state (per instance, created lazily: Freqtrade builds strategies without our __init__)

    def _liq_state(self) -> dict[str, Any]:
        st = self.__dict__.get("_liq_state_d")
        if st is None:
            st = {"settings": None, "logged": {}, "bad": set(), "configs": {}, "rows": {}}
            self.__dict__["_liq_state_d"] = st
        return st

    def liq_guard_config(self) -> GuardConfig:
        """Effective guard settings: config keys, else the hyperoptable parameters."""
        st = self._liq_state()
        if st["settings"] is None:
            st["settings"] = liq_settings(getattr(self, "config", None))
        settings: LiqSettings = st["settings"]
        changes: dict[str, Any] = {}
        for field_name, attr in self._LIQ_PARAMS.items():
            if field_name in settings.guard_keys:
                continue
            param = getattr(self, attr, None)
            value = getattr(param, "value", None)
            if isinstance(value, int | float):
                changes[field_name] = float(value)
        key = (tuple(sorted(changes.items())), bool(self.liq_guards_enabled))
        cached = st["configs"].get(key)
        if cached is not None:
            return cached
        cfg = settings.guards.replace(**changes) if changes else settings.guards
        if not self.liq_guards_enabled:
            cfg = cfg.replace(enabled=False)
        st["configs"][key] = cfg  # one per parameter combination (hyperopt epochs)
        return cfg

    def _liq_engine(self) -> MapConfig:
        if self._liq_state()["settings"] is None:
            self.liq_guard_config()
        engine: MapConfig = self._liq_state()["settings"].engine
        return engine

    def _liq_row(
        self,
        pair: str,
        now: datetime | None,
        cfg: GuardConfig,
        columns: tuple[str, ...] = GUARD_COLUMNS,
    ) -> tuple[Any, datetime | None, str]:
        tf = str(getattr(self, "timeframe", "1h"))
        row: Any = None
        date: datetime | None = None
        try:
            df, _ = self.dp.get_analyzed_dataframe(pair, tf)  # type: ignore[attr-defined]
            if df is not None and len(df) > 0:
                row, date = self._liq_last_row(pair, df, columns)
        except Exception as e:  # never into the bot
            logger.debug("liqsignal: no analysed dataframe for %s: %s", pair, e)
        state = data_state(row, date, now, timeframe_seconds(tf), cfg, columns)
        bad: set[tuple[str, str]] = self._liq_state()["bad"]
        if state != "ok":
            if (pair, state) not in bad:
                bad.add((pair, state))
                logger.warning(
                    "liqsignal guards: %s liq data for %s (last candle %s): fail-%s",
                    state,
                    pair,
                    date,
                    cfg.on_stale,
                )
        elif bad and any(p == pair for p, _ in bad):
            for key in [k for k in bad if k[0] == pair]:
                bad.discard(key)
            logger.info("liqsignal guards: liq data for %s is current again", pair)
        return row, date, state

    def _liq_last_row(
        self, pair: str, df: pd.DataFrame, columns: tuple[str, ...]
    ) -> tuple[dict[str, float], datetime]:
        """``columns`` of the last analysed row (a cheap read per column, cached per candle)."""
        cols = df.columns
        last = df.iat[-1, cols.get_loc("date")]  # .iat by position: no Series per read
        rows: dict[str, tuple[Any, int, dict[str, float], datetime]] = self._liq_state()["rows"]
        hit = rows.get(pair)
        if hit is None or hit[0] != last or hit[1] != len(df):
            hit = (last, len(df), {}, pd.Timestamp(last).to_pydatetime())
            rows[pair] = hit
        row = hit[2]
        for c in columns:
            if c not in row and c in cols:
                row[c] = float(df.iat[-1, cols.get_loc(c)])
        return row, hit[3]

    def _liq_log(
        self, pair: str, guard: str, side: str, date: datetime | None, reason: str, figures: Any,
        level: int = logging.INFO,
    ) -> None:  # fmt: skip
        if not logger.isEnabledFor(level):
            return
        logged: dict[tuple[str, str, str], Any] = self._liq_state()["logged"]
        key = (pair, guard, side)
        mark = (date, reason)
        if logged.get(key) == mark:
            return
        logged[key] = mark
        figs = " ".join(f"{k}={v:.6g}" for k, v in dict(figures).items() if isinstance(v, float))
        logger.log(
            level,
            "liqsignal guard %s %s %s candle=%s: %s %s",
            guard,
            pair,
            side,
            date.isoformat() if date else None,
            reason,
            figs,
        )

    # -- the three callbacks

    def liq_confirm_trade_entry(
        self, pair: str, rate: float, side: str, current_time: datetime | None = None, **kwargs: Any
    ) -> bool:
        """True to let the entry through; False when a dense pocket on its side is near."""
        try:
            cfg = self.liq_guard_config()
            if not cfg.enabled:
                return True
            row, date, state = self._liq_row(pair, current_time, cfg)
            d = entry_decision(row, _side(side), float(rate), cfg, state=state)
            verdict = ("allow: " if d.allowed else "refuse: ") + d.reason
            self._liq_log(pair, "entry", _side(side), date, verdict, d.figures)
            return d.allowed
        except Exception as e:  # never into the bot
            return self._liq_error("entry", pair, e, default=self._liq_fail_open())

    def liq_leverage(
        self,
        pair: str,
        current_time: datetime | None,
        current_rate: float,
        proposed_leverage: float,
        max_leverage: float,
        side: str,
        **kwargs: Any,
    ) -> float:
        """``proposed_leverage`` capped so the position liquidates beyond the cascade."""
        fallback = max(1.0, min(float(proposed_leverage), float(max_leverage)))
        try:
            cfg = self.liq_guard_config()
            if not cfg.enabled:
                return fallback
            row, date, state = self._liq_row(pair, current_time, cfg)
            engine = self._liq_engine()
            exchange = str((getattr(self, "config", None) or {}).get("exchange", {}).get(
                "name", engine.exchange))  # fmt: skip
            d = leverage_decision(
                row, _side(side), float(current_rate), proposed_leverage, max_leverage, cfg,
                state=state, exchange=exchange, symbol=pair,
                position_notional=engine.position_notional, tiers_file=engine.tiers_file,
            )  # fmt: skip
            self._liq_log(pair, "leverage", _side(side), date, d.reason, d.figures)
            return float(d.leverage)
        except Exception as e:  # never into the bot
            default = fallback if self._liq_fail_open() else 1.0
            return self._liq_error("leverage", pair, e, default=default)

    def liq_custom_stoploss(
        self,
        pair: str,
        trade: Any,
        current_time: datetime | None,
        current_rate: float,
        **kwargs: Any,
    ) -> float | None:
        """A tighter stop (negative ratio) when a pocket on the trade's side is armed, else None.

        None keeps the strategy's own stoploss. With ``stop_mode = "exit"`` the stop is put
        ``stop_min_distance_pct`` from the rate, so the trade leaves on the next adverse tick.
        """
        try:
            cfg = self.liq_guard_config()
            if not cfg.enabled:
                return None
            side = "short" if getattr(trade, "is_short", False) else "long"
            # most candles have nothing armed: read three values first, the rest only if needed
            quick = (f"liq_{side}_armed", "liq_long_total_usd", "liq_short_total_usd")
            row, date, state = self._liq_row(pair, current_time, cfg, quick)
            if state == "ok" and row.get(quick[0], 0.0) > 0:
                row, date, state = self._liq_row(pair, current_time, cfg)
            d = stop_decision(row, side, float(current_rate), cfg, state=state)
            level = logging.INFO if d.action != "keep" else logging.DEBUG
            self._liq_log(pair, "stop", side, date, f"{d.action}: {d.reason}", d.figures, level)
            if d.action == "keep":
                return None
            lev = getattr(trade, "leverage", None) or 1.0
            return d.stoploss_ratio(float(current_rate), side, float(lev))
        except Exception as e:  # never into the bot
            return self._liq_error("stop", pair, e, default=None)

    def _liq_fail_open(self) -> bool:
        try:
            return self.liq_guard_config().fail_open
        except LiqsignalError:  # the config itself is bad: fail open, the warning says why
            return True

    def _liq_error(self, guard: str, pair: str, e: Exception, *, default: Any) -> Any:
        _warn_once(("error", guard, pair, type(e).__name__),
                   "liqsignal guard %s for %s failed (%s: %s); answering %r",
                   guard, pair, type(e).__name__, e, default)  # fmt: skip
        return default


def _side(side: str) -> str:
    return "short" if str(side).lower() == "short" else "long"
