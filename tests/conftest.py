"""Shared fixtures: small real data from the package's bundled resources and random-bar makers."""

from __future__ import annotations

import pandas as pd
import pytest

from liqsignal.evaluate import load_coinglass


@pytest.fixture(scope="session")
def coinglass() -> pd.DataFrame:
    """Real BTC 1h bars with OI, funding and realized liquidations (see resources/README.md)."""
    return load_coinglass()


@pytest.fixture(scope="session")
def btc_frame(coinglass: pd.DataFrame) -> pd.DataFrame:
    """The CoinGlass bars as a Freqtrade-style frame (no realized columns)."""
    return coinglass.drop(columns=["realized_long_usd", "realized_short_usd"])
