"""Clusters and cascades of a map snapshot, with per-exchange shares (same kernels as per bar).

The per-bar columns (nearest cluster, cascade, armed, flush) are computed inside ``nb.run_nb``;
this module lists *all* clusters of the current state for snapshots, tables, alerts and
pictures, using the same ``find_clusters_nb`` and ``cascade_nb`` so both agree.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import numpy as np

from liqsignal import nb
from liqsignal.config import PARAM_NAMES

if TYPE_CHECKING:
    from liqsignal.engine import Cluster, LiquidationMap

__all__ = ["clusters_from_state"]


def clusters_from_state(
    lmap: LiquidationMap, ref: float, max_clusters: int = 50, scan_range_pct: float | None = None
) -> list[Cluster]:
    """Every cluster within the scan range on each side of ``ref``, nearest first per side."""
    from liqsignal.engine import Cluster

    cfg = lmap.config
    p = lmap.params.copy()
    if scan_range_pct is not None:
        p[PARAM_NAMES.index("scan_range")] = scan_range_pct / 100.0
    origin = float(lmap.g[nb.G_ORIGIN])
    n = lmap.n_bins
    vals = np.zeros(n + 2)
    bin_prices = lmap.price_of(np.arange(n))
    result: list[Cluster] = []
    for side, name, raw, scale_col in (
        (0, "long", lmap.long_raw, nb.X_SCALE_L),
        (1, "short", lmap.short_raw, nb.X_SCALE_S),
    ):
        scales = np.ascontiguousarray(lmap.ex[:, scale_col])
        cl = nb.side_clusters_nb(raw, scales, side, ref, p, origin, max_clusters, vals)
        per_ex = raw * scales[:, None]
        for c in range(cl.shape[0]):
            depth, cusd, _end = nb.cascade_nb(
                cl[None], 0, c, cl.shape[0], ref, cfg.cascade_gap_pct / 100.0, cfg.cascade_max_depth
            )
            lo = float(min(cl[c, nb.C_NEAR], cl[c, nb.C_FAR]))
            hi = float(max(cl[c, nb.C_NEAR], cl[c, nb.C_FAR]))
            mask = (bin_prices >= lo - 1e-9 * hi) & (bin_prices <= hi * (1 + 1e-12))
            by_ex = per_ex[:, mask].sum(axis=1)
            tot = float(by_ex.sum())
            shares = {
                lmap.exchanges[e]: (float(by_ex[e]) / tot if tot > 0 else 0.0)
                for e in range(lmap.n_exchanges)
            }
            usd = float(cl[c, nb.C_USD])
            price = float(cl[c, nb.C_PRICE])
            result.append(
                Cluster(
                    side=name,
                    price=price,
                    low=lo,
                    high=hi,
                    usd=usd,
                    distance_pct=abs(ref - price) / ref * 100.0,
                    depth=int(depth),
                    cascade_usd=float(cusd),
                    shares=shares,
                )
            )
    return result
