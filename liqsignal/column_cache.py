"""A bounded cache of computed liq columns, keyed by pair, engine settings and the candles' hash.

A Freqtrade hyperopt that moves only guard thresholds (or runs with ``--analyze-per-epoch``)
calls ``populate_indicators`` with the same candles in every epoch; rebuilding the map each time
is the epoch's largest cost. :class:`ColumnCache` keeps the computed block of columns per
``key`` (pair, timeframe, engine and forecast settings: everything the computation reads
besides the frame) and :func:`frame_fingerprint` of the input frame (its index, column names,
dtypes and every value), so a hit is the very result a fresh computation would give: a frame
with one more candle, one changed value or other settings is a miss. Point in time is kept
because nothing about the frame is assumed: the cached block was computed from identical
input.

Entries are dropped least recently used past ``max_bytes`` (default 512 MiB, environment
``LIQSIGNAL_COLUMN_CACHE_MB``; 0 turns the cache off). Each process (a hyperopt worker) has its
own cache; a hit returns a fresh copy, so a caller may modify it.
"""

from __future__ import annotations

import hashlib
import os
from collections import OrderedDict
from collections.abc import Callable, Hashable
from dataclasses import dataclass

import numpy as np
import pandas as pd

__all__ = ["ColumnCache", "frame_fingerprint"]

DEFAULT_MAX_MB = 512.0


def _column_bytes(s: pd.Series) -> bytes:
    if isinstance(s.dtype, pd.DatetimeTZDtype) or pd.api.types.is_datetime64_dtype(s.dtype):
        return pd.DatetimeIndex(s).as_unit("ns").asi8.tobytes()
    if pd.api.types.is_numeric_dtype(s.dtype) and not pd.api.types.is_extension_array_dtype(
        s.dtype
    ):
        return np.ascontiguousarray(s.to_numpy()).tobytes()
    return pd.util.hash_pandas_object(s, index=False).to_numpy().tobytes()


def frame_fingerprint(df: pd.DataFrame) -> str:
    """A hash of ``df``'s index, column names, dtypes and values (equal frames, equal hash)."""
    h = hashlib.blake2b(digest_size=20)
    idx = df.index
    if isinstance(idx, pd.RangeIndex):
        h.update(f"range:{idx.start}:{idx.stop}:{idx.step}".encode())
    else:
        h.update(pd.util.hash_pandas_object(idx).to_numpy().tobytes())
    h.update(repr((len(df), [str(c) for c in df.columns], [str(t) for t in df.dtypes])).encode())
    for c in df.columns:
        h.update(_column_bytes(df[c]))
    return h.hexdigest()


@dataclass
class _Entry:
    values: np.ndarray
    columns: tuple[str, ...]


class ColumnCache:
    """LRU cache of float64 column blocks: ``frame(key, df, compute)`` returns ``compute()``'s
    columns on ``df``'s index, computed once per ``(key, frame_fingerprint(df))``."""

    def __init__(self, max_bytes: int | None = None) -> None:
        if max_bytes is None:
            mb = float(os.environ.get("LIQSIGNAL_COLUMN_CACHE_MB", DEFAULT_MAX_MB))
            max_bytes = int(mb * 2**20)
        self.max_bytes = max_bytes
        self.hits = 0
        self.misses = 0
        self._entries: OrderedDict[tuple[Hashable, str], _Entry] = OrderedDict()
        self._bytes = 0

    def __len__(self) -> int:
        return len(self._entries)

    @property
    def nbytes(self) -> int:
        return self._bytes

    def clear(self) -> None:
        self._entries.clear()
        self._bytes = 0

    def frame(
        self, key: Hashable, df: pd.DataFrame, compute: Callable[[], pd.DataFrame]
    ) -> pd.DataFrame:
        """``compute()`` (a frame of float columns on ``df``'s index), from the cache when the
        same ``key`` was computed on an identical ``df``; the result is always a new frame."""
        if self.max_bytes <= 0:
            return compute()
        k = (key, frame_fingerprint(df))
        hit = self._entries.get(k)
        if hit is not None:
            self.hits += 1
            self._entries.move_to_end(k)
            return pd.DataFrame(hit.values.copy(), index=df.index, columns=list(hit.columns))
        self.misses += 1
        out = compute()
        values = out.to_numpy(dtype="float64", copy=True)
        if values.nbytes <= self.max_bytes:
            self._entries[k] = _Entry(values, tuple(str(c) for c in out.columns))
            self._bytes += values.nbytes
            while self._bytes > self.max_bytes:
                _, old = self._entries.popitem(last=False)
                self._bytes -= old.values.nbytes
        return out
