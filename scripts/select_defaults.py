"""Choose the engine defaults on the first block of every dataset only, then score the folds.

Each bundled dataset is cut as in ``liqsignal evaluate`` (warm-up, then four equal blocks: the
first is training only, the other three are the walk-forward test folds). The grid below is
scored on the first block alone (mean over datasets and sides of the partial rank correlation
of ``liq_pred`` with realized liquidations given all map-free controls, the path-aware ones
included where the map is built from finer candles, as in ``liqsignal evaluate``); the three
test folds play no part in the choice. A candidate replaces the defaults only when it beats them
by more than ``MARGIN``. Run:

    .venv/bin/python scripts/select_defaults.py
"""

from __future__ import annotations

import itertools
import json
import sys

import numpy as np

from liqsignal.config import MapConfig
from liqsignal.datasets import load_datasets, walk_forward_folds
from liqsignal.yardstick import _controls, _features, model_parts, partial_rank

#: A candidate replaces the current defaults only when it beats them by more than this on the
#: first blocks (differences below it are within the noise of the grid).
MARGIN = 0.01

GRID = {
    "close_relative": [False, True],
    "churn_volume_share": [0.05, 0.1, 0.2, 0.3, 0.5, 0.75, 1.0],
    "intrabar_share": [0.25, 0.5],
}


def first_block_score(cfg: MapConfig, datasets: list) -> tuple[float, list[float]]:
    vals = []
    for ds in datasets:
        df = ds.frame
        f = _features(ds, cfg)
        fold1 = walk_forward_folds(len(df))[0]
        sl = fold1.train
        ctrl = _controls(ds, True)
        for side in ("long", "short"):
            real = df[f"realized_{side}_usd"].to_numpy(dtype=np.float64)[sl]
            pred = model_parts(f, side)["liq_pred"][sl]
            vals.append(partial_rank(pred, real, ctrl[side].to_numpy(dtype=np.float64)[sl]))
    return float(np.mean(vals)), vals


def main() -> int:
    datasets = load_datasets()
    rows = []
    for combo in itertools.product(*GRID.values()):
        change = dict(zip(GRID, combo, strict=True))
        score, vals = first_block_score(MapConfig().replace(**change), datasets)
        rows.append((score, change, vals))
        print(f"{json.dumps(change):72} {score:.3f}  " + " ".join(f"{v:.2f}" for v in vals))
    best = max(rows, key=lambda r: r[0])
    print(f"best on the first blocks: {json.dumps(best[1])} (mean partial {best[0]:.3f})")
    current, _ = first_block_score(MapConfig(), datasets)
    verdict = (
        "change the defaults to it"
        if best[0] > current + MARGIN
        else f"keep the current defaults (within {MARGIN} of the best)"
    )
    print(f"current defaults: mean partial {current:.3f}; {verdict}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
