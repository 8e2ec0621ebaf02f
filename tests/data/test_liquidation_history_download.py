"""``liqsignal download --liquidations`` on the history-only venues (bitfinex, htx) with the real
ccxt clients against the local replays: the liquidation store written whole and resumed, a venue
that is down fails its own jobs only, deribit refused saying why, no candle job on them.

Data served: the bundled real Hyperliquid liquidations, sides relabelled from the price move.
"""

from __future__ import annotations

import json
import socket
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pytest

from liqsignal.cli import main
from liqsignal.data.liquidation_venues import HISTORY_VENUES, HistoryClient
from liqsignal.data.liquidations import LiquidationStore, events_from_ccxt
from liqsignal.exceptions import ConfigError
from liqsignal.replay._history import bundled_events
from liqsignal.replay.server import ReplayExchange

TESTDATA = Path(__file__).resolve().parents[1] / "testdata" / "replay_binance"
SYM = "BTC/USDT:USDT"
WINDOW = ("--since", "2025-05-25", "--until", "2025-05-27")
END = pd.Timestamp("2025-05-27", tz="UTC")


@pytest.fixture(scope="module")
def venues() -> Iterator[dict[str, ReplayExchange]]:
    out = {v: ReplayExchange(TESTDATA, venues=(v,)).start() for v in ("bitfinex", "htx")}
    yield out
    for rx in out.values():
        rx.stop()


def _run(
    config: dict[str, Any], datadir: Path, capsys: Any, *args: str
) -> tuple[int, dict[str, Any]]:
    cfg = datadir.parent / f"{datadir.name}-ccxt.json"
    cfg.write_text(json.dumps(config))
    base = ["download", "--datadir", str(datadir), "--ccxt-config", str(cfg), "--retries", "2"]
    code = main([*base, "--no-progress", "--json", *args])
    captured = capsys.readouterr()
    assert captured.out, captured.err
    return code, json.loads(captured.out)


def _jobs(out: dict[str, Any]) -> dict[tuple[str, str, str], dict[str, Any]]:
    return {(j["exchange"], j["market"], j["candle_type"]): j for j in out["jobs"]}


def _served(market: str) -> pd.DataFrame:
    ev = bundled_events()
    ev = ev[(ev["market"] == market) & (ev["timestamp"] <= END.value // 1_000_000)]
    return ev.reset_index(drop=True)


def _config(venues: dict[str, ReplayExchange]) -> dict[str, Any]:
    return {v: rx.ccxt_config(v) for v, rx in venues.items()}


def test_download_writes_the_store_and_resumes(
    venues: dict[str, ReplayExchange], tmp_path: Path, capsys: Any
) -> None:
    datadir = tmp_path / "data"
    code, out = _run(
        _config(venues), datadir, capsys, "-m", "BTC", "ETH", "-e", "bitfinex", "htx",
        "--candle-types", "futures", "--liquidations", *WINDOW,
    )  # fmt: skip
    assert code == 0, out
    jobs = _jobs(out)
    store = LiquidationStore(datadir)
    for venue in ("bitfinex", "htx"):
        for market in ("BTC", "ETH"):
            job = jobs[(venue, market, "liquidation_events")]
            served = _served(market)
            assert job["status"] == "ok" and job["rows_added"] == len(served) > 50, job
            got = store.read_events(venue, f"{market}/USDT:USDT")
            assert len(got) == len(served) and got["id"].is_unique
            assert got["timestamp"].is_monotonic_increasing
            assert got["side"].value_counts().to_dict() == served["side"].value_counts().to_dict()
            np.testing.assert_allclose(
                sorted(got["usd"]), sorted(served["amount"] * served["price"]), rtol=1e-6
            )
            spans = store.spans(venue, f"{market}/USDT:USDT")
            assert list(spans["kind"]) == ["covered"]
        # no candles and no per-bar sums on a history-only venue: skipped, saying why
        assert jobs[(venue, "BTC", "futures")]["status"] == "skipped"
        assert "--liquidations" in jobs[(venue, "BTC", "futures")]["message"]
        assert jobs[(venue, "BTC", "liquidations")]["status"] == "skipped"
    # the store sums the events into bars: hour by hour what was served, zeros known
    bars = store.bars("htx", SYM, "1h", end="2025-05-26 23:00")
    src = _served("BTC")
    hours = pd.to_datetime(src["timestamp"], unit="ms", utc=True).dt.floor("1h")
    long_usd = (src["amount"] * src["price"]).where(src["side"] == "long", 0.0)
    per_hour = long_usd.groupby(hours).sum()
    got = bars.set_index("date")["long_liquidated_usd"]
    assert not got.isna().any() and (got == 0).sum() > 0
    np.testing.assert_allclose(got, per_hour.reindex(got.index, fill_value=0.0), rtol=1e-6)

    # a second run asks nothing already covered
    for rx in venues.values():
        rx.clear_log()
    code, out = _run(
        _config(venues), datadir, capsys, "-m", "BTC", "-e", "bitfinex", "htx",
        "--candle-types", "liquidation_events", *WINDOW,
    )  # fmt: skip
    assert code == 0
    for venue, path in (("bitfinex", "/liquidations/hist"), ("htx", "/liquidation_orders")):
        assert _jobs(out)[(venue, "BTC", "liquidation_events")]["message"] == "up to date"
        assert not [r for r in venues[venue].requests if r.path.endswith(path)]


def test_a_venue_down_does_not_stop_the_others(
    venues: dict[str, ReplayExchange], tmp_path: Path, capsys: Any
) -> None:
    with socket.socket() as s:  # a port nothing listens on
        s.bind(("127.0.0.1", 0))
        dead = f"http://127.0.0.1:{s.getsockname()[1]}"
    config = _config(venues)
    config["bitfinex"] = {
        **config["bitfinex"],
        "urls": {"api": dict.fromkeys(("v1", "public", "private"), dead)},
        "timeout": 2000,
    }
    code, out = _run(
        config, tmp_path / "data", capsys, "-m", "BTC", "-e", "bitfinex", "htx",
        "--candle-types", "liquidation_events", *WINDOW,
    )  # fmt: skip
    assert code == 1
    jobs = _jobs(out)
    down = jobs[("bitfinex", "BTC", "liquidation_events")]
    assert down["status"] == "failed"
    assert down["message"].startswith("TemporaryDataError: bitfinex *: load markets failed")
    up = jobs[("htx", "BTC", "liquidation_events")]
    assert up["status"] == "ok" and up["rows_added"] == len(_served("BTC"))


def test_history_venue_beside_a_full_exchange(tmp_path: Path, capsys: Any) -> None:
    """One command, one table: binance's candles and bitfinex's liquidation history."""
    with (
        ReplayExchange(TESTDATA, venues=("binance",)) as binance,
        ReplayExchange(TESTDATA, venues=("bitfinex",)) as bitfinex,
    ):
        config = {
            "binance": {**binance.ccxt_config("binance"), "rateLimit": 5},
            "bitfinex": bitfinex.ccxt_config("bitfinex"),
        }
        code, out = _run(
            config, tmp_path / "data", capsys, "-m", "BTC", "-e", "binance", "bitfinex",
            "-t", "1h", "--candle-types", "futures", "--since", "2026-03-01",
            "--until", "2026-03-02", "--liquidations",
        )  # fmt: skip
        # the same --ccxt-config (it names bitfinex) for binance alone
        code2, out2 = _run(
            config, tmp_path / "data2", capsys, "-m", "BTC", "-e", "binance", "-t", "1h",
            "--candle-types", "futures", "--since", "2026-03-01", "--until", "2026-03-02",
        )  # fmt: skip
    assert code2 == 0 and {j["exchange"] for j in out2["jobs"]} == {"binance"}
    assert code == 0, out
    jobs = _jobs(out)
    assert jobs[("binance", "BTC", "futures")]["status"] == "ok"
    assert jobs[("binance", "BTC", "liquidation_events")]["status"] == "skipped"
    assert jobs[("bitfinex", "BTC", "liquidation_events")]["status"] == "ok"
    assert out["requests"]["bitfinex"] >= 2 and out["requests"]["binance"] > 0


def test_deribit_refused_saying_why(tmp_path: Path, capsys: Any) -> None:
    """ccxt's deribit fetch_liquidations returns settlement 'bankruptcy' records (no side, no
    price): not liquidation orders. The data layer refuses them everywhere."""
    code, out = _run(
        {}, tmp_path / "data", capsys, "-m", "BTC", "-e", "deribit", "--liquidations",
        "--candle-types", "liquidation_events", *WINDOW,
    )  # fmt: skip
    assert code == 0  # nothing failed: nothing could be asked
    job = _jobs(out)[("deribit", "BTC", "liquidation_events")]
    assert job["status"] == "skipped" and "bankruptcy" in job["message"]
    assert HISTORY_VENUES["deribit"].refused and "bankruptcy" in HISTORY_VENUES["deribit"].refused
    with pytest.raises(ConfigError, match=r"deribit: liquidation history refused: .*bankruptcy"):
        HistoryClient("deribit")
    record = {  # what ccxt 4.5's deribit parser returns (its docstring's example)
        "info": {"type": "bankruptcy", "timestamp": 1696579200041, "session_bankrupcy": 0.001},
        "symbol": "BTC/USD:BTC",
        "contracts": None,
        "price": None,
        "baseValue": 0.001,
        "timestamp": 1696579200041,
    }
    with pytest.raises(ConfigError, match="bankruptcy"):
        events_from_ccxt("deribit", [record], "BTC/USD:BTC")


def test_bad_arguments(venues: dict[str, ReplayExchange], tmp_path: Path, capsys: Any) -> None:
    code = main(
        ["download", "-m", "BTC", "-e", "htx", "--since", "2025-05-27", "--until", "2025-05-25",
         "--liquidations", "--datadir", str(tmp_path), "--no-progress"]
    )  # fmt: skip
    assert code == 2 and "before since" in capsys.readouterr().err
    cfg = tmp_path / "bad.json"
    cfg.write_text(json.dumps({"kraken": {}}))
    code = main(
        ["download", "-m", "BTC", "-e", "htx", *WINDOW, "--liquidations", "--datadir",
         str(tmp_path), "--ccxt-config", str(cfg), "--no-progress"]
    )  # fmt: skip
    err = capsys.readouterr().err
    assert code == 2 and "['kraken'] are not exchanges" in err and "bitfinex" in err
