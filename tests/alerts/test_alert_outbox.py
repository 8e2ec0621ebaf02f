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


def test_keys_carry_the_pocket_usd_and_a_restart_can_still_escalate(tmp_path):
    from datetime import UTC, datetime, timedelta

    from liqsignal.alerts.events import BarView, EventDetector, EventRules, Pocket
    from liqsignal.alerts.message import alert_for

    t0, m = datetime(2026, 1, 29, 10, tzinfo=UTC), "BTC/USDT:USDT"

    def bar(i: int, usd: float) -> BarView:
        p = Pocket("long", 86_425.0, 86_575.0, 86_500.0, usd, -0.5, 1, usd, {"b": 1.0})
        return BarView(m, t0 + i * timedelta(hours=1), 87_000.0, 86_900.0, 87_100.0,
                       armed={"long": p}, consumed_usd={"long": 0.0, "short": 0.0})  # fmt: skip

    rules = EventRules(escalate_usd_ratio=1.5, cooldown_s=6 * 3600)
    with Outbox(tmp_path / "a.sqlite") as box:
        (ev,) = EventDetector(rules).observe(bar(0, 5e6))
        box.enqueue(alert_for(ev))
    with Outbox(tmp_path / "a.sqlite") as box:  # a restart
        stored = box.keys()
        assert stored == {ev.key: 5e6}
        same, grown = EventDetector(rules), EventDetector(rules)
        same.restore(list(stored), {k: u for k, u in stored.items() if u is not None})
        grown.restore(list(stored), {k: u for k, u in stored.items() if u is not None})
        assert same.observe(bar(1, 6e6)) == []  # +20 %: within the cooldown, no step
        assert [e.kind for e in grown.observe(bar(1, 8e6))] == ["escalated"]  # +60 %


def test_prune_deletes_old_sent_alerts_and_pictures_only(outbox):
    ids = [outbox.enqueue(_alert(i, photo=b"\x89PNG" + bytes(100))) for i in range(4)]
    outbox.mark_sent(ids[0])
    outbox.mark_sent(ids[1])
    outbox.mark_failed(ids[2], "400 chat not found", permanent=True)
    with sqlite3.connect(outbox.path) as c:  # ids[0] finished 40 days ago, ids[1] 3 days ago
        c.execute(
            "UPDATE alerts SET finished_at = finished_at - 40 * 86400 WHERE id = ?", (ids[0],)
        )
        c.execute("UPDATE alerts SET finished_at = finished_at - 3 * 86400 WHERE id = ?", (ids[1],))
    assert outbox.prune(30 * 86_400.0, 2 * 86_400.0) == 1
    left = {e.id: e for e in outbox.entries()}
    assert sorted(left) == ids[1:]
    assert left[ids[1]].alert.photo is None  # sent 3 days ago: text kept, picture dropped
    assert left[ids[2]].alert.photo is not None and left[ids[3]].alert.photo is not None
    assert not outbox.has_key(_alert(0).key) and outbox.counts() == {"pending": 1, "sent": 1,
                                                                      "failed": 1}  # fmt: skip
    with pytest.raises(Exception, match="ages must be >= 0"):
        outbox.prune(-1.0, 0.0)


def test_a_version_2_outbox_is_migrated_keeping_its_rows(tmp_path):
    path = tmp_path / "v2.sqlite"
    with Outbox(path) as box:
        box.enqueue(_alert(1))
    with sqlite3.connect(path) as c:  # back to version 2: no usd column
        c.execute("ALTER TABLE alerts DROP COLUMN usd")
        c.execute("PRAGMA user_version = 2")
    with Outbox(path) as box:
        assert box.keys() == {_alert(1).key: None}
        with sqlite3.connect(path) as c:
            assert c.execute("PRAGMA user_version").fetchone()[0] == SCHEMA_VERSION == 3
