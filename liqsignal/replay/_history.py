"""What the liquidation-history replay venues (``bitfinex``, ``htx``) share: the events they serve.

By default the bundled real Hyperliquid liquidations
(``liqsignal/resources/liquidations_hyperliquid.parquet``: BTC, ETH, SOL, DOGE, HYPE, 2,243
events over 11 days), relabelled as the other replay venues do (:mod:`liqsignal.replay.ws`):
that file's ``side`` is ``S`` on every row, so the side liquidated is taken from the price move
since the market's previous event (a fall liquidates longs, a rise shorts; a market's first
event: long), and ``amount`` is ``size_usd / price``. These are real sizes, prices and timing in
the venue's shapes, not the venue's own liquidations.

A test can serve its own frame (``timestamp`` epoch ms or datetimes, ``market`` the base coin,
``side`` long/short, ``price``, ``amount`` in base units, optional ``id``) through the venue
module's ``register(rx, events=...)``.
"""

from __future__ import annotations

from importlib import resources

import numpy as np
import pandas as pd

from liqsignal.exceptions import ConfigError

__all__ = ["BUNDLED_EVENTS", "HistoryEvents", "bundled_events"]

BUNDLED_EVENTS = "liquidations_hyperliquid.parquet"
_COLUMNS = ("timestamp", "market", "side", "price", "amount")


def bundled_events() -> pd.DataFrame:
    """The bundled real events as ``timestamp`` (ms), ``market``, ``side``, ``price``,
    ``amount``, sides relabelled from the price move (see the module docstring)."""
    with resources.as_file(resources.files("liqsignal") / "resources" / BUNDLED_EVENTS) as p:
        raw = pd.read_parquet(p)
    raw = raw.sort_values("timestamp", kind="stable").reset_index(drop=True)
    price = raw["price"].astype("float64")
    market = raw["coin"].astype(str).str.upper()
    prev = price.groupby(market).shift(1)
    side = np.where(prev.notna() & (price > prev), "short", "long")
    return pd.DataFrame(
        {
            "timestamp": raw["timestamp"].astype("datetime64[ms, UTC]").astype("int64"),
            "market": market,
            "side": side,
            "price": price,
            "amount": raw["size_usd"].astype("float64") / price,
        }
    )


class HistoryEvents:
    """Events one venue serves, sorted by time (stable), with a venue id per event."""

    def __init__(self, events: pd.DataFrame | None = None, first_id: int = 1) -> None:
        df = bundled_events() if events is None else events.copy()
        missing = [c for c in _COLUMNS if c not in df.columns]
        if missing:
            raise ConfigError(f"replay history events: missing columns {missing}")
        ts = df["timestamp"]
        if not pd.api.types.is_integer_dtype(ts):
            ts = pd.to_datetime(ts, utc=True).astype("datetime64[ms, UTC]").astype("int64")
        df["timestamp"] = ts.astype("int64")
        bad = ~df["side"].isin(("long", "short"))
        if bad.any():
            row = int(bad.to_numpy().argmax())
            raise ConfigError(
                f"replay history events: column 'side' at row {row} is {df['side'].iloc[row]!r}; "
                "expected long or short (the side liquidated)"
            )
        if not ((df["price"] > 0) & (df["amount"] > 0)).all():
            raise ConfigError("replay history events: price and amount must be > 0")
        df = df.sort_values("timestamp", kind="stable").reset_index(drop=True)
        if "id" not in df.columns:
            df["id"] = np.arange(first_id, first_id + len(df), dtype="int64")
        df["market"] = df["market"].astype(str).str.upper()
        self.frame = df
        self.ts = df["timestamp"].to_numpy(dtype="int64")

    @property
    def markets(self) -> list[str]:
        return sorted(self.frame["market"].unique())

    def of(self, market: str | None) -> tuple[pd.DataFrame, np.ndarray]:
        """Rows (and their times) of one market, or of all with ``None``."""
        if market is None:
            return self.frame, self.ts
        sel = self.frame[self.frame["market"] == market]
        return sel, sel["timestamp"].to_numpy(dtype="int64")
