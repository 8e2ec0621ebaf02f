"""Fault injection for tests: make a replay exchange misbehave, per path, symbol and call number.

Two layers. :class:`FaultInjector` (``rx.faults``, consulted by the server before every handler)
holds plain :class:`Fault` rules: a fixed status and body, or a delay, for requests under a path
prefix, e.g. ``rx.faults.add(Fault("/fapi/v1/klines", status=503, times=1))``.

``faults = Faults(rx)`` wraps every route of ``rx`` once; then e.g.
``faults.rate_limit("/v5/market/kline", retry_after=0.2, times=2)`` answers the next two matching
calls with HTTP 429 and a ``Retry-After`` header. Fault kinds:

- ``timeout``: sleep ``delay_s`` before answering (set the client's timeout below it)
- ``rate_limit``: HTTP 429 with ``Retry-After`` and the venue's rate-limit body
- ``server_error``: HTTP 5xx (default 503) with an HTML body, as a gateway answers
- ``malformed``: HTTP 200 with a truncated JSON body
- ``empty_page``: the real answer with its data rows removed
- ``duplicate_rows``: the real answer with every data row twice
- ``out_of_order``: the real answer with its data rows shuffled (seeded)
- ``delist``: from the ``after``-th call on, every request naming ``symbol`` gets the venue's
  "unknown symbol" error (Binance -1121, Bybit 10001, OKX 51001): a market delisted mid-run

A rule matches requests whose path starts with ``path`` (``""`` = all) and, if given, whose
``symbol``/``instId`` equals ``symbol``; it skips the first ``after`` matches and fires ``times``
times (``None``: forever). ``rule.hits`` counts how often it fired. Data rows are the longest list
in the JSON answer (Binance's top-level list, Bybit's ``result.list``, OKX's ``data``).
"""

from __future__ import annotations

import json
import random
import threading
import time
from dataclasses import dataclass, field
from typing import Any, Generic, TypeVar

from liqsignal.exceptions import ConfigError
from liqsignal.replay.messages import ExchangeHost, Request, Response, json_response

__all__ = ["Fault", "FaultInjector", "FaultRule", "Faults"]

_R = TypeVar("_R")


class _Rules(Generic[_R]):
    """A list of rules behind a lock (requests are served from several threads)."""

    def __init__(self) -> None:
        self.rules: list[_R] = []
        self._lock = threading.Lock()

    def add(self, rule: _R) -> _R:
        with self._lock:
            self.rules.append(rule)
        return rule

    def clear(self) -> None:
        with self._lock:
            self.rules.clear()


@dataclass
class Fault:
    """One injected fault: requests whose path starts with ``path_prefix`` (and method matches)
    get ``status``/``body`` instead of the real answer, after sleeping ``delay_s``.

    ``status=None`` with a delay only slows the request down. ``times=None`` means forever.
    """

    path_prefix: str
    status: int | None = 500
    body: Any = None
    delay_s: float = 0.0
    method: str | None = None
    times: int | None = None
    hits: int = 0

    def matches(self, req: Request) -> bool:
        if self.method is not None and self.method != req.method:
            return False
        if self.times is not None and self.hits >= self.times:
            return False
        return req.path.startswith(self.path_prefix)


class FaultInjector(_Rules[Fault]):
    """Consulted before every handler; returns a Response to short-circuit, or None.

    Only fixed status codes and delays; venue-shaped faults (rate-limit bodies, malformed or
    rewritten pages, delisting) are :class:`Faults`.
    """

    @property
    def faults(self) -> list[Fault]:
        return self.rules

    def consult(self, req: Request) -> Response | None:
        with self._lock:
            fault = next((f for f in self.rules if f.matches(req)), None)
            if fault is not None:
                fault.hits += 1
        if fault is None:
            return None
        if fault.delay_s:
            time.sleep(fault.delay_s)
        if fault.status is None:
            return None
        body = fault.body
        if body is None:  # plain text, like a proxy's error page: clients map the status alone
            text = f"injected fault: HTTP {fault.status}".encode()
            return Response(fault.status, text, {"Content-Type": "text/plain"})
        if isinstance(body, bytes | str):
            raw = body.encode() if isinstance(body, str) else body
            return Response(fault.status, raw, {"Content-Type": "application/json"})
        return json_response(body, fault.status)


KINDS = (
    "timeout",
    "rate_limit",
    "server_error",
    "malformed",
    "empty_page",
    "duplicate_rows",
    "out_of_order",
    "delist",
)


@dataclass
class FaultRule:
    """One fault; see the module docstring."""

    kind: str
    path: str = ""
    symbol: str | None = None
    times: int | None = 1
    after: int = 0
    delay_s: float = 0.0
    status: int = 503
    retry_after: float = 1.0
    seed: int = 0
    #: counted as requests come in: the requests that matched, and how often the fault fired
    matched: int = field(default=0, init=False)
    hits: int = field(default=0, init=False)

    def __post_init__(self) -> None:
        if self.kind not in KINDS:
            raise ConfigError(f"fault kind: expected one of {', '.join(KINDS)}, got {self.kind!r}")
        if self.times is not None and self.times < 0:
            raise ConfigError(f"fault times: expected >= 0 or None, got {self.times}")


def _venue(path: str) -> str:
    if path.startswith("/v5/"):
        return "bybit"
    if path.startswith("/api/v5/"):
        return "okx"
    return "binance"


def _symbol_of(req: Request) -> str | None:
    return req.query.get("symbol") or req.query.get("instId")


def _rate_limit_response(path: str, retry_after: float) -> Response:
    venue = _venue(path)
    body: dict[str, Any]
    if venue == "bybit":
        body = {"retCode": 10006, "retMsg": "Too many visits!", "result": {}, "retExtInfo": {}}
    elif venue == "okx":
        body = {"code": "50011", "msg": "Too Many Requests", "data": []}
    else:
        body = {"code": -1003, "msg": "Too many requests; please use the websocket."}
    return json_response(body, 429, {"Retry-After": f"{retry_after:g}"})


def _delisted_response(path: str) -> Response:
    venue = _venue(path)
    if venue == "bybit":
        return json_response(
            {"retCode": 10001, "retMsg": "params error: symbol invalid", "result": {}}
        )
    if venue == "okx":
        return json_response({"code": "51001", "msg": "Instrument ID does not exist", "data": []})
    return json_response({"code": -1121, "msg": "Invalid symbol."}, 400)


def _longest_list(obj: Any) -> list[Any] | None:
    """The longest list inside ``obj`` (depth first), or None."""
    best: list[Any] | None = None
    stack = [obj]
    while stack:
        cur = stack.pop()
        if isinstance(cur, list):
            if best is None or len(cur) > len(best):
                best = cur
            stack.extend(x for x in cur if isinstance(x, dict | list))
        elif isinstance(cur, dict):
            stack.extend(v for v in cur.values() if isinstance(v, dict | list))
    return best


def _page_rows(obj: Any) -> list[Any] | None:
    """The list of rows of a page: Binance's top-level list, Bybit's ``result.list``, OKX's
    ``data``; otherwise the longest list inside (a short page of long rows must not be
    mistaken for one row)."""
    if isinstance(obj, list):
        return obj
    if isinstance(obj, dict):
        result = obj.get("result")
        if isinstance(result, dict) and isinstance(result.get("list"), list):
            return result["list"]
        if isinstance(obj.get("data"), list):
            return obj["data"]
    return _longest_list(obj)


def _rewrite_rows(resp: Response, kind: str, seed: int) -> Response:
    try:
        obj = json.loads(resp.body)
    except ValueError:
        return resp
    rows = _page_rows(obj)
    if rows is None:
        return resp
    if kind == "empty_page":
        rows.clear()
    elif kind == "duplicate_rows":
        doubled = [r for r in rows for _ in (0, 1)]
        rows[:] = doubled
    elif kind == "out_of_order":
        random.Random(seed).shuffle(rows)
    return Response(resp.status, json.dumps(obj).encode(), dict(resp.headers))


class Faults(_Rules[FaultRule]):
    """Fault rules for one :class:`ReplayExchange`; installs itself around every route."""

    def __init__(self, rx: ExchangeHost) -> None:
        super().__init__()
        self.rx = rx
        for key, handler in list(rx.routes.items()):
            rx.routes[key] = self._wrap(handler)

    def timeout(self, path: str = "", delay_s: float = 2.0, **kw: Any) -> FaultRule:
        return self.add(FaultRule("timeout", path, delay_s=delay_s, **kw))

    def rate_limit(self, path: str = "", retry_after: float = 1.0, **kw: Any) -> FaultRule:
        return self.add(FaultRule("rate_limit", path, retry_after=retry_after, **kw))

    def server_error(self, path: str = "", status: int = 503, **kw: Any) -> FaultRule:
        if not 500 <= status <= 599:
            raise ConfigError(f"server_error status: expected 5xx, got {status}")
        return self.add(FaultRule("server_error", path, status=status, **kw))

    def malformed(self, path: str = "", **kw: Any) -> FaultRule:
        return self.add(FaultRule("malformed", path, **kw))

    def empty_page(self, path: str = "", **kw: Any) -> FaultRule:
        return self.add(FaultRule("empty_page", path, **kw))

    def duplicate_rows(self, path: str = "", **kw: Any) -> FaultRule:
        return self.add(FaultRule("duplicate_rows", path, **kw))

    def out_of_order(self, path: str = "", **kw: Any) -> FaultRule:
        return self.add(FaultRule("out_of_order", path, **kw))

    def delist(self, symbol: str, path: str = "", after: int = 0) -> FaultRule:
        """``symbol`` is the venue's id (``BTCUSDT``, ``BTC-USDT-SWAP``); fires forever."""
        return self.add(FaultRule("delist", path, symbol=symbol, times=None, after=after))

    # -- serving ------------------------------------------------------------------------------
    def _pick(self, req: Request) -> FaultRule | None:
        with self._lock:
            for rule in self.rules:
                if not req.path.startswith(rule.path):
                    continue
                if rule.symbol is not None and _symbol_of(req) != rule.symbol:
                    continue
                rule.matched += 1
                if rule.matched <= rule.after:
                    continue
                if rule.times is not None and rule.hits >= rule.times:
                    continue
                rule.hits += 1
                return rule
        return None

    def _wrap(self, handler: Any) -> Any:
        def wrapped(req: Request) -> Response:
            rule = self._pick(req)
            if rule is None:
                return handler(req)  # type: ignore[no-any-return]
            if rule.kind == "timeout":
                time.sleep(rule.delay_s)
                return handler(req)  # type: ignore[no-any-return]
            if rule.kind == "rate_limit":
                return _rate_limit_response(req.path, rule.retry_after)
            if rule.kind == "server_error":  # as a gateway in front of the venue answers
                body = f"<html><body><h1>{rule.status} Bad Gateway</h1></body></html>".encode()
                return Response(rule.status, body, {"Content-Type": "text/html"})
            if rule.kind == "malformed":
                return Response(
                    200, b'{"code":0,"data":[["17', {"Content-Type": "application/json"}
                )
            if rule.kind == "delist":
                return _delisted_response(req.path)
            return _rewrite_rows(handler(req), rule.kind, rule.seed)

        return wrapped
