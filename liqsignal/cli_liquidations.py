"""The ``liqsignal import-liquidations`` command: a CSV / Parquet file of realized liquidations
(events, or per-bar sums) into the liquidation store.

::

    liqsignal import-liquidations events.csv --exchange binance --symbol BTC/USDT:USDT
    liqsignal import-liquidations \\
        liqsignal/resources/coinglass_btc_1h_price_oi_funding_liquidations.csv \\
        --exchange coinglass --symbol BTC/USDT:USDT --timeframe 1h

**Events** (one row per liquidation): a time column (``timestamp`` / ``date`` / ``time`` /
``datetime``: epoch ms or ISO 8601, UTC), ``side``, ``price`` and the size as ``amount`` (base
units; also ``size``, ``qty``, ``quantity``) and/or ``usd`` (also ``size_usd``, ``value``,
``notional``); optional ``id``. ``side`` is ``long`` / ``short`` (the side liquidated), or
``buy`` / ``sell`` with ``--sides order`` (the forced order's side: sell = a long liquidated;
Binance, OKX) or ``--sides position`` (Bybit). The file is taken to hold every liquidation
between its first and last event (that span is recorded as covered, so quiet bars read 0);
``--no-coverage`` records nothing (bars stay NaN until coverage is recorded), ``--covered
START END`` sets the span.

**Per-bar sums**: a time column and a long and a short USD column (``long_liquidated_usd`` /
``liquidation_long_usd`` / ``long_liq_usd`` / ``long_usd``, the same for short), bars labelled
by their open time on the ``--timeframe`` grid (default 1h), as CoinGlass exports them.

Columns are matched case-insensitively; a missing or bad column is named in the error (exit 2).

This module also lets ``liqsignal download --exchanges`` name the venues liqsignal reads only
liquidation history from (:data:`liqsignal.data.liquidation_venues.HISTORY_VENUES`: bitfinex,
htx; deribit is refused, saying why): ``liqsignal download -m BTC -e bitfinex htx --since 7d
--liquidations`` writes their liquidation store beside the other exchanges' jobs, in one table.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
import time
from pathlib import Path
from typing import Any

import pandas as pd

from liqsignal.data import add_datadir_argument
from liqsignal.data.liquidations import LiquidationStore, make_events, normalise_side, to_utc_ms
from liqsignal.exceptions import ConfigError, CorruptFileError, InputError, LiqsignalError

__all__ = [
    "add_parsers",
    "import_liquidations",
    "run_download_with_history",
    "run_import",
    "wire_download",
]

TIME = ("timestamp", "date", "time", "datetime", "datetime_utc")
AMOUNT = ("amount", "size", "qty", "quantity", "base_amount")
USD = ("usd", "size_usd", "value", "notional", "quote_value", "usd_value")
LONG = ("long_liquidated_usd", "liquidation_long_usd", "long_liq_usd", "long_usd")
SHORT = ("short_liquidated_usd", "liquidation_short_usd", "short_liq_usd", "short_usd")
SIDE_CONVENTION = {"order": "binance", "position": "bybit"}  # a venue with that meaning


def _find(df: pd.DataFrame, names: tuple[str, ...]) -> str | None:
    lower = {str(c).lower(): c for c in df.columns}
    for n in names:
        if n in lower:
            return str(lower[n])
    return None


def read_table(path: Path) -> pd.DataFrame:
    """A CSV or Parquet file; InputError naming the file when it cannot be read."""
    if not path.is_file():
        raise InputError(f"{path}: no such file")
    try:
        if path.suffix.lower() in (".parquet", ".pq"):
            return pd.read_parquet(path)
        return pd.read_csv(path)
    except Exception as e:  # pandas / pyarrow raise many types on a bad file
        raise InputError(f"{path}: cannot be read as {path.suffix or 'CSV'}: {e}") from e


def _times(df: pd.DataFrame, col: str, what: str) -> pd.Series:
    return to_utc_ms(df[col], f"{what}: column {col!r}")


def _numbers(df: pd.DataFrame, col: str, what: str) -> pd.Series:
    values = pd.to_numeric(df[col], errors="coerce")
    bad = values.isna().to_numpy() & df[col].notna().to_numpy()
    if bad.any():
        row = int(bad.argmax())
        raise InputError(
            f"{what}: column {col!r} is not a number at row {row}: {df[col].iloc[row]!r}"
        )
    return values.astype("float64")


def events_from_table(
    df: pd.DataFrame, exchange: str, symbol: str, sides: str | None, what: str
) -> pd.DataFrame:
    tcol = _find(df, TIME)
    if tcol is None:
        raise InputError(f"{what}: no time column; expected one of {list(TIME)}")
    for need in ("side", "price"):
        if _find(df, (need,)) is None:
            raise InputError(f"{what}: missing column {need!r}; got {list(df.columns)}")
    scol, pcol = _find(df, ("side",)), _find(df, ("price",))
    assert scol is not None and pcol is not None
    acol, ucol = _find(df, AMOUNT), _find(df, USD)
    if acol is None and ucol is None:
        raise InputError(
            f"{what}: no size column; expected one of {list(AMOUNT)} (base units) or "
            f"{list(USD)} (USD)"
        )
    price = _numbers(df, pcol, what)
    usd_given = _numbers(df, ucol, what) if ucol else None
    amount = _numbers(df, acol, what) if acol else usd_given / price  # type: ignore[operator]
    usd = usd_given if usd_given is not None else amount * price
    raw_side = df[scol].astype(str).str.strip().str.lower()
    side = raw_side.copy()
    trade_words = raw_side.isin(("buy", "sell"))
    if trade_words.any():
        if sides is None:
            row = int(trade_words.to_numpy().argmax())
            raise InputError(
                f"{what}: column {scol!r} says {df[scol].iloc[row]!r} at row {row}: buy/sell "
                "need --sides order (the forced order's side: Binance, OKX) or --sides "
                "position (the position's side: Bybit)"
            )
        venue = SIDE_CONVENTION[sides]
        side[trade_words] = [normalise_side(venue, s) for s in raw_side[trade_words]]
    idcol = _find(df, ("id",))
    frame = pd.DataFrame(
        {
            "timestamp": _times(df, tcol, what),
            "side": side,
            "price": price,
            "amount": amount,
            "usd": usd,
            "id": df[idcol] if idcol else "",
        }
    )
    # make_events names the column and row of anything still wrong (a side like 'S', price 0)
    return make_events(frame, exchange=exchange, symbol=symbol, what=what)


def bars_from_table(df: pd.DataFrame, what: str) -> pd.DataFrame:
    tcol = _find(df, TIME)
    if tcol is None:
        raise InputError(f"{what}: no time column; expected one of {list(TIME)}")
    lcol, scol = _find(df, LONG), _find(df, SHORT)
    if lcol is None or scol is None:
        missing = list(LONG) if lcol is None else list(SHORT)
        side = "long" if lcol is None else "short"
        raise InputError(f"{what}: no {side} USD column; expected one of {missing}")
    out = pd.DataFrame(
        {
            "date": _times(df, tcol, what),
            "long_liquidated_usd": _numbers(df, lcol, what),
            "short_liquidated_usd": _numbers(df, scol, what),
        }
    )
    ecol = _find(df, ("events", "count"))
    if ecol is not None:
        out["events"] = _numbers(df, ecol, what)
    return out


def import_liquidations(
    path: str | Path,
    datadir: str | Path,
    exchange: str,
    symbol: str,
    timeframe: str = "1h",
    sides: str | None = None,
    coverage: bool = True,
    covered: tuple[Any, Any] | None = None,
) -> dict[str, Any]:
    """Import one file into the store; returns what was done (kind, rows, new rows, path)."""
    p = Path(path)
    if "/" not in symbol:
        raise ConfigError(f"--symbol: expected a ccxt symbol like BTC/USDT:USDT, got {symbol!r}")
    if sides is not None and sides not in SIDE_CONVENTION:
        raise ConfigError(f"--sides: expected order or position, got {sides!r}")
    df = read_table(p)
    what = str(p)
    store = LiquidationStore(datadir)
    is_bars = _find(df, LONG) is not None or _find(df, SHORT) is not None
    if is_bars:
        bars = bars_from_table(df, what)
        res = store.write_bars(exchange, symbol, timeframe, bars)
        return {
            "kind": "bars",
            "rows": len(bars),
            "added": res.rows_added,
            "total": res.rows_after,
            "path": str(res.path),
        }
    events = events_from_table(df, exchange, symbol, sides, what)
    added = store.append_events(exchange, events)
    span = None
    if covered is not None:
        span = covered
    elif coverage and len(events):
        last = events["timestamp"].max() + pd.Timedelta(milliseconds=1)
        span = (events["timestamp"].min(), last)
    if span is not None:
        store.record_coverage(exchange, symbol, span[0], span[1])
    return {
        "kind": "events",
        "rows": len(events),
        "added": added,
        "total": len(store.read_events(exchange, symbol)),
        "path": str(store.events_path(exchange, symbol)),
        "covered": None if span is None else [str(pd.Timestamp(t)) for t in span],
    }


def run_import(args: argparse.Namespace) -> int:
    """``liqsignal import-liquidations``: 0 done, 2 bad input or arguments, 1 a store error."""
    try:
        out = import_liquidations(
            args.file,
            args.datadir,
            args.exchange,
            args.symbol,
            args.timeframe,
            sides=args.sides,
            coverage=not args.no_coverage,
            covered=tuple(args.covered) if args.covered else None,  # type: ignore[arg-type]
        )
        bars = LiquidationStore(args.datadir).bars(args.exchange, args.symbol, args.timeframe)
    except (InputError, ConfigError) as e:
        print(f"liqsignal import-liquidations: error: {e}", file=sys.stderr)
        return 2
    except (CorruptFileError, LiqsignalError, OSError) as e:
        print(f"liqsignal import-liquidations: error: {e}", file=sys.stderr)
        return 1
    known = bars["long_liquidated_usd"].notna() | bars["short_liquidated_usd"].notna()
    total = bars["long_liquidated_usd"].fillna(0) + bars["short_liquidated_usd"].fillna(0)
    print(
        f"{out['kind']}: {out['rows']} rows read, {out['added']} new, {out['total']} stored "
        f"in {out['path']}"
    )
    if out.get("covered"):
        print(f"covered: {out['covered'][0]} -> {out['covered'][1]}")
    span = (
        f"{bars['date'].iloc[0]:%Y-%m-%d %H:%M} -> {bars['date'].iloc[-1]:%Y-%m-%d %H:%M}"
        if len(bars)
        else "none"
    )
    print(
        f"{args.timeframe} bars: {len(bars)} ({span}), {int(known.sum())} known, "
        f"{int((total > 0).sum())} with liquidations, "
        f"long {bars['long_liquidated_usd'].sum():,.0f} USD, "
        f"short {bars['short_liquidated_usd'].sum():,.0f} USD"
    )
    return 0


def add_parsers(subparsers: Any) -> None:
    """Register ``import-liquidations`` on the ``liqsignal`` command's subparsers."""
    p = subparsers.add_parser(
        "import-liquidations",
        help="import realized liquidations (events or per-bar sums, CSV/Parquet) into the store",
        description=(__doc__ or "").split("\n\n")[0],
    )
    p.add_argument("file", type=Path, help="CSV or Parquet file of events or per-bar sums")
    p.add_argument("--exchange", required=True, help="store folder name, e.g. binance, coinglass")
    p.add_argument("--symbol", required=True, help="ccxt symbol, e.g. BTC/USDT:USDT")
    p.add_argument("--timeframe", default="1h", help="bar size of a per-bar file (default 1h)")
    add_datadir_argument(p)
    p.add_argument(
        "--sides",
        choices=sorted(SIDE_CONVENTION),
        default=None,
        help="what buy/sell in the side column mean: order (forced order's side) or position",
    )
    p.add_argument(
        "--no-coverage",
        action="store_true",
        help="do not record the events' span as covered (bars stay NaN)",
    )
    p.add_argument(
        "--covered",
        nargs=2,
        metavar=("START", "END"),
        default=None,
        help="the span the file covers completely (default: first to last event)",
    )
    p.set_defaults(func=run_import)
    wire_download(subparsers)


# -- liqsignal download: the liquidation-history venues -----------------------------------------
def wire_download(subparsers: Any) -> None:
    """Let the ``download`` subcommand (when registered) name the history venues in
    ``--exchanges`` and run them with :func:`run_download_with_history`."""
    from liqsignal.data.liquidation_venues import HISTORY_VENUES

    dl = getattr(subparsers, "choices", {}).get("download")
    if dl is None:
        return
    for action in dl._actions:
        if "--exchanges" in action.option_strings and action.choices is not None:
            action.choices = sorted({*action.choices, *HISTORY_VENUES})
            served = sorted(n for n, v in HISTORY_VENUES.items() if not v.refused)
            refused = sorted(n for n, v in HISTORY_VENUES.items() if v.refused)
            action.help = (
                f"{action.help}; liquidation history only (with --liquidations): "
                f"{', '.join(served)}; refused, saying why: {', '.join(refused)}"
            )
    dl.set_defaults(func=run_download_with_history)


def _ccxt_config(path: Path | None) -> dict[str, Any]:
    if path is None:
        return {}
    try:
        config = json.loads(Path(path).read_text())
    except (OSError, ValueError) as e:
        raise ConfigError(f"--ccxt-config {path}: {e}") from e
    if not isinstance(config, dict):
        raise ConfigError(f"--ccxt-config {path}: expected a JSON object")
    return config


def run_download_with_history(args: argparse.Namespace) -> int:
    """``liqsignal download`` with history venues among ``--exchanges``: the other exchanges
    through :func:`liqsignal.data.download.download`, the history venues through
    :func:`liqsignal.data.liquidation_venues.download_history`, one summary. 0 when every job
    succeeded, 1 when some failed, 2 on bad arguments."""
    from liqsignal.data import download as dl
    from liqsignal.data.exchanges import EXCHANGES, RetryPolicy
    from liqsignal.data.liquidation_history import LIQUIDATION_TYPES
    from liqsignal.data.liquidation_venues import HISTORY_VENUES, download_history

    history = [e for e in dict.fromkeys(args.exchanges) if e in HISTORY_VENUES]
    full = [e for e in dict.fromkeys(args.exchanges) if e not in HISTORY_VENUES]
    t0 = time.monotonic()
    try:
        config = _ccxt_config(args.ccxt_config)
        if not history and not set(config) & set(HISTORY_VENUES):
            return int(dl.run_download(args))  # as without history venues
        unknown = sorted(set(config) - set(EXCHANGES) - set(HISTORY_VENUES))
        if unknown:
            raise ConfigError(
                f"--ccxt-config: keys {unknown} are not exchanges; known: "
                f"{', '.join([*EXCHANGES, *HISTORY_VENUES])}"
            )
        types = list(args.candle_types) + (
            list(LIQUIDATION_TYPES) if getattr(args, "liquidations", False) else []
        )
        types = list(dict.fromkeys(types))
        since_ms = dl._to_ms(args.since, "since")
        until_ms = dl._to_ms(args.until, "until")
        if since_ms is None:
            raise ConfigError("since: a start date is required, e.g. 2026-01-01 or 30d")
        if not full and until_ms is not None and until_ms < since_ms:  # else download() says
            raise ConfigError(f"until ({args.until}) is before since ({args.since}): swap them")
        retry = RetryPolicy(attempts=args.retries)
        summary = dl.DownloadSummary()
        if full:
            summary = dl.download(
                args.markets,
                full,
                args.timeframes,
                args.since,
                args.datadir,
                until=args.until,
                candle_types=types,
                exchange_config={k: v for k, v in config.items() if k in EXCHANGES},
                retry=retry,
                max_concurrency=args.max_concurrency,
                max_jobs=args.max_jobs,
                history_limits=not args.no_history_limits,
                progress=not (args.no_progress or getattr(args, "json", False)),
                liquidation_timeframe=getattr(args, "liquidation_timeframe", None),
            )
        hist = asyncio.run(
            download_history(
                args.markets,
                history,
                since_ms,
                until_ms,
                str(args.datadir),
                types,
                {k: v for k, v in config.items() if k in HISTORY_VENUES},
                retry,
            )
        )
    except LiqsignalError as e:
        return dl.download_error(e)
    summary.results.extend(hist.results)
    summary.requests.update(hist.requests)
    summary.retries.update(hist.retries)
    summary.elapsed_s = time.monotonic() - t0
    if getattr(args, "json", False):
        print(json.dumps(summary.to_dict(), indent=2))
    else:
        print(summary.table())
    return 0 if summary.ok else 1
