"""Download many markets from many exchanges into the Freqtrade-layout store, resumably.

``download(["BTC", "ETH"], ["binance", "bybit"], ["1h"], since="2026-01-01", datadir=...)`` runs
one job per (exchange, market, timeframe, candle type), at most ``max_jobs`` at a time (and at most
``max_concurrency`` requests per exchange), each starting after what is already stored. A job that
fails (unknown market, delisted, retries exhausted, corrupt file) is reported in the summary and
the others carry on; nothing stored is lost: a job merges its rows into the file every
``chunk_pages`` pages, so an interrupted job keeps what it had and the next run resumes after it.
Funding rates and mark candles are stored at 1h, the timeframe Freqtrade 2026.9 reads them at.
``add_download_arguments`` / ``run_download`` are the ``liqsignal download`` command.
"""

from __future__ import annotations

import argparse
import asyncio
import dataclasses
import json
import logging
import sys
import time
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any

import pandas as pd

from liqsignal.data import add_datadir_argument
from liqsignal.data.exchanges import EXCHANGES, ExchangeClient, RetryPolicy, timeframe_to_ms
from liqsignal.data.jobs import JobResult
from liqsignal.data.liquidation_history import LIQUIDATION_TYPES, run_liquidation_job
from liqsignal.data.store import FeatherStore
from liqsignal.exceptions import ConfigError, DataError, LiqsignalError

__all__ = [
    "DEFAULT_CANDLE_TYPES",
    "DownloadSummary",
    "JobResult",
    "add_download_arguments",
    "download",
    "download_async",
    "run_download",
]

logger = logging.getLogger(__name__)

DEFAULT_CANDLE_TYPES = ("futures", "mark", "funding_rate", "open_interest", "taker_buy")
FUNDING_TF = "1h"  # Freqtrade's funding_fee_timeframe and mark_ohlcv_timeframe
MARK_TF = "1h"


@dataclass
class DownloadSummary:
    """What a download run did, job by job, with request counters per exchange."""

    results: list[JobResult] = field(default_factory=list)
    elapsed_s: float = 0.0
    requests: dict[str, int] = field(default_factory=dict)
    retries: dict[str, int] = field(default_factory=dict)

    @property
    def failed(self) -> list[JobResult]:
        return [r for r in self.results if r.status == "failed"]

    @property
    def ok(self) -> bool:
        return not self.failed

    def rows_added(self) -> int:
        return sum(r.rows_added for r in self.results)

    def to_dict(self) -> dict[str, Any]:
        """The summary as plain JSON-ready values (for ``liqsignal download --json``)."""
        jobs = []
        for r in self.results:
            d = dataclasses.asdict(r)
            d["path"] = str(r.path) if r.path is not None else None
            d["gaps"] = [list(g) for g in r.gaps]
            jobs.append(d)
        return {
            "ok": self.ok,
            "jobs": jobs,
            "failed": len(self.failed),
            "rows_added": self.rows_added(),
            "requests": dict(self.requests),
            "retries": dict(self.retries),
            "elapsed_s": round(self.elapsed_s, 3),
        }

    def table(self) -> str:
        lines = [
            f"{'exchange':<12}{'market':<16}{'tf':<5}{'type':<19}{'status':<9}"
            f"{'added':>8}{'total':>9}  message"
        ]
        for r in self.results:
            lines.append(
                f"{r.exchange:<12}{(r.symbol or r.market):<16}{r.timeframe:<5}{r.candle_type:<19}"
                f"{r.status:<9}{r.rows_added:>8}{r.rows_total:>9}  {r.message}"
            )
        lines.append(
            f"{len(self.results)} jobs, {len(self.failed)} failed, {self.rows_added()} rows added, "
            f"{sum(self.requests.values())} requests, {sum(self.retries.values())} retries, "
            f"{self.elapsed_s:.1f}s"
        )
        return "\n".join(lines)


def loopback_config(config: Mapping[str, Any] | None) -> bool:
    """Whether a ccxt config sends every URL it sets to this machine (127.0.0.1, localhost,
    ::1), as the replay's overlay does; False when it sets none."""
    urls: list[str] = []

    def walk(v: Any) -> None:
        if isinstance(v, str) and "://" in v:
            urls.append(v)
        elif isinstance(v, Mapping):
            for x in v.values():
                walk(x)

    walk((config or {}).get("urls"))
    hosts = {u.split("://", 1)[1].split("/", 1)[0].rsplit(":", 1)[0] for u in urls}
    return bool(hosts) and hosts <= {"127.0.0.1", "localhost", "[::1]"}


def _to_ms(value: str | int | float | datetime | pd.Timestamp | None, what: str) -> int | None:
    """Epoch ms from a date, an ISO string, epoch ms, or a relative ``30d`` / ``12h`` (ago)."""
    if value is None:
        return None
    if isinstance(value, bool):
        raise ConfigError(f"{what}: expected a date, got {value!r}")
    if isinstance(value, int | float):
        return int(value)
    if isinstance(value, str) and value[:-1].isdigit() and value[-1:] in "mhdw":
        return int(time.time() * 1000) - timeframe_to_ms(value)
    try:
        ts = pd.Timestamp(value)
    except (ValueError, TypeError) as e:
        raise ConfigError(f"{what}: expected a date like 2026-01-01 or 30d, got {value!r}") from e
    if ts is pd.NaT:
        raise ConfigError(f"{what}: expected a date, got {value!r}")
    ts = ts.tz_localize("UTC") if ts.tzinfo is None else ts.tz_convert("UTC")
    return int(ts.value // 1_000_000)


@dataclass(frozen=True)
class _Job:
    exchange: str
    market: str
    timeframe: str
    candle_type: str


def _plan(
    markets: Sequence[str],
    timeframes: Sequence[str],
    candle_types: Sequence[str],
    liquidation_timeframe: str | None = None,
) -> list[tuple[str, str, str]]:
    """(market, timeframe, candle_type) per exchange; funding and mark once per market at 1h."""
    plan: list[tuple[str, str, str]] = []
    for market in markets:
        for ct in candle_types:
            if ct == "funding_rate":
                plan.append((market, FUNDING_TF, ct))
            elif ct == "mark":
                plan.append((market, MARK_TF, ct))
            elif ct == "liquidations":  # once per market, the venue's finest bars by default
                plan.append((market, liquidation_timeframe or "-", ct))
            elif ct == "liquidation_events":  # one file per market, no timeframe
                plan.append((market, "-", ct))
            else:
                plan.extend((market, tf, ct) for tf in timeframes)
    return list(dict.fromkeys(plan))


async def _run_job(
    client: ExchangeClient,
    store: FeatherStore,
    job: _Job,
    since_ms: int,
    until_ms: int | None,
    chunk_pages: int,
) -> JobResult:
    if job.candle_type in LIQUIDATION_TYPES:
        return await run_liquidation_job(
            client,
            str(store.datadir),
            job.market,
            job.timeframe,
            job.candle_type,
            since_ms,
            until_ms,
        )
    res = JobResult(job.exchange, job.market, job.timeframe, job.candle_type, "ok")
    try:
        symbol = await client.symbol(job.market)
        res.symbol = symbol
        tf = job.timeframe
        ct = job.candle_type
        if ct == "open_interest":
            oi_tf = client.oi_timeframe(tf)
            if oi_tf is None:
                res.status = "skipped"
                res.message = f"no open interest history at {tf} on {client.name}"
                return res
            tf = res.timeframe = oi_tf
        if ct == "taker_buy" and not client.has("takerBuyVolume"):
            res.status = "skipped"
            res.message = f"{client.name} gives no taker buy volume"
            return res
        if ct == "funding_rate" and not client.has("fetchFundingRateHistory"):
            res.status = "skipped"
            res.message = f"{client.name} has no funding rate history"
            return res
        if ct == "open_interest" and client.history_limits and client.spec.oi_days is not None:
            floor_ms = int(time.time() * 1000) - client.spec.oi_days * 86_400_000 + 3_600_000
            if until_ms is not None and until_ms < floor_ms:
                res.status = "skipped"
                res.message = (
                    f"{client.name} keeps {client.spec.oi_days} days of open interest history "
                    f"(from {pd.Timestamp(floor_ms, unit='ms', tz='UTC'):%Y-%m-%d %H:%M}); "
                    "the window asked ends before that (an archive or a remote replay: "
                    "--no-history-limits)"
                )
                return res
        last = store.last_date(job.exchange, symbol, tf, ct)  # CorruptFileError -> failed
        start = since_ms
        if last is not None:
            step = 1 if ct == "funding_rate" else timeframe_to_ms(tf)
            start = max(start, int(last.value // 1_000_000) + step)
        end = until_ms if until_ms is not None else int(time.time() * 1000)
        if start > end:
            res.message = "up to date"
            res.rows_total = len(store.read(job.exchange, symbol, tf, ct))
            return res
        span = _chunk_ms(client, ct, tf, chunk_pages)
        chunk_start = start
        while chunk_start <= end:  # write after each chunk: a later failure keeps them
            chunk_end = min(chunk_start + span - 1, end)
            df = await _fetch(client, symbol, tf, ct, chunk_start, chunk_end)
            merged = store.merge(job.exchange, symbol, tf, ct, df)
            res.rows_fetched += len(df)
            res.rows_added += merged.rows_added
            res.rows_total = merged.rows_after
            res.path = merged.path
            chunk_start = chunk_end + 1
        label = _WHAT[ct].format(tf=tf)
        res.gaps = [(a, b) for (m, w, a, b) in client.stats.gaps if m == symbol and w == label]
        if res.gaps:
            res.message = f"{len(res.gaps)} empty window(s) between rows, first at " + str(
                pd.Timestamp(res.gaps[0][0], unit="ms", tz="UTC")
            )
        elif res.rows_fetched == 0:
            res.message = "no new rows"
    except (DataError, ConfigError) as e:
        res.status = "failed"
        kept = f" ({res.rows_added} rows stored before)" if res.rows_added else ""
        res.message = f"{type(e).__name__}: {e}{kept}"
        logger.warning("download %s %s %s %s failed: %s", *_label(job), e)
    except Exception as e:  # a bug must fail this job only, not the whole run
        res.status = "failed"
        res.message = f"unexpected {type(e).__name__}: {e}"
        logger.exception("download %s %s %s %s failed unexpectedly", *_label(job))
    return res


#: ExchangeClient's name of each fetch, as it appears in ``client.stats.gaps``
_WHAT = {
    "futures": "ohlcv {tf}",
    "mark": "mark ohlcv {tf}",
    "funding_rate": "funding rate",
    "open_interest": "open interest {tf}",
    "taker_buy": "taker buy {tf}",
}


def _chunk_ms(client: ExchangeClient, ct: str, tf: str, pages: int) -> int:
    """Time span fetched between two writes: ``pages`` pages of the job's endpoint."""
    spec = client.spec
    if ct == "funding_rate":
        return pages * spec.funding_page * 3_600_000 * (spec.funding_window_h or 8)
    page = spec.oi_page if ct == "open_interest" else spec.ohlcv_page
    if ct == "mark" and spec.mark_page:
        page = spec.mark_page
    return pages * page * timeframe_to_ms(tf)


async def _fetch(
    client: ExchangeClient, symbol: str, tf: str, ct: str, start: int, end: int
) -> pd.DataFrame:
    if ct == "futures":
        return await client.fetch_ohlcv(symbol, tf, start, end)
    if ct == "mark":
        return await client.fetch_ohlcv(symbol, tf, start, end, price="mark")
    if ct == "funding_rate":
        return await client.fetch_funding_rate_history(symbol, start, end)
    if ct == "open_interest":
        return await client.fetch_open_interest_history(symbol, tf, start, end)
    if ct == "taker_buy":
        return await client.fetch_taker_buy(symbol, tf, start, end)
    raise ConfigError(f"candle type {ct!r} cannot be downloaded")  # pragma: no cover


def _label(job: _Job) -> tuple[str, str, str, str]:
    return job.exchange, job.market, job.timeframe, job.candle_type


async def download_async(
    markets: Iterable[str],
    exchanges: Iterable[str],
    timeframes: Iterable[str],
    since: str | int | datetime | pd.Timestamp,
    datadir: str | Path,
    *,
    until: str | int | datetime | pd.Timestamp | None = None,
    candle_types: Iterable[str] = DEFAULT_CANDLE_TYPES,
    exchange_config: Mapping[str, Mapping[str, Any]] | None = None,
    retry: RetryPolicy | None = None,
    max_concurrency: int = 4,
    max_jobs: int = 8,
    history_limits: bool = True,
    progress: bool = True,
    chunk_pages: int = 20,
    liquidation_timeframe: str | None = None,
) -> DownloadSummary:
    """Async :func:`download`; see there."""
    t0 = time.monotonic()
    markets = [m for m in markets]
    exchanges = list(dict.fromkeys(exchanges))
    timeframes = list(dict.fromkeys(timeframes))
    candle_types = list(dict.fromkeys(candle_types))
    if not markets or not exchanges or not timeframes or not candle_types:
        raise ConfigError("download: markets, exchanges, timeframes and candle_types must be given")
    for ex in exchanges:
        if ex not in EXCHANGES:
            raise ConfigError(f"exchanges: unknown {ex!r}; known: {', '.join(EXCHANGES)}")
    for tf in timeframes:
        timeframe_to_ms(tf)
    for ct in candle_types:
        if ct not in DEFAULT_CANDLE_TYPES + LIQUIDATION_TYPES:
            raise ConfigError(
                f"candle_types: unknown {ct!r}; expected some of "
                f"{', '.join(DEFAULT_CANDLE_TYPES + LIQUIDATION_TYPES)}"
            )
    if max_jobs < 1:
        raise ConfigError(f"max_jobs: expected >= 1, got {max_jobs}")
    if chunk_pages < 1:
        raise ConfigError(f"chunk_pages: expected >= 1, got {chunk_pages}")
    since_ms = _to_ms(since, "since")
    if since_ms is None:
        raise ConfigError("since: a start date is required, e.g. 2026-01-01 or 30d")
    until_ms = _to_ms(until, "until")
    if until_ms is not None and until_ms < since_ms:
        raise ConfigError(
            f"until ({pd.Timestamp(until_ms, unit='ms', tz='UTC')}) is before since "
            f"({pd.Timestamp(since_ms, unit='ms', tz='UTC')}): swap them"
        )
    exchange_config = exchange_config or {}
    unknown_cfg = set(exchange_config) - set(EXCHANGES)
    if unknown_cfg:
        raise ConfigError(
            f"exchange_config: keys {sorted(unknown_cfg)} are not exchanges; known: "
            f"{', '.join(EXCHANGES)}"
        )

    store = FeatherStore(datadir)
    plan = _plan(markets, timeframes, candle_types, liquidation_timeframe)
    summary = DownloadSummary()
    job_sem = asyncio.Semaphore(max_jobs)
    clients = {
        ex: ExchangeClient(
            ex,
            exchange_config.get(ex),
            retry=retry,
            max_concurrency=max_concurrency,
            # a server on this machine (the replay) is not the exchange: its depth is its files'
            history_limits=history_limits and not loopback_config(exchange_config.get(ex)),
        )
        for ex in exchanges
    }
    bar = _Progress(progress, {ex: len(plan) for ex in exchanges})

    async def per_exchange(ex: str) -> list[JobResult]:
        client = clients[ex]
        try:
            await client.load_markets()
        except DataError as e:
            bar.advance(ex, len(plan))
            return [
                JobResult(ex, m, tf, ct, "failed", message=f"{type(e).__name__}: {e}")
                for (m, tf, ct) in plan
            ]

        async def one(job: _Job) -> JobResult:
            async with job_sem:
                res = await _run_job(client, store, job, since_ms, until_ms, chunk_pages)
            bar.advance(ex, 1)
            return res

        return list(await asyncio.gather(*(one(_Job(ex, *p)) for p in plan)))

    try:
        with bar:
            per = await asyncio.gather(*(per_exchange(ex) for ex in exchanges))
    finally:
        for client in clients.values():
            await client.close()
    for ex, results in zip(exchanges, per, strict=True):
        summary.results.extend(results)
        summary.requests[ex] = clients[ex].stats.calls
        summary.retries[ex] = clients[ex].stats.retries
    summary.elapsed_s = time.monotonic() - t0
    return summary


def download(
    markets: Iterable[str],
    exchanges: Iterable[str],
    timeframes: Iterable[str],
    since: str | int | datetime | pd.Timestamp,
    datadir: str | Path,
    **kwargs: Any,
) -> DownloadSummary:
    """Fetch ``markets`` (e.g. ``["BTC"]``) on ``exchanges`` into ``datadir`` (Freqtrade's
    ``user_data/data``: files land in ``<datadir>/<exchange>/futures/``) and return a summary.

    ``since``/``until``: date, ISO string, epoch ms or relative ``30d``. Keyword options:
    ``candle_types`` (default all of :data:`DEFAULT_CANDLE_TYPES`), ``exchange_config``
    (ccxt settings per exchange, e.g. ``{"bybit": {"urls": ...}}``), ``retry``
    (:class:`RetryPolicy`), ``max_concurrency`` (requests per exchange), ``max_jobs``,
    ``history_limits``, ``progress`` (rich progress bar), ``chunk_pages`` (pages fetched
    between two writes of a job's file).
    """
    return asyncio.run(download_async(markets, exchanges, timeframes, since, datadir, **kwargs))


class _Progress:
    """A rich progress bar with one line per exchange, or nothing."""

    def __init__(self, enabled: bool, totals: dict[str, int]) -> None:
        self.enabled = enabled
        self.totals = totals
        self._bar: Any = None
        self._tasks: dict[str, Any] = {}

    def __enter__(self) -> _Progress:
        if self.enabled:
            from rich.progress import BarColumn, MofNCompleteColumn, Progress, TimeElapsedColumn

            self._bar = Progress(
                "[bold]{task.description}",
                BarColumn(),
                MofNCompleteColumn(),
                TimeElapsedColumn(),
                transient=False,
            )
            self._bar.__enter__()
            self._tasks = {ex: self._bar.add_task(ex, total=n) for ex, n in self.totals.items()}
        return self

    def advance(self, exchange: str, n: int) -> None:
        if self._bar is not None:
            self._bar.advance(self._tasks[exchange], n)

    def __exit__(self, *exc: object) -> None:
        if self._bar is not None:
            self._bar.__exit__(None, None, None)
            self._bar = None


# -- command line -----------------------------------------------------------------------------
def download_error(e: LiqsignalError) -> int:
    """``liqsignal download``'s answer to an error before any job ran: one line on stderr, exit
    2 for a bad setting (ConfigError), 1 otherwise."""
    print(f"liqsignal download: error: {e}", file=sys.stderr)
    return 2 if isinstance(e, ConfigError) else 1


def add_download_arguments(parser: argparse.ArgumentParser) -> None:
    """Options of ``liqsignal download``."""
    parser.add_argument("--markets", "-m", nargs="+", required=True, help="e.g. BTC ETH SOL")
    parser.add_argument(
        "--exchanges",
        "-e",
        nargs="+",
        default=["binance"],
        choices=sorted(EXCHANGES),
        help="exchanges to fetch from (default: binance)",
    )
    parser.add_argument("--timeframes", "-t", nargs="+", default=["1h"], help="default: 1h")
    parser.add_argument(
        "--since", required=True, help="start: date (2026-01-01) or age (30d); resumes after data"
    )
    parser.add_argument("--until", default=None, help="end: date or epoch ms (default: now)")
    add_datadir_argument(parser, "files go to <datadir>/<exchange>/futures/")
    parser.add_argument(
        "--candle-types",
        nargs="+",
        default=list(DEFAULT_CANDLE_TYPES),
        choices=list(DEFAULT_CANDLE_TYPES + LIQUIDATION_TYPES),
        help="what to fetch (default: all but liquidations and liquidation_events, which "
        "--liquidations adds)",
    )
    parser.add_argument(
        "--ccxt-config",
        type=Path,
        default=None,
        help='JSON file {"<exchange>": {ccxt settings}}, e.g. urls of a local server',
    )
    parser.add_argument("--max-concurrency", type=int, default=4, help="requests per exchange")
    parser.add_argument("--max-jobs", type=int, default=8, help="jobs running at once")
    parser.add_argument("--retries", type=int, default=5, help="attempts per request")
    parser.add_argument(
        "--no-history-limits",
        action="store_true",
        help="do not clamp open interest history to the exchange's documented depth "
        "(Binance: 30 days; off by itself when --ccxt-config points every URL at this machine)",
    )
    parser.add_argument(
        "--liquidations",
        action="store_true",
        help="also fetch realized liquidations where the exchange keeps them (gate: per-bar sums "
        "and liquidation orders); other exchanges: liqsignal watch",
    )
    parser.add_argument(
        "--liquidation-timeframe",
        default=None,
        help="interval of the per-bar liquidation sums to fetch (default: the exchange's finest, "
        "gate 5m; coarser bars are summed from it)",
    )
    parser.add_argument("--no-progress", action="store_true", help="no progress bar")
    parser.add_argument("--json", action="store_true", help="print the summary as JSON")


def run_download(args: argparse.Namespace) -> int:
    """Run ``liqsignal download``: 0 when every job succeeded, 1 when some failed, 2 on bad
    configuration."""
    try:
        config: dict[str, Any] = {}
        if args.ccxt_config is not None:
            try:
                config = json.loads(Path(args.ccxt_config).read_text())
            except (OSError, ValueError) as e:
                raise ConfigError(f"--ccxt-config {args.ccxt_config}: {e}") from e
            if not isinstance(config, dict):
                raise ConfigError(f"--ccxt-config {args.ccxt_config}: expected a JSON object")
        summary = download(
            args.markets,
            args.exchanges,
            args.timeframes,
            args.since,
            args.datadir,
            until=args.until,
            candle_types=list(args.candle_types)
            + (list(LIQUIDATION_TYPES) if getattr(args, "liquidations", False) else []),
            exchange_config=config,
            retry=RetryPolicy(attempts=args.retries),
            max_concurrency=args.max_concurrency,
            max_jobs=args.max_jobs,
            history_limits=not args.no_history_limits,
            progress=not (args.no_progress or getattr(args, "json", False)),
            liquidation_timeframe=getattr(args, "liquidation_timeframe", None),
        )
    except LiqsignalError as e:
        return download_error(e)
    if getattr(args, "json", False):
        print(json.dumps(summary.to_dict(), indent=2))
    else:
        print(summary.table())
    return 0 if summary.ok else 1
