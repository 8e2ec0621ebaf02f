"""Walk-forward calibration of the map's free parameters against realized liquidations.

Free parameters: the leverage weights (as a bell over log leverage, or the defaults), the
side split of new positions (``direction_long_share``), the decay half-life, the entry spread,
the turnover share (``churn_volume_share``) and the intrabar share. The objective on a window
is the mean over the two sides of the partial rank correlation of predicted with realized
liquidations given the yardstick's four map-free controls (``liqsignal.yardstick``), so a fit
cannot win by re-learning the bar's move, range or volume. A candidate that leaves the map with
almost no pockets or armed flags on the training rows (``MIN_CLUSTER_SHARE``,
``MIN_ARMED_SHARE``) is never chosen: a calibrated config must keep the guards and alerts
alive. A coarse coordinate search (few values per parameter, two rounds) fits them on a
training window; the figures are then measured on a later test window that does not overlap
it. Features are point in time, so scoring the rows of a window of a full-history run uses
nothing after each row.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pandas as pd

from liqsignal.config import DEFAULT_LEVERAGES, MapConfig
from liqsignal.evaluate import baseline_predictions, partial_spearman, spearman
from liqsignal.exceptions import InputError
from liqsignal.sweep import Task, call_limited

__all__ = [
    "CalibrationResult",
    "Fold",
    "calibrate",
    "calibration_tasks",
    "leverage_bell",
    "score_window",
]

#: Candidate values per parameter of the coarse search.
SEARCH_GRID: dict[str, tuple[Any, ...]] = {
    "leverage_shape": (
        "default",
        (3.0, 0.6),
        (5.0, 0.6),
        (10.0, 0.6),
        (20.0, 0.6),
        (5.0, 1.2),
        (10.0, 1.2),
        (20.0, 1.2),
    ),
    "direction_long_share": (0.5, 0.55, 0.6, 0.65),
    "half_life_hours": (12.0, 24.0, 48.0, 96.0, 192.0),
    "entry_spread": (0.25, 0.5, 1.0),
    "churn_volume_share": (0.1, 0.3, 0.5, 1.0),
    "intrabar_share": (0.0, 0.25, 0.5, 0.75, 1.0),
}

#: Smallest share of training bars with a pocket on each side for a candidate to count.
MIN_CLUSTER_SHARE = 0.05
#: Smallest share of training bars armed (either side) for a candidate to count.
MIN_ARMED_SHARE = 0.002


def leverage_bell(center: float, width: float, leverages: Sequence[float] = DEFAULT_LEVERAGES):
    """Weights over ``leverages`` shaped as a bell in log leverage (centre, width in ln units)."""
    lv = np.log(np.asarray(leverages, dtype=np.float64))
    w = np.exp(-0.5 * ((lv - math.log(center)) / width) ** 2)
    w = w / w.sum()
    return tuple(round(float(v), 5) for v in w)


def _apply(cfg: MapConfig, name: str, value: Any) -> MapConfig:
    if name == "leverage_shape":
        if value == "default":
            return cfg.replace(leverage_weights=MapConfig().leverage_weights)
        c, w = value
        return cfg.replace(leverage_weights=leverage_bell(c, w, cfg.leverages))
    return cfg.replace(**{name: value})


def score_window(
    df: pd.DataFrame, cfg: MapConfig, rows: slice, *, proxy: bool = False
) -> dict[str, float]:
    """Per-side Spearman, baseline, partial given the baseline and given all four controls,
    and the firing shares, on ``rows`` of a point-in-time run over ``df``."""
    from liqsignal.features import compute_features
    from liqsignal.yardstick import control_predictors, partial_rank

    feats = compute_features(df, cfg, proxy=proxy)
    assert isinstance(feats, pd.DataFrame)
    base = baseline_predictions(df)
    ctrls = control_predictors(df)
    out: dict[str, float] = {}
    armed_by_side = []
    for side in ("long", "short"):
        pred = feats[f"liq_pred_{side}_usd"].to_numpy()[rows]
        real = df[f"realized_{side}_usd"].to_numpy()[rows]
        b = base[f"base_{side}_usd"].to_numpy()[rows]
        out[f"{side}_model"] = spearman(pred, real)
        out[f"{side}_baseline"] = spearman(b, real)
        out[f"{side}_partial"] = partial_spearman(pred, real, b)
        out[f"{side}_partial_controls"] = partial_rank(
            pred, real, ctrls[side].to_numpy(dtype=np.float64)[rows]
        )
        out[f"{side}_cluster_share"] = float(
            np.mean(feats[f"liq_{side}_cluster_usd"].to_numpy()[rows] > 0)
        )
        armed_by_side.append(feats[f"liq_{side}_armed"].to_numpy()[rows] > 0)
    armed = armed_by_side[0] | armed_by_side[1]
    out["armed_share"] = float(armed.mean()) if armed.size else 0.0
    fires = (
        min(out["long_cluster_share"], out["short_cluster_share"]) >= MIN_CLUSTER_SHARE
        and out["armed_share"] >= MIN_ARMED_SHARE
    )
    out["fires"] = float(fires)
    obj = 0.5 * (out["long_partial_controls"] + out["short_partial_controls"])
    out["objective"] = obj if fires else -math.inf
    return out


@dataclass(frozen=True)
class Fold:
    """One walk-forward step: fitted on ``train``, measured on the later ``test`` rows."""

    train: tuple[str, str]
    test: tuple[str, str]
    fitted: dict[str, Any]
    train_objective_default: float
    train_objective_fitted: float
    test_default: dict[str, float]
    test_fitted: dict[str, float]

    def to_dict(self) -> dict[str, Any]:
        return {
            "train": list(self.train),
            "test": list(self.test),
            "fitted": self.fitted,
            "train_objective_default": self.train_objective_default,
            "train_objective_fitted": self.train_objective_fitted,
            "test_default": self.test_default,
            "test_fitted": self.test_fitted,
        }


@dataclass(frozen=True)
class CalibrationResult:
    """Walk-forward folds and the parameters fitted on all training rows for live use."""

    folds: list[Fold]
    final: dict[str, Any]  # fitted on every row after the warm-up (for the config section)
    evaluations: int
    seconds: float
    config_section: dict[str, Any] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        return {
            "folds": [f.to_dict() for f in self.folds],
            "final": self.final,
            "evaluations": self.evaluations,
            "seconds": self.seconds,
            "config": {"liqsignal": {"engine": self.config_section}},
        }


def _fit(
    df: pd.DataFrame,
    base_cfg: MapConfig,
    rows: slice,
    grid: dict[str, tuple[Any, ...]],
    rounds: int,
    count: list[int],
    tick: Callable[[], None],
) -> tuple[MapConfig, dict[str, Any], float]:
    chosen: dict[str, Any] = {}
    cfg = base_cfg
    best = score_window(df, cfg, rows)["objective"]
    count[0] += 1
    tick()
    for _ in range(rounds):
        improved = False
        for name, values in grid.items():
            for v in values:
                trial = _apply(cfg, name, v)
                s = score_window(df, trial, rows)["objective"]
                count[0] += 1
                tick()
                if math.isfinite(s) and s > best + 1e-6:
                    best, cfg, improved = s, trial, True
                    chosen[name] = v
        if not improved:
            break
    return cfg, chosen, best


def _section(cfg: MapConfig) -> dict[str, Any]:
    return {
        "leverages": list(cfg.leverages),
        "leverage_weights": list(cfg.leverage_weights),
        "direction_long_share": cfg.direction_long_share,
        "half_life_hours": cfg.half_life_hours,
        "entry_spread": cfg.entry_spread,
        "churn_volume_share": cfg.churn_volume_share,
        "intrabar_share": cfg.intrabar_share,
        "close_relative": cfg.close_relative,
        "contrast_window_pct": cfg.contrast_window_pct,
    }


def _check(df: pd.DataFrame, folds: int, warmup: int) -> int:
    """The block length of the walk-forward split (validates ``df`` and ``folds``)."""
    for c in ("realized_long_usd", "realized_short_usd"):
        if c not in df.columns:
            raise InputError(f"calibrate: missing realized liquidation column {c!r}")
    if folds < 1:
        raise InputError("calibrate: folds must be >= 1")
    n = len(df)
    block = (n - warmup) // (folds + 1)
    if block < 50:
        raise InputError(f"calibrate: {n} bars leave blocks of {block} (< 50) for {folds} folds")
    return block


def fold_task(
    df: pd.DataFrame,
    base: MapConfig,
    i: int,
    folds: int,
    warmup: int,
    rounds: int = 2,
    grid: dict[str, tuple[Any, ...]] | None = None,
    tick: Callable[[int], None] | None = None,
) -> tuple[Fold, int]:
    """Walk-forward fold ``i`` (0-based) of ``folds``: fit on its training blocks, score on its
    test block; returns the fold and the number of runs it took (one sweep task)."""
    g = grid or SEARCH_GRID
    n = len(df)
    block = _check(df, folds, warmup)
    count = [0]

    def step() -> None:
        if tick is not None:
            tick(count[0])

    dates = pd.DatetimeIndex(df["date"])
    tr = slice(warmup, warmup + block * (i + 1))
    te_end = warmup + block * (i + 2) if i < folds - 1 else n
    te = slice(warmup + block * (i + 1), te_end)
    fitted_cfg, chosen, train_fit = _fit(df, base, tr, g, rounds, count, step)
    train_def = score_window(df, base, tr)["objective"]
    test_def = score_window(df, base, te)
    test_fit = score_window(df, fitted_cfg, te)
    count[0] += 2
    step()
    fold = Fold(
        train=(str(dates[tr.start]), str(dates[tr.stop - 1])),
        test=(str(dates[te.start]), str(dates[te.stop - 1])),
        fitted={k: _jsonable(v) for k, v in chosen.items()},
        train_objective_default=train_def,
        train_objective_fitted=train_fit,
        test_default=test_def,
        test_fitted=test_fit,
    )
    return fold, count[0]


def final_task(
    df: pd.DataFrame,
    base: MapConfig,
    warmup: int,
    rounds: int = 2,
    grid: dict[str, tuple[Any, ...]] | None = None,
    tick: Callable[[int], None] | None = None,
) -> tuple[dict[str, Any], dict[str, Any], int]:
    """The fit on every row after the warm-up (for the written config): ``(chosen values,
    config section, runs)`` (one sweep task)."""
    count = [0]

    def step() -> None:
        if tick is not None:
            tick(count[0])

    cfg, chosen, _ = _fit(df, base, slice(warmup, len(df)), grid or SEARCH_GRID, rounds, count,
                          step)  # fmt: skip
    return {k: _jsonable(v) for k, v in chosen.items()}, _section(cfg), count[0]


@dataclass(frozen=True)
class _Plan:
    """How a calibration fits: ``folds`` walk-forward folds after ``warmup`` bars, each fit
    ``rounds`` of coordinate search over ``grid`` (None: ``SEARCH_GRID``)."""

    folds: int = 2
    warmup: int = 200
    rounds: int = 2
    grid: dict[str, tuple[Any, ...]] | None = None

    def runs(self) -> int:
        """Runs of the map the whole calibration takes (every fit, then the two scores of
        each fold's test block)."""
        per_fit = 1 + self.rounds * sum(len(v) for v in (self.grid or SEARCH_GRID).values())
        return per_fit * (self.folds + 1) + 2 * self.folds


def calibration_tasks(
    df: pd.DataFrame, config: MapConfig | None = None, *, market: str = "", **plan: Any
) -> list[Task]:
    """The sweep tasks of one market's calibration: one per fold, then the final fit; keys
    ``(market, fold)`` with fold ``"final"`` for the last. Tasks of several markets can be
    concatenated into one ``liqsignal.sweep.run_tasks`` call. ``plan``: ``folds``,
    ``warmup``, ``rounds``, ``grid`` as for :func:`calibrate`."""
    p = _Plan(**plan)
    _check(df, p.folds, p.warmup)
    base = config or MapConfig()
    tasks = [
        Task((market, i + 1), fold_task, (df, base, i, p.folds, p.warmup, p.rounds, p.grid))
        for i in range(p.folds)
    ]
    tasks.append(Task((market, "final"), final_task, (df, base, p.warmup, p.rounds, p.grid)))
    return tasks


def calibrate(
    df: pd.DataFrame,
    config: MapConfig | None = None,
    *,
    progress: Callable[[int, int], None] | None = None,
    jobs: int = 1,
    scheduler: str | None = None,
    **plan: Any,
) -> CalibrationResult:
    """Walk-forward: split the rows after the warm-up into ``folds + 1`` equal blocks; fold i
    fits on blocks 0..i (expanding) and measures on block i+1 alone, never overlapping. The
    final parameters are fitted on all rows after the warm-up (for the written config).
    ``plan``: ``folds`` (2), ``warmup`` bars (200), search ``rounds`` (2) per fit and the
    ``grid`` searched (None: ``SEARCH_GRID``).

    The folds and the final fit are independent sweep tasks (``calibration_tasks``): ``jobs``
    local processes or a Dask ``scheduler`` run them in parallel (``liqsignal.sweep``) with the
    same result as the serial run (``seconds`` aside)."""
    import time

    from liqsignal.sweep import run_tasks

    tasks = calibration_tasks(df, config, **plan)
    total = _Plan(**plan).runs()
    t0 = time.perf_counter()
    if jobs == 1 and scheduler is None:
        # in this process: progress per run of the map, as the fits go
        done = [0]
        results = []
        for t in tasks:

            def tick(k: int) -> None:
                if progress is not None:
                    progress(done[0] + k, total)

            results.append(call_limited(t.fn, *t.args, tick=tick))
            done[0] += results[-1][-1]
    else:
        finished = [0]

        def on_done(_i: int, res: Any) -> None:
            finished[0] += res[-1]
            if progress is not None:
                progress(finished[0], total)

        results = run_tasks(tasks, jobs=jobs, scheduler=scheduler, on_done=on_done)
    *fold_results, (final, section, _) = results
    return CalibrationResult(
        folds=[f for f, _ in fold_results],
        final=final,
        evaluations=sum(r[-1] for r in results),
        seconds=round(time.perf_counter() - t0, 2),
        config_section=section,
    )


def _jsonable(v: Any) -> Any:
    if isinstance(v, tuple):
        return {"center": v[0], "width_ln": v[1]}
    return v


# -- the realized scale against the unscaled map (calibrate --realized-scale) ---------------


def compare_realized_scale(
    datasets: Any,
    config: Any = None,
    scale: Any = None,
    *,
    n_folds: int = 3,
    warmup: int = 200,
) -> dict[str, Any]:
    """The yardstick's per-bar figures and the gate with and without the scale, and the level
    calibration on each fold's test bars (out of sample: the scale learns from earlier bars
    only, nothing is tuned on a test block). ``improves_everywhere``: the gate passes with the
    scale and its partial given all controls (all bars after warm-up) is not lower on any
    dataset and side, nor its median test-fold log error higher."""
    from liqsignal.realized_scale import RealizedScaleConfig
    from liqsignal.yardstick import gate, yardstick

    rs = scale if scale is not None and scale.enabled else RealizedScaleConfig(enabled=True)
    dss = list(datasets)
    kw: dict[str, Any] = {"n_folds": n_folds, "warmup": warmup, "boot": 0, "structure": False}
    off = yardstick(config, dss, **kw)
    on = yardstick(config, dss, realized_scale=rs, **kw)
    rows = []
    better = gate(on).passed
    for a, b in zip(off["datasets"], on["datasets"], strict=True):
        for side in ("long", "short"):
            pa, pb = a["per_bar"][side], b["per_bar"][side]
            lv = b["levels"][side]
            row = {"dataset": a["dataset"], "side": side}
            for name, p, key in (("map", pa, "map"), ("scaled", pb, "scaled")):
                row[name] = {
                    "spearman": p["all"]["spearman"]["liq_pred"],
                    "partial": p["all"]["partial_given_controls"]["liq_pred"],
                    "fold_partial": [f["partial_given_controls"]["liq_pred"] for f in p["folds"]],
                    "fold_gain": [
                        f["oos_gain_over_control_regression"]["liq_pred"] for f in p["folds"]
                    ],
                    "test_ratio": [x["ratio"] for x in lv[key]["folds"]],
                    "test_log_error": [x["log_error"] for x in lv[key]["folds"]],
                }
            m, s = row["map"], row["scaled"]
            better &= s["partial"] >= m["partial"]
            better &= float(np.median(s["test_log_error"])) <= float(np.median(m["test_log_error"]))
            rows.append(row)
    return {
        "scale": rs.to_dict(),
        "rows": rows,
        "gate_map": gate(off).passed,
        "gate_scaled": gate(on).passed,
        "improves_everywhere": bool(better),
    }


def format_realized_scale(res: dict[str, Any]) -> str:
    """The comparison of :func:`compare` as text."""

    def f(v: float, fmt: str = ".3f") -> str:
        return "-" if v is None or not math.isfinite(v) else format(v, fmt)

    lines = [
        f"realized scale {res['scale']} against the unscaled map (walk-forward: the scale of a "
        "bar is learned from earlier bars only)",
        "per side: Spearman and partial given all controls (all bars after warm-up); per test "
        "fold: partial, out-of-sample gain over the control regression, realized / predicted "
        "USD on crossed bars, median |ln(realized / predicted)|",
    ]
    for r in res["rows"]:
        for name in ("map", "scaled"):
            v = r[name]
            lines.append(
                f"  {r['dataset']} {r['side']:<6}{name:<7} Spearman {f(v['spearman'])} partial "
                f"{f(v['partial'])} | folds partial "
                + " ".join(f(x) for x in v["fold_partial"])
                + " gain "
                + " ".join(f(x, "+.3f") for x in v["fold_gain"])
                + " ratio "
                + " ".join(f(x) for x in v["test_ratio"])
                + " log error "
                + " ".join(f(x) for x in v["test_log_error"])
            )
    verdict = "yes" if res["improves_everywhere"] else "no"
    lines.append(
        f"gate: map {'PASSED' if res['gate_map'] else 'FAILED'}, scaled "
        f"{'PASSED' if res['gate_scaled'] else 'FAILED'}; scaled at least as good on every "
        f"dataset and side (partial, test log error): {verdict}"
    )
    return "\n".join(lines)
