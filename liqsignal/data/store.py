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
import struct
import tempfile
import threading
import time
import zlib
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

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
    "JOURNAL_NAME",
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
_DATE_MIN_MS = DATE_MIN.value // 1_000_000
_DATE_MAX_MS = DATE_MAX.value // 1_000_000
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
    """Files of many exchanges under one data folder (Freqtrade's ``user_data/data``).

    Two ways to write: :meth:`merge` rewrites the file at once (atomic, fsynced: one file per
    call); :meth:`append` collects rows and :meth:`commit` makes them durable in each folder's
    append journal with ONE fsync per folder, folding a file's journaled rows into its feather
    file (the same atomic rewrite) when the file does not exist yet, once it has
    ``compact_rows`` pending (a per-file figure between half and all of it, so files fed
    together are not rewritten in the same cycle), or at :meth:`compact` / :meth:`close`.
    Every read through a ``FeatherStore`` (any process) sees the journaled rows; programs
    reading the feather files alone (Freqtrade) see them after compaction. ``journal_bytes``:
    a journal larger than this is rewritten with its live records only.
    """

    def __init__(
        self,
        datadir: str | os.PathLike[str],
        *,
        compact_rows: int = 256,
        journal_bytes: int = 16 << 20,
    ) -> None:
        if not isinstance(compact_rows, int) or compact_rows < 1:
            raise ConfigError(f"compact_rows: expected an integer >= 1, got {compact_rows!r}")
        if not isinstance(journal_bytes, int) or journal_bytes < 1024:
            raise ConfigError(f"journal_bytes: expected an integer >= 1024, got {journal_bytes!r}")
        self.datadir = Path(datadir)
        self.compact_rows = compact_rows
        self.journal_bytes = journal_bytes
        self._journals: dict[Path, _Journal] = {}
        self._batch: list[tuple[Path, str, np.ndarray]] = []
        self._mutex = threading.Lock()

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

    def _journal(self, folder: Path) -> _Journal:
        with self._mutex:
            j = self._journals.get(folder)
            if j is None:
                j = self._journals[folder] = _Journal(folder)
            return j

    # -- reading ------------------------------------------------------------------------------
    def read(self, exchange: str, pair: str, timeframe: str, candle_type: str) -> pd.DataFrame:
        """The stored rows (sorted by date), journaled ones included, or an empty frame."""
        path = self.path(exchange, pair, timeframe, candle_type)
        return self._read(path, candle_type)

    def _read(self, path: Path, candle_type: str) -> pd.DataFrame:
        j = self._journal(path.parent)
        # the journal BEFORE the file: a compaction in between stamps the file with what it
        # folded in, so no row is missed whichever of the two a concurrent writer changed
        j.sync()
        df, stamp = read_file_stamped(path, candle_type)
        with j.mutex:
            pend = j.files.get(path.name)
            rows = pend.after(stamp)[0] if pend is not None else None
        if rows is None or not len(rows):
            return df
        merged = _apply(df, rows, candle_type)
        problem = _implausible(merged, candle_type)
        if problem:
            raise CorruptFileError(f"{j.path} with {path}: {problem}; left in place")
        return merged

    def last_date(
        self, exchange: str, pair: str, timeframe: str, candle_type: str
    ) -> pd.Timestamp | None:
        """Date of the newest stored row, or None when nothing is stored."""
        df = self.read(exchange, pair, timeframe, candle_type)
        if df.empty:
            return None
        return pd.Timestamp(df["date"].iloc[-1])

    # -- writing ------------------------------------------------------------------------------
    def _clean(self, candle_type: str, pair: str, new: pd.DataFrame) -> pd.DataFrame:
        what = f"new {candle_type} rows for {pair}"
        clean = normalize_frame(new, candle_type, what=what)
        problem = _implausible(clean, candle_type)
        if problem:
            raise InputError(f"{what}: {problem}")
        return clean

    def merge(
        self,
        exchange: str,
        pair: str,
        timeframe: str,
        candle_type: str,
        new: pd.DataFrame,
    ) -> MergeResult:
        """Merge ``new`` rows into the stored file (new rows win on equal dates); atomic write.
        Rows pending in the folder's journal are folded in first (they are older).

        Raises CorruptFileError (file left in place) if the stored file cannot be read, and
        InputError if ``new`` lacks a column or has an unparseable date.
        """
        path = self.path(exchange, pair, timeframe, candle_type)
        clean = self._clean(candle_type, pair, new)
        if clean.empty:
            old = self._read(path, candle_type)
            return MergeResult(path, len(old), len(old), 0)
        j = self._journal(path.parent)
        with locked(path):
            remove_orphans(path)
            j.sync(repair=True)
            old, stamp = read_file_stamped(path, candle_type)
            with j.mutex:
                pend = j.files.get(path.name)
                rows, stamp = pend.after(stamp) if pend is not None else (None, stamp)
            if rows is not None and len(rows):
                old = _apply(old, rows, candle_type)
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
            write_atomic(merged, path, stamp=stamp or None)
            with j.mutex:
                j.files.pop(path.name, None)
        return MergeResult(path, len(old), len(merged), len(clean))

    def append(
        self,
        exchange: str,
        pair: str,
        timeframe: str,
        candle_type: str,
        new: pd.DataFrame,
    ) -> pd.DataFrame:
        """Queue ``new`` rows for the next :meth:`commit` (checked now: InputError naming the
        problem); returns them normalized. Not stored, and not read back, before the commit."""
        path = self.path(exchange, pair, timeframe, candle_type)
        what = f"new {candle_type} rows for {pair}"
        _check_candle_type(candle_type)
        rows = _normal_rows(new, CANDLE_COLUMNS[candle_type])
        if rows is not None:  # already the store's frame (the live provider's rows)
            clean = new.reset_index(drop=True)
        else:
            clean = normalize_frame(new, candle_type, what=what)
            rows = _to_rows(clean) if len(clean) else None
        if rows is not None and len(rows):
            problem = _implausible_rows(rows, CANDLE_COLUMNS[candle_type])
            if problem:
                raise InputError(f"{what}: {problem}")
            with self._mutex:
                self._batch.append((path, candle_type, rows))
        return clean

    def commit(self) -> dict[Path, StoreWriteError]:
        """Make the queued rows durable: per folder, under its lock, one append to its journal
        and one fsync; then compact the files that reached their threshold. Returns the files
        whose rows could NOT be stored (the journal could not be written: nothing of theirs
        is stored), with the error; empty when all went in. A failed compaction (corrupt
        stored file, disk full) leaves the rows in the journal (logged): they are stored."""
        with self._mutex:
            batch, self._batch = self._batch, []
        by_folder: dict[Path, list[tuple[str, str, np.ndarray]]] = {}
        for path, ctype, rows in batch:
            by_folder.setdefault(path.parent, []).append((path.name, ctype, rows))
        failed: dict[Path, StoreWriteError] = {}
        for folder, records in by_folder.items():
            j = self._journal(folder)
            try:
                with locked(j.path):
                    _remove_journal_orphans(folder)
                    j.sync(repair=True)
                    j.append(records)
                    try:  # the rows are stored now; what follows only tidies up
                        self._compact_folder(j, due_only=True)
                        if j.offset > self.journal_bytes:
                            j.rewrite(self._stamps(j))
                            if j.offset > self.journal_bytes // 2:
                                self._compact_folder(j, due_only=False)
                                j.rewrite(self._stamps(j))
                    except (OSError, CorruptFileError) as e:
                        logger.error("%s: stored, but not compacted: %s", j.path, e)
            except (OSError, CorruptFileError) as e:  # StoreWriteError is an OSError
                err = e if isinstance(e, StoreWriteError) else StoreWriteError(f"{j.path}: {e}")
                for name, _, _ in records:
                    failed[folder / name] = err
                logger.error("%s: %s", folder, e)
        return failed

    def compact(self) -> int:
        """Fold every journaled row under the data folder into its feather file and remove the
        journals (each folder under its lock); returns the number of files rewritten. Run it
        (or :meth:`close`) before a program that reads only the feather files, e.g. a
        Freqtrade backtest, needs the newest rows."""
        folders = {p.parent for p in self.datadir.glob(f"*/futures/{JOURNAL_NAME}")}
        folders |= {p.parent for p in self.datadir.glob(f"*/futures/*/{JOURNAL_NAME}")}
        with self._mutex:
            folders |= {f for f, j in self._journals.items() if j.files}
        n = 0
        for folder in sorted(folders):
            j = self._journal(folder)
            with locked(j.path):
                _remove_journal_orphans(folder)
                j.sync(repair=True)
                n += self._compact_folder(j, due_only=False)
                j.rewrite(self._stamps(j))
        return n

    def close(self) -> None:
        """Commit what is queued, then :meth:`compact`."""
        failed = self.commit()
        self.compact()
        if failed:
            path, err = next(iter(failed.items()))
            raise StoreWriteError(f"{len(failed)} file(s) not stored, e.g. {path}: {err}")

    def _compact_folder(self, j: _Journal, *, due_only: bool) -> int:
        """Fold pending rows into their files (under the folder lock); files whose stored copy
        is corrupt keep their rows in the journal (logged)."""
        with j.mutex:
            names = [
                (name, pend.candle_type)
                for name, pend in j.files.items()
                if not due_only
                or pend.count >= _threshold(name, self.compact_rows)
                or not self._exists(j, name)  # a new file: Freqtrade lists the pair at once
            ]
        n = 0
        for name, ctype in names:
            path = j.folder / name
            try:
                remove_orphans(path)
                old, stamp = read_file_stamped(path, ctype)
                with j.mutex:
                    rows, seq = j.files[name].after(stamp)
                if len(rows):
                    merged = _apply(old, rows, ctype)
                    problem = _implausible(merged, ctype)
                    if problem:
                        raise CorruptFileError(f"{path}: journaled rows: {problem}")
                    write_atomic(merged, path, stamp=seq)
                    n += 1
                with j.mutex:
                    j.files.pop(name, None)
            except (CorruptFileError, StoreWriteError) as e:  # the rows are safe in the journal
                logger.error("%s: not compacted, its rows stay in %s: %s", path, j.path, e)
        return n

    @staticmethod
    def _exists(j: _Journal, name: str) -> bool:
        if name in j.known:
            return True
        if (j.folder / name).exists():
            j.known.add(name)
            return True
        return False

    @staticmethod
    def _stamps(j: _Journal) -> dict[str, int]:
        with j.mutex:
            names = list(j.files)
        return {name: read_stamp(j.folder / name) for name in names}


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
    return _implausible_rows(_to_rows(df), list(df.columns))


def _implausible_rows(rows: np.ndarray, columns: list[str]) -> str | None:
    """:func:`_implausible` on the float64 rows of :func:`_to_rows` (date in epoch ms)."""
    if not len(rows):
        return None
    ms = rows[:, 0]
    bad = (ms < _DATE_MIN_MS) | (ms >= _DATE_MAX_MS)
    if bad.any():
        i = int(np.flatnonzero(bad)[0])
        when = pd.Timestamp(int(ms[i]), unit="ms", tz="UTC")
        return f"column 'date' is {when} at row {i}, outside 1970-2100"
    at = {c: k for k, c in enumerate(columns)}
    for col in _PRICES:
        if col in at:
            v = rows[:, at[col]]
            bad_v = np.isinf(v) | (v <= 0)
            if bad_v.any():
                i = int(np.flatnonzero(bad_v)[0])
                return f"column {col!r} is {v[i]!r} at row {i} (prices must be finite and > 0)"
    if "high" in at and "low" in at:
        bad_v = rows[:, at["high"]] < rows[:, at["low"]]
        if bad_v.any():
            return f"'high' is below 'low' at row {int(np.flatnonzero(bad_v)[0])}"
    for col in _AMOUNTS:
        if col in at:
            v = rows[:, at[col]]
            bad_v = np.isinf(v) | (v < 0)
            if bad_v.any():
                i = int(np.flatnonzero(bad_v)[0])
                return f"column {col!r} is {v[i]!r} at row {i} (must be finite and >= 0)"
    if "funding_rate" in at:
        v = rows[:, at["funding_rate"]]
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
    fast = _fast_normalize(df, columns)
    if fast is not None:
        return fast
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


def _fast_normalize(df: pd.DataFrame, columns: list[str]) -> pd.DataFrame | None:
    """``normalize_frame`` for the usual case (UTC datetimes or epoch-ms integers, numeric
    values, rows present) without pandas' per-column conversions; None: the general path."""
    if not len(df) or "date" not in df.columns:
        return None
    dates = df["date"]
    dt = dates.dtype
    same = tuple(df.columns) == tuple(columns)
    try:
        vals = (df.iloc[:, 1:] if same else df.loc[:, columns[1:]]).to_numpy()
    except KeyError:
        return None
    if vals.dtype != np.float64 and vals.dtype != np.int64:
        return None
    if dt == _DATE_DTYPE and same and vals.dtype == np.float64 and not dates.hasnans:
        return df.reset_index(drop=True)  # already normalized: copy-on-write shares the data
    if isinstance(dt, pd.DatetimeTZDtype) and str(dt.tz) == "UTC":
        idx = pd.DatetimeIndex(dates).as_unit("ms")
        if idx.hasnans:
            return None
    elif dt == np.int64:  # epoch ms, as ccxt gives them
        idx = pd.DatetimeIndex(dates.to_numpy().astype("datetime64[ms]")).tz_localize("UTC")
    else:
        return None
    vals = np.array(vals, dtype=np.float64, copy=True)
    data: dict[str, object] = {"date": idx}
    for k, c in enumerate(columns[1:]):
        data[c] = vals[:, k]
    return pd.DataFrame(data)


def _empty(candle_type: str) -> pd.DataFrame:
    frame = _EMPTY.get(candle_type)
    if frame is None:
        frame = _EMPTY[candle_type] = _make_empty(candle_type)
    return frame.copy()


_EMPTY: dict[str, pd.DataFrame] = {}
_DATE_DTYPE = pd.DatetimeTZDtype(unit="ms", tz="UTC")


def _make_empty(candle_type: str) -> pd.DataFrame:
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
    return _read_checked(path)[0]


def read_stamp(path: Path) -> int:
    """The journal seq a feather file was stamped with (0: none, or no file), from its footer."""
    try:
        with pa.memory_map(str(path)) as src:
            meta = pa.ipc.open_file(src).schema.metadata or {}
    except FileNotFoundError:
        return 0
    except Exception:  # not an Arrow IPC file (old feather v1): never stamped
        return 0
    return _stamp_of(meta)


def _stamp_of(meta: dict[bytes, bytes]) -> int:
    raw = meta.get(SEQ_KEY)
    try:
        return int(raw) if raw is not None else 0
    except ValueError:
        return 0


def _read_checked(path: Path) -> tuple[pd.DataFrame, int]:
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
    return raw, _stamp_of(dict(table.schema.metadata or {}))


def read_file(path: Path, candle_type: str) -> pd.DataFrame:
    """Read one stored file: sorted, normalized; empty frame if absent; CorruptFileError if bad.
    The feather file alone: :meth:`FeatherStore.read` adds the rows still in the journal."""
    return read_file_stamped(path, candle_type)[0]


def read_file_stamped(path: Path, candle_type: str) -> tuple[pd.DataFrame, int]:
    """:func:`read_file` and the journal seq the file was stamped with (0: none)."""
    _check_candle_type(candle_type)
    if not path.exists():
        return _empty(candle_type), 0
    raw, stamp = _read_checked(path)
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
    return df, stamp


def _digest(df: pd.DataFrame) -> str:
    """SHA-256 of a frame's column names, dtypes and values (what ``write_atomic`` stores in the
    file's schema metadata; a read recomputes it, so a flipped byte in the data is seen)."""
    h = hashlib.sha256()
    for c in df.columns:
        h.update(f"{c}\x00{df[c].dtype}\x00".encode())
    if len(df.columns):
        h.update(pd.util.hash_pandas_object(df, index=False).to_numpy().tobytes())
    return h.hexdigest()


def write_atomic(
    df: pd.DataFrame,
    path: Path,
    compression_level: int | None = 9,
    *,
    stamp: int | None = None,
) -> None:
    """Write ``df`` as Freqtrade does (feather, lz4 level 9) through a temporary file + rename.

    ``compression_level=None`` is lz4's default: about 2.5 times faster to write, a few percent
    larger (for files only liqsignal reads and rewrites often, e.g. liquidation events).
    ``stamp``: the newest journal seq folded into ``df`` (schema metadata)."""
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
        if stamp:
            meta[SEQ_KEY] = str(int(stamp)).encode("ascii")
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
    _fsync_dir(path.parent)


def _remove_journal_orphans(folder: Path) -> None:
    """Temporary files of a journal rewrite that was killed; call under the folder's lock."""
    for tmp in folder.glob(f"{glob_escape(JOURNAL_NAME)}.*.tmp"):
        with contextlib.suppress(OSError):
            tmp.unlink()


# ---------------------------------------------------------------------------------------------
# the append journal: batched, crash-safe writes with one fsync per folder and commit

#: Journal file of one store folder (``<exchange>/futures/`` or its ``liqsignal/`` sub-folder):
#: not ``*.feather``, so Freqtrade never lists it, and guarded by the same folder lock.
JOURNAL_NAME = ".liqsignal-journal"
#: Schema-metadata key of the newest journal record folded into a feather file (its "LSN").
SEQ_KEY = b"liqsignal.journal_seq"
_J_MAGIC = b"LQJ1\x00\x00\x00\x00"  # file header, 8 bytes
_R_MAGIC = b"LQR1"
_R_HEAD = struct.Struct("<4sIq16s")  # magic, payload length, seq, blake2b-128 of seq+payload
_R_MAX = 1 << 30


def _rec_digest(seq: int, payload: bytes | memoryview) -> bytes:
    h = hashlib.blake2b(digest_size=16)
    h.update(struct.pack("<q", seq))
    h.update(payload)
    return h.digest()


def _encode_record(seq: int, name: str, candle_type: str, rows: np.ndarray) -> bytes:
    n, k = rows.shape
    nb_ = name.encode()
    ct = candle_type.encode()
    payload = (
        struct.pack("<HB", len(nb_), len(ct))
        + nb_
        + ct
        + struct.pack("<IB", n, k)
        + np.ascontiguousarray(rows, dtype="<f8").tobytes()
    )
    return _R_HEAD.pack(_R_MAGIC, len(payload), seq, _rec_digest(seq, payload)) + payload


def _decode_payload(payload: memoryview) -> tuple[str, str, np.ndarray]:
    ln, lc = struct.unpack_from("<HB", payload, 0)
    name = bytes(payload[3 : 3 + ln]).decode()
    ctype = bytes(payload[3 + ln : 3 + ln + lc]).decode()
    off = 3 + ln + lc
    n, k = struct.unpack_from("<IB", payload, off)
    rows = np.frombuffer(payload, dtype="<f8", count=n * k, offset=off + 5).reshape(n, k).copy()
    return name, ctype, rows


def _normal_rows(df: pd.DataFrame, columns: list[str]) -> np.ndarray | None:
    """:func:`_to_rows` of ``df`` when it is already normalized (exactly ``columns`` in order,
    ``date`` datetime64[ms, UTC] without NaT, float64 values, rows present), read column by
    column without building frames (a few µs instead of ~0.6 ms for a one-row frame); None for
    anything else (the general path checks and converts it)."""
    if not isinstance(df, pd.DataFrame) or not len(df) or list(df.columns) != columns:
        return None
    # pandas' own per-position column access (~1 µs; ``df[c]`` builds a Series, ~20 µs)
    fast = getattr(df, "_get_column_array", None)

    def column(i: int) -> object:
        return fast(i) if fast is not None else df.iloc[:, i].array  # another pandas: public

    dates: Any = column(0)
    if dates.dtype != _DATE_DTYPE:
        return None
    out = np.empty((len(df), len(columns)), dtype=np.float64)
    ms = dates.asi8
    if (ms == np.iinfo(np.int64).min).any():  # NaT
        return None
    out[:, 0] = ms
    for i in range(1, len(columns)):
        a = np.asarray(column(i))
        if a.dtype != np.float64:
            return None
        out[:, i] = a
    return out


def _to_rows(clean: pd.DataFrame) -> np.ndarray:
    """A normalized frame as one float64 array: the date in epoch ms (exact below 2**53), then
    the value columns in their stored order."""
    out = np.empty((len(clean), clean.shape[1]), dtype=np.float64)
    out[:, 0] = clean["date"].array.as_unit("ms").asi8
    if clean.shape[1] > 1:
        out[:, 1:] = clean.iloc[:, 1:].to_numpy(dtype=np.float64)
    return out


def _from_rows(rows: np.ndarray, candle_type: str) -> pd.DataFrame:
    columns = CANDLE_COLUMNS[candle_type]
    data: dict[str, object] = {
        "date": pd.to_datetime(rows[:, 0].astype(np.int64), unit="ms", utc=True).as_unit("ms")
    }
    for i, c in enumerate(columns[1:], start=1):
        data[c] = rows[:, i].astype(np.float64)
    return pd.DataFrame(data)


def _apply(old: pd.DataFrame, rows: np.ndarray, candle_type: str) -> pd.DataFrame:
    """The merge rule: old rows, then ``rows`` in journal order; the later row wins on a date."""
    if not len(rows):
        return old
    new = _from_rows(rows, candle_type)
    merged = pd.concat([old, new], ignore_index=True) if len(old) else new
    return (
        merged.drop_duplicates(subset="date", keep="last")
        .sort_values("date", kind="stable")
        .reset_index(drop=True)
    )


@dataclass
class _Pending:
    """Rows of one file in its folder's journal, in journal order, each with its record's seq."""

    candle_type: str
    seqs: list[np.ndarray] = field(default_factory=list)
    rows: list[np.ndarray] = field(default_factory=list)
    count: int = 0

    def add(self, seq: int, rows: np.ndarray) -> None:
        self.seqs.append(np.full(len(rows), seq, dtype=np.int64))
        self.rows.append(rows)
        self.count += len(rows)
        if len(self.rows) > 16:  # few big arrays instead of many small ones
            self.seqs = [np.concatenate(self.seqs)]
            self.rows = [np.concatenate(self.rows)]

    def after(self, seq: int) -> tuple[np.ndarray, int]:
        """Rows of records newer than ``seq`` (what a file stamped ``seq`` lacks) and the
        newest seq among them (``seq`` when none)."""
        if not self.rows:
            return np.empty((0, len(CANDLE_COLUMNS[self.candle_type]))), seq
        s = np.concatenate(self.seqs)
        r = np.concatenate(self.rows)
        keep = s > seq
        return r[keep], int(s[keep].max()) if keep.any() else seq


class _Journal:
    """One folder's append journal, as parsed so far (append-only file; re-read from where it
    was left, or from the start when it was replaced or truncated)."""

    def __init__(self, folder: Path) -> None:
        self.folder = folder
        self.path = folder / JOURNAL_NAME
        self.ino: int | None = None
        self.offset = 0
        self.last_seq = 0
        self.files: dict[str, _Pending] = {}
        self.known: set[str] = set()  # feather files seen to exist (they are never removed)
        self.mutex = threading.RLock()  # the in-memory view, shared by this process's threads

    def _reset(self) -> None:
        self.ino, self.offset, self.files = None, 0, {}

    def sync(self, *, repair: bool = False) -> None:
        """Parse what was appended since the last call. A torn last record (a writer killed
        mid-append: it was never reported stored) is ignored, and cut off when ``repair``
        (only under the folder lock). Damage before the end is a CorruptFileError."""
        with self.mutex:
            try:
                fh = open(self.path, "rb")  # noqa: SIM115 - closed below
            except FileNotFoundError:
                self._reset()
                return
            except OSError as e:
                raise CorruptFileError(f"{self.path}: cannot be read ({e.strerror or e})") from e
            with fh:
                st = os.fstat(fh.fileno())
                if st.st_ino != self.ino or st.st_size < self.offset:
                    self._reset()
                    self.ino = st.st_ino
                if st.st_size == self.offset:
                    return
                fh.seek(self.offset)
                data = memoryview(fh.read(st.st_size - self.offset))
            pos = 0
            if self.offset == 0:
                if len(data) < len(_J_MAGIC):
                    return self._torn(0, repair)
                if bytes(data[: len(_J_MAGIC)]) != _J_MAGIC:
                    raise CorruptFileError(
                        f"{self.path}: not a liqsignal journal (bad header); left in place"
                    )
                pos = len(_J_MAGIC)
            while pos < len(data):
                if len(data) - pos < _R_HEAD.size:
                    return self._torn(pos, repair, data)
                magic, length, seq, digest = _R_HEAD.unpack_from(data, pos)
                end = pos + _R_HEAD.size + length
                bad = magic != _R_MAGIC or length > _R_MAX
                if not bad and end > len(data):
                    return self._torn(pos, repair, data)
                payload = data[pos + _R_HEAD.size : end]
                if bad or _rec_digest(seq, payload) != digest:
                    if bad or end < len(data):
                        raise CorruptFileError(
                            f"{self.path}: damaged record at byte {self.offset + pos} with "
                            "records after it; left in place"
                        )
                    return self._torn(pos, repair, data)
                name, ctype, rows = _decode_payload(payload)
                self.files.setdefault(name, _Pending(ctype)).add(seq, rows)
                self.last_seq = max(self.last_seq, seq)
                pos = end
            self.offset += pos

    def _torn(self, pos: int, repair: bool, data: memoryview | None = None) -> None:
        """Stop before an incomplete last record (at ``pos`` of what was read); cut it off
        when ``repair``. A file holding only part of its header is cut to nothing."""
        good = self.offset + pos
        self.offset = good
        if not repair:
            return
        with open(self.path, "rb+") as fh:
            fh.truncate(good)
            os.fsync(fh.fileno())
        logger.info("%s: cut off an incomplete record left by an interrupted write", self.path)

    def append(self, batch: list[tuple[str, str, np.ndarray]]) -> None:
        """Append records and fsync once; call under the folder lock, after ``sync(repair)``."""
        with self.mutex:
            try:
                created = self.path.stat().st_size == 0
            except FileNotFoundError:
                created = True
            buf = bytearray(_J_MAGIC if created else b"")
            added: list[tuple[int, str, str, np.ndarray]] = []
            for name, ctype, rows in batch:
                seq = max(self.last_seq + 1, time.time_ns())  # increasing, even past a reset
                self.last_seq = seq
                buf += _encode_record(seq, name, ctype, rows)
                added.append((seq, name, ctype, rows))
            try:
                fd = os.open(self.path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644)
            except OSError as e:
                raise StoreWriteError(
                    f"{self.path}: cannot write ({e.strerror or e}); nothing stored"
                ) from e
            try:
                size = os.fstat(fd).st_size
                try:
                    view = memoryview(buf)
                    while view:
                        view = view[os.write(fd, view) :]
                    os.fsync(fd)
                except OSError as e:
                    with contextlib.suppress(OSError):
                        os.ftruncate(fd, size)
                    raise StoreWriteError(
                        f"{self.path}: cannot write ({e.strerror or e}); nothing stored"
                    ) from e
                st = os.fstat(fd)
            finally:
                os.close(fd)
            if created:
                _fsync_dir(self.folder)
            if self.ino is None:
                self.ino = st.st_ino
            self.offset = st.st_size
            for seq, name, ctype, rows in added:
                self.files.setdefault(name, _Pending(ctype)).add(seq, rows)

    def rewrite(self, stamps: dict[str, int]) -> None:
        """Replace the journal by its live records (rows newer than their file's stamp), one
        record per file (atomic rename); or remove it when nothing is live. Under the lock."""
        with self.mutex:
            live = []
            for name, pend in self.files.items():
                rows, seq = pend.after(stamps.get(name, 0))
                if len(rows):
                    live.append((seq, name, pend.candle_type, rows))
            if not live:
                with contextlib.suppress(FileNotFoundError):
                    self.path.unlink()
                _fsync_dir(self.folder)
                self._reset()
                return
            buf = bytearray(_J_MAGIC)
            for seq, name, ctype, rows in sorted(live, key=lambda t: t[0]):
                buf += _encode_record(seq, name, ctype, rows)
            fd, tmp = tempfile.mkstemp(prefix=f"{JOURNAL_NAME}.", suffix=".tmp", dir=self.folder)
            try:
                with os.fdopen(fd, "wb") as fh:
                    fh.write(buf)
                    fh.flush()
                    os.fsync(fh.fileno())
                os.replace(tmp, self.path)
            except OSError as e:
                Path(tmp).unlink(missing_ok=True)
                raise StoreWriteError(
                    f"{self.path}: cannot rewrite ({e.strerror or e}); the journal is unchanged"
                ) from e
            _fsync_dir(self.folder)
            self._reset()
            self.sync()


def _fsync_dir(folder: Path) -> None:
    try:
        dir_fd = os.open(folder, os.O_RDONLY)
    except OSError:  # pragma: no cover - platforms without directory fds
        return
    try:
        os.fsync(dir_fd)
    finally:
        os.close(dir_fd)


def _threshold(name: str, compact_rows: int) -> int:
    """Pending rows at which a file is compacted: between half and all of ``compact_rows``,
    fixed per file name, so files fed at the same pace are not all rewritten in one cycle."""
    half = max(1, compact_rows // 2)
    return half + zlib.crc32(name.encode()) % (compact_rows - half + 1)
