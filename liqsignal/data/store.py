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

Several writers: each merge reads, merges and writes under an exclusive lock (``fcntl.flock`` on the
file's folder, so no lock file sits among Freqtrade's), so ``liqsignal download`` running while the
provider or ``watch`` writes the same store loses no rows; readers take no lock (the file is
replaced atomically). Temporary files left by a killed writer (``.<file>.<random>.tmp``) are removed
by the next merge of that file, under the lock. A failed write (disk full, file-size limit, read-
only folder) leaves the old file intact and raises :class:`StoreWriteError` (a ``DataError``) naming
the path and the cause.

What is read is checked: the content checksum written with the file (schema metadata
``liqsignal.sha256``; files written by Freqtrade have none), ``date`` stored as datetimes, strictly
increasing, within 1970-2100; values stored as floats; prices finite and > 0 where present, high >=
low; volume and open interest not negative or infinite. A file that fails is a
:class:`CorruptFileError` (left in place, never merged into). Every path component is checked:
exchange and pair may not climb out of the data folder, the timeframe is Freqtrade's (``1m``,
``4h``, ``1d``, ``1w``, ``1M`` ...).
"""

from __future__ import annotations

import contextlib
import hashlib
import logging
import os
import re
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.feather as pa_feather

from liqsignal.exceptions import ConfigError, CorruptFileError, DataError, InputError

try:
    import fcntl
except ImportError:  # pragma: no cover - Windows: no cross-process lock, atomic writes remain
    fcntl = None  # type: ignore[assignment]

__all__ = [
    "CANDLE_COLUMNS",
    "CANDLE_TYPES",
    "FeatherStore",
    "MergeResult",
    "StoreWriteError",
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


_EXCHANGE_RE = re.compile(r"[A-Za-z0-9][A-Za-z0-9_-]{0,63}")
_TIMEFRAME_RE = re.compile(r"[1-9][0-9]{0,3}(s|m|h|d|w|M|y)")
_FILE_PAIR_RE = re.compile(r"[A-Za-z0-9_-]{1,128}")
#: Schema-metadata key of the content checksum ``write_atomic`` adds (Freqtrade ignores it; files
#: without it, say written by Freqtrade, are read unchecked).
DIGEST_KEY = b"liqsignal.sha256"
#: Stored dates must lie in [DATE_MIN, DATE_MAX): outside it a date is a damaged file.
DATE_MIN = pd.Timestamp("1970-01-01", tz="UTC")
DATE_MAX = pd.Timestamp("2100-01-01", tz="UTC")
_PRICES = ("open", "high", "low", "close")
_AMOUNTS = ("volume", "open_interest_amount", "open_interest_value", "taker_buy_volume")


class StoreWriteError(DataError, OSError):
    """A store file could not be written (disk full, file-size limit, read-only folder). The
    stored file is unchanged; the message names the path and the cause. An ``OSError`` too, so
    callers that caught the raw error keep working."""


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
        if not isinstance(exchange, str) or not _EXCHANGE_RE.fullmatch(exchange):
            raise ConfigError(
                f"exchange: expected a plain folder name like 'binance', got {exchange!r}"
            )
        if not isinstance(timeframe, str) or not _TIMEFRAME_RE.fullmatch(timeframe):
            raise ConfigError(f"timeframe: expected e.g. '1h', '15m', '1d', got {timeframe!r}")
        name = pair_to_filename(pair) if isinstance(pair, str) else ""
        if not _FILE_PAIR_RE.fullmatch(name):
            raise ConfigError(f"pair: expected e.g. 'BTC/USDT:USDT', got {pair!r}")
        folder = self.datadir / exchange / "futures"
        if candle_type in EXTRA_TYPES:
            folder = folder / EXTRA_FOLDER
        tf = timeframe.replace("M", "Mo")  # Freqtrade's timeframe_to_file
        return folder / f"{name}-{tf}-{candle_type}.feather"

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
        what = f"new {candle_type} rows for {pair}"
        clean = normalize_frame(new, candle_type, what=what)
        problem = _implausible(clean, candle_type)
        if problem:
            raise InputError(f"{what}: {problem}")
        if clean.empty:
            old = read_file(path, candle_type)
            return MergeResult(path, len(old), len(old), 0)
        with locked(path):
            remove_orphans(path)
            old = read_file(path, candle_type)
            merged = pd.concat([old, clean], ignore_index=True) if len(old) else clean
            merged = (
                merged.drop_duplicates(subset="date", keep="last")
                .sort_values("date", kind="stable")
                .reset_index(drop=True)
            )
            if len(merged) < len(old):  # cannot happen with keep="last" on a union
                raise CorruptFileError(
                    f"{path}: merge would shrink {len(old)} rows to {len(merged)}"
                )
            write_atomic(merged, path)
        return MergeResult(path, len(old), len(merged), len(clean))


@contextlib.contextmanager
def locked(path: Path) -> Iterator[None]:
    """Hold an exclusive cross-process lock for writing ``path``: ``flock`` on its folder (no
    lock file beside Freqtrade's files; writers of one folder take turns, readers never wait)."""
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd = os.open(path.parent, os.O_RDONLY)
    except OSError as e:
        raise StoreWriteError(
            f"{path}: cannot open its folder for writing ({e.strerror or e})"
        ) from e
    try:
        if fcntl is not None:
            fcntl.flock(fd, fcntl.LOCK_EX)
        yield
    finally:
        if fcntl is not None:
            fcntl.flock(fd, fcntl.LOCK_UN)
        os.close(fd)


def remove_orphans(path: Path) -> int:
    """Remove temporary files a killed writer left for ``path``; call under its lock."""
    n = 0
    for tmp in path.parent.glob(f".{glob_escape(path.name)}.*.tmp"):
        with contextlib.suppress(OSError):
            tmp.unlink()
            n += 1
    if n:
        logger.info("%s: removed %d temporary file(s) left by an interrupted write", path, n)
    return n


def glob_escape(name: str) -> str:
    return re.sub(r"([*?\[])", r"[\1]", name)


def _implausible(df: pd.DataFrame, candle_type: str) -> str | None:
    """Why rows cannot be right (a damaged file or bad input), or None."""
    if df.empty:
        return None
    dates = df["date"]
    bad = (dates < DATE_MIN) | (dates >= DATE_MAX)
    if bad.any():
        i = int(np.flatnonzero(bad.to_numpy())[0])
        return f"column 'date' is {dates.iloc[i]} at row {i}, outside 1970-2100"
    for col in _PRICES:
        if col in df.columns:
            v = df[col].to_numpy()
            bad_v = np.isinf(v) | (v <= 0)
            if bad_v.any():
                i = int(np.flatnonzero(bad_v)[0])
                return f"column {col!r} is {v[i]!r} at row {i} (prices must be finite and > 0)"
    if "high" in df.columns:
        bad_v = df["high"].to_numpy() < df["low"].to_numpy()
        if bad_v.any():
            return f"'high' is below 'low' at row {int(np.flatnonzero(bad_v)[0])}"
    for col in _AMOUNTS:
        if col in df.columns:
            v = df[col].to_numpy()
            bad_v = np.isinf(v) | (v < 0)
            if bad_v.any():
                i = int(np.flatnonzero(bad_v)[0])
                return f"column {col!r} is {v[i]!r} at row {i} (must be finite and >= 0)"
    if "funding_rate" in df.columns:
        v = df["funding_rate"].to_numpy()
        bad_v = ~np.isnan(v) & ~(np.abs(v) < 1.0)
        if bad_v.any():
            i = int(np.flatnonzero(bad_v)[0])
            return f"column 'funding_rate' is {v[i]!r} at row {i} (|rate| must be < 1)"
    return None


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


def read_checked_feather(path: Path) -> pd.DataFrame:
    """A feather file's frame, its SHA-256 checked against the one liqsignal wrote into its
    schema metadata (files without one, e.g. Freqtrade's, are read unchecked);
    CorruptFileError naming the path when it cannot be read or does not match."""
    try:
        table = pa_feather.read_table(path)
        raw = table.to_pandas()
    except Exception as e:  # pyarrow raises many types for a damaged file
        raise CorruptFileError(f"{path}: cannot be read as feather ({e}); left in place") from e
    stored = (table.schema.metadata or {}).get(DIGEST_KEY)
    if stored is not None and stored.decode("ascii", "replace") != _digest(raw):
        raise CorruptFileError(
            f"{path}: content does not match the checksum written with it (a damaged file); "
            "left in place"
        )
    return raw


def read_file(path: Path, candle_type: str) -> pd.DataFrame:
    """Read one stored file: sorted, normalized; empty frame if absent; CorruptFileError if bad."""
    _check_candle_type(candle_type)
    if not path.exists():
        return _empty(candle_type)
    raw = read_checked_feather(path)
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
    if "date" in raw.columns and not pd.api.types.is_datetime64_any_dtype(raw["date"]):
        raise CorruptFileError(
            f"{path}: column 'date' is stored as {raw['date'].dtype}, not as datetimes (a "
            "damaged file or not one of ours); left in place"
        )
    for col in CANDLE_COLUMNS[candle_type][1:]:
        if col in raw.columns and not pd.api.types.is_float_dtype(raw[col]):
            raise CorruptFileError(
                f"{path}: column {col!r} is stored as {raw[col].dtype}, not as floats; "
                "left in place"
            )
    d = df["date"].to_numpy()
    if len(d) > 1 and not (d[1:] > d[:-1]).all():
        i = int(np.flatnonzero(~(d[1:] > d[:-1]))[0]) + 1
        raise CorruptFileError(
            f"{path}: column 'date' is not strictly increasing at row {i} ({df['date'].iloc[i]}); "
            "a damaged file; left in place"
        )
    problem = _implausible(df, candle_type)
    if problem:
        raise CorruptFileError(f"{path}: {problem}; a damaged file; left in place")
    return df


def _digest(df: pd.DataFrame) -> str:
    """SHA-256 of a frame's column names, dtypes and values (what ``write_atomic`` stores in the
    file's schema metadata; a read recomputes it, so a flipped byte in the data is seen)."""
    h = hashlib.sha256()
    for c in df.columns:
        h.update(f"{c}\x00{df[c].dtype}\x00".encode())
    if len(df.columns):
        h.update(pd.util.hash_pandas_object(df, index=False).to_numpy().tobytes())
    return h.hexdigest()


def write_atomic(df: pd.DataFrame, path: Path, compression_level: int | None = 9) -> None:
    """Write ``df`` as Freqtrade does (feather, lz4 level 9) through a temporary file + rename.

    ``compression_level=None`` is lz4's default: about 2.5 times faster to write, a few percent
    larger (for files only liqsignal reads and rewrites often, e.g. liquidation events)."""
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp_name = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    except OSError as e:
        raise StoreWriteError(f"{path}: cannot write ({e.strerror or e}); nothing changed") from e
    os.close(fd)
    tmp = Path(tmp_name)
    try:
        frame = df.reset_index(drop=True)
        table = pa.Table.from_pandas(frame, preserve_index=False)
        meta = dict(table.schema.metadata or {})
        meta[DIGEST_KEY] = _digest(frame).encode("ascii")
        table = table.replace_schema_metadata(meta)
        pa_feather.write_feather(table, tmp, compression="lz4", compression_level=compression_level)
        with open(tmp, "rb+") as fh:
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    except OSError as e:
        tmp.unlink(missing_ok=True)
        raise StoreWriteError(
            f"{path}: cannot write ({e.strerror or e}); the stored file is unchanged"
        ) from e
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
