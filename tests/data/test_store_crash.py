"""kill -9 at random moments while the store writes batches: nothing reported stored is lost.

A child process writes numbered batches in a loop through the store's journal
(:meth:`FeatherStore.append` + :meth:`~FeatherStore.commit`, small thresholds so compactions
and journal rewrites happen all the time) and, every seventh batch, one file through
:meth:`FeatherStore.merge`; after each batch returns it prints the batch number (flushed). The
parent kills it with SIGKILL after a random (seeded) delay, then checks the store: every feather
file reads back with a valid checksum (the old or the new content, never half a file), every
row of every reported batch is there with the value of the last reported write, no date twice;
then it starts a new child at the batch after the last reported one. At the end a clean close
folds the journal into the feather files, which alone then hold everything.
"""

from __future__ import annotations

import multiprocessing
import os
import random
import signal
import sys
import time
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from liqsignal.data.store import JOURNAL_NAME, FeatherStore, read_file

T0 = pd.Timestamp("2026-01-01", tz="UTC")
#: (exchange, pair, candle type) of the files the child writes: two folders of one venue
#: (taker buy lives in the ``liqsignal/`` sub-folder) and a second venue.
FILES = (
    ("binance", "BTC/USDT:USDT", "futures"),
    ("binance", "BTC/USDT:USDT", "taker_buy"),
    ("okx", "ETH/USDT:USDT", "futures"),
)


def _child(datadir: str, start: int, out_fd: int) -> None:
    """The writer: batches from ``start`` on, each reported (unbuffered) once stored."""
    store = FeatherStore(datadir, compact_rows=6, journal_bytes=4096)
    os.write(out_fd, b"ready\n")
    i = start
    while True:
        for k, (ex, pair, ctype) in enumerate(FILES):
            rows = batch_rows(i, k, ctype)
            if k == 2 and i % 7 == 0:
                store.merge(ex, pair, "1m", ctype, rows)
            else:
                store.append(ex, pair, "1m", ctype, rows)
        failed = store.commit()
        if failed:
            os.write(out_fd, f"not stored: {failed}\n".encode())
            os._exit(3)
        os.write(out_fd, f"{i}\n".encode())
        i += 1


def base_value(k: int, d: int) -> float:
    return 1.0 + k * 1000.0 + d


def rev_value(k: int, i: int) -> float:
    return 0.5 + k * 1000.0 + 10.0 * i


def _frame(ctype: str, dates: list[int], values: list[float]) -> pd.DataFrame:
    t = T0 + pd.to_timedelta(np.asarray(dates) * 60, unit="s")
    v = np.asarray(values, dtype=np.float64)
    if ctype == "taker_buy":
        return pd.DataFrame({"date": t, "taker_buy_volume": v, "taker_buy_quote_volume": 2 * v})
    return pd.DataFrame({"date": t, "open": v, "high": v, "low": v, "close": v, "volume": v})


def batch_rows(i: int, k: int, ctype: str) -> pd.DataFrame:
    """Batch ``i`` of file ``k``: two new minutes (2i, 2i+1) and, from the second batch on, a
    revision of the minute before them (2i-1), as an exchange correcting its last answer."""
    dates = [2 * i, 2 * i + 1]
    values = [base_value(k, 2 * i), base_value(k, 2 * i + 1)]
    if i > 0:
        dates.insert(0, 2 * i - 1)
        values.insert(0, rev_value(k, i))
    return _frame(ctype, dates, values)


def expected_value(k: int, d: int, last: int) -> set[float]:
    """Values minute ``d`` of file ``k`` may hold when batch ``last`` is the newest reported
    one: fixed for every minute a reported batch wrote last; either for the one the next,
    unreported (perhaps half-written) batch may have revised."""
    if d % 2 == 0:
        return {base_value(k, d)}
    i = (d + 1) // 2  # the batch that revises d
    if i <= last:
        return {rev_value(k, i)}
    if i == last + 1:
        return {base_value(k, d), rev_value(k, i)}
    return {base_value(k, d)}


def _values(df: pd.DataFrame, ctype: str) -> np.ndarray:
    col = "taker_buy_volume" if ctype == "taker_buy" else "close"
    return df[col].to_numpy()


def _check(datadir: Path, last: int) -> None:
    store = FeatherStore(datadir)
    for k, (ex, pair, ctype) in enumerate(FILES):
        path = store.path(ex, pair, "1m", ctype)
        if path.exists():
            read_file(path, ctype)  # the feather file alone: readable, checksum valid
        df = store.read(ex, pair, "1m", ctype)  # with the journal
        minutes = ((df["date"] - T0).dt.total_seconds() // 60).astype(int).to_numpy()
        assert len(np.unique(minutes)) == len(minutes), f"{path}: a minute stored twice"
        need = 2 * last + 2  # minutes 0 .. 2*last+1 were reported stored
        assert len(minutes) >= need and (minutes[:need] == np.arange(need)).all(), (
            f"{path}: reported minutes missing after batch {last}: have {len(minutes)} rows"
        )
        assert len(minutes) <= need + 2, f"{path}: rows beyond the unreported batch"
        vals = _values(df, ctype)
        for d, v in zip(minutes, vals, strict=True):
            assert v in expected_value(k, int(d), last), (
                f"{path}: minute {d} holds {v}, expected one of {expected_value(k, int(d), last)}"
            )


def _start_child(datadir: Path, start: int) -> tuple[multiprocessing.Process, int]:
    """A forked writer (the imports are done: a kill can come within milliseconds of its
    start) and the read end of its report pipe."""
    r, w = os.pipe()
    proc = multiprocessing.get_context("fork").Process(
        target=_child, args=(str(datadir), start, w), daemon=True
    )
    proc.start()
    os.close(w)
    return proc, r


def _read_all(fd: int) -> str:
    chunks = []
    while chunk := os.read(fd, 65536):
        chunks.append(chunk)
    os.close(fd)
    return b"".join(chunks).decode()


def _campaign(tmp_path: Path, kills: int, seed: int) -> None:
    rng = random.Random(seed)
    datadir = tmp_path / "data"
    last = -1
    killed_at: list[int] = []
    for _ in range(kills):
        child, fd = _start_child(datadir, last + 1)
        got = b""
        while not got.endswith(b"ready\n"):
            chunk = os.read(fd, 6 - len(got))
            assert chunk, "the writer died before it started"
            got += chunk
        time.sleep(rng.uniform(0.0, 0.8))
        assert child.pid is not None
        os.kill(child.pid, signal.SIGKILL)
        child.join(timeout=30)
        out = _read_all(fd)
        assert child.exitcode == -signal.SIGKILL, f"writer ended by itself: {out[-300:]}"
        done = [int(x) for x in out.split()]
        if done:
            assert done[0] == last + 1 and done == list(range(done[0], done[-1] + 1))
            last = done[-1]
        killed_at.append(last)
        _check(datadir, last)
    assert last >= kills // 2, f"too few batches reported ({last}) for a meaningful test"
    # a clean end: close folds every journaled row into the feather files
    store = FeatherStore(datadir, compact_rows=6, journal_bytes=4096)
    for k, (ex, pair, ctype) in enumerate(FILES):
        store.append(ex, pair, "1m", ctype, batch_rows(last + 1, k, ctype))
    store.close()
    last += 1
    for k, (ex, pair, ctype) in enumerate(FILES):
        path = store.path(ex, pair, "1m", ctype)
        assert not (path.parent / JOURNAL_NAME).exists()
        df = read_file(path, ctype)  # Freqtrade's view: the feather file alone
        assert len(df) == 2 * last + 2
        vals = _values(df, ctype)
        for d in range(2 * last + 2):
            assert vals[d] in expected_value(k, d, last)
    leftovers = [p.name for p in datadir.rglob("*.tmp")]
    assert not leftovers, f"temporary files left after a clean close: {leftovers}"


@pytest.mark.skipif(sys.platform == "win32", reason="SIGKILL and flock are POSIX")
def test_kill_9_at_random_moments_loses_no_reported_row(tmp_path: Path) -> None:
    _campaign(tmp_path, kills=20, seed=14)


@pytest.mark.slow
@pytest.mark.skipif(sys.platform == "win32", reason="SIGKILL and flock are POSIX")
def test_kill_9_campaign_long(tmp_path: Path) -> None:
    _campaign(tmp_path, kills=150, seed=1414)


def test_torn_journal_tail_is_ignored_then_cut_off_and_damage_before_the_end_is_named(
    tmp_path: Path,
) -> None:
    """A record cut short (power lost mid-append: never reported stored) is not read and is cut
    off by the next commit; a damaged record with records after it is a CorruptFileError
    naming the journal and the byte (rows after it are never silently dropped)."""
    from liqsignal.exceptions import CorruptFileError

    ex, pair, ctype = FILES[0]
    store = FeatherStore(tmp_path, compact_rows=1000)
    for i in range(3):
        store.append(ex, pair, "1m", ctype, batch_rows(i, 0, ctype))
        assert store.commit() == {}
    journal = store.path(ex, pair, "1m", ctype).parent / JOURNAL_NAME
    good = journal.read_bytes()
    with open(journal, "ab") as fh:  # half a record
        fh.write(good[8:40])
    assert len(FeatherStore(tmp_path).read(ex, pair, "1m", ctype)) == 6
    store.append(ex, pair, "1m", ctype, batch_rows(3, 0, ctype))
    assert store.commit() == {}
    assert len(FeatherStore(tmp_path).read(ex, pair, "1m", ctype)) == 8
    data = bytearray(journal.read_bytes())
    assert data[: len(good)] == good  # the torn bytes were cut off before the append
    data[60] ^= 0xFF  # inside the first record
    journal.write_bytes(bytes(data))
    with pytest.raises(CorruptFileError, match=rf"{JOURNAL_NAME}: damaged record at byte 8"):
        FeatherStore(tmp_path).read(ex, pair, "1m", ctype)


def test_a_failed_journal_write_is_reported_per_file_and_stores_nothing(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import errno

    import liqsignal.data.store as store_mod
    from liqsignal.data.store import StoreWriteError

    ex, pair, ctype = FILES[0]
    store = FeatherStore(tmp_path, compact_rows=1000)
    store.append(ex, pair, "1m", ctype, batch_rows(0, 0, ctype))
    assert store.commit() == {}
    store.append(ex, pair, "1m", ctype, batch_rows(1, 0, ctype))
    path = store.path(ex, pair, "1m", ctype)
    journal = path.parent / JOURNAL_NAME
    size = journal.stat().st_size if journal.exists() else 0

    def full(fd: int, data: object) -> int:
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

    monkeypatch.setattr(store_mod.os, "write", full)
    failed = store.commit()
    monkeypatch.undo()
    assert list(failed) == [path]
    err = failed[path]
    assert isinstance(err, StoreWriteError)
    assert str(journal) in str(err) and "No space left on device" in str(err)
    assert (journal.stat().st_size if journal.exists() else 0) == size
    assert len(FeatherStore(tmp_path).read(ex, pair, "1m", ctype)) == 2  # batch 0 only
