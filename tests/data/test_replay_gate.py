"""Gate replay venue driven by the real ccxt.gate client: markets, candles, funding, OI with the
per-bar liquidation fields, public liquidation history (windows, full pages, Gate's errors).

Data served: see liq_util (real data in Gate's shapes, not Gate's own figures).
"""

from __future__ import annotations

import asyncio
import dataclasses
from collections.abc import Iterator
from pathlib import Path

import ccxt
import numpy as np
import pandas as pd
import pytest
from liq_util import SYM, TESTDATA, coinglass_bars, make_gate_datadir, real_events
from venues_util import ccxt_client

from liqsignal.data.exchanges import ExchangeClient, RetryPolicy
from liqsignal.data.liquidations import events_from_ccxt
from liqsignal.replay.gate import CONTRACT_SIZE
from liqsignal.replay.server import ReplayExchange


@pytest.fixture(scope="module")
def gate(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ReplayExchange]:
    src = make_gate_datadir(tmp_path_factory.mktemp("gate_src"))
    with ReplayExchange(src, venues=("gate",)) as rx:
        yield rx


def _client(rx: ReplayExchange) -> ExchangeClient:
    return ExchangeClient(
        "gate", rx.ccxt_config("gate"), retry=RetryPolicy(attempts=2, base_delay=0.01)
    )


def test_ccxt_gate_markets_candles_funding(gate: ReplayExchange) -> None:
    async def run() -> None:
        async with ccxt_client(gate, "gate") as api:
            markets = await api.load_markets()
            assert list(markets) == [SYM]
            m = markets[SYM]
            assert m["swap"] and m["linear"] and m["contractSize"] == CONTRACT_SIZE["BTC"]
            since = 1767225600000  # 2026-01-01
            rows = await api.fetch_ohlcv(SYM, "1h", since, 3)
            mark = await api.fetch_ohlcv(SYM, "1h", since, 3, {"price": "mark"})
        src = pd.read_feather(TESTDATA / "futures" / "BTC_USDT_USDT-1h-futures.feather")
        assert [r[0] for r in rows] == [since + i * 3_600_000 for i in range(3)]
        assert [r[4] for r in rows] == list(src["close"][:3])
        # Gate counts volume in contracts of 0.0001 BTC
        np.testing.assert_allclose(
            [r[5] for r in rows], src["volume"][:3] / CONTRACT_SIZE["BTC"], rtol=1e-9
        )
        assert [r[5] for r in mark] == [None, None, None]

    asyncio.run(run())


def test_client_download_units_and_funding(gate: ReplayExchange) -> None:
    """ExchangeClient turns Gate's contracts into base units and pages funding completely."""

    async def run() -> tuple[pd.DataFrame, pd.DataFrame, pd.DataFrame]:
        async with _client(gate) as c:
            since, until = 1767225600000, 1767225600000 + 299 * 3_600_000
            ohlcv = await c.fetch_ohlcv("BTC", "1h", since, until)
            oi = await c.fetch_open_interest_history("BTC", "1h", since, until)
            fr = await c.fetch_funding_rate_history("BTC", 1767225600000, 1772668800000)
            return ohlcv, oi, fr

    ohlcv, oi, fr = asyncio.run(run())
    fut = pd.read_feather(TESTDATA / "futures" / "BTC_USDT_USDT-1h-futures.feather")
    src_oi = pd.read_feather(TESTDATA / "futures" / "BTC_USDT_USDT-1h-open_interest.feather")
    src_fr = pd.read_feather(TESTDATA / "futures" / "BTC_USDT_USDT-1h-funding_rate.feather")
    assert len(ohlcv) == 300
    # volume round-trips through whole contracts: within half a contract
    assert np.abs(ohlcv["volume"].to_numpy() - fut["volume"][:300].to_numpy()).max() <= 0.00005
    expect_oi = src_oi[src_oi["date"].isin(ohlcv["date"])].reset_index(drop=True)
    assert len(oi) == len(expect_oi) > 250
    np.testing.assert_allclose(oi["open_interest_amount"], expect_oi["open_interest_amount"])
    assert list(fr["date"]) == list(src_fr["date"])  # all 189 rows, none skipped
    assert len(fr) == 189


def test_liquidation_bars_from_contract_stats(gate: ReplayExchange) -> None:
    async def run() -> pd.DataFrame:
        async with _client(gate) as c:
            return await c.fetch_liquidation_bars(
                "BTC", "1h", 1767225600000, 1767225600000 + 499 * 3_600_000
            )

    bars = asyncio.run(run())
    cg = coinglass_bars().set_index("date")
    assert len(bars) == 500  # five pages of 100
    assert bars["events"].isna().all()
    # hours the CoinGlass file lacks are served as 0, as Gate reports an hour without any
    known = bars["date"].isin(cg.index).to_numpy()
    assert 0 < (~known).sum() < 5
    assert (bars.loc[~known, ["long_liquidated_usd", "short_liquidated_usd"]] == 0).all().all()
    for col in ("long_liquidated_usd", "short_liquidated_usd"):
        np.testing.assert_allclose(
            bars.loc[known, col], cg.loc[bars["date"][known], col], rtol=1e-9
        )


def test_liquidation_orders_history_complete(gate: ReplayExchange) -> None:
    ev = real_events()
    since = int(ev["timestamp"].iloc[0].floor("1h").value // 1_000_000)
    until = int(ev["timestamp"].iloc[-1].ceil("1h").value // 1_000_000)

    async def run() -> object:
        async with _client(gate) as c:
            return await c.fetch_liquidations("BTC", since, until)

    n_before = len(gate.requests)
    hist = asyncio.run(run())
    got = hist.events  # type: ignore[attr-defined]
    assert len(got) == len(ev) == 468
    # Gate's times are whole seconds; every event comes back once, side and size intact
    expect = ev.assign(timestamp=ev["timestamp"].dt.floor("1s")).sort_values(
        ["timestamp", "usd"], kind="stable"
    )
    got = got.sort_values(["timestamp", "usd"], kind="stable")
    assert list(got["timestamp"]) == list(expect["timestamp"].dt.as_unit("ms"))
    assert list(got["side"]) == list(expect["side"])
    np.testing.assert_allclose(got["amount"], expect["amount"], rtol=1e-9)
    np.testing.assert_allclose(got["usd"], expect["usd"], rtol=1e-9)
    # every request within Gate's 3600 s limit; windows cover [since, until] from the first
    # event's window on, without holes
    liq = [r for r in gate.requests[n_before:] if r.path.endswith("/liq_orders")]
    assert liq and all(int(r.query["to"]) - int(r.query["from"]) <= 3600 for r in liq)
    assert hist.incomplete == []  # type: ignore[attr-defined]
    assert hist.covered == [(since, until // 1000 * 1000 + 999)]  # type: ignore[attr-defined]


def _fetch_with_page(src: Path, page: int, since: int, hours: int) -> tuple[object, int]:
    with ReplayExchange(src, venues=("gate",)) as rx:
        client = _client(rx)
        client.spec = dataclasses.replace(client.spec, liq_page=page)

        async def run() -> object:
            async with client:
                return await client.fetch_liquidations("BTC", since, since + hours * 3_600_000)

        hist = asyncio.run(run())
        return hist, sum(r.path.endswith("/liq_orders") for r in rx.requests)


def test_full_page_halves_window(tmp_path: Path) -> None:
    """A page of 18 rows: busy hours need smaller windows (whole seconds); nothing is lost.
    A page of 5 cannot hold the 17 liquidations of one second: that second is reported
    incomplete, left out of the coverage, and its first 5 events are kept."""
    src = make_gate_datadir(tmp_path)
    ev = real_events()
    t0 = ev["timestamp"].iloc[0].floor("1h")
    since = int(t0.value // 1_000_000)
    window = ev[(ev["timestamp"] >= t0) & (ev["timestamp"] < t0 + pd.Timedelta(hours=6, seconds=1))]
    per_second = window["timestamp"].dt.floor("1s").value_counts()
    assert len(window) == 30 and per_second.max() == 17

    hist, n_liq = _fetch_with_page(src, 18, since, 6)
    got = hist.events  # type: ignore[attr-defined]
    assert len(got) == len(window)
    assert n_liq > 7  # halvings happened
    assert sorted(got["usd"]) == pytest.approx(sorted(window["usd"]))
    assert hist.incomplete == []  # type: ignore[attr-defined]
    assert all(int(c[0]) % 1000 == 0 for c in hist.covered)  # type: ignore[attr-defined]

    hist, _ = _fetch_with_page(src, 5, since, 6)
    busy = per_second.index[0]
    busy_ms = int(busy.value // 1_000_000)
    assert hist.incomplete == [(busy_ms, busy_ms + 999)]  # type: ignore[attr-defined]
    covered = hist.covered  # type: ignore[attr-defined]
    assert not any(a <= busy_ms <= b for a, b in covered)
    assert len(hist.events) == len(window) - 17 + 5  # type: ignore[attr-defined]


def test_gate_errors_as_gate_answers(gate: ReplayExchange) -> None:
    async def run() -> None:
        async with ccxt_client(gate, "gate") as api:
            await api.load_markets()
            with pytest.raises(ccxt.BadRequest, match="3600"):
                await api.fetch_liquidations(
                    SYM, None, None, {"from": 1748100000, "to": 1748110000}
                )
            # ccxt 4.5 sends since in ms as Gate's `from` (seconds): a time far in the future,
            # so nothing comes back (why ExchangeClient sends the window in seconds itself)
            assert await api.fetch_liquidations(SYM, 1748186502000) == []
            with pytest.raises(ccxt.BadRequest, match="interval"):
                await api.fetch_open_interest_history(SYM, "2h", 1767225600000, 3)
            ok = await api.fetch_liquidations(
                SYM, None, None, {"from": 1748186400, "to": 1748190000}
            )
        ev = events_from_ccxt("gate", ok)
        assert len(ev) > 0 and set(ev["side"]) <= {"long", "short"}

    asyncio.run(run())
