"""``LiqGuardMixin``: the liquidation-map risk guards in a Freqtrade strategy's callbacks.

``liq_confirm_trade_entry``, ``liq_leverage``, ``liq_custom_stoploss``: one line each in the
strategy's callbacks, plus hyperoptable guard thresholds. Every callback runs inside
``liq_safe``: it never raises into the bot; liqsignal's own errors are logged in one line,
anything unexpected with its traceback, once per kind (as Freqtrade's
``strategy_safe_wrapper`` does), and the guard answers its fail-open/fail-closed default.
"""

from __future__ import annotations

import contextlib
import functools
import logging
import math
from bisect import bisect_right
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, ClassVar, TypeVar

import numpy as np
import pandas as pd

from liqsignal._optional import require
from liqsignal.columns import (
    _FAST_MODES,
    GUARD_POS,
    ROW_COLUMNS,
    LiqContext,
    LiqSettings,
    _Rows,
    _runmode,
    liq_context,
    liq_settings,
    unexpected,
)
from liqsignal.config import MapConfig
from liqsignal.data.timeline import timeframe_seconds
from liqsignal.guards import (
    FORECAST_GUARD_COLUMNS,
    GUARD_COLUMNS,
    GuardConfig,
    data_state,
    entry_decision,
    leverage_decision,
    stop_decision,
)

require("freqtrade", extra="freqtrade", feature="liqsignal.freqtrade (the guard mixin)")
from freqtrade.strategy import DecimalParameter  # noqa: E402  (the hyperoptable parameters)

__all__ = ["LiqGuardCallbacks", "LiqGuardMixin", "liq_safe"]

logger = logging.getLogger("liqsignal.freqtrade")

F = TypeVar("F", bound=Callable[..., Any])


def liq_safe(guard: str, default: Callable[..., Any]) -> Callable[[F], F]:
    """Wrap a guard callback so that it never raises into the bot: on any exception it logs
    (``LiqGuardMixin._liq_error``: one line for liqsignal's errors, the traceback for others,
    once per kind) and returns ``default(self, *args, **kwargs)`` (itself guarded)."""

    def wrap(fn: F) -> F:
        @functools.wraps(fn)
        def safe(self: Any, *args: Any, **kwargs: Any) -> Any:
            try:
                return fn(self, *args, **kwargs)
            except Exception as e:  # never into the bot; logged with its traceback below
                try:
                    fallback = default(self, *args, **kwargs)
                except Exception:  # a default that fails: the most cautious answer
                    fallback = None if guard == "stop" else (1.0 if guard == "leverage" else True)
                pair = args[0] if args else kwargs.get("pair", "?")
                return self._liq_error(guard, str(pair), e, default=fallback)

        return safe  # type: ignore[return-value]

    return wrap


def _leverage_default(
    self: Any, pair: str, current_time: Any, current_rate: Any, proposed_leverage: Any,
    max_leverage: Any, *args: Any, **kwargs: Any,
) -> float:  # fmt: skip
    """What ``liq_leverage`` answers when it fails: the proposal capped (fail open) or 1x."""
    fallback = _leverage_fallback(proposed_leverage, max_leverage)
    return fallback if self._liq_fail_open() else 1.0


@dataclass
class _GuardState:
    """Per strategy instance: parsed settings and the caches of the callbacks."""

    settings: LiqSettings | None = None
    #: (pair, guard, side) -> (candle, reason) last logged
    logged: dict[tuple[str, str, str], Any] = field(default_factory=dict)
    #: (pair, data state) warned about
    bad: set[tuple[str, str]] = field(default_factory=set)
    #: guard settings per parameter combination (hyperopt epochs), and by raw parameter values
    configs: dict[Any, GuardConfig] = field(default_factory=dict)
    quick: dict[Any, GuardConfig] = field(default_factory=dict)
    #: pair -> (last date, rows, values, when) of the DataProvider path
    rows: dict[str, tuple[Any, int, dict[str, float], datetime | None]] = field(
        default_factory=dict
    )
    #: pair -> (index, rows, values, when) of the backtest fast path
    fast: dict[str, Any] = field(default_factory=dict)
    tally: Any = None


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

    They read the last analysed candle (``dp.get_analyzed_dataframe``; no network; in
    backtest/hyperopt the same row from arrays ``add_liq_columns`` kept, see
    ``_liq_fast_row``), never raise into the bot, and log each decision at INFO once per
    pair, guard and candle.
    Thresholds come from the ``liqsignal.guards`` config keys when set there, else from the
    hyperoptable parameters below (their defaults, a hyperopt epoch or the parameter file).
    """

    liq_guards_enabled: ClassVar[bool] = True
    #: Backtest/hyperopt: read the guard columns from arrays kept by ``add_liq_columns``
    #: instead of slicing the analysed dataframe per callback (same rows; see _liq_fast_row).
    liq_fast_rows: ClassVar[bool] = True

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

    def _liq_state(self) -> _GuardState:
        st = self.__dict__.get("_liq_guard_state")
        if st is None:
            st = self.__dict__["_liq_guard_state"] = _GuardState()
        return st

    def liq_attach(self, provider: Any = None) -> LiqContext:
        """From ``bot_start``: this bot's liqsignal context (on ``self.dp``), with ``provider``
        (a ``MapProvider`` for dry/live runs) registered on it when given."""
        ctx = liq_context(getattr(self, "dp", None))
        if provider is not None:
            ctx.provider = provider
        self.__dict__["liq_ctx"] = ctx
        return ctx

    def liq_guard_config(self) -> GuardConfig:
        """Effective guard settings: config keys, else the hyperoptable parameters."""
        st = self._liq_state()
        if st.settings is None:
            st.settings = liq_settings(getattr(self, "config", None))
        settings: LiqSettings = st.settings
        # fast path (every callback): the parameters' current values, looked up as they are
        params = self._LIQ_PARAMS.values()
        raw = (
            bool(self.liq_guards_enabled),
            *[getattr(getattr(self, attr, None), "value", None) for attr in params],
        )
        quick_cfgs = st.quick
        with contextlib.suppress(TypeError):  # an unhashable parameter value: no fast path
            hit = quick_cfgs.get(raw)
            if hit is not None:
                return hit
        changes: dict[str, Any] = {}
        for field_name, attr in self._LIQ_PARAMS.items():
            if field_name in settings.guard_keys:
                continue
            param = getattr(self, attr, None)
            value = getattr(param, "value", None)
            if isinstance(value, int | float):
                changes[field_name] = float(value)
        key = (tuple(sorted(changes.items())), bool(self.liq_guards_enabled))
        cached = st.configs.get(key)
        if cached is None:
            cached = settings.guards.replace(**changes) if changes else settings.guards
            if not self.liq_guards_enabled:
                cached = cached.replace(enabled=False)
            st.configs[key] = cached  # one per parameter combination (hyperopt epochs)
        with contextlib.suppress(TypeError):
            quick_cfgs[raw] = cached
        return cached

    def _liq_engine(self) -> MapConfig:
        settings = self._liq_state().settings
        if settings is None:
            self.liq_guard_config()
            settings = self._liq_state().settings
        assert settings is not None
        return settings.engine

    def _liq_row(
        self,
        pair: str,
        now: datetime | None,
        cfg: GuardConfig,
        columns: tuple[str, ...] = GUARD_COLUMNS,
    ) -> tuple[Any, datetime | None, str]:
        tf = str(getattr(self, "timeframe", "1h"))
        tf_s = timeframe_seconds(tf)
        row: Any = None
        date: datetime | None = None
        fast = self._liq_fast_row(pair, now, tf, tf_s, columns)
        if fast is not None:
            row, date = fast
        else:
            row, date = self._liq_dp_row(pair, tf, columns)
        state = data_state(row, date, now, tf_s, cfg, columns)
        bad = self._liq_state().bad
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

    def _liq_dp_row(
        self, pair: str, tf: str, columns: tuple[str, ...]
    ) -> tuple[dict[str, float] | None, datetime | None]:
        """The last analysed candle as Freqtrade's DataProvider gives it (sliced in backtests)."""
        try:
            df, _ = self.dp.get_analyzed_dataframe(pair, tf)  # type: ignore[attr-defined]
            if df is not None and len(df) > 0:
                return self._liq_last_row(pair, df, columns)
        except Exception as e:  # never into the bot
            logger.debug("liqsignal: no analysed dataframe for %s: %s", pair, e, exc_info=True)
        return None, None

    def _liq_fast_row(
        self, pair: str, now: datetime | None, tf: str, tf_s: int, columns: tuple[str, ...]
    ) -> tuple[dict[str, float] | None, datetime | None] | None:
        """Backtest/hyperopt: the last analysed candle from the arrays ``add_liq_columns`` kept.

        Freqtrade's backtest slice of the analysed dataframe ends at the last candle that has
        closed at ``current_time`` (``date + timeframe <= current_time``, also on detail
        candles); this finds the same candle by binary search instead of slicing the frame
        (about 30 us per call). The first call per pair and computation also takes the
        DataProvider path and compares the row and the slice's guard columns; on any
        difference (a strategy that changed the columns or rows afterwards) the pair keeps the
        DataProvider path. None: use the DataProvider path.
        """
        if now is None or now.tzinfo is None or not self.liq_fast_rows:
            return None
        dp = getattr(self, "dp", None)
        if dp is None:
            return None
        try:
            rows = liq_context(dp).rows.get(pair)
        except TypeError:
            return None
        if rows is None or rows.bad:
            return None
        if rows.secs is None:
            rows.secs = (rows.dates.astype(np.float64) / 1e9).tolist()
        idx = bisect_right(rows.secs, now.timestamp() - tf_s) - 1
        cache = self._liq_state().fast
        hit = cache.get(pair)
        if hit is None or hit[0] != idx or hit[1] is not rows:
            date = (
                pd.Timestamp(int(rows.dates[idx]), tz="UTC").to_pydatetime() if idx >= 0 else None
            )
            fresh: dict[str, float] = {}
            hit = (idx, rows, fresh, date)
            cache[pair] = hit
        row: dict[str, float] | None = None
        if idx >= 0:
            row = hit[2]
            assert row is not None
            for c in columns:
                if c not in row:
                    row[c] = float(rows.values[idx, GUARD_POS[c]])
        if not rows.checked:
            return self._liq_check_rows(pair, tf, columns, rows, idx, row, hit[3])
        return row, hit[3]

    def _liq_check_rows(
        self,
        pair: str,
        tf: str,
        columns: tuple[str, ...],
        rows: _Rows,
        idx: int,
        row: dict[str, float] | None,
        date: datetime | None,
    ) -> tuple[dict[str, float] | None, datetime | None]:
        ref_row, ref_date = self._liq_dp_row(pair, tf, columns)
        try:
            df, _ = self.dp.get_analyzed_dataframe(pair, tf)  # type: ignore[attr-defined]
        except Exception:
            return ref_row, ref_date
        if df is None or len(df) == 0:
            return ref_row, ref_date  # nothing to compare with yet
        ok = ref_date == date and _same(ref_row, row)
        if ok:
            d = pd.DatetimeIndex(df["date"]).as_unit("ns").asi8
            pos = np.searchsorted(rows.dates, d)
            ok = bool(
                np.all(pos < len(rows.dates))
                and np.array_equal(rows.dates[np.minimum(pos, len(rows.dates) - 1)], d)
                and all(c in df.columns for c in GUARD_COLUMNS)
            )
            if ok:
                cols = [c for c in ROW_COLUMNS if c in df.columns]
                have = df[cols].to_numpy(dtype="float64")
                want = rows.values[pos][:, [GUARD_POS[c] for c in cols]]
                ok = bool(np.array_equal(have, want, equal_nan=True))
        if ok:
            rows.checked = True
        else:
            rows.bad = True
            logger.info("liqsignal guards: %s: analysed dataframe differs from the liq columns "
                        "computed; reading it through the DataProvider", pair)  # fmt: skip
        return ref_row, ref_date

    def _liq_last_row(
        self, pair: str, df: pd.DataFrame, columns: tuple[str, ...]
    ) -> tuple[dict[str, float], datetime | None]:
        """``columns`` of the last analysed row (a cheap read per column, cached per candle).

        The candle's date is None (missing data, ``on_stale``) unless the frame holds a datetime
        there: a string or a number in ``date`` is a malformed frame, not a date to parse."""
        cols = df.columns
        last = df.iat[-1, cols.get_loc("date")]  # .iat by position: no Series per read
        rows = self._liq_state().rows
        hit = rows.get(pair)
        if hit is None or hit[0] != last or hit[1] != len(df):
            when = (
                pd.Timestamp(last).to_pydatetime()
                if isinstance(last, datetime | np.datetime64)
                else None
            )
            hit = (last, len(df), {}, when)
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
        backtest = _runmode(getattr(self, "dp", None)) in _FAST_MODES
        if (
            level == logging.INFO
            and backtest
            and not self.liq_guard_config().log_backtest_decisions
        ):
            level = logging.DEBUG  # backtests: hundreds of lines at ~1 ms each
        if not logger.isEnabledFor(level):
            return
        logged = self._liq_state().logged
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

    def _liq_tally(
        self, guard: str, pair: str, side: str, date: datetime | None, acted: bool, **kw: Any
    ) -> None:
        """Count the decision for the guard report printed when a backtest ends
        (``liqsignal.guard_report``; backtesting only)."""
        if _runmode(getattr(self, "dp", None)) != "backtest":
            return
        st = self._liq_state()
        t = st.tally
        if t is None:
            from liqsignal.guard_report import tally

            t = st.tally = tally(type(self).__name__, getattr(self, "config", None) or {})
        t.record(guard, pair, side, date, acted, **kw)

    def liq_start_alerts(self, provider: Any = None) -> Any:
        """From ``bot_start``: start the alert service (``liqsignal.alerts``; docs/alerts.md)
        in a background thread in dry/live runs, sharing ``provider``. With the bot's own
        Telegram on, alerts go out through ``self.dp.send_msg`` (needs
        ``telegram.allow_custom_messages``) instead of a second bot. Returns the service (call
        ``.stop()`` in ``bot_cleanup``) or None (other run modes, alerts disabled)."""
        if _runmode(getattr(self, "dp", None)) not in ("dry_run", "live"):
            return None
        from liqsignal.alerts.botmsg import bot_sender_for
        from liqsignal.alerts.service import start_in_background

        config = getattr(self, "config", None) or {}
        sender = bot_sender_for(config, getattr(self, "dp", None))
        return start_in_background(config, provider=provider, sender=sender)

    # -- the three callbacks

    @liq_safe("entry", lambda self, *a, **k: self._liq_fail_open())
    def liq_confirm_trade_entry(
        self, pair: str, rate: float, side: str, current_time: datetime | None = None, **kwargs: Any
    ) -> bool:
        """True to let the entry through; False when a dense pocket on its side is near."""
        cfg = self.liq_guard_config()
        if not cfg.enabled:
            return True
        row, date, state = self._liq_row(pair, current_time, cfg, _columns(cfg))
        d = entry_decision(row, _side(side), float(rate), cfg, state=state)
        verdict = ("allow: " if d.allowed else "refuse: ") + d.reason
        self._liq_log(pair, "entry", _side(side), date, verdict, d.figures)
        self._liq_tally("entry", pair, _side(side), date, not d.allowed, rate=float(rate))
        return d.allowed

    @liq_safe("leverage", _leverage_default)
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
        fallback = _leverage_fallback(proposed_leverage, max_leverage)
        cfg = self.liq_guard_config()
        if not cfg.enabled:
            return fallback
        row, date, state = self._liq_row(pair, current_time, cfg, _columns(cfg))
        engine = self._liq_engine()
        ex_section = (getattr(self, "config", None) or {}).get("exchange")
        name = ex_section.get("name") if isinstance(ex_section, Mapping) else None
        exchange = str(name or engine.exchange)
        d = leverage_decision(
            row, _side(side), float(current_rate), proposed_leverage, max_leverage, cfg,
            state=state, exchange=exchange, symbol=pair,
            position_notional=engine.position_notional, tiers_file=engine.tiers_file,
        )  # fmt: skip
        self._liq_log(pair, "leverage", _side(side), date, d.reason, d.figures)
        capped = float(d.leverage) < fallback - 1e-9
        self._liq_tally("leverage", pair, _side(side), date, capped, trade_open=current_time)
        return float(d.leverage)

    @liq_safe("stop", lambda self, *a, **k: None)
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
        opened = getattr(trade, "open_date_utc", None)
        self._liq_tally("stop", pair, side, date, d.action != "keep", trade_open=opened)
        if d.action == "keep":
            return None
        lev = getattr(trade, "leverage", None) or 1.0
        ratio = d.stoploss_ratio(current_rate, side, lev)
        return ratio if ratio is not None and -1000.0 <= ratio < 0.0 else None

    def _liq_fail_open(self) -> bool:
        try:
            return bool(self.liq_guard_config().fail_open)
        except Exception:  # the config itself is bad: fail open, the warning says why
            return True

    def _liq_error(self, guard: str, pair: str, e: Exception, *, default: Any) -> Any:
        """Log a failed guard once per (guard, pair, kind) and answer ``default``: liqsignal's
        own errors (bad data, bad settings) in one line, anything else with its traceback."""
        with contextlib.suppress(Exception):  # logging must not raise into the bot either
            ctx = liq_context(getattr(self, "dp", None))
            key = ("error", guard, str(pair), type(e).__name__)
            if key not in ctx.warned:
                ctx.warned.add(key)
                logger.warning(
                    "liqsignal guard %s for %s failed (%s: %s); answering %r",
                    guard, pair, type(e).__name__, e, default,
                    exc_info=e if unexpected(e) else None,
                )  # fmt: skip
        return default


def _same(a: Mapping[str, float] | None, b: Mapping[str, float] | None) -> bool:
    if a is None or b is None:
        return a is None and b is None
    return a.keys() == b.keys() and all(
        x == y or (math.isnan(x) and math.isnan(y)) for x, y in ((a[k], b[k]) for k in a)
    )


class LiqGuardCallbacks(LiqGuardMixin):
    """``LiqGuardMixin`` with Freqtrade's three callbacks already wired to the guards, for a
    strategy that has no callbacks of its own: ``class S(LiqGuardCallbacks, IStrategy)``.
    ``target_leverage`` is the leverage proposed before the guard caps it. A strategy with its
    own callbacks uses ``LiqGuardMixin`` and calls the ``liq_*`` methods from them."""

    target_leverage: ClassVar[float] = 3.0

    def confirm_trade_entry(
        self, pair: str, order_type: str, amount: float, rate: float, time_in_force: str,
        current_time: datetime, entry_tag: str | None, side: str, **kwargs: Any,
    ) -> bool:  # fmt: skip
        return self.liq_confirm_trade_entry(pair, rate, side, current_time)

    def leverage(
        self, pair: str, current_time: datetime, current_rate: float, proposed_leverage: float,
        max_leverage: float, entry_tag: str | None, side: str, **kwargs: Any,
    ) -> float:  # fmt: skip
        lev = min(self.target_leverage, max_leverage)
        return self.liq_leverage(pair, current_time, current_rate, lev, max_leverage, side)

    def custom_stoploss(
        self, pair: str, trade: Any, current_time: datetime, current_rate: float,
        current_profit: float, after_fill: bool, **kwargs: Any,
    ) -> float | None:  # fmt: skip
        return self.liq_custom_stoploss(pair, trade, current_time, current_rate)


def _leverage_fallback(proposed: Any, max_leverage: Any) -> float:
    """min(proposed, max) within [1, 1000]; 1.0 when either is not a usable number."""
    try:
        v = min(float(proposed), float(max_leverage))
    except Exception:
        return 1.0
    return min(max(v, 1.0), 1000.0) if math.isfinite(v) else 1.0


def _columns(cfg: GuardConfig) -> tuple[str, ...]:
    """The columns a guard reads: the probabilities too when a probability rule is on."""
    return (*GUARD_COLUMNS, *FORECAST_GUARD_COLUMNS) if cfg.uses_forecast else GUARD_COLUMNS


def _side(side: str) -> str:
    return "short" if str(side).lower() == "short" else "long"
