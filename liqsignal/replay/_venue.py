"""What the venue modules of the replay exchange share: number text, query parsing, row windows,
the frames every venue reads, the error guard and the route table.

A venue module subclasses :class:`VenueError` (how the venue answers an error) and :class:`Venue`
(its handlers and their ``routes``), says how a bad parameter and a bad limit read in
:meth:`Venue.bad_param` and :meth:`Venue.bad_limit`, and registers with :meth:`Venue.register`.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, ClassVar, Self, TypeVar

import numpy as np
import pandas as pd

from liqsignal.exceptions import ConfigError
from liqsignal.replay.messages import ExchangeHost, Handler, Request, Response

__all__ = [
    "LocalService",
    "Venue",
    "VenueError",
    "decimal_text",
    "newest",
    "replay_cap",
    "serves",
    "timeframe_names",
]


def decimal_text(nan: str, precision: int | None = 10) -> Callable[[Any], str]:
    """A formatter: a number as decimal text without exponent (at most ``precision`` digits
    after the point, trailing zeros trimmed), ``nan`` for None or NaN."""

    def text(x: Any) -> str:
        if x is None or (isinstance(x, float) and np.isnan(x)):
            return nan
        return np.format_float_positional(float(x), trim="-", precision=precision)

    return text


def timeframe_names(timeframes: str, upper: bool = False) -> dict[str, str]:
    """Venue interval name -> timeframe for the space-separated ``timeframes``: the same
    name, or with ``upper`` the hour, day and week letter in capitals (``1H``, ``1D``)."""
    names = {}
    for tf in timeframes.split():
        unit = tf[-1].upper() if upper and tf[-1] in "hdw" else tf[-1]
        names[tf[:-1] + unit] = tf
    return names


def replay_cap(req: Request) -> int:
    """Latest time a request may see (ms): replay now, or earlier when the clock hides rows."""
    return req.now_ms if req.visible_until is None else min(req.now_ms, req.visible_until)


def newest(ts: np.ndarray, start: int | None, end: int | None, cap: int, limit: int) -> slice:
    """The newest ``limit`` rows of sorted ``ts`` in ``[start, min(end, cap)]`` (inclusive)."""
    end = cap if end is None else min(end, cap)
    lo = 0 if start is None else int(np.searchsorted(ts, start, "left"))
    hi = int(np.searchsorted(ts, end, "right"))
    return slice(max(lo, hi - limit), max(hi, 0))


_PATHS = "_replay_paths"
_NO_FUNDING = pd.DataFrame(
    {"ts": np.array([], dtype="int64"), "funding_rate": np.array([], dtype="float64")}
)
_F = TypeVar("_F", bound=Callable[..., Any])


def serves(*paths: str) -> Callable[[_F], _F]:
    """Mark a :class:`Venue` method as the handler of ``paths``."""

    def mark(fn: _F) -> _F:
        setattr(fn, _PATHS, paths)
        return fn

    return mark


class VenueError(Exception):
    """An error the venue answers with ``status`` and its own body (:meth:`response`)."""

    status = 400

    def __init__(self, code: Any, msg: str, status: int | None = None) -> None:
        super().__init__(msg)
        self.code, self.msg = code, msg
        if status is not None:
            self.status = status

    def response(self, req: Request) -> Response:
        raise NotImplementedError


class Venue:
    """Handlers of one venue on one :class:`ReplayExchange`, with the shared helpers.

    Handlers are the methods marked :func:`serves`; :meth:`register` routes their paths (after
    ``prefix``) on the exchange, each answering a raised ``error`` the venue's way."""

    error: ClassVar[type[VenueError]]
    method: ClassVar[str] = "GET"
    prefix: ClassVar[str] = ""
    #: (code, text) of the errors the helpers raise; ``{name}``, ``{value}``, ``{maximum}``
    #: are filled in (a bad limit is a bad parameter unless the venue words it otherwise)
    bad_param: ClassVar[tuple[Any, str]]
    bad_limit: ClassVar[tuple[Any, str] | None] = None
    #: the query key naming the market, and the errors when it is missing or not served
    market_key: ClassVar[str] = "symbol"
    no_market: ClassVar[tuple[Any, str]] = (None, "")
    unknown_market: ClassVar[tuple[Any, str]] = (None, "")

    def __init__(
        self, rx: ExchangeHost, market_id: str = "{base}{quote}", settles: str | None = None
    ) -> None:
        """``market_id``: the venue's id of a file pair's market (``BTCUSDT``,
        ``BTC-USDT-SWAP``); ``settles``: serve only pairs whose quote is the settle currency,
        this one ("*": any), or every futures file pair (None)."""
        self.rx = rx
        self.data = rx.data
        #: venue market id -> file pair (``BTCUSDT`` -> ``BTC_USDT_USDT``)
        self.markets = {
            market_id.format(base=base, quote=quote): fp
            for base, quote, settle, fp in self.data.perpetuals()
            if settles is None or (quote == settle and settles in ("*", settle))
        }

    def register(self) -> None:
        for name in dir(type(self)):
            for path in getattr(getattr(type(self), name), _PATHS, ()):
                handler = _guarded(getattr(self, name), self.error)
                self.rx.route(self.method, self.prefix + path, handler)

    def fail(self, which: tuple[Any, str], **fields: Any) -> VenueError:
        code, text = which
        return self.error(code, text.format(**fields))

    def _int(self, req: Request, name: str) -> int | None:
        """Query parameter ``name`` as a whole number; None when absent or empty."""
        v = req.query.get(name)
        if v in (None, ""):
            return None
        try:
            return self.parse_int(str(v))
        except ValueError:
            raise self.fail(self.bad_param, name=name, value=v) from None

    @staticmethod
    def parse_int(text: str) -> int:
        return int(text)

    def _limit(self, req: Request, default: int, maximum: int, name: str = "limit") -> int:
        limit = self._int(req, name)
        if limit is None:
            return default
        if not 1 <= limit <= maximum:
            raise self.fail(self.bad_limit or self.bad_param, name=name, maximum=maximum, value="")
        return limit

    def _market(self, req: Request) -> str:
        """The market the query names (``market_key``), one this replay serves."""
        value = req.query.get(self.market_key)
        if not value:
            raise self.fail(self.no_market, key=self.market_key)
        if value not in self.markets:
            raise self.fail(self.unknown_market, key=self.market_key)
        return value

    @staticmethod
    def _cap(req: Request) -> int:
        return replay_cap(req)

    def _newest(
        self,
        req: Request,
        ts: np.ndarray,
        start_key: str,
        end_key: str,
        limit: int,
        cap: int | None = None,
    ) -> slice:
        """:func:`newest` rows between the query's ``start_key`` and ``end_key`` times, up to
        ``cap`` (default: what the replay clock shows)."""
        start, end = self._int(req, start_key), self._int(req, end_key)
        return newest(ts, start, end, replay_cap(req) if cap is None else cap, limit)

    # frames ---------------------------------------------------------------------------------
    def first_frame(self, fp: str, ctype: str) -> pd.DataFrame | None:
        """The frame of ``fp``'s finest timeframe of ``ctype``, or None."""
        tfs = self.data.timeframes(fp, ctype)
        return self.data.frame(fp, tfs[0], ctype) if tfs else None

    def listed_ms(self, fp: str) -> int:
        """Open time of ``fp``'s first candle (ms), 0 without candles: the listing time."""
        df = self.first_frame(fp, "futures")
        return int(df["ts"].iloc[0]) if df is not None and len(df) else 0

    def market_funding(
        self, req: Request, default: int, maximum: int
    ) -> tuple[str, int, pd.DataFrame, str]:
        """The market the query names, the query's limit, and the market's funding
        (:meth:`funding_of`)."""
        market = self._market(req)
        limit = self._limit(req, default, maximum)
        return market, limit, *self.funding_of(self.markets[market])

    def funding_of(self, fp: str) -> tuple[pd.DataFrame, str]:
        """``fp``'s funding frame (no rows without a file) and the column holding the rate."""
        df = self.first_frame(fp, "funding_rate")
        if df is None:
            return _NO_FUNDING, "funding_rate"
        return df, "funding_rate" if "funding_rate" in df.columns else "open"

    @staticmethod
    def visible(df: pd.DataFrame, req: Request) -> pd.DataFrame:
        """The rows of ``df`` the replay clock shows."""
        cap = req.visible_until
        return df if cap is None else df[df["ts"] <= cap]


def _guarded(fn: Callable[[Request], Response], error: type[VenueError]) -> Handler:
    def handler(req: Request) -> Response:
        try:
            return fn(req)
        except error as e:
            return e.response(req)

    return handler


class LocalService:
    """Start and stop of a local server: ``with`` blocks, ``port`` and ``url``.

    A subclass provides :meth:`start`, :meth:`stop`, :meth:`_bound_port` (None when stopped),
    ``host`` and ``name`` (for the error naming it)."""

    host: str
    name: str

    def start(self) -> Self:
        raise NotImplementedError

    def stop(self) -> None:
        raise NotImplementedError

    def _bound_port(self) -> int | None:
        raise NotImplementedError

    def __enter__(self) -> Self:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    @property
    def port(self) -> int:
        port = self._bound_port()
        if port is None:
            raise ConfigError(f"{self.name} is not running: use start() or a with block")
        return port

    @property
    def url(self) -> str:
        return f"http://{self.host}:{self.port}"
