"""FreqAI with the liq features: the helper's features are scale-free and point in time, and a
real `freqtrade backtesting --freqaimodel XGBoostClassifier` trains one model offline on the
bundled data with the ``%-liq_*`` features (strategies/liq_freqai.py, config.freqai.json)."""

from __future__ import annotations

import json
import subprocess

import pandas as pd
import pytest
from ft_replay_helpers import BUNDLED, FREQTRADE, ROOT, ft_env

from liqsignal.freqai import FREQAI_FEATURES, add_liq_features
from liqsignal.replay import ReplayExchange


class _DP:
    """The two DataProvider calls add_liq_columns makes, on the bundled files."""

    runmode = type("M", (), {"value": "backtest"})()

    def get_pair_dataframe(self, pair: str, timeframe: str, candle_type: str = "") -> pd.DataFrame:
        name = pair.replace("/", "_").replace(":", "_")
        return pd.read_feather(BUNDLED / "futures" / f"{name}-{timeframe}-{candle_type}.feather")


def _frame() -> pd.DataFrame:
    df = pd.read_feather(BUNDLED / "futures" / "BTC_USDT_USDT-1h-futures.feather")
    return df[(df["date"] >= "2025-12-05") & (df["date"] < "2026-02-01")].reset_index(drop=True)


CONFIG = {"timeframe": "1h", "exchange": {"name": "binance"}}
META = {"pair": "BTC/USDT:USDT", "tf": "1h"}


def test_features_are_prefixed_scale_free_and_keep_the_callers_columns():
    df = _frame().assign(my_col=1.0)
    out = add_liq_features(df, META, _DP(), CONFIG)
    names = [f"%-{n}" for n in FREQAI_FEATURES]
    assert set(names) <= set(out.columns) and "my_col" in out.columns
    tail = out.iloc[500:]
    assert tail[names].notna().all().all()

    # ten times the market (volume and open interest): the same features
    class Big(_DP):
        def get_pair_dataframe(self, pair, timeframe, candle_type=""):
            f = super().get_pair_dataframe(pair, timeframe, candle_type)
            for c in ("open_interest_amount", "open_interest_value"):
                if c in f.columns:
                    f[c] = f[c] * 10
            return f

    big = add_liq_features(df.assign(volume=df["volume"] * 10), META, Big(), CONFIG)
    pd.testing.assert_frame_equal(big[names].iloc[500:], tail[names], rtol=1e-6)


def test_features_are_point_in_time():
    df = _frame()
    full = add_liq_features(df, META, _DP(), CONFIG)
    cut = add_liq_features(df.iloc[:900], META, _DP(), CONFIG)
    names = [f"%-{n}" for n in FREQAI_FEATURES]
    pd.testing.assert_frame_equal(cut[names], full[names].iloc[:900], rtol=1e-9)


@pytest.mark.slow
def test_freqai_trains_on_the_liq_features_offline(tmp_path):
    cfg = json.loads((ROOT / "config.example.json").read_text())
    cfg.update(json.loads((ROOT / "config.freqai.json").read_text()))
    (tmp_path / "ud").mkdir()
    cfg["user_data_dir"] = str(tmp_path / "ud")
    cfg["strategy_path"] = str(ROOT / "strategies")
    with ReplayExchange(BUNDLED) as rx:
        cfg["exchange"]["ccxt_config"] = rx.ccxt_config()
        path = tmp_path / "config.json"
        path.write_text(json.dumps(cfg))
        proc = subprocess.run(
            [
                str(FREQTRADE),
                "backtesting",
                "-c",
                str(path),
                "--strategy",
                "LiqFreqAIStrategy",
                "--freqaimodel",
                "XGBoostClassifier",
                "--datadir",
                str(BUNDLED),
                "--timerange",
                "20260201-20260220",
                "--cache",
                "none",
                "--logfile",
                str(tmp_path / "ft.log"),
            ],
            capture_output=True,
            text=True,
            timeout=240,
            env=ft_env(),
        )
    log = (tmp_path / "ft.log").read_text()
    assert proc.returncode == 0, log[-3000:]
    assert "Training model on" in log
    (meta,) = (tmp_path / "ud" / "models").rglob("*_metadata.json")
    trained = json.loads(meta.read_text())["training_features_list"]
    liq = [f for f in trained if f.startswith("%-liq_")]
    # all but features FreqAI drops as constant in the window (e.g. an armed flag never set)
    assert len(liq) >= len(FREQAI_FEATURES) - 3, liq
    assert "%-liq_long_cluster_dist_pct" in trained and "%-liq_short_density_usd" in trained
    result = next((tmp_path / "ud" / "backtest_results").glob("*.zip"))
    assert result.stat().st_size > 0
    assert "liqsignal guard report:" in proc.stdout
