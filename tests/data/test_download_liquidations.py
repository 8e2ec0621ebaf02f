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
from liqsignal.data.replay.server import ReplayExchange


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
    assert "liqsignal watch" in jobs[("binance", "1h", "liquidations")]["message"]

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
    assert (bars["events"] == 0).sum() > 0
    assert bars["events"].sum() == len(src)
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
    datadir = tmp_path / "data"
    window = ("--since", "2026-01-01", "--until", "2026-01-15")
    code, out = _run(
        venues, datadir, capsys, "-e", "gate", "-t", "1h", "4h", "--candle-types", "liquidations",
        *window,
    )  # fmt: skip
    assert code == 0, out
    jobs = _jobs(out)
    assert jobs[("gate", "1h", "liquidations")]["rows_added"] == 14 * 24 + 1
    assert jobs[("gate", "4h", "liquidations")]["status"] == "ok"
    r = realized_from_store(datadir, "gate", SYM, "1h")
    cg = coinglass_bars().set_index("date")
    known = r["date"].isin(cg.index).to_numpy()
    np.testing.assert_allclose(
        r.loc[known, "realized_long_usd"], cg.loc[r["date"][known], "long_liquidated_usd"]
    )
    # the 4h file is Gate's own 4h sums (the replay adds the 1h rows up)
    r4 = realized_from_store(datadir, "gate", SYM, "4h")
    assert len(r4) == 14 * 6 + 1
    assert r4["realized_short_usd"].sum() > 0
    # a second run is up to date
    code, out = _run(
        venues, datadir, capsys, "-e", "gate", "-t", "1h", "--candle-types", "liquidations",
        *window,
    )  # fmt: skip
    assert _jobs(out)[("gate", "1h", "liquidations")]["message"] == "up to date"
