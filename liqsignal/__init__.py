"""liqsignal: liquidation maps for crypto derivatives, for Freqtrade strategies and alerts."""

from __future__ import annotations

__all__: list[str] = []
__version__ = "0.1.0"
