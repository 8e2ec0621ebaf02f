"""A user's market from the data folder: the store-built dataset scores as the bundled one.

Each test writes a Freqtrade-layout store (candles, open interest, funding, realized
liquidation bars) from a bundled dataset into a temporary folder and reads it back with
:func:`liqsignal.datasets.store_dataset`; the yardstick must give the same figures, unknown
bars must stay NaN (left out, not read as 0), and too little data must be named.
"""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from liqsignal.cli import main
from liqsignal.data.liquidations import LiquidationStore
from liqsignal.data.store import FeatherStore
from liqsignal.datasets import Dataset, cascade_onsets, load_dataset, min_bars, store_dataset
from liqsignal.exceptions import InputError
from liqsignal.forecast import cascade_targets
from liqsignal.yardstick import gate, yardstick

EX = "binance"


def write_store(ds: Dataset, datadir: Path, *, bars: int | None = None) -> None:
    """The dataset's rows in the store's files (the first ``bars`` rows when given)."""
    st = FeatherStore(datadir)
    f = ds.frame if bars is None else ds.frame.iloc[:bars]
    st.merge(EX, ds.symbol, ds.timeframe, "futures", f[["date", "open", "high", "low", "close",
                                                         "volume"]])  # fmt: skip
    oi = pd.DataFrame(
        {
            "date": f["date"],
            "open_interest_amount": f["open_interest_value"] / f["close"],
            "open_interest_value": f["open_interest_value"],
        }
    )
    st.merge(EX, ds.symbol, ds.timeframe, "open_interest", oi)
    if f["funding_rate"].notna().any():
        st.merge(EX, ds.symbol, "1h", "funding_rate", f[["date", "funding_rate"]])
    if ds.fine is not None:
        st.merge(EX, ds.symbol, "1h", "futures", ds.fine)
    real = pd.DataFrame(
        {
            "date": f["date"],
            "long_liquidated_usd": f["realized_long_usd"],
            "short_liquidated_usd": f["realized_short_usd"],
        }
    )
    LiquidationStore(datadir).write_bars(EX, ds.symbol, ds.timeframe, real)


def _figures(report: dict) -> list:
    return [{k: d[k] for k in ("per_bar", "touches", "armed", "claims", "firing") if k in d}
            for d in report["datasets"]]  # fmt: skip


@pytest.fixture(scope="module")
def btc_4h_store(tmp_path_factory: pytest.TempPathFactory) -> tuple[Dataset, Path]:
    ds = load_dataset("btc_4h")
    datadir = tmp_path_factory.mktemp("store") / "data"
    write_store(ds, datadir)
    return ds, datadir


def test_store_dataset_equals_bundled_4h_and_scores_the_same(btc_4h_store):
    ds, datadir = btc_4h_store
    sd = store_dataset(datadir, EX, ds.symbol, "4h")
    pd.testing.assert_frame_equal(sd.frame, ds.frame, check_dtype=False)
    assert sd.fine is not None and ds.fine is not None
    # the finer candles over the dataset's span (the bundled file reaches further back)
    inside = ds.fine[(ds.fine["date"] >= sd.frame["date"].iloc[0])].reset_index(drop=True)
    inside = inside[inside["date"] < sd.frame["date"].iloc[-1] + pd.Timedelta(hours=4)]
    pd.testing.assert_frame_equal(sd.fine, inside.reset_index(drop=True), check_dtype=False)
    a = yardstick(None, [ds], boot=20, n_shift=30)
    b = yardstick(None, [sd], boot=20, n_shift=30)
    assert _figures(a) == _figures(b)
    ga, gb = gate(a), gate(b)
    assert ga.passed == gb.passed and list(ga.margins.values()) == list(gb.margins.values())
    assert b["datasets"][0]["per_bar"]["long"]["all"]["bars"] == len(ds.frame) - 200


@pytest.mark.slow
def test_store_dataset_equals_bundled_1h(tmp_path):
    ds = load_dataset("btc_1h")
    write_store(ds, tmp_path)
    sd = store_dataset(tmp_path, EX, ds.symbol, "1h")
    assert sd.fine is None
    pd.testing.assert_frame_equal(sd.frame, ds.frame, check_dtype=False)
    a = yardstick(None, [ds], boot=0, structure=False)
    b = yardstick(None, [sd], boot=0, structure=False)
    assert _figures(a) == _figures(b)


def test_gap_bars_are_nan_and_left_out(tmp_path):
    ds = load_dataset("btc_4h")
    write_store(ds, tmp_path)
    d = ds.frame["date"]
    # the stream was down from bar 600's open to bar 639's: a gap wins over the stored per-bar sums
    LiquidationStore(tmp_path).record_gap(EX, ds.symbol, d.iloc[600], d.iloc[639])
    sd = store_dataset(tmp_path, EX, ds.symbol, "4h")
    real = sd.frame["realized_long_usd"].to_numpy()
    unknown = np.flatnonzero(np.isnan(real))
    # closed gap: it ends exactly at bar 639's open, which marks bar 639 too
    assert unknown.tolist() == list(range(600, 640))
    assert np.isnan(sd.frame["realized_short_usd"].to_numpy()[600:640]).all()
    assert len(sd.frame) == len(ds.frame)  # the candles stay: the map needs every bar
    nan_frame = ds.frame.copy()
    zero_frame = ds.frame.copy()
    for c in ("realized_long_usd", "realized_short_usd"):
        nan_frame.loc[600:639, c] = np.nan
        zero_frame.loc[600:639, c] = 0.0
    as_nan = Dataset("nan", ds.symbol, "4h", nan_frame, "", ds.fine)
    as_zero = Dataset("zero", ds.symbol, "4h", zero_frame, "", ds.fine)
    kw = {"boot": 0, "structure": False}
    got = yardstick(None, [sd], **kw)["datasets"][0]["per_bar"]
    assert got == yardstick(None, [as_nan], **kw)["datasets"][0]["per_bar"]
    assert got != yardstick(None, [as_zero], **kw)["datasets"][0]["per_bar"]
    assert got["long"]["all"]["spearman"]["liq_pred"] == pytest.approx(
        yardstick(None, [as_nan], **kw)["datasets"][0]["per_bar"]["long"]["all"]["spearman"][
            "liq_pred"
        ]
    )


def test_too_little_data_names_the_counts(tmp_path):
    ds = load_dataset("btc_4h")
    write_store(ds, tmp_path, bars=250)
    with pytest.raises(InputError) as e:
        store_dataset(tmp_path, EX, ds.symbol, "4h", n_folds=3, warmup=200)
    msg = str(e.value)
    assert "too little data: 250 bars" in msg
    assert min_bars(3, 200) == 280
    assert "3 folds after a warm-up of 200 need at least 280 bars, 80 of them known" in msg
    assert "BTC_USDT_USDT-4h-liquidations.feather" in msg


def test_too_few_known_bars_is_too_little(tmp_path):
    ds = load_dataset("btc_4h")
    write_store(ds, tmp_path, bars=400)
    d = ds.frame["date"]
    LiquidationStore(tmp_path).record_gap(EX, ds.symbol, d.iloc[50], d.iloc[390])
    with pytest.raises(InputError, match=r"400 bars with candles and open interest, 59 of them"):
        store_dataset(tmp_path, EX, ds.symbol, "4h")


def test_missing_files_are_named(tmp_path):
    ds = load_dataset("btc_4h")
    with pytest.raises(InputError, match=r"no candles stored: .*BTC_USDT_USDT-4h-futures"):
        store_dataset(tmp_path, EX, ds.symbol, "4h")
    st = FeatherStore(tmp_path)
    st.merge(EX, ds.symbol, "4h", "futures", ds.frame[["date", "open", "high", "low", "close",
                                                       "volume"]])  # fmt: skip
    with pytest.raises(InputError, match=r"no open interest stored: .*4h-open_interest"):
        store_dataset(tmp_path, EX, ds.symbol, "4h")
    oi = ds.frame[["date", "open_interest_value"]].assign(open_interest_amount=math.nan)
    st.merge(EX, ds.symbol, "4h", "open_interest", oi)
    with pytest.raises(InputError, match=r"no realized liquidations stored: .*4h-liquidations"):
        store_dataset(tmp_path, EX, ds.symbol, "4h")


def test_finer_open_interest_is_used_point_in_time(tmp_path):
    ds = load_dataset("btc_4h")
    write_store(ds, tmp_path)
    st = FeatherStore(tmp_path)
    st.path(EX, ds.symbol, "4h", "open_interest").unlink()
    # 1h OI rows: the one dated at the bar's last hour is known at the 4h bar's close
    f = ds.frame
    last_hour = f["date"] + pd.Timedelta(hours=3)
    st.merge(EX, ds.symbol, "1h", "open_interest",
             pd.DataFrame({"date": last_hour, "open_interest_value": f["open_interest_value"],
                           "open_interest_amount": math.nan}))  # fmt: skip
    sd = store_dataset(tmp_path, EX, ds.symbol, "4h")
    np.testing.assert_allclose(sd.frame["open_interest_value"], f["open_interest_value"])
    assert "OI (1h)" in sd.source


def test_cascade_onsets_and_targets_treat_nan_as_unknown():
    r = np.r_[np.ones(300), 100.0, 100.0, 1.0, np.nan, 100.0, 1.0, 1.0, 1.0, 1.0, 1.0]
    onset, bar = cascade_onsets(r, min_history=200)
    assert np.flatnonzero(onset).tolist() == [300]  # 304 follows an unknown bar: no onset
    assert bar[304] and not bar[303]
    y = cascade_targets(r, 2, min_history=200)
    assert y[297] == 0.0 and y[298] == 1.0 and y[299] == 1.0 and y[300] == 0.0
    # a window that meets the unknown bar 303, or bar 304 after it, is unknown, not 0
    assert np.isnan(y[301:304]).all()
    assert y[304] == 0.0


def test_evaluate_and_calibrate_commands_read_the_store(btc_4h_store, capsys, tmp_path):
    ds, datadir = btc_4h_store
    argv = ["evaluate", "--datadir", str(datadir), "--exchange", EX, "--pair", "BTC",
            "--timeframe", "4h", "--boot", "0", "--no-structure", "--json", "--gate"]  # fmt: skip
    assert main(argv) == 0
    out = json.loads(capsys.readouterr().out)
    assert out["gate"]["passed"]
    want = yardstick(None, [ds], boot=0, structure=False)
    assert _figures(out["yardstick"]) == json.loads(json.dumps(_figures(want)))
    assert main([*argv[:-3], "--data", "x.csv", "--gate-only"]) == 2
    assert "not both" in capsys.readouterr().err
    assert main(["evaluate", "--exchange", EX, "--datadir", str(datadir), "--gate-only"]) == 2
    assert "--exchange needs --pair" in capsys.readouterr().err
    empty = tmp_path / "empty"
    assert main(["calibrate", "--datadir", str(empty), "--exchange", EX, "--pair", "BTC"]) == 2
    assert "no candles stored" in capsys.readouterr().err


def test_fit_reads_the_store_as_the_bundled_set(btc_4h_store, capsys):
    _, datadir = btc_4h_store
    store = ["fit", "--datadir", str(datadir), "--exchange", EX, "--pair", "BTC/USDT:USDT",
             "--timeframe", "4h", "--report", "--json"]  # fmt: skip
    assert main(store) == 0
    got = json.loads(capsys.readouterr().out)["report"]
    assert main(["fit", "--bundled", "--datasets", "btc_4h", "--report", "--json"]) == 0
    want = json.loads(capsys.readouterr().out)["report"]
    assert got["pooled"] == want["pooled"]


def test_calibrate_fits_on_the_stored_market(btc_4h_store, capsys, tmp_path, monkeypatch):
    import liqsignal.calibrate as cal

    _, datadir = btc_4h_store
    monkeypatch.setattr(cal, "SEARCH_GRID", {"half_life_hours": (24.0, 96.0)})
    out = tmp_path / "cal.json"
    argv = ["calibrate", "--datadir", str(datadir), "--exchange", EX, "--pair", "BTC",
            "--timeframe", "4h", "--folds", "1", "--out", str(out), "--json"]  # fmt: skip
    assert main(argv) == 0
    res = json.loads(capsys.readouterr().out)
    assert res["data"].startswith("binance:BTC/USDT:USDT:4h (store ")
    fold = res["folds"][0]
    assert fold["test"][0].startswith("2025-04-")  # the second half of the bars after warm-up
    assert math.isfinite(fold["test_default"]["long_partial_controls"])
    engine = json.loads(out.read_text())["liqsignal"]["engine"]
    assert engine["half_life_hours"] in (24.0, 48.0, 96.0)
