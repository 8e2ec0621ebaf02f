"""The outcome of one download job, shared by the candle download and the liquidation history."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

__all__ = ["JobResult"]


@dataclass
class JobResult:
    """Outcome of one (exchange, market, timeframe, candle type) job."""

    exchange: str
    market: str
    timeframe: str
    candle_type: str
    status: str  # "ok", "skipped" or "failed"
    symbol: str | None = None
    rows_fetched: int = 0
    rows_added: int = 0
    rows_total: int = 0
    path: Path | None = None
    message: str = ""
    gaps: list[tuple[int, int]] = field(default_factory=list)  # empty windows between rows (ms)
