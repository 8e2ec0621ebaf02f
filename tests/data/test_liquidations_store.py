"""LiquidationStore: duplicates, order, spans (coverage, gaps -> NaN), bars, restarts, processes."""

from __future__ import annotations

import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from freqtrade.data.history.datahandlers.featherdatahandler import FeatherDataHandler
from freqtrade.enums import TradingMode
from hypothesis import given, settings
from hypothesis import strategies as st
from liq_util import RESOURCES, real_events

from liqsignal.data.liquidations import (
    BAR_COLUMNS,
    EVENT_COLUMNS,
    LiquidationStore,
    make_events,
    realized_from_store,
)
from liqsignal.data.store import FeatherStore
from liqsignal.exceptions import CorruptFileError, InputError

SYM = "BTC/USDC:USDC"
H = 3_600_000


def _real_events(n: int | None = None, coin: str = "BTC") -> pd.DataFrame:
    """Real Hyperliquid liquidations (bundled, see resources/README.md) as USDC perpetual
    events, sides alternating by row (liq_util.real_events)."""
    return real_events(SYM, coin, n)


@pytest.fixture
def store(tmp_path: Path) -> LiquidationStore:
    return LiquidationStore(tmp_path)


def _reference_bars(events: pd.DataFrame, tf: str) -> pd.DataFrame:
    """Slow, obvious per-bar sums with a loop."""
    rows: dict[pd.Timestamp, list[float]] = {}
    for ts, side, usd in zip(events["timestamp"], events["side"], events["usd"], strict=True):
        key = pd.Timestamp(ts).floor(tf)
        r = rows.setdefault(key, [0.0, 0.0, 0.0])
        r[0 if side == "long" else 1] += usd
        r[2] += 1
    return pd.DataFrame([(k, *v) for k, v in sorted(rows.items())], columns=BAR_COLUMNS).set_index(
        "date"
    )


def test_append_real_events_and_bars_match_reference(store: LiquidationStore) -> None:
    ev = _real_events()
    assert len(ev) == 468
    assert store.append_events("hyperliquid", ev) == 468
    got = store.read_events("hyperliquid", SYM)
    assert list(got.columns) == EVENT_COLUMNS
    assert str(got["timestamp"].dtype) == "datetime64[ms, UTC]"
    assert got["timestamp"].is_monotonic_increasing
    # nothing known yet: no coverage recorded, so every bar is NaN, never 0
    bars = store.bars("hyperliquid", SYM, "1h")
    assert len(bars) > 0 and bars["long_liquidated_usd"].isna().all()
    t0 = got["timestamp"].iloc[0].floor("1h")
    t1 = got["timestamp"].iloc[-1].ceil("1h")
    store.record_coverage("hyperliquid", SYM, t0, t1)
    bars = store.bars("hyperliquid", SYM, "1h").set_index("date")
    ref = _reference_bars(got, "1h")
    assert not bars.isna().any().any()
    assert bars["events"].sum() == 468
    # bars with events equal the loop; all others are known zeros
    np.testing.assert_allclose(bars.loc[ref.index].to_numpy(), ref.to_numpy(), rtol=1e-12)
    rest = bars.drop(index=ref.index)
    assert (rest.to_numpy() == 0).all() and len(rest) > 0


def test_duplicates_by_id_and_by_values_dropped(store: LiquidationStore) -> None:
    ev = _real_events(20)
    with_id = ev.assign(id=[f"x{i}" for i in range(20)])
    assert store.append_events("gate", with_id.iloc[:12]) == 12
    # overlap by id (values changed: stored row kept), plus new ones
    again = with_id.iloc[8:].copy()
    again.loc[again.index[:4], "usd"] = 1.0
    assert store.append_events("gate", again) == 8
    got = store.read_events("gate", SYM)
    assert len(got) == 20 and got["id"].is_unique
    assert (got.set_index("id").loc[["x8", "x9"], "usd"] > 1.0).all()
    # without ids: same time, side, price and amount is the same event
    other = "ETH/USDC:USDC"
    no_id = _real_events(10, "ETH").assign(symbol=other)
    doubled = pd.concat([no_id, no_id.iloc[3:7]], ignore_index=True)
    assert store.append_events("gate", doubled) == 10
    assert store.append_events("gate", no_id) == 0
    # a different amount at the same time and price is a second event
    assert store.append_events("gate", no_id.iloc[:1].assign(amount=no_id["amount"][0] * 2)) == 1
    assert len(store.read_events("gate", other)) == 11


def test_out_of_order_events_are_placed(store: LiquidationStore) -> None:
    ev = _real_events(60)
    rng = np.random.default_rng(7)
    shuffled = ev.iloc[rng.permutation(len(ev))]
    parts = [shuffled.iloc[i : i + 12] for i in range(0, len(ev), 12)]
    assert sum(store.append_events("okx", p) for p in parts) == len(ev.drop_duplicates())
    got = store.read_events("okx", SYM)
    assert got["timestamp"].is_monotonic_increasing
    expect = make_events(ev, exchange="okx").sort_values("timestamp", kind="stable")
    assert sorted(got["usd"]) == sorted(expect["usd"])


def test_gap_makes_bars_nan_not_zero(store: LiquidationStore) -> None:
    start = pd.Timestamp("2026-01-01", tz="UTC")
    store.record_coverage("binance", SYM, start, start + pd.Timedelta(hours=6))
    ev = pd.DataFrame(
        {
            "timestamp": [start + pd.Timedelta(minutes=m) for m in (10, 130, 310)],
            "symbol": SYM,
            "side": ["long", "short", "long"],
            "price": [90_000.0, 91_000.0, 89_000.0],
            "amount": [0.5, 0.1, 1.0],
        }
    )
    store.append_events("binance", ev)
    # stream down 03:20-03:25 (reconnect): bar 03:00 unknown; everything else known
    store.record_gap(
        "binance", [SYM], start + pd.Timedelta(minutes=200), start + pd.Timedelta(minutes=205)
    )
    bars = store.bars("binance", SYM, "1h").set_index("date")
    assert len(bars) == 6
    assert np.isnan(bars["long_liquidated_usd"].iloc[3]) and np.isnan(bars["events"].iloc[3])
    assert bars["long_liquidated_usd"].iloc[0] == pytest.approx(45_000.0)
    assert bars["short_liquidated_usd"].iloc[2] == pytest.approx(9_100.0)
    assert bars["long_liquidated_usd"].iloc[5] == pytest.approx(89_000.0)
    assert list(bars["events"].fillna(-1)) == [1, 0, 1, -1, 0, 1]
    # a bar only partly covered is unknown too
    part = store.bars("binance", SYM, "1h", start=start - pd.Timedelta(hours=1))
    assert np.isnan(part["long_liquidated_usd"].iloc[0])
    # spans are merged per kind
    store.record_coverage(
        "binance", SYM, start + pd.Timedelta(hours=5), start + pd.Timedelta(hours=7)
    )
    spans = store.spans("binance", SYM)
    assert list(spans["kind"]) == ["covered", "gap"]
    assert spans["end"].iloc[0] == start + pd.Timedelta(hours=7)


def test_per_bar_source_wins_except_in_gap(store: LiquidationStore) -> None:
    cg = pd.read_csv(RESOURCES / "coinglass_btc_1h_price_oi_funding_liquidations.csv").iloc[:48]
    bars = pd.DataFrame(
        {
            "date": pd.to_datetime(cg["timestamp"], unit="ms", utc=True),
            "long_liquidated_usd": cg["liquidation_long_usd"],
            "short_liquidated_usd": cg["liquidation_short_usd"],
        }
    )
    res = store.write_bars("coinglass", "BTC/USDT:USDT", "1h", bars)
    assert res.rows_added == 48
    assert res.path.name == "BTC_USDT_USDT-1h-liquidations.feather"
    assert store.write_bars("coinglass", "BTC/USDT:USDT", "1h", bars.iloc[40:]).rows_added == 0
    store.record_gap("coinglass", "BTC/USDT:USDT", bars["date"][10], bars["date"][10])
    got = store.bars("coinglass", "BTC/USDT:USDT", "1h")
    assert len(got) == 48 and got["events"].isna().all()
    np.testing.assert_allclose(
        got["long_liquidated_usd"].drop(index=10), cg["liquidation_long_usd"].drop(index=10)
    )
    assert np.isnan(got["long_liquidated_usd"][10])
    with pytest.raises(InputError, match="long_liquidated_usd"):
        store.write_bars(
            "coinglass", "BTC/USDT:USDT", "1h", bars.drop(columns="long_liquidated_usd")
        )
    with pytest.raises(InputError, match="not on the 1h grid"):
        store.write_bars(
            "coinglass",
            "BTC/USDT:USDT",
            "1h",
            bars.assign(date=bars["date"] + pd.Timedelta("5min")),
        )
    r = realized_from_store(store.datadir, "coinglass", "BTC/USDT:USDT", "1h")
    assert list(r.columns) == ["date", "realized_long_usd", "realized_short_usd"]
    np.testing.assert_allclose(r["realized_short_usd"][:10], cg["liquidation_short_usd"][:10])


def test_bad_events_named(store: LiquidationStore) -> None:
    ev = _real_events(5)
    with pytest.raises(InputError, match=r"column 'side'.*'buy' at row 2"):
        store.append_events("bybit", ev.assign(side=["long", "short", "buy", "long", "long"]))
    with pytest.raises(InputError, match=r"column 'price' must be a number > 0.*row 1"):
        store.append_events("bybit", ev.assign(price=[1.0, -1.0, 1.0, 1.0, 1.0]))
    with pytest.raises(InputError, match=r"missing column\(s\) \['amount', 'usd'\]"):
        store.append_events("bybit", ev.drop(columns=["amount", "usd"]))
    with pytest.raises(InputError, match=r"column 'exchange' is 'okx' at row 0"):
        store.append_events("bybit", ev.assign(exchange="okx"))
    assert not store.has_data("bybit", SYM)


def test_corrupt_file_left_in_place(store: LiquidationStore) -> None:
    path = store.events_path("binance", SYM)
    path.parent.mkdir(parents=True)
    path.write_bytes(b"not feather")
    with pytest.raises(CorruptFileError, match=r"liquidation_events\.feather"):
        store.append_events("binance", _real_events(3))
    assert path.read_bytes() == b"not feather"


def test_files_keep_freqtrade_list_data_working(store: LiquidationStore, tmp_path: Path) -> None:
    """Freqtrade parses every <pair>-<tf>-<type>.feather in futures/ into a CandleType: our
    files must not be there (they live in futures/liqsignal/, as taker buy volume does)."""
    fs = FeatherStore(tmp_path)
    fs.merge(
        "binance",
        "BTC/USDT:USDT",
        "1h",
        "futures",
        pd.DataFrame(
            {"date": [0, H], "open": 1.0, "high": 1.0, "low": 1.0, "close": 1.0, "volume": 1.0}
        ),
    )
    store.append_events("binance", _real_events(3).assign(symbol="BTC/USDT:USDT"))
    store.write_bars(
        "binance",
        "BTC/USDT:USDT",
        "1h",
        pd.DataFrame({"date": [0], "long_liquidated_usd": [1.0], "short_liquidated_usd": [2.0]}),
    )
    store.record_gap("binance", "BTC/USDT:USDT", 0, H)
    avail = FeatherDataHandler.ohlcv_get_available_data(tmp_path / "binance", TradingMode.FUTURES)
    assert [(p, tf, str(ct)) for p, tf, ct in avail] == [("BTC/USDT:USDT", "1h", "futures")]
    assert store.has_data("binance", "BTC/USDT:USDT")


_WRITER = textwrap.dedent(
    """
    import sys
    import pandas as pd
    from liqsignal.data.liquidations import LiquidationStore

    datadir, worker, n = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
    store = LiquidationStore(datadir)
    added = 0
    for i in range(n):
        ev = pd.DataFrame({
            "timestamp": [1767225600000 + i * 1000],
            "symbol": "BTC/USDC:USDC",
            "side": ["long" if worker % 2 else "short"],
            "price": [90000.0 + worker],
            "amount": [0.001 * (i + 1)],
            "id": [f"w{worker}-{i}"],
        })
        added += store.append_events("hyperliquid", ev)
        end = 1767225600000 + (i + 1) * 1000
        store.record_coverage("hyperliquid", "BTC/USDC:USDC", 1767225600000, end)
    print(added)
    """
)


def test_two_processes_append_at_once_nothing_lost(tmp_path: Path) -> None:
    n = 25
    procs = [
        subprocess.Popen(
            [sys.executable, "-c", _WRITER, str(tmp_path), str(w), str(n)],
            stdout=subprocess.PIPE,
            text=True,
        )
        for w in (1, 2)
    ]
    outs = [p.communicate(timeout=120)[0] for p in procs]
    assert [p.returncode for p in procs] == [0, 0]
    assert [int(o) for o in outs] == [n, n]
    # reopen (a restart): everything is there, exactly once
    store = LiquidationStore(tmp_path)
    got = store.read_events("hyperliquid", SYM)
    assert len(got) == 2 * n and got["id"].is_unique
    assert got["timestamp"].is_monotonic_increasing
    spans = store.spans("hyperliquid", SYM)
    assert len(spans) == 1 and spans["end"].iloc[0] == pd.Timestamp(
        1767225600000 + n * 1000, unit="ms", tz="UTC"
    )
    # a restart re-sending what was already stored adds nothing
    again = got.drop(columns=["exchange"])
    assert store.append_events("hyperliquid", again) == 0
    assert not list(tmp_path.rglob("*.tmp"))


def _slow_inside(bs: np.ndarray, be: np.ndarray, spans: pd.DataFrame) -> np.ndarray:
    out = np.zeros(len(bs), dtype=bool)
    for s, e in zip(spans["start"], spans["end"], strict=True):
        s, e = s.value // 1_000_000, e.value // 1_000_000
        out |= (bs >= s) & (be <= e)
    return out


def _slow_touches(bs: np.ndarray, be: np.ndarray, spans: pd.DataFrame) -> np.ndarray:
    out = np.zeros(len(bs), dtype=bool)
    for s, e in zip(spans["start"], spans["end"], strict=True):
        s, e = s.value // 1_000_000, e.value // 1_000_000
        out |= (s < be) & (e >= bs)  # gaps are closed intervals
    return out


@given(
    st.lists(
        st.tuples(st.integers(0, 40), st.integers(0, 6), st.sampled_from(["covered", "gap"])),
        max_size=12,
    )
)
@settings(max_examples=150, deadline=None)
def test_span_lookups_match_a_slow_reference(raw: list[tuple[int, int, str]]) -> None:
    """Bars of 4 units against random, overlapping, touching and zero-length spans."""
    from liqsignal.data.liquidations import _inside, _merge_spans, _touches

    unit = 60_000
    spans = pd.DataFrame(
        {
            "kind": [k for _, _, k in raw],
            "start": pd.to_datetime([a * unit for a, _, _ in raw], unit="ms", utc=True),
            "end": pd.to_datetime([(a + w) * unit for a, w, _ in raw], unit="ms", utc=True),
        }
    )
    merged = _merge_spans(spans) if len(spans) else spans
    bs = np.arange(0, 48, 4, dtype=np.int64) * unit
    be = bs + 4 * unit
    for kind in ("covered", "gap"):
        part = merged[merged["kind"] == kind] if len(merged) else merged
        raw_part = spans[spans["kind"] == kind] if len(spans) else spans
        np.testing.assert_array_equal(_inside(bs, be, part), _slow_inside(bs, be, part))
        # touching a merged span == touching any of the raw spans it came from
        np.testing.assert_array_equal(_touches(bs, be, part), _slow_touches(bs, be, raw_part))
