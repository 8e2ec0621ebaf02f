"""``liqsignal download --liquidations`` against the Gate and Binance replay venues (real ccxt)."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pytest
from liq_util import SYM, TESTDATA, coinglass_bars, make_gate_datadir, real_events

from liqsignal.cli import main
from liqsignal.data.liquidations import LiquidationStore, realized_from_store
from liqsignal.replay.server import ReplayExchange


@pytest.fixture(scope="module")
def venues(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, ReplayExchange]]:
    root = tmp_path_factory.mktemp("dl_liq")
    gate = ReplayExchange(make_gate_datadir(root), venues=("gate",)).start()
    binance = ReplayExchange(TESTDATA, venues=("binance",)).start()
    yield {"gate": gate, "binance": binance}
    gate.stop()
    binance.stop()


def _run(
    venues: dict[str, ReplayExchange], datadir: Path, capsys: Any, *args: str
) -> tuple[int, dict[str, Any]]:
    cfg = datadir.parent / f"{datadir.name}-ccxt.json"
    # a local server: ccxt's rate limiter at 5 ms instead of the venue's 50 ms
    config = {ex: {**rx.ccxt_config(ex), "rateLimit": 5} for ex, rx in venues.items()}
    cfg.write_text(json.dumps(config))
    base = ["download", "-m", "BTC", "--datadir", str(datadir), "--ccxt-config", str(cfg)]
    code = main([*base, "--no-progress", "--json", *args])
    return code, json.loads(capsys.readouterr().out)


def _jobs(out: dict[str, Any]) -> dict[tuple[str, str, str], dict[str, Any]]:
    return {(j["exchange"], j["timeframe"], j["candle_type"]): j for j in out["jobs"]}


def test_events_history_complete_and_resumed(
    venues: dict[str, ReplayExchange], tmp_path: Path, capsys: Any
) -> None:
    datadir = tmp_path / "data"
    window = ("--since", "2025-05-25", "--until", "2025-05-27")
    code, out = _run(
        venues, datadir, capsys, "-e", "gate", "binance", "-t", "1h", "--candle-types", "futures",
        "--liquidations", *window,
    )  # fmt: skip
    assert code == 0, out
    jobs = _jobs(out)
    ev_job = jobs[("gate", "-", "liquidation_events")]
    src = real_events()
    src = src[src["timestamp"] < pd.Timestamp("2025-05-27", tz="UTC")]
    assert ev_job["status"] == "ok" and ev_job["rows_added"] == len(src) > 300
    # Binance keeps no liquidation history: skipped, the job says where to get it
    assert jobs[("binance", "-", "liquidation_events")]["status"] == "skipped"
    assert "liqsignal watch" in jobs[("binance", "-", "liquidations")]["message"]

    store = LiquidationStore(datadir)
    got = store.read_events("gate", SYM)
    assert sorted(got["usd"]) == pytest.approx(sorted(src["usd"]))
    spans = store.spans("gate", SYM)
    first = src["timestamp"].iloc[0].floor("1h")
    assert list(spans["kind"]) == ["covered"]
    assert spans["start"][0] == first  # history counted from the first window with an event
    # to the end of the last whole second asked (--until 2025-05-27 00:00:00 included)
    assert spans["end"][0] == pd.Timestamp("2025-05-27 00:00:01", tz="UTC")
    # the bar of 2025-05-27 00:00 is covered for one second only: unknown
    assert np.isnan(store.bars("gate", SYM, "1h")["long_liquidated_usd"].iloc[-1])
    bars = store.bars("gate", SYM, "1h", end="2025-05-27")
    assert bars["date"].iloc[0] == first and len(bars) == 24 * 2 - first.hour
    assert not bars["long_liquidated_usd"].isna().any()  # covered: known, zeros included
    assert (bars["long_liquidated_usd"] == 0).sum() > 0
    # the events and Gate's own 5-minute sums (--liquidations fetched both) agree hour by hour
    hours = src["timestamp"].dt.floor("1h")
    for side in ("long", "short"):
        per_hour = src["usd"].where(src["side"] == side, 0.0).groupby(hours).sum()
        got_side = bars.set_index("date")[f"{side}_liquidated_usd"]
        np.testing.assert_allclose(
            got_side, per_hour.reindex(got_side.index, fill_value=0.0), rtol=1e-9, atol=1e-6
        )
    assert bars["long_liquidated_usd"].sum() + bars["short_liquidated_usd"].sum() == (
        pytest.approx(src["usd"].sum())
    )

    n = len(venues["gate"].requests)
    code, out = _run(
        venues, datadir, capsys, "-e", "gate", "-t", "1h", "--candle-types", "liquidation_events",
        *window,
    )  # fmt: skip
    assert code == 0
    assert _jobs(out)[("gate", "-", "liquidation_events")]["message"] == "up to date"
    liq_calls = [r for r in venues["gate"].requests[n:] if r.path.endswith("/liq_orders")]
    assert liq_calls == []
    # a longer window resumes after the covered span, adds the rest, nothing twice
    code, out = _run(
        venues, datadir, capsys, "-e", "gate", "-t", "1h", "--since", "2025-05-25",
        "--until", "2025-05-28", "--candle-types", "liquidation_events",
    )  # fmt: skip
    more = real_events()
    more = more[more["timestamp"] < pd.Timestamp("2025-05-28", tz="UTC")]
    assert len(store.read_events("gate", SYM)) == len(more)
    assert len(store.spans("gate", SYM)) == 1


def test_per_bar_sums_from_contract_stats(
    venues: dict[str, ReplayExchange], tmp_path: Path, capsys: Any
) -> None:
    """Gate's 5-minute contract_stats sums (the replay sums its liquidation orders, as Gate
    does) stored at 5m; 1h bars are their sums, known only when all twelve are there."""
    datadir = tmp_path / "data"
    window = ("--since", "2025-05-25", "--until", "2025-05-27")
    args = ("-e", "gate", "-t", "1h", "--candle-types", "liquidations", *window)
    code, out = _run(venues, datadir, capsys, *args)
    assert code == 0, out
    job = _jobs(out)[("gate", "5m", "liquidations")]
    ev = real_events()  # the BTC events end 2025-05-26 06:56: Gate's sums end with them
    first5, last5 = ev["timestamp"].iloc[0].floor("5min"), ev["timestamp"].iloc[-1].floor("5min")
    n5 = (last5 - first5) // pd.Timedelta("5min") + 1
    assert job["status"] == "ok" and job["rows_added"] == n5 == 188
    assert job["path"].endswith("BTC_USDT_USDT-5m-liquidations.feather")
    r = realized_from_store(datadir, "gate", SYM, "1h").set_index("date")
    hours = pd.date_range(first5.floor("1h"), last5.floor("1h"), freq="1h")
    full = hours[(hours >= first5) & (hours + pd.Timedelta("55min") <= last5)]
    assert list(r.index) == list(hours) and len(full) == len(hours) - 1
    for side in ("long", "short"):
        per_hour = ev["usd"].where(ev["side"] == side, 0.0).groupby(ev["timestamp"].dt.floor("1h"))
        expect = per_hour.sum().reindex(full, fill_value=0.0)
        np.testing.assert_allclose(r.loc[full, f"realized_{side}_usd"], expect, rtol=1e-9)
    # the first hour lacks the 5-minute bars before the first event: unknown, not a sum
    assert np.isnan(r.loc[first5.floor("1h"), "realized_long_usd"])
    # 4h bars from the same 5m file
    r4 = realized_from_store(datadir, "gate", SYM, "4h")
    assert r4["realized_short_usd"].notna().sum() == 3  # the complete 4h bars of that span
    # a second run resumes after the last stored bar and finds nothing new
    code, out = _run(venues, datadir, capsys, *args)
    again = _jobs(out)[("gate", "5m", "liquidations")]
    assert again["rows_added"] == 0 and again["message"] == "no new rows"


def test_liquidation_timeframe_option(
    venues: dict[str, ReplayExchange], tmp_path: Path, capsys: Any
) -> None:
    """``--liquidation-timeframe 1h`` fetches Gate's hourly sums (here the CoinGlass bars the
    replay serves as Gate's); an interval Gate does not sum fails that job, naming the option."""
    datadir = tmp_path / "data"
    base = ("-e", "gate", "-t", "1h", "--candle-types", "liquidations")
    window = ("--since", "2026-01-01", "--until", "2026-01-03")
    code, out = _run(venues, datadir, capsys, *base, *window, "--liquidation-timeframe", "1h")
    assert code == 0, out
    job = _jobs(out)[("gate", "1h", "liquidations")]
    assert job["rows_added"] == 49
    r = realized_from_store(datadir, "gate", SYM, "1h").set_index("date")
    cg = coinglass_bars().set_index("date")
    np.testing.assert_allclose(r["realized_long_usd"], cg.loc[r.index, "long_liquidated_usd"])
    code, out = _run(venues, datadir, capsys, *base, *window, "--liquidation-timeframe", "2h")
    assert code == 1
    bad = _jobs(out)[("gate", "2h", "liquidations")]
    assert bad["status"] == "failed" and "--liquidation-timeframe" in bad["message"]
