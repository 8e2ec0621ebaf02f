"""``liqsignal import-liquidations``: real per-bar and event files into the store, checked."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pytest
from liq_util import RESOURCES, ROOT, real_events

from liqsignal.cli import main
from liqsignal.data.liquidations import LiquidationStore

COINGLASS = RESOURCES / "coinglass_btc_1h_price_oi_funding_liquidations.csv"
SYM = "BTC/USDT:USDT"


def _cli(capsys: Any, *argv: str) -> tuple[int, str, str]:
    code = main(["import-liquidations", *argv])
    out = capsys.readouterr()
    return code, out.out, out.err


def test_bundled_coinglass_file_as_bars(tmp_path: Path, capsys: Any) -> None:
    args = [str(COINGLASS), "--exchange", "coinglass", "--symbol", SYM, "--datadir", str(tmp_path)]
    code, out, err = _cli(capsys, *args)
    assert code == 0, err
    cg = pd.read_csv(COINGLASS)
    assert f"bars: {len(cg)} rows read, {len(cg)} new" in out
    store = LiquidationStore(tmp_path)
    bars = store.bars("coinglass", SYM, "1h")
    got = bars.set_index("date").loc[pd.to_datetime(cg["timestamp"], unit="ms", utc=True)]
    np.testing.assert_allclose(got["long_liquidated_usd"], cg["liquidation_long_usd"])
    np.testing.assert_allclose(got["short_liquidated_usd"], cg["liquidation_short_usd"])
    # hours missing from the file are unknown, not zero
    missing = ~bars["date"].isin(got.index)
    assert missing.sum() > 0 and bars.loc[missing, "long_liquidated_usd"].isna().all()
    # again: nothing new
    code, out, _ = _cli(capsys, *args)
    assert code == 0 and f"{len(cg)} rows read, 0 new" in out


def test_event_file_csv_and_parquet(tmp_path: Path, capsys: Any) -> None:
    ev = real_events()
    raw = pd.DataFrame(
        {
            "Timestamp": ev["timestamp"].dt.strftime("%Y-%m-%dT%H:%M:%S.%fZ"),
            "Side": np.where(ev["side"] == "long", "sell", "buy"),  # forced order's side
            "price": ev["price"],
            "size_usd": ev["usd"],
        }
    )
    csv = tmp_path / "events.csv"
    raw.to_csv(csv, index=False)
    base = ["--exchange", "binance", "--symbol", SYM, "--datadir", str(tmp_path / "d")]
    code, _, err = _cli(capsys, str(csv), *base)
    assert code == 2 and "column 'Side' says 'sell' at row 0" in err and "--sides" in err
    code, out, err = _cli(capsys, str(csv), *base, "--sides", "order")
    assert code == 0, err
    assert f"events: {len(ev)} rows read, {len(ev)} new" in out
    store = LiquidationStore(tmp_path / "d")
    got = store.read_events("binance", SYM)
    assert list(got["side"]) == list(ev["side"])
    np.testing.assert_allclose(got["amount"], ev["amount"], rtol=1e-12)
    # the span first..last event is covered: quiet hours inside it read 0
    bars = store.bars("binance", SYM, "1h")
    assert bars["events"].sum() == len(ev) - _edge_events(ev)
    assert (bars["events"] == 0).any()
    # the same events as Parquet with base amounts and long/short sides: all duplicates
    pq = tmp_path / "events.parquet"
    ev[["timestamp", "side", "price", "amount"]].to_parquet(pq)
    code, out, _ = _cli(capsys, str(pq), *base)
    assert code == 0 and f"{len(ev)} rows read, 0 new" in out


def _edge_events(ev: pd.DataFrame) -> int:
    """Events in the partly covered first and last hours (their bars are NaN)."""
    first, last = ev["timestamp"].min(), ev["timestamp"].max()
    hours = ev["timestamp"].dt.floor("1h")
    return int(((hours == first.floor("1h")) | (hours == last.floor("1h"))).sum())


@pytest.mark.parametrize(
    ("change", "message"),
    [
        (lambda d: d.drop(columns=["price"]), "missing column 'price'"),
        (lambda d: d.drop(columns=["size_usd"]), "no size column"),
        (lambda d: d.drop(columns=["timestamp"]), "no time column"),
        (
            lambda d: d.assign(price=["x", *d["price"][1:]]),
            "column 'price' is not a number at row 0",
        ),
        (lambda d: d.assign(side=["long", "S", *d["side"][2:]]), "column 'side'.*'s' at row 1"),
        (lambda d: d.assign(timestamp=["2025-05-25", "never", *d["timestamp"][2:]]), "timestamp"),
    ],
)
def test_bad_event_columns_named(tmp_path: Path, capsys: Any, change: Any, message: str) -> None:
    ev = real_events().iloc[:10]
    df = pd.DataFrame(
        {
            "timestamp": ev["timestamp"].astype(str),
            "side": ev["side"],
            "price": ev["price"],
            "size_usd": ev["usd"],
        }
    )
    path = tmp_path / "bad.csv"
    change(df).to_csv(path, index=False)
    code, _, err = _cli(
        capsys, str(path), "--exchange", "x", "--symbol", SYM, "--datadir", str(tmp_path / "d")
    )
    assert code == 2
    assert re.search(message, err), err
    assert not (tmp_path / "d").exists() or not list((tmp_path / "d").rglob("*.feather"))


def test_bad_bar_file_named(tmp_path: Path, capsys: Any) -> None:
    cg = pd.read_csv(COINGLASS).iloc[:20]
    path = tmp_path / "bars.csv"
    cg.drop(columns=["liquidation_short_usd"]).to_csv(path, index=False)
    args = ["--exchange", "cg", "--symbol", SYM, "--datadir", str(tmp_path / "d")]
    code, _, err = _cli(capsys, str(path), *args)
    assert code == 2 and "no short USD column" in err
    cg.to_csv(path, index=False)
    code, _, err = _cli(capsys, str(path), *args, "--timeframe", "4h")
    assert code == 2 and "not on the 4h grid" in err
    code, _, err = _cli(capsys, str(tmp_path / "nope.csv"), *args)
    assert code == 2 and "no such file" in err


def test_documented_command_runs_as_written(tmp_path: Path) -> None:
    """The docs' command, in a fresh process from the repository root."""
    cmd = [
        sys.executable, "-m", "liqsignal", "import-liquidations",
        "liqsignal/resources/coinglass_btc_1h_price_oi_funding_liquidations.csv",
        "--exchange", "coinglass", "--symbol", "BTC/USDT:USDT", "--timeframe", "1h",
        "--datadir", str(tmp_path),
    ]  # fmt: skip
    r = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert r.returncode == 0, r.stderr
    n = len(pd.read_csv(COINGLASS))
    assert f"bars: {n} rows read, {n} new" in r.stdout
    assert f"1h bars: {n + 4} (2025-12-04 06:00 -> 2026-03-04 23:00), {n} known" in r.stdout
