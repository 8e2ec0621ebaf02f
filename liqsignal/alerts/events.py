"""Decide which alert events a new bar raises: armed, escalated, consumed, stale, recovered.

Pure: no network, no clock, no engine import. The caller hands in one :class:`BarView` per
market and bar (plain numbers read from the map) and the feed health per exchange; the
:class:`EventDetector` keeps the little state needed so that a pocket hovering at the threshold
does not spam::

    armed      the model arms a pocket (``liq_*_armed``) within the rules' distance and size,
               and no event for the same market, side and price band (or a neighbouring band)
               happened within ``cooldown_s``
    escalated  a pocket already alerted in that band grew: USD x ``escalate_usd_ratio`` or
               cascade depth + ``escalate_depth_step`` against the last alert of the band
    consumed   price traded through an alerted pocket, or the bar is a flush (``liq_flush``)
               of at least ``consumed_min_usd``: how much, how far price went; same cooldown
    stale      an exchange's data stopped updating: once per outage, not once per refresh
    recovered  it flows again: once

Time is the data's time (the bar's date), so a replay behaves like live. Cooldowns survive a
restart through :meth:`EventDetector.restore`, fed with the keys of alerts already in the
outbox (:func:`parse_event_key`).
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

from liqsignal.exceptions import ConfigError

__all__ = [
    "BarView",
    "Event",
    "EventDetector",
    "EventRules",
    "FeedState",
    "Pocket",
    "parse_event_key",
]

SIDES = ("long", "short")


@dataclass(frozen=True)
class EventRules:
    """When events fire. Percentages are in percent of price.

    ``cooldown_s``: quiet time per market, side and price band after an event.
    ``band_pct``: width of a price band (log-spaced); a pocket within one band of an alerted one
    counts as the same pocket. ``escalate_usd_ratio`` / ``escalate_depth_step``: growth that
    makes an escalation. ``min_usd``: smallest pocket worth an alert. ``max_distance_pct``: only
    pockets this close (None: whatever the model armed). ``consumed_min_usd``: smallest flush
    reported without an alerted pocket. ``track_s``: how long an alerted pocket is watched for
    consumption.
    """

    cooldown_s: float = 4 * 3600.0
    band_pct: float = 0.5
    escalate_usd_ratio: float = 1.5
    escalate_depth_step: int = 2
    min_usd: float = 0.0
    max_distance_pct: float | None = None
    consumed_min_usd: float = 0.0
    track_s: float = 24 * 3600.0

    def __post_init__(self) -> None:
        for name, hi in (("cooldown_s", 3.2e7), ("track_s", 3.2e7), ("min_usd", 1e15)):
            v = getattr(self, name)
            if not (_number(v) and 0 <= v <= hi):
                raise ConfigError(f"alerts.{name} must be a number in [0, {hi:g}], got {v!r}")
        if not (_number(self.consumed_min_usd) and 0 <= self.consumed_min_usd <= 1e15):
            raise ConfigError(
                f"alerts.consumed_min_usd must be a number in [0, 1e+15], got "
                f"{self.consumed_min_usd!r}"
            )
        if not (_number(self.band_pct) and 0 < self.band_pct <= 100):
            raise ConfigError(f"alerts.band_pct must be in (0, 100], got {self.band_pct!r}")
        if not (_number(self.escalate_usd_ratio) and 1 < self.escalate_usd_ratio <= 1e6):
            raise ConfigError(
                f"alerts.escalate_usd_ratio must be in (1, 1e6], got {self.escalate_usd_ratio!r}"
            )
        step = self.escalate_depth_step
        if isinstance(step, bool) or not isinstance(step, int) or not 1 <= step <= 1000:
            raise ConfigError(
                f"alerts.escalate_depth_step must be an integer in [1, 1000], got {step!r}"
            )
        if self.max_distance_pct is not None and not (
            _number(self.max_distance_pct) and 0 < self.max_distance_pct <= 100
        ):
            raise ConfigError(
                f"alerts.max_distance_pct must be in (0, 100] or null, got "
                f"{self.max_distance_pct!r}"
            )


def _number(v: Any) -> bool:
    return isinstance(v, int | float) and not isinstance(v, bool) and math.isfinite(v)


@dataclass(frozen=True)
class Pocket:
    """One liquidation pocket as the message shows it (``side`` is the side liquidated)."""

    side: str
    low: float
    high: float
    price: float
    usd: float
    distance_pct: float
    depth: int = 1
    cascade_usd: float = 0.0
    shares: Mapping[str, float] = field(default_factory=dict)
    score: float | None = None
    #: The forecast's probability of a cascade on ``side`` within ``horizon_bars`` (when the
    #: features carry ``liq_*_cascade_prob``), its armed threshold and measured precision.
    probability: float | None = None
    horizon_bars: int | None = None
    threshold: float | None = None
    precision: float | None = None


@dataclass(frozen=True)
class BarView:
    """What the detector needs from one market at one closed bar.

    ``armed[side]``: the pocket the model arms on that side, or None. ``consumed_usd[side]``:
    notional predicted liquidated in the bar. ``flush``: +1 long flush, -1 short flush, 0 none.
    """

    market: str
    time: datetime
    price: float
    low: float
    high: float
    armed: Mapping[str, Pocket | None] = field(default_factory=dict)
    consumed_usd: Mapping[str, float] = field(default_factory=dict)
    flush: int = 0
    context: Mapping[str, float | None] = field(default_factory=dict)


@dataclass(frozen=True)
class FeedState:
    """Health of one exchange's feed for a market (from the provider's status)."""

    exchange: str
    stale: bool
    since: datetime | None = None
    last_bar: datetime | None = None
    error: str | None = None


@dataclass(frozen=True)
class Event:
    """One thing worth a message. ``key`` is the outbox dedupe key."""

    kind: str
    market: str
    time: datetime
    side: str | None = None
    band: int | None = None
    pocket: Pocket | None = None
    price: float | None = None
    consumed_usd: float | None = None
    price_before: float | None = None
    price_extreme: float | None = None
    armed_at: datetime | None = None
    exchange: str | None = None
    feed: FeedState | None = None
    stale_since: datetime | None = None
    context: Mapping[str, float | None] = field(default_factory=dict)

    @property
    def key(self) -> str:
        where = self.exchange if self.kind in ("stale", "recovered") else self.side
        tag = "" if self.band is None else f"b{self.band}"
        return "|".join((self.kind, self.market, str(where or ""), tag, _iso(self.time)))


def _iso(t: datetime) -> str:
    return t.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def parse_event_key(key: str) -> tuple[str, str, str, int | None, datetime] | None:
    """``(kind, market, side or exchange, band, time)`` of a key made by :class:`Event`, or
    None for other keys."""
    parts = key.split("|")
    if len(parts) < 5:
        return None
    kind, where, tag, when = parts[0], parts[-3], parts[-2], parts[-1]
    market = "|".join(parts[1:-3])
    try:
        t = datetime.strptime(when, "%Y-%m-%dT%H:%M:%SZ").replace(tzinfo=UTC)
        band = int(tag[1:]) if tag.startswith("b") else None
    except ValueError:
        return None
    return kind, market, where, band, t


@dataclass
class _Mark:
    at: datetime
    usd: float
    depth: int


@dataclass
class _Tracked:
    pocket: Pocket
    band: int
    price_at_arm: float
    armed_at: datetime


class EventDetector:
    """Turns bars and feed states into events, with cooldowns per market, side and band."""

    def __init__(self, rules: EventRules | None = None) -> None:
        self.rules = rules or EventRules()
        self._step = math.log1p(self.rules.band_pct / 100.0)
        self._marks: dict[tuple[str, str, int], _Mark] = {}
        self._consumed: dict[tuple[str, str, int], datetime] = {}
        self._tracked: dict[tuple[str, str], _Tracked] = {}
        self._last_time: dict[str, datetime] = {}
        self._last_price: dict[str, float] = {}
        self._stale: dict[tuple[str, str], datetime] = {}

    def band_of(self, price: float) -> int:
        """Index of the log-spaced price band holding ``price``."""
        return int(math.floor(math.log(price) / self._step))

    # -- restart -------------------------------------------------------------------------

    def tracked_state(self, market: str, side: str) -> dict[str, Any] | None:
        """The pocket ``side`` of ``market`` tracks since its "armed" event, as plain data for
        :meth:`restore` (None: nothing tracked)."""
        t = self._tracked.get((market, side))
        if t is None:
            return None
        pocket = {f: getattr(t.pocket, f) for f in Pocket.__dataclass_fields__}
        pocket["shares"] = dict(t.pocket.shares)
        return {
            "market": market,
            "side": side,
            "band": t.band,
            "price_at_arm": t.price_at_arm,
            "armed_at": _iso(t.armed_at),
            "pocket": pocket,
        }

    def _restore_tracked(self, states: Iterable[Mapping[str, Any]], consumed: list) -> None:
        for st in states:
            try:
                market, side = str(st["market"]), str(st["side"])
                armed_at = datetime.strptime(str(st["armed_at"]), "%Y-%m-%dT%H:%M:%SZ").replace(
                    tzinfo=UTC
                )
                pocket = Pocket(**dict(st["pocket"]))
                tracked = _Tracked(pocket, int(st["band"]), float(st["price_at_arm"]), armed_at)
            except (KeyError, TypeError, ValueError):
                continue
            if side not in SIDES:
                continue
            # a "consumed" stored after the arming already ended the tracking
            if any(m == market and s == side and t >= armed_at for m, s, t in consumed):
                continue
            self._tracked[(market, side)] = tracked

    def restore(
        self,
        keys: Iterable[str],
        usd: Mapping[str, float] | None = None,
        tracked: Iterable[Mapping[str, Any]] = (),
    ) -> int:
        """Re-arm cooldowns and stale states from alert keys already in the outbox (any
        state: a pending alert will still be sent), and the pockets each side was tracking
        (``tracked``: :meth:`tracked_state` records), so a restart between "armed" and
        "consumed" neither loses nor repeats an alert. Returns how many keys were understood."""
        n = 0
        stale_events: list[tuple[datetime, str, str, str]] = []
        consumed: list[tuple[str, str, datetime]] = []
        for key in keys:
            parsed = parse_event_key(key)
            if parsed is None:
                continue
            kind, market, where, band, t = parsed
            n += 1
            if kind in ("armed", "escalated") and band is not None:
                mk = (market, where, band)
                old = self._marks.get(mk)
                if old is None or old.at <= t:
                    self._marks[mk] = _Mark(t, (usd or {}).get(key, 0.0), 0)
            elif kind == "consumed" and band is not None:
                self._consumed[(market, where, band)] = t
                consumed.append((market, where, t))
            elif kind in ("stale", "recovered"):
                stale_events.append((t, kind, market, where))
        for t, kind, market, exchange in sorted(stale_events):
            if kind == "stale":
                self._stale[(market, exchange)] = t
            else:
                self._stale.pop((market, exchange), None)
        self._restore_tracked(tracked, consumed)
        return n

    # -- bars ----------------------------------------------------------------------------

    def _recent(self, market: str, side: str, band: int, now: datetime) -> _Mark | None:
        best: _Mark | None = None
        for b in (band - 1, band, band + 1):
            m = self._marks.get((market, side, b))
            recent = m is not None and now - m.at < timedelta(seconds=self.rules.cooldown_s)
            if recent and m is not None and (best is None or m.at > best.at):
                best = m
        return best

    def _qualifies(self, p: Pocket) -> bool:
        r = self.rules
        if not (math.isfinite(p.usd) and p.usd >= r.min_usd and p.usd > 0):
            return False
        return r.max_distance_pct is None or abs(p.distance_pct) <= r.max_distance_pct

    def observe(self, bar: BarView) -> list[Event]:
        """Events raised by ``bar``. A bar not newer than the last one seen for its market
        raises nothing (refreshes without a new bar are free)."""
        last = self._last_time.get(bar.market)
        if last is not None and bar.time <= last:
            return []
        prev_price = self._last_price.get(bar.market, bar.price)
        self._last_time[bar.market] = bar.time
        self._last_price[bar.market] = bar.price
        events: list[Event] = []
        for side in SIDES:
            ev = self._consumption(bar, side, prev_price)
            if ev is not None:
                events.append(ev)
        for side in SIDES:
            pocket = bar.armed.get(side)
            if pocket is None or not self._qualifies(pocket):
                continue
            ev = self._arming(bar, side, pocket)
            if ev is not None:
                events.append(ev)
        return events

    def observe_liquidation(
        self,
        market: str,
        time: datetime,
        price: float,
        side: str,
        consumed_usd: float,
        *,
        rearm: Mapping[str, Pocket | None] | None = None,
        context: Mapping[str, float | None] | None = None,
    ) -> list[Event]:
        """Events raised by one realized liquidation on ``side`` at ``price`` (between bars).

        "consumed": the price traded through the pocket ``side`` tracks since its "armed"
        alert (``consumed_usd``: what the map lost there, from ``MapProvider.on_liquidation``),
        with the same band cooldown as a bar's, so the bar that closes later does not report it
        again. Then the arming is re-evaluated: ``rearm[side]`` is the pocket nearest price on
        that side in the map after the event, given when the last bar armed that side and the
        event consumed levels (otherwise the map, and so its nearest pocket, is unchanged); a
        qualifying one the detector has not alerted (another band, or grown past the
        escalation step) is "armed"/"escalated" now. Never changes which bar the detector saw
        last, so the next bar is observed as usual."""
        if side not in SIDES or not (math.isfinite(price) and price > 0):
            return []
        usd = float(consumed_usd) if math.isfinite(consumed_usd) and consumed_usd > 0 else 0.0
        trade = BarView(
            market,
            time,
            price,
            price,
            price,
            consumed_usd={side: usd},
            context=dict(context or {}),
        )
        prev = self._last_price.get(market, price)
        events: list[Event] = []
        ev = self._consumption(trade, side, prev)
        if ev is not None:
            events.append(ev)
        for s, pocket in (rearm or {}).items():
            if s in SIDES and pocket is not None and self._qualifies(pocket):
                armed = self._arming(trade, s, pocket)
                if armed is not None:
                    events.append(armed)
        return events

    def _arming(self, bar: BarView, side: str, pocket: Pocket) -> Event | None:
        band = self.band_of(pocket.price)
        mark = self._recent(bar.market, side, band, bar.time)
        kind = "armed"
        if mark is not None:
            grew = mark.usd > 0 and pocket.usd >= mark.usd * self.rules.escalate_usd_ratio
            deeper = mark.depth > 0 and pocket.depth >= mark.depth + self.rules.escalate_depth_step
            if not (grew or deeper):
                return None
            kind = "escalated"
        self._marks[(bar.market, side, band)] = _Mark(bar.time, pocket.usd, max(1, pocket.depth))
        tracked = self._tracked.get((bar.market, side))
        self._tracked[(bar.market, side)] = _Tracked(
            pocket,
            band,
            tracked.price_at_arm if (tracked and kind == "escalated") else bar.price,
            tracked.armed_at if (tracked and kind == "escalated") else bar.time,
        )
        return Event(
            kind,
            bar.market,
            bar.time,
            side=side,
            band=band,
            pocket=pocket,
            price=bar.price,
            context=bar.context,
        )

    def _consumption(self, bar: BarView, side: str, prev_price: float) -> Event | None:
        tracked = self._tracked.get((bar.market, side))
        if tracked is not None and bar.time - tracked.armed_at > timedelta(
            seconds=self.rules.track_s
        ):
            self._tracked.pop((bar.market, side), None)
            tracked = None
        extreme = bar.low if side == "long" else bar.high
        usd = float(bar.consumed_usd.get(side, 0.0) or 0.0)
        hit = tracked is not None and (
            extreme <= tracked.pocket.high if side == "long" else extreme >= tracked.pocket.low
        )
        flushed = bar.flush == (1 if side == "long" else -1) and usd >= self.rules.consumed_min_usd
        if not (hit or flushed) or usd <= 0:
            return None
        band = tracked.band if (hit and tracked) else self.band_of(extreme)
        key = (bar.market, side, band)
        last = self._consumed.get(key)
        if last is not None and bar.time - last < timedelta(seconds=self.rules.cooldown_s):
            return None
        self._consumed[key] = bar.time
        if hit:
            self._tracked.pop((bar.market, side), None)
        return Event(
            "consumed",
            bar.market,
            bar.time,
            side=side,
            band=band,
            pocket=tracked.pocket if (hit and tracked) else None,
            price=bar.price,
            consumed_usd=usd,
            price_before=tracked.price_at_arm if (hit and tracked) else prev_price,
            price_extreme=extreme,
            armed_at=tracked.armed_at if (hit and tracked) else None,
            context=bar.context,
        )

    # -- feeds ---------------------------------------------------------------------------

    def observe_feeds(self, market: str, feeds: Iterable[FeedState], now: datetime) -> list[Event]:
        """One ``stale`` event when an exchange's feed goes stale, one ``recovered`` when it
        comes back; nothing while the state holds."""
        events: list[Event] = []
        for f in feeds:
            key = (market, f.exchange)
            was = self._stale.get(key)
            if f.stale and was is None:
                since = f.since or now
                self._stale[key] = since
                events.append(Event("stale", market, since, exchange=f.exchange, feed=f))
            elif not f.stale and was is not None:
                del self._stale[key]
                events.append(
                    Event("recovered", market, now, exchange=f.exchange, feed=f, stale_since=was)
                )
        return events

    def stale_exchanges(self, market: str) -> list[str]:
        """Exchanges of ``market`` currently known stale."""
        return sorted(e for (m, e) in self._stale if m == market)
