"""Pictures of a liquidation map and of its evaluation (matplotlib, headless, PNG).

``plot_map``: the map through time (heatmap, price line over it) and a snapshot panel of the
current long levels below price and short levels above, stacked by leverage bucket, with
cumulative curves from price outward. ``leverage_bucket_levels`` computes the buckets;
``plot_evaluation`` draws the evaluation figures each against its random baseline.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import pandas as pd

if TYPE_CHECKING:
    from liqsignal.config import MapConfig
    from liqsignal.engine import LiquidationMap

__all__ = ["DEFAULT_BUCKETS", "leverage_bucket_levels", "plot_evaluation", "plot_map"]

#: Leverage buckets of the snapshot panel: name -> (lowest, highest) leverage included.
DEFAULT_BUCKETS: dict[str, tuple[float, float]] = {
    "2-5x": (1.0, 5.0),
    "10-25x": (5.0 + 1e-9, 25.0),
    "50-125x": (25.0 + 1e-9, 1e9),
}


def _pyplot():  # type: ignore[no-untyped-def]
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError as e:  # pragma: no cover - matplotlib is a dependency
        raise ImportError("liqsignal pictures need matplotlib: pip install matplotlib") from e
    return plt


def leverage_bucket_levels(
    frames: Mapping[str, pd.DataFrame],
    config: MapConfig,
    *,
    proxy: Sequence[str] = (),
    buckets: Mapping[str, tuple[float, float]] = DEFAULT_BUCKETS,
) -> tuple[dict[str, pd.DataFrame], dict[str, float]]:
    """Levels per leverage bucket, by recomputing the map once per bucket.

    The engine keeps one array per side, not one per leverage, so each bucket's map is rebuilt
    from the same bars with ``MapConfig(leverages=<bucket's tiers>, leverage_weights=<their
    weights>)`` and its levels scaled by the bucket's share of the full weights. This is exact
    for the linear steps (opening, consumption, decay) and approximate where the full map
    couples leverages: pro-rata closes and turnover are shared out by standing notional, which
    differs between buckets (high leverage is consumed sooner). The second result tells how
    far the buckets' sum is from the full map (``residual_share``: |sum - full| / full).
    """
    from liqsignal.engine import LiquidationMap
    from liqsignal.features import compute_features_multi

    full_map = LiquidationMap(config, exchanges=list(frames))
    weights = full_map.weights[0]
    lev = np.asarray(config.leverages)
    out: dict[str, pd.DataFrame] = {}
    for name, (lo, hi) in buckets.items():
        sel = (lev >= lo) & (lev <= hi) & (weights > 0)
        if not sel.any():
            continue
        share = float(weights[sel].sum())
        cfg = config.replace(
            leverages=tuple(float(v) for v in lev[sel]),
            leverage_weights=tuple(float(v) for v in weights[sel]),
        )
        res = compute_features_multi(frames, cfg, proxy=proxy, return_map=True)
        assert isinstance(res, tuple)
        lv = res[1].levels(nonzero=False)[["long_usd", "short_usd"]] * share
        out[name] = lv
    full = compute_features_multi(frames, config, proxy=proxy, return_map=True)
    assert isinstance(full, tuple)
    fl = full[1].levels(nonzero=False)
    total_full = float(fl["long_usd"].sum() + fl["short_usd"].sum())
    total_b = float(sum(float(v["long_usd"].sum() + v["short_usd"].sum()) for v in out.values()))
    info = {
        "full_usd": total_full,
        "buckets_usd": total_b,
        "residual_share": abs(total_b - total_full) / total_full if total_full > 0 else 0.0,
    }
    return out, info


def _rebin(levels: pd.DataFrame, edges: np.ndarray, col: str) -> np.ndarray:
    idx = np.searchsorted(edges, levels.index.to_numpy(), side="right") - 1
    ok = (idx >= 0) & (idx < edges.size - 1)
    return np.bincount(idx[ok], weights=levels[col].to_numpy()[ok], minlength=edges.size - 1)


def _fmt_time_axis(ax: Any, ts: np.ndarray) -> None:
    ticks = np.linspace(ts[0], ts[-1], 6)
    ax.set_xticks(ticks)
    ax.set_xticklabels(
        [str(np.datetime64(int(v), "s"))[:13].replace("T", " ") for v in ticks],
        rotation=20,
        fontsize=8,
    )


def plot_map(
    lmap: LiquidationMap,
    path: str | Path,
    *,
    title: str = "",
    window_pct: float = 12.0,
    buckets: Mapping[str, pd.DataFrame] | None = None,
    armed: Mapping[str, bool] | None = None,
    note: str = "",
) -> Path:
    """Write a PNG: the map through time (left) and the current levels by side (right).

    Left: each heatmap frame is a column (time on x, price on y, colour = USD of long + short
    levels on a log scale), with the reference close drawn over it. Right: long levels below
    price and short levels above in rows of 0.25 % of price, stacked by leverage bucket when
    ``buckets`` is given (from ``leverage_bucket_levels``), clusters shaded (red edge when the
    side is armed), and the cumulative USD from price outward.
    """
    plt = _pyplot()
    from matplotlib.colors import LogNorm

    hm = lmap.heatmap()
    snap = lmap.snapshot(scan_range_pct=window_pct)
    ref = snap.price
    fig, (ax, ax2) = plt.subplots(1, 2, figsize=(15, 7.5), gridspec_kw={"width_ratios": [2.6, 1]})
    if len(hm.times):
        lo_p = float(np.nanmin(hm.closes)) * (1 - window_pct / 100)
        hi_p = float(np.nanmax(hm.closes)) * (1 + window_pct / 100)
        rows = hm.long_usd.shape[1]
        grid = np.linspace(lo_p, hi_p, 500)
        img = np.zeros((grid.size, len(hm.times)))
        for f in range(len(hm.times)):
            edges = (
                np.geomspace(hm.price_low[f], hm.price_high[f], rows + 1)
                if hm.log_rows
                else np.linspace(hm.price_low[f], hm.price_high[f], rows + 1)
            )
            centres = 0.5 * (edges[:-1] + edges[1:])
            total = hm.long_usd[f] + hm.short_usd[f]
            img[:, f] = np.interp(grid, centres, total, left=0.0, right=0.0)
        t = hm.times.tz_convert(None).to_numpy()
        ts = t.astype("datetime64[s]").astype(np.int64).astype(float)
        x1 = ts[-1] if len(ts) > 1 else ts[0] + 3600.0
        pos = img[img > 0]
        vmax = float(np.percentile(pos, 99.5)) if pos.size else 1.0
        vmin = max(vmax / 300.0, 1.0)
        shown = np.where(img > vmin, img, np.nan)
        cmap = plt.get_cmap("magma").copy()
        cmap.set_bad("#0b0b1a")
        im = ax.imshow(
            shown,
            aspect="auto",
            origin="lower",
            extent=(ts[0], x1, lo_p, hi_p),
            cmap=cmap,
            norm=LogNorm(vmin=vmin, vmax=vmax),
            interpolation="nearest",
        )
        ax.plot(ts, hm.closes, color="#33e0ff", lw=1.2, label="close")
        _fmt_time_axis(ax, ts)
        ax.set_ylim(lo_p, hi_p)
        cb = fig.colorbar(im, ax=ax, pad=0.01, fraction=0.03)
        cb.set_label("USD per row (long + short levels)", fontsize=8)
        ax.legend(loc="upper left", fontsize=8)
    ax.set_ylabel("price")
    ax.set_title(title or "liquidation map through time", fontsize=11)

    s_lo, s_hi = ref * (1 - window_pct / 100), ref * (1 + window_pct / 100)
    edges = np.arange(s_lo, s_hi + ref * 0.0025, ref * 0.0025)
    centres = 0.5 * (edges[:-1] + edges[1:])
    height = float(edges[1] - edges[0]) * 0.95
    below = centres < ref
    above = ~below
    parts = dict(buckets) if buckets else {"all leverages": lmap.levels(nonzero=False)}
    reds = plt.get_cmap("Reds")(np.linspace(0.45, 0.9, len(parts)))
    greens = plt.get_cmap("Greens")(np.linspace(0.45, 0.9, len(parts)))
    left_l = np.zeros(centres.size)
    left_s = np.zeros(centres.size)
    for k, (name, lv) in enumerate(parts.items()):
        long_b = _rebin(lv, edges, "long_usd") / 1e6
        short_b = _rebin(lv, edges, "short_usd") / 1e6
        ax2.barh(
            centres[below],
            long_b[below],
            left=left_l[below],
            height=height,
            color=reds[k],
            label=f"long {name}",
        )
        ax2.barh(
            centres[above],
            short_b[above],
            left=left_s[above],
            height=height,
            color=greens[k],
            label=f"short {name}",
        )
        left_l += long_b
        left_s += short_b
    for c in snap.clusters:
        is_armed = bool(armed and armed.get(c.side)) and c is snap.clusters_on(c.side)[0]
        ax2.axhspan(
            c.low,
            c.high,
            facecolor="gold",
            alpha=0.25,
            edgecolor="red" if is_armed else "none",
            lw=1.5,
        )
    full = lmap.levels(nonzero=False)
    cum_l = np.cumsum(_rebin(full, edges, "long_usd")[below][::-1])[::-1] / 1e6
    cum_s = np.cumsum(_rebin(full, edges, "short_usd")[above]) / 1e6
    ax3 = ax2.twiny()
    ax3.plot(cum_l, centres[below], color="darkred", lw=1.2, ls="--", label="cumulative long")
    ax3.plot(cum_s, centres[above], color="darkgreen", lw=1.2, ls="--", label="cumulative short")
    ax3.set_xlabel("cumulative from price outward (M USD, dashed)", fontsize=8)
    ax3.tick_params(labelsize=7)
    ax2.axhline(ref, color="#0099bb", lw=1.2)
    ax2.text(
        0.98,
        ref,
        f" {ref:,.0f}",
        transform=ax2.get_yaxis_transform(),
        va="bottom",
        ha="right",
        fontsize=8,
        color="#0099bb",
    )
    ax2.set_ylim(s_lo, s_hi)
    ax2.set_xlabel("M USD per 0.25 % row (long below, short above)", fontsize=8)
    ax2.tick_params(labelsize=7)
    ax2.legend(loc="lower right", fontsize=7, ncol=1, framealpha=0.85)
    when = f" at {snap.time:%Y-%m-%d %H:%M} UTC" if snap.time is not None else ""
    ax2.set_title(f"levels now{when}, by leverage", fontsize=10, pad=28)
    if note:
        fig.text(0.01, 0.005, note, fontsize=8, color="dimgrey", va="bottom")
    fig.tight_layout(rect=(0, 0.025 if note else 0, 1, 1))
    out = Path(path)
    out.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(out, dpi=100)
    plt.close(fig)
    return out


def plot_evaluation(report: Mapping[str, Any], path: str | Path) -> Path:
    """Write a PNG of the evaluation: each figure beside its baseline.

    ``report`` holds ``bars`` (list of ``BarEvaluation``), and optionally ``touches`` (list of
    ``TouchEvaluation``), ``armed`` (list of ``ArmedEvaluation``), ``events`` (list of
    ``EventBandEvaluation``).
    """
    plt = _pyplot()
    fig, axes = plt.subplots(2, 2, figsize=(13, 9))
    a = axes[0, 0]
    bars = report.get("bars") or []
    x = np.arange(len(bars))
    a.bar(x - 0.27, [b.model_spearman for b in bars], 0.27, label="map", color="tab:blue")
    a.bar(x, [b.baseline_spearman for b in bars], 0.27, label="move+OI baseline", color="grey")
    a.bar(
        x + 0.27,
        [b.partial_given_baseline for b in bars],
        0.27,
        label="partial | baseline",
        color="tab:orange",
    )
    for k, b in enumerate(bars):
        for dx, v in (
            (-0.27, b.model_spearman),
            (0.0, b.baseline_spearman),
            (0.27, b.partial_given_baseline),
        ):
            a.text(k + dx, v + 0.01, f"{v:.2f}", ha="center", fontsize=8)
    a.set_xticks(x)
    a.set_xticklabels([b.side for b in bars])
    a.set_ylim(0, 1)
    a.set_title("per-bar Spearman with realized liquidations", fontsize=10)
    a.legend(fontsize=8)

    a = axes[0, 1]
    events = report.get("events") or []
    if events:
        for k, e in enumerate(events):
            r = np.asarray(e.random_shares)
            if r.size:
                parts = a.violinplot([r], positions=[k], showextrema=False, widths=0.7)
                for body in parts["bodies"]:
                    body.set_facecolor("lightgrey")
                    body.set_alpha(0.9)
            a.plot([k - 0.3, k + 0.3], [e.model_share] * 2, color="tab:blue", lw=2.5)
            a.plot([k - 0.3, k + 0.3], [e.random_share_mean] * 2, color="grey", lw=1.5, ls=":")
        a.set_xticks(range(len(events)))
        a.set_xticklabels([f"{e.market}\n{e.events} ev" for e in events], fontsize=8)
        a.plot([], [], color="tab:blue", lw=2.5, label="predicted bands")
        a.plot([], [], color="grey", lw=1.5, ls=":", label="random bands (mean; grey: spread)")
        a.legend(fontsize=8)
    else:
        a.text(0.5, 0.5, "no event list", ha="center", transform=a.transAxes)
    a.set_ylabel("share of event USD inside bands")
    a.set_title("realized events inside predicted dense bands", fontsize=10)

    a = axes[1, 0]
    for tch, color in zip(report.get("touches") or [], ("tab:red", "tab:green"), strict=False):
        a.plot(
            tch.curve_distance_pct,
            tch.curve_random_share,
            color=color,
            lw=1,
            label=f"{tch.side}: any level at that distance",
        )
        d = np.asarray(tch.distances_pct)
        h = np.asarray(tch.touched, dtype=float)
        if d.size:
            qs = np.unique(np.quantile(d, np.linspace(0, 1, 6)))
            idx = np.clip(np.searchsorted(qs, d, side="right") - 1, 0, max(qs.size - 2, 0))
            xs = [float(d[idx == i].mean()) for i in range(qs.size - 1) if (idx == i).any()]
            ys = [float(h[idx == i].mean()) for i in range(qs.size - 1) if (idx == i).any()]
            a.plot(xs, ys, "o", color=color, label=f"{tch.side}: top-{tch.top_k} clusters")
        a.set_title(f"clusters reached within {tch.horizon_bars} bars", fontsize=10)
    a.set_xlabel("distance of the cluster's near edge from price (%)")
    a.set_ylabel("share reached")
    a.legend(fontsize=8)

    a = axes[1, 1]
    armed = [r for r in (report.get("armed") or []) if r.flags > 0]
    if armed:
        labels = []
        for k, r in enumerate(armed):
            for j, (val, rnd, nm) in enumerate(
                (
                    (r.precision, r.random_precisions, "precision"),
                    (r.recall, r.random_recalls, "recall"),
                )
            ):
                pos = 2 * k + j
                rr = np.asarray(rnd)
                rr = rr[np.isfinite(rr)]
                if rr.size:
                    parts = a.violinplot([rr], positions=[pos], showextrema=False, widths=0.7)
                    for body in parts["bodies"]:
                        body.set_facecolor("lightgrey")
                        body.set_alpha(0.9)
                a.plot([pos - 0.3, pos + 0.3], [val] * 2, color="tab:blue", lw=2.5)
                labels.append(f"{r.side}\n{nm}")
        a.set_xticks(range(len(labels)))
        a.set_xticklabels(labels, fontsize=8)
        a.plot([], [], color="tab:blue", lw=2.5, label="armed flags")
        a.plot([], [], color="lightgrey", lw=6, label="random flags, same rate")
        a.legend(fontsize=8)
        h = armed[0].horizon_bars
        a.set_title(f"armed flags vs cascades within {h} bars", fontsize=10)
    else:
        a.text(0.5, 0.5, "no armed flags", ha="center", transform=a.transAxes)
    fig.tight_layout()
    out = Path(path)
    out.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(out, dpi=100)
    plt.close(fig)
    return out
