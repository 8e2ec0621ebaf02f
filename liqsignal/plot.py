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

__all__ = [
    "DEFAULT_BUCKETS",
    "fmt_usd",
    "leverage_bucket_levels",
    "map_mode",
    "plot_evaluation",
    "plot_map",
]

#: Leverage buckets of the snapshot panel: name -> (lowest, highest) leverage included.
DEFAULT_BUCKETS: dict[str, tuple[float, float]] = {
    "2-5x": (1.0, 5.0),
    "10-25x": (5.0 + 1e-9, 25.0),
    "50-125x": (25.0 + 1e-9, 1e9),
}


def _pyplot():  # type: ignore[no-untyped-def]
    from liqsignal._optional import require

    require("matplotlib", extra="plot", feature="liqsignal pictures").use("Agg")
    import matplotlib.pyplot as plt

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


def fmt_usd(v: float, _pos: Any = None) -> str:
    """12.3M, 450k, 80: the unit a trader reads on an axis."""
    a = abs(v)
    for div, unit in ((1e9, "B"), (1e6, "M"), (1e3, "k")):
        if a >= div:
            x = v / div
            return f"{x:.0f}{unit}" if abs(x) >= 10 or x == int(x) else f"{x:.1f}{unit}"
    return f"{v:.0f}"


def _fmt_price(v: float, _pos: Any = None) -> str:
    return f"{v:,.0f}" if abs(v) >= 100 else f"{v:,.4g}"


def map_mode(lmap: LiquidationMap) -> str:
    """'open interest', 'VOLUME-PROXY mode (no open interest)', or which exchange is which."""
    proxy = [bool(p) for p in np.asarray(lmap.proxy)]
    if not any(proxy):
        return "open interest"
    if all(proxy):
        return "VOLUME-PROXY mode (no open interest)"
    oi = [e for e, p in zip(lmap.exchanges, proxy, strict=True) if not p]
    vp = [e for e, p in zip(lmap.exchanges, proxy, strict=True) if p]
    return f"open interest: {', '.join(oi)}; VOLUME PROXY: {', '.join(vp)}"


def _quote(lmap: LiquidationMap) -> str:
    sym = str(getattr(lmap.config, "symbol", "") or "")
    return sym.split("/")[1].split(":")[0] if "/" in sym else "USD"


def _row_grid(hm: Any, lo: float, hi: float) -> tuple[np.ndarray, str, float]:
    """Edges of one price grid with the heatmap's own row size over [lo, hi], its label, and
    the row size (USD, or a ratio for log rows)."""
    rows = hm.long_usd.shape[1]
    if hm.log_rows:
        step = float(np.log(hm.price_high[-1] / hm.price_low[-1]) / rows)
        n = int(np.ceil(np.log(hi / lo) / step))
        return lo * np.exp(step * np.arange(n + 1)), f"{step * 1e4:.1f} bp row", step
    step = float((hm.price_high[-1] - hm.price_low[-1]) / rows)
    g0 = np.floor(lo / step) * step
    n = int(np.ceil((hi - g0) / step))
    return g0 + step * np.arange(n + 1), f"{step:,.0f}-USD row", step


def _heat_image(hm: Any, edges: np.ndarray, which: str = "both") -> np.ndarray:
    """[grid rows, frames]: each frame's USD per row (long + short, or ``which`` side) put on
    the common grid (rows of the same size: a row lands on the grid row holding its centre)."""
    rows = hm.long_usd.shape[1]
    img = np.zeros((edges.size - 1, len(hm.times)))
    for f in range(len(hm.times)):
        e = (
            np.geomspace(hm.price_low[f], hm.price_high[f], rows + 1)
            if hm.log_rows
            else np.linspace(hm.price_low[f], hm.price_high[f], rows + 1)
        )
        centres = 0.5 * (e[:-1] + e[1:])
        idx = np.searchsorted(edges, centres, side="right") - 1
        ok = (idx >= 0) & (idx < img.shape[0])
        usd = {"long": hm.long_usd[f], "short": hm.short_usd[f]}.get(which)
        if usd is None:
            usd = hm.long_usd[f] + hm.short_usd[f]
        np.add.at(img[:, f], idx[ok], usd[ok])
    return img


def _candles_for(
    candles: pd.DataFrame | None, hm: Any, max_candles: int = 320
) -> tuple[pd.DataFrame, str]:
    """OHLC to draw over the heatmap (from ``candles`` when given, else the frames' closes),
    merged to at most ``max_candles`` so each keeps a visible body."""
    if candles is not None and len(candles):
        df = candles[["date", "open", "high", "low", "close"]].copy()
        df["date"] = pd.to_datetime(df["date"], utc=True)
        df = df[df["date"] >= hm.times[0]] if len(hm.times) else df
    else:
        c = pd.Series(hm.closes, index=hm.times)
        df = pd.DataFrame(
            {"date": hm.times, "open": c.shift(1).fillna(c).to_numpy(), "close": c.to_numpy()}
        )
        df["high"] = df[["open", "close"]].max(axis=1)
        df["low"] = df[["open", "close"]].min(axis=1)
    if len(df) < 2:
        return df, "1 bar"
    bar = pd.Timedelta(df["date"].diff().median())
    k = max(1, int(np.ceil(len(df) / max_candles)))
    if k > 1:
        g = np.arange(len(df)) // k
        df = (
            df.groupby(g)
            .agg(
                date=("date", "first"),
                open=("open", "first"),
                high=("high", "max"),
                low=("low", "min"),
                close=("close", "last"),
            )
            .reset_index(drop=True)
        )
    span = bar * k
    hours = span / pd.Timedelta(hours=1)
    label = f"{hours:g}h" if hours < 48 else f"{hours / 24:g}d"
    return df, label


def plot_map(
    lmap: LiquidationMap,
    path: str | Path,
    *,
    title: str = "",
    window_pct: float = 12.0,
    buckets: Mapping[str, pd.DataFrame] | None = None,
    bucket_info: Mapping[str, float] | None = None,
    armed: Mapping[str, bool] | None = None,
    note: str = "",
    candles: pd.DataFrame | None = None,
    data_start: pd.Timestamp | None = None,
    dpi: int = 110,
) -> Path:
    """Write a PNG a trader reads like a liquidation heatmap.

    Left: the map through time (one column per heatmap frame, colour = USD of long + short
    levels per price row, log scale, k/M ticks), candles over it (from ``candles``, merged so
    each stays visible; else the frames' closes), the last price. Right, on the same price axis
    and the same row size: the levels standing now, long below price and short above, with the
    cumulative USD from price outward, clusters shaded and the nearest on each side labelled
    with USD and distance. The title says the mode (open interest or volume proxy) and the span
    of the data; when the map's frame cap cut the history, it says from when the data starts
    (``data_start``). ``buckets`` (from ``leverage_bucket_levels``) split the current levels by
    leverage only when ``bucket_info`` shows the split is exact (``residual_share`` < 1e-9);
    otherwise the split is not drawn and the picture says why.
    """
    plt = _pyplot()
    import matplotlib.dates as mdates
    from matplotlib.colors import LogNorm
    from matplotlib.patches import Patch
    from matplotlib.ticker import FuncFormatter

    hm = lmap.heatmap()
    snap = lmap.snapshot(scan_range_pct=window_pct)
    ref = snap.price
    quote = _quote(lmap)
    mode = map_mode(lmap)
    fig = plt.figure(figsize=(16, 8.6))
    gs = fig.add_gridspec(1, 4, width_ratios=[2.7, 0.06, 0.22, 1.05], wspace=0.04)
    ax = fig.add_subplot(gs[0, 0])
    cax = fig.add_subplot(gs[0, 1])
    ax2 = fig.add_subplot(gs[0, 3], sharey=ax)
    handles: list[Any] = []

    have_hm = len(hm.times) > 0
    cdl, cdl_label = _candles_for(candles, hm) if have_hm else (pd.DataFrame(), "")
    if have_hm:
        lows = cdl["low"].to_numpy() if len(cdl) else hm.closes
        highs = cdl["high"].to_numpy() if len(cdl) else hm.closes
        lo_p = float(np.nanmin(np.append(lows, ref))) * (1 - window_pct / 100)
        hi_p = float(np.nanmax(np.append(highs, ref))) * (1 + window_pct / 100)
    else:
        lo_p, hi_p = ref * (1 - window_pct / 100), ref * (1 + window_pct / 100)
    if have_hm:
        edges, row_label, _ = _row_grid(hm, lo_p, hi_p)
    else:
        step = float(lmap.config.step or ref * 1e-3) * float(lmap.config.heatmap_bins_per_row)
        edges = np.arange(lo_p, hi_p + step, step)
        row_label = f"{step:,.0f}-USD row"
    row_label = row_label.replace("USD row", f"{quote} row")
    centres = 0.5 * (edges[:-1] + edges[1:])

    # -- left: heatmap, candles, price
    if have_hm:
        img = _heat_image(hm, edges)
        t = mdates.date2num(hm.times.tz_convert(None).to_pydatetime())
        dt = float(np.median(np.diff(t))) if t.size > 1 else 1 / 24
        pos = img[img > 0]
        vmax = float(np.percentile(pos, 99.5)) if pos.size else 1.0
        vmin = max(vmax / 300.0, 1.0)
        cmap = plt.get_cmap("viridis").copy()
        cmap.set_bad("#0a0a16")
        im = ax.imshow(
            np.where(img > vmin, img, np.nan),
            aspect="auto",
            origin="lower",
            extent=(t[0], t[-1] + dt, edges[0], edges[-1]),
            cmap=cmap,
            norm=LogNorm(vmin=vmin, vmax=vmax),
            interpolation="nearest",
        )
        cb = fig.colorbar(im, cax=cax)
        cb.ax.yaxis.set_major_formatter(FuncFormatter(fmt_usd))
        cb.ax.yaxis.set_minor_formatter(FuncFormatter(lambda v, p: ""))
        cb.ax.set_title(f"{quote} per\n{row_label}", fontsize=8, loc="left")
        cb.ax.tick_params(labelsize=8)
        if candles is None:  # no OHLC given: the frames' closes as a line, not fake candles
            ax.plot(t + dt / 2, hm.closes, color="#e8f6ff", lw=1.0, zorder=3)
            handles.append(plt.Line2D([], [], color="#e8f6ff", label="close (heatmap frames)"))
        elif len(cdl):
            from matplotlib.collections import PolyCollection

            x = mdates.date2num(cdl["date"].dt.tz_convert(None).dt.to_pydatetime())
            w = float(np.median(np.diff(x))) * 0.7 if x.size > 1 else dt * 0.7
            o, h, lo_, c = (cdl[k].to_numpy(dtype=float) for k in ("open", "high", "low", "close"))
            up = c >= o
            bot, top = (
                np.minimum(o, c),
                np.maximum(np.maximum(o, c), np.minimum(o, c) + (hi_p - lo_p) * 1e-3),
            )
            for mask, colour in ((up, "#e8f6ff"), (~up, "#ff3b3b")):
                ax.vlines(x[mask] + w / 2, lo_[mask], h[mask], color=colour, lw=0.8, zorder=3)
                xs = x[mask]
                boxes = [
                    [(a, b), (a + w, b), (a + w, t_), (a, t_)]
                    for a, b, t_ in zip(xs, bot[mask], top[mask], strict=True)
                ]
                ax.add_collection(
                    PolyCollection(
                        boxes, facecolors=colour, edgecolors="black", linewidths=0.3, zorder=4
                    )
                )
            handles.append(
                Patch(
                    facecolor="#e8f6ff",
                    edgecolor="black",
                    label=f"price, {cdl_label} candles (white up, red down)",
                )
            )
        loc = mdates.AutoDateLocator(minticks=5, maxticks=9)
        ax.xaxis.set_major_locator(loc)
        ax.xaxis.set_major_formatter(mdates.ConciseDateFormatter(loc))
        ax.set_xlim(t[0], t[-1] + dt)
    else:
        cax.set_axis_off()
        ax.text(0.5, 0.5, "no heatmap frames yet", ha="center", transform=ax.transAxes)
    ax.axhline(ref, xmin=0.9, color="#33ccff", lw=1.2, ls="--", zorder=5)
    ax2.axhline(ref, color="#33ccff", lw=1.0, ls="--")
    handles.append(plt.Line2D([], [], color="#33ccff", ls="--", label=f"last price {ref:,.0f}"))
    ax.set_ylim(edges[0], edges[-1])
    ax.yaxis.set_major_formatter(FuncFormatter(_fmt_price))
    ax.set_ylabel(f"price ({quote}), {row_label}s")
    ax.set_xlabel("time (UTC)")
    ax.set_title("liquidation levels through time", fontsize=10)

    # -- right: the levels now, on the same rows
    below = centres < ref
    above = ~below
    full = lmap.levels(nonzero=False)
    exact = bool(buckets) and bucket_info is not None and bucket_info["residual_share"] < 1e-9
    parts = dict(buckets) if exact and buckets else {"": full}
    shades = np.linspace(0.5, 0.9, len(parts))
    # per side: where its levels show, its colours by part, what its levels mean
    sides = {
        "long": (below, plt.get_cmap("Reds")(shades), "longs liquidated if price falls"),
        "short": (above, plt.get_cmap("Greens")(shades), "shorts liquidated if price rises"),
    }
    left = {side: np.zeros(centres.size) for side in sides}
    for k, (name, lv) in enumerate(parts.items()):
        suffix = f" {name}" if name else ""
        for side, (shown, colours, meaning) in sides.items():
            b = np.where(shown, _rebin(lv, edges, f"{side}_usd"), 0.0)
            ax2.stairs(
                left[side] + b,
                edges,
                baseline=left[side],
                orientation="horizontal",
                fill=True,
                color=colours[k],
                label=f"{side} levels{suffix} ({meaning})",
            )
            left[side] += b
    right_handles, _ = ax2.get_legend_handles_labels()
    handles += right_handles
    total_now = float(full["long_usd"].sum() + full["short_usd"].sum()) if len(full) else 0.0
    xmax = float(max(left["long"].max(initial=0.0), left["short"].max(initial=0.0)))
    ax2.set_xlim(0, xmax * 1.55 if xmax > 0 else 1.0)
    near = {s: snap.clusters_on(s)[0] for s in ("long", "short") if snap.clusters_on(s)}
    for c in snap.clusters:
        is_near = near.get(c.side) is c
        is_armed = is_near and bool(armed and armed.get(c.side))
        ax2.axhspan(
            c.low,
            c.high,
            facecolor="gold",
            alpha=0.35 if is_near else 0.18,
            edgecolor="red" if is_armed else "none",
            lw=1.6,
        )
    handles.append(Patch(facecolor="gold", alpha=0.35, label="clusters (dense pockets)"))
    if any(armed.values() if armed else []):
        handles.append(Patch(facecolor="gold", edgecolor="red", lw=1.6, label="armed cluster"))
    for side, c in near.items():
        ax2.annotate(
            f"nearest {side}: {c.low:,.0f}-{c.high:,.0f}\n{fmt_usd(c.usd)} {quote}, "
            f"{'+' if side == 'short' else '-'}{abs(c.distance_pct):.1f} %"
            + (" ARMED" if armed and armed.get(side) else ""),
            xy=(xmax * 1.02 if xmax > 0 else 0.5, (c.low + c.high) / 2),
            xytext=(0, 14 if side == "short" else -14),
            textcoords="offset points",
            va="bottom" if side == "short" else "top",
            ha="left",
            fontsize=8.5,
            color="darkgreen" if side == "short" else "darkred",
            bbox={"boxstyle": "round,pad=0.25", "fc": "white", "ec": "0.7", "alpha": 0.9},
        )
        ax.annotate(
            "",
            xy=(1.0, (c.low + c.high) / 2),
            xycoords=("axes fraction", "data"),
            xytext=(1.0 - 0.02, (c.low + c.high) / 2),
            arrowprops={"arrowstyle": "-|>", "color": "gold", "lw": 1.5},
        )
    ax2.text(
        1.0,
        ref,
        f" {ref:,.0f}",
        transform=ax2.get_yaxis_transform(),
        va="center",
        ha="left",
        fontsize=8.5,
        color="#0099bb",
        clip_on=False,
    )
    if total_now > 0:
        ax3 = ax2.twiny()
        cum_l = np.cumsum(_rebin(full, edges, "long_usd")[below][::-1])[::-1]
        cum_s = np.cumsum(_rebin(full, edges, "short_usd")[above])
        ax3.plot(cum_l, centres[below], color="darkred", lw=1.1, ls=":")
        ax3.plot(cum_s, centres[above], color="darkgreen", lw=1.1, ls=":")
        ax3.xaxis.set_major_formatter(FuncFormatter(fmt_usd))
        ax3.set_xlabel(f"cumulative {quote} from price outward (dotted)", fontsize=8.5)
        ax3.tick_params(labelsize=7.5)
        ax3.set_xlim(0, max(cum_l.max(initial=0), cum_s.max(initial=0)) * 1.55 or 1.0)
        handles.append(plt.Line2D([], [], color="0.3", ls=":", label="cumulative from price"))
    else:
        ax2.text(
            0.5,
            0.5,
            "no standing levels at the last bar",
            ha="center",
            va="center",
            transform=ax2.transAxes,
            fontsize=10,
            color="0.3",
        )
    ax2.xaxis.set_major_formatter(FuncFormatter(fmt_usd))
    ax2.set_xlabel(f"{quote} per {row_label} (long below price, short above)", fontsize=9)
    ax2.tick_params(labelleft=False, labelsize=8)
    when = f" {snap.time:%Y-%m-%d %H:%M} UTC" if snap.time is not None else ""
    ax2.set_title(
        f"levels now{when}" + (", by leverage" if exact else ""),
        fontsize=10,
        pad=30 if total_now > 0 else 6,
    )
    if buckets and not exact:
        off = f" ({bucket_info['residual_share'] * 100:.1f} % off)" if bucket_info else ""
        note = (note + "; " if note else "") + (
            "levels not split by leverage: the engine keeps one array per side, and the "
            f"split recomputed per leverage group is not exact{off}"
        )

    # -- title, span, legend outside the data
    start = hm.times[0] if have_hm else None
    end = snap.time
    span = (
        f"{start:%Y-%m-%d %H:%M} -> {end:%Y-%m-%d %H:%M} UTC" if start is not None and end else ""
    )
    cut = ""
    total_frames = int(lmap.g[nb_frames_index()]) if have_hm else 0
    if have_hm and total_frames > len(hm.times):
        since = f" (data from {pd.Timestamp(data_start):%Y-%m-%d %H:%M})" if data_start else ""
        cut = f"; history shows the last {len(hm.times)} frames the map keeps{since}"
    fig.suptitle(
        f"{title or 'liquidation map'}  |  {mode}\n{span}{cut}",
        fontsize=12,
        color="darkred" if "PROXY" in mode else "black",
    )
    fig.legend(
        handles=handles,
        loc="lower center",
        ncol=4,
        fontsize=8.5,
        frameon=False,
        bbox_to_anchor=(0.5, 0.0),
    )
    if note:
        fig.text(0.01, 0.055, note, fontsize=8, color="dimgrey", va="bottom")
    fig.subplots_adjust(left=0.06, right=0.9, top=0.86, bottom=0.17)
    out = Path(path)
    out.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(out, dpi=dpi)
    plt.close(fig)
    return out


def nb_frames_index() -> int:
    """Index of the total heatmap frame count in the engine's global state."""
    from liqsignal import nb

    return int(nb.G_FRAMES)


def _g(obj: Any, name: str, default: Any = None) -> Any:
    """A field of a result object or of its dict form (``to_dict()`` / JSON)."""
    if isinstance(obj, Mapping):
        return obj.get(name, default)
    return getattr(obj, name, default)


def _caption(ax: Any, text: str) -> None:
    import textwrap

    ax.text(
        0.0,
        -0.2,
        "\n".join(textwrap.wrap(text, 95)),
        transform=ax.transAxes,
        fontsize=7.8,
        color="0.25",
        va="top",
        ha="left",
    )


def plot_evaluation(
    report: Mapping[str, Any], path: str | Path, *, span: str | None = None
) -> Path:
    """Write a PNG of the evaluation: each figure beside its baseline, a caption under each
    panel saying what it shows and what "no effect" looks like, and the data span in the title.

    ``report`` holds ``bars`` (per-side results with ``side``, ``model_spearman``,
    ``baseline_spearman``, ``partial_given_baseline``), and optionally ``touches``, ``armed``,
    ``events`` and ``span``; each entry may be the result object or its dict form.
    """
    plt = _pyplot()
    fig, axes = plt.subplots(2, 2, figsize=(14, 10.5))
    span = span or report.get("span")
    fig.suptitle(
        "Does the map know more than price and open interest?" + (f"\n{span}" if span else ""),
        fontsize=12,
    )
    a = axes[0, 0]
    bars = list(report.get("bars") or [])
    x = np.arange(len(bars))
    series = (
        ("model_spearman", "map", "tab:blue", -0.27),
        ("baseline_spearman", "move + OI baseline", "grey", 0.0),
        ("partial_given_baseline", "map given baseline (partial)", "tab:orange", 0.27),
    )
    for key, label, colour, dx in series:
        vals = [float(_g(b, key, np.nan)) for b in bars]
        a.bar(x + dx, vals, 0.27, label=label, color=colour)
        for k, v in enumerate(vals):
            if np.isfinite(v):
                a.text(k + dx, v + 0.01, f"{v:.2f}", ha="center", fontsize=8)
    a.set_xticks(x)
    a.set_xticklabels([f"{_g(b, 'side')} liquidations" for b in bars])
    a.set_ylim(0, 1.15)
    a.set_ylabel("Spearman rank correlation per bar")
    a.set_title("predicted vs realized liquidations, bar by bar", fontsize=10)
    a.legend(fontsize=8, loc="upper center", ncol=3, frameon=False)
    _caption(
        a,
        "Rank correlation between the map's predicted and the realized liquidations of "
        "each bar, beside a baseline that knows only the bar's move and the previous open "
        "interest. No effect: the blue bar no higher than the grey one and the orange "
        "partial correlation near 0.",
    )

    a = axes[0, 1]
    events = list(report.get("events") or [])
    if events:
        for k, e in enumerate(events):
            r = np.asarray(_g(e, "random_shares", []) or [], dtype=float)
            if r.size:
                parts = a.violinplot([r], positions=[k], showextrema=False, widths=0.7)
                for body in parts["bodies"]:
                    body.set_facecolor("lightgrey")
                    body.set_alpha(0.9)
            a.plot([k - 0.3, k + 0.3], [_g(e, "model_share")] * 2, color="tab:blue", lw=2.5)
            a.plot(
                [k - 0.3, k + 0.3], [_g(e, "random_share_mean")] * 2, color="grey", lw=1.5, ls=":"
            )
        a.set_xticks(range(len(events)))
        a.set_xticklabels(
            [f"{_g(e, 'market')}\n{_g(e, 'events')} events" for e in events], fontsize=8
        )
        a.plot([], [], color="tab:blue", lw=2.5, label="inside the map's dense bands")
        a.plot([], [], color="grey", lw=1.5, ls=":", label="inside random bands (mean)")
        a.fill_between([], [], color="lightgrey", label="random bands (spread)")
        a.legend(fontsize=8, loc="upper right")
    else:
        a.text(0.5, 0.5, "no event list", ha="center", transform=a.transAxes)
    a.set_ylabel("share of liquidated USD")
    a.set_title("realized liquidation events inside predicted dense bands", fontsize=10)
    _caption(
        a,
        "Share of the USD of real liquidation events (Hyperliquid) that fell inside the "
        "bands the map called dense just before, against bands of the same width placed "
        "at random. No effect: the blue line inside the grey spread, near the dotted mean.",
    )

    a = axes[1, 0]
    touches = list(report.get("touches") or [])
    for tch, color in zip(touches, ("tab:red", "tab:green"), strict=False):
        side = _g(tch, "side")
        a.plot(
            _g(tch, "curve_distance_pct", []),
            _g(tch, "curve_random_share", []),
            color=color,
            lw=1,
            label=f"{side}: any level at that distance",
        )
        d = np.asarray(_g(tch, "distances_pct", []) or [], dtype=float)
        hit = np.asarray(_g(tch, "touched", []) or [], dtype=float)
        if d.size:
            qs = np.unique(np.quantile(d, np.linspace(0, 1, 6)))
            idx = np.clip(np.searchsorted(qs, d, side="right") - 1, 0, max(qs.size - 2, 0))
            xs = [float(d[idx == i].mean()) for i in range(qs.size - 1) if (idx == i).any()]
            ys = [float(hit[idx == i].mean()) for i in range(qs.size - 1) if (idx == i).any()]
            a.plot(xs, ys, "o", color=color, label=f"{side}: top-{_g(tch, 'top_k')} clusters")
    h = _g(touches[0], "horizon_bars") if touches else None
    a.set_title(f"clusters reached within {h} bars" if h else "clusters reached", fontsize=10)
    a.set_xlabel("distance of the cluster's near edge from price (%)")
    a.set_ylabel("share reached")
    if touches:
        a.legend(fontsize=8)
    _caption(
        a,
        "How often price reached the map's clusters (dots, by distance) against any "
        "price level at the same distance (line). No effect: the dots on the line; a map "
        "that finds magnets puts them above it.",
    )

    a = axes[1, 1]
    armed = [r for r in (report.get("armed") or []) if (_g(r, "flags", 0) or 0) > 0]
    if armed:
        labels = []
        for k, r in enumerate(armed):
            for j, (val, rnd, nm) in enumerate(
                (
                    (_g(r, "precision"), _g(r, "random_precisions", []), "precision"),
                    (_g(r, "recall"), _g(r, "random_recalls", []), "recall"),
                )
            ):
                pos = 2 * k + j
                rr = np.asarray(rnd or [], dtype=float)
                rr = rr[np.isfinite(rr)]
                if rr.size:
                    parts = a.violinplot([rr], positions=[pos], showextrema=False, widths=0.7)
                    for body in parts["bodies"]:
                        body.set_facecolor("lightgrey")
                        body.set_alpha(0.9)
                a.plot([pos - 0.3, pos + 0.3], [val] * 2, color="tab:blue", lw=2.5)
                labels.append(f"{_g(r, 'side')}\n{nm}")
        a.set_xticks(range(len(labels)))
        a.set_xticklabels(labels, fontsize=8)
        a.plot([], [], color="tab:blue", lw=2.5, label="armed flags")
        a.plot([], [], color="lightgrey", lw=6, label="random flags, same rate")
        a.legend(fontsize=8)
        a.set_title(
            f"armed flags vs cascades within {_g(armed[0], 'horizon_bars')} bars", fontsize=10
        )
    else:
        a.text(0.5, 0.5, "no armed flags on this data", ha="center", transform=a.transAxes)
        a.set_title("armed flags vs cascades", fontsize=10)
    a.set_ylabel("precision / recall")
    _caption(
        a,
        "Of the bars flagged armed, the share followed by a liquidation cascade "
        "(precision), and of the cascades, the share flagged before (recall), against "
        "random flags at the same rate. No effect: the blue lines inside the grey spread.",
    )
    fig.subplots_adjust(left=0.06, right=0.98, top=0.9, bottom=0.12, hspace=0.62, wspace=0.2)
    out = Path(path)
    out.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(out, dpi=100)
    plt.close(fig)
    return out


def render_pocket_png(
    snapshot: Any,
    feat: pd.DataFrame | None,
    *,
    market: str,
    pocket: Any = None,
    label: str | None = None,
    bars: int = 72,
    window_pct: float = 6.0,
) -> bytes:
    """A phone-sized PNG: recent price over the current map (levels as a heat strip, long
    levels below, short above), the level profile on the right, the armed pocket marked.
    ``snapshot``: a ``MapSnapshot`` (``price``, ``levels``); ``feat``: features with ``close``
    (the provider's carry it); ``pocket``: anything with ``low``, ``high``, ``price`` (an
    alert's ``Pocket``), marked with ``label``."""
    import io

    plt = _pyplot()

    price = float(snapshot.price)
    lo_p, hi_p = price * (1 - window_pct / 100), price * (1 + window_pct / 100)
    closes = None
    if feat is not None and "close" in feat.columns and len(feat):
        tail = feat.tail(bars)
        closes = pd.to_numeric(tail["close"], errors="coerce").to_numpy(dtype=float)
        if np.isfinite(closes).any():
            lo_p = min(lo_p, float(np.nanmin(closes)) * 0.995)
            hi_p = max(hi_p, float(np.nanmax(closes)) * 1.005)
    if pocket is not None:
        lo_p, hi_p = min(lo_p, pocket.low * 0.995), max(hi_p, pocket.high * 1.005)
    fig, (ax, ax2) = plt.subplots(
        1, 2, figsize=(7.2, 4.8), gridspec_kw={"width_ratios": [3, 1]}, sharey=True
    )
    lv = snapshot.levels
    lv = lv[(lv.index >= lo_p) & (lv.index <= hi_p)] if len(lv) else lv
    if len(lv):
        total = (lv["long_usd"].to_numpy(float) + lv["short_usd"].to_numpy(float))[:, None]
        edges = lv.index.to_numpy(float)
        n = len(closes) if closes is not None else 1
        vmax = float(np.percentile(total[total > 0], 99)) if (total > 0).any() else 1.0
        ax.imshow(
            np.repeat(total, 2, axis=1),
            aspect="auto",
            origin="lower",
            extent=(0, max(n - 1, 1), float(edges[0]), float(edges[-1])),
            cmap="inferno",
            vmin=0,
            vmax=vmax,
            interpolation="nearest",
        )
        step = float(np.median(np.diff(edges))) if len(edges) > 1 else price * 1e-3
        below, above = lv[lv.index <= price], lv[lv.index >= price]
        ax2.barh(below.index, below["long_usd"] / 1e6, height=step, color="tab:red", label="long")
        ax2.barh(
            above.index, above["short_usd"] / 1e6, height=step, color="tab:green", label="short"
        )
        ax2.legend(loc="lower right", fontsize=7)
    if closes is not None:
        ax.plot(np.arange(len(closes)), closes, color="cyan", lw=1.2, label="close")
    ax.axhline(price, color="cyan", lw=0.6, ls=":")
    ax2.axhline(price, color="cyan", lw=0.8)
    if pocket is not None:
        for a in (ax, ax2):
            a.axhspan(pocket.low, pocket.high, color="yellow", alpha=0.45, lw=0)
        ax.annotate(
            label or "armed pocket",
            xy=(0.02, (pocket.price - lo_p) / (hi_p - lo_p)),
            xycoords="axes fraction",
            color="yellow",
            fontsize=9,
            fontweight="bold",
            va="center",
        )
    ax.set_ylim(lo_p, hi_p)
    ax.set_xticks([])
    ax.set_xlabel(f"last {bars} bars · map as of now")
    ax.set_title(f"{market} liquidation map", fontsize=10)
    ax2.set_xlabel("M USD per bin", fontsize=8)
    fig.tight_layout()
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=90)
    plt.close(fig)
    return buf.getvalue()
