"""Heatmap pictures of a liquidation map (matplotlib, headless): history and a snapshot panel."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

if TYPE_CHECKING:
    from liqsignal.engine import LiquidationMap

__all__ = ["plot_map"]


def _pyplot():  # type: ignore[no-untyped-def]
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError as e:  # pragma: no cover - matplotlib is a dependency
        raise ImportError("liqsignal pictures need matplotlib: pip install matplotlib") from e
    return plt


def plot_map(lmap: LiquidationMap, path: str | Path, *, title: str = "", window_pct: float = 12.0):
    """Write a PNG: the map through time (left) and the current levels by side (right).

    Left: each heatmap frame is a column (time on x, price on y, colour = USD of long + short
    levels), with the reference close drawn over it. Right: current long levels below price and
    short levels above, with their cumulative USD from price outward.
    """
    plt = _pyplot()
    hm = lmap.heatmap()
    snap = lmap.snapshot(scan_range_pct=window_pct)
    ref = snap.price
    lo_p, hi_p = ref * (1 - window_pct / 100), ref * (1 + window_pct / 100)
    if len(hm.times):
        # cover the price path of the history, with a margin
        lo_p = min(lo_p, float(np.nanmin(hm.closes)) * (1 - window_pct / 200))
        hi_p = max(hi_p, float(np.nanmax(hm.closes)) * (1 + window_pct / 200))
    fig, (ax, ax2) = plt.subplots(
        1, 2, figsize=(14, 7), gridspec_kw={"width_ratios": [3, 1]}, sharey=True
    )
    if len(hm.times):
        rows = hm.long_usd.shape[1]
        grid = np.linspace(lo_p, hi_p, 600)
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
        x0, x1 = t[0], t[-1] if len(t) > 1 else t[0] + np.timedelta64(1, "h")
        vmax = np.percentile(img[img > 0], 99) if (img > 0).any() else 1.0
        ax.imshow(
            img,
            aspect="auto",
            origin="lower",
            extent=(
                float(np.datetime64(x0, "s").astype(np.int64)),
                float(np.datetime64(x1, "s").astype(np.int64)),
                lo_p,
                hi_p,
            ),
            cmap="inferno",
            vmin=0,
            vmax=vmax,
            interpolation="nearest",
        )
        ts = t.astype("datetime64[s]").astype(np.int64).astype(float)
        ax.plot(ts, hm.closes, color="cyan", lw=1.0, label="close")
        ticks = np.linspace(ts[0], ts[-1], 6)
        ax.set_xticks(ticks)
        ax.set_xticklabels(
            [str(np.datetime64(int(v), "s"))[:13].replace("T", " ") for v in ticks],
            rotation=20,
            fontsize=8,
        )
        ax.legend(loc="upper left")
    ax.set_ylim(lo_p, hi_p)
    ax.set_ylabel("price")
    ax.set_title(title or "liquidation map through time (long + short levels, USD)")
    lv = snap.levels
    if len(lv):
        below = lv[(lv.index <= ref) & (lv.index >= lo_p)]
        above = lv[(lv.index >= ref) & (lv.index <= hi_p)]
        step = float(np.median(np.diff(lv.index.to_numpy()))) if len(lv) > 1 else ref * 1e-3
        ax2.barh(
            below.index, below["long_usd"] / 1e6, height=step, color="tab:red", label="long levels"
        )
        ax2.barh(
            above.index,
            above["short_usd"] / 1e6,
            height=step,
            color="tab:green",
            label="short levels",
        )
        cum_l = below["long_usd"][::-1].cumsum()[::-1] / 1e6
        cum_s = above["short_usd"].cumsum() / 1e6
        ax3 = ax2.twiny()
        ax3.plot(cum_l.to_numpy(), below.index, color="darkred", lw=1)
        ax3.plot(cum_s.to_numpy(), above.index, color="darkgreen", lw=1)
        ax3.set_xlabel("cumulative from price (M USD)", fontsize=8)
        for c in snap.clusters:
            if lo_p <= c.price <= hi_p:
                ax2.axhspan(c.low, c.high, color="gold", alpha=0.3)
    ax2.axhline(ref, color="cyan", lw=1)
    ax2.set_xlabel("M USD per bin")
    ax2.legend(loc="lower right", fontsize=8)
    fig.tight_layout()
    out = Path(path)
    out.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(out, dpi=100)
    plt.close(fig)
    return out
