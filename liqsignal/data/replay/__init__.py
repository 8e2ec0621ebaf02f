"""Local replay exchange: serves a Freqtrade datadir over a venue's REST API on 127.0.0.1."""

from __future__ import annotations

from liqsignal.data.replay.server import (
    VENUES,
    DataSource,
    Fault,
    FaultInjector,
    ReplayClock,
    ReplayExchange,
    Request,
    RequestRecord,
    Response,
    json_response,
)

__all__ = [
    "VENUES",
    "DataSource",
    "Fault",
    "FaultInjector",
    "ReplayClock",
    "ReplayExchange",
    "Request",
    "RequestRecord",
    "Response",
    "json_response",
]
