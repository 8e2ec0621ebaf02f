"""The yardstick: the map against strong map-free controls, per dataset and walk-forward fold.

Built so that it cannot flatter the model. Per bar t and side, the realized liquidations are
ranked against

* map-free controls known at the bar's close: ``move_oi`` (the bar's move from the previous
  close x previous OI, the old baseline), ``extreme_oi`` (how far the bar broke the previous
  bar's low / high x previous OI), ``range_oi`` (range x previous OI), ``volume_range``
  (volume x (high - low) / close), and a rank regression on all four fitted walk-forward
  (expanding window, past only);
* the model's parts: ``liq_pred`` (all of it), ``standing`` (levels that stood before the bar
  and that the bar's range reached: what the map knew before the bar) and ``same_bar`` (the
  intrabar and turnover terms built from the bar's own range and volume).

Every per-bar figure here is a **same-bar nowcast** (it knows bar t's range); the ``standing``
part is the map's own forecast read at the bar's range. Ex-ante forecasts are the forecast
module's job.

Reported per dataset, side and fold: Spearman of each control and part (with 48-bar block
bootstrap intervals), the partial rank correlation of each part given all controls, and the
walk-forward out-of-sample gain in Spearman from adding the part to the control regression.
Structure checks (cluster touches against volatility-matched random levels and circular
shifts, armed flags against circular shifts of the flag series) and the seeds' two claims
("volatility expands once a pocket breaks", "the post-flush reset is cleaner") are reported as
they come out, each with counts, rates and a p-value.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pandas as pd

from liqsignal.config import MapConfig
from liqsignal.datasets import Dataset, Fold, cascade_onsets, load_datasets, walk_forward_folds
from liqsignal.evaluate import _excursions
from liqsignal.exceptions import InputError
from liqsignal.realized_scale import (
    RealizedScaleConfig,
    apply_realized_scale,
    crossed_bars,
    level_calibration,
)
from liqsignal.stats import ranks, spearman_fast
from liqsignal.sweep import Task

__all__ = [
    "CONTROL_NAMES",
    "PART_NAMES",
    "GateResult",
    "block_bootstrap_ci",
    "control_predictors",
    "format_report",
    "gate",
    "market_config",
    "model_parts",
    "partial_rank",
    "rank_regression_oos",
    "ranks",
    "score_dataset",
    "spearman_fast",
    "yardstick",
    "yardstick_tasks",
]

CONTROL_NAMES: tuple[str, ...] = ("move_oi", "extreme_oi", "range_oi", "volume_range")
PART_NAMES: tuple[str, ...] = ("liq_pred", "standing", "same_bar")
SIDES = ("long", "short")


# ------------------------------------------------------------------------------------------
# ranks and correlations
# ------------------------------------------------------------------------------------------


def partial_rank(model: np.ndarray, real: np.ndarray, controls: np.ndarray) -> float:
    """Partial rank correlation of ``model`` with ``real`` given every column of ``controls``:
    the correlation of the residuals of their ranks after a least-squares fit on the controls'
    ranks (with intercept)."""
    m = np.asarray(model, dtype=np.float64)
    r = np.asarray(real, dtype=np.float64)
    c = np.asarray(controls, dtype=np.float64)
    if c.ndim == 1:
        c = c[:, None]
    ok = np.isfinite(m) & np.isfinite(r) & np.all(np.isfinite(c), axis=1)
    if ok.sum() < c.shape[1] + 4:
        return math.nan
    rm = ranks(m[ok])
    rr = ranks(r[ok])
    rc = np.column_stack([np.ones(ok.sum())] + [ranks(c[ok, j]) for j in range(c.shape[1])])
    beta_m, *_ = np.linalg.lstsq(rc, rm, rcond=None)
    beta_r, *_ = np.linalg.lstsq(rc, rr, rcond=None)
    em = rm - rc @ beta_m
    er = rr - rc @ beta_r
    den = math.sqrt(float(np.sum(em * em) * np.sum(er * er)))
    if den <= 1e-12:
        return math.nan
    return float(np.sum(em * er) / den)


def _ecdf(train: np.ndarray, values: np.ndarray) -> np.ndarray:
    """Mid-rank empirical CDF of ``train`` evaluated at ``values`` (past-only transform)."""
    s = np.sort(train[np.isfinite(train)])
    if s.size == 0:
        return np.full(values.shape, 0.5)
    lo = np.searchsorted(s, values, side="left")
    hi = np.searchsorted(s, values, side="right")
    return (lo + hi) / (2.0 * s.size)


def rank_regression_oos(X: np.ndarray, y: np.ndarray, train: slice, test: slice) -> np.ndarray:
    """Fit a rank regression on ``train`` rows (each predictor and the target mapped through
    the training window's empirical CDF, least squares with intercept) and predict ``test``."""
    Xtr = X[train]
    ytr = y[train]
    ok = np.isfinite(ytr) & np.all(np.isfinite(Xtr), axis=1)
    Xtr = Xtr[ok]
    ytr = ytr[ok]
    if ytr.size < X.shape[1] + 5:
        return np.full(test.stop - test.start, np.nan)
    cols_tr = [np.ones(ytr.size)]
    cols_te = [np.ones(test.stop - test.start)]
    for j in range(X.shape[1]):
        cols_tr.append(_ecdf(Xtr[:, j], Xtr[:, j]))
        cols_te.append(_ecdf(Xtr[:, j], X[test, j]))
    A = np.column_stack(cols_tr)
    beta, *_ = np.linalg.lstsq(A, _ecdf(ytr, ytr), rcond=None)
    return np.asarray(np.column_stack(cols_te) @ beta, dtype=np.float64)


def block_bootstrap_ci(
    stat: Any,
    arrays: Sequence[np.ndarray],
    *,
    block: int = 48,
    n_boot: int = 200,
    seed: int = 0,
    level: float = 0.90,
) -> tuple[float, float]:
    """Moving-block bootstrap interval of ``stat(*arrays)`` (blocks of ``block`` consecutive
    bars keep the serial dependence of liquidations)."""
    n = len(arrays[0])
    if n < 2 * block:
        return math.nan, math.nan
    rng = np.random.default_rng(seed)
    k = int(math.ceil(n / block))
    vals = []
    for _ in range(n_boot):
        starts = rng.integers(0, n - block + 1, size=k)
        idx = (starts[:, None] + np.arange(block)[None, :]).ravel()[:n]
        v = stat(*(a[idx] for a in arrays))
        if math.isfinite(v):
            vals.append(v)
    if len(vals) < n_boot // 2:
        return math.nan, math.nan
    a = (1.0 - level) / 2.0
    return float(np.quantile(vals, a)), float(np.quantile(vals, 1.0 - a))


# ------------------------------------------------------------------------------------------
# controls and model parts
# ------------------------------------------------------------------------------------------


def _prev_oi_usd(df: pd.DataFrame) -> np.ndarray:
    if "open_interest_value" in df.columns:
        oi = pd.to_numeric(df["open_interest_value"], errors="coerce")
    elif "open_interest_amount" in df.columns:
        oi = pd.to_numeric(df["open_interest_amount"], errors="coerce") * df["close"]
    else:
        raise InputError("yardstick: need open_interest_value or open_interest_amount")
    return np.asarray(oi.shift(1).to_numpy(dtype=np.float64))


def control_predictors(df: pd.DataFrame) -> dict[str, pd.DataFrame]:
    """Map-free controls per side (``long`` / ``short``), columns ``CONTROL_NAMES``; each known
    at the bar's close (previous close / low / high / OI and the bar's own OHLCV)."""
    c = df["close"].to_numpy(dtype=np.float64)
    h = df["high"].to_numpy(dtype=np.float64)
    lo = df["low"].to_numpy(dtype=np.float64)
    v = df["volume"].to_numpy(dtype=np.float64)
    pc = np.concatenate([[np.nan], c[:-1]])
    ph = np.concatenate([[np.nan], h[:-1]])
    pl = np.concatenate([[np.nan], lo[:-1]])
    poi = _prev_oi_usd(df)
    rng = (h - lo) / pc * poi
    vol_range = v * (h - lo) / c

    def side(move: np.ndarray, extreme: np.ndarray) -> pd.DataFrame:
        return pd.DataFrame(
            {
                "move_oi": move / pc * poi,
                "extreme_oi": extreme / pc * poi,
                "range_oi": rng,
                "volume_range": vol_range,
            },
            index=df.index,
        )

    return {
        "long": side(np.maximum(0.0, pc - lo), np.maximum(0.0, pl - lo)),
        "short": side(np.maximum(0.0, h - pc), np.maximum(0.0, h - ph)),
    }


def model_parts(features: pd.DataFrame, side: str) -> dict[str, np.ndarray]:
    """``liq_pred``, ``standing`` and ``same_bar`` parts of the model's per-bar prediction."""
    pred = features[f"liq_pred_{side}_usd"].to_numpy(dtype=np.float64)
    stand = features[f"liq_pred_standing_{side}_usd"].to_numpy(dtype=np.float64)
    return {"liq_pred": pred, "standing": stand, "same_bar": np.maximum(pred - stand, 0.0)}


# ------------------------------------------------------------------------------------------
# per-bar scores
# ------------------------------------------------------------------------------------------


def _window_scores(
    parts: dict[str, np.ndarray],
    ctrl: pd.DataFrame,
    real: np.ndarray,
    sl: slice,
    boot: int,
    seed: int,
) -> dict[str, Any]:
    y = real[sl]
    C = ctrl.to_numpy(dtype=np.float64)[sl]
    out: dict[str, Any] = {"bars": int(sl.stop - sl.start)}
    sp: dict[str, float] = {}
    ci: dict[str, list[float]] = {}
    for name in ctrl.columns:
        xv = ctrl[name].to_numpy(dtype=np.float64)[sl]
        sp[name] = spearman_fast(xv, y)
        if boot:
            ci[name] = list(block_bootstrap_ci(spearman_fast, [xv, y], n_boot=boot, seed=seed))
    part_partial: dict[str, float] = {}
    part_partial_ci: dict[str, list[float]] = {}
    for name, arr in parts.items():
        xv = arr[sl]
        sp[name] = spearman_fast(xv, y)
        part_partial[name] = partial_rank(xv, y, C)
        if boot:
            ci[name] = list(block_bootstrap_ci(spearman_fast, [xv, y], n_boot=boot, seed=seed))
            part_partial_ci[name] = list(
                block_bootstrap_ci(partial_rank, [xv, y, C], n_boot=boot, seed=seed)
            )
    out["spearman"] = sp
    out["partial_given_controls"] = part_partial
    if boot:
        out["spearman_ci90"] = ci
        out["partial_ci90"] = part_partial_ci
    return out


def _bar_scores(
    df: pd.DataFrame,
    features: pd.DataFrame,
    ctrls: dict[str, pd.DataFrame],
    folds: list[Fold],
    warmup: int,
    boot: int,
    seed: int,
) -> dict[str, Any]:
    res: dict[str, Any] = {}
    n = len(df)
    for side in SIDES:
        real = df[f"realized_{side}_usd"].to_numpy(dtype=np.float64)
        parts = model_parts(features, side)
        ctrl = ctrls[side]
        X = ctrl.to_numpy(dtype=np.float64)
        side_res: dict[str, Any] = {
            "all": _window_scores(parts, ctrl, real, slice(warmup, n), boot, seed)
        }
        fold_rows = []
        for f in folds:
            row = _window_scores(parts, ctrl, real, f.test, boot, seed)
            row["fold"] = f.index
            row["test"] = [
                str(df["date"].iloc[f.test.start]),
                str(df["date"].iloc[f.test.stop - 1]),
            ]
            y = real[f.test]
            base_pred = rank_regression_oos(X, real, f.train, f.test)
            row["spearman"]["control_regression"] = spearman_fast(base_pred, y)
            gains = {}
            for name, arr in parts.items():
                Xa = np.column_stack([X, arr])
                aug = rank_regression_oos(Xa, real, f.train, f.test)
                gains[name] = spearman_fast(aug, y) - row["spearman"]["control_regression"]
            row["oos_gain_over_control_regression"] = gains
            fold_rows.append(row)
        side_res["folds"] = fold_rows
        res[side] = side_res
    return res


# ------------------------------------------------------------------------------------------
# structure: touches, armed flags, seeds' claims
# ------------------------------------------------------------------------------------------


def _trailing_vol(df: pd.DataFrame, span: int = 24) -> np.ndarray:
    """Mean (high - low) / close over the ``span`` bars up to and including t (known at t)."""
    r = (df["high"] - df["low"]) / df["close"]
    return np.asarray(r.rolling(span, min_periods=span).mean().to_numpy(dtype=np.float64))


def _quintile(v: np.ndarray, ok: np.ndarray) -> np.ndarray:
    q = np.full(v.shape, -1, dtype=np.int64)
    if ok.sum() >= 5:
        edges = np.quantile(v[ok], [0.2, 0.4, 0.6, 0.8])
        q[ok] = np.searchsorted(edges, v[ok], side="right")
    return q


def _touches(
    df: pd.DataFrame, features: pd.DataFrame, warmup: int, horizon: int, n_shift: int, seed: int
) -> dict[str, Any]:
    """The nearest cluster on each side at non-overlapping origins (every H bars): reached
    within H bars? Against (a) levels at the same distance from bars in the same volatility
    quintile and (b) the cluster distance series shifted circularly in time."""
    down, up = _excursions(df, horizon)
    c = df["close"].to_numpy(dtype=np.float64)
    vol = _trailing_vol(df)
    n = len(df)
    valid = (np.arange(n) >= warmup) & np.isfinite(down) & np.isfinite(vol)
    vq = _quintile(vol, valid)
    origins = np.arange(max(warmup, 24), n - horizon, horizon)
    rng = np.random.default_rng(seed)
    out: dict[str, Any] = {"horizon_bars": horizon}
    for side, move in (("long", down), ("short", up)):
        edge = features[
            f"liq_{side}_cluster_high" if side == "long" else f"liq_{side}_cluster_low"
        ].to_numpy(dtype=np.float64)
        dist = (c - edge) / c if side == "long" else (edge - c) / c
        dist = np.maximum(dist, 0.0)
        have = origins[np.isfinite(dist[origins]) & valid[origins]]
        k = have.size
        if k < 5:
            out[side] = {"clusters": int(k), "note": "too few clusters"}
            continue
        d = dist[have]
        hit = move[have] >= d
        # (a) volatility-matched random levels at the same distance
        p = np.empty(k)
        for i, t in enumerate(have):
            pool = move[valid & (vq == vq[t])]
            p[i] = float(np.mean(pool >= d[i])) if pool.size else math.nan
        model = float(hit.mean())
        rand = float(np.nanmean(p))
        se = math.sqrt(float(np.nansum(p * (1 - p)))) / k
        z = (model - rand) / se if se > 0 else math.nan
        # (b) circular shifts of the cluster distance series
        shifted = []
        for _ in range(n_shift):
            s = int(rng.integers(horizon, n - horizon))
            ds = np.roll(dist, s)[have]
            okd = np.isfinite(ds)
            if okd.sum():
                shifted.append(float(np.mean(move[have][okd] >= ds[okd])))
        sh = np.asarray(shifted)
        out[side] = {
            "clusters": int(k),
            "median_distance_pct": float(np.median(d) * 100),
            "touch_rate": model,
            "vol_matched_random_rate": rand,
            "z_vs_vol_matched": z,
            "p_vs_vol_matched": float(0.5 * math.erfc(z / math.sqrt(2)))
            if math.isfinite(z)
            else math.nan,
            "circular_shift_rate_mean": float(sh.mean()) if sh.size else math.nan,
            "p_vs_circular_shift": float((np.sum(sh >= model) + 1) / (sh.size + 1))
            if sh.size
            else math.nan,
        }
    return out


def _flag_scores(flags: np.ndarray, onsets: np.ndarray, horizon: int) -> tuple[float, float]:
    f = np.flatnonzero(flags)
    o = np.flatnonzero(onsets)
    if f.size == 0:
        return math.nan, math.nan
    if o.size == 0:
        return 0.0, math.nan
    j = np.searchsorted(o, f + 1, side="left")
    has = j < o.size
    gap = np.where(has, o[np.minimum(j, o.size - 1)] - f, horizon + 1)
    prec = float(np.mean(gap <= horizon))
    caught = 0
    for on in o:
        k0 = np.searchsorted(f, on - horizon, side="left")
        k1 = np.searchsorted(f, on, side="left")
        caught += int(k1 > k0)
    return prec, caught / o.size


def _armed(
    df: pd.DataFrame, features: pd.DataFrame, warmup: int, horizon: int, n_shift: int, seed: int
) -> dict[str, Any]:
    rng = np.random.default_rng(seed)
    out: dict[str, Any] = {"horizon_bars": horizon, "onset": "trailing 98th percentile, past only"}
    for side in SIDES:
        real = df[f"realized_{side}_usd"].to_numpy(dtype=np.float64)
        onsets, _bar = cascade_onsets(real, q=0.98, min_history=warmup)
        flags = features[f"liq_{side}_armed"].to_numpy(dtype=np.float64) > 0
        flags = flags[warmup:]
        on = onsets[warmup:]
        n = on.size
        prec, rec = _flag_scores(flags, on, horizon)
        base = np.zeros(n, dtype=bool)
        for t in np.flatnonzero(on):
            base[max(0, t - horizon) : t] = True
        rp, rr = [], []
        if flags.any() and n > 2 * horizon:
            for _ in range(n_shift):
                s = int(rng.integers(horizon, n - horizon))
                p_, r_ = _flag_scores(np.roll(flags, s), on, horizon)
                rp.append(p_)
                rr.append(r_)
        rpa = np.asarray(rp, dtype=np.float64)
        rra = np.asarray(rr, dtype=np.float64)
        out[side] = {
            "bars": int(n),
            "flags": int(flags.sum()),
            "flag_rate": float(flags.mean()) if n else math.nan,
            "cascades": int(on.sum()),
            "base_rate": float(base.mean()) if n else math.nan,
            "precision": prec,
            "recall": rec,
            "shift_precision_mean": float(np.nanmean(rpa)) if rpa.size else math.nan,
            "p_precision_vs_shift": float((np.sum(rpa >= prec) + 1) / (rpa.size + 1))
            if rpa.size and math.isfinite(prec)
            else math.nan,
            "p_recall_vs_shift": float((np.sum(rra >= rec) + 1) / (rra.size + 1))
            if rra.size and math.isfinite(rec)
            else math.nan,
        }
    return out


def _matched_effect(
    treated: np.ndarray,
    outcome: np.ndarray,
    strata: np.ndarray,
    ok: np.ndarray,
    n_perm: int,
    seed: int,
) -> dict[str, Any]:
    """Mean outcome of treated bars minus the mean of untreated bars in the same stratum,
    weighted by treated counts; p-value from permuting the treatment within strata."""
    rng = np.random.default_rng(seed)
    sel = ok & np.isfinite(outcome) & (strata >= 0)
    tr = treated & sel
    if tr.sum() < 3:
        return {"treated": int(tr.sum()), "note": "too few treated bars"}

    def effect(tflag: np.ndarray) -> float:
        num = 0.0
        cnt = 0
        for s in np.unique(strata[sel & tflag]):
            m = sel & (strata == s)
            a = outcome[m & tflag]
            b = outcome[m & ~tflag]
            if a.size and b.size:
                num += a.size * (a.mean() - b.mean())
                cnt += a.size
        return num / cnt if cnt else math.nan

    obs = effect(tr)
    perm = []
    idx_by_s = {s: np.flatnonzero(sel & (strata == s)) for s in np.unique(strata[sel])}
    for _ in range(n_perm):
        t2 = np.zeros_like(tr)
        for _s, ids in idx_by_s.items():
            k = int(tr[ids].sum())
            if k:
                t2[rng.choice(ids, size=k, replace=False)] = True
        perm.append(effect(t2))
    pa = np.asarray(perm)
    pa = pa[np.isfinite(pa)]
    p_two = float((np.sum(np.abs(pa) >= abs(obs)) + 1) / (pa.size + 1)) if pa.size else math.nan
    return {
        "treated": int(tr.sum()),
        "treated_mean": float(outcome[tr].mean()),
        "matched_effect": float(obs),
        "p_two_sided": p_two,
    }


def _seed_claims(
    df: pd.DataFrame, features: pd.DataFrame, warmup: int, horizon: int, n_perm: int, seed: int
) -> dict[str, Any]:
    """'Volatility expands once a pocket breaks' and 'the post-flush reset is cleaner'."""
    c = df["close"].to_numpy(dtype=np.float64)
    h = df["high"].to_numpy(dtype=np.float64)
    lo = df["low"].to_numpy(dtype=np.float64)
    n = len(c)
    rr = (h - lo) / c
    fwd_range = np.full(n, np.nan)
    fwd_ret = np.full(n, np.nan)
    if n > horizon:
        w = np.lib.stride_tricks.sliding_window_view(rr[1:], horizon).mean(axis=1)
        fwd_range[: w.size] = w
        fwd_ret[: n - horizon] = c[horizon:] / c[: n - horizon] - 1.0
    down, up = _excursions(df, horizon)
    prior = _trailing_vol(df)
    pc = np.concatenate([[np.nan], c[:-1]])
    move = np.abs(c / pc - 1.0)
    ok = (np.arange(n) >= warmup) & np.isfinite(prior) & np.isfinite(move)
    strata = _quintile(prior, ok) * 5 + _quintile(move, ok)
    strata[~ok] = -1
    # a bar consumed the nearest cluster of the previous bar's close
    lc = features["liq_long_cluster_high"].to_numpy(dtype=np.float64)
    sc = features["liq_short_cluster_low"].to_numpy(dtype=np.float64)
    prev_lc = np.concatenate([[np.nan], lc[:-1]])
    prev_sc = np.concatenate([[np.nan], sc[:-1]])
    with np.errstate(invalid="ignore"):
        broke = (np.isfinite(prev_lc) & (lo <= prev_lc)) | (np.isfinite(prev_sc) & (h >= prev_sc))
    vol_claim = _matched_effect(broke, fwd_range, strata, ok, n_perm, seed)
    vol_claim["outcome"] = f"mean (high-low)/close over the next {horizon} bars"
    flush = features["liq_flush"].to_numpy(dtype=np.float64)
    fl = np.nan_to_num(flush) != 0
    # direction of the forced move: +1 a long flush (price forced down), -1 a short flush; a bar
    # without a flush takes its own move's direction, so both groups are measured alike
    own = np.where(c < pc, 1.0, -1.0)
    direction = np.where(fl, np.where(flush > 0, 1.0, -1.0), own)
    signed_ret = fwd_ret * direction  # > 0: a rebound against the forced move
    adverse = np.where(direction > 0, down, up)  # drawdown of a position opened into the rebound
    flush_claim = {
        "forward_return_signed": _matched_effect(fl, signed_ret, strata, ok, n_perm, seed),
        "forward_range": _matched_effect(fl, fwd_range, strata, ok, n_perm, seed),
        "adverse_excursion": _matched_effect(fl, adverse, strata, ok, n_perm, seed),
        "note": (
            f"matched on prior volatility and the bar's move quintiles; horizon {horizon} bars; "
            "signed return > 0 means a rebound against the forced move (bars without a flush: "
            "against their own move); adverse excursion is the move against a position opened "
            "into that rebound"
        ),
    }
    return {"pocket_break_volatility": vol_claim, "post_flush": flush_claim}


# ------------------------------------------------------------------------------------------
# datasets, gate
# ------------------------------------------------------------------------------------------


def _levels(
    df: pd.DataFrame, variants: dict[str, pd.DataFrame], folds: list[Fold], warmup: int
) -> dict[str, Any]:
    """Level calibration per side (``liqsignal.realized_scale.level_calibration``): predicted
    against realized USD on the bars that crossed standing levels, all bars after the warm-up
    and each fold's test block, per variant of the features (the map; scaled)."""
    out: dict[str, Any] = {}
    for side in SIDES:
        real = df[f"realized_{side}_usd"].to_numpy(dtype=np.float64)
        crossed = crossed_bars(variants["map"], side)
        out[side] = {}
        for name, feats in variants.items():
            pred = feats[f"liq_pred_{side}_usd"].to_numpy(dtype=np.float64)
            out[side][name] = {
                "all": level_calibration(pred, real, crossed, slice(warmup, len(df))),
                "folds": [level_calibration(pred, real, crossed, f.test) for f in folds],
            }
    return out


def market_config(cfg: MapConfig, symbol: str, price: float) -> MapConfig:
    """``cfg`` for one market: its symbol, and the grid ``MapConfig.auto_grid_for`` gives at its
    price (a 5 bps relative grid when an absolute step does not suit the price)."""
    return cfg.replace(symbol=symbol).auto_grid_for(price)


def _features(ds: Dataset, cfg: MapConfig, fine: bool = True) -> pd.DataFrame:
    """The map's columns on the dataset's bars; built from its finer candles when it has them
    and ``fine`` (see ``liqsignal.finebars``)."""
    from liqsignal.features import compute_features
    from liqsignal.finebars import fine_features

    mcfg = market_config(cfg, ds.symbol, float(ds.frame["close"].iloc[0]))
    if fine and ds.fine is not None:
        return fine_features(ds.frame, ds.fine, mcfg)
    f = compute_features(ds.frame, mcfg)
    assert isinstance(f, pd.DataFrame)
    return f


def _controls(ds: Dataset, fine: bool) -> dict[str, pd.DataFrame]:
    """The map-free controls; with finer candles also the path-aware ones, so the controls
    know what a map built from them knows."""
    from liqsignal.finebars import path_controls

    ctrl = control_predictors(ds.frame)
    if fine and ds.fine is not None:
        path = path_controls(ds.frame, ds.fine)
        ctrl = {s: pd.concat([ctrl[s], path[s]], axis=1) for s in SIDES}
    return ctrl


def score_dataset(
    ds: Dataset,
    config: MapConfig | None = None,
    *,
    n_folds: int = 3,
    warmup: int = 200,
    boot: int = 200,
    horizon_touch: int = 24,
    horizon_armed: int = 6,
    n_shift: int = 300,
    seed: int = 0,
    structure: bool = True,
    fine: bool = True,
    realized_scale: RealizedScaleConfig | None = None,
) -> dict[str, Any]:
    """Every figure of the yardstick for one dataset (JSON-ready dict). ``fine``: build the
    map from the dataset's finer candles where it has them (and add the path-aware controls).
    ``realized_scale`` (when enabled): every figure scores the map scaled by the realized
    liquidations of earlier crossed bars (``liqsignal.realized_scale``); ``levels`` then has
    the unscaled map's level calibration beside the scaled one."""
    cfg = config or MapConfig()
    df = ds.frame
    features = _features(ds, cfg, fine)
    raw = features
    scaled = realized_scale is not None and realized_scale.enabled
    if scaled:
        assert realized_scale is not None
        features = apply_realized_scale(features, df, realized_scale)
    ctrls = _controls(ds, fine)
    folds = walk_forward_folds(len(df), n_folds=n_folds, warmup=warmup)
    res: dict[str, Any] = {
        "dataset": ds.name,
        "symbol": ds.symbol,
        "timeframe": ds.timeframe,
        "span": ds.span,
        "bars": len(df),
        "warmup": warmup,
        "source": ds.source,
        "fine_candles": bool(fine and ds.fine is not None),
        "controls": list(ctrls["long"].columns),
        "per_bar": _bar_scores(df, features, ctrls, folds, warmup, boot, seed),
        "levels": _levels(
            df, {"map": raw, **({"scaled": features} if scaled else {})}, folds, warmup
        ),
    }
    if scaled:
        assert realized_scale is not None
        res["realized_scale"] = realized_scale.to_dict()
    if structure:
        res["touches"] = _touches(df, features, warmup, horizon_touch, n_shift, seed)
        res["armed"] = _armed(df, features, warmup, horizon_armed, n_shift, seed)
        res["claims"] = _seed_claims(df, features, warmup, horizon_armed, n_shift // 3, seed)
        rate = {}
        for side in SIDES:
            f = features[f"liq_{side}_cluster_usd"].to_numpy()[warmup:]
            a = features[f"liq_{side}_armed"].to_numpy()[warmup:]
            rate[side] = {
                "cluster_share": float(np.mean(f > 0)),
                "armed_share": float(np.mean(a > 0)),
            }
        res["firing"] = rate
    return res


def yardstick(
    config: MapConfig | None = None,
    datasets: Iterable[Dataset] | None = None,
    *,
    jobs: int = 1,
    scheduler: str | None = None,
    **kwargs: Any,
) -> dict[str, Any]:
    """The yardstick over datasets (all bundled ones by default). Each dataset is one sweep
    task (its map runs once over its whole history, then every fold is scored on it): ``jobs``
    local processes or a Dask ``scheduler`` score them in parallel (``liqsignal.sweep``), with
    the same report as the serial run."""
    from liqsignal.sweep import run_tasks

    dss = list(datasets) if datasets is not None else load_datasets()
    tasks = yardstick_tasks(config, dss, **kwargs)
    return {"datasets": run_tasks(tasks, jobs=jobs, scheduler=scheduler)}


def yardstick_tasks(
    config: MapConfig | None, datasets: Iterable[Dataset], **kwargs: Any
) -> list[Task]:
    """One sweep task per dataset (key: its name), each giving ``score_dataset``'s dict."""
    return [Task((ds.name,), score_dataset, (ds, config), dict(kwargs)) for ds in datasets]


@dataclass(frozen=True)
class GateResult:
    """Pass/fail of the evaluation gate with one line per failed check."""

    passed: bool
    failures: tuple[str, ...] = ()
    checks: int = 0
    margins: dict[str, float] = field(default_factory=dict)


def gate(report: dict[str, Any]) -> GateResult:
    """The gate: on every dataset and side the model's Spearman (all bars after warm-up) beats
    the move-and-OI baseline, and its partial given all controls is positive on every fold."""
    fails: list[str] = []
    checks = 0
    margins: dict[str, float] = {}
    for d in report["datasets"]:
        for side in SIDES:
            s = d["per_bar"][side]
            sp = s["all"]["spearman"]
            checks += 1
            m = sp["liq_pred"] - sp["move_oi"]
            margins[f"{d['dataset']}.{side}.vs_move_oi"] = m
            if not m > 0:
                fails.append(
                    f"{d['dataset']} {side}: model {sp['liq_pred']:.3f} does not beat move x OI "
                    f"{sp['move_oi']:.3f}"
                )
            for f in s["folds"]:
                checks += 1
                pp = f["partial_given_controls"]["liq_pred"]
                margins[f"{d['dataset']}.{side}.fold{f['fold']}.partial"] = pp
                if not pp > 0:
                    fails.append(
                        f"{d['dataset']} {side} fold {f['fold']}: partial given all controls "
                        f"{pp:.3f} is not positive"
                    )
    return GateResult(not fails, tuple(fails), checks, margins)


# ------------------------------------------------------------------------------------------
# text report
# ------------------------------------------------------------------------------------------


def _f(v: Any, fmt: str = ".3f") -> str:
    if v is None or (isinstance(v, float) and not math.isfinite(v)):
        return "-"
    return format(v, fmt)


def _ci(c: Any) -> str:
    if not c or not all(isinstance(v, float) and math.isfinite(v) for v in c):
        return ""
    return f" [{c[0]:.2f},{c[1]:.2f}]"


def format_report(report: dict[str, Any]) -> str:
    """The yardstick as text: the strong-control table first, then folds and structure."""
    lines: list[str] = []
    for d in report["datasets"]:
        lines.append(
            f"== {d['dataset']} ({d['symbol']} {d['timeframe']}, {d['span']}, {d['bars']} bars, "
            f"first {d['warmup']} warm-up): {d['source']}"
        )
        if d.get("fine_candles"):
            lines.append(
                "map built from the 1h candles inside each bar (liqsignal.finebars); the "
                "path-aware controls (move x OI and volume x range summed over those candles) "
                "join the controls"
            )
        lines.append(
            "per-bar Spearman with realized liquidations, all bars after warm-up "
            "(same-bar nowcast: every column knows the bar's own range; 90% block-bootstrap "
            "interval):"
        )
        for side in SIDES:
            a = d["per_bar"][side]["all"]
            sp, ci = a["spearman"], a.get("spearman_ci90", {})
            cells = [f"{n} {_f(sp[n])}{_ci(ci.get(n))}" for n in d["controls"]]
            lines.append(f"  {side:<5} controls: " + ", ".join(cells))
            cells = [f"{n} {_f(sp[n])}{_ci(ci.get(n))}" for n in PART_NAMES]
            lines.append(f"  {side:<5} model:    " + ", ".join(cells))
            pp, pci = a["partial_given_controls"], a.get("partial_ci90", {})
            cells = [f"{n} {_f(pp[n])}{_ci(pci.get(n))}" for n in PART_NAMES]
            lines.append(f"  {side:<5} partial given all controls: " + ", ".join(cells))
        lines.append(
            "walk-forward folds (test block; control regression fitted on all earlier bars): "
            "Spearman of the control regression, of the model; partial given controls; "
            "out-of-sample gain from adding the part to the regression"
        )
        for side in SIDES:
            for f in d["per_bar"][side]["folds"]:
                sp = f["spearman"]
                pp = f["partial_given_controls"]
                g = f["oos_gain_over_control_regression"]
                lines.append(
                    f"  {side:<5} fold {f['fold']} {f['test'][0][:10]}..{f['test'][1][:10]}: "
                    f"regression {_f(sp['control_regression'])}, model {_f(sp['liq_pred'])}, "
                    f"move_oi {_f(sp['move_oi'])}; partial liq_pred {_f(pp['liq_pred'])} "
                    f"standing {_f(pp['standing'])}; gain liq_pred {_f(g['liq_pred'], '+.3f')} "
                    f"standing {_f(g['standing'], '+.3f')}"
                )
        if "levels" in d:
            lv = d["levels"]
            lines.append(
                "levels: realized / predicted USD on bars that crossed standing levels (1 = "
                "calibrated) and the median |ln(realized / predicted)| per bar, after warm-up"
                + (
                    "; scaled: the map's mass times the realized scale of earlier bars"
                    if "realized_scale" in d
                    else ""
                )
            )
            for side in SIDES:
                cells = [
                    f"{name} ratio {_f(v['all']['ratio'])} log error {_f(v['all']['log_error'])} "
                    f"({v['all']['crossed_bars']} bars)"
                    for name, v in lv[side].items()
                ]
                lines.append(f"  {side:<5} " + "; ".join(cells))
        if "touches" in d:
            t = d["touches"]
            lines.append(
                f"cluster touches within {t['horizon_bars']} bars (nearest cluster, origins "
                f"{t['horizon_bars']} bars apart) against levels at the same distance from bars "
                "of the same volatility quintile, and against circular shifts:"
            )
            for side in SIDES:
                s = t[side]
                if "touch_rate" not in s:
                    lines.append(f"  {side:<5} {s.get('note', '')} ({s['clusters']})")
                    continue
                lines.append(
                    f"  {side:<5} {s['clusters']} clusters, median "
                    f"{_f(s['median_distance_pct'], '.1f')} % "
                    f"away: reached {_f(s['touch_rate'])}, matched random "
                    f"{_f(s['vol_matched_random_rate'])} (p {_f(s['p_vs_vol_matched'], '.2f')}), "
                    f"shifted {_f(s['circular_shift_rate_mean'])} "
                    f"(p {_f(s['p_vs_circular_shift'], '.2f')})"
                )
            a = d["armed"]
            lines.append(
                f"armed flags before a cascade onset within {a['horizon_bars']} bars "
                f"({a['onset']}), "
                "against circular shifts of the flag series:"
            )
            for side in SIDES:
                s = a[side]
                lines.append(
                    f"  {side:<5} {s['flags']} flags "
                    f"({_f(100 * s['flag_rate'], '.1f')} % of bars), "
                    f"{s['cascades']} onsets (base rate {_f(s['base_rate'])}): precision "
                    f"{_f(s['precision'])} vs shifted {_f(s['shift_precision_mean'])} "
                    f"(p {_f(s['p_precision_vs_shift'], '.2f')}), recall {_f(s['recall'])} "
                    f"(p {_f(s['p_recall_vs_shift'], '.2f')})"
                )
            fr = d["firing"]
            lines.append(
                "firing: "
                + ", ".join(
                    f"{side} cluster on {_f(100 * fr[side]['cluster_share'], '.0f')} % of bars, "
                    f"armed on {_f(100 * fr[side]['armed_share'], '.1f')} %"
                    for side in SIDES
                )
            )
            c = d["claims"]
            v = c["pocket_break_volatility"]
            lines.append(
                "claim 'volatility expands once a pocket breaks': "
                + (
                    f"{v['treated']} bars broke the previous bar's nearest cluster; {v['outcome']} "
                    f"{_f(v['treated_mean'], '.4f')}, {_f(v['matched_effect'], '+.4f')} against "
                    f"matched bars (p {_f(v['p_two_sided'], '.2f')})"
                    if "matched_effect" in v
                    else v.get("note", "")
                )
            )
            pf = c["post_flush"]
            parts = []
            for k in ("forward_return_signed", "forward_range", "adverse_excursion"):
                e = pf[k]
                if "matched_effect" in e:
                    parts.append(
                        f"{k} {_f(e['matched_effect'], '+.4f')} (p {_f(e['p_two_sided'], '.2f')})"
                    )
            n_fl = pf["forward_range"].get("treated", 0)
            lines.append(
                f"claim 'the post-flush reset is cleaner' ({n_fl} flush bars, against matched "
                "bars): " + ", ".join(parts)
            )
        lines.append("")
    return "\n".join(lines)
