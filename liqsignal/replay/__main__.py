"""Command line of the replay exchange: serve a datadir on 127.0.0.1 until Ctrl-C.

``python -m liqsignal.replay --datadir user_data/data/binance --port 8765 --speed 600
--start 2026-01-10T00:00Z`` prints the ccxt / Freqtrade ``exchange.ccxt_config`` overlay as JSON.
"""

from __future__ import annotations

import argparse
import json
import logging
import math
import signal
import sys
import threading
from collections.abc import Callable
from pathlib import Path
from typing import TypeVar

from liqsignal.exceptions import LiqsignalError
from liqsignal.replay.server import VENUES, ReplayExchange

T = TypeVar("T", int, float)


def _checked(
    cast: Callable[[str], T], ok: Callable[[T], bool], what: str, bounds: str
) -> Callable[[str], T]:
    """An argparse type: ``cast`` the text, then ``ok`` or an error saying ``bounds``."""

    def parse(text: str) -> T:
        try:
            v = cast(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"expected {what}, got {text!r}") from None
        if not ok(v):
            raise argparse.ArgumentTypeError(f"{bounds}, got {v}")
        return v

    return parse


_port = _checked(
    int, lambda v: 0 <= v <= 65535, "a port number", "a port is 0-65535 (0 = any free)"
)
_speed = _checked(
    float, lambda v: v > 0 and math.isfinite(v), "a number", "expected a finite number > 0"
)


def add_replay_arguments(p: argparse.ArgumentParser) -> None:
    """The replay server's options (``python -m liqsignal.replay`` and ``liqsignal
    replay`` share them)."""
    p.add_argument(
        "--datadir", required=True, help="Freqtrade datadir, e.g. user_data/data/binance"
    )
    p.add_argument("--port", type=_port, default=8765, help="TCP port on 127.0.0.1 (0 = any free)")
    p.add_argument(
        "--venue",
        default="binance",
        choices=sorted(VENUES),
        help="API to speak: binance (USD-M), bybit (v5), okx (v5), gate (v4), bitget (v2 mix), "
        "hyperliquid (info); default binance",
    )
    p.add_argument(
        "--speed",
        type=_speed,
        default=None,
        help="replay seconds per wall second (omit: static)",
    )
    p.add_argument("--start", default=None, help="replay start time, ISO 8601 UTC")
    p.add_argument(
        "--no-forming-candle",
        action="store_true",
        help="serve closed candles only (use this for a Freqtrade dry-run with --speed)",
    )
    p.add_argument(
        "--overlay",
        metavar="PATH",
        help='also write {"<venue>": overlay} here, the file liqsignal download / map --live '
        "read with --ccxt-config",
    )
    p.add_argument(
        "--freqtrade-overlay",
        metavar="PATH",
        help='also write {"exchange": {"ccxt_config": overlay}} here, a second Freqtrade config '
        "(freqtrade ... -c config.json -c PATH)",
    )
    p.add_argument("-v", "--verbose", action="store_true", help="log every request")


def _write(path: str, data: dict[str, object]) -> None:
    out = Path(path)
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.with_name(out.name + ".tmp")
    tmp.write_text(json.dumps(data, indent=2) + "\n", encoding="utf-8")
    tmp.replace(out)  # whole or not at all: a reader never sees half a file


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(
        prog="python -m liqsignal.replay", description=__doc__.splitlines()[0]
    )
    add_replay_arguments(p)
    return run_replay(p.parse_args(argv))


def run_replay(a: argparse.Namespace) -> int:
    """Serve ``a.datadir`` until Ctrl-C or SIGTERM; 2 when the server cannot start."""
    logging.basicConfig(
        level=logging.DEBUG if a.verbose else logging.INFO,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
    )
    try:
        rx = ReplayExchange(
            a.datadir,
            speed=a.speed,
            start=a.start,
            port=a.port,
            venues=[a.venue],
            forming_candle=not a.no_forming_candle,
        )
        rx.start()
    except (LiqsignalError, OSError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    overlay = rx.ccxt_config(a.venue)
    try:
        if a.overlay:
            _write(a.overlay, {a.venue: overlay})
        if a.freqtrade_overlay:
            _write(a.freqtrade_overlay, {"exchange": {"ccxt_config": overlay}})
    except OSError as e:
        rx.stop()
        print(f"error: cannot write the overlay: {e}", file=sys.stderr)
        return 2
    stop = threading.Event()
    # before the overlay is printed: a caller may send SIGTERM as soon as it has read it
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    print(json.dumps({"ccxt_config": overlay}, indent=2), flush=True)
    print(
        f"replay exchange at {rx.url}, replay time {rx.now().isoformat()}; Ctrl-C stops",
        file=sys.stderr,
        flush=True,
    )
    try:
        while not stop.wait(0.5):
            pass
    except KeyboardInterrupt:
        pass
    finally:
        rx.stop()
        unknown = sorted({f"{r.method} {r.path}" for r in rx.unknown})
        print(f"served {len(rx.requests)} requests; unknown paths: {unknown}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
