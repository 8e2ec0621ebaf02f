"""FeatherStore: Freqtrade's layout and formats both ways, incremental merges, atomic writes."""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow.feather as pa_feather
import pytest
from freqtrade.data.history.datahandlers.featherdatahandler import FeatherDataHandler
from freqtrade.enums import CandleType, TradingMode

from liqsignal.data.store import FeatherStore, pair_to_filename
from liqsignal.exceptions import ConfigError, CorruptFileError, InputError

TESTDATA = Path(__file__).resolve().parents[1] / "testdata" / "replay_binance" / "futures"
PAIR = "BTC/USDT:USDT"


def _real(candle_type: str, rows: int | None = None) -> pd.DataFrame:
    """Real Binance BTC rows from the bundled test slice (see tests/testdata)."""
    df = pd.read_feather(TESTDATA / f"BTC_USDT_USDT-1h-{candle_type}.feather")
    return df.iloc[:rows].reset_index(drop=True) if rows else df


@pytest.fixture
def store(tmp_path: Path) -> FeatherStore:
    return FeatherStore(tmp_path)


def _handler(store: FeatherStore, exchange: str = "binance") -> FeatherDataHandler:
    return FeatherDataHandler(store.datadir / exchange)


@pytest.mark.parametrize("ctype", ["futures", "mark", "funding_rate", "open_interest"])
def test_path_is_freqtrades(store: FeatherStore, ctype: str) -> None:
    ours = store.path("binance", PAIR, "1h", ctype)
    theirs = FeatherDataHandler._pair_data_filename(
        store.datadir / "binance", PAIR, "1h", CandleType(ctype)
    )
    assert ours == theirs
    assert ours.name == f"BTC_USDT_USDT-1h-{ctype}.feather"
    assert pair_to_filename("BTC/USDC:USDC") == "BTC_USDC_USDC"


@pytest.mark.parametrize("ctype", ["futures", "mark", "funding_rate", "open_interest"])
def test_freqtrade_reads_what_store_writes(store: FeatherStore, ctype: str) -> None:
    src = _real(ctype)
    res = store.merge("binance", PAIR, "1h", ctype, src)
    assert res.rows_added == len(src)
    got = _handler(store).ohlcv_load(PAIR, "1h", candle_type=CandleType(ctype), warn_no_data=False)
    assert len(got) == len(src)
    assert list(got["date"]) == list(src["date"])
    for col in src.columns[1:]:
        pd.testing.assert_series_equal(got[col], src[col], check_names=False)
    # same on-disk schema as Freqtrade's own writer produces
    written = pd.read_feather(res.path)
    assert str(written["date"].dtype) == "datetime64[ms, UTC]"
    assert list(written.columns) == list(src.columns)


@pytest.mark.parametrize("ctype", ["futures", "funding_rate", "open_interest"])
def test_store_reads_what_freqtrade_writes(store: FeatherStore, ctype: str) -> None:
    src = _real(ctype, 300)
    (store.datadir / "binance").mkdir()  # Freqtrade creates only the last folder level
    _handler(store).ohlcv_store(PAIR, "1h", src, CandleType(ctype))
    got = store.read("binance", PAIR, "1h", ctype)
    pd.testing.assert_frame_equal(got, src.astype({"date": "datetime64[ms, UTC]"}))
    # and merging into a Freqtrade-written file keeps it readable for Freqtrade
    store.merge("binance", PAIR, "1h", ctype, _real(ctype, 400).iloc[250:])
    back = _handler(store).ohlcv_load(PAIR, "1h", candle_type=CandleType(ctype), warn_no_data=False)
    assert len(back) == len(_real(ctype, 400))
    assert back["date"].is_unique


def test_merge_new_rows_win_dedup_and_sort(store: FeatherStore) -> None:
    src = _real("futures", 100)
    store.merge("binance", PAIR, "1h", "futures", src.iloc[:60])
    newer = src.iloc[50:].copy()
    newer.loc[newer.index[0], "close"] = 1.5  # a revised candle: the new value must win
    shuffled = newer.sample(frac=1.0, random_state=3)
    doubled = pd.concat([shuffled, shuffled.iloc[:5]])
    res = store.merge("binance", PAIR, "1h", "futures", doubled)
    assert (res.rows_before, res.rows_after, res.rows_added) == (60, 100, 40)
    got = store.read("binance", PAIR, "1h", "futures")
    assert got["date"].is_monotonic_increasing and got["date"].is_unique
    assert got.loc[50, "close"] == 1.5
    assert got.loc[49, "close"] == src.loc[49, "close"]
    assert store.last_date("binance", PAIR, "1h", "futures") == src["date"].iloc[-1]


def test_merge_empty_new_changes_nothing(store: FeatherStore) -> None:
    store.merge("binance", PAIR, "1h", "funding_rate", _real("funding_rate", 20))
    path = store.path("binance", PAIR, "1h", "funding_rate")
    before = path.read_bytes()
    res = store.merge("binance", PAIR, "1h", "funding_rate", _real("funding_rate").iloc[0:0])
    assert res.rows_added == 0 and res.rows_after == 20
    assert path.read_bytes() == before


def test_corrupt_file_raises_and_is_left_in_place(store: FeatherStore) -> None:
    path = store.path("binance", PAIR, "1h", "futures")
    path.parent.mkdir(parents=True)
    shutil.copy(TESTDATA / "BTC_USDT_USDT-1h-futures.feather", path)
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])  # truncated
    damaged = path.read_bytes()
    with pytest.raises(CorruptFileError, match=str(path)):
        store.read("binance", PAIR, "1h", "futures")
    with pytest.raises(CorruptFileError, match="left in place"):
        store.merge("binance", PAIR, "1h", "futures", _real("futures", 10))
    assert path.read_bytes() == damaged
    assert list(path.parent.iterdir()) == [path]


def test_file_with_wrong_columns_is_corrupt(store: FeatherStore) -> None:
    path = store.path("binance", PAIR, "1h", "open_interest")
    path.parent.mkdir(parents=True)
    pd.DataFrame({"date": [1], "oi": [2.0]}).to_feather(path)
    with pytest.raises(CorruptFileError, match="open_interest_amount"):
        store.read("binance", PAIR, "1h", "open_interest")


def test_failed_write_keeps_old_file_and_no_temp(
    store: FeatherStore, monkeypatch: pytest.MonkeyPatch
) -> None:
    store.merge("binance", PAIR, "1h", "futures", _real("futures", 30))
    path = store.path("binance", PAIR, "1h", "futures")
    before = path.read_bytes()

    def boom(self: pd.DataFrame, *a: object, **k: object) -> None:
        Path(str(a[0])).write_bytes(b"partial")
        raise OSError("disk full")

    monkeypatch.setattr(pa_feather, "write_feather", boom)  # the write inside write_atomic
    with pytest.raises(OSError, match="disk full"):
        store.merge("binance", PAIR, "1h", "futures", _real("futures", 60))
    assert path.read_bytes() == before
    assert sorted(p.name for p in path.parent.iterdir()) == [path.name]


def test_legacy_funding_layout_is_read(store: FeatherStore) -> None:
    path = store.path("binance", PAIR, "1h", "funding_rate")
    path.parent.mkdir(parents=True)
    src = _real("funding_rate", 10)
    legacy = pd.DataFrame(
        {"date": src["date"], "open": src["funding_rate"], "high": 0.0, "low": 0.0}
        | {"close": 0.0, "volume": 0.0}
    )
    legacy.to_feather(path)
    got = store.read("binance", PAIR, "1h", "funding_rate")
    assert list(got.columns) == ["date", "funding_rate"]
    assert got["funding_rate"].tolist() == src["funding_rate"].tolist()


def test_taker_buy_kept_out_of_freqtrades_folder(store: FeatherStore) -> None:
    store.merge("binance", PAIR, "1h", "futures", _real("futures", 5))
    taker = pd.DataFrame(
        {"date": _real("futures", 5)["date"], "taker_buy_volume": 1.0}
        | {"taker_buy_quote_volume": 2.0}
    )
    res = store.merge("binance", PAIR, "1h", "taker_buy", taker)
    assert res.path.parent.name == "liqsignal"
    listed = FeatherDataHandler.ohlcv_get_available_data(
        store.datadir / "binance", TradingMode.FUTURES
    )
    assert listed == [(PAIR, "1h", CandleType.FUTURES)]
    assert store.read("binance", PAIR, "1h", "taker_buy")["taker_buy_quote_volume"].eq(2.0).all()


def test_bad_input_names_the_problem(store: FeatherStore) -> None:
    with pytest.raises(InputError, match="missing column"):
        store.merge("binance", PAIR, "1h", "funding_rate", pd.DataFrame({"date": [1]}))
    bad = _real("futures", 3).astype({"close": object})
    bad.loc[1, "close"] = "abc"
    with pytest.raises(InputError, match="'close'"):
        store.merge("binance", PAIR, "1h", "futures", bad)
    with pytest.raises(ConfigError, match="candle_type"):
        store.path("binance", PAIR, "1h", "trades")
    with pytest.raises(ConfigError, match="exchange"):
        store.path("../x", PAIR, "1h", "futures")


def test_append_of_an_already_normal_frame_takes_the_fast_path_and_stores_the_same(tmp_path):
    """A frame that is already the store's (the live provider's rows) is read column by column
    without normalizing: the same rows are stored, the same frame returned, and bad values in
    it are still refused by name."""
    from liqsignal.data import store as store_mod

    dates = pd.DatetimeIndex(
        [pd.Timestamp("2026-01-01 00:00", tz="UTC"), pd.Timestamp("2026-01-01 00:01", tz="UTC")]
    ).as_unit("ms")
    normal = pd.DataFrame(
        {"date": dates, "open": [1.0, 2.0], "high": [2.0, 3.0], "low": [0.5, 1.5],
         "close": [1.5, 2.5], "volume": [10.0, 20.0]}
    )  # fmt: skip
    cols = store_mod.CANDLE_COLUMNS["futures"]
    fast = store_mod._normal_rows(normal, cols)
    assert fast is not None
    assert np.array_equal(fast, store_mod._to_rows(store_mod.normalize_frame(normal, "futures")))
    # not normal: epoch-ms ints, float32, another column order, a NaT -> the general path
    assert store_mod._normal_rows(normal.assign(date=dates.asi8), cols) is None
    assert store_mod._normal_rows(normal.astype({"open": "float32"}), cols) is None
    assert store_mod._normal_rows(normal[cols[::-1]], cols) is None
    assert store_mod._normal_rows(normal.assign(date=[dates[0], pd.NaT]), cols) is None
    a, b = FeatherStore(tmp_path / "a"), FeatherStore(tmp_path / "b")
    out_a = a.append("binance", "BTC/USDT:USDT", "1m", "futures", normal)
    out_b = b.append("binance", "BTC/USDT:USDT", "1m", "futures", normal.assign(date=dates.asi8))
    pd.testing.assert_frame_equal(out_a, out_b)
    a.commit(), b.commit()
    pd.testing.assert_frame_equal(
        a.read("binance", "BTC/USDT:USDT", "1m", "futures"),
        b.read("binance", "BTC/USDT:USDT", "1m", "futures"),
    )
    bad = normal.assign(high=[2.0, -3.0])
    with pytest.raises(InputError, match="high"):
        a.append("binance", "BTC/USDT:USDT", "1m", "futures", bad)
