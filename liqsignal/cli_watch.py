"""``liqsignal watch``: realized liquidations live from several venues, into the store, with a
live table.

    liqsignal watch --exchange binance --exchange bybit --exchange okx --markets BTC ETH \\
        [--datadir user_data/data] [--ccxt-config FILE] [--duration SECONDS]

``--ccxt-config`` is a JSON object ``{"<exchange>": {ccxt settings}}``, e.g. the overlay that
``python -m liqsignal.replay.ws`` prints, so the command runs against local servers.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import math
import signal
import sys
import time
from pathlib import Path
from typing import Any

from liqsignal.exceptions import ConfigError

__all__ = ["add_parsers", "load_ccxt_config", "render_table", "run_watch"]

BINANCE_NOTE = (
    "Binance sends at most the latest liquidation per symbol per 1000 ms: its figures are a "
    "lower bound."
)


def _positive(text: str) -> float:
    try:
        v = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a number, got {text!r}") from None
    if not (math.isfinite(v) and v > 0):
        raise argparse.ArgumentTypeError(f"expected a number > 0, got {text!r}")
    return v


def add_parsers(subparsers: Any) -> None:
    """Register ``watch`` on the ``liqsignal`` command's subparsers."""
    from liqsignal.data.streams import STREAM_VENUES

    w = subparsers.add_parser(
        "watch",
        help="stream realized liquidations (ccxt pro) into the store, with a live table",
        description="Watch the public liquidation streams of the given venues and markets, "
        "write every event to the store (gaps after reconnects recorded as gaps) and show a "
        "live table. " + BINANCE_NOTE,
    )
    w.add_argument(
        "--exchange",
        action="append",
        default=None,
        choices=sorted(STREAM_VENUES),
        help="venue to watch (repeatable; default binance)",
    )
    w.add_argument("--markets", nargs="+", default=["BTC"], help="markets, e.g. BTC ETH")
    w.add_argument("--datadir", default="user_data/data", help="store (default user_data/data)")
    w.add_argument("--ccxt-config", help='JSON file {"<exchange>": {ccxt settings}}')
    w.add_argument("--duration", type=_positive, help="stop after this many seconds")
    w.add_argument("--refresh", type=_positive, default=1.0, help="table refresh, seconds")
    w.add_argument(
        "--read-timeout", type=_positive, default=30.0, help="no frame this long = a stall"
    )
    w.add_argument("--keep-alive", type=_positive, default=10.0, help="ping interval, seconds")
    w.add_argument(
        "--all-binance-markets",
        action="store_true",
        help="Binance: subscribe to !forceOrder@arr (every symbol) and keep the given markets",
    )
    w.set_defaults(func=run_watch)


def load_ccxt_config(path: str | None) -> dict[str, dict[str, Any]]:
    """The ``--ccxt-config`` file: a JSON object of exchange -> object; errors name the key."""
    if not path:
        return {}
    p = Path(path)
    if not p.is_file():
        raise ConfigError(f"--ccxt-config: file {p} does not exist")
    try:
        data = json.loads(p.read_text())
    except json.JSONDecodeError as e:
        raise ConfigError(f"--ccxt-config {p}: not valid JSON: {e}") from e
    if not isinstance(data, dict):
        raise ConfigError(f"--ccxt-config {p}: expected an object {{exchange: settings}}")
    for k, v in data.items():
        if not isinstance(v, dict):
            raise ConfigError(
                f"--ccxt-config {p}: key {k!r} must hold an object of ccxt settings, "
                f"got {type(v).__name__}"
            )
    return data


def _usd(v: float) -> str:
    if v >= 1e6:
        return f"{v / 1e6:,.2f}M"
    if v >= 1e3:
        return f"{v / 1e3:,.1f}k"
    return f"{v:,.0f}"


def render_table(streams: Any, started: float) -> Any:
    """The live rich table: per venue and market."""
    from rich.table import Table

    now = time.time()
    t = Table(
        title=f"realized liquidations (long / short = the side liquidated), {now - started:,.0f} s",
        caption=BINANCE_NOTE,
        caption_justify="left",
    )
    for col, just in (
        ("venue", "left"),
        ("market", "left"),
        ("events", "right"),
        ("long USD 1m", "right"),
        ("short USD 1m", "right"),
        ("last", "right"),
        ("state", "left"),
        ("gaps", "right"),
    ):
        t.add_column(col, justify=just)  # type: ignore[arg-type]
    for r in streams.table_rows(now):
        age = r["last_age_s"]
        state = r["state"]
        style = {"connected": "green", "reconnecting": "yellow"}.get(state, "red")
        if state == "reconnecting":
            state = "reconnecting (gap)"
        gaps = f"{r['gaps']} ({r['gap_s']:.1f} s)" if r["gaps"] else "0"
        venue = r["exchange"] + ("*" if r["exchange"] == "binance" else "")
        t.add_row(
            venue,
            r["market"],
            str(r["events"]),
            _usd(r["long_usd_1m"]),
            _usd(r["short_usd_1m"]),
            "-" if age is None else f"{age:,.1f}s ago",
            f"[{style}]{state}[/{style}]",
            gaps,
        )
    return t


def run_watch(args: argparse.Namespace) -> int:
    from rich.console import Console
    from rich.live import Live

    from liqsignal.data.streams import LiquidationStreams, StreamConfig

    exchanges = list(dict.fromkeys(args.exchange or ["binance"]))
    overlay = load_ccxt_config(args.ccxt_config)
    extra = sorted(set(overlay) - set(exchanges))
    if extra:
        print(f"note: --ccxt-config settings for {extra} unused (not watched)", file=sys.stderr)
    cfg = StreamConfig(
        read_timeout=args.read_timeout,
        keep_alive=min(args.keep_alive, args.read_timeout / 3),
        binance_all_markets=args.all_binance_markets,
    )
    streams = LiquidationStreams(
        exchanges,
        [m.upper() if "/" not in m else m for m in args.markets],
        datadir=args.datadir,
        ccxt_config={k: v for k, v in overlay.items() if k in exchanges},
        config=cfg,
    )
    streams.keep_events = False
    console = Console()
    started = time.time()

    async def main() -> None:
        loop = asyncio.get_running_loop()
        with contextlib.suppress(NotImplementedError, RuntimeError):
            loop.add_signal_handler(signal.SIGTERM, streams.stop)
            loop.add_signal_handler(signal.SIGINT, streams.stop)
        task = asyncio.ensure_future(streams.run(args.duration))
        with Live(render_table(streams, started), console=console, auto_refresh=False) as live:
            while not task.done():
                await asyncio.wait({task}, timeout=args.refresh)
                live.update(render_table(streams, started), refresh=True)
        await task

    asyncio.run(main())
    print()
    w = streams.writer
    for ex, v in streams.venues.items():
        line = (
            f"{ex}: {v.events} events, {v.duplicates} duplicates dropped, {v.malformed} "
            f"malformed, {v.reconnects} reconnects ({v.stalls} stalls), {len(v.gaps)} gaps "
            f"({sum(g.seconds for g in v.gaps):.1f} s)"
        )
        if v.failed:
            line += f"; not started: {v.failed}"
        print(line)
    print(
        f"store {args.datadir}: {w.written} new events written"
        + (f", {w.pending()} NOT written ({w.last_error})" if w.pending() else "")
    )
    if any(v.failed for v in streams.venues.values()) or w.pending():
        return 1
    return 0
