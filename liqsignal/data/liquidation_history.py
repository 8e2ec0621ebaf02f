"""Realized-liquidation history jobs of ``liqsignal download --liquidations``.

Two job types run beside the candle jobs of :mod:`liqsignal.data.download`:

- ``liquidations`` (once per market): per-bar long/short liquidation USD the venue sums itself
  (Gate's ``contract_stats``) at the venue's finest interval (Gate: 5m; the store sums them
  into coarser bars, a bar only when all of its 5-minute bars are known, so nothing depends on
  how the venue aggregates its coarser intervals), merged into ``<PAIR>-5m-liquidations.feather``
  with :meth:`LiquidationStore.write_bars`;
- ``liquidation_events`` (once per market): public liquidation orders (``fetch_liquidations``:
  Gate's ``liq_orders``) appended as events, the windows read completely recorded as covered,
  the ones cut off (every page full) as gaps.

Each job resumes after what is stored (the last bar; the end of the covered span) and writes
after every chunk, so an interrupted run keeps what it fetched. A venue that serves neither is
``skipped`` with a message saying how to get realized liquidations there (``liqsignal watch``).
"""

from __future__ import annotations

import logging
import time
from typing import NamedTuple

import pandas as pd

from liqsignal.data.exchanges import ExchangeClient, timeframe_to_ms
from liqsignal.data.jobs import JobResult
from liqsignal.data.liquidations import LiquidationStore
from liqsignal.exceptions import ConfigError, DataError

__all__ = ["LIQUIDATION_TYPES", "run_liquidation_job"]

logger = logging.getLogger(__name__)

LIQUIDATION_TYPES = ("liquidations", "liquidation_events")
EVENTS_TF = "-"  # the events job has no timeframe
CHUNK_PAGES = 20


class _Job(NamedTuple):
    """What a liquidation job works on: the client, the store, its result, the venue's symbol
    and the span ``[since_ms, end]`` (ms)."""

    client: ExchangeClient
    store: LiquidationStore
    res: JobResult
    symbol: str
    since_ms: int
    end: int


async def run_liquidation_job(
    client: ExchangeClient,
    datadir: str,
    market: str,
    timeframe: str,
    candle_type: str,
    since_ms: int,
    until_ms: int | None,
) -> JobResult:
    """One liquidation job; failures are reported in the result, never raised."""
    res = JobResult(client.name, market, timeframe, candle_type, "ok")
    store = LiquidationStore(datadir)
    try:
        symbol = res.symbol = await client.symbol(market)
        end = until_ms if until_ms is not None else int(time.time() * 1000)
        if candle_type == "liquidations":
            await _bars_job(_Job(client, store, res, symbol, since_ms, end))
        elif candle_type == "liquidation_events":
            await _events_job(_Job(client, store, res, symbol, since_ms, end))
        else:
            raise ConfigError(f"candle_type: not a liquidation type: {candle_type!r}")
    except (DataError, ConfigError) as e:
        res.status = "failed"
        kept = f" ({res.rows_added} rows stored before)" if res.rows_added else ""
        res.message = f"{type(e).__name__}: {e}{kept}"
        logger.warning("download %s %s %s failed: %s", client.name, market, candle_type, e)
    except Exception as e:  # a bug must fail this job only
        res.status = "failed"
        res.message = f"unexpected {type(e).__name__}: {e}"
        logger.exception("download %s %s %s failed unexpectedly", client.name, market, candle_type)
    return res


async def _bars_job(job: _Job) -> None:
    client, store, res, symbol, since_ms, end = job
    if not client.spec.liq_bars:
        res.status = "skipped"
        res.message = f"{client.name} sums no liquidations per bar (stream them: liqsignal watch)"
        return
    if not client.spec.oi_timeframes:
        res.status = "skipped"
        res.message = f"no per-bar liquidation intervals known on {client.name}"
        return
    if res.timeframe == EVENTS_TF:  # not asked: the finest, coarser bars are summed from it
        res.timeframe = min(client.spec.oi_timeframes, key=timeframe_to_ms)
    elif res.timeframe not in client.spec.oi_timeframes:
        raise ConfigError(
            f"--liquidation-timeframe: {client.name} sums liquidations per "
            f"{', '.join(client.spec.oi_timeframes)}, got {res.timeframe!r}"
        )
    tf = res.timeframe
    tf_ms = timeframe_to_ms(tf)
    stored = store.read_bar_file(client.name, symbol, tf)
    start = since_ms
    if len(stored):
        start = max(start, int(stored["date"].iloc[-1].value // 1_000_000) + tf_ms)
    end = min(end, client.api.milliseconds() - tf_ms)  # the open bar is still summing
    res.path = store.bars_path(client.name, symbol, tf)
    if start > end:
        res.message = "up to date"
        res.rows_total = len(stored)
        return
    span = CHUNK_PAGES * client.spec.oi_page * tf_ms
    chunk = start
    while chunk <= end:
        chunk_end = min(chunk + span - 1, end)
        bars = await client.fetch_liquidation_bars(symbol, tf, chunk, chunk_end)
        merged = store.write_bars(client.name, symbol, tf, bars)
        res.rows_fetched += len(bars)
        res.rows_added += merged.rows_added
        res.rows_total = merged.rows_after
        chunk = chunk_end + 1
    if res.rows_fetched == 0:
        res.message = "no new rows"


async def _events_job(job: _Job) -> None:
    client, store, res, symbol, since_ms, end = job
    if client.spec.liq_window_ms is None or not client.has("fetchLiquidations"):
        res.status = "skipped"
        res.message = (
            f"{client.name} serves no public liquidation history (stream it: liqsignal watch)"
        )
        return
    spans = store.spans(client.name, symbol)
    covered = spans[spans["kind"] == "covered"]
    start = since_ms
    if len(covered):  # resume after the covered span that reaches furthest
        last_end = int(covered["end"].max().value // 1_000_000)
        if last_end >= since_ms:
            start = max(start, last_end + 1)
    res.path = store.events_path(client.name, symbol)
    if start > end:
        res.message = "up to date"
        res.rows_total = len(store.read_events(client.name, symbol))
        return
    span = CHUNK_PAGES * client.spec.liq_window_ms
    chunk = start
    incomplete = 0
    seen = len(covered) > 0 or len(store.read_events(client.name, symbol)) > 0
    while chunk <= end:
        chunk_end = min(chunk + span - 1, end)
        hist = await client.fetch_liquidations(symbol, chunk, chunk_end, covered_from_start=seen)
        seen = seen or len(hist.events) > 0
        res.rows_fetched += len(hist.events)
        res.rows_added += store.append_events(client.name, hist.events)
        for a, b in hist.covered:
            store.record_coverage(client.name, symbol, a, b + 1)
        for a, b in hist.incomplete:
            store.record_gap(client.name, symbol, a, b)  # closed: the second's last ms
            res.gaps.append((a, b))
            incomplete += 1
        chunk = chunk_end + 1
    res.rows_total = len(store.read_events(client.name, symbol))
    if incomplete:
        res.message = (
            f"{incomplete} window(s) with more liquidations than one page at the venue's "
            "smallest window (Gate: a second), recorded as gaps, "
            f"first at {pd.Timestamp(res.gaps[0][0], unit='ms', tz='UTC')}"
        )
    elif res.rows_fetched == 0:
        res.message = "no liquidations in the window (recorded as covered once one is seen)"
