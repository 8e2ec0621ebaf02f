"""Local Binance, Bybit and OKX replay servers over the bundled test slice (shared by tests)."""

from __future__ import annotations

import shutil
from collections.abc import Mapping
from pathlib import Path

import pandas as pd

from liqsignal.replay.server import ReplayExchange
from liqsignal.replay.testing import Faults

TESTDATA = Path(__file__).resolve().parents[1] / "testdata" / "replay_binance"
VENUES = ("binance", "bybit", "okx")

Venues = dict[str, tuple[ReplayExchange, Faults]]


def start_venues(root: Path, oi_scale: Mapping[str, float] | None = None) -> Venues:
    """One replay server per venue, each on its own copy of the test slice (open interest
    scaled per venue when ``oi_scale`` is given), with a fault injector."""
    out: Venues = {}
    for venue in VENUES:
        shutil.copytree(TESTDATA, root / venue)
        if oi_scale is not None:
            oi_path = root / venue / "futures" / "BTC_USDT_USDT-1h-open_interest.feather"
            oi = pd.read_feather(oi_path)
            for col in ("open_interest_amount", "open_interest_value"):
                oi[col] = oi[col] * oi_scale[venue]
            oi.to_feather(oi_path)
        rx = ReplayExchange(root / venue, venues=(venue,)).start()
        out[venue] = (rx, Faults(rx))
    return out


def stop_venues(venues: Venues) -> None:
    for rx, _ in venues.values():
        rx.stop()
