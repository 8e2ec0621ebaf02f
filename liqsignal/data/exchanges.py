"""Fetch futures market data from exchanges through ccxt; the only liqsignal module importing ccxt.

One :class:`ExchangeClient` wraps one ``ccxt.async_support`` exchange (ccxt's rate limiter on) and
offers paginated OHLCV (also mark), open-interest history, current open interest, funding rate
history, leverage tiers and Binance's taker buy volume, each as a DataFrame in the columns of
:mod:`liqsignal.data.store`. Calls are bounded in concurrency, temporary failures (ccxt
``OperationFailed`` family: timeouts, 429/DDoS, 5xx, ``BadResponse``; and malformed answers) are
retried with exponential backoff (``Retry-After`` honoured, bounded), permanent ones (``BadSymbol``,
``BadRequest``, other ``ExchangeError``) become :class:`PermanentDataError` naming exchange and
market. Per-exchange knowledge (page sizes, OI timeframes and depth, market type) is in
:data:`EXCHANGES`.
"""

from __future__ import annotations

import asyncio
import email.utils
import logging
import math
import time
from collections.abc import Awaitable, Callable, Iterator, Mapping
from dataclasses import dataclass, field
from typing import Any, TypeVar

import ccxt
import ccxt.async_support as ccxt_async
import numpy as np
import pandas as pd

from liqsignal.data.liquidations import BAR_COLUMNS, events_from_ccxt
from liqsignal.data.store import CANDLE_COLUMNS, normalize_frame
from liqsignal.exceptions import ConfigError, PermanentDataError, TemporaryDataError

__all__ = [
    "EXCHANGES",
    "ExchangeClient",
    "ExchangeSpec",
    "LiquidationHistory",
    "RetryPolicy",
    "timeframe_to_ms",
]

logger = logging.getLogger(__name__)
T = TypeVar("T")

#: ccxt errors worth retrying: ``OperationFailed`` = network, timeouts, rate limits, 5xx,
#: unparseable answers (``BadResponse``), exchange-side "internal error" codes.
TEMPORARY_ERRORS: tuple[type[Exception], ...] = (ccxt.OperationFailed,)


class _Malformed(Exception):
    """An answer that parsed but does not have the shape it must have (treated as temporary)."""


#: what ccxt's parsers raise on JSON of an unexpected shape (a dict where a list belongs, ...)
_SHAPE_ERRORS: tuple[type[Exception], ...] = (
    TypeError,
    KeyError,
    IndexError,
    AttributeError,
    ValueError,
)


@dataclass(frozen=True)
class ExchangeSpec:
    """What liqsignal knows about one exchange's public futures API."""

    ccxt_id: str
    settles: tuple[str, ...]  # settle currencies of linear perpetuals, preferred first
    ohlcv_page: int  # candles per request
    funding_page: int
    #: hours per funding row assumed to size [since, until] windows of newest-first endpoints
    #: (None: the endpoint answers the earliest rows from since on, no window needed)
    funding_window_h: int | None
    #: timeframes the OI-history endpoint accepts (none: the venue serves no OI history)
    oi_timeframes: tuple[str, ...] = ()
    oi_page: int = 0
    oi_days: int | None = None  # how far back OI history reaches (None: no documented limit)
    options: Mapping[str, Any] = field(default_factory=dict)  # ccxt options merged in
    taker_buy: bool = False  # raw klines carry taker buy volume (columns 9-10)
    #: the candle/OI endpoints answer the earliest ``limit`` rows from ``since`` on, so pages need
    #: no explicit end (fewer requests across gaps); else each page asks a [since, until] window
    forward_pages: bool = False
    #: ccxt's ``openInterestAmount`` counts contracts here; the base amount is ``baseVolume``
    oi_amount_in_contracts: bool = False
    mark_page: int | None = None  # mark-price candles per request when smaller than ohlcv_page
    #: candle volume and ccxt's ``openInterestAmount`` count contracts and no base amount is
    #: given (Gate): both are multiplied by the market's ``contractSize``
    contract_units: bool = False
    #: the OI history's raw rows carry per-bar long/short liquidation USD (Gate contract_stats)
    liq_bars: bool = False
    #: public liquidation history through ccxt ``fetch_liquidations``: the longest window one
    #: request may ask (ms) and its page size; None when the venue serves none
    liq_window_ms: int | None = None
    liq_page: int = 0
    #: funding history has no time filter, only pages of ``funding_page`` rows, newest first
    #: (Bitget ``pageNo``): read pages until one reaches back past ``since``
    funding_by_page: bool = False
    #: the candle endpoint's end bound is EXCLUSIVE where ccxt hands it ``until`` unchanged
    #: (OKX ``after``: "records earlier than ts"), so a page ends at ``until + 1``; else the
    #: candle opened exactly at ``until`` would be left out (one refresh late when the clock is
    #: on a bar boundary)
    ohlcv_end_exclusive: bool = False


EXCHANGES: dict[str, ExchangeSpec] = {
    "binance": ExchangeSpec(
        "binanceusdm",
        ("USDT", "USDC"),
        ohlcv_page=1000,
        oi_timeframes=("5m", "15m", "30m", "1h", "2h", "4h", "6h", "12h", "1d"),
        oi_page=500,
        oi_days=30,
        funding_page=1000,
        funding_window_h=None,
        options={"fetchMarkets": {"types": ["linear"]}},
        taker_buy=True,
        forward_pages=True,
    ),
    "bybit": ExchangeSpec(
        "bybit",
        ("USDT", "USDC"),
        ohlcv_page=1000,
        oi_timeframes=("5m", "15m", "30m", "1h", "4h", "1d"),
        oi_page=200,
        funding_page=200,
        funding_window_h=8,  # newest-first in [startTime, endTime]: windows, halved if full
        options={"fetchMarkets": {"types": ["linear"]}, "defaultType": "swap"},
    ),
    "okx": ExchangeSpec(
        "okx",
        ("USDT", "USDC"),
        ohlcv_page=300,
        oi_timeframes=("5m", "1h", "1d"),
        oi_page=100,
        funding_page=100,
        funding_window_h=8,  # newest-first: before/after windows, halved when a page is full
        options={"fetchMarkets": {"types": ["swap"]}, "defaultType": "swap"},
        oi_amount_in_contracts=True,
        mark_page=100,
        ohlcv_end_exclusive=True,
    ),
    "bitget": ExchangeSpec(
        "bitget",
        ("USDT", "USDC"),
        ohlcv_page=200,
        funding_page=100,
        funding_window_h=None,
        options={"defaultType": "swap"},
        funding_by_page=True,
    ),
    "gate": ExchangeSpec(
        "gate",
        ("USDT",),
        ohlcv_page=1000,
        oi_timeframes=("5m", "15m", "30m", "1h", "4h", "1d"),
        oi_page=100,
        funding_page=1000,
        funding_window_h=8,  # [from, to] windows, halved when a page is full: safe either way
        options={
            "fetchMarkets": {"types": ["swap"]},
            "swap": {"fetchMarkets": {"settlementCurrencies": ["usdt"]}},
            "defaultType": "swap",
        },
        contract_units=True,
        liq_bars=True,
        liq_window_ms=3_600_000,  # liq_orders: to - from at most 3600 s
        liq_page=1000,
    ),
    "hyperliquid": ExchangeSpec(
        "hyperliquid",
        ("USDC",),
        ohlcv_page=500,
        funding_page=500,
        funding_window_h=None,
        options={"defaultType": "swap"},
    ),
}


@dataclass
class LiquidationHistory:
    """What :meth:`ExchangeClient.fetch_liquidations` got: the events, the windows it read
    completely (from the first window holding an event on: before it the venue may simply keep
    no history) and the windows it could not read completely (every page full down to one
    second, so some events were cut off), each a list of ``(start_ms, end_ms)``."""

    events: pd.DataFrame
    covered: list[tuple[int, int]] = field(default_factory=list)
    incomplete: list[tuple[int, int]] = field(default_factory=list)


_TF_UNITS = {"s": 1_000, "m": 60_000, "h": 3_600_000, "d": 86_400_000, "w": 604_800_000}


def timeframe_to_ms(timeframe: str) -> int:
    """``"5m"`` -> 300000; ConfigError naming the timeframe when it is not understood."""
    unit = timeframe[-1:]
    amount = timeframe[:-1]
    if unit not in _TF_UNITS or not amount.isdigit() or int(amount) <= 0:
        raise ConfigError(f"timeframe: expected like 5m, 1h, 1d, got {timeframe!r}")
    return int(amount) * _TF_UNITS[unit]


@dataclass(frozen=True)
class RetryPolicy:
    """Exponential backoff for temporary errors: ``attempts`` tries in all, waits
    ``base_delay * factor**n`` capped at ``max_delay``; a server's Retry-After wins when longer
    (capped at ``max_retry_after``)."""

    attempts: int = 5
    base_delay: float = 1.0
    factor: float = 2.0
    max_delay: float = 30.0
    max_retry_after: float = 120.0

    def __post_init__(self) -> None:
        for name, least in (("attempts", 1), ("base_delay", 0), ("max_delay", 0), ("factor", 1)):
            value = getattr(self, name)
            if value < least:
                raise ConfigError(f"retry {name}: expected >= {least}, got {value}")


@dataclass
class ClientStats:
    """Counters for the summary: requests made, temporary errors retried, waits slept."""

    calls: int = 0
    retries: int = 0
    slept_s: float = 0.0
    retry_after_s: list[float] = field(default_factory=list)
    #: (symbol, what, start_ms, end_ms) of windows answered empty twice and then followed by
    #: data: either a real gap in the exchange's history or a loss worth re-downloading
    gaps: list[tuple[str, str, int, int]] = field(default_factory=list)


def _retry_after_seconds(headers: Mapping[str, Any] | None) -> float | None:
    if not headers:
        return None
    value = next((v for k, v in headers.items() if str(k).lower() == "retry-after"), None)
    if value is None:
        return None
    try:
        return max(0.0, float(value))
    except (TypeError, ValueError):
        pass
    try:
        when = email.utils.parsedate_to_datetime(str(value))
    except (TypeError, ValueError):
        return None
    return max(0.0, when.timestamp() - time.time())


def _deep_merge(base: dict[str, Any], extra: Mapping[str, Any]) -> dict[str, Any]:
    out = dict(base)
    for k, v in extra.items():
        if isinstance(v, Mapping) and isinstance(out.get(k), Mapping):
            out[k] = _deep_merge(dict(out[k]), v)
        else:
            out[k] = v
    return out


class ExchangeClient:
    """One exchange through ccxt's async client: ``async with ExchangeClient("bybit") as ex:``.

    ``config`` is passed to the ccxt constructor on top of liqsignal's defaults (e.g. ``urls``
    overrides pointing at a local server, ``timeout`` in ms). ``max_concurrency`` bounds parallel
    requests of this client; ccxt's own rate limiter stays on. ``history_limits`` clamps
    open-interest history requests to the exchange's documented depth (off for replays of old data).
    """

    def __init__(
        self,
        name: str,
        config: Mapping[str, Any] | None = None,
        retry: RetryPolicy | None = None,
        max_concurrency: int = 4,
        history_limits: bool = True,
    ) -> None:
        if name not in EXCHANGES:
            raise ConfigError(f"exchange: expected one of {', '.join(EXCHANGES)}, got {name!r}")
        if max_concurrency < 1:
            raise ConfigError(f"max_concurrency: expected >= 1, got {max_concurrency}")
        self.name = name
        self.spec = EXCHANGES[name]
        self.retry = retry or RetryPolicy()
        self.history_limits = history_limits
        self.stats = ClientStats()
        settings: dict[str, Any] = {
            "enableRateLimit": True,
            "enableLastJsonResponse": True,  # lets _check_parsed tell garbage from an empty page
            "options": dict(self.spec.options),
        }
        settings = _deep_merge(settings, config or {})
        settings["enableRateLimit"] = True
        self.api: Any = getattr(ccxt_async, self.spec.ccxt_id)(settings)
        self._sem = asyncio.Semaphore(max_concurrency)
        self._markets_loaded = False

    async def __aenter__(self) -> ExchangeClient:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    async def close(self) -> None:
        await self.api.close()

    # -- capabilities ---------------------------------------------------------------------------
    def has(self, feature: str) -> bool:
        """ccxt's ``has`` for a unified method name (``fetchOpenInterestHistory`` ...)."""
        if feature == "takerBuyVolume":
            return self.spec.taker_buy
        return bool(self.api.has.get(feature))

    def oi_timeframe(self, timeframe: str) -> str | None:
        """The OI-history timeframe to request for candles of ``timeframe`` (None: unsupported).

        The timeframe itself when the exchange accepts it, else the largest accepted one that
        divides it (5m OI for 15m candles on OKX), so every candle gets a value.
        """
        if not self.has("fetchOpenInterestHistory") or not self.spec.oi_timeframes:
            return None
        if timeframe in self.spec.oi_timeframes:
            return timeframe
        target = timeframe_to_ms(timeframe)
        fits = [
            tf
            for tf in self.spec.oi_timeframes
            if timeframe_to_ms(tf) <= target and target % timeframe_to_ms(tf) == 0
        ]
        return max(fits, key=timeframe_to_ms) if fits else None

    # -- markets --------------------------------------------------------------------------------
    async def load_markets(self) -> dict[str, Any]:
        markets: dict[str, Any] = await self._call("load markets", "*", self.api.load_markets)
        self._markets_loaded = True
        return markets

    async def symbol(self, market: str) -> str:
        """ccxt symbol of the linear perpetual for ``market`` ("BTC" or "BTC/USDT:USDT")."""
        if not market or not isinstance(market, str):
            raise ConfigError(f"market: expected a name like 'BTC', got {market!r}")
        if not self._markets_loaded:
            await self.load_markets()
        markets = self.api.markets or {}
        if "/" in market:
            if market in markets:
                return market
            raise PermanentDataError(f"{self.name}: market {market!r} is not listed")
        base = market.upper()
        tried = []
        for settle in self.spec.settles:
            sym = f"{base}/{settle}:{settle}"
            tried.append(sym)
            m = markets.get(sym)
            if m and m.get("swap") and m.get("active", True) is not False:
                return sym
        raise PermanentDataError(
            f"{self.name}: no active linear perpetual for market {market!r} (looked for "
            f"{', '.join(tried)} among {len(markets)} markets)"
        )

    def _contract_size(self, symbol: str) -> float:
        """Base units per contract of a loaded market (1 when ccxt gives none)."""
        market = (self.api.markets or {}).get(symbol) or {}
        size = market.get("contractSize")
        return float(size) if size else 1.0

    def _oi_units(
        self, symbol: str, rows: list[tuple[int, list[float]]]
    ) -> list[tuple[int, list[float]]]:
        if not self.spec.contract_units:
            return rows
        size = self._contract_size(symbol)
        return [(ts, [v[0] * size, v[1]]) for ts, v in rows]

    def _check_parsed(self, what: str) -> None:
        """Raise _Malformed if the answer just received was not JSON (ccxt then parses the raw
        text into an empty result). Called right after the awaited ccxt call returns. ccxt keeps
        one ``last_*_response`` per client, and aiohttp may yield while closing a response, so
        under concurrency another request's answer can be seen here: at worst one needless retry
        or a garbage page taken for an empty one, which is asked again anyway."""
        body = self.api.last_http_response
        if self.api.last_json_response is None and isinstance(body, str) and body.strip():
            raise _Malformed(f"{what}: answer is not valid JSON: {body[:60]!r}")

    # -- retried calls ---------------------------------------------------------------------------
    async def _call(
        self, what: str, market: str, fn: Callable[..., Awaitable[T]], *args: Any, **kwargs: Any
    ) -> T:
        """Call ``fn`` with bounded concurrency; retry temporary errors; translate the rest."""
        delay = self.retry.base_delay
        for attempt in range(1, self.retry.attempts + 1):
            retry_after: float | None = None
            try:
                async with self._sem:
                    self.stats.calls += 1
                    try:
                        return await fn(*args, **kwargs)
                    except TEMPORARY_ERRORS:
                        # ccxt's per-client last headers: this answer's, unless a concurrent
                        # one finished in between (then a capped, slightly wrong wait)
                        retry_after = _retry_after_seconds(self.api.last_response_headers)
                        raise
                    except _SHAPE_ERRORS as e:  # ccxt choked on an answer of unexpected shape
                        raise _Malformed(f"unexpected answer: {type(e).__name__}: {e}") from e
            except (ccxt.OperationFailed, _Malformed) as e:
                if attempt >= self.retry.attempts:
                    logger.warning(
                        "%s %s: %s: giving up after %d attempts: %s",
                        self.name,
                        market,
                        what,
                        attempt,
                        e,
                    )
                    raise TemporaryDataError(
                        f"{self.name} {market}: {what} failed after {attempt} attempts: "
                        f"{type(e).__name__}: {e}"
                    ) from e
                wait = min(delay, self.retry.max_delay)
                if retry_after is not None:
                    retry_after = min(retry_after, self.retry.max_retry_after)
                    self.stats.retry_after_s.append(retry_after)
                    wait = max(wait, retry_after)
                logger.info(
                    "%s %s: %s: %s, retry %d/%d in %.2fs",
                    self.name,
                    market,
                    what,
                    type(e).__name__,
                    attempt,
                    self.retry.attempts - 1,
                    wait,
                )
                self.stats.retries += 1
                self.stats.slept_s += wait
                await asyncio.sleep(wait)
                delay *= self.retry.factor
            except ccxt.BaseError as e:
                raise PermanentDataError(
                    f"{self.name} {market}: {what} refused: {type(e).__name__}: {e}"
                ) from e
        raise AssertionError("unreachable")  # pragma: no cover

    # -- pagination -----------------------------------------------------------------------------
    async def _paginate(
        self,
        what: str,
        market: str,
        page: Callable[[int, int], Awaitable[list[tuple[int, list[float]]]]],
        since: int,
        until: int,
        window_ms: int,
        step_ms: int,
        limit: int | None = None,
    ) -> list[tuple[int, list[float]]]:
        """Walk forward from ``since`` to ``until`` (both ms, inclusive) in windows.

        ``page(cursor, window_end)`` returns (ts, values) rows. The next cursor is the last row
        + ``step_ms``. An empty window is asked again once (a glitch must not lose data), then
        skipped as a real gap. With ``limit`` (the endpoint answers the NEWEST ``limit`` rows of
        a window): a full page that starts after the cursor may have cut older rows off, so the
        window is halved and asked again (e.g. 1h funding where 8h was assumed).
        """
        rows: list[tuple[int, list[float]]] = []
        cursor = since
        confirmed_empty = False
        gap_start: int | None = None
        while cursor <= until:
            window_end = min(cursor + window_ms - 1, until)

            async def one(c: int = cursor, w: int = window_end) -> list[tuple[int, list[float]]]:
                return await page(c, w)

            got = await self._call(what, market, one)
            inside = [r for r in got if cursor <= r[0] <= until]
            if not inside:
                if not confirmed_empty:
                    confirmed_empty = True
                    continue
                confirmed_empty = False
                if gap_start is None:
                    gap_start = cursor
                cursor = window_end + 1
                continue
            confirmed_empty = False
            if gap_start is not None:
                self.stats.gaps.append((market, what, gap_start, cursor - 1))
                logger.warning(
                    "%s %s: %s: no rows from %d to %d",
                    self.name,
                    market,
                    what,
                    gap_start,
                    cursor - 1,
                )
                gap_start = None
            first = min(r[0] for r in inside)
            if (
                limit is not None
                and len(inside) >= limit
                and first > cursor
                and window_ms > step_ms
            ):
                window_ms = max(step_ms, window_ms // 2)
                logger.debug("%s %s: %s: full page, window halved", self.name, market, what)
                continue
            rows.extend(inside)
            last = max(r[0] for r in inside)
            nxt = last + step_ms
            if nxt <= cursor:  # pragma: no cover - guarded by the filter above
                break
            cursor = nxt
        return rows

    @staticmethod
    def _rows_to_frame(rows: list[tuple[int, list[float]]], candle_type: str) -> pd.DataFrame:
        """The parsed rows as a store frame: one row per date (the last one answered wins),
        sorted, in ``normalize_frame``'s columns and dtypes."""
        columns = CANDLE_COLUMNS[candle_type]
        fast = _rows_frame_fast(rows, columns)
        if fast is not None:
            return fast
        if not rows:
            return normalize_frame(pd.DataFrame(columns=columns), candle_type)
        df = pd.DataFrame([[ts, *vals] for ts, vals in rows], columns=columns)
        df = df.drop_duplicates(subset="date", keep="last").sort_values("date")
        return normalize_frame(df, candle_type)

    def _page_limit(self, limit: int, cursor: int, window_end: int, tf_ms: int) -> int:
        """Rows to ask of a candle page: on endpoints that answer the earliest rows from
        ``since`` on, no more than the window ``[cursor, window_end]`` can hold (Binance weighs
        a kline request by its limit: 1 up to 99 rows, 5 for 1000), else the page size."""
        if not self.spec.forward_pages:
            return limit
        return max(1, min(limit, (window_end - cursor) // tf_ms + 1))

    def _ohlcv_window(self, page_ms: int, since_ms: int, until_ms: int) -> int:
        if self.spec.forward_pages:
            return max(page_ms, until_ms - since_ms + 1)
        return page_ms

    async def _since_until(
        self, market: str, since: int | None, until: int | None, default_span_ms: int
    ) -> tuple[str, int, int]:
        """Symbol and [since, until] in ms: until defaults to now, since to one page before it."""
        symbol = await self.symbol(market)
        now = self.api.milliseconds()
        until_ms = now if until is None else int(until)
        since_ms = max(0, until_ms - default_span_ms) if since is None else int(since)
        if since_ms > until_ms:
            raise ConfigError(f"since ({since_ms}) is after until ({until_ms}) for {market}")
        return symbol, since_ms, until_ms

    # -- OHLCV ----------------------------------------------------------------------------------
    async def fetch_ohlcv(
        self,
        market: str,
        timeframe: str,
        since: int | None = None,
        until: int | None = None,
        price: str | None = None,
        drop_incomplete: bool = True,
    ) -> pd.DataFrame:
        """Candles ``[since, until]`` (ms) as ``date, open, high, low, close, volume``.

        ``price="mark"`` gives mark-price candles. The still-open last candle is dropped.
        """
        tf_ms = timeframe_to_ms(timeframe)
        span = tf_ms * (
            self.spec.mark_page if price and self.spec.mark_page else self.spec.ohlcv_page
        )
        if timeframe not in (self.api.timeframes or {}):
            raise ConfigError(
                f"timeframe: {self.name} has no {timeframe!r} candles; "
                f"it has {', '.join(self.api.timeframes or {})}"
            )
        symbol, since_ms, until_ms = await self._since_until(market, since, until, span)
        if drop_incomplete:
            until_ms = min(until_ms, self.api.milliseconds() - tf_ms)
        if since_ms > until_ms:
            return self._rows_to_frame([], "futures")
        since_ms = since_ms // tf_ms * tf_ms if since_ms % tf_ms else since_ms
        limit = self.spec.ohlcv_page
        if price and self.spec.mark_page:
            limit = self.spec.mark_page
        params: dict[str, Any] = {"price": price} if price else {}

        end_pad = 1 if self.spec.ohlcv_end_exclusive else 0

        async def page(cursor: int, window_end: int) -> list[tuple[int, list[float]]]:
            raw = await self.api.fetch_ohlcv(
                symbol,
                timeframe,
                cursor,
                self._page_limit(limit, cursor, window_end, tf_ms),
                {**params, "until": window_end + end_pad},
            )
            self._check_parsed(f"{self.name} {symbol} ohlcv")
            rows = _parse_rows(raw, 5, f"{self.name} {symbol} ohlcv")
            if self.spec.contract_units:
                size = self._contract_size(symbol)
                rows = [(ts, [*v[:4], v[4] * size]) for ts, v in rows]
            return rows

        what = f"{'mark ' if price else ''}ohlcv {timeframe}"
        window = self._ohlcv_window(limit * tf_ms, since_ms, until_ms)
        newest = None if self.spec.forward_pages else limit
        rows = await self._paginate(what, symbol, page, since_ms, until_ms, window, tf_ms, newest)
        return self._rows_to_frame(rows, "futures")

    async def fetch_taker_buy(
        self, market: str, timeframe: str, since: int | None = None, until: int | None = None
    ) -> pd.DataFrame:
        """Binance taker buy volume per candle (raw klines columns 9-10, which unified OHLCV
        drops): ``date, taker_buy_volume, taker_buy_quote_volume``."""
        if not self.spec.taker_buy:
            raise PermanentDataError(f"{self.name} {market}: exchange gives no taker buy volume")
        tf_ms = timeframe_to_ms(timeframe)
        symbol, since_ms, until_ms = await self._since_until(
            market, since, until, tf_ms * self.spec.ohlcv_page
        )
        until_ms = min(until_ms, self.api.milliseconds() - tf_ms)
        if since_ms > until_ms:
            return self._rows_to_frame([], "taker_buy")
        since_ms = since_ms // tf_ms * tf_ms if since_ms % tf_ms else since_ms
        market_id = self.api.market(symbol)["id"]
        interval = self.api.timeframes.get(timeframe, timeframe)
        limit = self.spec.ohlcv_page

        async def page(cursor: int, window_end: int) -> list[tuple[int, list[float]]]:
            raw = await self.api.fapiPublicGetKlines(
                {
                    "symbol": market_id,
                    "interval": interval,
                    "startTime": cursor,
                    "endTime": window_end,
                    "limit": self._page_limit(limit, cursor, window_end, tf_ms),
                }
            )
            if not isinstance(raw, list):
                raise _Malformed(f"{self.name} {symbol} klines: expected a list, got {raw!r:.80}")
            out = []
            for k in raw:
                if not isinstance(k, list) or len(k) < 11:
                    raise _Malformed(f"{self.name} {symbol} klines: bad row {k!r:.80}")
                out.append((int(k[0]), [float(k[9]), float(k[10])]))
            return out

        rows = await self._paginate(
            f"taker buy {timeframe}",
            symbol,
            page,
            since_ms,
            until_ms,
            self._ohlcv_window(limit * tf_ms, since_ms, until_ms),
            tf_ms,
        )
        return self._rows_to_frame(rows, "taker_buy")

    # -- open interest --------------------------------------------------------------------------
    async def _stats_window(
        self, market: str, timeframe: str, since: int | None, until: int | None, accepts: str
    ) -> tuple[int, str, int, int]:
        """``(bar ms, symbol, since ms, until ms)`` of a request to the open-interest statistics
        endpoint (OI history, and the liquidation bars it also serves), paged as that endpoint
        pages; ``timeframe`` must be one it serves (``accepts`` names what, for the error)."""
        if timeframe not in self.spec.oi_timeframes:
            raise ConfigError(
                f"timeframe: {self.name} {accepts} "
                f"{', '.join(self.spec.oi_timeframes)}, got {timeframe!r}"
            )
        tf_ms = timeframe_to_ms(timeframe)
        symbol, since_ms, until_ms = await self._since_until(
            market, since, until, tf_ms * self.spec.oi_page
        )
        return tf_ms, symbol, since_ms, until_ms

    async def fetch_open_interest_history(
        self, market: str, timeframe: str, since: int | None = None, until: int | None = None
    ) -> pd.DataFrame:
        """OI history as ``date, open_interest_amount, open_interest_value`` (either may be NaN).

        ``timeframe`` must be one the exchange accepts (see :meth:`oi_timeframe`).
        """
        if not self.has("fetchOpenInterestHistory") or not self.spec.oi_timeframes:
            raise PermanentDataError(f"{self.name} {market}: no open interest history endpoint")
        tf_ms, symbol, since_ms, until_ms = await self._stats_window(
            market, timeframe, since, until, "open interest history accepts"
        )
        if self.history_limits and self.spec.oi_days is not None:
            floor = self.api.milliseconds() - self.spec.oi_days * 86_400_000 + 3_600_000
            since_ms = max(since_ms, floor)
        if since_ms > until_ms:
            return self._rows_to_frame([], "open_interest")
        since_ms = math.ceil(since_ms / tf_ms) * tf_ms

        def parse(raw: Any, what: str) -> list[tuple[int, list[float]]]:
            return self._oi_units(symbol, _parse_oi(raw, what, self.spec.oi_amount_in_contracts))

        rows = await self._stats_pages(
            "open interest", symbol, timeframe, tf_ms, (since_ms, until_ms), parse, newest=True
        )
        return self._rows_to_frame(rows, "open_interest")

    async def _stats_pages(
        self,
        kind: str,
        symbol: str,
        timeframe: str,
        tf_ms: int,
        window: tuple[int, int],
        parse: Callable[[Any, str], list[tuple[int, list[float]]]],
        *,
        newest: bool,
    ) -> list[tuple[int, list[float]]]:
        """The open-interest statistics endpoint's rows of ``kind`` over ``window`` (since,
        until; ms), page by page, each page parsed by ``parse(raw, what)``; ``newest``: the
        endpoint answers the newest rows of a window (``_paginate``'s ``limit``)."""
        limit = self.spec.oi_page
        what = f"{self.name} {symbol} {kind}"

        async def page(cursor: int, window_end: int) -> list[tuple[int, list[float]]]:
            raw = await self.api.fetch_open_interest_history(
                symbol, timeframe, cursor, limit, {"until": window_end}
            )
            self._check_parsed(what)
            return parse(raw, what)

        since_ms, until_ms = window
        return await self._paginate(
            f"{kind} {timeframe}",
            symbol,
            page,
            since_ms,
            until_ms,
            limit * tf_ms,
            tf_ms,
            limit if newest else None,
        )

    async def fetch_open_interest(self, market: str) -> pd.DataFrame:
        """Current open interest: one row ``date, open_interest_amount, open_interest_value``."""
        if not self.has("fetchOpenInterest"):
            raise PermanentDataError(f"{self.name} {market}: no current open interest endpoint")
        symbol = await self.symbol(market)

        async def one() -> list[tuple[int, list[float]]]:
            raw = await self.api.fetch_open_interest(symbol)
            self._check_parsed(f"{self.name} {symbol} open interest")
            if isinstance(raw, dict) and raw.get("timestamp") is None:
                raw = {**raw, "timestamp": self.api.milliseconds()}
            return self._oi_units(
                symbol,
                _parse_oi(
                    [raw], f"{self.name} {symbol} open interest", self.spec.oi_amount_in_contracts
                ),
            )

        rows = await self._call("open interest", symbol, one)
        return self._rows_to_frame(rows, "open_interest")

    # -- funding --------------------------------------------------------------------------------
    async def fetch_funding_rate_history(
        self, market: str, since: int | None = None, until: int | None = None
    ) -> pd.DataFrame:
        """Funding rates ``[since, until]`` as ``date, funding_rate``."""
        if not self.has("fetchFundingRateHistory"):
            raise PermanentDataError(f"{self.name} {market}: no funding rate history endpoint")
        symbol, since_ms, until_ms = await self._since_until(
            market,
            since,
            until,
            self.spec.funding_page * 3_600_000 * (self.spec.funding_window_h or 8),
        )
        limit = self.spec.funding_page
        window_h = self.spec.funding_window_h
        if self.spec.funding_by_page:
            return await self._funding_by_page(symbol, since_ms, until_ms, limit)

        async def page(cursor: int, window_end: int) -> list[tuple[int, list[float]]]:
            params: dict[str, Any] = {"until": window_end}
            if self.spec.ccxt_id == "okx":  # okx: records older than ``after`` (exclusive)
                params = {"after": window_end + 1}
            raw = await self.api.fetch_funding_rate_history(symbol, cursor, limit, params)
            self._check_parsed(f"{self.name} {symbol} funding")
            return _parse_funding(raw, f"{self.name} {symbol} funding")

        # without a window the endpoint answers the earliest ``limit`` rows from since on
        window_ms = (window_h or 8) * 3_600_000 * limit
        if window_h is None:
            window_ms = max(window_ms, until_ms - since_ms + 1)
        rows = await self._paginate(
            "funding rate",
            symbol,
            page,
            since_ms,
            until_ms,
            window_ms,
            1,
            None if window_h is None else limit,
        )
        return self._rows_to_frame(rows, "funding_rate")

    # -- realized liquidations --------------------------------------------------------------
    async def fetch_liquidation_bars(
        self, market: str, timeframe: str, since: int | None = None, until: int | None = None
    ) -> pd.DataFrame:
        """Per-bar liquidations the venue sums itself (Gate's contract_stats ``long_liq_usd``,
        ``short_liq_usd``) as ``date, long_liquidated_usd, short_liquidated_usd, events``
        (``events`` NaN: not counted by the venue). ``timeframe`` as for OI history."""
        if not self.spec.liq_bars:
            raise PermanentDataError(f"{self.name} {market}: no per-bar liquidation history")
        tf_ms, symbol, since_ms, until_ms = await self._stats_window(
            market, timeframe, since, until, "liquidation bars accept"
        )
        since_ms = math.ceil(since_ms / tf_ms) * tf_ms
        if since_ms > until_ms:
            return _liq_bars_frame([])
        # contract_stats answers the earliest ``limit`` rows from ``from`` on: no halving
        rows = await self._stats_pages(
            "liquidation bars",
            symbol,
            timeframe,
            tf_ms,
            (since_ms, until_ms),
            _parse_liq_bars,
            newest=False,
        )
        return _liq_bars_frame(rows)

    async def fetch_liquidations(
        self,
        market: str,
        since: int | None = None,
        until: int | None = None,
        covered_from_start: bool = False,
    ) -> LiquidationHistory:
        """Public liquidation orders ``[since, until]`` (ms) as liqsignal events, walking the
        venue's longest window forward; a full page halves the window (the venue answers the
        newest ``limit`` rows of a window), down to one second. Windows count as covered from
        the first one holding an event (the venue's history may begin later than ``since``),
        or from ``since`` with ``covered_from_start`` (events were seen before)."""
        window = self.spec.liq_window_ms
        if window is None or not self.has("fetchLiquidations"):
            raise PermanentDataError(
                f"{self.name} {market}: no public liquidation history through ccxt "
                "(stream it with liqsignal watch)"
            )
        symbol, since_ms, until_ms = await self._since_until(market, since, until, window)
        limit = self.spec.liq_page
        what = f"{self.name} {symbol} liquidations"
        frames: list[pd.DataFrame] = []
        result = LiquidationHistory(events=events_from_ccxt(self.name, [], symbol))
        cursor = since_ms // 1000 * 1000  # the venue counts whole seconds
        last = until_ms // 1000 * 1000
        width = window
        started = covered_from_start
        while cursor <= last:
            end = min(cursor + width - 1000, last)

            async def one(c: int = cursor, e: int = end) -> tuple[int, pd.DataFrame]:
                # ccxt 4.5 hands ``since`` to Gate's ``from`` in ms where Gate wants seconds:
                # the window goes in as params, in seconds
                raw = await self.api.fetch_liquidations(
                    symbol, None, limit, {"from": c // 1000, "to": e // 1000}
                )
                self._check_parsed(what)
                if not isinstance(raw, list):
                    raise _Malformed(f"{what}: expected a list, got {type(raw).__name__}")
                # a bad row raises InputError (a ValueError): malformed, retried by _call
                return len(raw), events_from_ccxt(self.name, raw, symbol, self.api.markets)

            n, events = await self._call("liquidations", symbol, one)
            if n >= limit and end > cursor:  # the newest ``limit`` only: ask half the window
                width = max(1000, (end - cursor + 1000) // 2000 * 1000)
                continue
            span = (cursor, end + 999)
            if n >= limit:
                logger.warning("%s: %d or more liquidations in one second at %d", what, n, cursor)
                result.incomplete.append(span)
            else:
                started = started or n > 0
                if started:
                    if result.covered and result.covered[-1][1] + 1 == cursor:
                        result.covered[-1] = (result.covered[-1][0], span[1])
                    else:
                        result.covered.append(span)
            if n:
                frames.append(events)
            cursor = end + 1000
            width = window
        if frames:
            result.events = pd.concat(frames, ignore_index=True)
        return result

    async def _funding_by_page(
        self, symbol: str, since_ms: int, until_ms: int, size: int
    ) -> pd.DataFrame:
        """Funding rows ``[since, until]`` of an endpoint paged newest first (``pageNo`` 1, 2,
        ...): pages are read until one holds a row older than ``since``, or is not full."""
        what = f"{self.name} {symbol} funding"
        rows: list[tuple[int, list[float]]] = []
        page_no = 1
        while True:

            async def one(n: int = page_no) -> list[tuple[int, list[float]]]:
                raw = await self.api.fetch_funding_rate_history(symbol, None, size, {"pageNo": n})
                self._check_parsed(what)
                return _parse_funding(raw, what)

            got = await self._call("funding rate", symbol, one)
            rows.extend(r for r in got if since_ms <= r[0] <= until_ms)
            if len(got) < size or min(r[0] for r in got) < since_ms:
                break
            page_no += 1
        return self._rows_to_frame(rows, "funding_rate")

    # -- leverage tiers -------------------------------------------------------------------------
    async def fetch_leverage_tiers(self, market: str) -> list[dict[str, Any]]:
        """ccxt leverage tiers of one market (``minNotional``, ``maxNotional``,
        ``maintenanceMarginRate``, ``maxLeverage``); PermanentDataError where not public."""
        symbol = await self.symbol(market)
        if self.has("fetchMarketLeverageTiers"):
            tiers = await self._call(
                "leverage tiers", symbol, self.api.fetch_market_leverage_tiers, symbol
            )
        elif self.has("fetchLeverageTiers"):
            all_tiers = await self._call(
                "leverage tiers", symbol, self.api.fetch_leverage_tiers, [symbol]
            )
            tiers = all_tiers.get(symbol, [])
        else:
            raise PermanentDataError(f"{self.name} {symbol}: no public leverage tiers")
        if not isinstance(tiers, list) or not tiers:
            raise PermanentDataError(f"{self.name} {symbol}: exchange returned no leverage tiers")
        return [
            {
                k: t.get(k)
                for k in (
                    "tier",
                    "minNotional",
                    "maxNotional",
                    "maintenanceMarginRate",
                    "maxLeverage",
                )
            }
            for t in tiers
        ]


def _rows_frame_fast(
    rows: list[tuple[int, list[float]]], columns: list[str]
) -> pd.DataFrame | None:
    """``_rows_to_frame`` in numpy for rows as the parsers give them (integer epoch-ms times
    within datetime64's range, one float per value column); None: anything else, which the
    pandas path handles (and reports) as before. About 0.1 ms instead of several for a page
    of a few rows."""
    if not rows:
        return None
    width = len(columns) - 1
    try:
        ts = np.array([r[0] for r in rows])
        vals = np.array([r[1] for r in rows], dtype=np.float64)
    except (TypeError, ValueError, OverflowError):
        return None
    if (
        ts.dtype != np.int64
        or vals.shape != (len(rows), width)
        or not ((ts > -_MS_LIMIT).all() and (ts < _MS_LIMIT).all())
    ):
        return None
    if len(ts) > 1 and not bool((ts[1:] > ts[:-1]).all()):
        # one row per date, the LAST one answered wins (drop_duplicates keep="last"), sorted
        rev = ts[::-1]
        _, first_in_rev = np.unique(rev, return_index=True)
        keep = len(ts) - 1 - first_in_rev  # np.unique sorts by date
        ts, vals = ts[keep], vals[keep]
    data: dict[str, Any] = {
        "date": pd.DatetimeIndex(ts.astype("datetime64[ms]")).tz_localize("UTC")
    }
    for k, c in enumerate(columns[1:]):
        data[c] = vals[:, k].copy()
    return pd.DataFrame(data)


#: epoch-ms bound of the fast path (well inside datetime64[ms] and pandas' Timestamp range)
_MS_LIMIT = 9_000_000_000_000  # ms: the year 2255


def _num(value: Any) -> float:
    if value is None:
        return math.nan
    try:
        return float(value)
    except (TypeError, ValueError) as e:
        raise _Malformed(f"not a number: {value!r:.40}") from e


def _ts(value: Any, what: str) -> int:
    if isinstance(value, bool) or not isinstance(value, int | float) or value != value:
        raise _Malformed(f"{what}: row without a timestamp: {value!r:.40}")
    return int(value)


def _parse_rows(raw: Any, width: int, what: str) -> list[tuple[int, list[float]]]:
    if not isinstance(raw, list):
        raise _Malformed(f"{what}: expected a list, got {type(raw).__name__}")
    out = []
    for row in raw:
        if not isinstance(row, list | tuple) or len(row) < width + 1:
            raise _Malformed(f"{what}: bad row {row!r:.80}")
        out.append((_ts(row[0], what), [_num(v) for v in row[1 : width + 1]]))
    return out


def _entries(raw: Any, what: str) -> Iterator[dict[str, Any]]:
    """The entries of ccxt's list of dicts ``raw``, in order; _Malformed at the first thing
    that is not."""
    if not isinstance(raw, list):
        raise _Malformed(f"{what}: expected a list, got {type(raw).__name__}")
    for item in raw:
        if not isinstance(item, dict):
            raise _Malformed(f"{what}: bad entry {item!r:.80}")
        yield item


def _parse_oi(raw: Any, what: str, base_first: bool = False) -> list[tuple[int, list[float]]]:
    out = []
    for item in _entries(raw, what):
        keys = ("baseVolume", "openInterestAmount")
        amount = item.get(keys[0] if base_first else keys[1])
        if amount is None:
            amount = item.get(keys[1] if base_first else keys[0])
        value = item.get("openInterestValue")
        if value is None:
            value = item.get("quoteVolume")
        out.append((_ts(item.get("timestamp"), what), [_num(amount), _num(value)]))
    return out


def _parse_funding(raw: Any, what: str) -> list[tuple[int, list[float]]]:
    return [
        (_ts(item.get("timestamp"), what), [_num(item.get("fundingRate"))])
        for item in _entries(raw, what)
    ]


def _parse_liq_bars(raw: Any, what: str) -> list[tuple[int, list[float]]]:
    """Gate contract_stats rows (through ccxt's OI history) as (ts, [long USD, short USD])."""
    if not isinstance(raw, list):
        raise _Malformed(f"{what}: expected a list, got {type(raw).__name__}")
    out = []
    for item in raw:
        info = item.get("info") if isinstance(item, dict) else None
        if not isinstance(info, dict):
            raise _Malformed(f"{what}: entry without info: {item!r:.80}")
        out.append(
            (
                _ts(item.get("timestamp"), what),
                [_num(info.get("long_liq_usd")), _num(info.get("short_liq_usd"))],
            )
        )
    return out


def _liq_bars_frame(rows: list[tuple[int, list[float]]]) -> pd.DataFrame:
    df = pd.DataFrame(
        [[ts, *vals, math.nan] for ts, vals in rows],
        columns=BAR_COLUMNS,
    )
    df = df.drop_duplicates(subset="date", keep="last").sort_values("date")
    df["date"] = pd.to_datetime(df["date"].astype("int64"), unit="ms", utc=True).dt.as_unit("ms")
    for col in BAR_COLUMNS[1:]:
        df[col] = df[col].astype("float64")
    return df.reset_index(drop=True)
