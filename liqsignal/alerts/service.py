"""Run the alert service: refresh the map on a schedule, detect events, send them to Telegram.

One job, three parts, all on one asyncio loop:

- an APScheduler ``AsyncIOScheduler`` interval job (misfires coalesced, one instance at a time)
  calls :meth:`AlertService.tick`: refresh the provider, then :meth:`AlertService.evaluate`;
- ``evaluate`` reads each market's snapshot, features and feed status, asks the
  :class:`~liqsignal.alerts.events.EventDetector` what happened, renders the messages (and a
  heatmap PNG with the armed pocket marked), writes them to the SQLite outbox, then flushes the
  outbox through :class:`~liqsignal.alerts.telegram.TelegramSender` (marked sent after);
- optional Telegram commands ``/status``, ``/map BTC``, ``/clusters BTC``, ``/mute 1h``.

Standalone: ``liqsignal alerts --config config.json`` (:func:`add_alerts_arguments`,
:func:`run_alerts`) stops cleanly on SIGINT/SIGTERM. Inside Freqtrade: from the strategy's
``bot_start`` call :func:`start_in_background` (a thread with its own loop; the strategy keeps
reading the same provider) and ``stop()`` it in ``bot_cleanup``/at exit.

Settings: :class:`AlertConfig` from the ``liqsignal.alerts`` section of a Freqtrade-style config,
with markets (``liqsignal.alerts.markets`` or ``exchange.pair_whitelist``), exchanges
(``liqsignal.exchanges`` or ``exchange.name``) and the engine (``liqsignal.engine``).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import dataclasses
import io
import json
import logging
import math
import re
import signal
import sys
import threading
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Protocol

import pandas as pd

from liqsignal.alerts.events import (
    BarView,
    Event,
    EventDetector,
    EventRules,
    FeedState,
    Pocket,
)
from liqsignal.alerts.message import (
    Alert,
    escape,
    fmt_pct,
    fmt_price,
    fmt_price_range,
    fmt_usd,
    format_cluster_alert,
    format_consumed_alert,
    format_recovered_notice,
    format_stale_notice,
)
from liqsignal.alerts.outbox import DEFAULT_OUTBOX_PATH, Outbox
from liqsignal.config import MapConfig, section_kwargs
from liqsignal.exceptions import ConfigError
from liqsignal.forecast import forecast_on_frame

__all__ = [
    "AlertConfig",
    "AlertService",
    "MarketEntry",
    "ServiceSettings",
    "TickResult",
    "add_alerts_arguments",
    "load_settings",
    "render_pocket_png",
    "run_alerts",
    "start_in_background",
]

logger = logging.getLogger(__name__)

SIDES = ("long", "short")


# -- settings --------------------------------------------------------------------------------


@dataclass(frozen=True)
class AlertConfig:
    """The ``liqsignal.alerts`` section. Times in seconds unless named otherwise.

    ``chat_ids``: the only chats that get alerts and whose commands are answered.
    ``token``: bot token, only in an untracked config; else the variable ``token_env``.
    ``interval_s``: refresh and evaluation period. ``polling``: answer commands.
    ``pictures``: attach a heatmap PNG to armed/escalated alerts (``picture_bars`` of price).
    Event rules: ``cooldown_minutes``, ``band_pct``, ``escalate_usd_ratio``,
    ``escalate_depth_step``, ``min_usd``, ``max_distance_pct``, ``consumed_min_usd``.
    ``max_age_s``: an alert not delivered within this is dropped rather than sent late.
    ``ccxt_config``: exchange -> ccxt settings for the provider (e.g. a local replay's urls).
    """

    enabled: bool = True
    chat_ids: tuple[int | str, ...] = ()
    token: str | None = None
    token_env: str = "LIQSIGNAL_TELEGRAM_TOKEN"
    base_url: str | None = None
    base_file_url: str | None = None
    outbox: str = str(DEFAULT_OUTBOX_PATH)
    markets: tuple[str, ...] = ()
    timeframe: str = "1h"
    datadir: str = "user_data/data"
    interval_s: float = 60.0
    misfire_grace_s: float = 30.0
    polling: bool = False
    pictures: bool = True
    picture_bars: int = 72
    stale_notices: bool = True
    stale_after_bars: float = 2.0
    history_bars: int = 1000
    cooldown_minutes: float = 240.0
    band_pct: float = 0.5
    escalate_usd_ratio: float = 1.5
    escalate_depth_step: int = 2
    min_usd: float = 0.0
    max_distance_pct: float | None = None
    consumed_min_usd: float = 0.0
    max_age_s: float | None = 3600.0
    disable_notification: bool = False
    ccxt_config: Mapping[str, Any] | None = None
    #: Longest wait for one venue's answer per round (None: half of ``interval_s``): a slow
    #: venue goes stale for the round instead of delaying every market.
    venue_timeout_s: float | None = None
    #: Per-market engine settings over ``liqsignal.engine``, e.g.
    #: ``{"ETH/USDT:USDT": {"step_bps": 5, "step": null}}``. Without them each market still
    #: gets a grid that suits its price (``engine.auto_grid``: a 5 bps relative grid when the
    #: absolute step does not suit it).
    market_engines: Mapping[str, Any] | None = None

    def __post_init__(self) -> None:
        _check_types(self)
        chats = []
        for c in self.chat_ids:
            if isinstance(c, bool) or not isinstance(c, int | str) or not str(c).strip():
                raise ConfigError(
                    f"liqsignal.alerts.chat_ids: each must be an integer or an @channel, got {c!r}"
                )
            chats.append(c)
        for name, (lo, lo_open, hi) in _ALERT_RANGES.items():
            v = getattr(self, name)
            if v is None and name in ("max_age_s", "venue_timeout_s"):
                continue
            ok = math.isfinite(v) and (v > lo if lo_open else v >= lo) and v <= hi
            if not ok:
                rng = f"{'(' if lo_open else '['}{lo:g}, {hi:g}]"
                raise ConfigError(f"liqsignal.alerts.{name} must be in {rng}, got {v!r}")
        if self.ccxt_config is not None and not (
            isinstance(self.ccxt_config, Mapping)
            and all(isinstance(v, Mapping) for v in self.ccxt_config.values())
        ):
            # values may hold API keys: name the key, never show the value
            raise ConfigError(
                "liqsignal.alerts.ccxt_config must map exchange ids to ccxt settings "
                '(e.g. {"binance": {"urls": {...}}}), got a '
                f"{type(self.ccxt_config).__name__}"
            )
        if self.market_engines is not None and not (
            isinstance(self.market_engines, Mapping)
            and all(isinstance(v, Mapping) for v in self.market_engines.values())
        ):
            raise ConfigError(
                "liqsignal.alerts.market_engines must map markets to engine settings "
                '(e.g. {"ETH/USDT:USDT": {"step": null, "step_bps": 5}}), got '
                f"{self.market_engines!r}"
            )
        if not _ENV_NAME.fullmatch(self.token_env):
            # never echo it: a token pasted here instead of a variable name is a secret
            raise ConfigError(
                "liqsignal.alerts.token_env must be the name of an environment variable "
                "(letters, digits and _, e.g. LIQSIGNAL_TELEGRAM_TOKEN), not a value; put the "
                "token itself in that variable"
            )
        if not self.outbox.strip():
            raise ConfigError("liqsignal.alerts.outbox must be a file path")
        self.rules()  # validates the event rules, naming the key

    def rules(self) -> EventRules:
        try:
            return EventRules(
                cooldown_s=self.cooldown_minutes * 60.0,
                band_pct=self.band_pct,
                escalate_usd_ratio=self.escalate_usd_ratio,
                escalate_depth_step=self.escalate_depth_step,
                min_usd=self.min_usd,
                max_distance_pct=self.max_distance_pct,
                consumed_min_usd=self.consumed_min_usd,
            )
        except ConfigError as e:
            raise ConfigError(f"liqsignal.{e}") from None

    @classmethod
    def from_dict(cls, data: Mapping[str, Any] | None) -> AlertConfig:
        """Build from the ``liqsignal.alerts`` mapping; unknown keys fail, naming them."""
        if data is None:
            return cls()
        kwargs = section_kwargs(cls, data, "liqsignal.alerts")
        for key in ("chat_ids", "markets"):
            if key in kwargs:
                v = kwargs[key]
                if isinstance(v, str | int) and not isinstance(v, bool):
                    v = [v]
                if not isinstance(v, list | tuple):
                    raise ConfigError(f"liqsignal.alerts.{key} must be a list, got {v!r}")
                kwargs[key] = tuple(v)
        return cls(**kwargs)

    def __repr__(self) -> str:  # never show the token
        shown = dataclasses.replace(self, token="<hidden>" if self.token else None)
        return (
            "AlertConfig("
            + ", ".join(f"{f.name}={getattr(shown, f.name)!r}" for f in dataclasses.fields(self))
            + ")"
        )


#: Sane ranges of the numeric keys: (lowest, lowest excluded?, highest).
_ALERT_RANGES: dict[str, tuple[float, bool, float]] = {
    "interval_s": (0.0, True, 86_400.0),
    "stale_after_bars": (0.0, True, 10_000.0),
    "misfire_grace_s": (0.0, False, 86_400.0),
    "cooldown_minutes": (0.0, False, 525_600.0),
    "picture_bars": (1, False, 10_000),
    "history_bars": (1, False, 100_000),
    "max_age_s": (0.0, True, 30 * 86_400.0),
    "venue_timeout_s": (0.0, True, 86_400.0),
}
_ENV_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]{0,127}")
#: Keys whose values are never shown in an error message.
_SECRET_KEYS = frozenset({"token"})

_TYPES: dict[str, tuple[type, ...]] = {
    "bool": (bool,),
    "int": (int,),
    "float": (int, float),
    "str": (str,),
}


def _check_types(cfg: AlertConfig) -> None:
    for f in dataclasses.fields(cfg):
        v = getattr(cfg, f.name)
        t = str(f.type)
        if v is None and "None" in t:
            continue
        base = t.split("|")[0].strip()
        if base in _TYPES:
            ok = isinstance(v, _TYPES[base]) and not (base != "bool" and isinstance(v, bool))
            if not ok:
                got = f"a {type(v).__name__}" if f.name in _SECRET_KEYS else repr(v)
                raise ConfigError(
                    f"liqsignal.alerts.{f.name} must be {base}"
                    + (" or null" if "None" in t else "")
                    + f", got {got}"
                )
        elif base.startswith("tuple[str") and not all(isinstance(x, str) for x in v):
            raise ConfigError(f"liqsignal.alerts.{f.name} must be a list of strings, got {v!r}")


@dataclass(frozen=True)
class MarketEntry:
    """One market and the exchanges its map aggregates."""

    market: str
    exchanges: tuple[str, ...]
    timeframe: str = "1h"


@dataclass(frozen=True)
class ServiceSettings:
    """Everything the service reads from a Freqtrade-style config."""

    alerts: AlertConfig
    markets: tuple[MarketEntry, ...]
    engine: MapConfig
    freqtrade_config: Mapping[str, Any] = field(default_factory=dict)
    ccxt_config: Mapping[str, Any] | None = None
    #: Engine settings per market (``engine`` with ``market_engines`` over it).
    engines: Mapping[str, MapConfig] = field(default_factory=dict)


def load_settings(config: Mapping[str, Any] | str | Path) -> ServiceSettings:
    """Read a Freqtrade-style config (mapping or JSON path). Raises ``ConfigError`` naming the
    key on bad input."""
    if not isinstance(config, Mapping):
        path = Path(config)
        try:
            data = json.loads(path.read_text(encoding="utf-8"))
        except FileNotFoundError:
            raise ConfigError(f"config file {str(path)!r} not found") from None
        except json.JSONDecodeError as e:
            raise ConfigError(f"config file {str(path)!r} is not valid JSON: {e}") from None
        if not isinstance(data, Mapping):
            raise ConfigError(f"config file {str(path)!r} must hold a JSON object")
        config = data
    section = config.get("liqsignal") or {}
    if not isinstance(section, Mapping):
        raise ConfigError("liqsignal: expected a mapping")
    alerts = AlertConfig.from_dict(section.get("alerts"))
    exchange = config.get("exchange") or {}
    if not isinstance(exchange, Mapping):
        raise ConfigError(
            'exchange must be a mapping (Freqtrade\'s section, e.g. {"name": "binance"}), got '
            f"{type(exchange).__name__}; list the venues under liqsignal.exchanges"
        )
    exchanges = section.get("exchanges")
    if exchanges is None:
        exchanges = [exchange.get("name")] if exchange.get("name") else ["binance"]
    if isinstance(exchanges, str):
        exchanges = [exchanges]
    if not isinstance(exchanges, list | tuple) or not exchanges:
        raise ConfigError(f"liqsignal.exchanges must be a non-empty list, got {exchanges!r}")
    for name in exchanges:
        if not isinstance(name, str) or not name.strip():
            raise ConfigError(f"liqsignal.exchanges: each must be an exchange id, got {name!r}")
    markets = alerts.markets or tuple(exchange.get("pair_whitelist") or ())
    if not markets:
        raise ConfigError(
            "liqsignal.alerts.markets is empty and exchange.pair_whitelist names no pair: "
            'list the markets to watch, e.g. ["BTC/USDT:USDT"]'
        )
    timeframe = alerts.timeframe or str(config.get("timeframe") or "1h")
    engine = MapConfig.from_dict(section.get("engine"))
    engines: dict[str, MapConfig] = {}
    per = dict(alerts.market_engines or {})
    unknown = sorted(set(per) - set(markets))
    if unknown:
        raise ConfigError(
            f"liqsignal.alerts.market_engines: {unknown} not among the markets {list(markets)}"
        )
    base = dict(section.get("engine") or {})
    for m in markets:
        if m in per:
            try:
                engines[m] = MapConfig.from_dict({**base, **dict(per[m])})
            except ConfigError as e:
                raise ConfigError(f"liqsignal.alerts.market_engines[{m!r}]: {e}") from None
        else:
            engines[m] = engine
    ccxt = alerts.ccxt_config
    return ServiceSettings(
        alerts,
        tuple(MarketEntry(m, tuple(exchanges), timeframe) for m in markets),
        engine,
        config,
        ccxt if isinstance(ccxt, Mapping) else None,
        engines,
    )


# -- the provider, as the service uses it ----------------------------------------------------


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


def _context(feat: pd.DataFrame) -> dict[str, float | None]:
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


def with_market_data(
    provider: Any, market: str, feat: pd.DataFrame, timeframe: str, bars: int = 200
) -> pd.DataFrame:
    """The last ``bars`` rows of ``feat`` with ``close, high, low`` (and
    ``open_interest_value``, ``funding_rate`` when stored) of the first non-stale exchange,
    read from the provider's store. The provider's features carry only ``liq_*`` columns; the
    message needs price extremes and the OI and funding context. Missing data: ``feat`` as is."""
    tail = feat.tail(bars)
    store = getattr(provider, "store", None)
    if store is None or tail.empty or "close" in tail.columns:
        return tail
    try:
        feeds = feeds_of(provider.status(market))
        raw = provider.status(market)
    except Exception:
        return tail
    for f in sorted(feeds, key=lambda f: f.stale):
        symbol = getattr(raw.get(f.exchange), "symbol", None)
        if not symbol:
            continue
        try:
            c = store.read(f.exchange, symbol, timeframe, "futures")
        except Exception:
            continue
        if c is None or c.empty:
            continue
        c = c.set_index("date")[
            [k for k in ("open", "high", "low", "close", "volume") if k in c.columns]
        ]
        out = tail.join(c, how="left")
        for ctype, cols in (
            ("open_interest", ["open_interest_value"]),
            ("funding_rate", ["funding_rate"]),
        ):
            try:
                extra = _read_any_tf(store, f.exchange, symbol, ctype, timeframe)
            except Exception:
                extra = None
            if extra is None or extra.empty or cols[0] not in extra.columns:
                continue
            e = extra.set_index("date")[cols].sort_index()
            out[cols[0]] = e[cols[0]].reindex(out.index, method="ffill").to_numpy()
        return out
    return tail


def _read_any_tf(store: Any, exchange: str, symbol: str, ctype: str, timeframe: str) -> Any:
    for tf in dict.fromkeys((timeframe, "1h", "5m", "15m", "8h")):
        df = store.read(exchange, symbol, tf, ctype)
        if df is not None and not df.empty:
            return df
    return None


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
        context=_context(feat),
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


# -- picture ---------------------------------------------------------------------------------


def render_pocket_png(
    snapshot: Any,
    feat: pd.DataFrame | None,
    *,
    market: str,
    pocket: Pocket | None = None,
    bars: int = 72,
    window_pct: float = 6.0,
) -> bytes:
    """A phone-sized PNG: recent price over the current map (levels as a heat strip, long
    levels below, short above), the level profile on the right, the armed pocket marked."""
    from liqsignal.plot import _pyplot

    plt = _pyplot()
    import numpy as np

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
            f"armed {pocket.side} pocket {fmt_usd(pocket.usd)}",
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


# -- messages --------------------------------------------------------------------------------


def _stale_note(stale: Sequence[str]) -> str | None:
    return f"data stale on {', '.join(stale)}: map built without it" if stale else None


def _signed_distance(side: str, distance_pct: float) -> float:
    """Distance from price with the sign of the direction, as the alerts write it: a long
    pocket (below price) negative, a short pocket (above) positive."""
    d = abs(float(distance_pct))
    return -d if side == "long" else d


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
            usd=p.usd,
            distance_pct=p.distance_pct,
            price=event.price,
            exchange_shares=dict(p.shares) or None,
            cascade_depth=p.depth,
            cascade_usd=p.cascade_usd,
            oi_usd=ctx.get("oi_usd"),
            oi_change_pct=ctx.get("oi_change_pct"),
            funding_rate=ctx.get("funding_rate"),
            kind=event.kind,
            score=p.score,
            probability=p.probability,
            horizon_bars=p.horizon_bars,
            threshold=p.threshold,
            precision=p.precision,
            note=_stale_note(stale) or f"bar {event.time:%Y-%m-%d %H:%M} UTC",
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
    return Alert(key=event.key, kind=event.kind, market=event.market, side=event.side, text=text)


# -- the service -----------------------------------------------------------------------------


@dataclass
class TickResult:
    """What one tick did. Times from ``time.perf_counter``."""

    refreshed: bool = False
    refresh_error: str | None = None
    events: list[Event] = field(default_factory=list)
    alerts: list[Alert] = field(default_factory=list)
    sent: int = 0
    pending: int = 0
    failed: int = 0
    refresh_end: float = 0.0
    done: float = 0.0


class AlertService:
    """Refresh, detect, render, store, send. Build it, then :meth:`run` (standalone),
    :meth:`start_in_background` (inside Freqtrade) or call :meth:`tick` yourself.

    ``provider``: a ``MapProvider`` (or anything with its interface). ``sender``: a
    ``TelegramSender``; None builds one from the config (token from the config or the
    environment). ``refresh=False``: only evaluate (someone else refreshes the provider).
    """

    def __init__(
        self,
        provider: Provider,
        config: AlertConfig,
        *,
        markets: Sequence[str],
        sender: Any = None,
        outbox: Outbox | None = None,
        freqtrade_config: Mapping[str, Any] | None = None,
        refresh: bool = True,
    ) -> None:
        if not markets:
            raise ConfigError("liqsignal.alerts.markets: no market to watch")
        self.provider = provider
        self.config = config
        self.markets = tuple(markets)
        self.freqtrade_config = freqtrade_config or {}
        self.refresh_enabled = refresh
        self.detector = EventDetector(config.rules())
        self._own_outbox = outbox is None and sender is None
        self.outbox = outbox if outbox is not None else getattr(sender, "outbox", None)
        self.sender = sender
        self.last_tick: TickResult | None = None
        self.last_refresh_at: datetime | None = None
        self.ticks = 0
        self._started = False
        self._tick_lock = asyncio.Lock()
        self._thread: threading.Thread | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._stop_event: asyncio.Event | None = None
        self._ready = threading.Event()
        self.scheduler: Any = None
        #: What the outbox holds of the detector's tracked pockets, per (market, side).
        self._saved_tracked: dict[tuple[str, str], Any] = {}
        self._empty_warned: set[str] = set()
        self._job_task: asyncio.Task[Any] | None = None

    # -- lifecycle -----------------------------------------------------------------------

    def _build_sender(self) -> Any:
        from liqsignal.alerts.telegram import RetryPolicy, TelegramSender

        if not self.config.chat_ids:
            raise ConfigError("liqsignal.alerts.chat_ids is empty: name the chats to alert")
        sender = TelegramSender(
            self.config.chat_ids,
            token=self.config.token,
            token_env=self.config.token_env,
            base_url=self.config.base_url,
            base_file_url=self.config.base_file_url,
            outbox=None,
            retry=RetryPolicy(max_age=self.config.max_age_s),
            disable_notification=self.config.disable_notification,
        )  # token checked first: no outbox file for a config that cannot send
        if self.outbox is None:
            self.outbox = Outbox(self.config.outbox)
        sender.outbox = self.outbox
        return sender

    async def start(self) -> None:
        """Open the sender, restore cooldowns from the outbox, resend what a previous run left
        pending, and start command polling if configured. Idempotent."""
        if self._started:
            return
        if self.sender is None:
            self.sender = self._build_sender()
        if self.outbox is None:
            self.outbox = getattr(self.sender, "outbox", None)
        if self.outbox is not None:
            keys = [e.alert.key for e in self.outbox.entries()]
            tracked = self.outbox.tracked() if hasattr(self.outbox, "tracked") else []
            n = self.detector.restore(keys, tracked=tracked)
            self._saved_tracked = {(str(t["market"]), str(t["side"])): t for t in tracked}
            logger.info(
                "Alert state restored from %d stored alert(s), %d tracked pocket(s)",
                n,
                len(tracked),
            )
        self._register_commands()
        await self.sender.start()
        if self.outbox is not None and self.outbox.counts().get("pending", 0):
            res = await self.sender.flush()
            logger.info(
                "Resent %d alert(s) left pending by the last run (%d still pending)",
                len(res.sent),
                res.remaining,
            )
        if self.config.polling:
            reason = self.sender.start_polling(self.freqtrade_config)
            if reason:
                logger.warning("Not answering Telegram commands: %s", reason)
        self._started = True

    async def aclose(self) -> None:
        """Stop polling, close the sender (and the outbox it owns). Never raises."""
        if self.sender is not None:
            with contextlib.suppress(Exception):
                await self.sender.stop()
        if self._own_outbox and self.outbox is not None:
            with contextlib.suppress(Exception):
                self.outbox.close()
        self._started = False

    # -- one round -----------------------------------------------------------------------

    async def tick(self) -> TickResult:
        """Refresh the provider (unless disabled), then evaluate. Never raises; one round at
        a time."""
        async with self._tick_lock:
            result = TickResult()
            if self.refresh_enabled:
                try:
                    await self.provider.refresh()
                    result.refreshed = True
                    self.last_refresh_at = datetime.now(UTC)
                except Exception as exc:
                    result.refresh_error = f"{type(exc).__name__}: {exc}"
                    logger.error("Refresh failed: %s", result.refresh_error)
            result.refresh_end = time.perf_counter()
            try:
                await self._evaluate(result)
            except Exception:
                logger.exception("Alert evaluation failed")
            result.done = time.perf_counter()
            self.ticks += 1
            self.last_tick = result
            return result

    async def evaluate(self) -> TickResult:
        """Detect, store and send events for the provider's current state (no refresh)."""
        async with self._tick_lock:
            result = TickResult(refresh_end=time.perf_counter())
            await self._evaluate(result)
            result.done = time.perf_counter()
            return result

    async def _evaluate(self, result: TickResult) -> None:
        if not self._started:
            await self.start()
        now = datetime.now(UTC)
        pictures: list[tuple[int, Any, pd.DataFrame, Pocket]] = []
        for market in self.markets:
            try:
                events, snap, feat = self._market_events(market, now)
            except Exception as exc:
                logger.error("Cannot evaluate %s: %s: %s", market, type(exc).__name__, exc)
                continue
            stale = self.detector.stale_exchanges(market)
            for ev in events:
                result.events.append(ev)
                if ev.kind in ("stale", "recovered") and not self.config.stale_notices:
                    continue
                if self.outbox is not None and self.outbox.has_key(ev.key):
                    continue
                result.alerts.append(alert_for(ev, now=now, stale=stale))
                if self.config.pictures and ev.pocket is not None and ev.kind != "consumed":
                    pictures.append((len(result.alerts) - 1, snap, feat, ev.pocket))
        if pictures:
            bars = self.config.picture_bars

            def render_all() -> list[bytes | None]:
                out: list[bytes | None] = []
                for i, snap, feat, pocket in pictures:
                    try:
                        out.append(
                            render_pocket_png(
                                snap, feat, market=result.alerts[i].market, pocket=pocket, bars=bars
                            )
                        )
                    except Exception as exc:
                        logger.warning("Picture failed: %s: %s", type(exc).__name__, exc)
                        out.append(None)
                return out

            pngs = await asyncio.to_thread(render_all)
            for (i, *_), png in zip(pictures, pngs, strict=True):
                if png is not None:
                    result.alerts[i] = dataclasses.replace(result.alerts[i], photo=png)
        if not result.alerts and (self.outbox is None or not self.outbox.counts()["pending"]):
            await self._save_tracked()
            return
        if self.outbox is not None:
            hold = getattr(self.sender, "hold", None)
            for alert in result.alerts:
                if hold is not None:
                    hold(alert)  # the sender stores it first, and sends only what is stored
                    continue
                try:
                    await asyncio.to_thread(self.outbox.enqueue, alert)
                except Exception as exc:
                    logger.error("Could not store alert %r: %s", alert.key, exc)
            res = await self.sender.flush()
            await self._save_tracked()
        else:
            res = None
            for alert in result.alerts:
                r = await self.sender.send_alert(alert)
                result.sent += len(r.sent)
                result.failed += len(r.failed)
                result.pending += len(r.pending)
        if res is not None:
            result.sent, result.failed, result.pending = (
                len(res.sent),
                len(res.failed),
                res.remaining,
            )
        for ev in result.events:
            logger.info("Alert event %s", ev.key)

    def _warn_if_empty(self, market: str, snap: Any, price: float) -> None:
        """Warn once per market while its map holds no levels (it can then never alert)."""
        levels = getattr(snap, "levels", None)
        empty = levels is None or len(levels) == 0
        if empty and market not in self._empty_warned:
            self._empty_warned.add(market)
            logger.warning(
                "%s: the liquidation map holds no levels at price %s, so it cannot alert; check "
                "the grid (liqsignal.engine step / step_bps, or liqsignal.alerts.market_engines) "
                "and that open interest arrives for it",
                market,
                fmt_price(price) if math.isfinite(price) and price > 0 else price,
            )
        elif not empty and market in self._empty_warned:
            self._empty_warned.discard(market)
            logger.info("%s: the map holds levels again", market)

    async def _save_tracked(self) -> None:
        """Keep the outbox's copy of the pockets each side tracks in step with the detector."""
        outbox = self.outbox
        if outbox is None or not hasattr(outbox, "save_tracked"):
            return
        for market in self.markets:
            for side in ("long", "short"):
                state = self.detector.tracked_state(market, side)
                if self._saved_tracked.get((market, side)) == state:
                    continue
                try:
                    await asyncio.to_thread(outbox.save_tracked, market, side, state)
                except Exception as exc:  # retried next round (the copy is left unchanged)
                    logger.warning("Could not save the tracked %s %s pocket: %s", market, side, exc)
                    continue
                self._saved_tracked[(market, side)] = state

    def _market_events(self, market: str, now: datetime) -> tuple[list[Event], Any, pd.DataFrame]:
        events: list[Event] = []
        try:
            status = self.provider.status(market)
        except Exception as exc:
            logger.warning("No status for %s: %s", market, exc)
            status = {}
        feeds = feeds_of(status)
        events += self.detector.observe_feeds(market, feeds, now)
        if feeds and all(f.stale for f in feeds):
            return events, None, pd.DataFrame()
        feat = with_market_data(
            self.provider,
            market,
            self.provider.features(market),
            self.config.timeframe,
            max(self.config.picture_bars, 25),
        )
        section = self.freqtrade_config.get("liqsignal") or {}
        feat = forecast_on_frame(feat, section.get("forecast"))
        snap = self.provider.snapshot(market)
        price = float(getattr(snap, "price", 0.0) or self.provider.price(market))
        self._warn_if_empty(market, snap, price)
        view = bar_view(market, snap, feat, price)
        if view is not None:
            events += self.detector.observe(view)
        return events, snap, feat

    # -- commands ------------------------------------------------------------------------

    def find_market(self, text: str) -> str:
        """``BTC`` or ``btc/usdt:usdt`` -> the configured market; ConfigError if none."""
        t = text.strip().upper()
        for m in self.markets:
            if m.upper() == t or m.upper().split("/")[0] == t:
                return m
        raise ConfigError(f"unknown market {text!r}; watching: {', '.join(self.markets)}")

    def clusters_text(self, market: str, limit: int = 4) -> str:
        snap = self.provider.snapshot(market)
        lines = [f"<b>{escape(market)}</b> price {fmt_price(snap.price)}"]
        for side in ("short", "long"):
            cl = sorted(snap.clusters_on(side), key=lambda c: abs(c.distance_pct))[:limit]
            lines.append(f"<b>{side}</b> pockets ({'above' if side == 'short' else 'below'}):")
            if not cl:
                lines.append("  none in range")
            for c in cl:
                shares = " ".join(f"{escape(k)} {v * 100:.0f}%" for k, v in c.shares.items())
                lines.append(
                    f"  {fmt_price_range(c.low, c.high)} · {fmt_usd(c.usd)} · "
                    f"{fmt_pct(_signed_distance(side, c.distance_pct))} · depth {c.depth}"
                    + (f" · {shares}" if shares else "")
                )
        stale = self.detector.stale_exchanges(market)
        if stale:
            lines.append(f"<i>stale: {escape(', '.join(stale))}</i>")
        return "\n".join(lines)

    def status_text(self) -> str:
        lines = ["<b>liqsignal alerts</b>"]
        when = (
            f"{self.last_refresh_at:%Y-%m-%d %H:%M:%S} UTC" if self.last_refresh_at else "not yet"
        )
        lines.append(f"last refresh {when}; {self.ticks} round(s)")
        for m in self.markets:
            try:
                feeds = feeds_of(self.provider.status(m))
                parts = [f"{f.exchange} {'STALE' if f.stale else 'ok'}" for f in feeds]
                lines.append(f"{escape(m)}: {escape(', '.join(parts) or 'no status')}")
            except Exception as exc:
                lines.append(f"{escape(m)}: status unavailable ({escape(type(exc).__name__)})")
        sender = self.sender
        if sender is not None:
            muted = time.time() < getattr(sender, "muted_until", 0.0)
            lines.append("muted" if muted else "not muted")
            if sender.outbox is not None:
                lines.append(f"outbox {escape(sender.outbox.counts())}")
            if getattr(sender, "polling_refused", None):
                lines.append(f"<i>{escape(sender.polling_refused)}</i>")
        return "\n".join(lines)

    def _register_commands(self) -> None:
        from liqsignal.alerts.telegram import CommandReply

        sender = self.sender
        if sender is None or not hasattr(sender, "register_command"):
            return

        def status(args: list[str]) -> str:
            return self.status_text()

        def clusters(args: list[str]) -> str:
            return self.clusters_text(self.find_market(args[0] if args else self.markets[0]))

        async def map_(args: list[str]) -> CommandReply:
            market = self.find_market(args[0] if args else self.markets[0])
            snap = self.provider.snapshot(market)
            feat = with_market_data(
                self.provider, market, self.provider.features(market), self.config.timeframe
            )
            png = await asyncio.to_thread(
                render_pocket_png, snap, feat, market=market, bars=self.config.picture_bars
            )
            return CommandReply(self.clusters_text(market, limit=2), photo=png)

        sender.register_command("status", status)
        sender.register_command("clusters", clusters)
        sender.register_command("map", map_)

    # -- scheduling ----------------------------------------------------------------------

    async def _job(self) -> None:
        self._job_task = asyncio.current_task()
        try:
            await self.tick()
        except asyncio.CancelledError:
            # shutdown during a round (say a Telegram flood wait): unsent alerts stay in the
            # outbox for the next start; not re-raised, so the scheduler logs no ERROR traceback
            logger.info("liqsignal alerts: the running round was stopped by shutdown")
        finally:
            self._job_task = None

    async def run(self, stop: asyncio.Event | None = None, *, install_signals: bool = True) -> None:
        """Run until ``stop`` is set (or SIGINT/SIGTERM, when ``install_signals`` and on the
        main thread): an interval job, first run now, misfires coalesced, one at a time."""
        from liqsignal._optional import require

        require("apscheduler", extra="alerts", feature="the alert service's schedule")
        from apscheduler.schedulers.asyncio import AsyncIOScheduler
        from apscheduler.triggers.interval import IntervalTrigger

        loop = asyncio.get_running_loop()
        stop = stop or asyncio.Event()
        self._stop_event = stop
        installed: list[signal.Signals] = []
        if install_signals and threading.current_thread() is threading.main_thread():
            for sig in (signal.SIGINT, signal.SIGTERM):
                try:
                    loop.add_signal_handler(sig, stop.set)
                    installed.append(sig)
                except (NotImplementedError, RuntimeError):  # pragma: no cover - Windows
                    pass
        scheduler = AsyncIOScheduler(event_loop=loop, timezone=UTC)
        self.scheduler = scheduler
        try:
            await self.start()
            scheduler.add_job(
                self._job,
                IntervalTrigger(seconds=self.config.interval_s, timezone=UTC),
                id="liqsignal-alerts",
                name="liqsignal alerts: refresh and evaluate",
                coalesce=True,
                max_instances=1,
                misfire_grace_time=max(1, int(self.config.misfire_grace_s)) or None,
                next_run_time=datetime.now(UTC),
            )
            scheduler.start()
            self._ready.set()
            logger.info(
                "liqsignal alerts running: %d market(s), every %g s",
                len(self.markets),
                self.config.interval_s,
            )
            await stop.wait()
            logger.info("liqsignal alerts stopping")
        finally:
            self._ready.set()
            if scheduler.running:
                scheduler.shutdown(wait=False)
            for sig in installed:
                loop.remove_signal_handler(sig)
            job = self._job_task
            if job is not None and not job.done():
                job.cancel()  # a round waiting (flood control, a slow venue) ends now
                with contextlib.suppress(BaseException):
                    await asyncio.wait_for(asyncio.shield(job), 10.0)
            async with self._tick_lock:  # a round started outside the scheduler
                pass
            await self.aclose()

    # -- inside Freqtrade ----------------------------------------------------------------

    def start_in_background(self, timeout: float = 30.0) -> AlertService:
        """Run :meth:`run` in a daemon thread with its own event loop; return at once (after
        the scheduler is up, at most ``timeout`` s). The caller's loop is never blocked."""
        if self._thread is not None and self._thread.is_alive():
            return self
        self._ready.clear()

        def target() -> None:
            loop = asyncio.new_event_loop()
            self._loop = loop
            asyncio.set_event_loop(loop)
            try:
                self._stop_event = asyncio.Event()
                loop.run_until_complete(self.run(self._stop_event, install_signals=False))
            except Exception:
                logger.exception("liqsignal alerts thread stopped on an error")
            finally:
                self._ready.set()
                with contextlib.suppress(Exception):
                    loop.run_until_complete(loop.shutdown_asyncgens())
                loop.close()

        self._thread = threading.Thread(target=target, name="liqsignal-alerts", daemon=True)
        self._thread.start()
        self._ready.wait(timeout)
        return self

    def stop(self, timeout: float = 30.0) -> bool:
        """Stop the background thread (finishing a running round) and wait for it. Returns
        True when it ended within ``timeout``."""
        thread, loop, ev = self._thread, self._loop, self._stop_event
        if thread is None:
            return True
        if loop is not None and ev is not None and not loop.is_closed():
            with contextlib.suppress(RuntimeError):
                loop.call_soon_threadsafe(ev.set)
        thread.join(timeout)
        alive = thread.is_alive()
        if not alive:
            self._thread = None
        return not alive

    @property
    def running(self) -> bool:
        return self._thread is not None and self._thread.is_alive()


def _provider_from_settings(settings: ServiceSettings) -> Any:
    from liqsignal.data.provider import MapProvider, MarketSpec

    a = settings.alerts
    specs = [MarketSpec(m.market, m.exchanges, m.timeframe) for m in settings.markets]
    return MapProvider(
        specs,
        config=dict(settings.engines) or settings.engine,
        datadir=a.datadir,
        ccxt_config=dict(settings.ccxt_config) if settings.ccxt_config else None,
        stale_after_bars=a.stale_after_bars,
        history_bars=a.history_bars,
        feed_timeout_s=a.venue_timeout_s or a.interval_s / 2.0,
    )


def start_in_background(
    config: Mapping[str, Any] | str | Path,
    *,
    provider: Provider | None = None,
    refresh: bool = True,
    sender: Any = None,
    outbox: Outbox | None = None,
) -> AlertService | None:
    """From a strategy's ``bot_start``: read the Freqtrade config (``self.config``), start the
    alert service in a background thread sharing ``provider``, return it (call ``.stop()`` on
    exit). Returns None when ``liqsignal.alerts.enabled`` is false. Raises ``ConfigError`` on a
    bad config, before any thread starts."""
    settings = load_settings(config)
    if not settings.alerts.enabled:
        logger.info("liqsignal alerts disabled (liqsignal.alerts.enabled is false)")
        return None
    prov = provider if provider is not None else _provider_from_settings(settings)
    service = AlertService(
        prov,
        settings.alerts,
        markets=[m.market for m in settings.markets],
        sender=sender,
        outbox=outbox,
        freqtrade_config=settings.freqtrade_config,
        refresh=refresh,
    )
    if sender is None:
        service.sender = service._build_sender()  # token and chats checked here, not later
    return service.start_in_background()


# -- command line ----------------------------------------------------------------------------


def _check_sendable(cfg: AlertConfig) -> None:
    import os

    if not cfg.chat_ids:
        raise ConfigError("liqsignal.alerts.chat_ids is empty: name the chats to alert")
    if not (cfg.token or os.environ.get(cfg.token_env, "").strip()):
        raise ConfigError(
            f"no Telegram bot token: set the environment variable {cfg.token_env} "
            "or liqsignal.alerts.token in an untracked config"
        )


def add_alerts_arguments(parser: argparse.ArgumentParser) -> None:
    """Arguments of ``liqsignal alerts``."""
    parser.add_argument("--config", required=True, help="Freqtrade-style JSON config")
    parser.add_argument("--once", action="store_true", help="one refresh and evaluation, then exit")
    parser.add_argument("--interval", type=float, help="seconds between rounds (overrides config)")
    parser.add_argument("--datadir", help="Freqtrade data folder (overrides config)")
    parser.add_argument(
        "--log-level",
        default="INFO",
        choices=["DEBUG", "INFO", "WARNING", "ERROR"],
        help="log level of the messages on stderr (default INFO)",
    )


def setup_logging(level: str = "INFO") -> None:
    """Log to stderr with times, unless the application already set up logging (Freqtrade)."""
    root = logging.getLogger()
    if not root.handlers:
        logging.basicConfig(
            level=getattr(logging, level, logging.INFO),
            format="%(asctime)s %(levelname)s %(name)s: %(message)s",
            datefmt="%Y-%m-%dT%H:%M:%S%z",
        )
    # one line per HTTP request and per scheduler run is noise at INFO
    for name in ("httpx", "httpcore", "apscheduler", "telegram", "aiohttp.access"):
        logging.getLogger(name).setLevel(max(logging.WARNING, root.level))


def run_alerts(args: argparse.Namespace) -> int:
    """``liqsignal alerts``: run until SIGINT/SIGTERM (or one round with ``--once``)."""
    setup_logging(str(getattr(args, "log_level", "INFO") or "INFO"))
    settings = load_settings(args.config)
    changes: dict[str, Any] = {}
    if getattr(args, "interval", None):
        changes["interval_s"] = float(args.interval)
    if getattr(args, "datadir", None):
        changes["datadir"] = str(args.datadir)
    if changes:
        settings = dataclasses.replace(
            settings, alerts=dataclasses.replace(settings.alerts, **changes)
        )
    if not settings.alerts.enabled:
        logger.warning("liqsignal.alerts.enabled is false; running anyway (explicit command)")
    _check_sendable(settings.alerts)  # before any exchange client or file is created
    provider = _provider_from_settings(settings)
    service = AlertService(
        provider,
        settings.alerts,
        markets=[m.market for m in settings.markets],
        freqtrade_config=settings.freqtrade_config,
    )
    service.sender = service._build_sender()

    async def main() -> int:
        try:
            if getattr(args, "once", False):
                res = await service.tick()
                reached = bool(getattr(service.sender, "_started", True))
                print(
                    f"liqsignal alerts: {len(res.events)} event(s), {res.sent} sent, "
                    f"{res.pending} pending, {res.failed} failed"
                    + (f"; refresh failed: {res.refresh_error}" if res.refresh_error else "")
                    + ("" if reached else "; Telegram could not be reached")
                )
                if not reached:
                    print(
                        "liqsignal alerts: error: Telegram could not be reached (see the log); "
                        "unsent alerts stay in the outbox",
                        file=sys.stderr,
                    )
                ok = res.refresh_error is None and reached and not res.pending and not res.failed
                return 0 if ok else 1
            await service.run()
            return 0
        finally:
            await service.aclose()
            aclose = getattr(provider, "aclose", None)
            if aclose is not None:
                with contextlib.suppress(Exception):
                    await aclose()

    return asyncio.run(main())
