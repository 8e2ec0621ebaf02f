"""Local replay exchange: serves a Freqtrade datadir over a venue's REST API on 127.0.0.1.

``server`` (HTTP server, data source, clock), ``messages`` (request and response types), one
module per venue (``binance``, ``bybit``, ``okx``, ``gate``, ``bitget``, ``hyperliquid``, sharing
``_venue``), ``ws`` (WebSocket liquidation streams) and ``testing`` (fault injection for tests).
"""

from __future__ import annotations

from liqsignal.replay.messages import Request, RequestRecord, Response, json_response
from liqsignal.replay.server import VENUES, DataSource, ManualClock, ReplayClock, ReplayExchange
from liqsignal.replay.testing import Fault, FaultInjector, FaultRule, Faults

__all__ = [
    "VENUES",
    "DataSource",
    "Fault",
    "FaultInjector",
    "FaultRule",
    "Faults",
    "ManualClock",
    "ReplayClock",
    "ReplayExchange",
    "Request",
    "RequestRecord",
    "Response",
    "json_response",
]
