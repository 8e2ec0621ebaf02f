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
call is a few short SQLite statements; the sender runs them in a worker thread, never on the
event loop). WAL mode lets a second process read.

Faults, each told apart (never "corrupt" for a file that is only busy):

- busy (another process holds a write transaction): a call waits at most ``busy_timeout_s``
  (default 2 s) and then raises :class:`OutboxBusyError` (a ``TemporaryDataError``: retry later);
- not an outbox (not SQLite, another program's database, a newer schema): refused with
  :class:`CorruptFileError` *before anything in it is changed* (no WAL switch, no tables);
- an outbox that is damaged (``PRAGMA quick_check`` fails on open, or a statement later reports
  a malformed database): the file is moved aside to ``<name>.damaged-<UTC time>`` (kept, never
  deleted), an ERROR is logged naming both paths, and a fresh outbox takes its place, so new
  alerts are not written into the damaged file and the queue is not stuck.
"""

from __future__ import annotations

import contextlib
import json
import logging
import sqlite3
import threading
import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from liqsignal.alerts.message import Alert
from liqsignal.exceptions import ConfigError, CorruptFileError, TemporaryDataError

__all__ = ["DEFAULT_OUTBOX_PATH", "SCHEMA_VERSION", "Outbox", "OutboxBusyError", "OutboxEntry"]

logger = logging.getLogger(__name__)

_SQLITE_HEADER = b"SQLite format 3\x00"
_OUR_TABLES = frozenset({"alerts", "deliveries", "tracked", "sqlite_sequence"})


class OutboxBusyError(TemporaryDataError):
    """Another process holds a write transaction on the outbox: nothing was changed, retry."""


def _damaged(e: BaseException) -> bool:
    text = str(e).lower()
    return any(w in text for w in ("malformed", "not a database", "quick_check", "corrupt"))


def _busy(e: BaseException) -> bool:
    text = str(e).lower()
    return isinstance(e, sqlite3.OperationalError) and ("locked" in text or "busy" in text)


DEFAULT_OUTBOX_PATH = Path("user_data/liqsignal_alerts.sqlite")
SCHEMA_VERSION = 3

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
#: Version 2: the pocket each side of a market is tracking since its "armed" alert (so a
#: restart between "armed" and "consumed" keeps the link to the pocket).
_SCHEMA_V2 = """
CREATE TABLE IF NOT EXISTS tracked (
    market     TEXT NOT NULL,
    side       TEXT NOT NULL,
    state      TEXT NOT NULL,
    updated_at REAL NOT NULL,
    PRIMARY KEY (market, side)
);
"""
#: Version 3: the pocket's USD of each armed/escalated alert (restored into the detector).
_SCHEMA_V3 = """
ALTER TABLE alerts ADD COLUMN usd REAL;
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

    def __init__(
        self, path: str | Path = DEFAULT_OUTBOX_PATH, *, busy_timeout_s: float = 2.0
    ) -> None:
        self.path = Path(path)
        self.busy_timeout_s = float(busy_timeout_s)
        self._lock = threading.RLock()
        #: Where a damaged outbox was moved (None: never happened in this process).
        self.moved_damaged_to: Path | None = None
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
        except OSError as e:
            raise ConfigError(f"outbox path {str(self.path)!r}: cannot create folder: {e}") from e
        self._check_ours()
        self._conn = self._open()
        try:
            self._setup()
        except sqlite3.DatabaseError as e:
            self._conn.close()
            if _busy(e):
                raise self._busy_error(e) from e
            if not _damaged(e):
                raise ConfigError(f"outbox path {str(self.path)!r}: cannot use: {e}") from e
            self._conn = self._replace_damaged(e)

    def _open(self) -> sqlite3.Connection:
        try:
            conn = sqlite3.connect(
                str(self.path),
                timeout=self.busy_timeout_s,
                isolation_level=None,
                check_same_thread=False,
            )
            conn.execute(f"PRAGMA busy_timeout = {int(self.busy_timeout_s * 1000)}")
        except sqlite3.Error as e:
            raise ConfigError(f"outbox path {str(self.path)!r}: cannot open: {e}") from e
        return conn

    def _setup(self) -> None:
        row = self._conn.execute("PRAGMA quick_check").fetchone()
        if row is None or row[0] != "ok":
            raise sqlite3.DatabaseError(f"quick_check: {row[0] if row else 'no answer'}")
        self._conn.execute("PRAGMA journal_mode = WAL")
        self._conn.execute("PRAGMA synchronous = NORMAL")
        self._conn.execute("PRAGMA foreign_keys = ON")
        self._migrate()

    def _check_ours(self) -> None:
        """Refuse a file that is not an outbox before changing anything in it."""
        try:
            size = self.path.stat().st_size
        except FileNotFoundError:
            return
        except OSError as e:
            raise ConfigError(f"outbox path {str(self.path)!r}: cannot read: {e}") from e
        if size == 0:
            return
        with open(self.path, "rb") as fh:
            head = fh.read(len(_SQLITE_HEADER))
        if head != _SQLITE_HEADER:
            raise CorruptFileError(
                f"outbox file {str(self.path)!r} is not a SQLite database (another file at that "
                "path?); left in place unchanged: set liqsignal.alerts.outbox to another path"
            )
        try:
            probe = sqlite3.connect(
                f"file:{self.path}?mode=ro", uri=True, timeout=self.busy_timeout_s
            )
        except sqlite3.Error as e:  # pragma: no cover - unreadable header page
            raise ConfigError(f"outbox path {str(self.path)!r}: cannot open: {e}") from e
        try:
            version = probe.execute("PRAGMA user_version").fetchone()[0]
            tables = {r[0] for r in probe.execute("SELECT name FROM sqlite_master")}
        except sqlite3.DatabaseError as e:
            if _busy(e):
                raise self._busy_error(e) from e
            return  # damaged: handled (moved aside) when opened for writing
        finally:
            probe.close()
        if version > SCHEMA_VERSION:
            raise CorruptFileError(
                f"outbox file {str(self.path)!r} has schema version {version}, newer than "
                f"this liqsignal understands ({SCHEMA_VERSION}); upgrade liqsignal"
            )
        tables = {t for t in tables if not t.startswith(("sqlite_autoindex", "alerts_status"))}
        if (version == 0 and tables) or (tables and not tables <= _OUR_TABLES):
            raise CorruptFileError(
                f"outbox file {str(self.path)!r} is another program's SQLite database (tables "
                f"{sorted(tables)}); left in place unchanged: set liqsignal.alerts.outbox to "
                "another path"
            )

    def _busy_error(self, e: BaseException) -> OutboxBusyError:
        return OutboxBusyError(
            f"outbox {str(self.path)!r} is busy: another process holds a write transaction "
            f"(waited {self.busy_timeout_s:g} s; {e}); nothing was changed, retry later"
        )

    def _replace_damaged(self, e: BaseException) -> sqlite3.Connection:
        """Move a damaged outbox aside (kept) and start a fresh one in its place."""
        stamp = datetime.now(UTC).strftime("%Y%m%dT%H%M%SZ")
        aside = self.path.with_name(f"{self.path.name}.damaged-{stamp}")
        for suffix in ("", "-wal", "-shm"):
            src = Path(f"{self.path}{suffix}")
            if src.exists():
                src.replace(Path(f"{aside}{suffix}"))
        self.moved_damaged_to = aside
        logger.error(
            "Outbox %s is damaged (%s): moved to %s (kept for inspection; its unsent alerts are "
            "not resent) and a fresh outbox started in its place",
            self.path,
            e,
            aside,
        )
        conn = self._open()
        self._conn = conn
        self._setup()
        return conn

    def _guard(self, e: sqlite3.DatabaseError) -> None:
        """Translate a failed statement: busy -> OutboxBusyError; damaged -> fresh file."""
        if _busy(e):
            raise self._busy_error(e) from e
        if isinstance(e, sqlite3.ProgrammingError):  # closed connection: a caller bug
            raise e
        if not _damaged(e):  # disk full, read-only file, I/O error: not the file's fault
            raise TemporaryDataError(f"outbox {str(self.path)!r}: {e}; retry later") from e
        with self._lock:
            with contextlib.suppress(sqlite3.Error):
                self._conn.close()
            self._replace_damaged(e)

    # -- lifecycle -------------------------------------------------------------------------

    def _migrate(self) -> None:
        if self._conn.execute("PRAGMA user_version").fetchone()[0] == SCHEMA_VERSION:
            return  # current: no write lock needed (opens while another process writes)
        with self._raw_tx() as c:
            version = c.execute("PRAGMA user_version").fetchone()[0]
            if version > SCHEMA_VERSION:
                raise CorruptFileError(
                    f"outbox file {str(self.path)!r} has schema version {version}, newer than "
                    f"this liqsignal understands ({SCHEMA_VERSION}); upgrade liqsignal"
                )
            if version < SCHEMA_VERSION:
                # version 0 is a new file, 1 lacks the tracked pockets; later versions add steps
                steps = (_SCHEMA if version < 1 else "") + (_SCHEMA_V2 if version < 2 else "")
                columns = {r[1] for r in c.execute("PRAGMA table_info(alerts)")}
                if "usd" not in columns:  # (a new file's table is made just now, without it)
                    steps += _SCHEMA_V3
                for stmt in steps.split(";"):
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
    def _raw_tx(self) -> Iterator[sqlite3.Connection]:
        with self._lock:
            self._conn.execute("BEGIN IMMEDIATE")
            try:
                yield self._conn
            except BaseException:
                with contextlib.suppress(sqlite3.Error):
                    self._conn.execute("ROLLBACK")
                raise
            else:
                self._conn.execute("COMMIT")

    @contextmanager
    def _tx(self) -> Iterator[sqlite3.Connection]:
        """A write transaction; busy -> OutboxBusyError, damaged -> moved aside and raised as
        OutboxBusyError too (the caller retries on the fresh file)."""
        try:
            with self._raw_tx() as c:
                yield c
        except sqlite3.DatabaseError as e:
            self._guard(e)
            raise OutboxBusyError(
                f"outbox {str(self.path)!r} was damaged ({e}) and replaced by a fresh one; retry"
            ) from e

    def _read(self, sql: str, params: Sequence[object] = ()) -> list[tuple[object, ...]]:
        """Rows of one query; a damaged file is replaced once and the query asked again."""
        with self._lock:
            try:
                return list(self._conn.execute(sql, params).fetchall())
            except sqlite3.DatabaseError as e:
                self._guard(e)
                return list(self._conn.execute(sql, params).fetchall())

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
                "enqueued_at, usd) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)",
                (
                    alert.key,
                    alert.kind,
                    alert.market,
                    alert.side,
                    alert.text,
                    None if alert.photo is None else bytes(alert.photo),
                    alert.created_at.timestamp(),
                    now,
                    alert.usd,
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

    def mark_sent_together(
        self, alert_ids: Sequence[int], chat_id: int | str, message_id: int
    ) -> None:
        """Several alerts reached ``chat_id`` in one message (``message_id``: one digest, part
        0 of each), in one transaction: recorded as delivered there (:meth:`record_delivery`).
        Use :meth:`mark_sent_many` once every chat has them."""
        now = time.time()
        with self._tx() as c:
            c.executemany(
                "INSERT OR REPLACE INTO deliveries (alert_id, chat_id, part, message_id, sent_at) "
                "VALUES (?, ?, 0, ?, ?)",
                [(int(a), str(chat_id), int(message_id), now) for a in alert_ids],
            )

    def mark_sent_many(self, alert_ids: Sequence[int]) -> None:
        """:meth:`mark_sent` for several alerts in one transaction (message ids from their
        recorded deliveries)."""
        now = time.time()
        with self._tx() as c:
            rows = [
                (now, json.dumps(self._deliveries(c, int(a)), sort_keys=True), int(a))
                for a in alert_ids
            ]
            c.executemany(
                "UPDATE alerts SET status = 'sent', finished_at = ?, message_ids = ?, "
                "last_error = NULL WHERE id = ?",
                rows,
            )

    def note_attempts(self, alert_ids: Sequence[int]) -> None:
        """:meth:`note_attempt` for several alerts in one transaction."""
        now = time.time()
        with self._tx() as c:
            c.executemany(
                "UPDATE alerts SET last_attempt_at = ? WHERE id = ?",
                [(now, int(a)) for a in alert_ids],
            )

    def partly_delivered(self, alert_ids: Sequence[int]) -> set[int]:
        """The ids among ``alert_ids`` that already reached some chat (a flush stopped between
        chats or parts): they are finished one by one, never folded into a digest."""
        ids = [int(a) for a in alert_ids]
        out: set[int] = set()
        for i in range(0, len(ids), 500):  # SQLite's parameter limit
            chunk = ids[i : i + 500]
            marks = ",".join("?" * len(chunk))
            rows = self._read(
                f"SELECT DISTINCT alert_id FROM deliveries WHERE alert_id IN ({marks})", chunk
            )
            out.update(int(r[0]) for r in rows)  # type: ignore[call-overload]
        return out

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

    def save_tracked(self, market: str, side: str, state: dict[str, object] | None) -> None:
        """Remember (or, with None, forget) the pocket ``side`` of ``market`` is tracking."""
        with self._tx() as c:
            if state is None:
                c.execute("DELETE FROM tracked WHERE market = ? AND side = ?", (market, side))
            else:
                c.execute(
                    "INSERT OR REPLACE INTO tracked (market, side, state, updated_at) "
                    "VALUES (?, ?, ?, ?)",
                    (market, side, json.dumps(state, sort_keys=True), time.time()),
                )

    def tracked(self) -> list[dict[str, object]]:
        """The tracked pockets saved by :meth:`save_tracked` (unreadable rows skipped)."""
        out = []
        for (text,) in self._read("SELECT state FROM tracked ORDER BY market, side"):
            with contextlib.suppress(ValueError, TypeError):
                state = json.loads(str(text))
                if isinstance(state, dict):
                    out.append(state)
        return out

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
        rows = self._read("SELECT chat_id, part FROM deliveries WHERE alert_id = ?", (alert_id,))
        return {(str(chat), int(part)) for chat, part in rows}  # type: ignore[call-overload]

    def has_key(self, key: str) -> bool:
        """True if an alert with this dedupe key was ever enqueued."""
        return bool(self._read("SELECT 1 FROM alerts WHERE key = ?", (key,)))

    def pending(self, limit: int | None = None) -> list[OutboxEntry]:
        """Pending alerts, oldest first (enqueue order)."""
        return self._select("WHERE status = 'pending' ORDER BY id", limit)

    def get(self, alert_id: int) -> OutboxEntry | None:
        """One alert by id, or None."""
        rows = self._select("WHERE id = ?", None, (int(alert_id),))
        return rows[0] if rows else None

    def entries(self, status: str | None = None) -> list[OutboxEntry]:
        """All alerts (or those with ``status``), oldest first."""
        if status is None:
            return self._select("ORDER BY id", None)
        if status not in ("pending", "sent", "failed"):
            raise ConfigError(f"status must be pending, sent or failed, got {status!r}")
        return self._select("WHERE status = ? ORDER BY id", None, (status,))

    def keys(self) -> dict[str, float | None]:
        """Every stored alert's key with its pocket USD (None where the alert has none), in
        enqueue order: what a restart needs, without loading texts and pictures."""
        rows = self._read("SELECT key, usd FROM alerts ORDER BY id")
        return {str(k): (None if u is None else float(u)) for k, u in rows}  # type: ignore[arg-type]

    def prune(self, keep_s: float, photo_keep_s: float, *, now: float | None = None) -> int:
        """Delete sent alerts (and their delivery records) finished more than ``keep_s`` ago and
        drop the pictures of sent alerts finished more than ``photo_keep_s`` ago; pending and
        failed alerts are never touched. Returns the number of alerts deleted."""
        if not (keep_s >= 0 and photo_keep_s >= 0):
            raise ConfigError(f"prune: ages must be >= 0 s, got {keep_s!r}, {photo_keep_s!r}")
        t = time.time() if now is None else float(now)
        with self._tx() as c:
            c.execute(
                "UPDATE alerts SET photo = NULL WHERE status = 'sent' AND photo IS NOT NULL "
                "AND finished_at < ?",
                (t - photo_keep_s,),
            )
            old = "SELECT id FROM alerts WHERE status = 'sent' AND finished_at < ?"
            c.execute(f"DELETE FROM deliveries WHERE alert_id IN ({old})", (t - keep_s,))
            cur = c.execute(
                "DELETE FROM alerts WHERE status = 'sent' AND finished_at < ?", (t - keep_s,)
            )
            return int(cur.rowcount)

    def counts(self) -> dict[str, int]:
        """Number of alerts per status."""
        rows = self._read("SELECT status, COUNT(*) FROM alerts GROUP BY status")
        out = {"pending": 0, "sent": 0, "failed": 0}
        out.update({str(s): int(n) for s, n in rows})  # type: ignore[call-overload]
        return out

    def _select(
        self, where: str, limit: int | None, params: Sequence[object] = ()
    ) -> list[OutboxEntry]:
        """Rows of ``alerts``; ``where`` is one of this class's constant clauses with ``?``
        placeholders for ``params`` (never a value formatted into the SQL)."""
        sql = (
            "SELECT id, key, kind, market, side, text, photo, created_at, enqueued_at, status, "
            "attempts, last_attempt_at, finished_at, last_error, message_ids, usd FROM alerts "
            + where
        )
        if limit is not None:
            sql += " LIMIT ?"
            params = (*params, int(limit))
        rows: list[Any] = self._read(sql, params)
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
                usd=None if r[15] is None else float(r[15]),
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
