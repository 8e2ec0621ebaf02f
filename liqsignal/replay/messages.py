"""Requests and responses of the replay exchange: what a venue handler receives and returns."""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, NamedTuple

if TYPE_CHECKING:
    from liqsignal.replay.server import ReplayExchange

__all__ = ["Handler", "Request", "RequestRecord", "Response", "json_response"]


class RequestRecord(NamedTuple):
    """One served request as the log keeps it."""

    method: str
    path: str
    query: dict[str, str]


@dataclass
class Request:
    method: str
    path: str
    query: dict[str, str]
    headers: dict[str, str]
    body: bytes
    exchange: ReplayExchange
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
