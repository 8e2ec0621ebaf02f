"""liq_safe and the per-bot context: a failing guard never raises into the bot, liqsignal's own
errors are logged in one line, anything else with its traceback, once per kind."""

from __future__ import annotations

import logging
from datetime import UTC, datetime

import pytest

from liqsignal.columns import LiqContext, liq_context, reset_liq_context, set_provider
from liqsignal.exceptions import InputError
from liqsignal.guard_mixin import LiqGuardMixin

NOW = datetime(2026, 3, 1, 12, tzinfo=UTC)


class DP:
    runmode = "dry_run"


class Strat(LiqGuardMixin):
    def __init__(self, dp, error: Exception) -> None:
        self.dp, self.config, self.error, self.timeframe = dp, {}, error, "1h"

    def _liq_row(self, pair, now, cfg, columns=()):
        raise self.error


@pytest.fixture(autouse=True)
def _fresh():
    reset_liq_context()
    yield
    reset_liq_context()


def _records(caplog, pair):
    return [r for r in caplog.records if pair in r.getMessage()]


def test_unexpected_error_is_logged_with_its_traceback_once_and_answers_the_default(caplog):
    s = Strat(DP(), ZeroDivisionError("boom"))
    with caplog.at_level(logging.WARNING, logger="liqsignal.freqtrade"):
        assert s.liq_confirm_trade_entry("BTC/USDT:USDT", 100.0, "long", NOW) is True
        assert s.liq_confirm_trade_entry("BTC/USDT:USDT", 100.0, "long", NOW) is True
        assert s.liq_leverage("BTC/USDT:USDT", NOW, 100.0, 10, 20, "long") == 10.0
        assert s.liq_custom_stoploss("BTC/USDT:USDT", object(), NOW, 100.0) is None
    recs = _records(caplog, "BTC/USDT:USDT")
    assert [r.getMessage().split(" failed")[0] for r in recs] == [
        "liqsignal guard entry for BTC/USDT:USDT",
        "liqsignal guard leverage for BTC/USDT:USDT",
        "liqsignal guard stop for BTC/USDT:USDT",
    ]
    assert all(r.exc_info and r.exc_info[0] is ZeroDivisionError for r in recs)


def test_liqsignal_error_is_one_line_without_traceback(caplog):
    s = Strat(DP(), InputError("column 'close' row 3: not finite"))
    with caplog.at_level(logging.WARNING, logger="liqsignal.freqtrade"):
        assert s.liq_confirm_trade_entry("ETH/USDT:USDT", 100.0, "short", NOW) is True
    (rec,) = _records(caplog, "ETH/USDT:USDT")
    assert rec.exc_info is None and "column 'close' row 3" in rec.getMessage()


def test_fail_closed_answers_the_cautious_defaults():
    s = Strat(DP(), RuntimeError("x"))
    s.config = {"liqsignal": {"guards": {"on_stale": "closed"}}}
    assert s.liq_confirm_trade_entry("BTC/USDT:USDT", 100.0, "long", NOW) is False
    assert s.liq_leverage("BTC/USDT:USDT", NOW, 100.0, 10, 20, "long") == 1.0


def test_context_per_dataprovider_and_attach():
    a, b = DP(), DP()
    assert liq_context(a) is liq_context(a) and liq_context(a) is not liq_context(b)
    assert liq_context(None) is liq_context() and isinstance(liq_context(None), LiqContext)
    s = Strat(a, RuntimeError("x"))
    provider = object()
    ctx = s.liq_attach(provider)
    assert ctx is liq_context(a) and ctx.provider is provider and liq_context(b).provider is None
    set_provider("process-wide")
    assert liq_context(None).provider == "process-wide" and liq_context(a).provider is provider
    reset_liq_context()
    assert liq_context(None).provider is None and liq_context(a).provider is None


def test_traceback_of_shows_bugs_only():
    from liqsignal.exceptions import traceback_of

    bug = ZeroDivisionError("x")
    assert traceback_of(bug) is bug
    assert traceback_of(InputError("row 3")) is None
    assert traceback_of(OSError("disk full")) is None and traceback_of(TimeoutError()) is None
    assert traceback_of(KeyError("k"), (KeyError,)) is None and traceback_of(None) is None
