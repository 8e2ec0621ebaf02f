"""Leverage tiers and each exchange's isolated-margin liquidation-price formula.

Formulas (isolated margin, one position, no extra margin; ``N`` notional, ``EP`` entry price,
``L`` leverage, ``MMR`` maintenance margin rate of the notional's tier, ``cum`` the tier's
maintenance amount / deduction in USD, ``q = N / EP`` the quantity):

- Binance USD-M:  long  LP = (EP (1 - 1/L) - cum/q) / (1 - MMR)
                  short LP = (EP (1 + 1/L) + cum/q) / (1 + MMR)
  (Binance's ``LP = (WB + cum - side q EP) / (q MMR - side q)`` with ``WB = N / L``.)
- Bybit USDT perpetual:  long  LP = EP - (IM - MM)/q,  short LP = EP + (IM - MM)/q,
  ``IM = N / L``, ``MM = N MMR - cum``.
- OKX USDT swap: liquidated when (margin + uPnL) / position value = MMR + taker fee:
                  long  LP = EP (1 - 1/L) / (1 - MMR - fee)
                  short LP = EP (1 + 1/L) / (1 + MMR + fee)
- Hyperliquid: ``liq = EP - side * margin_available / q / (1 - l * side)``, ``l = 1 /
  maintenance leverage``, maintenance margin = half the initial margin at max leverage
  (``l = 1 / (2 * max_leverage)``), ``margin_available = N/L - N*l``.

Every formula is linear in ``EP`` for a fixed notional, so the engine precomputes one factor per
(side, leverage): ``LP = factor * EP``.
"""

from __future__ import annotations

import functools
import json
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from liqsignal.exceptions import ConfigError

__all__ = [
    "FORMULAS",
    "Tier",
    "leverage_factors",
    "liquidation_price",
    "load_tiers",
    "max_leverage_of",
    "tier_for",
]

#: Exchanges with their own formula; other ccxt ids use Binance's (said by ``formula_of``).
FORMULAS: tuple[str, ...] = ("binance", "bybit", "okx", "hyperliquid")
_ALIASES = {"binanceusdm": "binance", "okex": "okx"}


@dataclass(frozen=True)
class Tier:
    """One maintenance-margin bracket (ccxt ``fetch_leverage_tiers`` shape)."""

    min_notional: float
    max_notional: float
    mmr: float
    max_leverage: float
    cum: float = 0.0


def formula_of(exchange: str) -> str:
    """The formula family used for an exchange id."""
    if not isinstance(exchange, str) or not exchange.strip():
        raise ConfigError(f"liqsignal.engine.exchange must be an exchange id, got {exchange!r}")
    ex = _ALIASES.get(exchange.lower(), exchange.lower())
    return ex if ex in FORMULAS else "binance"


def _parse_tiers(symbol: str, rows: Sequence[Mapping[str, Any]], source: str) -> list[Tier]:
    tiers: list[Tier] = []
    for i, row in enumerate(rows):
        try:
            info = row.get("info") or {}
            cum = float(info.get("cum", row.get("cum", 0.0)) or 0.0)
            tiers.append(
                Tier(
                    min_notional=float(row["minNotional"]),
                    max_notional=float(row["maxNotional"]),
                    mmr=float(row["maintenanceMarginRate"]),
                    max_leverage=float(row["maxLeverage"]),
                    cum=cum,
                )
            )
        except (KeyError, TypeError, ValueError) as e:
            raise ConfigError(
                f"leverage tiers {source}: symbol {symbol} row {i} lacks minNotional, "
                f"maxNotional, maintenanceMarginRate or maxLeverage ({e})"
            ) from e
    tiers.sort(key=lambda t: t.min_notional)
    return tiers


@functools.lru_cache(maxsize=8)
def _load_file(path: str | None) -> dict[str, Any]:
    if path is None:
        text = (Path(__file__).parent / "resources" / "binance_leverage_tiers.json").read_text(
            encoding="utf-8"
        )
        source = "bundled binance_leverage_tiers.json"
    else:
        p = Path(path)
        if not p.is_file():
            raise ConfigError(f"engine.tiers_file: no file at {p}")
        text = p.read_text(encoding="utf-8")
        source = str(p)
    try:
        data = json.loads(text)
    except json.JSONDecodeError as e:
        raise ConfigError(f"leverage tiers {source}: not valid JSON ({e})") from e
    if not isinstance(data, dict):
        raise ConfigError(f"leverage tiers {source}: expected an object keyed by symbol")
    return data


def load_tiers(symbol: str, path: str | None = None) -> list[Tier] | None:
    """Tiers of ``symbol`` from a ccxt-style tiers file (bundled Binance file by default).

    Returns None when the file has no entry for the symbol (the caller then uses one tier
    with ``mmr_default``).
    """
    data = _load_file(path)
    rows = data.get(symbol)
    if rows is None:
        return None
    return _parse_tiers(symbol, rows, path or "bundled file")


def tier_for(tiers: Sequence[Tier], notional: float, leverage: float) -> Tier:
    """The tier of a position of ``notional`` USD, moved down to one that allows ``leverage``."""
    if not tiers:
        raise ConfigError("no leverage tiers given")
    chosen = tiers[-1]
    for t in tiers:
        if notional < t.max_notional:
            chosen = t
            break
    if chosen.max_leverage < leverage:
        allowed = [t for t in tiers if t.max_leverage >= leverage]
        if allowed:
            chosen = allowed[-1]
        else:
            chosen = tiers[0]
    return chosen


def max_leverage_of(tiers: Sequence[Tier] | None) -> float | None:
    if not tiers:
        return None
    return max(t.max_leverage for t in tiers)


def liquidation_price(
    exchange: str,
    side: str,
    entry: float,
    leverage: float,
    *,
    mmr: float,
    notional: float,
    cum: float = 0.0,
    taker_fee: float = 0.0005,
    max_leverage: float | None = None,
) -> float:
    """Liquidation price of a fresh isolated position (see module docstring for formulas).

    ``side`` is "long" or "short". For Hyperliquid, ``mmr`` is ignored when ``max_leverage`` is
    given (maintenance margin is half the initial margin at max leverage).
    """
    if side not in ("long", "short"):
        raise ValueError(f"side must be 'long' or 'short', got {side!r}")
    if not (entry > 0 and leverage >= 1 and notional > 0):
        raise ValueError("entry and notional must be > 0 and leverage >= 1")
    s = 1.0 if side == "long" else -1.0
    q = notional / entry
    family = formula_of(exchange)
    if family == "binance":
        wb = notional / leverage
        return (wb + cum - s * q * entry) / (q * mmr - s * q)
    if family == "bybit":
        im = notional / leverage
        mm = notional * mmr - cum
        return entry - s * (im - mm) / q
    if family == "okx":
        margin = notional / leverage
        # margin + s q (P - EP) = (mmr + fee) q P
        return (margin - s * q * entry) / (q * (mmr + taker_fee) - s * q)
    # hyperliquid
    l_maint = 1.0 / (2.0 * max_leverage) if max_leverage else mmr
    margin_available = notional / leverage - notional * l_maint
    return entry - s * margin_available / q / (1.0 - l_maint * s)


def leverage_factors(
    exchange: str,
    leverages: Sequence[float],
    weights: Sequence[float],
    *,
    symbol: str,
    position_notional: float,
    taker_fee: float,
    max_leverage: float | None,
    tiers_file: str | None,
) -> tuple[np.ndarray, np.ndarray, float]:
    """Per-leverage liquidation-price factors and normalised weights for one exchange.

    Returns ``(factors, weights, max_leverage)``: ``factors[0, j]`` (long) and ``factors[1, j]``
    (short) with ``LP = factor * entry``; leverages above the symbol's maximum get weight 0 and
    the rest are renormalised to sum to 1.
    """
    tiers = load_tiers(symbol, tiers_file)
    if tiers is None:
        # Unknown symbol: one tier with Binance's first-bracket rate for majors.
        tiers = [Tier(0.0, math.inf, 0.004, 125.0, 0.0)]
    cap = max_leverage if max_leverage is not None else max_leverage_of(tiers) or 125.0
    n = len(leverages)
    factors = np.empty((2, n), dtype=np.float64)
    w = np.array(weights, dtype=np.float64)
    for j, lev in enumerate(leverages):
        if lev > cap:
            w[j] = 0.0
        t = tier_for(tiers, position_notional, min(lev, cap))
        for k, side in enumerate(("long", "short")):
            factors[k, j] = _factor(exchange, side, lev, t, position_notional, taker_fee, cap)
    total = w.sum()
    if total <= 0:
        raise ConfigError(
            f"engine: every modelled leverage is above the symbol's maximum leverage {cap:g}"
        )
    return factors, w / total, float(cap)


def _factor(
    exchange: str, side: str, lev: float, t: Tier, notional: float, fee: float, cap: float
) -> float:
    # The formulas scale with entry for a fixed notional: evaluate at a reference entry and
    # divide (cum/q = cum * EP / N keeps the ratio exact).
    ref = 100.0
    lp = liquidation_price(
        exchange,
        side,
        ref,
        lev,
        mmr=t.mmr,
        notional=notional,
        cum=t.cum,
        taker_fee=fee,
        max_leverage=cap,
    )
    return max(lp / ref, 0.0)
