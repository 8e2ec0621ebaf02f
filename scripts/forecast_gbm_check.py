"""Does a small gradient-boosted model beat the forecast's logistic regression out of sample?

The same features, the same walk-forward folds and pooled training as ``liqsignal fit --bundled
--report`` (``liqsignal.forecast``), with scikit-learn's ``HistGradientBoostingClassifier`` at
depth 2 and 3 in place of the logistic regression; prints the pooled out-of-sample AUC, the log
loss minus that of the test blocks' own base rate, and the ECE, per side.

    .venv/bin/python scripts/forecast_gbm_check.py
"""

from __future__ import annotations

import numpy as np
from sklearn.ensemble import HistGradientBoostingClassifier

from liqsignal import forecast as fc
from liqsignal.datasets import walk_forward_folds

PARAMS = (
    {"max_depth": 2, "max_iter": 100, "learning_rate": 0.05, "min_samples_leaf": 100},
    {"max_depth": 3, "max_iter": 200, "learning_rate": 0.03, "min_samples_leaf": 200},
)


def main() -> int:
    rows = fc.training_frames(fc._bundled_data(None), 6)
    print(f"{'features':<10}{'depth':>6}{'side':>7}{'AUC':>8}{'LL - base':>11}{'ECE':>8}")
    for use_map in (True, False):
        for params in PARAMS:
            res: dict[str, tuple[list[np.ndarray], list[np.ndarray]]] = {
                s: ([], []) for s in fc.SIDES
            }
            for r in rows:
                for fold in walk_forward_folds(len(r.dates)):
                    cutoff = int(r.dates[fold.test.start])
                    masks = [fc._label_mask(rr, 6, cutoff, 200) for rr in rows]
                    feats = fc._feature_list(rows, use_map, masks)
                    for s in fc.SIDES:
                        x, y = fc._design(rows, s, masks, feats)
                        m = HistGradientBoostingClassifier(random_state=0, **params).fit(x, y)
                        xt = r.x[s][feats].to_numpy()[fold.test]
                        yt = r.y[s][fold.test]
                        ok = np.all(np.isfinite(xt), axis=1) & np.isfinite(yt)
                        res[s][0].append(yt[ok])
                        res[s][1].append(m.predict_proba(xt[ok])[:, 1])
            for s in fc.SIDES:
                sc = fc.score_probabilities(np.concatenate(res[s][0]), np.concatenate(res[s][1]))
                print(f"{'map' if use_map else 'map-free':<10}{params['max_depth']:>6}{s:>7}"
                      f"{sc['auc']:>8.3f}{sc['log_loss'] - sc['base_log_loss']:>+11.4f}"
                      f"{sc['ece']:>8.3f}")  # fmt: skip
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
