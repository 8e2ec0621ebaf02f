"""The provider as the alert service reads it: its protocol, and its features, snapshot and
feed status turned into the detector's inputs (:class:`~liqsignal.alerts.events.BarView`,
:class:`~liqsignal.alerts.events.FeedState`)."""

from __future__ import annotations

import math
from collections.abc import Mapping
from datetime import UTC, datetime
from typing import Any, Protocol

import pandas as pd

from liqsignal.alerts.events import BarView, FeedState, Pocket

__all__ = ["Provider", "bar_view", "feeds_of", "market_context"]

SIDES = ("long", "short")


class Provider(Protocol):
    """What the service needs from ``liqsignal.data.provider.MapProvider``."""

    async def refresh(self) -> Any: ...

    def snapshot(self, market: str, scan_range_pct: float | None = None) -> Any: ...

    def features(self, market: str) -> pd.DataFrame: ...

    def status(self, market: str) -> Mapping[str, Any]: ...

    def price(self, market: str) -> float: ...


def _num(row: Mapping[str, Any] | pd.Series, name: str) -> float | None:
    if name not in row:
        return None
    try:
        v = float(row[name])
    except (TypeError, ValueError):
        return None
    return v if math.isfinite(v) else None


def _as_utc(t: Any) -> datetime | None:
    if t is None:
        return None
    try:
        ts = pd.Timestamp(t)
    except (TypeError, ValueError):
        return None
    if ts is pd.NaT:
        return None
    if ts.tzinfo is None:
        ts = ts.tz_localize("UTC")
    return ts.to_pydatetime().astimezone(UTC)


def market_context(feat: pd.DataFrame) -> dict[str, float | None]:
    """OI (USD), its change over the last 24 bars (percent) and the funding rate, when the
    features frame carries them."""
    out: dict[str, float | None] = {"oi_usd": None, "oi_change_pct": None, "funding_rate": None}
    if feat.empty:
        return out
    oi: pd.Series | None = None
    if "open_interest_value" in feat.columns:
        oi = pd.to_numeric(feat["open_interest_value"], errors="coerce")
    elif "open_interest_amount" in feat.columns and "close" in feat.columns:
        oi = pd.to_numeric(feat["open_interest_amount"], errors="coerce") * feat["close"]
    if oi is not None:
        oi = oi.dropna()
        if len(oi):
            out["oi_usd"] = float(oi.iloc[-1])
            if len(oi) > 1:
                base = float(oi.iloc[max(0, len(oi) - 25)])
                if base > 0:
                    out["oi_change_pct"] = (float(oi.iloc[-1]) / base - 1.0) * 100.0
    if "funding_rate" in feat.columns:
        fr = pd.to_numeric(feat["funding_rate"], errors="coerce").dropna()
        if len(fr):
            out["funding_rate"] = float(fr.iloc[-1])
    return out


def _match_cluster(snapshot: Any, side: str, low: float, high: float, centre: float) -> Any:
    """The snapshot's cluster on ``side`` overlapping [low, high] (nearest to ``centre``)."""
    best, best_d = None, math.inf
    for c in snapshot.clusters_on(side) if snapshot is not None else []:
        if c.high >= low and c.low <= high:
            d = abs(c.price - centre)
            if d < best_d:
                best, best_d = c, d
    return best


def bar_view(market: str, snapshot: Any, feat: pd.DataFrame, price: float) -> BarView | None:
    """The detector's view of a market's last closed bar, from the provider's features (model
    flags, pockets, predicted liquidations) and snapshot (per-exchange shares)."""
    if feat is None or feat.empty:
        return None
    row = feat.iloc[-1]
    when = _as_utc(feat.index[-1]) or _as_utc(getattr(snapshot, "time", None))
    if when is None:
        return None
    armed: dict[str, Pocket | None] = {}
    for side in SIDES:
        flag = _num(row, f"liq_{side}_armed")
        lo, hi = _num(row, f"liq_{side}_cluster_low"), _num(row, f"liq_{side}_cluster_high")
        centre = _num(row, f"liq_{side}_cluster_price")
        if not flag or lo is None or hi is None or centre is None:
            armed[side] = None
            continue
        usd = _num(row, f"liq_{side}_cluster_usd") or 0.0
        dist = _num(row, f"liq_{side}_cluster_dist_pct")
        depth = int(_num(row, f"liq_{side}_cascade_depth") or 1)
        cascade = _num(row, f"liq_{side}_cascade_usd") or usd
        c = _match_cluster(snapshot, side, lo, hi, centre)
        shares = dict(c.shares) if c is not None else {}
        signed = (centre - price) / price * 100.0
        if dist is not None and math.copysign(1.0, dist) == math.copysign(1.0, signed):
            signed = dist
        prob = _num(row, f"liq_{side}_cascade_prob")  # the forecast, when it ran
        info = feat.attrs.get("liq_forecast") or {}
        side_info = info.get(side) or {}
        armed[side] = Pocket(
            side,
            lo,
            hi,
            centre,
            usd,
            signed,
            max(1, depth),
            cascade,
            shares,
            _num(row, f"liq_{side}_armed_score"),
            probability=prob,
            horizon_bars=info.get("horizon_bars") if prob is not None else None,
            threshold=side_info.get("threshold") if prob is not None else None,
            precision=side_info.get("precision") if prob is not None else None,
        )
    low = _num(row, "low") or price
    high = _num(row, "high") or price
    return BarView(
        market,
        when,
        _num(row, "close") or price,
        min(low, price),
        max(high, price),
        armed=armed,
        consumed_usd={s: _num(row, f"liq_pred_{s}_usd") or 0.0 for s in SIDES},
        flush=int(_num(row, "liq_flush") or 0),
        context=market_context(feat),
    )


def feeds_of(status: Mapping[str, Any]) -> list[FeedState]:
    """Provider ``ExchangeStatus`` objects (or mappings) as :class:`FeedState`."""
    out = []
    for exchange, s in status.items():

        def get(name: str, s: Any = s) -> Any:
            return s.get(name) if isinstance(s, Mapping) else getattr(s, name, None)

        out.append(
            FeedState(
                str(get("exchange") or exchange),
                bool(get("stale")),
                _as_utc(get("since")),
                _as_utc(get("last_bar")),
                get("error"),
            )
        )
    return out
