"""Read and incrementally write market data files in Freqtrade's futures feather layout.

Layout (exactly what Freqtrade 2026.9's ``FeatherDataHandler`` reads and writes)::

    <datadir>/<exchange>/futures/<PAIR>-<tf>-<candle_type>.feather

with the pair's ``/``, ``:`` (and ``.``, ``@``, ``$``, ``+``, space) turned into ``_``, e.g.
``binance/futures/BTC_USDT_USDT-1h-futures.feather``. Columns per candle type:

- ``futures``, ``mark``: ``date, open, high, low, close, volume``
- ``funding_rate``: ``date, funding_rate``
- ``open_interest``: ``date, open_interest_amount, open_interest_value`` (either may be NaN)

``date`` is ``datetime64[ms, UTC]``, values are float64, files are lz4-compressed feather (level 9),
as Freqtrade writes them.

liqsignal's own extra, Binance's taker buy volume, lives in a sub-folder Freqtrade does not scan
(its ``list-data`` would fail on an unknown candle type in ``futures/``)::

    <datadir>/<exchange>/futures/liqsignal/<PAIR>-<tf>-taker_buy.feather
    columns: date, taker_buy_volume, taker_buy_quote_volume

Merging: stored rows and new rows are concatenated, duplicates by ``date`` are dropped keeping the
NEW row (an exchange's newer answer replaces an older one, e.g. a candle that was still open when
it was first stored), then sorted by date. Writes are atomic (temporary file in the same folder,
fsync, ``os.replace``). A file that cannot be read raises :class:`CorruptFileError` naming its
path and is left untouched: it is never overwritten by a merge.
"""

from __future__ import annotations

import logging
import os
import tempfile
from dataclasses import dataclass
from pathlib import Path

import pandas as pd

from liqsignal.exceptions import ConfigError, CorruptFileError, InputError

__all__ = [
    "CANDLE_COLUMNS",
    "CANDLE_TYPES",
    "FeatherStore",
    "MergeResult",
    "pair_to_filename",
]

logger = logging.getLogger(__name__)

OHLCV = ["date", "open", "high", "low", "close", "volume"]

#: Columns stored per candle type, ``date`` first (Freqtrade's ``get_candle_columns`` + ours).
CANDLE_COLUMNS: dict[str, list[str]] = {
    "futures": OHLCV,
    "mark": OHLCV,
    "index": OHLCV,
    "premiumIndex": OHLCV,
    "funding_rate": ["date", "funding_rate"],
    "open_interest": ["date", "open_interest_amount", "open_interest_value"],
    "taker_buy": ["date", "taker_buy_volume", "taker_buy_quote_volume"],
}
CANDLE_TYPES = tuple(CANDLE_COLUMNS)
#: Candle types that are liqsignal's own and kept out of Freqtrade's folder.
EXTRA_TYPES = frozenset({"taker_buy"})
EXTRA_FOLDER = "liqsignal"


def pair_to_filename(pair: str) -> str:
    """Freqtrade's ``misc.pair_to_filename``: ``BTC/USDT:USDT`` -> ``BTC_USDT_USDT``."""
    for ch in ("/", " ", ".", "@", "$", "+", ":"):
        pair = pair.replace(ch, "_")
    return pair


@dataclass(frozen=True)
class MergeResult:
    """What one merge did to one file."""

    path: Path
    rows_before: int
    rows_after: int
    rows_new: int  # rows offered by the caller (after cleaning)

    @property
    def rows_added(self) -> int:
        return self.rows_after - self.rows_before


class FeatherStore:
    """Files of many exchanges under one data folder (Freqtrade's ``user_data/data``)."""

    def __init__(self, datadir: str | os.PathLike[str]) -> None:
        self.datadir = Path(datadir)

    # -- paths --------------------------------------------------------------------------------
    def path(self, exchange: str, pair: str, timeframe: str, candle_type: str) -> Path:
        """Where the file of this exchange, pair, timeframe and candle type lives."""
        _check_candle_type(candle_type)
        if not exchange or "/" in exchange or exchange.startswith("."):
            raise ConfigError(
                f"exchange: expected a plain folder name like 'binance', got {exchange!r}"
            )
        if not timeframe:
            raise ConfigError("timeframe: expected e.g. '1h', got an empty string")
        folder = self.datadir / exchange / "futures"
        if candle_type in EXTRA_TYPES:
            folder = folder / EXTRA_FOLDER
        tf = timeframe.replace("M", "Mo")  # Freqtrade's timeframe_to_file
        return folder / f"{pair_to_filename(pair)}-{tf}-{candle_type}.feather"

    # -- reading ------------------------------------------------------------------------------
    def read(self, exchange: str, pair: str, timeframe: str, candle_type: str) -> pd.DataFrame:
        """The stored rows (sorted by date), or an empty frame with the right columns."""
        path = self.path(exchange, pair, timeframe, candle_type)
        return read_file(path, candle_type)

    def last_date(
        self, exchange: str, pair: str, timeframe: str, candle_type: str
    ) -> pd.Timestamp | None:
        """Date of the newest stored row, or None when nothing is stored."""
        df = self.read(exchange, pair, timeframe, candle_type)
        if df.empty:
            return None
        return pd.Timestamp(df["date"].iloc[-1])

    # -- writing ------------------------------------------------------------------------------
    def merge(
        self,
        exchange: str,
        pair: str,
        timeframe: str,
        candle_type: str,
        new: pd.DataFrame,
    ) -> MergeResult:
        """Merge ``new`` rows into the stored file (new rows win on equal dates); atomic write.

        Raises CorruptFileError (file left in place) if the stored file cannot be read, and
        InputError if ``new`` lacks a column or has an unparseable date.
        """
        path = self.path(exchange, pair, timeframe, candle_type)
        clean = normalize_frame(new, candle_type, what=f"new {candle_type} rows for {pair}")
        old = read_file(path, candle_type)
        if clean.empty:
            return MergeResult(path, len(old), len(old), 0)
        merged = pd.concat([old, clean], ignore_index=True) if len(old) else clean
        merged = (
            merged.drop_duplicates(subset="date", keep="last")
            .sort_values("date", kind="stable")
            .reset_index(drop=True)
        )
        if len(merged) < len(old):  # cannot happen with keep="last" on a union; guard anyway
            raise CorruptFileError(f"{path}: merge would shrink {len(old)} rows to {len(merged)}")
        write_atomic(merged, path)
        return MergeResult(path, len(old), len(merged), len(clean))


def _check_candle_type(candle_type: str) -> None:
    if candle_type not in CANDLE_COLUMNS:
        raise ConfigError(
            f"candle_type: expected one of {', '.join(CANDLE_TYPES)}, got {candle_type!r}"
        )


def normalize_frame(df: pd.DataFrame, candle_type: str, what: str = "data") -> pd.DataFrame:
    """Columns of ``candle_type`` in order, ``date`` as datetime64[ms, UTC], values float64."""
    _check_candle_type(candle_type)
    columns = CANDLE_COLUMNS[candle_type]
    if not isinstance(df, pd.DataFrame):
        raise InputError(f"{what}: expected a pandas DataFrame, got {type(df).__name__}")
    missing = [c for c in columns if c not in df.columns]
    if missing:
        raise InputError(
            f"{what}: missing column(s) {missing}; expected {columns}, got {list(df.columns)}"
        )
    out = df.loc[:, columns].copy()
    if out.empty:
        return _empty(candle_type)
    dates = out["date"]
    if pd.api.types.is_numeric_dtype(dates):
        out["date"] = pd.to_datetime(dates, unit="ms", utc=True)
    else:
        try:
            out["date"] = pd.to_datetime(dates, utc=True)
        except (ValueError, TypeError) as e:
            raise InputError(f"{what}: column 'date' has a value that is not a date: {e}") from e
    bad = out["date"].isna()
    if bad.any():
        raise InputError(f"{what}: column 'date' is empty at row {int(bad.to_numpy().argmax())}")
    out["date"] = out["date"].dt.as_unit("ms")
    for col in columns[1:]:
        try:
            out[col] = pd.to_numeric(out[col], errors="raise").astype("float64")
        except (ValueError, TypeError) as e:
            raise InputError(f"{what}: column {col!r} is not numeric: {e}") from e
    return out.reset_index(drop=True)


def _empty(candle_type: str) -> pd.DataFrame:
    columns = CANDLE_COLUMNS[candle_type]
    data: dict[str, pd.Series] = {
        "date": pd.Series([], dtype="datetime64[ms, UTC]"),
        **{c: pd.Series([], dtype="float64") for c in columns[1:]},
    }
    return pd.DataFrame(data)


def read_file(path: Path, candle_type: str) -> pd.DataFrame:
    """Read one stored file: sorted, normalized; empty frame if absent; CorruptFileError if bad."""
    _check_candle_type(candle_type)
    if not path.exists():
        return _empty(candle_type)
    try:
        raw = pd.read_feather(path)
    except Exception as e:  # pyarrow raises many types for a damaged file
        raise CorruptFileError(f"{path}: cannot be read as feather ({e}); left in place") from e
    if (
        candle_type == "funding_rate"
        and "funding_rate" not in raw.columns
        and set(OHLCV).issubset(raw.columns)
    ):
        raw = raw.rename(columns={"open": "funding_rate"})  # Freqtrade's legacy layout
    try:
        df = normalize_frame(raw, candle_type, what=str(path))
    except InputError as e:
        raise CorruptFileError(f"{e}; file left in place") from e
    if not df["date"].is_monotonic_increasing:
        df = df.sort_values("date", kind="stable").reset_index(drop=True)
    return df


def write_atomic(df: pd.DataFrame, path: Path) -> None:
    """Write ``df`` as Freqtrade does (feather, lz4 level 9) through a temporary file + rename."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp_name = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    os.close(fd)
    tmp = Path(tmp_name)
    try:
        df.reset_index(drop=True).to_feather(tmp, compression="lz4", compression_level=9)
        with open(tmp, "rb+") as fh:
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    try:
        dir_fd = os.open(path.parent, os.O_RDONLY)
    except OSError:  # pragma: no cover - platforms without directory fds
        return
    try:
        os.fsync(dir_fd)
    finally:
        os.close(dir_fd)
