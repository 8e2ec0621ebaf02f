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
