"""Walk-forward calibration: windows do not overlap, the fit never loses on its training rows,
and the written section is what MapConfig reads."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest

from liqsignal.calibrate import calibrate, leverage_bell
from liqsignal.config import MapConfig

SMALL_GRID = {
    "half_life_hours": (24.0, 96.0),
    "intrabar_share": (0.25, 0.75),
    "leverage_shape": ("default", (10.0, 0.6)),
}


def test_leverage_bell_is_normalised_and_peaks_at_centre():
    w = leverage_bell(10.0, 0.6)
    assert sum(w) == pytest.approx(1.0, abs=1e-4)
    assert int(np.argmax(w)) == list(MapConfig().leverages).index(10.0)


def test_walk_forward_windows_and_written_section(coinglass):
    res = calibrate(coinglass, folds=2, rounds=1, grid=SMALL_GRID)
    assert len(res.folds) == 2
    for f in res.folds:
        assert pd.Timestamp(f.train[1]) < pd.Timestamp(f.test[0])  # test strictly later
        assert f.train_objective_fitted >= f.train_objective_default - 1e-9
        for side in ("long", "short"):
            assert -1 <= f.test_fitted[f"{side}_model"] <= 1
            assert f.test_fitted[f"{side}_baseline"] == f.test_default[f"{side}_baseline"]
    assert pd.Timestamp(res.folds[0].test[1]) < pd.Timestamp(res.folds[1].test[0])
    section = json.loads(json.dumps(res.to_dict()))["config"]["liqsignal"]["engine"]
    cfg = MapConfig.from_dict(section)
    assert cfg.half_life_hours in SMALL_GRID["half_life_hours"] + (MapConfig().half_life_hours,)
    assert sum(cfg.leverage_weights) == pytest.approx(1.0, abs=1e-3)


def test_calibrate_rejects_too_short(coinglass):
    from liqsignal.exceptions import InputError

    with pytest.raises(InputError, match="blocks"):
        calibrate(coinglass.iloc[:300], folds=2, grid=SMALL_GRID)


def test_calibrated_config_keeps_pockets_and_armed_flags(coinglass):
    """A candidate that silences the guards and alerts is never chosen (the first version's
    calibration could write a config that never armed)."""
    from liqsignal.calibrate import MIN_ARMED_SHARE, MIN_CLUSTER_SHARE, score_window
    from liqsignal.features import compute_features

    grid = {"contrast_window_pct": (None, 2.0), "churn_volume_share": (0.3, 1.0)}
    res = calibrate(coinglass, folds=1, rounds=1, grid=grid)
    section = res.to_dict()["config"]["liqsignal"]["engine"]
    cfg = MapConfig.from_dict(section)
    feats = compute_features(coinglass, cfg)
    rows = slice(200, len(coinglass))
    armed = (feats["liq_long_armed"].to_numpy()[rows] > 0) | (
        feats["liq_short_armed"].to_numpy()[rows] > 0
    )
    assert armed.mean() >= MIN_ARMED_SHARE
    for side in ("long", "short"):
        assert (feats[f"liq_{side}_cluster_usd"].to_numpy()[rows] > 0).mean() >= MIN_CLUSTER_SHARE
    # the scan-mean rule on this map leaves "armed" silent: scored as never chosen
    silent = score_window(coinglass, cfg.replace(contrast_window_pct=None), rows)
    assert silent["armed_share"] < MIN_ARMED_SHARE and silent["objective"] == float("-inf")
