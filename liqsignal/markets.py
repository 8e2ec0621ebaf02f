"""Market names as users type them, in one form (no import beyond the exceptions: cheap for
the command line)."""

from __future__ import annotations

from liqsignal.exceptions import ConfigError

__all__ = ["normalize_market"]

_QUOTES = ("USDT", "USDC", "USD")


def normalize_market(market: str) -> str:
    """``btc``, ``BTCUSDT``, ``BTC/USDT`` and ``btc/usdt:usdt`` all mean ``BTC/USDT:USDT``
    (linear perpetual, settled in its quote)."""
    m = market.strip().upper()
    if not m or any(ch.isspace() for ch in m):
        raise ConfigError(f"market {market!r}: expected e.g. BTC, BTCUSDT or BTC/USDT:USDT")
    if "/" in m:
        base, _, rest = m.partition("/")
        quote, _, settle = rest.partition(":")
        quote = quote or "USDT"
        return f"{base}/{quote}:{settle or quote}"
    for q in _QUOTES:
        if m.endswith(q) and len(m) > len(q):
            return f"{m[: -len(q)]}/{q}:{q}"
    return f"{m}/USDT:USDT"
