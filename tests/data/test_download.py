"""download(): many markets on many exchanges into the store, resumable, failures isolated."""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any

import pandas as pd
import pytest
from freqtrade.data.history.datahandlers.featherdatahandler import FeatherDataHandler
from freqtrade.enums import CandleType
from venues_util import TESTDATA, VENUES, Venues, ccxt_configs

import liqsignal.replay.bybit
import liqsignal.replay.okx  # noqa: F401  (registers the venue)
from liqsignal.data.download import add_download_arguments, download, run_download
from liqsignal.data.exchanges import RetryPolicy
from liqsignal.data.store import FeatherStore
from liqsignal.exceptions import ConfigError
from liqsignal.replay.server import ReplayExchange
from liqsignal.replay.testing import KINDS, FaultRule, Faults

SINCE = "2026-01-01"
UNTIL = "2026-03-05"
FAST = RetryPolicy(attempts=3, base_delay=0.01, max_delay=0.05)
PAIR = "BTC/USDT:USDT"
REF = {
    ct: pd.read_feather(TESTDATA / "futures" / f"BTC_USDT_USDT-1h-{ct}.feather")
    for ct in ("futures", "funding_rate", "open_interest")
}


def _config(venues: Venues) -> dict[str, dict[str, Any]]:
    return ccxt_configs(venues, timeout_ms=3000)


def _download(venues: dict[str, tuple[ReplayExchange, Faults]], datadir: Path, **kw: Any) -> Any:
    args: dict[str, Any] = dict(
        until=UNTIL,
        exchange_config=_config(venues),
        retry=FAST,
        history_limits=False,
        progress=False,
    )
    args.update(kw)
    return download(
        args.pop("markets", ["BTC"]),
        args.pop("exchanges", list(VENUES)),
        args.pop("timeframes", ["1h"]),
        args.pop("since", SINCE),
        datadir,
        **args,
    )


def test_many_exchanges_one_run_then_resume(
    venues: dict[str, tuple[ReplayExchange, Faults]], tmp_path: Path
) -> None:
    summary = _download(venues, tmp_path)
    assert summary.ok, summary.table()
    by = {(r.exchange, r.candle_type): r for r in summary.results}
    assert by[("bybit", "taker_buy")].status == "skipped"  # only Binance gives it
    assert by[("binance", "taker_buy")].rows_added == len(REF["futures"])
    for venue in VENUES:
        handler = FeatherDataHandler(tmp_path / venue)
        for ct, ref in REF.items():
            df = handler.ohlcv_load(PAIR, "1h", candle_type=CandleType(ct), warn_no_data=False)
            assert (df["date"].to_numpy() == ref["date"].to_numpy()).all(), (venue, ct)
            assert by[(venue, ct)].rows_added == len(ref)
        mark = handler.ohlcv_load(PAIR, "1h", candle_type=CandleType.MARK, warn_no_data=False)
        assert len(mark) == len(REF["futures"])
    first_requests = sum(summary.requests.values())

    again = _download(venues, tmp_path)
    assert again.ok and again.rows_added() == 0
    assert sum(again.requests.values()) < first_requests / 2
    assert "0 rows added" in again.table()


def test_resume_from_partial_store_without_duplicates(
    venues: dict[str, tuple[ReplayExchange, Faults]], tmp_path: Path
) -> None:
    store = FeatherStore(tmp_path)
    store.merge("bybit", PAIR, "1h", "futures", REF["futures"].iloc[:700])
    summary = _download(venues, tmp_path, exchanges=["bybit"], candle_types=["futures"])
    assert summary.ok
    [res] = summary.results
    assert (res.rows_added, res.rows_total) == (len(REF["futures"]) - 700, len(REF["futures"]))
    got = store.read("bybit", PAIR, "1h", "futures")
    assert got["date"].is_unique and (got["date"].to_numpy() == REF["futures"]["date"]).all()
    kline = [r for r in venues["bybit"][0].requests if r.path == "/v5/market/kline"]
    assert int(kline[0].query["start"]) == int(REF["futures"]["date"].iloc[700].value // 10**6)


def test_failing_exchange_and_market_are_reported_others_carry_on(
    venues: dict[str, tuple[ReplayExchange, Faults]], tmp_path: Path
) -> None:
    store = FeatherStore(tmp_path)
    store.merge("bybit", PAIR, "1h", "futures", REF["futures"].iloc[:100])
    kept = store.path("bybit", PAIR, "1h", "futures").read_bytes()
    venues["bybit"][1].server_error("/v5/market/kline", status=502, times=None)
    venues["okx"][1].delist("BTC-USDT-SWAP", path="/api/v5/public/funding-rate-history")
    summary = _download(venues, tmp_path, markets=["BTC", "DOGE"])
    failed = {(r.exchange, r.market, r.candle_type): r.message for r in summary.failed}
    assert "TemporaryDataError" in failed[("bybit", "BTC", "futures")]
    assert "3 attempts" in failed[("bybit", "BTC", "futures")]
    assert "PermanentDataError" in failed[("okx", "BTC", "funding_rate")]
    assert "okx BTC/USDT:USDT" in failed[("okx", "BTC", "funding_rate")]
    for venue in VENUES:  # DOGE is not listed on the replays
        assert "'DOGE'" in failed[(venue, "DOGE", "futures")]
    # what was stored is untouched; the other jobs of the same exchanges went through
    assert store.path("bybit", PAIR, "1h", "futures").read_bytes() == kept
    ok = {(r.exchange, r.candle_type) for r in summary.results if r.status == "ok"}
    assert {("binance", "futures"), ("bybit", "funding_rate"), ("okx", "futures")} <= ok
    assert len(store.read("binance", PAIR, "1h", "futures")) == len(REF["futures"])
    assert not summary.ok and "failed" in summary.table()


@pytest.mark.parametrize("kind", KINDS)
def test_each_fault_keeps_stored_rows_and_spares_other_exchanges(
    venues: dict[str, tuple[ReplayExchange, Faults]], tmp_path: Path, kind: str
) -> None:
    store = FeatherStore(tmp_path)
    store.merge("bybit", PAIR, "1h", "futures", REF["futures"].iloc[:500])
    faults = venues["bybit"][1]
    if kind == "delist":
        faults.delist("BTCUSDT", path="/v5/market/kline")
    else:
        opts: dict[str, Any] = {"timeout": {"delay_s": 0.6}, "rate_limit": {"retry_after": 0.1}}
        faults.add(FaultRule(kind, "/v5/market/kline", times=1, **opts.get(kind, {})))
    cfg = _config(venues)
    cfg["bybit"]["timeout"] = 300
    summary = _download(
        venues,
        tmp_path,
        exchange_config=cfg,
        exchanges=["binance", "bybit"],
        candle_types=["futures"],
    )
    by = {r.exchange: r for r in summary.results}
    assert by["binance"].status == "ok" and by["binance"].rows_added == len(REF["futures"])
    got = store.read("bybit", PAIR, "1h", "futures")
    assert got["date"].is_unique and got["date"].is_monotonic_increasing
    if kind == "delist":
        assert by["bybit"].status == "failed"
        assert "PermanentDataError: bybit BTC/USDT:USDT" in by["bybit"].message
        assert len(got) == 500  # nothing stored was lost
        assert (got["date"].to_numpy() == REF["futures"]["date"].iloc[:500].to_numpy()).all()
    else:
        assert by["bybit"].status == "ok", by["bybit"].message
        assert (got["date"].to_numpy() == REF["futures"]["date"].to_numpy()).all()
        assert got["close"].to_numpy() == pytest.approx(REF["futures"]["close"].to_numpy())


def test_interrupted_job_keeps_its_chunks_and_resumes(
    venues: dict[str, tuple[ReplayExchange, Faults]], tmp_path: Path
) -> None:
    faults = venues["okx"][1]
    faults.server_error("/api/v5/market/", times=None, after=2)  # dies on the third page
    kw: dict[str, Any] = dict(exchanges=["okx"], candle_types=["futures"], chunk_pages=1)
    first = _download(venues, tmp_path, **kw)
    [res] = first.failed
    assert res.rows_added == 600 and "600 rows stored before" in res.message
    store = FeatherStore(tmp_path)
    assert len(store.read("okx", PAIR, "1h", "futures")) == 600
    faults.clear()
    second = _download(venues, tmp_path, **kw)
    assert second.ok and second.results[0].rows_added == len(REF["futures"]) - 600
    got = store.read("okx", PAIR, "1h", "futures")
    assert (got["date"].to_numpy() == REF["futures"]["date"].to_numpy()).all()


def test_repeated_empty_answers_are_reported_as_gaps(
    venues: dict[str, tuple[ReplayExchange, Faults]], tmp_path: Path
) -> None:
    """One empty answer is asked again (no loss); two in a row are taken as a gap, and said."""
    faults = venues["okx"][1]
    faults.empty_page("/api/v5/market/", after=1, times=2)
    summary = _download(venues, tmp_path, exchanges=["okx"], candle_types=["futures"])
    [res] = summary.results
    assert res.status == "ok" and len(res.gaps) == 1
    assert res.rows_added == len(REF["futures"]) - 300  # the second page of 300 was skipped
    assert "1 empty window(s) between rows, first at 2026-01-13 12:00:00" in res.message


def test_corrupt_file_fails_its_job_only(
    venues: dict[str, tuple[ReplayExchange, Faults]], tmp_path: Path
) -> None:
    store = FeatherStore(tmp_path)
    path = store.path("binance", PAIR, "1h", "open_interest")
    path.parent.mkdir(parents=True)
    path.write_bytes(b"ARROW1 not really")
    summary = _download(venues, tmp_path, exchanges=["binance"])
    [bad] = summary.failed
    assert bad.candle_type == "open_interest" and str(path) in bad.message
    assert path.read_bytes() == b"ARROW1 not really"
    assert len(store.read("binance", PAIR, "1h", "futures")) == len(REF["futures"])


def test_bad_arguments_are_config_errors(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="ftx"):
        download(["BTC"], ["ftx"], ["1h"], SINCE, tmp_path, progress=False)
    with pytest.raises(ConfigError, match="since"):
        download(["BTC"], ["binance"], ["1h"], "yesterday-ish", tmp_path, progress=False)
    with pytest.raises(ConfigError, match="candle_types"):
        download(["BTC"], ["binance"], ["1h"], SINCE, tmp_path, candle_types=["trades"])
    with pytest.raises(ConfigError, match="exchange_config"):
        download(["BTC"], ["binance"], ["1h"], SINCE, tmp_path, exchange_config={"kraken": {}})


def test_cli_entry_points(
    venues: dict[str, tuple[ReplayExchange, Faults]],
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
) -> None:
    cfg = tmp_path / "ccxt.json"
    cfg.write_text(json.dumps({"okx": _config(venues)["okx"]}))
    parser = argparse.ArgumentParser()
    add_download_arguments(parser)
    argv = ["-m", "BTC", "-e", "okx", "--since", SINCE, "--until", UNTIL, "--no-progress"]
    argv += ["--datadir", str(tmp_path / "data"), "--ccxt-config", str(cfg)]
    argv += ["--no-history-limits", "--candle-types", "futures", "funding_rate"]
    assert run_download(parser.parse_args(argv)) == 0
    out = capsys.readouterr().out
    assert "okx" in out and "2 jobs, 0 failed" in out
    assert (tmp_path / "data/okx/futures/BTC_USDT_USDT-1h-futures.feather").exists()
    bad = parser.parse_args([*argv[:6], "--since", "not a date", "--no-progress"])
    assert run_download(bad) == 2
    assert "since" in capsys.readouterr().err  # errors go to stderr (one line)
    # a second run as JSON: resumes (nothing new) and reports the same jobs
    assert run_download(parser.parse_args([*argv, "--json"])) == 0
    summary = json.loads(capsys.readouterr().out)
    assert summary["ok"] is True and summary["failed"] == 0
    assert {j["candle_type"] for j in summary["jobs"]} == {"futures", "funding_rate"}
    assert summary["rows_added"] == 0
    assert all(j["exchange"] == "okx" and j["status"] == "ok" for j in summary["jobs"])
