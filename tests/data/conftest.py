"""Fixtures for the data tests: the Binance, Bybit and OKX replays (venues_util)."""

from __future__ import annotations

from collections.abc import Iterator, Mapping

import pytest
from venues_util import Venues, start_venues, stop_venues


@pytest.fixture(scope="module")
def venue_oi_scale() -> Mapping[str, float] | None:
    """Open interest scale per venue for ``venues`` (None: the test slice as it is); a module
    overrides it to give each venue its own open interest."""
    return None


@pytest.fixture(scope="module")
def running_venues(
    tmp_path_factory: pytest.TempPathFactory, venue_oi_scale: Mapping[str, float] | None
) -> Iterator[Venues]:
    out = start_venues(tmp_path_factory.mktemp("venues"), venue_oi_scale)
    yield out
    stop_venues(out)


@pytest.fixture
def venues(running_venues: Venues) -> Venues:
    """The replays, started once per module, with no fault armed and an empty request log."""
    for rx, faults in running_venues.values():
        faults.clear()
        rx.clear_log()
    return running_venues
