"""Requests and responses of the replay exchange: what a venue handler receives and returns."""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, NamedTuple, Protocol

__all__ = ["Handler", "Request", "RequestRecord", "Response", "json_response"]


class RequestRecord(NamedTuple):
    """One served request as the log keeps it."""

    method: str
    path: str
    query: dict[str, str]


class ExchangeHost(Protocol):
    """What request handlers, venues and fault rules need of the replay exchange serving them
    (``liqsignal.replay.server.ReplayExchange``): its data, its route table, a way to add one.
    A protocol, so that these modules never import the server that imports them."""

    data: Any
    routes: dict[tuple[str, str], Handler]
    #: serve the current, unfinished candle last (as Binance does)
    forming_candle: bool

    def route(self, method: str, path: str, handler: Handler) -> None: ...


@dataclass
class Request:
    method: str
    path: str
    query: dict[str, str]
    headers: dict[str, str]
    body: bytes
    exchange: ExchangeHost
    now_ms: int
    visible_until: int | None


@dataclass
class Response:
    status: int
    body: bytes
    headers: dict[str, str] = field(default_factory=dict)


Handler = Callable[[Request], Response]


def json_response(obj: Any, status: int = 200, headers: dict[str, str] | None = None) -> Response:
    body = json.dumps(obj, separators=(",", ":")).encode()
    h = {"Content-Type": "application/json"}
    h.update(headers or {})
    return Response(status, body, h)
