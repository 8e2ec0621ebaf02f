"""Shared fixtures: small real data from the package's bundled resources, the numba kernels
compiled once per session, and the package's process-wide state reset around every test."""

from __future__ import annotations

import logging
import sys
from collections.abc import Iterator

import pandas as pd
import pytest

from liqsignal.evaluate import load_coinglass

#: Process-wide state of modules that tests touch: {module: {name: value to reset to}}, where
#: ``clear`` empties a container in place. Modules not imported yet and names that no longer
#: exist are skipped, so the list stays harmless when the state moves elsewhere.
CLEAR = object()
MODULE_STATE: dict[str, dict[str, object]] = {
    "liqsignal.forecast": {"_WARNED": CLEAR},
}


def reset_module_state() -> None:
    """Put the warn-once sets back to their state at import, for the modules that are imported,
    and forget every bot's liqsignal context (provider, store cache, guard rows, warnings:
    ``liqsignal.columns.reset_liq_context``) and the hyperopt column cache."""
    columns = sys.modules.get("liqsignal.columns")
    if columns is not None:
        columns.reset_liq_context()
        columns.COLUMN_CACHE.clear()
    for module_name, names in MODULE_STATE.items():
        module = sys.modules.get(module_name)
        if module is None:
            continue
        for name, value in names.items():
            if not hasattr(module, name):
                continue
            if value is CLEAR:
                getattr(module, name).clear()
            else:
                setattr(module, name, value)


@pytest.fixture(autouse=True)
def _fresh_module_state() -> Iterator[None]:
    """Every test starts as in a new process: nothing warned yet, no provider registered, no
    cached store frames or guard rows from another test."""
    reset_module_state()
    yield
    reset_module_state()


#: Loggers the alert service's command line quiets (liqsignal.alerts.service.setup_logging).
QUIETED_LOGGERS = ("httpx", "httpcore", "apscheduler", "telegram", "aiohttp.access")


@pytest.fixture(autouse=True)
def _fresh_logger_settings() -> Iterator[None]:
    """Loggers keep the level, handlers and propagation they had before the test: a command run
    in-process (``main(["alerts", ...])`` quiets httpx, telegram and apscheduler) must not
    change what a later test's log capture sees."""
    for name in QUIETED_LOGGERS:  # made now, so that their state is kept even when a test
        logging.getLogger(name)  # is the first to ask for them
    loggers = {
        name: (lg, lg.level, list(lg.handlers), lg.propagate, lg.disabled)
        for name, lg in logging.root.manager.loggerDict.items()
        if isinstance(lg, logging.Logger)
    }
    yield
    for lg, level, handlers, propagate, disabled in loggers.values():
        if lg.level != level:
            lg.setLevel(level)
        lg.handlers[:] = handlers
        lg.propagate, lg.disabled = propagate, disabled


@pytest.fixture(scope="session")
def coinglass() -> pd.DataFrame:
    """Real BTC 1h bars with OI, funding and realized liquidations (see resources/README.md)."""
    return load_coinglass()


@pytest.fixture(scope="session")
def btc_frame(coinglass: pd.DataFrame) -> pd.DataFrame:
    """The CoinGlass bars as a Freqtrade-style frame (no realized columns)."""
    return coinglass.drop(columns=["realized_long_usd", "realized_short_usd"])


@pytest.fixture(scope="session", autouse=True)
def compiled_kernels(btc_frame: pd.DataFrame) -> None:
    """Compile (or load from numba's cache) the map kernels once, before the first test, so
    that test's timing does not carry the compile: the map in OI and volume-proxy mode, over
    one and two exchanges, and its clusters."""
    from liqsignal.features import compute_features, compute_features_multi

    tiny = btc_frame.iloc[:48].reset_index(drop=True)
    _, lmap = compute_features(tiny, return_map=True)
    lmap.snapshot()
    compute_features(tiny, proxy=True)
    compute_features_multi({"a": tiny, "b": tiny}, proxy=["b"])
