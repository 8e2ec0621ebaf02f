"""Tests for the SQLite outbox: idempotent enqueue, states, restart, schema and threads."""

from __future__ import annotations

import sqlite3
import threading

import pytest

from liqsignal.alerts.message import Alert
from liqsignal.alerts.outbox import SCHEMA_VERSION, Outbox
from liqsignal.exceptions import CorruptFileError


def _alert(i: int, photo: bytes | None = None) -> Alert:
    return Alert(key=f"armed|BTC|{i}", kind="armed", market="BTC", text=f"alert {i}",
                 side="long", photo=photo)  # fmt: skip


def test_enqueue_is_idempotent_and_ordered(outbox):
    ids = [outbox.enqueue(_alert(i)) for i in range(3)]
    assert outbox.enqueue(_alert(1)) == ids[1]
    assert [e.id for e in outbox.pending()] == ids
    assert [e.alert.text for e in outbox.pending()] == ["alert 0", "alert 1", "alert 2"]
    assert outbox.counts() == {"pending": 3, "sent": 0, "failed": 0}
    assert outbox.has_key("armed|BTC|2") and not outbox.has_key("armed|BTC|9")


def test_states_attempts_and_timestamps(outbox):
    a, b, c = (
        outbox.enqueue(_alert(i, photo=b"\x89PNG\x00" if i == 0 else None)) for i in range(3)
    )
    outbox.record_delivery(a, 111, 0, 41)
    outbox.mark_sent(a)
    assert outbox.mark_failed(b, "timeout", permanent=False, max_attempts=2) == "pending"
    assert outbox.mark_failed(b, "timeout again", permanent=False, max_attempts=2) == "failed"
    assert outbox.mark_failed(c, "chat gone", permanent=True) == "failed"
    sent = outbox.get(a)
    assert sent is not None and sent.status == "sent" and sent.message_ids == {"111": [41]}
    assert sent.alert.photo == b"\x89PNG\x00" and sent.finished_at is not None
    failed = outbox.get(b)
    assert failed is not None and failed.attempts == 2 and failed.last_error == "timeout again"
    assert failed.last_attempt_at is not None
    assert outbox.pending() == []
    # a key that failed or was sent is never enqueued again
    assert outbox.enqueue(_alert(1)) == b and outbox.pending() == []
    with pytest.raises(KeyError):
        outbox.mark_failed(999, "x", permanent=True)


def test_restart_sees_unsent_and_deliveries(tmp_path):
    path = tmp_path / "sub" / "box.sqlite"
    box = Outbox(path)
    first = box.enqueue(_alert(0))
    second = box.enqueue(_alert(1))
    box.mark_sent(first, {"111": [5]})
    box.record_delivery(second, 111, 0, 6)
    box.close()
    again = Outbox(path)
    assert [e.id for e in again.pending()] == [second]
    assert again.delivered_parts(second) == {("111", 0)}
    assert again.enqueue(_alert(0)) == first
    mode = sqlite3.connect(path).execute("PRAGMA journal_mode").fetchone()[0]
    assert mode == "wal"
    again.close()


def test_newer_schema_and_garbage_file_are_refused(tmp_path):
    newer = tmp_path / "newer.sqlite"
    conn = sqlite3.connect(newer)
    conn.execute(f"PRAGMA user_version = {SCHEMA_VERSION + 1}")
    conn.close()
    with pytest.raises(CorruptFileError, match=r"newer\.sqlite"):
        Outbox(newer)
    garbage = tmp_path / "garbage.sqlite"
    garbage.write_bytes(b"this is not sqlite" * 100)
    with pytest.raises(CorruptFileError, match=r"garbage\.sqlite"):
        Outbox(garbage)
    assert garbage.read_bytes().startswith(b"this is not sqlite")  # left in place


def test_threads_enqueue_each_key_once(outbox):
    def work(offset: int) -> None:
        for i in range(40):
            outbox.enqueue(_alert((i + offset) % 50))

    threads = [threading.Thread(target=work, args=(k * 7,)) for k in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    keys = [e.alert.key for e in outbox.pending()]
    assert len(keys) == len(set(keys)) == 50
