"""Build alert messages: the ``Alert`` record and pure formatters for phone-readable Telegram HTML.

Nothing here talks to the network or imports the engine: callers pass plain numbers and get text.
Text is Telegram HTML (parse mode ``HTML``): every value coming from outside is escaped with
:func:`escape`, only ``<b>``/``<i>`` tags are added here.

Number style (for a phone screen): ``31.2M USD``, ``96,200–96,350``, ``−1.3%`` (true minus sign),
``+0.0100%`` for funding.
"""

from __future__ import annotations

import html
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import TYPE_CHECKING

from liqsignal.exceptions import InputError

if TYPE_CHECKING:
    from liqsignal.alerts.events import Event

__all__ = [
    "ALERT_KINDS",
    "Alert",
    "alert_key",
    "escape",
    "fmt_pct",
    "fmt_price",
    "fmt_price_range",
    "fmt_usd",
    "format_cluster_alert",
    "format_consumed_alert",
    "format_recovered_notice",
    "format_stale_notice",
]

ALERT_KINDS: frozenset[str] = frozenset(
    {"armed", "escalated", "consumed", "stale", "recovered", "info"}
)
SIDES: frozenset[str] = frozenset({"long", "short"})

MINUS = "\u2212"  # true minus sign, reads better than a hyphen on a phone
EN_DASH = "\u2013"

_KIND_ICON = {
    "armed": "\U0001f3af",  # direct hit
    "escalated": "\u23eb",  # double up arrow
    "consumed": "\U0001f4a5",  # collision
    "stale": "\u23f8\ufe0f",  # pause
    "recovered": "\u25b6\ufe0f",  # play
    "info": "\u2139\ufe0f",  # information
}


@dataclass(frozen=True)
class Alert:
    """One message to deliver, as stored in the outbox.

    ``key`` is the dedupe key: the outbox never enqueues the same key twice, so build it from what
    makes the event unique (see :func:`alert_key`). ``text`` is Telegram HTML. ``photo`` is PNG
    bytes sent with the text as caption (or before it, when the text is too long for a caption).
    """

    key: str
    kind: str
    market: str
    text: str
    side: str | None = None
    photo: bytes | None = None
    created_at: datetime = field(default_factory=lambda: datetime.now(UTC))
    #: The pocket's USD of an "armed"/"escalated" alert (kept in the outbox, so a restart
    #: knows what the last alert of a band said and an escalation can still fire).
    usd: float | None = None

    def __post_init__(self) -> None:
        if not isinstance(self.key, str) or not self.key.strip():
            raise InputError(f"Alert.key must be a non-empty string, got {self.key!r}")
        if self.kind not in ALERT_KINDS:
            raise InputError(
                f"Alert.kind must be one of {sorted(ALERT_KINDS)}, got {self.kind!r} "
                f"(key {self.key!r})"
            )
        if self.side is not None and self.side not in SIDES:
            raise InputError(
                f"Alert.side must be 'long', 'short' or None, got {self.side!r} (key {self.key!r})"
            )
        if not self.text.strip():
            raise InputError(f"Alert.text is empty (key {self.key!r})")
        if self.photo is not None and not isinstance(self.photo, bytes | bytearray):
            raise InputError(f"Alert.photo must be PNG bytes or None (key {self.key!r})")
        if self.created_at.tzinfo is None:
            raise InputError(f"Alert.created_at must be timezone-aware (key {self.key!r})")
        if self.usd is not None and not (
            isinstance(self.usd, int | float) and math.isfinite(self.usd) and self.usd >= 0
        ):
            raise InputError(f"Alert.usd must be a finite USD amount >= 0 (key {self.key!r})")

    def __repr__(self) -> str:
        photo = f"{len(self.photo)} bytes" if self.photo is not None else "None"
        return (
            f"Alert(key={self.key!r}, kind={self.kind!r}, market={self.market!r}, "
            f"side={self.side!r}, text={len(self.text)} chars, photo={photo}, "
            f"created_at={self.created_at.isoformat()})"
        )


def alert_key(*parts: object) -> str:
    """Join the parts that identify one event into a dedupe key, e.g.
    ``alert_key("armed", "BTC/USDT:USDT", "long", 96200, "2026-11-22T05:00")``."""
    if not parts:
        raise InputError("alert_key needs at least one part")
    return "|".join(str(p) for p in parts)


def escape(value: object) -> str:
    """Escape any outside value for Telegram HTML (``&``, ``<``, ``>``)."""
    return html.escape(str(value), quote=False)


def _finite(name: str, value: float) -> float:
    try:
        v = float(value)
    except (TypeError, ValueError) as e:
        raise InputError(f"{name} must be a number, got {value!r}") from e
    if not math.isfinite(v):
        raise InputError(f"{name} must be finite, got {value!r}")
    return v


def _signed(text: str, negative: bool, plus: bool) -> str:
    if negative:
        return MINUS + text
    return ("+" + text) if plus else text


def fmt_usd(value: float) -> str:
    """Human USD amount: ``31.2M USD``, ``1.05B USD``, ``850K USD``, ``420 USD``."""
    v = _finite("usd", value)
    a = abs(v)
    for div, suffix in ((1e12, "T"), (1e9, "B"), (1e6, "M"), (1e3, "K")):
        if a >= div:
            scaled = a / div
            body = (
                f"{scaled:.2f}"
                if scaled < 10
                else f"{scaled:.1f}"
                if scaled < 100
                else f"{scaled:.0f}"
            )
            return _signed(f"{body}{suffix} USD", v < 0, plus=False)
    return _signed(f"{a:.0f} USD", v < 0 and round(a) != 0, plus=False)


def fmt_price(value: float) -> str:
    """Price with precision fitting its size: ``96,200``, ``182.45``, ``0.3412``, ``0.00001234``."""
    v = _finite("price", value)
    a = abs(v)
    if a >= 1000:
        body = f"{a:,.0f}"
    elif a >= 100:
        body = f"{a:,.2f}"
    elif a >= 1:
        body = f"{a:.3f}"
    elif a == 0:
        body = "0"
    else:
        # four significant digits for small coins
        digits = max(4, -math.floor(math.log10(a)) + 3)
        body = f"{a:.{digits}f}"
    return _signed(body, v < 0, plus=False)


def fmt_price_range(low: float, high: float) -> str:
    """``96,200–96,350`` (low first, en dash); a single price when both ends print the same."""
    lo, hi = sorted((_finite("price_low", low), _finite("price_high", high)))
    a, b = fmt_price(lo), fmt_price(hi)
    return a if a == b else f"{a}{EN_DASH}{b}"


def fmt_pct(value: float, decimals: int = 1, plus: bool = True) -> str:
    """Signed percent with a true minus: ``−1.3%``, ``+0.8%``; ``value`` is already in percent."""
    v = _finite("percent", value)
    body = f"{abs(v):.{decimals}f}"
    negative = v < 0 and float(body) != 0.0
    return _signed(body + "%", negative, plus=plus and float(body) != 0.0)


def _shares_line(shares: Mapping[str, float]) -> str:
    items = [(str(k), _finite(f"exchange_shares[{k!r}]", v)) for k, v in shares.items()]
    total = sum(v for _, v in items)
    if total <= 0:
        return ""
    # accept fractions (sum 1) or percents (sum 100) or raw USD: normalise to percent
    parts = sorted(((k, 100.0 * v / total) for k, v in items), key=lambda kv: -kv[1])
    return " · ".join(f"{escape(k)} {p:.0f}%" for k, p in parts if p >= 0.5)


def format_cluster_alert(
    *,
    market: str,
    side: str,
    price_low: float,
    price_high: float,
    usd: float,
    distance_pct: float,
    price: float,
    exchange_shares: Mapping[str, float] | None = None,
    cascade_depth: int | None = None,
    cascade_usd: float | None = None,
    oi_usd: float | None = None,
    oi_change_pct: float | None = None,
    funding_rate: float | None = None,
    kind: str = "armed",
    score: float | None = None,
    note: str | None = None,
    probability: float | None = None,
    horizon_bars: int | None = None,
    threshold: float | None = None,
    precision: float | None = None,
) -> str:
    """Telegram HTML for an armed (or escalated / info) liquidation pocket near price.

    With ``probability`` (the forecast's ``liq_*_cascade_prob``, a fraction) the message says
    how likely a cascade on ``side`` starts within ``horizon_bars``, the armed ``threshold``
    and the measured (out-of-sample) ``precision`` of that threshold, instead of the score.

    ``side`` is the side that gets liquidated: "long" (pocket below price, forced selling) or
    "short" (above, forced buying). ``distance_pct`` is signed, in percent:
    (pocket middle − price) / price × 100. ``exchange_shares`` maps exchange to its part of the
    pocket (fractions, percents or USD; normalised). ``funding_rate`` is a fraction per funding
    interval (0.0001 prints as ``+0.0100%``).
    """
    if side not in SIDES:
        raise InputError(f"side must be 'long' or 'short', got {side!r}")
    if kind not in ALERT_KINDS:
        raise InputError(f"kind must be one of {sorted(ALERT_KINDS)}, got {kind!r}")
    word = {"armed": "armed", "escalated": "escalated", "info": "near price"}.get(kind, kind)
    flow = "forced selling" if side == "long" else "forced buying"
    lines = [
        f"{_KIND_ICON[kind]} <b>{escape(market)}</b> {side} liquidations {word}",
        f"<b>{fmt_price_range(price_low, price_high)}</b> · {fmt_usd(usd)} ({flow} if hit)",
        f"{fmt_pct(distance_pct)} from price {fmt_price(price)}",
    ]
    if cascade_depth is not None and cascade_depth > 1:
        extra = f", {fmt_usd(cascade_usd)}" if cascade_usd is not None else ""
        lines.append(f"Cascade: {int(cascade_depth)} pockets in a row{extra}")
    if exchange_shares:
        shares = _shares_line(exchange_shares)
        if shares:
            lines.append(shares)
    crowd: list[str] = []
    if oi_usd is not None:
        oi = f"OI {fmt_usd(oi_usd)}"
        if oi_change_pct is not None:
            oi += f" ({fmt_pct(oi_change_pct)})"
        crowd.append(oi)
    elif oi_change_pct is not None:
        crowd.append(f"OI {fmt_pct(oi_change_pct)}")
    if funding_rate is not None:
        crowd.append(f"funding {fmt_pct(_finite('funding_rate', funding_rate) * 100, 4)}")
    if crowd:
        lines.append(" · ".join(crowd))
    if probability is not None:
        prob = _finite("probability", probability)
        within = f" within {int(horizon_bars)} bars" if horizon_bars is not None else ""
        lines.append(f"Cascade risk: <b>{prob * 100:.0f}%</b> that {side} liquidations "
                     f"cascade{within}")  # fmt: skip
        facts = []
        if threshold is not None:
            facts.append(f"armed at {_finite('threshold', threshold) * 100:.0f}%")
        if precision is not None:
            facts.append(f"measured precision {_finite('precision', precision) * 100:.0f}%")
        if facts:
            lines.append(f"<i>{', '.join(facts)}</i>")
    elif score is not None:
        lines.append(f"<i>score {_finite('score', score):.2f}</i>")
    if note:
        lines.append(f"<i>{escape(note)}</i>")
    return "\n".join(lines)


def format_consumed_alert(
    *,
    market: str,
    side: str,
    usd: float,
    price_before: float,
    price_extreme: float,
    price_now: float | None = None,
    minutes: float | None = None,
) -> str:
    """Telegram HTML for a flush: a pocket was traded through.

    ``usd`` is the notional estimated liquidated, ``price_before`` the price when the pocket was
    armed (or the bar before), ``price_extreme`` how far price went (low for longs, high for
    shorts), ``price_now`` where it is at the time of the message.
    """
    if side not in SIDES:
        raise InputError(f"side must be 'long' or 'short', got {side!r}")
    before = _finite("price_before", price_before)
    extreme = _finite("price_extreme", price_extreme)
    if before <= 0:
        raise InputError(f"price_before must be > 0, got {price_before!r}")
    move = (extreme - before) / before * 100.0
    lines = [
        f"{_KIND_ICON['consumed']} <b>{escape(market)}</b> {side} liquidations consumed",
        f"~{fmt_usd(usd)} flushed",
        f"Price {fmt_price(before)} → {fmt_price(extreme)} ({fmt_pct(move)})"
        + (f" in {_fmt_minutes(minutes)}" if minutes is not None else ""),
    ]
    if price_now is not None:
        now = _finite("price_now", price_now)
        lines.append(f"Now {fmt_price(now)} ({fmt_pct((now - before) / before * 100.0)})")
    return "\n".join(lines)


def _fmt_minutes(minutes: float) -> str:
    m = _finite("minutes", minutes)
    if m < 90:
        return f"{m:.0f} min"
    if m < 48 * 60:
        return f"{m / 60:.1f} h"
    return f"{m / 1440:.1f} d"


def format_stale_notice(
    *, source: str, last_update: datetime | None, now: datetime | None = None, reason: str = ""
) -> str:
    """Telegram HTML saying data from ``source`` (exchange, market or feed) stopped updating, so
    no alerts can be trusted until it recovers."""
    now = now or datetime.now(UTC)
    if last_update is None:
        age = "no data yet"
    else:
        age = (
            f"last update {last_update.astimezone(UTC):%Y-%m-%d %H:%M} UTC, "
            + _fmt_minutes((now - last_update).total_seconds() / 60)
            + " ago"
        )
    lines = [f"{_KIND_ICON['stale']} <b>Data stale: {escape(source)}</b>", age]
    if reason:
        lines.append(f"<i>{escape(reason)}</i>")
    lines.append("Alerts for it are paused until it recovers.")
    return "\n".join(lines)


def format_recovered_notice(*, source: str, stale_minutes: float | None = None) -> str:
    """Telegram HTML saying data from ``source`` is flowing again."""
    tail = f" after {_fmt_minutes(stale_minutes)}" if stale_minutes is not None else ""
    return (
        f"{_KIND_ICON['recovered']} <b>Data recovered: {escape(source)}</b>{tail}\nAlerts resume."
    )


# -- events as messages ------------------------------------------------------------------


def _stale_note(stale: Sequence[str]) -> str | None:
    return f"data stale on {', '.join(stale)}: map built without it" if stale else None


def signed_distance(side: str, distance_pct: float) -> float:
    """Distance from price with the sign of the direction, as the alerts write it: a long
    pocket (below price) negative, a short pocket (above) positive."""
    d = abs(float(distance_pct))
    return -d if side == "long" else d


#: the Pocket fields format_cluster_alert takes under the same name
_POCKET_FIELDS = (
    "usd",
    "distance_pct",
    "cascade_usd",
    "score",
    "probability",
    "horizon_bars",
    "threshold",
    "precision",
)


def alert_for(event: Event, *, now: datetime | None = None, stale: Sequence[str] = ()) -> Alert:
    """The Telegram text (no picture) for one event, keyed for the outbox."""
    ctx = event.context or {}
    if event.kind in ("armed", "escalated"):
        p = event.pocket
        assert p is not None and event.side is not None and event.price is not None
        text = format_cluster_alert(
            market=event.market,
            side=event.side,
            price_low=p.low,
            price_high=p.high,
            price=event.price,
            exchange_shares=dict(p.shares) or None,
            cascade_depth=p.depth,
            oi_usd=ctx.get("oi_usd"),
            oi_change_pct=ctx.get("oi_change_pct"),
            funding_rate=ctx.get("funding_rate"),
            kind=event.kind,
            note=_stale_note(stale) or f"bar {event.time:%Y-%m-%d %H:%M} UTC",
            **{name: getattr(p, name) for name in _POCKET_FIELDS},
        )
    elif event.kind == "consumed":
        assert event.side is not None
        minutes = None
        if event.armed_at is not None:
            minutes = (event.time - event.armed_at).total_seconds() / 60.0
        text = format_consumed_alert(
            market=event.market,
            side=event.side,
            usd=event.consumed_usd or 0.0,
            price_before=event.price_before or event.price or 1.0,
            price_extreme=event.price_extreme or event.price or 1.0,
            price_now=event.price,
            minutes=minutes,
        )
    elif event.kind == "stale":
        f = event.feed
        text = format_stale_notice(
            source=f"{event.exchange} {event.market}",
            last_update=f.last_bar if f else None,
            now=now,
            reason=(f.error or "") if f else "",
        )
    else:
        mins = None
        if event.stale_since is not None:
            mins = max(0.0, (event.time - event.stale_since).total_seconds() / 60.0)
        text = format_recovered_notice(
            source=f"{event.exchange} {event.market}", stale_minutes=mins
        )
    usd = event.pocket.usd if event.kind in ("armed", "escalated") and event.pocket else None
    if usd is not None and not (math.isfinite(usd) and usd >= 0):
        usd = None
    return Alert(
        key=event.key, kind=event.kind, market=event.market, side=event.side, text=text, usd=usd
    )
