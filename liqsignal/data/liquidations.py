"""Realized liquidations: the event type, each venue's side convention, and their store.

Public API
==========

Event frames (:data:`EVENT_COLUMNS`, one row per forced order)::

    timestamp  datetime64[ms, UTC]   when the venue executed / reported it
    exchange   str                   liqsignal exchange name (binance, bybit, okx, gate, ...)
    symbol     str                   ccxt unified symbol, e.g. "BTC/USDT:USDT"
    side       "long" | "short"      the side that was LIQUIDATED (not the forced order's side)
    price      float                 fill / average / bankruptcy price the venue reports
    amount     float                 base units (contracts * contractSize)
    usd        float                 quote value (amount * price when the venue gives none)
    id         str                   the venue's id, "" when it has none

- :func:`normalise_side` ``(exchange_id, raw_side) -> "long" | "short"``: ccxt's unified
  liquidation ``side`` keeps each venue's own meaning; this maps it (table in its docstring).
- :func:`events_from_ccxt` ``(exchange_id, liquidations) -> DataFrame``: ccxt liquidation
  structures (``fetch_liquidations`` / ``watch_liquidations*``) to an event frame, checked;
  a bad row raises :class:`InputError` naming the row and the field.
- :func:`make_events` ``(frame, exchange=..., symbol=...)``: check and normalise a frame that
  already has the event columns (``exchange``/``symbol``/``id`` may be given as arguments).

:class:`LiquidationStore` ``(datadir)``, files per exchange and symbol::

    store.append_events(exchange, events) -> int           # rows really added (duplicates dropped)
    store.read_events(exchange, symbol, start=None, end=None) -> DataFrame
    store.record_coverage(exchange, symbol, start, end)    # the source was listening / fetched
    store.record_gap(exchange, symbol, start, end)         # the source was down (or unsure)
    store.spans(exchange, symbol) -> DataFrame             # kind ("covered"|"gap"), start, end
    store.write_bars(exchange, symbol, timeframe, bars) -> MergeResult   # per-bar sources
    store.bars(exchange, symbol, timeframe, start=None, end=None) -> DataFrame
    store.has_data(exchange, symbol) -> bool
    realized_from_store(datadir, exchange, symbol, timeframe) -> DataFrame
        # date, realized_long_usd, realized_short_usd (for evaluation / calibration)

``symbol`` in the store methods may be a list of symbols for ``record_coverage`` / ``record_gap``
(one stream connection serves many). Times are anything ``pd.Timestamp`` reads, or epoch ms.

**What a bar says.** ``bars()`` answers ``date, long_liquidated_usd, short_liquidated_usd, events``
on a regular grid. A bar built from events is a number (0 when nothing was liquidated) only when
the bar ``[date, date + tf)`` lies entirely inside a recorded *covered* span ``[start, end)`` and
meets no *gap* ``[start, end]`` (closed: a gap ending exactly at a bar's start, or a zero-length
one, still marks that bar); otherwise it is NaN ("unknown", never 0). So a stream must call
``record_coverage(exchange, symbols, connected_at, now)`` as it runs (e.g. once a second with the
same ``connected_at``; spans are merged) and ``record_gap(...)`` for the time it was disconnected;
a history download records the window it fetched. Bars from per-bar sources (``write_bars``: Gate's
contract_stats, an imported CoinGlass file) are taken as they are (``events`` NaN: unknown count)
and win over bars built from events on the same date, except inside a gap. Binance's stream sends
at most one liquidation per symbol per 1000 ms: its bars are a lower bound.

Layout (in the sub-folder Freqtrade does not scan, as for taker buy volume: a file named
``<PAIR>-1h-liquidations.feather`` directly in ``futures/`` makes ``freqtrade list-data`` and
``convert-data`` fail, they parse every ``<PAIR>-<tf>-<type>`` name into a ``CandleType``)::

    <datadir>/<exchange>/futures/liqsignal/<PAIR>-<tf>-liquidations.feather
        date, long_liquidated_usd, short_liquidated_usd, events      (per-bar sources)
    <datadir>/<exchange>/futures/liqsignal/<PAIR>-liquidation_events.feather
        the event columns above
    <datadir>/<exchange>/futures/liqsignal/<PAIR>-liquidation_spans.feather
        kind, start, end   (covered / gap intervals, merged per kind)

Writes: read-merge-write under an exclusive lock (``fcntl.flock`` on ``.<file>.lock``, so two
processes appending at once lose nothing), atomic (:func:`liqsignal.data.store.write_atomic`).
Duplicates are dropped keeping the stored row: the same ``id`` when the venue gives ids, else the
same ``timestamp, side, price, amount``; events are kept sorted by time whatever order they came
in. A file that cannot be read raises :class:`CorruptFileError` and is never overwritten.
"""

from __future__ import annotations

import contextlib
import math
import os
from collections.abc import Iterable, Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from liqsignal.data.store import (
    FeatherStore,
    MergeResult,
    pair_to_filename,
    read_checked_feather,
    write_atomic,
)
from liqsignal.exceptions import ConfigError, CorruptFileError, InputError

try:  # pragma: no cover - always present on Linux / macOS
    import fcntl
except ImportError:  # pragma: no cover - Windows: no cross-process lock, atomic writes remain
    fcntl = None  # type: ignore[assignment]

__all__ = [
    "BAR_COLUMNS",
    "EVENT_COLUMNS",
    "REALIZED_COLUMNS",
    "SIDE_MEANING",
    "LiquidationStore",
    "events_from_ccxt",
    "make_events",
    "normalise_side",
    "read_bars_file",
    "read_events_file",
    "realized_columns",
    "realized_from_store",
]

EVENT_COLUMNS = ["timestamp", "exchange", "symbol", "side", "price", "amount", "usd", "id"]
BAR_COLUMNS = ["date", "long_liquidated_usd", "short_liquidated_usd", "events"]
SPAN_COLUMNS = ["kind", "start", "end"]
SIDES = ("long", "short")

_TF_UNITS = {"s": 1_000, "m": 60_000, "h": 3_600_000, "d": 86_400_000, "w": 604_800_000}


def _tf_ms(timeframe: str) -> int:
    unit, amount = timeframe[-1:], timeframe[:-1]
    if unit not in _TF_UNITS or not amount.isdigit() or int(amount) <= 0:
        raise ConfigError(f"timeframe: expected like 5m, 1h, 1d, got {timeframe!r}")
    return int(amount) * _TF_UNITS[unit]


# -- sides ------------------------------------------------------------------------------------
#: How ccxt 4.5's unified liquidation ``side`` reads per venue (checked in ccxt's parsers):
#: "order": the side of the forced order (sell closes a long), "position": the side of the
#: position liquidated (buy = long).
SIDE_MEANING: dict[str, str] = {
    "binance": "order",  # binance(usdm).parse_ws_liquidation: 'S' of forceOrder, lower-cased
    "okx": "order",  # okx.parse_ws_liquidation: details[0].side (posSide is the position)
    "htx": "order",  # htx.parse_liquidation: 'direction' / 'side' (position_side is given too)
    "bybit": "position",  # bybit.parse_ws_liquidation: allLiquidation 'S' is the position side
    "gate": "position",  # gate.parse_liquidation: 'buy' when position size > 0 (a long)
}
#: venues whose ccxt ``side`` cannot tell the direction (see :func:`normalise_side`)
NO_SIDE: dict[str, str] = {
    "bitfinex": "ccxt's side is Bitfinex's IS_MATCH flag, not a direction: use the sign of the "
    "position amount (info[5]), as events_from_ccxt does",
    "deribit": "ccxt's deribit fetch_liquidations returns settlement 'bankruptcy' records "
    "without side or price, not liquidation orders",
}
_ALIASES = {"binanceusdm": "binance", "gateio": "gate", "huobi": "htx"}
#: venues whose linear perpetual contracts are one base unit (ccxt contractSize 1)
CONTRACTS_ARE_BASE = frozenset({"binance", "bybit", "hyperliquid"})


def normalise_side(exchange_id: str, raw_side: str | None) -> str:
    """The side that was liquidated, ``"long"`` or ``"short"``, from ccxt's ``side`` on a venue.

    ============  ========================  ===========================================
    venue         ccxt ``side`` is           ``"sell"`` / ``"buy"`` means
    ============  ========================  ===========================================
    binance       forced order side         sell: long liquidated, buy: short
    okx           forced order side         sell: long liquidated, buy: short
    htx           forced order side         sell: long liquidated, buy: short
    bybit         position side (Bybit's    buy: long liquidated, sell: short
                  ``allLiquidation`` ``S``)
    gate          sign of position size     buy (size > 0): long liquidated, sell: short
    ============  ========================  ===========================================

    ``"long"`` / ``"short"`` are accepted as they are on every venue. Bitfinex and Deribit raise
    :class:`ConfigError` (their ccxt ``side`` says nothing about the direction). An unknown
    venue or side raises ConfigError / InputError naming it.
    """
    ex = _ALIASES.get(exchange_id, exchange_id)
    side = str(raw_side).strip().lower() if raw_side is not None else ""
    if side in SIDES:
        return side
    if ex in NO_SIDE:
        raise ConfigError(f"exchange {exchange_id!r}: {NO_SIDE[ex]}")
    meaning = SIDE_MEANING.get(ex)
    if meaning is None:
        raise ConfigError(
            f"exchange: no liquidation side convention known for {exchange_id!r}; "
            f"known: {', '.join(sorted(SIDE_MEANING))}"
        )
    if side not in ("buy", "sell"):
        raise InputError(
            f"{exchange_id} liquidation side: expected buy, sell, long or short, got {raw_side!r}"
        )
    if meaning == "order":
        return "long" if side == "sell" else "short"
    return "long" if side == "buy" else "short"


# -- event frames -----------------------------------------------------------------------------
def _empty_events() -> pd.DataFrame:
    return pd.DataFrame(
        {
            "timestamp": pd.Series([], dtype="datetime64[ms, UTC]"),
            "exchange": pd.Series([], dtype="object"),
            "symbol": pd.Series([], dtype="object"),
            "side": pd.Series([], dtype="object"),
            "price": pd.Series([], dtype="float64"),
            "amount": pd.Series([], dtype="float64"),
            "usd": pd.Series([], dtype="float64"),
            "id": pd.Series([], dtype="object"),
        }
    )


def _finite(value: Any) -> float | None:
    if value is None or isinstance(value, bool):
        return None
    try:
        f = float(value)
    except (TypeError, ValueError):
        return None
    return f if math.isfinite(f) else None


def _side_from_ccxt(ex: str, item: Mapping[str, Any], where: str) -> str:
    info = item.get("info")
    if ex == "bitfinex":  # info = [ "pos", id, mts, _, market, AMOUNT, base price, _, ...]
        amount = _finite(info[5]) if isinstance(info, list | tuple) and len(info) > 5 else None
        if amount is None or amount == 0:
            raise InputError(f"{where}: field 'info[5]' (position amount) missing or zero")
        return "long" if amount > 0 else "short"
    if ex == "okx" and isinstance(info, Mapping):  # posSide names the position when not net
        details = info.get("details")
        if isinstance(details, list) and details and isinstance(details[0], Mapping):
            pos = str(details[0].get("posSide", "")).lower()
            if pos in SIDES:
                return pos
    if ex == "htx" and isinstance(info, Mapping):
        pos = str(info.get("position_side", "")).lower()
        if pos in SIDES:
            return pos
    raw = item.get("side")
    if raw is None or raw == "":
        raise InputError(f"{where}: field 'side' is missing")
    try:
        return normalise_side(ex, raw)
    except InputError as e:
        raise InputError(f"{where}: field 'side': {e}") from e


def _event_id(ex: str, item: Mapping[str, Any]) -> str:
    info = item.get("info")
    value: Any = item.get("id")
    if value in (None, "") and isinstance(info, Mapping):
        for key in ("id", "order_id", "orderId", "execId", "query_id"):
            if info.get(key) not in (None, ""):
                value = info[key]
                break
    if (
        value in (None, "")
        and ex == "bitfinex"
        and isinstance(info, list | tuple)
        and len(info) > 1
    ):
        value = info[1]
    return "" if value in (None, "") else str(value)


def events_from_ccxt(
    exchange_id: str,
    liquidations: Sequence[Mapping[str, Any]],
    symbol: str | None = None,
    markets: Mapping[str, Mapping[str, Any]] | None = None,
) -> pd.DataFrame:
    """Event frame from ccxt's unified liquidation structures; InputError naming row and field.

    ``amount`` is ``baseValue``, else ``contracts * contractSize``. ccxt 4.5's venue parsers
    call ``safe_liquidation`` without the market, which blanks ``contractSize`` (and so
    ``baseValue``) in every WebSocket liquidation: the size is then taken from ``markets``
    (ccxt's ``exchange.markets``) by symbol. Without it, ``contracts`` count as base units only
    on venues whose linear contracts are 1 base unit (binance, bybit, hyperliquid); elsewhere
    (OKX: 0.01 BTC per contract) the row is refused. ``usd`` is ``quoteValue``, else
    ``amount * price``. ``symbol`` fills rows whose ``symbol`` is missing. Rows must have a
    timestamp, a positive price and amount, and a side (see :func:`normalise_side`; Bitfinex
    from the position amount's sign, OKX / HTX from the position side in ``info`` when present).
    """
    ex = _ALIASES.get(exchange_id, exchange_id)
    if ex == "deribit":
        raise ConfigError(f"exchange {exchange_id!r}: {NO_SIDE['deribit']}")
    if not isinstance(liquidations, Sequence) or isinstance(liquidations, str | bytes):
        raise InputError(
            f"{exchange_id} liquidations: expected a list, got {type(liquidations).__name__}"
        )
    rows: list[dict[str, Any]] = []
    for i, item in enumerate(liquidations):
        where = f"{exchange_id} liquidation row {i}"
        if not isinstance(item, Mapping):
            raise InputError(
                f"{where}: expected a ccxt liquidation dict, got {type(item).__name__}"
            )
        ts = item.get("timestamp")
        if isinstance(ts, bool) or not isinstance(ts, int | float) or not math.isfinite(ts):
            raise InputError(f"{where}: field 'timestamp' is missing or not epoch ms: {ts!r:.40}")
        sym = item.get("symbol") or symbol
        if not sym or not isinstance(sym, str):
            raise InputError(f"{where}: field 'symbol' is missing")
        price = _finite(item.get("price"))
        if price is None or price <= 0:
            raise InputError(f"{where}: field 'price' must be > 0, got {item.get('price')!r:.40}")
        amount = _finite(item.get("baseValue"))
        if amount is None:
            contracts = _finite(item.get("contracts"))
            size = _finite(item.get("contractSize"))
            if size is None and markets is not None:
                size = _finite((markets.get(sym) or {}).get("contractSize"))
            if size is None and ex in CONTRACTS_ARE_BASE:
                size = 1.0
            if contracts is not None and size is None:
                raise InputError(
                    f"{where}: field 'contractSize' is empty and {sym} is not in markets: "
                    f"cannot turn {contracts} contracts into base units (pass markets=)"
                )
            if contracts is not None and size is not None:
                amount = contracts * size
        if amount is None or amount <= 0:
            raise InputError(
                f"{where}: field 'baseValue' / 'contracts' must give an amount > 0, got "
                f"baseValue={item.get('baseValue')!r}, contracts={item.get('contracts')!r}"
            )
        usd = _finite(item.get("quoteValue"))
        if usd is None or usd <= 0:
            usd = amount * price
        rows.append(
            {
                "timestamp": int(ts),
                "exchange": ex,
                "symbol": sym,
                "side": _side_from_ccxt(ex, item, where),
                "price": price,
                "amount": amount,
                "usd": usd,
                "id": _event_id(ex, item),
            }
        )
    if not rows:
        return _empty_events()
    return make_events(pd.DataFrame(rows), what=f"{exchange_id} liquidations")


def make_events(
    frame: pd.DataFrame,
    exchange: str | None = None,
    symbol: str | None = None,
    what: str = "liquidation events",
) -> pd.DataFrame:
    """Check a frame with the event columns and return it normalised (types, order, ``id``).

    ``exchange`` / ``symbol`` fill (or must match) those columns; ``id`` may be absent (""), and
    ``usd`` may be absent when ``price`` and ``amount`` are given (``amount * price``). Sides must
    already be ``long`` / ``short``. InputError names the column and the first bad row.
    """
    if not isinstance(frame, pd.DataFrame):
        raise InputError(f"{what}: expected a pandas DataFrame, got {type(frame).__name__}")
    df = frame.copy()
    for name, value in (("exchange", exchange), ("symbol", symbol)):
        if value is None:
            continue
        if name in df.columns:
            bad = df[name].astype(str) != value
            if bad.any():
                row = int(bad.to_numpy().argmax())
                raise InputError(
                    f"{what}: column {name!r} is {df[name].iloc[row]!r} at row {row}, "
                    f"expected {value!r}"
                )
        df[name] = value
    if "id" not in df.columns:
        df["id"] = ""
    if "usd" not in df.columns and {"price", "amount"}.issubset(df.columns):
        df["usd"] = pd.to_numeric(df["price"], errors="coerce") * pd.to_numeric(
            df["amount"], errors="coerce"
        )
    missing = [c for c in EVENT_COLUMNS if c not in df.columns]
    if missing:
        raise InputError(
            f"{what}: missing column(s) {missing}; expected {EVENT_COLUMNS}, "
            f"got {list(frame.columns)}"
        )
    df = df.loc[:, EVENT_COLUMNS].reset_index(drop=True)
    if df.empty:
        return _empty_events()
    df["timestamp"] = to_utc_ms(df["timestamp"], f"{what}: column 'timestamp'")
    for col in ("exchange", "symbol"):
        bad = df[col].isna() | (df[col].astype(str) == "")
        if bad.any():
            raise InputError(
                f"{what}: column {col!r} is empty at row {int(bad.to_numpy().argmax())}"
            )
        df[col] = df[col].astype(str)
    side = df["side"].astype(str).str.lower()
    bad = ~side.isin(SIDES)
    if bad.any():
        row = int(bad.to_numpy().argmax())
        raise InputError(
            f"{what}: column 'side' must be 'long' or 'short' (the side liquidated), "
            f"got {df['side'].iloc[row]!r} at row {row}"
        )
    df["side"] = side
    for col in ("price", "amount", "usd"):
        values = pd.to_numeric(df[col], errors="coerce").astype("float64")
        bad = ~np.isfinite(values.to_numpy()) | (values.to_numpy() <= 0)
        if bad.any():
            row = int(bad.argmax())
            raise InputError(
                f"{what}: column {col!r} must be a number > 0, "
                f"got {df[col].iloc[row]!r} at row {row}"
            )
        df[col] = values
    ids = df["id"]
    df["id"] = ids.where(ids.notna(), "").astype(str)
    return df


def to_utc_ms(values: pd.Series, what: str) -> pd.Series:
    """Epoch ms or date strings as datetime64[ms, UTC]; InputError naming ``what`` and the
    row of a value that is not a time or is empty."""
    try:
        if pd.api.types.is_numeric_dtype(values):
            out = pd.to_datetime(values, unit="ms", utc=True)
        else:
            out = pd.to_datetime(values, utc=True, format="mixed")
    except (ValueError, TypeError, OverflowError) as e:
        raise InputError(f"{what} has a value that is not a time: {e}") from e
    bad = out.isna()
    if bad.any():
        raise InputError(f"{what} is empty at row {int(bad.to_numpy().argmax())}")
    return out.dt.as_unit("ms")


def _ts(value: Any, what: str) -> pd.Timestamp:
    try:
        if isinstance(value, int | float) and not isinstance(value, bool):
            ts = pd.Timestamp(int(value), unit="ms", tz="UTC")
        else:
            ts = pd.Timestamp(value)
            ts = ts.tz_localize("UTC") if ts.tzinfo is None else ts.tz_convert("UTC")
    except (ValueError, TypeError) as e:
        raise InputError(f"{what}: not a time: {value!r}") from e
    if ts is pd.NaT:
        raise InputError(f"{what}: not a time: {value!r}")
    return ts.as_unit("ms")


def _dedupe(df: pd.DataFrame) -> pd.DataFrame:
    """Drop repeated events keeping the first: same id, else same time, side, price, amount."""
    if df.empty:
        return df
    has_id = (df["id"] != "").to_numpy()
    dup = np.zeros(len(df), dtype=bool)
    if has_id.any():
        dup[has_id] = df.loc[has_id, "id"].duplicated(keep="first").to_numpy()
    if (~has_id).any():
        keys = df.loc[~has_id, ["timestamp", "side", "price", "amount"]]
        dup[~has_id] = keys.duplicated(keep="first").to_numpy()
    return df.loc[~dup]


# -- store ------------------------------------------------------------------------------------
@contextlib.contextmanager
def _locked(path: Path) -> Iterator[None]:
    path.parent.mkdir(parents=True, exist_ok=True)
    if fcntl is None:  # pragma: no cover
        yield
        return
    lock = path.parent / f".{path.name}.lock"
    with open(lock, "a+") as fh:
        fcntl.flock(fh.fileno(), fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(fh.fileno(), fcntl.LOCK_UN)


def _read_feather(path: Path, columns: list[str]) -> pd.DataFrame | None:
    """A stored file's frame (None when absent), its checksum checked as the store does."""
    if not path.exists():
        return None
    raw = read_checked_feather(path)
    missing = [c for c in columns if c not in raw.columns]
    if missing:
        raise CorruptFileError(f"{path}: missing column(s) {missing}; file left in place")
    return raw


def _read_checked(path: Path, columns: list[str], empty: Any, normalise: Any) -> pd.DataFrame:
    """``normalise(raw, str(path))`` of a stored file, ``empty()`` when absent; a file that
    does not pass raises CorruptFileError (left in place)."""
    raw = _read_feather(path, columns)
    if raw is None:
        return empty()  # type: ignore[no-any-return]
    try:
        return normalise(raw, str(path))  # type: ignore[no-any-return]
    except InputError as e:
        raise CorruptFileError(f"{e}; file left in place") from e


def read_events_file(path: Path) -> pd.DataFrame:
    """One events file (sorted, checked); an empty frame when absent; CorruptFileError if bad."""
    df = _read_checked(
        path, EVENT_COLUMNS, _empty_events, lambda raw, what: make_events(raw, what=what)
    )
    if not df["timestamp"].is_monotonic_increasing:
        df = df.sort_values(["timestamp", "id"], kind="stable").reset_index(drop=True)
    return df


def read_bars_file(path: Path) -> pd.DataFrame:
    """One per-bar file (sorted, checked); an empty frame when absent; CorruptFileError if bad."""
    return _read_checked(path, BAR_COLUMNS, _empty_bars, _normalise_bars)


class LiquidationStore:
    """Realized liquidations of many exchanges and symbols under one data folder."""

    def __init__(self, datadir: str | os.PathLike[str]) -> None:
        self.datadir = Path(datadir)
        self._bars = FeatherStore(datadir)

    # -- paths --------------------------------------------------------------------------------
    def folder(self, exchange: str) -> Path:
        # FeatherStore.path checks the exchange name; taker_buy lives in the same sub-folder
        return self._bars.path(exchange, "X", "1h", "taker_buy").parent

    def events_path(self, exchange: str, symbol: str) -> Path:
        return self.folder(exchange) / f"{pair_to_filename(symbol)}-liquidation_events.feather"

    def spans_path(self, exchange: str, symbol: str) -> Path:
        return self.folder(exchange) / f"{pair_to_filename(symbol)}-liquidation_spans.feather"

    def bars_path(self, exchange: str, symbol: str, timeframe: str) -> Path:
        _tf_ms(timeframe)
        tf = timeframe.replace("M", "Mo")
        return self.folder(exchange) / f"{pair_to_filename(symbol)}-{tf}-liquidations.feather"

    def has_data(self, exchange: str, symbol: str) -> bool:
        """Whether anything (events, spans or per-bar files) is stored for this symbol."""
        folder = self.folder(exchange)
        name = pair_to_filename(symbol)
        if (
            self.events_path(exchange, symbol).exists()
            or self.spans_path(exchange, symbol).exists()
        ):
            return True
        return any(folder.glob(f"{name}-*-liquidations.feather"))

    # -- events -------------------------------------------------------------------------------
    def read_events(
        self, exchange: str, symbol: str, start: Any = None, end: Any = None
    ) -> pd.DataFrame:
        """Stored events of one symbol, sorted by time; ``[start, end)`` when given."""
        df = read_events_file(self.events_path(exchange, symbol))
        if start is not None:
            df = df[df["timestamp"] >= _ts(start, "start")]
        if end is not None:
            df = df[df["timestamp"] < _ts(end, "end")]
        return df.reset_index(drop=True)

    def append_events(self, exchange: str, events: pd.DataFrame) -> int:
        """Merge events (any symbols of ``exchange``) into their files; returns rows added.

        Duplicates within ``events`` and against the stored rows are dropped (stored row kept);
        the file stays sorted by time. Atomic per symbol file, under a cross-process lock.
        """
        clean = make_events(events, exchange=exchange, what=f"{exchange} liquidation events")
        if clean.empty:
            return 0
        added = 0
        for symbol, part in clean.groupby("symbol", sort=True):
            path = self.events_path(exchange, str(symbol))
            with _locked(path):
                old = self.read_events(exchange, str(symbol))
                merged = _dedupe(pd.concat([old, part], ignore_index=True) if len(old) else part)
                n_new = len(merged) - len(old)
                if n_new == 0:
                    continue
                merged = merged.sort_values(["timestamp", "id"], kind="stable").reset_index(
                    drop=True
                )
                write_atomic(merged, path, compression_level=None)  # rewritten often: fast lz4
                added += n_new
        return added

    # -- spans --------------------------------------------------------------------------------
    def spans(self, exchange: str, symbol: str) -> pd.DataFrame:
        """Covered and gap intervals of one symbol: ``kind, start, end`` (merged per kind)."""
        path = self.spans_path(exchange, symbol)
        raw = _read_feather(path, SPAN_COLUMNS)
        if raw is None:
            return _empty_spans()
        try:
            out = pd.DataFrame(
                {
                    "kind": raw["kind"].astype(str),
                    "start": to_utc_ms(raw["start"], f"{path}: column 'start'"),
                    "end": to_utc_ms(raw["end"], f"{path}: column 'end'"),
                }
            )
        except InputError as e:
            raise CorruptFileError(f"{e}; file left in place") from e
        bad = ~out["kind"].isin(("covered", "gap"))
        if bad.any():
            raise CorruptFileError(
                f"{path}: column 'kind' must be covered or gap at row "
                f"{int(bad.to_numpy().argmax())}; file left in place"
            )
        return _merge_spans(out)

    def record_coverage(
        self, exchange: str, symbol: str | Iterable[str], start: Any, end: Any
    ) -> None:
        """The source saw every liquidation of ``symbol`` in ``[start, end)`` (stream up, or a
        history window fetched completely)."""
        self._add_span(exchange, symbol, "covered", start, end)

    def record_gap(self, exchange: str, symbol: str | Iterable[str], start: Any, end: Any) -> None:
        """The source may have missed liquidations in ``[start, end]`` (closed): every bar that
        meets it reads NaN."""
        self._add_span(exchange, symbol, "gap", start, end)

    def _add_span(
        self, exchange: str, symbol: str | Iterable[str], kind: str, start: Any, end: Any
    ) -> None:
        t0, t1 = _ts(start, f"{kind} start"), _ts(end, f"{kind} end")
        if t1 < t0:
            raise InputError(f"{kind}: end {t1} is before start {t0}")
        symbols = [symbol] if isinstance(symbol, str) else list(symbol)
        for sym in symbols:
            path = self.spans_path(exchange, sym)
            with _locked(path):
                old = self.spans(exchange, sym)
                new = pd.DataFrame(
                    {
                        "kind": [kind],
                        "start": pd.Series([t0], dtype="datetime64[ms, UTC]"),
                        "end": pd.Series([t1], dtype="datetime64[ms, UTC]"),
                    }
                )
                merged = _merge_spans(pd.concat([old, new], ignore_index=True) if len(old) else new)
                if len(old) == len(merged) and old.reset_index(drop=True).equals(merged):
                    continue
                write_atomic(merged, path)

    # -- bars ---------------------------------------------------------------------------------
    def read_bar_file(self, exchange: str, symbol: str, timeframe: str) -> pd.DataFrame:
        """Stored per-bar rows (from per-bar sources) of one timeframe, sorted by date."""
        return read_bars_file(self.bars_path(exchange, symbol, timeframe))

    def write_bars(
        self, exchange: str, symbol: str, timeframe: str, bars: pd.DataFrame
    ) -> MergeResult:
        """Merge per-bar sums (``date, long_liquidated_usd, short_liquidated_usd[, events]``)
        into the bar file; a new row replaces a stored one of the same date. NaN stays NaN."""
        path = self.bars_path(exchange, symbol, timeframe)
        clean = _normalise_bars(bars, f"{exchange} {symbol} {timeframe} liquidation bars")
        tf = pd.Timedelta(milliseconds=_tf_ms(timeframe))
        off = clean["date"] != clean["date"].dt.floor(tf) if tf <= pd.Timedelta(days=1) else None
        if off is not None and off.any():
            row = int(off.to_numpy().argmax())
            raise InputError(
                f"{exchange} {symbol} liquidation bars: column 'date' {clean['date'].iloc[row]} "
                f"at row {row} is not on the {timeframe} grid"
            )
        with _locked(path):
            old = self.read_bar_file(exchange, symbol, timeframe)
            if clean.empty:
                return MergeResult(path, len(old), len(old), 0)
            merged = (
                (pd.concat([old, clean], ignore_index=True) if len(old) else clean)
                .drop_duplicates(subset="date", keep="last")
                .sort_values("date", kind="stable")
                .reset_index(drop=True)
            )
            write_atomic(merged, path)
        return MergeResult(path, len(old), len(merged), len(clean))

    def _coarser_from_finer(self, exchange: str, symbol: str, tf_ms: int) -> pd.DataFrame:
        """Sums of the coarsest stored per-bar file whose timeframe divides ``tf_ms`` (Gate's
        5m sums for 1h candles); a bar is NaN unless all of its sub-bars are known."""
        folder = self.folder(exchange)
        best = divisor_file(folder, symbol, "liquidations", tf_ms)
        if best is None:
            return _empty_bars()
        fine_ms, _, path = best
        fine = read_bars_file(path)
        if fine.empty:
            return fine
        key = _ms(fine["date"]) // tf_ms * tf_ms
        vals = fine[BAR_COLUMNS[1:]]
        grouped = vals.groupby(key)
        sums = grouped.sum(min_count=1)
        complete = grouped.count()["long_liquidated_usd"] == tf_ms // fine_ms
        complete &= grouped.count()["short_liquidated_usd"] == tf_ms // fine_ms
        sums.loc[~complete, ["long_liquidated_usd", "short_liquidated_usd"]] = np.nan
        sums.loc[grouped.count()["events"] < tf_ms // fine_ms, "events"] = np.nan
        out = sums.reset_index(names="date")
        out["date"] = pd.to_datetime(out["date"], unit="ms", utc=True).dt.as_unit("ms")
        return out.loc[:, BAR_COLUMNS]

    def bars(
        self, exchange: str, symbol: str, timeframe: str, start: Any = None, end: Any = None
    ) -> pd.DataFrame:
        """Per-bar realized liquidations ``date, long_liquidated_usd, short_liquidated_usd,
        events`` on the full ``timeframe`` grid from the first to the last known bar (or
        ``[start, end)``); NaN where unknown (no coverage, a gap), 0 only where known empty."""
        tf_ms = _tf_ms(timeframe)
        tf = pd.Timedelta(milliseconds=tf_ms)
        events = self.read_events(exchange, symbol)
        spans = self.spans(exchange, symbol)
        stored = self.read_bar_file(exchange, symbol, timeframe)
        if stored.empty:
            stored = self._coarser_from_finer(exchange, symbol, tf_ms)
        covered = spans[spans["kind"] == "covered"]
        gaps = spans[spans["kind"] == "gap"]

        lo: list[pd.Timestamp] = []
        hi: list[pd.Timestamp] = []
        if len(covered):
            lo.append(covered["start"].min().floor(tf))
            hi.append(covered["end"].max())
        if len(stored):
            lo.append(stored["date"].iloc[0])
            hi.append(stored["date"].iloc[-1] + tf)
        if len(events):
            lo.append(events["timestamp"].iloc[0].floor(tf))
            hi.append(events["timestamp"].iloc[-1] + pd.Timedelta(milliseconds=1))
        first = _ts(start, "start").floor(tf) if start is not None else (min(lo) if lo else None)
        last = _ts(end, "end") if end is not None else (max(hi) if hi else None)
        if first is None or last is None or last <= first:
            return _empty_bars()
        grid = pd.date_range(first, last - pd.Timedelta(milliseconds=1), freq=tf).as_unit("ms")
        if len(grid) == 0:
            return _empty_bars()
        bar_start = np.asarray(grid.as_unit("ms").asi8, dtype=np.int64)
        bar_end = bar_start + tf_ms

        long_usd = np.full(len(grid), np.nan)
        short_usd = np.full(len(grid), np.nan)
        count = np.full(len(grid), np.nan)
        known = _inside(bar_start, bar_end, covered) & ~_touches(bar_start, bar_end, gaps)
        if known.any():
            ev_ms = _ms(events["timestamp"])
            idx = np.searchsorted(bar_start, ev_ms, side="right") - 1
            ok = (idx >= 0) & (ev_ms < bar_end[np.clip(idx, 0, None)]) if len(ev_ms) else idx >= 0
            idx, usd = idx[ok], events["usd"].to_numpy()[ok]
            is_long = (events["side"].to_numpy() == "long")[ok]
            lsum = np.bincount(idx[is_long], weights=usd[is_long], minlength=len(grid))
            ssum = np.bincount(idx[~is_long], weights=usd[~is_long], minlength=len(grid))
            n = np.bincount(idx, minlength=len(grid)).astype("float64")
            long_usd = np.where(known, lsum, np.nan)
            short_usd = np.where(known, ssum, np.nan)
            count = np.where(known, n, np.nan)
        out = pd.DataFrame(
            {
                "date": grid,
                "long_liquidated_usd": long_usd,
                "short_liquidated_usd": short_usd,
                "events": count,
            }
        )
        if len(stored):  # per-bar sources win where they have a value, except in a gap
            pos = grid.get_indexer(stored["date"])
            vals = stored[BAR_COLUMNS[1:]].to_numpy()
            has = ~np.isnan(vals[:, 0]) | ~np.isnan(vals[:, 1])
            keep = (pos >= 0) & has
            keep[keep] = ~_touches(bar_start[pos[keep]], bar_end[pos[keep]], gaps)
            for j, col in enumerate(BAR_COLUMNS[1:]):
                cur = out[col].to_numpy().copy()
                cur[pos[keep]] = vals[keep, j]
                out[col] = cur
        return out


def divisor_file(folder: Path, symbol: str, kind: str, tf_ms: int) -> tuple[int, str, Path] | None:
    """The stored ``<PAIR>-<tf>-<kind>.feather`` in ``folder`` of the coarsest timeframe finer
    than ``tf_ms`` that divides it, as ``(its ms, its timeframe, path)``; None when none is."""
    prefix = f"{pair_to_filename(symbol)}-"
    suffix = f"-{kind}.feather"
    best: tuple[int, str, Path] | None = None
    for path in folder.glob(f"{prefix}*{suffix}"):
        tf = path.name[len(prefix) : -len(suffix)].replace("Mo", "M")
        try:
            ms = _tf_ms(tf)
        except ConfigError:
            continue
        if ms < tf_ms and tf_ms % ms == 0 and (best is None or ms > best[0]):
            best = (ms, tf, path)
    return best


def _inside(bar_start: np.ndarray, bar_end: np.ndarray, spans: pd.DataFrame) -> np.ndarray:
    """Bars lying entirely inside one span (spans merged: sorted, disjoint)."""
    starts, ends = _span_ms(spans, "start"), _span_ms(spans, "end")
    if len(starts) == 0:
        return np.zeros(len(bar_start), dtype=bool)
    idx = np.searchsorted(starts, bar_start, side="right") - 1  # last span starting at or before
    ok = idx >= 0
    safe = np.clip(idx, 0, None)
    return ok & (bar_end <= ends[safe])


def _touches(bar_start: np.ndarray, bar_end: np.ndarray, spans: pd.DataFrame) -> np.ndarray:
    """Bars ``[start, end)`` meeting a gap ``[s, e]`` (closed: a gap ending exactly at a bar's
    start, or of zero length, still marks that bar). Spans merged (sorted, disjoint), so only
    the last one starting before a bar's end can reach it."""
    starts, ends = _span_ms(spans, "start"), _span_ms(spans, "end")
    if len(starts) == 0:
        return np.zeros(len(bar_start), dtype=bool)
    idx = np.searchsorted(starts, bar_end, side="left") - 1  # last span with s < bar end
    ok = idx >= 0
    safe = np.clip(idx, 0, None)
    return ok & (ends[safe] >= bar_start)


def _span_ms(spans: pd.DataFrame, col: str) -> np.ndarray:
    return _ms(spans[col])


def _ms(times: pd.Series) -> np.ndarray:
    """Epoch ms of a datetime64[ms, UTC] column."""
    return np.asarray(pd.DatetimeIndex(times).as_unit("ms").asi8, dtype=np.int64)


def _empty_spans() -> pd.DataFrame:
    return pd.DataFrame(
        {
            "kind": pd.Series([], dtype="object"),
            "start": pd.Series([], dtype="datetime64[ms, UTC]"),
            "end": pd.Series([], dtype="datetime64[ms, UTC]"),
        }
    )


def _merge_spans(spans: pd.DataFrame) -> pd.DataFrame:
    """Union of overlapping or touching intervals, per kind; sorted."""
    rows = []
    for kind in ("covered", "gap"):
        part = spans[spans["kind"] == kind].sort_values("start", kind="stable")
        cur_s: pd.Timestamp | None = None
        cur_e: pd.Timestamp | None = None
        for s, e in zip(part["start"], part["end"], strict=True):
            if cur_s is None or cur_e is None:
                cur_s, cur_e = s, e
            elif s <= cur_e:
                cur_e = max(cur_e, e)
            else:
                rows.append((kind, cur_s, cur_e))
                cur_s, cur_e = s, e
        if cur_s is not None:
            rows.append((kind, cur_s, cur_e))
    if not rows:
        return _empty_spans()
    out = pd.DataFrame(rows, columns=SPAN_COLUMNS)
    for col in ("start", "end"):
        out[col] = pd.to_datetime(out[col], utc=True).dt.as_unit("ms")
    out["kind"] = out["kind"].astype(str)
    return out.reset_index(drop=True)


def _empty_bars() -> pd.DataFrame:
    return pd.DataFrame(
        {
            "date": pd.Series([], dtype="datetime64[ms, UTC]"),
            **{c: pd.Series([], dtype="float64") for c in BAR_COLUMNS[1:]},
        }
    )


def _normalise_bars(df: pd.DataFrame, what: str) -> pd.DataFrame:
    if not isinstance(df, pd.DataFrame):
        raise InputError(f"{what}: expected a pandas DataFrame, got {type(df).__name__}")
    df = df.copy()
    if "events" not in df.columns:
        df["events"] = np.nan
    missing = [c for c in BAR_COLUMNS if c not in df.columns]
    if missing:
        raise InputError(
            f"{what}: missing column(s) {missing}; expected {BAR_COLUMNS}, got {list(df.columns)}"
        )
    out = df.loc[:, BAR_COLUMNS].reset_index(drop=True)
    if out.empty:
        return _empty_bars()
    out["date"] = to_utc_ms(out["date"], f"{what}: column 'date'")
    for col in BAR_COLUMNS[1:]:
        try:
            vals = pd.to_numeric(out[col], errors="raise").astype("float64")
        except (ValueError, TypeError) as e:
            raise InputError(f"{what}: column {col!r} is not numeric: {e}") from e
        neg = vals.to_numpy() < 0
        if neg.any():
            row = int(neg.argmax())
            raise InputError(f"{what}: column {col!r} is negative at row {row}: {vals.iloc[row]}")
        out[col] = vals
    dup = out["date"].duplicated()
    if dup.any():
        out = out.drop_duplicates(subset="date", keep="last")
    return out.sort_values("date", kind="stable").reset_index(drop=True)


#: the Freqtrade columns of realized liquidations (see :func:`realized_columns`)
REALIZED_COLUMNS = ("liq_real_long_usd", "liq_real_short_usd")


def realized_columns(
    dataframe: pd.DataFrame,
    datadir: str | os.PathLike[str],
    exchange: str,
    symbol: str,
    timeframe: str,
) -> pd.DataFrame:
    """``liq_real_long_usd, liq_real_short_usd`` on ``dataframe``'s index: the USD liquidated
    on each side during each candle (``date`` = the candle's open), from the store; NaN where
    nothing is known (no coverage, a gap, outside the stored span), never 0 for unknown.

    Point in time: a candle's value is complete at the candle's close, when Freqtrade hands
    that candle's row to the strategy, as with its close price; no row sees a later bar.
    """
    out = pd.DataFrame(index=dataframe.index, columns=list(REALIZED_COLUMNS), dtype="float64")
    if len(dataframe) == 0:
        return out
    dates = pd.DatetimeIndex(pd.to_datetime(dataframe["date"], utc=True))
    tf = pd.Timedelta(milliseconds=_tf_ms(timeframe))
    bars = LiquidationStore(datadir).bars(
        exchange, symbol, timeframe, start=dates.min(), end=dates.max() + tf
    )
    if bars.empty:
        return out
    pos = pd.Index(_ms(bars["date"])).get_indexer(dates.as_unit("ms").asi8)
    hit = pos >= 0
    for col, src in zip(
        REALIZED_COLUMNS, ("long_liquidated_usd", "short_liquidated_usd"), strict=True
    ):
        vals = np.full(len(dates), np.nan)
        vals[hit] = bars[src].to_numpy()[pos[hit]]
        out[col] = vals
    return out


def realized_from_store(
    datadir: str | os.PathLike[str], exchange: str, symbol: str, timeframe: str
) -> pd.DataFrame:
    """``date, realized_long_usd, realized_short_usd`` per bar from the store (NaN = unknown).

    For evaluation and calibration on any stored exchange and market. Empty frame (same
    columns) when nothing is stored.
    """
    bars = LiquidationStore(datadir).bars(exchange, symbol, timeframe)
    return pd.DataFrame(
        {
            "date": bars["date"],
            "realized_long_usd": bars["long_liquidated_usd"],
            "realized_short_usd": bars["short_liquidated_usd"],
        }
    )
