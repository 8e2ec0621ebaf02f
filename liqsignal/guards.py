"""Risk guards from the liquidation map: pure decisions for entry, leverage and stop, no I/O.

Each function takes the last analysed candle's ``liq_*`` values (a mapping, e.g. a dataframe row),
the live rate and a ``GuardConfig``, and returns a small decision record that says what to do,
why (``reason``) and with which figures. Nothing here logs, reads files besides the bundled
leverage tiers, or raises into the caller for bad market data: missing or stale data gives the
configured fail-open or fail-closed answer (``GuardConfig.on_stale``).

- ``entry_decision``: refuse a long when a dense long pocket (nearest long cluster) sits within
  ``entry_distance_pct`` below the rate; refuse a short when a dense short pocket sits within
  that distance above it; with ``entry_max_prob`` set, also refuse when the side's cascade
  probability (``liq_*_cascade_prob``, ``liqsignal.forecast``) is above it.
- ``leverage_decision``: the highest leverage whose own liquidation price (the exchange's formula,
  ``liqsignal.tiers.liquidation_price``) lies beyond the far end of the cascade on the position's
  side plus ``leverage_buffer_pct``; never above the proposed or the exchange maximum, never
  below ``min_leverage``; with ``leverage_prob_budget`` set, also at most budget / cascade
  probability (leverage x probability <= budget).
- ``stop_decision``: when a pocket on the position's side is armed (``liq_long_armed`` for a long,
  ``liq_short_armed`` for a short; with the forecast on, armed means the side's cascade
  probability is at least ``forecast.armed_prob``), tighten the stop to just beyond the
  pocket's near edge, or exit (``stop_mode``).
- ``data_state``: "ok", "stale" or "missing" for the last analysed candle.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

from liqsignal.config import GuardConfig
from liqsignal.tiers import liquidation_price, load_tiers, max_leverage_of, tier_for

__all__ = [
    "FORECAST_GUARD_COLUMNS",
    "GUARD_COLUMNS",
    "EntryDecision",
    "GuardConfig",
    "LeverageDecision",
    "StopDecision",
    "data_state",
    "entry_decision",
    "leverage_decision",
    "max_safe_leverage",
    "stop_decision",
]

#: Columns the guards read from the analysed dataframe.
GUARD_COLUMNS: tuple[str, ...] = (
    "liq_long_cluster_usd",
    "liq_long_cluster_low",
    "liq_long_cluster_high",
    "liq_short_cluster_usd",
    "liq_short_cluster_low",
    "liq_short_cluster_high",
    "liq_long_cascade_end",
    "liq_short_cascade_end",
    "liq_long_armed",
    "liq_short_armed",
    "liq_long_armed_score",
    "liq_short_armed_score",
    "liq_long_total_usd",
    "liq_short_total_usd",
)

#: Columns the probability rules (``entry_max_prob``, ``leverage_prob_budget``) read.
FORECAST_GUARD_COLUMNS: tuple[str, ...] = ("liq_long_cascade_prob", "liq_short_cascade_prob")

_SIDES = ("long", "short")


@dataclass(frozen=True)
class EntryDecision:
    allowed: bool
    reason: str
    figures: Mapping[str, float] = field(default_factory=dict)


@dataclass(frozen=True)
class LeverageDecision:
    leverage: float
    reason: str
    figures: Mapping[str, float] = field(default_factory=dict)


@dataclass(frozen=True)
class StopDecision:
    #: "keep" (strategy's own stop), "tighten" or "exit".
    action: str
    reason: str
    #: Stop price for tighten/exit, else None.
    stop_rate: float | None = None
    figures: Mapping[str, float] = field(default_factory=dict)

    def stoploss_ratio(self, current_rate: float, side: str, leverage: float = 1.0) -> float | None:
        """The stop as Freqtrade's ``custom_stoploss`` wants it, or None.

        Freqtrade reads the value as risk on the stake and divides it by the trade's leverage
        (``stop = rate * (1 - |value| / leverage)`` for a long), so the price distance is
        multiplied by ``leverage`` here.
        """
        rate = _pos(current_rate)
        stop = _pos(self.stop_rate)
        if math.isnan(rate) or math.isnan(stop):
            return None
        if side == "long":
            dist = (rate - stop) / rate
        else:
            dist = (stop - rate) / rate
        lev = _pos(leverage)
        lev = lev if lev >= 1.0 else 1.0  # NaN: 1
        ratio = -max(dist, 1e-6) * min(lev, 1000.0)
        return ratio if math.isfinite(ratio) else None


#: one candle's guard columns (a dataframe row or a dict), or None when there is no row
Row = Mapping[str, Any] | None


def _f(row: Row, key: str) -> float:
    """``row[key]`` as a float; NaN when absent, not a number or infinite (never raises)."""
    if row is None:
        return math.nan
    try:
        v = float(row[key])
    except Exception:  # KeyError, TypeError, ValueError, a row that is not a mapping ...
        return math.nan
    return v if math.isfinite(v) else math.nan


def _pos(value: Any) -> float:
    """``value`` as a finite float > 0, else NaN (never raises)."""
    try:
        v = float(value)
    except Exception:
        return math.nan
    return v if math.isfinite(v) and v > 0 else math.nan


def _utc(when: Any) -> datetime | None:
    """An aware datetime (naive read as UTC), or None for None / NaT / not a datetime."""
    if not isinstance(when, datetime) or when != when:  # NaT is a datetime unequal to itself
        return None
    return when if when.tzinfo is not None else when.replace(tzinfo=UTC)


def _check_side(side: str) -> str:
    if side not in _SIDES:
        raise ValueError(f"side must be 'long' or 'short', got {side!r}")
    return side


def _switched_off(side: str, config: GuardConfig, guard_enabled: bool) -> bool:
    """Whether the guards, or this one (``guard_enabled``), are off; a bad ``side`` raises
    even then."""
    _check_side(side)
    return not (config.enabled and guard_enabled)


def _rate_and_problem(state: str, rate: Any) -> tuple[float, str | None]:
    """``rate`` as ``_pos`` reads it, and what keeps a decision from the data ("stale",
    "missing", or "no rate" when the rate is not a positive number); None when it can be
    judged."""
    rate = _pos(rate)
    if state != "ok":
        return rate, state
    return rate, "no rate" if math.isnan(rate) else None


def data_state(
    row: Row,
    candle_date: datetime | None,
    now: datetime | None,
    timeframe_seconds: float,
    config: GuardConfig,
    required: tuple[str, ...] = GUARD_COLUMNS,
) -> str:
    """ "ok", "missing" (no row, no liq columns, or map totals NaN) or "stale" (candle too old).

    A candle dated ``candle_date`` (its open) closes ``timeframe_seconds`` later; it is stale
    when ``now`` is more than ``max_age_candles`` candles after that close. ``required``: the
    columns the caller needs (all guard columns by default); the two map totals always count.
    """
    date = _utc(candle_date)
    if row is None or date is None:  # no row, or a candle dated None / NaT / not a date
        return "missing"
    for key in required:
        try:
            row[key]
        except Exception:  # KeyError, IndexError, a row that is not a mapping
            return "missing"
    if math.isnan(_f(row, "liq_long_total_usd")) or math.isnan(_f(row, "liq_short_total_usd")):
        return "missing"
    tf = _pos(timeframe_seconds)
    if now is not None and not math.isnan(tf):
        when = _utc(now)
        if when is None:
            return "stale"  # a "now" that is not a time: the age is unknown
        try:
            age = (when - (date + timedelta(seconds=tf))).total_seconds()
        except (OverflowError, ValueError):
            return "stale"
        if not age <= config.max_age_candles * tf:
            return "stale"
    return "ok"


def entry_decision(
    row: Row, side: str, rate: float, config: GuardConfig, *, state: str = "ok"
) -> EntryDecision:
    """Allow or refuse an entry; ``state`` is ``data_state``'s answer for ``row``."""
    if _switched_off(side, config, config.entry_enabled):
        return EntryDecision(True, "guard off")
    rate, what = _rate_and_problem(state, rate)
    if what is not None:
        if config.fail_open:
            return EntryDecision(True, f"{what} data, fail-open")
        return EntryDecision(False, f"{what} data, fail-closed")
    prob_figs: dict[str, float] = {}
    if config.entry_max_prob is not None:
        prob = _f(row, f"liq_{side}_cascade_prob")
        if math.isnan(prob):
            if not config.fail_open:
                return EntryDecision(False, f"no {side} cascade probability, fail-closed")
        else:
            prob_figs = {"cascade_prob": prob, "max_prob": config.entry_max_prob}
            if prob > config.entry_max_prob:
                return EntryDecision(
                    False,
                    f"{side} cascade probability {prob:.3f} above {config.entry_max_prob:.3f}",
                    {"rate": rate, **prob_figs},
                )
    usd = _f(row, f"liq_{side}_cluster_usd")
    low = _f(row, f"liq_{side}_cluster_low")
    high = _f(row, f"liq_{side}_cluster_high")
    if math.isnan(low) or math.isnan(high) or not usd > 0:
        return EntryDecision(True, f"no {side} pocket", {"rate": rate, **prob_figs})
    if side == "long":
        # pocket below: distance from the rate down to its near (upper) edge
        gone = rate < low  # price already traded through the whole pocket
        dist = (rate - high) / rate * 100.0
    else:
        gone = rate > high
        dist = (low - rate) / rate * 100.0
    figures = {"rate": rate, "pocket_low": low, "pocket_high": high, "pocket_usd": usd,
               "distance_pct": dist, **prob_figs}  # fmt: skip
    if gone:
        return EntryDecision(True, f"{side} pocket already traded through", figures)
    if dist <= config.entry_distance_pct and usd >= config.entry_min_usd:
        where = "below" if side == "long" else "above"
        return EntryDecision(
            False,
            f"dense {side} pocket {max(dist, 0.0):.2f}% {where} price "
            f"(limit {config.entry_distance_pct:.2f}%)",
            figures,
        )
    return EntryDecision(True, f"nearest {side} pocket {dist:.2f}% away", figures)


def max_safe_leverage(
    side: str,
    entry: float,
    limit_price: float,
    *,
    exchange: str = "binance",
    symbol: str = "BTC/USDT:USDT",
    notional: float = 10_000.0,
    upper: float = 125.0,
    tiers_file: str | None = None,
    taker_fee: float = 0.0005,
) -> float:
    """Highest whole leverage in [1, upper] whose liquidation price is beyond ``limit_price``.

    Beyond means below ``limit_price`` for a long, above it for a short. Returns 1.0 when even
    1x does not get there (the caller applies its own minimum). Uses the symbol's maintenance
    margin tier for ``notional`` at each leverage (bundled Binance tiers unless ``tiers_file``).
    """
    _check_side(side)
    tiers = load_tiers(symbol, tiers_file)
    exmax = max_leverage_of(tiers)

    def beyond(lev: float) -> bool:
        if tiers:
            t = tier_for(tiers, notional, lev)
            mmr, cum = t.mmr, t.cum
        else:
            mmr, cum = 0.005, 0.0
        lp = liquidation_price(
            exchange, side, entry, lev, mmr=mmr, notional=notional, cum=cum,
            taker_fee=taker_fee, max_leverage=exmax,
        )  # fmt: skip
        return lp <= limit_price if side == "long" else lp >= limit_price

    hi = int(math.floor(max(upper, 1.0)))
    if beyond(hi):
        return float(hi)
    lo = 1
    if not beyond(lo):
        return 1.0
    # liquidation price moves monotonically towards entry as leverage rises: bisect
    while hi - lo > 1:
        mid = (lo + hi) // 2
        if beyond(mid):
            lo = mid
        else:
            hi = mid
    return float(lo)


def leverage_decision(
    row: Row,
    side: str,
    rate: float,
    proposed: float,
    max_leverage: float,
    config: GuardConfig,
    *,
    state: str = "ok",
    exchange: str = "binance",
    symbol: str = "BTC/USDT:USDT",
    position_notional: float = 10_000.0,
    tiers_file: str | None = None,
) -> LeverageDecision:
    """Cap ``proposed`` so the position's liquidation lies beyond the cascade on its side."""
    _check_side(side)
    try:
        cap = min(float(proposed), float(max_leverage))
    except (TypeError, ValueError):
        cap = math.nan
    if not math.isfinite(cap) or cap < 1.0:
        cap = 1.0
    if not (config.enabled and config.leverage_enabled):
        return LeverageDecision(cap, "guard off")
    cap = min(cap, 1000.0)
    floor = min(config.min_leverage, cap) if cap >= 1.0 else 1.0
    rate, what = _rate_and_problem(state, rate)
    if what is not None:
        if config.fail_open:
            return LeverageDecision(cap, f"{what} data, fail-open")
        return LeverageDecision(floor, f"{what} data, fail-closed")
    if config.leverage_prob_budget is not None:
        prob = _f(row, f"liq_{side}_cascade_prob")
        if math.isnan(prob):
            if not config.fail_open:
                return LeverageDecision(floor, f"no {side} cascade probability, fail-closed")
        elif prob > 0:
            by_prob = max(math.floor(config.leverage_prob_budget / prob), 1.0)
            if by_prob < cap:
                lev_p = max(by_prob, floor)
                inner = leverage_decision(
                    row, side, rate, lev_p, lev_p, config.replace(leverage_prob_budget=None),
                    state=state, exchange=exchange, symbol=symbol,
                    position_notional=position_notional, tiers_file=tiers_file,
                )  # fmt: skip
                figs = {**inner.figures, "cascade_prob": prob, "proposed": cap}
                return LeverageDecision(
                    inner.leverage,
                    f"capped {cap:g}x -> {lev_p:g}x by {side} cascade probability {prob:.3f} "
                    f"(budget {config.leverage_prob_budget:g}); {inner.reason}",
                    figs,
                )
    end = _f(row, f"liq_{side}_cascade_end")
    if math.isnan(end):
        return LeverageDecision(cap, f"no {side} cascade", {"rate": rate, "proposed": cap})
    if (side == "long" and end >= rate) or (side == "short" and end <= rate):
        return LeverageDecision(
            cap, f"{side} cascade already traded through", {"rate": rate, "cascade_end": end}
        )
    buf = config.leverage_buffer_pct / 100.0
    limit = end * (1.0 - buf) if side == "long" else end * (1.0 + buf)
    notional = config.position_notional or position_notional
    safe = max_safe_leverage(
        side, rate, limit, exchange=exchange, symbol=symbol, notional=notional,
        upper=cap, tiers_file=tiers_file,
    )  # fmt: skip
    lev = max(min(safe, cap), floor)
    figures = {"rate": rate, "cascade_end": end, "limit_price": limit, "proposed": cap,
               "safe": safe, "leverage": lev}  # fmt: skip
    if lev < cap:
        return LeverageDecision(
            lev,
            f"capped {cap:g}x -> {lev:g}x: own liquidation beyond {side} cascade end "
            f"{end:.6g} + {config.leverage_buffer_pct:g}%",
            figures,
        )
    return LeverageDecision(lev, f"{cap:g}x liquidates beyond the {side} cascade", figures)


def stop_decision(
    row: Row, side: str, current_rate: float, config: GuardConfig, *, state: str = "ok"
) -> StopDecision:
    """Tighten or exit when a pocket on the position's side is armed; else keep."""
    if _switched_off(side, config, config.stop_enabled):
        return StopDecision("keep", "guard off")
    current_rate, what = _rate_and_problem(state, current_rate)
    if what is not None:
        return StopDecision("keep", f"{what} data: strategy's own stop kept")
    armed = _f(row, f"liq_{side}_armed")
    score = _f(row, f"liq_{side}_armed_score")
    if not armed > 0 or (math.isfinite(score) and score < config.stop_min_score):
        return StopDecision("keep", f"no armed {side} pocket", figures={"score": score})
    low = _f(row, f"liq_{side}_cluster_low")
    high = _f(row, f"liq_{side}_cluster_high")
    min_d = config.stop_min_distance_pct / 100.0
    closest = current_rate * (1.0 - min_d) if side == "long" else current_rate * (1.0 + min_d)
    figures = {"rate": current_rate, "score": score, "pocket_low": low, "pocket_high": high}
    if config.stop_mode == "exit":
        reason = f"armed {side} pocket (score {score:.2f}): exit"
        return StopDecision("exit", reason, closest, figures)
    if math.isnan(low) or math.isnan(high):  # armed by the forecast, no pocket on the side
        d = config.stop_no_pocket_pct / 100.0
        if side == "long":
            stop = min(current_rate * (1.0 - d), closest)
        else:
            stop = max(current_rate * (1.0 + d), closest)
        return StopDecision(
            "tighten",
            f"{side} side armed (score {score:.2f}), no pocket: stop to {stop:.6g} "
            f"({config.stop_no_pocket_pct:g}% from the rate)",
            stop,
            figures,
        )
    buf = config.stop_buffer_pct / 100.0
    if side == "long":
        stop = min(high * (1.0 + buf), closest)
    else:
        stop = max(low * (1.0 - buf), closest)
    return StopDecision(
        "tighten",
        f"armed {side} pocket {low:.6g}-{high:.6g} (score {score:.2f}): stop to {stop:.6g}",
        stop,
        figures,
    )
