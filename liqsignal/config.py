"""The settings of the whole ``liqsignal`` section of a Freqtrade config, validated in one place.

One pydantic model per part (``MapConfig`` for ``liqsignal.engine``, ``GuardConfig``,
``AlertConfig``, ``ForecastConfig``) under :class:`LiqsignalConfig`; :func:`load_settings` reads
a config (mapping or JSON path) and resolves what depends on the rest of the Freqtrade config
(the bot's exchange, pairs and timeframe) into one :class:`Settings`, which the strategy
(``liqsignal.freqtrade.liq_settings``), the alert service and every CLI command use.

Every key is typed and bounded; unknown keys are errors. A bad value raises ``ConfigError`` whose
message names the key path (``liqsignal.engine.n_bins``, ``liqsignal.alerts.chat_ids[0]``) and
what was expected. Messages are built here from the error's location and kind, never from
pydantic's text: they show a wrong number, but never a string, a list or a mapping (a token
pasted under the wrong key stays hidden), nor anything under ``token``, ``token_env`` or
``ccxt_config``. See ``docs/configuration.md``.
"""

from __future__ import annotations

import dataclasses
import json
import math
import re
import types
import typing
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Annotated, Any, ClassVar, Literal, Self, Union

import numpy as np
from pydantic import (
    AllowInfNan,
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    SecretStr,
    Strict,
    StringConstraints,
    ValidationError,
    model_validator,
)
from pydantic.fields import FieldInfo

from liqsignal import nb
from liqsignal.exceptions import ConfigError

__all__ = [
    "DEFAULT_LEVERAGES",
    "DEFAULT_LEVERAGE_WEIGHTS",
    "DEFAULT_OUTBOX_PATH",
    "MAX_BINS",
    "MAX_HEATMAP_CELLS",
    "PARAM_NAMES",
    "AlertConfig",
    "ForecastConfig",
    "GuardConfig",
    "LiqsignalConfig",
    "MapConfig",
    "MarketEntry",
    "Settings",
    "alert_settings",
    "file_settings",
    "load_settings",
    "read_config",
    "resolve_exchanges",
]

#: Leverage tiers modelled by default (10 tiers, 2x..125x).
DEFAULT_LEVERAGES: tuple[float, ...] = (2.0, 3.0, 5.0, 10.0, 20.0, 25.0, 50.0, 75.0, 100.0, 125.0)
#: Share of new notional opened at each default leverage (sums to 1); calibrated on the
#: development file (see README, "Calibration").
DEFAULT_LEVERAGE_WEIGHTS: tuple[float, ...] = (
    0.04,
    0.06,
    0.12,
    0.22,
    0.18,
    0.12,
    0.12,
    0.06,
    0.05,
    0.03,
)

#: An absolute step within this range of basis points of the first price is kept as it is.
AUTO_GRID_BPS: tuple[float, float] = (1.0, 50.0)
#: The relative step (bps) that replaces an absolute step outside ``AUTO_GRID_BPS``.
AUTO_GRID_STEP_BPS = 5.0

#: Order of the float parameters handed to the kernels (``MapConfig.kernel_params``): the
#: names of ``nb.Param``, whose values are their positions in the vector.
PARAM_NAMES = nb.PARAM_NAMES

#: Upper bound of the grid (bins per exchange and side): 1,000,000 bins hold 16 MB per exchange.
MAX_BINS = 1_000_000
#: Most heatmap cells (frames x rows) the ring buffer may hold: 5,000,000 cells are 80 MB.
MAX_HEATMAP_CELLS = 5_000_000
#: Where the alert outbox lives unless ``liqsignal.alerts.outbox`` says otherwise.
DEFAULT_OUTBOX_PATH = Path("user_data") / "liqsignal_alerts.sqlite"
#: The exchange whose formula and prices apply when the config names none.
DEFAULT_EXCHANGE = "binance"


# -- value types -------------------------------------------------------------------------------


@dataclass(frozen=True)
class Must:
    """What a value must be, in words, when its type and bounds do not say it (error text)."""

    text: str


def _wrap_one(v: Any) -> Any:
    """A single string (or number) where a list is expected means a list of one."""
    return [v] if isinstance(v, str | int) and not isinstance(v, bool) else v


#: A finite number (an integer is taken as a float; a bool, a string or NaN is an error).
Num = Annotated[float, Strict(), AllowInfNan(False)]
Int = Annotated[int, Strict()]
Bool = Annotated[bool, Strict()]
Text = Annotated[str, Strict(), StringConstraints(min_length=1, pattern=r"\S")]
Fraction = Annotated[float, Strict(), AllowInfNan(False), Field(ge=0.0, le=1.0)]
Leverage = Annotated[float, Strict(), AllowInfNan(False), Field(ge=1.0, le=1000.0)]
Weight = Annotated[float, Strict(), AllowInfNan(False), Field(ge=0.0)]
ChatId = Annotated[
    Annotated[int, Strict()] | Annotated[str, Strict(), StringConstraints(pattern=r"\S")],
    Must("an integer chat id or an @channel name"),
]
EnvName = Annotated[
    str,
    Strict(),
    StringConstraints(pattern=r"^[A-Za-z_][A-Za-z0-9_]{0,127}$"),
    Must(
        "the name of an environment variable (letters, digits and _, e.g. "
        "LIQSIGNAL_TELEGRAM_TOKEN), not a value; put the token itself in that variable"
    ),
]

#: Keys whose values are never shown in a message (nor anything below them).
SECRET_KEYS = frozenset({"token", "token_env", "ccxt_config"})


# -- error messages ----------------------------------------------------------------------------


def _key(item: str) -> str:
    return f".{item}" if re.fullmatch(r"[A-Za-z_][A-Za-z0-9_]*", item) else f"[{item!r}]"


def _unwrap(ann: Any) -> tuple[Any, list[Any], bool]:
    """``ann`` without ``Annotated`` and ``None`` members: (type, metadata, nullable)."""
    meta: list[Any] = []
    nullable = False
    while True:
        if typing.get_origin(ann) is Annotated:
            args = typing.get_args(ann)
            for m in args[1:]:  # a Field(...) in Annotated carries its bounds in its metadata
                meta.extend(m.metadata if isinstance(m, FieldInfo) else [m])
            ann = args[0]
            continue
        if typing.get_origin(ann) in (Union, types.UnionType):
            members = [a for a in typing.get_args(ann) if a is not type(None)]
            nullable = nullable or len(members) < len(typing.get_args(ann))
            if len(members) == 1:
                ann = members[0]
                continue
            ann = Union[tuple(members)]  # noqa: UP007 - a runtime union of the members
        return ann, meta, nullable


def _is_model(ann: Any) -> bool:
    return isinstance(ann, type) and issubclass(ann, BaseModel)


def _locate(model: type[BaseModel], loc: tuple[Any, ...]) -> tuple[str, Any, list[Any], bool, bool]:
    """Follow an error's ``loc`` through the schema: (path suffix, leaf type, its metadata,
    nullable, secret). Union member tags and validator names in ``loc`` are skipped."""
    path = ""
    ann: Any = model
    secret = False
    for item in loc:
        raw = ann
        ann, _, _ = _unwrap(ann)
        if _is_model(ann) and isinstance(item, str):
            path += _key(item)
            info = ann.model_fields.get(item)
            if info is None:  # an unknown key: its value is never shown
                return path, None, [], False, True
            secret = secret or item in SECRET_KEYS
            ann = Annotated[(info.annotation, *info.metadata)] if info.metadata else info.annotation
        elif typing.get_origin(ann) in (tuple, list) and isinstance(item, int):
            path += f"[{item}]"
            ann = typing.get_args(ann)[0]
        elif typing.get_origin(ann) in (dict, Mapping) and isinstance(item, str):
            path += f"[{item!r}]"
            ann = typing.get_args(ann)[1]
        else:  # a union member's tag or a validator's name, not part of the key path
            ann = raw
    leaf, meta, nullable = _unwrap(ann)
    return path, leaf, meta, nullable, secret


def _bounds(meta: list[Any]) -> str:
    lo = hi = None
    lo_open = hi_open = False
    for m in meta:
        for name in ("ge", "gt"):
            if getattr(m, name, None) is not None:
                lo, lo_open = getattr(m, name), name == "gt"
        for name in ("le", "lt"):
            if getattr(m, name, None) is not None:
                hi, hi_open = getattr(m, name), name == "lt"
    if lo is not None and hi is not None:
        return f" in {'(' if lo_open else '['}{lo:g}, {hi:g}{')' if hi_open else ']'}"
    if lo is not None:
        return f" {'>' if lo_open else '>='} {lo:g}"
    if hi is not None:
        return f" {'<' if hi_open else '<='} {hi:g}"
    return ""


def _expect(ann: Any, meta: list[Any], nullable: bool) -> str:
    """What a value of this type must be, in words (``an integer in [16, 1e+06] or null``)."""
    must = next((m.text for m in meta if isinstance(m, Must)), None)
    null = " or null" if nullable else ""
    if must is not None:
        return must + null
    origin = typing.get_origin(ann)
    if ann is bool:
        text = "true or false"
    elif ann is int:
        text = "an integer" + _bounds(meta)
    elif ann is float:
        text = "a number" + _bounds(meta)
    elif ann in (str, SecretStr):
        text = (
            "a non-empty string" if any(getattr(m, "min_length", 0) for m in meta) else "a string"
        )
    elif origin is Literal:
        text = f"one of {list(typing.get_args(ann))}"
    elif origin in (tuple, list):
        lo = next((m.min_length for m in meta if getattr(m, "min_length", None)), None)
        hi = next((m.max_length for m in meta if getattr(m, "max_length", None)), None)
        size = f" of {lo} to {hi} items" if lo and hi else ""
        text = ("a non-empty list" if lo and not hi else "a list") + size
        each = ", each " + _expect(*_unwrap(typing.get_args(ann)[0]))
        return text + null + each
    elif origin in (dict, Mapping) or _is_model(ann):
        text = "a mapping"
    else:
        text = "a valid value"
    return text + null


def key_table(section: type[BaseModel]) -> list[tuple[str, str, str]]:
    """(key, what its value must be, default as JSON) for every key of a section: the tables
    of ``docs/configuration.md`` (a test keeps the two in step)."""
    rows = []
    for name, info in section.model_fields.items():
        ann = Annotated[(info.annotation, *info.metadata)] if info.metadata else info.annotation
        leaf, meta, nullable = _unwrap(ann)
        default = info.get_default(call_default_factory=True)
        if isinstance(default, BaseModel):
            shown = "{}"
        else:
            shown = json.dumps(list(default) if isinstance(default, tuple) else default)
        rows.append((name, _expect(leaf, meta, nullable), shown))
    return rows


def _shown(value: Any, secret: bool) -> str:
    """A wrong value as a message may show it: a number as it is, anything else by its kind
    only (a token pasted under the wrong key must not reach a log)."""
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "a boolean" if secret else str(value).lower()
    if isinstance(value, int | float):
        return "a number" if secret else repr(value)
    if isinstance(value, str):
        return "a string"
    if isinstance(value, list | tuple):
        return "a list"
    if isinstance(value, Mapping):
        return "a mapping"
    return f"a {type(value).__name__}"


def _message(model: type[BaseModel], root: str, err: Mapping[str, Any]) -> str:
    loc = tuple(err["loc"])
    suffix, ann, meta, nullable, secret = _locate(model, loc)
    path = root + suffix
    kind = err["type"]
    if kind in ("value_error", "assertion_error"):
        error = err.get("ctx", {}).get("error", "")
        if isinstance(error, ConfigError):  # a nested section's own message, path and all
            return str(error)
        text = str(error)
        return text.replace("{path}", path) if "{path}" in text else f"{path}: {text}"
    if kind == "missing":
        return f"{path} is required"
    got = _shown(err.get("input"), secret)
    return f"{path} must be {_expect(ann, meta, nullable)}, got {got}"


def _known_keys(model: type[BaseModel], loc: tuple[Any, ...]) -> list[str]:
    _, ann, _, _, _ = _locate(model, loc)
    return sorted(ann.model_fields) if _is_model(ann) else []


def config_error(model: type[BaseModel], root: str, error: ValidationError) -> ConfigError:
    """One ``ConfigError`` for a pydantic error: the unknown keys of each section together,
    then each wrong key path once, input values hidden as ``_shown`` says."""
    lines: dict[str, None] = {}
    unknown: dict[tuple[Any, ...], list[Any]] = {}
    for err in error.errors(include_url=False):
        if err["type"] == "extra_forbidden":
            unknown.setdefault(tuple(err["loc"][:-1]), []).append(err["loc"][-1])
    for loc, names in unknown.items():
        parent = root + _locate(model, loc)[0]
        known = _known_keys(model, loc)
        lines[f"{parent}: unknown key(s) {sorted(names)}; known keys: {known}"] = None
    for err in error.errors(include_url=False):
        if err["type"] != "extra_forbidden":
            lines.setdefault(_message(model, root, err), None)
    msgs = list(lines)
    more = f" (and {len(msgs) - 3} more)" if len(msgs) > 3 else ""
    return ConfigError("; ".join(msgs[:3]) + more)


class _Section(BaseModel):
    """A config section: frozen, unknown keys forbidden, errors as ``ConfigError``."""

    model_config = ConfigDict(
        frozen=True, extra="forbid", allow_inf_nan=False, hide_input_in_errors=True
    )
    #: The key path of this section in a Freqtrade config (error messages start with it).
    PATH: ClassVar[str] = "liqsignal"

    def __init__(self, **data: Any) -> None:
        try:
            super().__init__(**data)
        except ValidationError as e:
            raise config_error(type(self), self.PATH, e) from None

    @classmethod
    def validate_section(cls, data: Any, path: str | None = None) -> Self:
        """Build from a config mapping (None: the defaults), errors naming ``path``."""
        path = path or cls.PATH
        if data is None:
            return cls()
        if not isinstance(data, Mapping):
            raise ConfigError(f"{path} must be a mapping, got {_shown(data, True)}")
        try:
            return cls.model_validate(dict(data))
        except ValidationError as e:
            msg = str(config_error(cls, cls.PATH, e))
        except ConfigError as e:  # raised by a nested section's __init__
            msg = str(e)
        raise ConfigError(msg if path == cls.PATH else msg.replace(cls.PATH, path)) from None

    def replace(self, **changes: Any) -> Self:
        """A copy with some fields changed (validated again)."""
        values = {k: getattr(self, k) for k in type(self).model_fields}
        return type(self)(**{**values, **changes})


# -- liqsignal.engine ----------------------------------------------------------------------------


class MapConfig(_Section):
    """Settings of one liquidation map (``liqsignal.engine``). Percentages are in percent of
    price (1.5 = 1.5 %). The bounds keep memory and work per bar bounded (bins, heatmap buffer,
    cluster buffer, EMA spans)."""

    PATH: ClassVar[str] = "liqsignal.engine"

    #: Exchange whose liquidation formula applies: binance, bybit, okx, hyperliquid, or
    #: another ccxt id (falls back to the Binance formula; ``LiquidationMap.formulas`` tells).
    #: In a Freqtrade config it defaults to the reference exchange (``resolve_exchanges``).
    exchange: Text = DEFAULT_EXCHANGE
    #: Market symbol, used to look up maintenance-margin tiers (ccxt style).
    symbol: Text = "BTC/USDT:USDT"
    #: Absolute grid step in quote currency (USD). Set to None to use ``step_bps``.
    step: Num | None = Field(default=50.0, ge=1e-12, le=1e9)
    #: Relative grid step in basis points (used when ``step`` is None).
    step_bps: Num | None = Field(default=None, ge=0.01, le=1000.0)
    #: An absolute ``step`` that is not within 1-50 bps of the market's first price (50 USD is
    #: 5 bps of BTC; it would be 2 % of ETH) is replaced by a 5 bps relative grid. False: keep
    #: the step as given.
    auto_grid: Bool = True
    #: Half-width of the grid around price, as a fraction of price (0.55: 2x levels fit).
    width: Num = Field(default=0.55, ge=1e-3, le=10.0)
    #: Number of bins; None derives it from ``width`` and the first price.
    n_bins: Int | None = Field(default=None, ge=16, le=MAX_BINS)
    #: Re-centre the grid when price strays this fraction of the bins from the centre.
    recentre_frac: Fraction = 0.05
    #: Leverage tiers modelled, and the share of new notional at each.
    leverages: tuple[Leverage, ...] = Field(default=DEFAULT_LEVERAGES, min_length=1, max_length=100)
    leverage_weights: tuple[Weight, ...] = Field(
        default=DEFAULT_LEVERAGE_WEIGHTS, min_length=1, max_length=100
    )
    #: Symbol's maximum leverage; None reads it from the tiers (tiers above it are dropped).
    max_leverage: Num | None = Field(default=None, ge=1.0, le=1000.0)
    #: Representative position notional (USD) that selects the maintenance-margin tier.
    position_notional: Num = Field(default=10_000.0, ge=1e-6, le=1e12)
    #: Taker fee rate, used where the exchange's formula includes it (OKX).
    taker_fee: Num = Field(default=0.0005, ge=0.0, le=0.1)
    #: Path of a ccxt-style leverage tiers JSON; None uses the bundled Binance file.
    tiers_file: Text | None = None
    #: Entries spread uniformly over this fraction of the bar's range around (H+L+C)/3.
    entry_spread: Fraction = 1.0
    #: Long share of new positions on a green candle (1 - it on a red one) without taker data.
    direction_long_share: Fraction = 0.55
    #: Long share of OI decreases; None: pro rata to the standing long/short notional.
    close_long_share: Fraction | None = None
    #: Turnover: this share of bar volume x price opens new positions while the same notional
    #: of standing positions closes pro rata (net change stays dOI). 0 disables. 1.0 (the
    #: default, chosen by ``scripts/select_defaults.py`` on the first block of every bundled
    #: dataset) opens as much notional as was traded; with ``close_relative`` the map then turns
    #: over with traded volume relative to open interest.
    churn_volume_share: Fraction = 1.0
    #: Share of a bar's new levels that the same bar's range already reached which is counted
    #: as liquidated within that bar (the order of prices inside a bar is unknown).
    intrabar_share: Fraction = 0.5
    #: True: OI decreases (and turnover closes) remove the same *fraction* of the map as of open
    #: interest (closes fall on all open positions, the map holds a part of them; the default).
    #: False: remove the USD amount itself, so a large OI drop can wipe a small map (the first
    #: version's rule; it ranks realized liquidations worse on every bundled dataset).
    close_relative: Bool = True
    #: Freshness half-life in hours (decay by wall time, so gaps decay correctly).
    half_life_hours: Num = Field(default=48.0, ge=1e-3, le=1e5)
    #: Volume-proxy mode (no OI): this share of bar volume x price counts as new notional.
    proxy_volume_share: Fraction = 0.02
    #: Band for ``liq_*_density_usd``, percent of price.
    density_band_pct: Num = Field(default=2.0, ge=1e-6, le=50.0)
    #: How far from price clusters and cascades are searched, percent of price.
    scan_range_pct: Num = Field(default=5.0, ge=1e-6, le=50.0)
    #: Smoothing half-width in bins before thresholding.
    smooth_half_bins: Int = Field(default=2, ge=0, le=10_000)
    #: A bin is dense when its smoothed notional exceeds this multiple of the scan mean (or,
    #: with ``contrast_window_pct``, of the mean of its own neighbourhood).
    cluster_threshold: Num = Field(default=2.0, ge=1e-9, le=1e6)
    #: Local contrast: compare each bin with the bins within this percent of price around it
    #: instead of the whole scan window (the default 2 %: with the turnover-driven map the scan
    #: mean put the nearest pocket at the scan's edge, 4.4 % away, and "armed" almost never
    #: fired). None: the scan window's mean (the first version).
    contrast_window_pct: Num | None = Field(default=2.0, ge=1e-6, le=50.0)
    #: Absolute USD floor for a cluster.
    cluster_min_usd: Num = Field(default=0.0, ge=0.0, le=1e15)
    #: Runs of dense bins separated by at most this many bins merge into one cluster.
    merge_gap_bins: Int = Field(default=2, ge=0, le=10_000)
    #: Cascade: next cluster counts when its near edge is within this percent of the previous
    #: cluster's far edge.
    cascade_gap_pct: Num = Field(default=0.6, ge=1e-6, le=50.0)
    #: Cascade depth cap.
    cascade_max_depth: Int = Field(default=10, ge=1, le=1000)
    #: Armed: nearest cluster within this percent of price ...
    armed_distance_pct: Num = Field(default=1.5, ge=1e-6, le=50.0)
    #: ... at least this multiple of its own recent (EMA) size ...
    armed_size_ratio: Num = Field(default=1.2, ge=1e-9, le=1e6)
    #: ... with OI at least this multiple of its EMA (skipped without OI) ...
    armed_oi_ratio: Num = Field(default=1.0, ge=1e-9, le=1e6)
    #: ... and funding on the crowded side >= this (longs: rate, shorts: -rate; skipped if NaN).
    armed_funding_min: Num = Field(default=0.0, ge=-1.0, le=1.0)
    #: Span in bars of the EMAs used for "against its own history".
    history_bars: Int = Field(default=168, ge=1, le=1_000_000)
    #: Flush: consumed notional at least this multiple of its EMA ...
    flush_ratio: Num = Field(default=4.0, ge=1e-9, le=1e6)
    #: ... and at least this many USD.
    flush_min_usd: Num = Field(default=0.0, ge=0.0, le=1e15)
    #: Heatmap history: one frame every this many seconds of data, at most ``heatmap_frames``
    #: frames (oldest dropped), ``heatmap_rows`` price rows of ``heatmap_bins_per_row`` bins;
    #: frames x rows at most ``MAX_HEATMAP_CELLS``.
    heatmap_every_s: Num = Field(default=3600.0, ge=1.0, le=1e8)
    heatmap_frames: Int = Field(default=2000, ge=1, le=50_000)
    heatmap_rows: Int = Field(default=240, ge=1, le=5_000)
    heatmap_bins_per_row: Int = Field(default=4, ge=1, le=10_000)

    @model_validator(mode="after")
    def _consistent(self) -> MapConfig:
        if self.step is None and self.step_bps is None:
            raise ValueError("set one of step (USD per bin) or step_bps")
        if self.step is not None and self.step_bps is not None:
            raise ValueError("set only one of step and step_bps, not both")
        if len(self.leverages) != len(self.leverage_weights):
            raise ValueError(
                "{path}.leverages and {path}.leverage_weights must be of equal length, got "
                f"{len(self.leverages)} and {len(self.leverage_weights)}"
            )
        if sum(self.leverage_weights) <= 0:
            raise ValueError("{path}.leverage_weights must not all be zero")
        if self.heatmap_frames * self.heatmap_rows > MAX_HEATMAP_CELLS:
            raise ValueError(
                "{path}.heatmap_frames x {path}.heatmap_rows must be at most "
                f"{MAX_HEATMAP_CELLS:,} cells, got {self.heatmap_frames} x {self.heatmap_rows}"
            )
        return self

    @classmethod
    def from_dict(cls, data: Mapping[str, Any] | None) -> MapConfig:
        """Build from a mapping (the ``liqsignal.engine`` config section); unknown keys fail."""
        return cls.validate_section(data)

    def to_dict(self) -> dict[str, Any]:
        """The settings as JSON-ready values (lists for the leverage tuples)."""
        return self.model_dump(mode="json")

    # --- what the kernels receive -------------------------------------------------------------
    @property
    def grid_mode(self) -> int:
        return 0 if self.step is not None else 1

    @property
    def grid_step(self) -> float:
        if self.step is not None:
            return float(self.step)
        assert self.step_bps is not None
        return math.log1p(self.step_bps / 1e4)

    def auto_grid_for(self, price: float) -> MapConfig:
        """This config, or (``auto_grid`` on and an absolute ``step`` outside
        ``AUTO_GRID_BPS`` of ``price``) the same with a relative grid of ``AUTO_GRID_STEP_BPS``:
        the 50 USD default suits BTC; ETH, SOL or DOGE get a relative step without tuning."""
        if not self.auto_grid or self.step is None or not (price > 0 and math.isfinite(price)):
            return self
        lo, hi = AUTO_GRID_BPS
        if lo <= self.step / price * 1e4 <= hi:
            return self
        return self.replace(step=None, step_bps=AUTO_GRID_STEP_BPS, n_bins=None)

    def bins_for_price(self, price: float) -> int:
        """Number of bins so that +-``width`` of ``price`` fits (or ``n_bins`` when set)."""
        if self.n_bins is not None:
            return self.n_bins
        if self.step is not None:
            n = int(math.ceil(2 * self.width * price / self.step))
        else:
            n = int(math.ceil(2 * math.log1p(self.width) / self.grid_step))
        return max(n + (n % 2), 16)

    def kernel_params(self) -> np.ndarray:
        """The float parameter vector, in ``PARAM_NAMES`` order (plain floats for the kernel)."""
        values = {
            "grid_mode": float(self.grid_mode),
            "grid_step": self.grid_step,
            "half_life_s": self.half_life_hours * 3600.0,
            "entry_spread": self.entry_spread,
            "direction_long_share": self.direction_long_share,
            "close_long_share": -1.0 if self.close_long_share is None else self.close_long_share,
            "proxy_volume_share": self.proxy_volume_share,
            "density_band": self.density_band_pct / 100.0,
            "scan_range": self.scan_range_pct / 100.0,
            "smooth_half_bins": float(self.smooth_half_bins),
            "cluster_threshold": self.cluster_threshold,
            "cluster_min_usd": self.cluster_min_usd,
            "merge_gap_bins": float(self.merge_gap_bins),
            "cascade_gap": self.cascade_gap_pct / 100.0,
            "cascade_max_depth": float(self.cascade_max_depth),
            "armed_distance": self.armed_distance_pct / 100.0,
            "armed_size_ratio": self.armed_size_ratio,
            "armed_oi_ratio": self.armed_oi_ratio,
            "armed_funding_min": self.armed_funding_min,
            "ema_alpha": 2.0 / (self.history_bars + 1.0),
            "flush_ratio": self.flush_ratio,
            "flush_min_usd": self.flush_min_usd,
            "recentre_frac": self.recentre_frac,
            "heatmap_every_s": self.heatmap_every_s,
            "heatmap_bins_per_row": float(self.heatmap_bins_per_row),
            "churn_volume_share": self.churn_volume_share,
            "intrabar_share": self.intrabar_share,
            "close_relative": 1.0 if self.close_relative else 0.0,
            "contrast_window": (
                0.0 if self.contrast_window_pct is None else self.contrast_window_pct / 100.0
            ),
        }
        return np.array([values[n] for n in PARAM_NAMES], dtype=np.float64)


# -- liqsignal.forecast --------------------------------------------------------------------------


class ForecastConfig(_Section):
    """Settings of the cascade-risk forecast (the ``liqsignal.forecast`` config section).

    See ``docs/forecast.md``: ``liq_*_cascade_prob`` is the probability that a cascade on that
    side starts within ``horizon_bars``; ``liq_*_armed`` is probability >= the threshold.
    """

    PATH: ClassVar[str] = "liqsignal.forecast"

    #: Add the forecast columns (and rewrite ``liq_*_armed`` from them) in ``add_liq_columns``.
    enabled: Bool = True
    #: Path of a model JSON written by ``liqsignal fit``; None: the bundled default model.
    model: Text | None = None
    #: Bars ahead the probability covers; must match the model's (a mismatch is an error).
    horizon_bars: Int = Field(default=6, ge=1, le=1000)
    #: Armed when the probability is at least this; None: the model's own threshold, chosen on
    #: its training data for ``target_precision``.
    armed_prob: Num | None = Field(default=None, gt=0.0, le=1.0)
    #: ``liqsignal fit``: precision the armed threshold is chosen for on the training data.
    target_precision: Num = Field(default=0.2, gt=0.0, le=1.0)

    @classmethod
    def from_dict(cls, data: Mapping[str, Any] | None) -> ForecastConfig:
        """Build from the ``liqsignal.forecast`` mapping; unknown keys fail, naming them."""
        return cls.validate_section(data)


# -- liqsignal.guards ----------------------------------------------------------------------------


class GuardConfig(_Section):
    """Settings of the risk guards (the ``liqsignal.guards`` config section).

    Distances are in percent of price (1.0 = 1 %).
    """

    PATH: ClassVar[str] = "liqsignal.guards"

    #: Master switch; False makes every guard answer "allow / unchanged".
    enabled: Bool = True
    #: Entry guard: refuse an entry when a pocket on its side is within ``entry_distance_pct``.
    entry_enabled: Bool = True
    entry_distance_pct: Num = Field(default=1.0, ge=0.0, le=100.0)
    #: ... and the pocket (nearest cluster) holds at least this much notional (USD).
    entry_min_usd: Num = Field(default=0.0, ge=0.0, le=1e15)
    #: Leverage guard: own liquidation price beyond the cascade's far end plus this buffer.
    leverage_enabled: Bool = True
    leverage_buffer_pct: Num = Field(default=1.0, ge=0.0, le=100.0)
    #: Entry guard: refuse when the side's cascade probability is above this (None: off). No
    #: probability (NaN: no model, too little history) follows ``on_stale``.
    entry_max_prob: Num | None = Field(default=None, ge=0.0, le=1.0)
    #: Leverage guard: leverage x cascade probability at most this (None: off); e.g. 0.5 caps
    #: a 10 % probability at 5x. No probability follows ``on_stale``.
    leverage_prob_budget: Num | None = Field(default=None, gt=0.0, le=1000.0)
    #: Leverage never goes below this (Binance's minimum is 1).
    min_leverage: Num = Field(default=1.0, ge=1.0, le=1000.0)
    #: Position notional (USD) that picks the maintenance-margin tier; None: the engine's
    #: ``position_notional``.
    position_notional: Num | None = Field(default=None, gt=0.0, le=1e12)
    #: Stop guard: act when a pocket on the position's side is armed ...
    stop_enabled: Bool = True
    #: ... with at least this armed score ...
    stop_min_score: Num = Field(default=0.0, ge=0.0, le=1e6)
    #: ... "tighten": stop just beyond the pocket's near edge; "exit": stop at the rate.
    stop_mode: Literal["tighten", "exit"] = "tighten"
    #: Tighten: the stop sits this far (percent of price) on the safe side of the pocket's edge.
    stop_buffer_pct: Num = Field(default=0.2, ge=0.0, le=50.0)
    #: The tightened stop is never closer to the rate than this (percent); "exit" uses it too.
    stop_min_distance_pct: Num = Field(default=0.1, gt=0.0, le=50.0)
    #: Tighten with no pocket on the side (armed by the forecast alone): the stop this far
    #: (percent) from the rate.
    stop_no_pocket_pct: Num = Field(default=1.0, gt=0.0, le=50.0)
    #: The last analysed candle is stale when it closed more than this many candles ago.
    max_age_candles: Num = Field(default=2.0, gt=0.0, le=1e6)
    #: Stale or missing data: "open" lets entries through with the proposed leverage;
    #: "closed" refuses entries and caps leverage at ``min_leverage``. Stops keep the strategy's
    #: own stop in both modes (no action is taken on data that is not there).
    on_stale: Literal["open", "closed"] = "open"
    #: Backtesting and hyperopt: log each decision at INFO (True) or at DEBUG (False, the
    #: default: a line costs about 1 ms in Freqtrade's log handlers, hundreds per backtest).
    #: Dry-run and live always log decisions at INFO.
    log_backtest_decisions: Bool = False

    @property
    def fail_open(self) -> bool:
        return self.on_stale == "open"

    @property
    def uses_forecast(self) -> bool:
        """True when a probability rule is on (the guards then read the forecast columns)."""
        return self.entry_max_prob is not None or self.leverage_prob_budget is not None

    @classmethod
    def from_dict(cls, data: Mapping[str, Any] | None) -> GuardConfig:
        """Build from the ``liqsignal.guards`` mapping; unknown keys fail, naming them."""
        return cls.validate_section(data)


# -- liqsignal.alerts ----------------------------------------------------------------------------


#: ``liqsignal.alerts`` keys that are event rules of the same name (``AlertConfig.rules``).
RULE_KEYS = (
    "band_pct",
    "escalate_usd_ratio",
    "escalate_depth_step",
    "min_usd",
    "max_distance_pct",
    "consumed_min_usd",
)


class AlertConfig(_Section):
    """The ``liqsignal.alerts`` section. Times in seconds unless named otherwise.

    ``chat_ids``: the only chats that get alerts and whose commands are answered.
    ``token``: bot token, only in an untracked config; else the variable ``token_env``.
    ``interval_s``: refresh and evaluation period. ``polling``: answer commands.
    ``pictures``: attach a heatmap PNG to armed/escalated alerts (``picture_bars`` of price).
    Event rules (``rules()``): ``cooldown_minutes``, ``band_pct``, ``escalate_usd_ratio``,
    ``escalate_depth_step``, ``min_usd``, ``max_distance_pct``, ``consumed_min_usd``.
    ``max_age_s``: an alert not delivered within this is dropped rather than sent late.
    ``ccxt_config``: exchange -> ccxt settings for the provider (e.g. a local replay's urls).
    """

    PATH: ClassVar[str] = "liqsignal.alerts"

    enabled: Bool = True
    chat_ids: Annotated[tuple[ChatId, ...], BeforeValidator(_wrap_one)] = ()
    #: Shown as ``**********`` in a repr; ``bot_token`` has the value.
    token: SecretStr | None = None
    token_env: EnvName = "LIQSIGNAL_TELEGRAM_TOKEN"
    base_url: Annotated[str, Strict()] | None = None
    base_file_url: Annotated[str, Strict()] | None = None
    outbox: Text = str(DEFAULT_OUTBOX_PATH)
    markets: Annotated[tuple[Text, ...], BeforeValidator(_wrap_one)] = ()
    timeframe: Annotated[str, Strict()] = "1h"
    datadir: Annotated[str, Strict()] = "user_data/data"
    interval_s: Num = Field(default=60.0, gt=0.0, le=86_400.0)
    misfire_grace_s: Num = Field(default=30.0, ge=0.0, le=86_400.0)
    polling: Bool = False
    pictures: Bool = True
    picture_bars: Int = Field(default=72, ge=1, le=10_000)
    #: Watch the venues' realized-liquidation streams (ccxt pro) of the markets: each event
    #: consumes the map at once, can send "consumed" and re-arm (docs/alerts.md).
    live_liquidations: Bool = False
    #: Sent alerts are deleted from the outbox after this many days, their pictures after
    #: ``outbox_photo_days`` (pending and failed alerts are kept).
    outbox_keep_days: Num = Field(default=30.0, ge=0.0, le=36_500.0)
    outbox_photo_days: Num = Field(default=2.0, ge=0.0, le=36_500.0)
    stale_notices: Bool = True
    stale_after_bars: Num = Field(default=2.0, gt=0.0, le=10_000.0)
    history_bars: Int = Field(default=1000, ge=1, le=100_000)
    cooldown_minutes: Num = Field(default=240.0, ge=0.0, le=525_600.0)
    band_pct: Num = Field(default=0.5, gt=0.0, le=100.0)
    escalate_usd_ratio: Num = Field(default=1.5, gt=1.0, le=1e6)
    escalate_depth_step: Int = Field(default=2, ge=1, le=1000)
    min_usd: Num = Field(default=0.0, ge=0.0, le=1e15)
    max_distance_pct: Num | None = Field(default=None, gt=0.0, le=100.0)
    consumed_min_usd: Num = Field(default=0.0, ge=0.0, le=1e15)
    max_age_s: Num | None = Field(default=3600.0, gt=0.0, le=30 * 86_400.0)
    disable_notification: Bool = False
    #: Alerts pending together (a burst) go out as one message of at most this many (1: one
    #: message per alert); alerts with a picture always go alone.
    batch_max: Int = Field(default=10, ge=1, le=100)
    #: Values may hold API keys: never in a repr or an error message.
    ccxt_config: dict[str, dict[str, Any]] | None = Field(default=None, repr=False)
    #: Longest wait for one venue's answer per round (None: half of ``interval_s``): a slow
    #: venue goes stale for the round instead of delaying every market.
    venue_timeout_s: Num | None = Field(default=None, gt=0.0, le=86_400.0)
    #: Per-market engine settings over ``liqsignal.engine``, e.g.
    #: ``{"ETH/USDT:USDT": {"step_bps": 5, "step": null}}``. Without them each market still
    #: gets a grid that suits its price (``engine.auto_grid``: a 5 bps relative grid when the
    #: absolute step does not suit it).
    market_engines: dict[str, dict[str, Any]] | None = None

    @property
    def bot_token(self) -> str | None:
        """The token set in the config (None: read the variable ``token_env``)."""
        return self.token.get_secret_value() if self.token is not None else None

    def rule_values(self) -> dict[str, Any]:
        """The event detector's rules as plain values (``liqsignal.alerts.events.
        EventRules.from_config`` builds them): the keys of ``RULE_KEYS`` by the same names,
        ``cooldown_minutes`` in seconds as ``cooldown_s``."""
        same = {k: getattr(self, k) for k in RULE_KEYS}
        return {"cooldown_s": self.cooldown_minutes * 60.0, **same}

    @classmethod
    def from_dict(cls, data: Mapping[str, Any] | None) -> AlertConfig:
        """Build from the ``liqsignal.alerts`` mapping; unknown keys fail, naming them."""
        return cls.validate_section(data)


# -- the whole section ---------------------------------------------------------------------------


def _exchange_ids(v: Any) -> Any:
    return tuple(_wrap_one(v)) if isinstance(v, list | tuple | str) else v


class LiqsignalConfig(_Section):
    """The ``liqsignal`` section of a Freqtrade config, as written (``Settings`` resolves it)."""

    PATH: ClassVar[str] = "liqsignal"

    engine: MapConfig = MapConfig()
    guards: GuardConfig = GuardConfig()
    alerts: AlertConfig = AlertConfig()
    #: Exchanges whose maps are aggregated (ccxt ids); see ``resolve_exchanges`` for the order.
    exchanges: Annotated[
        tuple[Text, ...] | None, BeforeValidator(_exchange_ids), Field(min_length=1)
    ] = None
    forecast: ForecastConfig = ForecastConfig()

    @classmethod
    def from_dict(cls, data: Mapping[str, Any] | None) -> LiqsignalConfig:
        """Build from the ``liqsignal`` mapping (None: every default)."""
        return cls.validate_section(data)


#: Keys of the ``liqsignal`` section of a Freqtrade config.
SECTION_KEYS: tuple[str, ...] = tuple(LiqsignalConfig.model_fields)


def resolve_exchanges(listed: tuple[str, ...] | None, own: str | None) -> tuple[str, ...]:
    """The exchanges of the maps, in order; the first is the reference (its price is the
    map's; the kernel falls back to the next exchange with a bar).

    The rule, the same for the strategy, the alert service and the CLI: the bot's own exchange
    (Freqtrade's ``exchange.name``) first, added when ``liqsignal.exchanges`` does not list it,
    then ``liqsignal.exchanges`` in the order written; ids lower-cased, repeats dropped. No
    ``exchange.name``: the list as written; neither: ``binance``.
    """
    names = [n.strip().lower() for n in listed or ()]
    if own:
        names = [own.strip().lower(), *names]
    return tuple(dict.fromkeys(names)) or (DEFAULT_EXCHANGE,)


# -- resolved settings ---------------------------------------------------------------------------


@dataclass(frozen=True)
class MarketEntry:
    """One market and the exchanges its map aggregates."""

    market: str
    exchanges: tuple[str, ...]
    timeframe: str = "1h"


@dataclass(frozen=True)
class Settings:
    """The ``liqsignal`` section resolved against the rest of a Freqtrade config: what the
    strategy, the alert service and the CLI read (``load_settings``)."""

    #: The engine; ``exchange`` defaults to the reference exchange (``exchanges[0]``).
    engine: MapConfig = field(default_factory=MapConfig)
    guards: GuardConfig = field(default_factory=GuardConfig)
    #: Keys set explicitly under ``liqsignal.guards`` (they win over hyperoptable parameters).
    guard_keys: frozenset[str] = frozenset()
    #: ``resolve_exchanges``: the bot's own exchange first (the reference); one entry: the
    #: single-exchange columns, several: the aggregated ones (``add_liq_columns``).
    exchanges: tuple[str, ...] = (DEFAULT_EXCHANGE,)
    forecast: ForecastConfig = field(default_factory=ForecastConfig)
    alerts: AlertConfig = field(default_factory=AlertConfig)
    #: ``liqsignal.alerts.markets`` or else ``exchange.pair_whitelist``, each with ``exchanges``.
    markets: tuple[MarketEntry, ...] = ()
    #: Engine settings per market (``engine`` with ``alerts.market_engines`` over it).
    engines: Mapping[str, MapConfig] = field(default_factory=dict)
    #: The whole config read (it may hold exchange keys: kept out of the repr).
    freqtrade_config: Mapping[str, Any] = field(default_factory=dict, repr=False)

    @property
    def ccxt_config(self) -> Mapping[str, Any] | None:
        return self.alerts.ccxt_config

    def with_alerts(self, **changes: Any) -> Settings:
        """A copy with some ``liqsignal.alerts`` keys changed (validated again)."""
        return dataclasses.replace(self, alerts=self.alerts.replace(**changes))

    @classmethod
    def of_engine(cls, engine: MapConfig) -> Settings:
        """Defaults around a given engine (a ``MapConfig`` where a config is expected)."""
        return cls(engine=engine, exchanges=(engine.exchange,))


def read_config(config: Mapping[str, Any] | str | Path | None) -> Mapping[str, Any]:
    """A config as a mapping: a mapping as it is, a path read as JSON (None: empty)."""
    if config is None:
        return {}
    if isinstance(config, Mapping):
        return config
    if not isinstance(config, str | Path):
        raise ConfigError(
            f"a config must be a mapping or a JSON file path, got {_shown(config, True)}"
        )
    path = Path(config)
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise ConfigError(f"config file {str(path)!r} not found") from None
    except OSError as e:
        raise ConfigError(f"config file {str(path)!r} cannot be read: {e.strerror}") from None
    except json.JSONDecodeError as e:
        raise ConfigError(f"config file {str(path)!r} is not valid JSON: {e}") from None
    if not isinstance(data, Mapping):
        raise ConfigError(f"config file {str(path)!r} must hold a JSON object")
    return data


def load_settings(
    config: Mapping[str, Any] | str | Path | None, *, in_freqtrade: bool = False
) -> Settings:
    """Read and validate the ``liqsignal`` section of a Freqtrade-style config (a mapping or a
    JSON path; a missing section means the defaults) and resolve it against the bot's
    ``exchange`` (name, ``pair_whitelist``) and ``timeframe``. Raises ``ConfigError`` naming
    the key path on bad input.

    ``exchange`` is Freqtrade's own section: read standalone, one that is not a mapping is an
    error; ``in_freqtrade`` (Freqtrade validated it already) ignores it rather than turning
    the guards off over a section liqsignal does not own."""
    data = read_config(config)
    section = LiqsignalConfig.from_dict(data.get("liqsignal") or None)
    exchange = data.get("exchange")
    if exchange is None or (in_freqtrade and not isinstance(exchange, Mapping)):
        exchange = {}
    if not isinstance(exchange, Mapping):
        raise ConfigError(
            'exchange must be a mapping (Freqtrade\'s section, e.g. {"name": "binance"}), got '
            f"{_shown(exchange, True)}; list the venues under liqsignal.exchanges"
        )
    own = exchange.get("name")
    exchanges = resolve_exchanges(section.exchanges, str(own) if own else None)
    engine = section.engine
    if "exchange" not in engine.model_fields_set:
        engine = engine.replace(exchange=exchanges[0])  # the reference venue picks the formula
    alerts = section.alerts
    markets = alerts.markets or tuple(str(p) for p in exchange.get("pair_whitelist") or ())
    timeframe = alerts.timeframe or str(data.get("timeframe") or "1h")
    per = dict(alerts.market_engines or {})
    unknown = sorted(set(per) - set(markets))
    if unknown:
        raise ConfigError(
            f"liqsignal.alerts.market_engines: {unknown} not among the markets {list(markets)}"
        )
    engines = {
        m: MapConfig.validate_section(
            {**_engine_keys(engine), **per[m]}, f"liqsignal.alerts.market_engines[{m!r}]"
        )
        if m in per
        else engine
        for m in markets
    }
    return Settings(
        engine=engine,
        guards=section.guards,
        guard_keys=frozenset(section.guards.model_fields_set),
        exchanges=exchanges,
        forecast=section.forecast,
        alerts=alerts,
        markets=tuple(MarketEntry(m, exchanges, timeframe) for m in markets),
        engines=engines,
        freqtrade_config=data,
    )


def _engine_keys(engine: MapConfig) -> dict[str, Any]:
    return {k: getattr(engine, k) for k in type(engine).model_fields}


def file_settings(data: Mapping[str, Any]) -> Settings:
    """The settings of a CLI ``--config`` file: a Freqtrade config (it has a ``liqsignal``
    key), a bare ``liqsignal`` section (its keys among ``SECTION_KEYS``), or a bare engine
    section (what ``liqsignal calibrate`` writes)."""
    if "liqsignal" in data:
        return load_settings(data)
    if data and set(data) <= set(SECTION_KEYS):
        return load_settings({"liqsignal": data})
    return Settings.of_engine(MapConfig.from_dict(data))


def alert_settings(config: Mapping[str, Any] | str | Path | None) -> Settings:
    """``load_settings`` for the alert service, which needs at least one market."""
    settings = load_settings(config)
    if not settings.markets:
        raise ConfigError(
            "liqsignal.alerts.markets is empty and exchange.pair_whitelist names no pair: "
            'list the markets to watch, e.g. ["BTC/USDT:USDT"]'
        )
    return settings
