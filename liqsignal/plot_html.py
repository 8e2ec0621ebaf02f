"""The liquidation map as an interactive page (plotly; one self-contained HTML file).

``write_map_html``: the heatmap through time with candles over it (zoom, pan; hover gives time,
price row, long and short USD of the row), and beside it on the same price axis the levels
standing now (hover: price row, long / short USD, distance from price), the last price and the
clusters. The page embeds plotly.js, so it opens offline.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import pandas as pd

from liqsignal.plot import _candles_for, _heat_image, _quote, _rebin, _row_grid, fmt_usd, map_mode

if TYPE_CHECKING:
    from collections.abc import Mapping

    from liqsignal.engine import LiquidationMap

__all__ = ["write_map_html"]


def _plotly() -> Any:
    from liqsignal._optional import require

    require("plotly", extra="plot", feature="the interactive map")
    import plotly.graph_objects as go
    from plotly.subplots import make_subplots

    return go, make_subplots


def write_map_html(
    lmap: LiquidationMap,
    path: str | Path,
    *,
    title: str = "",
    window_pct: float = 12.0,
    candles: pd.DataFrame | None = None,
    armed: Mapping[str, bool] | None = None,
    max_columns: int = 400,
) -> Path:
    """Write the interactive page; returns its path. ``max_columns`` caps the heatmap's time
    columns (every k-th frame) so the page stays a few MB."""
    go, make_subplots = _plotly()
    hm = lmap.heatmap()
    snap = lmap.snapshot(scan_range_pct=window_pct)
    ref = snap.price
    quote = _quote(lmap)
    if not len(hm.times):
        raise ValueError("the map has no heatmap frames yet")
    cdl, cdl_label = _candles_for(candles, hm, max_candles=600)
    lo = float(np.nanmin(np.append(cdl["low"].to_numpy(), ref))) * (1 - window_pct / 100)
    hi = float(np.nanmax(np.append(cdl["high"].to_numpy(), ref))) * (1 + window_pct / 100)
    edges, row_label, _ = _row_grid(hm, lo, hi)
    row_label = row_label.replace("USD row", f"{quote} row")
    centres = 0.5 * (edges[:-1] + edges[1:])
    k = max(1, int(np.ceil(len(hm.times) / max_columns)))
    cols = np.arange(0, len(hm.times), k)
    img_l = _heat_image(hm, edges, "long")[:, cols]
    img_s = _heat_image(hm, edges, "short")[:, cols]
    total = img_l + img_s
    times = hm.times[cols].tz_convert(None)
    z = np.where(total > 0, np.log10(np.maximum(total, 1.0)), np.nan)
    pos = z[np.isfinite(z)]
    zmax = float(np.percentile(pos, 99.5)) if pos.size else 1.0
    custom = np.dstack([img_l, img_s]).round(0).astype(np.float32)
    z = np.where(np.isfinite(z), z, zmax - 2.6).astype(np.float32)  # empty rows: darkest

    fig = make_subplots(
        rows=1,
        cols=2,
        shared_yaxes=True,
        column_widths=[0.74, 0.26],
        horizontal_spacing=0.02,
        subplot_titles=(
            "liquidation levels through time",
            f"levels now {snap.time:%Y-%m-%d %H:%M} UTC" if snap.time is not None else "now",
        ),
    )
    ticks = [v for v in range(0, 13) if zmax - 2.5 <= v <= zmax + 0.5]
    fig.add_trace(
        go.Heatmap(
            x=times,
            y=centres,
            z=z,
            customdata=custom,
            colorscale="Viridis",
            zmin=zmax - 2.5,
            zmax=zmax,
            colorbar={
                "title": {"text": f"{quote} per<br>{row_label}"},
                "tickvals": ticks,
                "ticktext": [fmt_usd(10.0**v) for v in ticks],
                "len": 0.9,
            },
            hovertemplate=(
                "%{x|%Y-%m-%d %H:%M} UTC<br>price %{y:,.0f} " + quote + " (" + row_label + ")"
                "<br>long %{customdata[0]:,.0f} "
                + quote
                + "<br>short %{customdata[1]:,.0f} "
                + quote
                + "<extra>levels</extra>"
            ),
            name="levels",
        ),
        row=1,
        col=1,
    )
    fig.add_trace(
        go.Candlestick(
            x=cdl["date"].dt.tz_convert(None),
            open=cdl["open"],
            high=cdl["high"],
            low=cdl["low"],
            close=cdl["close"],
            name=f"price ({cdl_label} candles)",
            increasing={"line": {"color": "#e8f6ff"}, "fillcolor": "#e8f6ff"},
            decreasing={"line": {"color": "#ff3b3b"}, "fillcolor": "#ff3b3b"},
        ),
        row=1,
        col=1,
    )
    full = lmap.levels(nonzero=False)
    long_b = np.where(centres < ref, _rebin(full, edges, "long_usd"), 0.0)
    short_b = np.where(centres >= ref, _rebin(full, edges, "short_usd"), 0.0)
    dist = (centres / ref - 1) * 100
    for values, side, colour in ((long_b, "long", "#e0533d"), (short_b, "short", "#3fae5a")):
        mask = values > 0
        fig.add_trace(
            go.Bar(
                x=values[mask],
                y=centres[mask],
                orientation="h",
                marker={"color": colour},
                name=f"{side} levels now",
                customdata=dist[mask],
                hovertemplate=(
                    f"{side} levels<br>price %{{y:,.0f}} {quote}<br>%{{x:,.0f}} {quote}"
                    "<br>%{customdata:+.2f} % from price<extra></extra>"
                ),
            ),
            row=1,
            col=2,
        )
    for c in snap.clusters:
        near = snap.clusters_on(c.side)[0] is c
        is_armed = near and bool(armed and armed.get(c.side))
        fig.add_hrect(
            y0=c.low,
            y1=c.high,
            fillcolor="gold",
            opacity=0.35 if near else 0.15,
            line_width=2 if is_armed else 0,
            line_color="red",
            row=1,
            col=2,
        )
        if near:
            fig.add_annotation(
                x=1,
                xref="x2 domain",
                y=(c.low + c.high) / 2,
                yref="y",
                xanchor="right",
                text=(
                    f"nearest {c.side}: {c.low:,.0f}-{c.high:,.0f}<br>{fmt_usd(c.usd)} {quote}, "
                    f"{c.distance_pct:+.1f} %" + (" ARMED" if is_armed else "")
                ),
                showarrow=False,
                bgcolor="white",
                font={"size": 11},
            )
    for col in (1, 2):
        fig.add_hline(y=ref, line_dash="dash", line_color="#33ccff", row=1, col=col)
    fig.add_annotation(
        x=1,
        xref="x2 domain",
        y=ref,
        yref="y",
        xanchor="left",
        text=f" {ref:,.0f}",
        showarrow=False,
        font={"color": "#0099bb"},
    )
    span = f"{hm.times[0]:%Y-%m-%d %H:%M} -> {hm.times[-1]:%Y-%m-%d %H:%M} UTC"
    fig.update_layout(
        title={"text": f"{title or 'liquidation map'} | {map_mode(lmap)}<br><sub>{span}</sub>"},
        template="plotly_white",
        height=820,
        bargap=0.05,
        hovermode="closest",
        xaxis={"rangeslider": {"visible": False}, "title": "time (UTC)"},
        xaxis2={"title": f"{quote} per {row_label} (long below price, short above)"},
        yaxis={"title": f"price ({quote}), {row_label}s", "tickformat": ",.0f", "range": [lo, hi]},
        legend={"orientation": "h", "y": -0.12},
    )
    fig.update_xaxes(showgrid=False, row=1, col=1)
    out = Path(path)
    out.parent.mkdir(parents=True, exist_ok=True)
    fig.write_html(out, include_plotlyjs=True, full_html=True, div_id="liqmap")
    return out
