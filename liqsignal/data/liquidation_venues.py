"""Venues liqsignal reads only realized-liquidation HISTORY from (not candles, OI or funding):
Bitfinex and HTX through ccxt's ``fetch_liquidations``; Deribit is named and refused.

:data:`HISTORY_VENUES` says per venue what its endpoint is, how markets are spelt, the page size,
the window of one request, how pages are walked and what ccxt's ``side`` means there.
:class:`HistoryClient` is an :class:`~liqsignal.data.exchanges.ExchangeClient` for one of them
(the same retries, rate limiter and market names; its ``spec`` carries only the liquidation
fields, so it is not in :data:`~liqsignal.data.exchanges.EXCHANGES` and no candle job runs on
it), whose :meth:`HistoryClient.fetch_liquidations` returns the same
:class:`~liqsignal.data.exchanges.LiquidationHistory` as Gate's, so the ``liquidation_events``
job of :mod:`liqsignal.data.liquidation_history` runs on it unchanged.
:func:`download_history` runs those jobs for ``liqsignal download --exchanges bitfinex htx
--liquidations``.

Paging, per venue:

- **bitfinex** (``GET /v2/liquidations/hist``): one feed for ALL markets (ccxt filters the one
  asked), read oldest first (``sort=1``) in pages of 500 from a cursor: a full page moves the
  cursor to its last entry's time, which is read again (an entry at that millisecond may have
  been cut off), and entries already seen are dropped by their position id. Bitfinex lists a
  liquidation's trigger (IS_MATCH 0) and may list its market execution (IS_MATCH 1) under the
  same position id: one event per position id is kept, the first (the trigger).
- **htx** (``GET /v5/market/liquidation_orders``): per contract, windows ``[start_time,
  end_time]`` of at most one hour, 100 rows asked; which rows of a window a full page holds is
  not documented, so a full page halves the window (down to 1 ms, then recorded as
  incomplete), whichever end the venue cut.

Windows answered completely are ``covered`` from the first one holding an entry on (the venue
may keep no history that far back), full pages that cannot be split are ``incomplete``: the
job records them as covered spans and gaps in the liquidation store.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

import ccxt
import ccxt.async_support as ccxt_async
import pandas as pd

from liqsignal.data.exchanges import (
    ClientStats,
    ExchangeClient,
    ExchangeSpec,
    LiquidationHistory,
    RetryPolicy,
    _deep_merge,
    _Malformed,
)
from liqsignal.data.jobs import JobResult
from liqsignal.data.liquidation_history import LIQUIDATION_TYPES, run_liquidation_job
from liqsignal.data.liquidations import NO_SIDE, events_from_ccxt
from liqsignal.exceptions import ConfigError, DataError

__all__ = [
    "HISTORY_VENUES",
    "HistoryClient",
    "HistoryDownload",
    "HistoryVenue",
    "download_history",
]

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class HistoryVenue:
    """One venue's public liquidation history as ccxt 4.5 reaches it."""

    ccxt_id: str
    endpoint: str  # what ccxt's fetch_liquidations calls (for messages and docs)
    settles: tuple[str, ...]  # settle currencies of the linear perpetuals, preferred first
    symbol_form: str  # the venue's market id of BTC/USDT:USDT
    page: int  # rows asked per request
    window_ms: int  # longest window of one request (bitfinex: the job's write unit)
    #: "forward": pages oldest first from a cursor; "window": the rows of a [start, end]
    #: window, a full page halves it
    paging: str
    #: what ccxt's unified ``side`` is there, and what liqsignal reads instead
    side: str
    depth: str  # how far back the venue serves (as documented, or "not documented")
    options: Mapping[str, Any] = field(default_factory=dict)  # ccxt options merged in
    params: Mapping[str, Any] = field(default_factory=dict)  # sent with every request
    #: the feed holds every market (the page size counts them all)
    all_markets: bool = False
    #: ccxt's blank base amount is rebuilt as contracts x contract size
    base_from_contracts: bool = False
    #: why liqsignal refuses this venue's history (None: served)
    refused: str | None = None


HISTORY_VENUES: dict[str, HistoryVenue] = {
    "bitfinex": HistoryVenue(
        "bitfinex",
        "GET /v2/liquidations/hist",
        ("USDT",),
        "tBTCF0:USTF0",
        page=500,
        window_ms=8 * 3_600_000,
        paging="forward",
        side="ccxt's side is the IS_MATCH flag (buy = a market execution), not a direction; "
        "the sign of the position amount (info[5]) is: > 0 a long liquidated, < 0 a short",
        depth="not documented",
        params={"sort": 1},
        all_markets=True,
    ),
    "htx": HistoryVenue(
        "htx",
        "GET /v5/market/liquidation_orders",
        ("USDT",),
        "BTC-USDT",
        page=100,
        window_ms=3_600_000,
        paging="window",
        side="ccxt's side is the forced ORDER's side (sell = a long liquidated); "
        "position_side names the position and wins when given",
        depth="not documented",
        options={
            "fetchMarkets": {"types": {"spot": False, "linear": True, "inverse": False}},
            "defaultType": "swap",
        },
        base_from_contracts=True,
    ),
    "deribit": HistoryVenue(
        "deribit",
        "GET /api/v2/public/get_last_settlements_by_instrument (type=bankruptcy)",
        ("USDC",),
        "BTC_USDC-PERPETUAL",
        page=0,
        window_ms=0,
        paging="none",
        side="none: ccxt returns settlement records without side or price",
        depth="-",
        refused=NO_SIDE["deribit"],
    ),
}


class HistoryClient(ExchangeClient):
    """An :class:`ExchangeClient` for a venue of :data:`HISTORY_VENUES` (liquidation history
    only). Requests run one at a time: the paging reads the raw page ccxt received
    (``last_json_response``), which must be this request's."""

    def __init__(
        self,
        name: str,
        config: Mapping[str, Any] | None = None,
        retry: RetryPolicy | None = None,
    ) -> None:
        venue = HISTORY_VENUES.get(name)
        if venue is None:
            raise ConfigError(
                f"exchange: expected one of {', '.join(HISTORY_VENUES)} for liquidation "
                f"history, got {name!r}"
            )
        if venue.refused:
            raise ConfigError(f"{name}: liquidation history refused: {venue.refused}")
        self.name = name
        self.venue = venue
        self.spec = ExchangeSpec(
            venue.ccxt_id,
            venue.settles,
            ohlcv_page=0,
            oi_timeframes=(),
            oi_page=0,
            oi_days=None,
            funding_page=0,
            funding_window_h=None,
            options=venue.options,
            liq_window_ms=venue.window_ms,
            liq_page=venue.page,
        )
        self.retry = retry or RetryPolicy()
        self.history_limits = False
        self.stats = ClientStats()
        settings: dict[str, Any] = {
            "enableRateLimit": True,
            "enableLastJsonResponse": True,
            "options": dict(venue.options),
        }
        settings = _deep_merge(settings, config or {})
        settings["enableRateLimit"] = True
        self.api: Any = getattr(ccxt_async, venue.ccxt_id)(settings)
        self._sem = asyncio.Semaphore(1)
        self._markets_loaded = False

    @property
    def what(self) -> str:
        return f"liquidation history ({self.venue.endpoint})"

    async def fetch_liquidations(
        self,
        market: str,
        since: int | None = None,
        until: int | None = None,
        covered_from_start: bool = False,
    ) -> LiquidationHistory:
        """Public liquidations ``[since, until]`` (ms) of one market as liqsignal events, every
        page of the venue read (see the module docstring); a venue error raises
        PermanentDataError naming the venue, the market and the endpoint."""
        symbol, since_ms, until_ms = await self._since_until(
            market, since, until, self.venue.window_ms
        )
        if self.venue.paging == "forward":
            return await self._forward(symbol, since_ms, until_ms, covered_from_start)
        return await self._windows(symbol, since_ms, until_ms, covered_from_start)

    # -- one request ------------------------------------------------------------------------------
    async def _page(self, symbol: str, start: int, end: int) -> tuple[list[Any], pd.DataFrame]:
        """The raw entries of one answer and the market's events in it (retried, translated)."""

        async def one() -> tuple[list[Any], pd.DataFrame]:
            params = {**self.venue.params, "until": end}
            parsed = await self.api.fetch_liquidations(symbol, start, self.venue.page, params)
            self._check_parsed(f"{self.name} {symbol} {self.what}")
            raw = self._raw_entries()
            if not isinstance(parsed, list):
                raise _Malformed(f"{self.what}: expected a list, got {type(parsed).__name__}")
            if self.venue.base_from_contracts:
                # ccxt 4.5 takes HTX's ``amount`` as the base amount; in the documented answer it
                # equals ``volume`` (contracts): contracts x contract size it is
                parsed = [{**p, "baseValue": None} for p in parsed]
            # a bad row raises InputError (a ValueError): malformed, retried by _call
            return raw, events_from_ccxt(self.name, parsed, symbol, self.api.markets)

        return await self._call(self.what, symbol, one)

    def _raw_entries(self) -> list[Any]:
        body = self.api.last_json_response
        if self.venue.ccxt_id == "htx":
            if not isinstance(body, dict):
                raise _Malformed(f"{self.what}: expected a JSON object, got {body!r:.60}")
            code = body.get("code")
            if code is not None and str(code) != "200":
                # ccxt 4.5 raises only for codes it knows and otherwise returns no rows
                raise ccxt.ExchangeError(
                    f"htx {self.venue.endpoint} answered code {code}: "
                    f"{body.get('message') or body.get('msg') or ''}"
                )
            data = body.get("data")
            if data is None:  # as ccxt reads it: no rows
                return []
            if not isinstance(data, list):
                raise _Malformed(f"{self.what}: 'data' is not a list: {body!r:.80}")
            return data
        if not isinstance(body, list):
            raise _Malformed(f"{self.what}: expected a JSON list, got {body!r:.60}")
        return body

    # -- bitfinex: pages oldest first from a cursor ---------------------------------------------
    async def _forward(
        self, symbol: str, since_ms: int, until_ms: int, started: bool
    ) -> LiquidationHistory:
        pages = _Pages(LiquidationHistory(events=events_from_ccxt(self.name, [], symbol)))
        result = pages.result
        cursor = since_ms
        while cursor <= until_ms:
            raw, events = await self._page(symbol, cursor, until_ms)
            times = [_bitfinex_ts(r, self.what) for r in raw]
            full = len(raw) >= self.venue.page
            first = cursor
            if not started and times:
                first = max(cursor, min(times))  # before it the venue may keep nothing
            started = started or bool(times)
            pages.add(events)
            if not full:
                if started:
                    _add_span(result.covered, first, until_ms)
                break
            last = max(times)
            if last <= cursor:  # a whole page at one millisecond: the rest of it is lost
                logger.warning("%s %s: %d or more entries at %d", self.name, symbol, len(raw), last)
                result.incomplete.append((cursor, cursor))
                cursor += 1
                continue
            if started:
                _add_span(result.covered, first, last - 1)
            cursor = last  # read that millisecond again: the page may have cut it
        return pages.done()

    # -- htx: windows, halved when full ----------------------------------------------------------
    async def _windows(
        self, symbol: str, since_ms: int, until_ms: int, started: bool
    ) -> LiquidationHistory:
        pages = _Pages(LiquidationHistory(events=events_from_ccxt(self.name, [], symbol)))
        result = pages.result
        cursor = since_ms
        width = self.venue.window_ms
        while cursor <= until_ms:
            end = min(cursor + width - 1, until_ms)
            raw, events = await self._page(symbol, cursor, end)
            n = len(raw)
            if n >= self.venue.page and end > cursor:
                width = max(1, (end - cursor + 1) // 2)
                continue
            if n >= self.venue.page:
                logger.warning("%s %s: %d or more liquidations at %d", self.name, symbol, n, cursor)
                result.incomplete.append((cursor, end))
                started = True
            else:
                started = started or n > 0
                if started:
                    _add_span(result.covered, cursor, end)
            pages.add(events)
            cursor = end + 1
            width = self.venue.window_ms
        return pages.done()


@dataclass
class _Pages:
    """What one paged read collects: each venue id's event once, and the result's spans."""

    result: LiquidationHistory
    frames: list[pd.DataFrame] = field(default_factory=list)
    seen: set[str] = field(default_factory=set)

    def add(self, events: pd.DataFrame) -> None:
        if len(events):
            self.frames.append(_unseen(events, self.seen))

    def done(self) -> LiquidationHistory:
        if self.frames:
            self.result.events = pd.concat(self.frames, ignore_index=True)
        return self.result


def _unseen(events: pd.DataFrame, seen: set[str]) -> pd.DataFrame:
    """The events whose venue id was not seen before (the first of each id in ``events``);
    events without an id are all kept (the store drops equal ones). Adds the ids to ``seen``."""
    ids = events["id"]
    keep = (ids == "") | (~ids.isin(seen) & ~ids.duplicated())
    seen.update(i for i in ids if i)
    return events[keep.to_numpy()]


def _bitfinex_ts(entry: Any, what: str) -> int:
    """MTS of one ``[["pos", id, MTS, ...]]`` entry."""
    row = entry[0] if isinstance(entry, list) and entry and isinstance(entry[0], list) else None
    ts = row[2] if row is not None and len(row) > 2 else None
    if isinstance(ts, bool) or not isinstance(ts, int):
        raise _Malformed(f"{what}: entry without a millisecond time: {entry!r:.80}")
    return ts


def _add_span(spans: list[tuple[int, int]], start: int, end: int) -> None:
    """Append the closed span ``[start, end]``, joined to the last one when they touch."""
    if end < start:
        return
    if spans and spans[-1][1] + 1 >= start:
        spans[-1] = (spans[-1][0], max(spans[-1][1], end))
    else:
        spans.append((start, end))


# -- download ------------------------------------------------------------------------------------
@dataclass
class HistoryDownload:
    """Jobs of the history venues, with request counters per venue."""

    results: list[JobResult] = field(default_factory=list)
    requests: dict[str, int] = field(default_factory=dict)
    retries: dict[str, int] = field(default_factory=dict)


def _skip(venue: str, market: str, ct: str, why: str) -> JobResult:
    return JobResult(venue, market, "-", ct, "skipped", message=why)


async def _venue_jobs(
    name: str,
    markets: list[str],
    candle_types: list[str],
    since_ms: int,
    until_ms: int | None,
    datadir: str,
    config: Mapping[str, Any] | None,
    retry: RetryPolicy | None,
    out: HistoryDownload,
) -> list[JobResult]:
    venue = HISTORY_VENUES[name]
    plan = [(m, ct) for m in markets for ct in candle_types]
    if venue.refused:
        return [
            _skip(name, m, ct, f"liquidation history refused: {venue.refused}") for m, ct in plan
        ]
    client = HistoryClient(name, config, retry)
    results: list[JobResult] = []
    try:
        try:
            await client.load_markets()
        except DataError as e:
            return [
                JobResult(name, m, "-", ct, "failed", message=f"{type(e).__name__}: {e}")
                for m, ct in plan
            ]
        for m, ct in plan:
            if ct == "liquidation_events":
                results.append(
                    await run_liquidation_job(client, datadir, m, "-", ct, since_ms, until_ms)
                )
            elif ct == "liquidations":
                results.append(
                    _skip(
                        name,
                        m,
                        ct,
                        f"{name} sums no liquidations per bar (the store sums "
                        "its liquidation_events into bars)",
                    )
                )
            else:
                results.append(
                    _skip(
                        name,
                        m,
                        ct,
                        f"{name}: liqsignal reads only its liquidation history (--liquidations)",
                    )
                )
    finally:
        out.requests[name] = client.stats.calls
        out.retries[name] = client.stats.retries
        await client.close()
    return results


async def download_history(
    markets: Iterable[str],
    venues: Iterable[str],
    since_ms: int,
    until_ms: int | None,
    datadir: str,
    candle_types: Iterable[str] = LIQUIDATION_TYPES,
    exchange_config: Mapping[str, Mapping[str, Any]] | None = None,
    retry: RetryPolicy | None = None,
) -> HistoryDownload:
    """Run the liquidation jobs of ``markets`` on the history ``venues`` at once (a venue that
    fails, e.g. cannot load its markets, fails its own jobs only) into the liquidation store
    under ``datadir``. Jobs of other candle types are ``skipped`` (saying why)."""
    names = list(dict.fromkeys(venues))
    for n in names:
        if n not in HISTORY_VENUES:
            raise ConfigError(
                f"exchanges: {n!r} is not a liquidation history venue; known: "
                f"{', '.join(HISTORY_VENUES)}"
            )
    cfg = exchange_config or {}
    out = HistoryDownload()
    per = await asyncio.gather(
        *(
            _venue_jobs(
                n,
                list(markets),
                list(candle_types),
                since_ms,
                until_ms,
                datadir,
                cfg.get(n),
                retry,
                out,
            )
            for n in names
        )
    )
    for results in per:
        out.results.extend(results)
    return out
