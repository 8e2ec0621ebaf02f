"""Keep alerts in a SQLite outbox: written before sending, marked after, never sent twice.

Life of an alert::

    enqueue(alert) ──> pending ──(all chats delivered)──> sent
                          │  └──(temporary failure)──> pending, attempts + 1
                          └──(permanent failure / too many attempts)──> failed

``enqueue`` is idempotent on ``Alert.key``: a key already in the file (in any state) is never
enqueued again. Each part (photo, text) delivered to each chat is recorded in ``deliveries`` the
moment Telegram confirms it, so after a crash a new ``Outbox`` on the same file resends only what
was not confirmed. The one unavoidable window is a crash between Telegram's reply and the
``record_delivery`` write: that part is sent again (at-least-once).

One connection, guarded by a lock: safe for one process with an asyncio loop and threads (each
call is a few short SQLite statements). WAL mode and a busy timeout let a second process read.
"""

from __future__ import annotations

import json
import sqlite3
import threading
import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

from liqsignal.alerts.message import Alert
from liqsignal.exceptions import ConfigError, CorruptFileError

__all__ = ["DEFAULT_OUTBOX_PATH", "SCHEMA_VERSION", "Outbox", "OutboxEntry"]

DEFAULT_OUTBOX_PATH = Path("user_data/liqsignal_alerts.sqlite")
SCHEMA_VERSION = 1

_SCHEMA = """
CREATE TABLE IF NOT EXISTS alerts (
    id              INTEGER PRIMARY KEY AUTOINCREMENT,
    key             TEXT    NOT NULL UNIQUE,
    kind            TEXT    NOT NULL,
    market          TEXT    NOT NULL,
    side            TEXT,
    text            TEXT    NOT NULL,
    photo           BLOB,
    created_at      REAL    NOT NULL,
    enqueued_at     REAL    NOT NULL,
    status          TEXT    NOT NULL DEFAULT 'pending'
                    CHECK (status IN ('pending', 'sent', 'failed')),
    attempts        INTEGER NOT NULL DEFAULT 0,
    last_attempt_at REAL,
    finished_at     REAL,
    last_error      TEXT,
    message_ids     TEXT
);
CREATE INDEX IF NOT EXISTS alerts_status ON alerts (status, id);
CREATE TABLE IF NOT EXISTS deliveries (
    alert_id   INTEGER NOT NULL REFERENCES alerts (id),
    chat_id    TEXT    NOT NULL,
    part       INTEGER NOT NULL,
    message_id INTEGER NOT NULL,
    sent_at    REAL    NOT NULL,
    PRIMARY KEY (alert_id, chat_id, part)
);
"""


@dataclass(frozen=True)
class OutboxEntry:
    """An alert as stored, with its delivery state. Times are UTC."""

    id: int
    alert: Alert
    status: str
    attempts: int
    enqueued_at: datetime
    last_attempt_at: datetime | None
    finished_at: datetime | None
    last_error: str | None
    message_ids: dict[str, list[int]] | None


def _ts(value: float | None) -> datetime | None:
    return None if value is None else datetime.fromtimestamp(value, UTC)


class Outbox:
    """SQLite outbox of alerts. ``Outbox(path)`` creates the file (and folder) if missing."""

    def __init__(self, path: str | Path = DEFAULT_OUTBOX_PATH) -> None:
        self.path = Path(path)
        self._lock = threading.RLock()
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
        except OSError as e:
            raise ConfigError(f"outbox path {str(self.path)!r}: cannot create folder: {e}") from e
        try:
            self._conn = sqlite3.connect(
                str(self.path), timeout=10.0, isolation_level=None, check_same_thread=False
            )
        except sqlite3.Error as e:
            raise ConfigError(f"outbox path {str(self.path)!r}: cannot open: {e}") from e
        try:
            self._conn.execute("PRAGMA busy_timeout = 10000")
            self._conn.execute("PRAGMA journal_mode = WAL")
            self._conn.execute("PRAGMA synchronous = NORMAL")
            self._conn.execute("PRAGMA foreign_keys = ON")
            self._migrate()
        except sqlite3.DatabaseError as e:
            self._conn.close()
            raise CorruptFileError(
                f"outbox file {str(self.path)!r} is not a readable SQLite database ({e}); "
                "left in place: move it away to start a new outbox"
            ) from e

    # -- lifecycle -------------------------------------------------------------------------

    def _migrate(self) -> None:
        with self._tx() as c:
            version = c.execute("PRAGMA user_version").fetchone()[0]
            if version > SCHEMA_VERSION:
                raise CorruptFileError(
                    f"outbox file {str(self.path)!r} has schema version {version}, newer than "
                    f"this liqsignal understands ({SCHEMA_VERSION}); upgrade liqsignal"
                )
            if version < SCHEMA_VERSION:
                # version 0 is a new file; future versions add steps here
                for stmt in _SCHEMA.split(";"):
                    if stmt.strip():
                        c.execute(stmt)
                c.execute(f"PRAGMA user_version = {SCHEMA_VERSION}")

    def close(self) -> None:
        """Close the connection. Further calls raise ``sqlite3.ProgrammingError``."""
        with self._lock:
            self._conn.close()

    def __enter__(self) -> Outbox:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def __repr__(self) -> str:
        return f"Outbox({str(self.path)!r})"

    @contextmanager
    def _tx(self) -> Iterator[sqlite3.Connection]:
        with self._lock:
            self._conn.execute("BEGIN IMMEDIATE")
            try:
                yield self._conn
            except BaseException:
                self._conn.execute("ROLLBACK")
                raise
            else:
                self._conn.execute("COMMIT")

    # -- writes ----------------------------------------------------------------------------

    def enqueue(self, alert: Alert) -> int:
        """Store ``alert`` as pending and return its id. If its key is already stored (pending,
        sent or failed), nothing changes and the existing id is returned."""
        now = time.time()
        with self._tx() as c:
            row = c.execute("SELECT id FROM alerts WHERE key = ?", (alert.key,)).fetchone()
            if row is not None:
                return int(row[0])
            cur = c.execute(
                "INSERT INTO alerts (key, kind, market, side, text, photo, created_at, "
                "enqueued_at) VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
                (
                    alert.key,
                    alert.kind,
                    alert.market,
                    alert.side,
                    alert.text,
                    None if alert.photo is None else bytes(alert.photo),
                    alert.created_at.timestamp(),
                    now,
                ),
            )
            assert cur.lastrowid is not None
            return int(cur.lastrowid)

    def record_delivery(
        self, alert_id: int, chat_id: int | str, part: int, message_id: int
    ) -> None:
        """Note that ``part`` (0, 1, ...) of an alert reached ``chat_id`` as ``message_id``."""
        with self._tx() as c:
            c.execute(
                "INSERT OR REPLACE INTO deliveries (alert_id, chat_id, part, message_id, sent_at) "
                "VALUES (?, ?, ?, ?, ?)",
                (alert_id, str(chat_id), int(part), int(message_id), time.time()),
            )

    def mark_sent(self, alert_id: int, message_ids: dict[str, list[int]] | None = None) -> None:
        """Mark an alert sent. ``message_ids`` maps chat id to Telegram message ids; by default
        it is rebuilt from the recorded deliveries."""
        with self._tx() as c:
            if message_ids is None:
                message_ids = self._deliveries(c, alert_id)
            c.execute(
                "UPDATE alerts SET status = 'sent', finished_at = ?, message_ids = ?, "
                "last_error = NULL WHERE id = ?",
                (time.time(), json.dumps(message_ids, sort_keys=True), alert_id),
            )

    def mark_failed(
        self, alert_id: int, error: str, permanent: bool, max_attempts: int | None = None
    ) -> str:
        """Count a failed attempt. A permanent failure (or reaching ``max_attempts``) moves the
        alert to ``failed`` and it is never tried again; otherwise it stays pending. Returns the
        new status."""
        now = time.time()
        with self._tx() as c:
            row = c.execute("SELECT attempts FROM alerts WHERE id = ?", (alert_id,)).fetchone()
            if row is None:
                raise KeyError(f"outbox has no alert with id {alert_id}")
            attempts = int(row[0]) + 1
            give_up = permanent or (max_attempts is not None and attempts >= max_attempts)
            status = "failed" if give_up else "pending"
            c.execute(
                "UPDATE alerts SET status = ?, attempts = ?, last_attempt_at = ?, "
                "last_error = ?, finished_at = ? WHERE id = ?",
                (status, attempts, now, error[:2000], now if give_up else None, alert_id),
            )
            return status

    def note_attempt(self, alert_id: int) -> None:
        """Record that a send attempt of the alert starts now (before any HTTP request)."""
        with self._tx() as c:
            c.execute("UPDATE alerts SET last_attempt_at = ? WHERE id = ?", (time.time(), alert_id))

    # -- reads -----------------------------------------------------------------------------

    @staticmethod
    def _deliveries(c: sqlite3.Connection, alert_id: int) -> dict[str, list[int]]:
        out: dict[str, list[int]] = {}
        for chat, mid in c.execute(
            "SELECT chat_id, message_id FROM deliveries WHERE alert_id = ? ORDER BY chat_id, part",
            (alert_id,),
        ):
            out.setdefault(chat, []).append(int(mid))
        return out

    def delivered_parts(self, alert_id: int) -> set[tuple[str, int]]:
        """``{(chat_id, part), ...}`` already confirmed for an alert."""
        with self._lock:
            rows = self._conn.execute(
                "SELECT chat_id, part FROM deliveries WHERE alert_id = ?", (alert_id,)
            ).fetchall()
        return {(str(chat), int(part)) for chat, part in rows}

    def has_key(self, key: str) -> bool:
        """True if an alert with this dedupe key was ever enqueued."""
        with self._lock:
            return (
                self._conn.execute("SELECT 1 FROM alerts WHERE key = ?", (key,)).fetchone()
                is not None
            )

    def pending(self, limit: int | None = None) -> list[OutboxEntry]:
        """Pending alerts, oldest first (enqueue order)."""
        return self._select("WHERE status = 'pending' ORDER BY id", limit)

    def get(self, alert_id: int) -> OutboxEntry | None:
        """One alert by id, or None."""
        rows = self._select(f"WHERE id = {int(alert_id)}", None)
        return rows[0] if rows else None

    def entries(self, status: str | None = None) -> list[OutboxEntry]:
        """All alerts (or those with ``status``), oldest first."""
        if status is None:
            return self._select("ORDER BY id", None)
        if status not in ("pending", "sent", "failed"):
            raise ConfigError(f"status must be pending, sent or failed, got {status!r}")
        return self._select(f"WHERE status = '{status}' ORDER BY id", None)

    def counts(self) -> dict[str, int]:
        """Number of alerts per status."""
        with self._lock:
            rows = self._conn.execute("SELECT status, COUNT(*) FROM alerts GROUP BY status")
            out = {"pending": 0, "sent": 0, "failed": 0}
            out.update({str(s): int(n) for s, n in rows})
        return out

    def _select(self, where: str, limit: int | None) -> list[OutboxEntry]:
        sql = (
            "SELECT id, key, kind, market, side, text, photo, created_at, enqueued_at, status, "
            "attempts, last_attempt_at, finished_at, last_error, message_ids FROM alerts " + where
        )
        params: Sequence[object] = ()
        if limit is not None:
            sql += " LIMIT ?"
            params = (int(limit),)
        with self._lock:
            rows = self._conn.execute(sql, params).fetchall()
        out = []
        for r in rows:
            alert = Alert(
                key=r[1],
                kind=r[2],
                market=r[3],
                side=r[4],
                text=r[5],
                photo=None if r[6] is None else bytes(r[6]),
                created_at=datetime.fromtimestamp(r[7], UTC),
            )
            enq = _ts(r[8])
            assert enq is not None
            out.append(
                OutboxEntry(
                    id=int(r[0]),
                    alert=alert,
                    status=r[9],
                    attempts=int(r[10]),
                    enqueued_at=enq,
                    last_attempt_at=_ts(r[11]),
                    finished_at=_ts(r[12]),
                    last_error=r[13],
                    message_ids=None if r[14] is None else json.loads(r[14]),
                )
            )
        return out
