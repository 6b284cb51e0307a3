"""`EventLog`: the service's durable log of real-time events (`POST /v1/events`), one SQLite file.

Why SQLite: it is embedded (stdlib `sqlite3`, no server to run next to the service), its write path
is one of the best-tested pieces of storage software there is, and its WAL mode lets readers (the
hot-swap poller tailing the log, the `recsys data ingest` job) read while the service appends. A
log of JSON lines would need its own torn-write recovery and duplicate index; DuckDB is built for
scans, not for many small fsynced commits.

Durability (what a 2xx promises): `journal_mode=WAL` with `synchronous=FULL`, so every commit
fsyncs the WAL before `commit()` returns, and the service answers only after the commit. A kill -9
(or a power cut) after the answer cannot lose the batch; one before it loses nothing the client
was told was stored, and its retry is safe (below). `synchronous=NORMAL` would be faster but may
lose the last commits on a power cut, which breaks the promise.

Idempotence: `event_id` is UNIQUE and rows go in with `INSERT OR IGNORE`, so a retried batch
inserts only the events that are not there yet and each event is reported as new or duplicate.
Ids of events removed by compaction stay in `compacted`, so a very late retry is a duplicate too.

Ingest and compaction (`jobs/ingest_events.py`): `seq` is an AUTOINCREMENT key (never reused, even
after deletes), the order of arrival. The ingest job reads the rows after the `ingested` watermark,
merges them into the dataset, then in one transaction moves the watermark to the last `seq` it read
and (with compaction) deletes the rows up to it. Rows written meanwhile have larger `seq`s: they
are neither marked nor deleted, so compaction never loses an event that arrived during it.
"""

from __future__ import annotations

import sqlite3
import threading
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from recsys.errors import ConfigError

BUSY_TIMEOUT_MS = 30_000  # another process (a second worker, the ingest job) holding the write lock
_SCHEMA = """
CREATE TABLE IF NOT EXISTS events (
    seq INTEGER PRIMARY KEY AUTOINCREMENT,
    event_id TEXT NOT NULL UNIQUE,
    user_id TEXT NOT NULL,
    item_id TEXT NOT NULL,
    ts_us INTEGER NOT NULL,
    event TEXT,
    weight REAL,
    received_us INTEGER NOT NULL
);
CREATE TABLE IF NOT EXISTS compacted (event_id TEXT PRIMARY KEY) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS watermarks (name TEXT PRIMARY KEY, seq INTEGER NOT NULL) WITHOUT ROWID;
"""
_INSERT = """
INSERT OR IGNORE INTO events (event_id, user_id, item_id, ts_us, event, weight, received_us)
SELECT ?, ?, ?, ?, ?, ?, ? WHERE NOT EXISTS (SELECT 1 FROM compacted WHERE event_id = ?)
"""
_COLUMNS = "seq, event_id, user_id, item_id, ts_us, event, weight"


@dataclass(frozen=True)
class Event:
    """One checked event: ids, its time (Unix microseconds, UTC), an optional kind and weight."""

    event_id: str
    user_id: str
    item_id: str
    ts_us: int
    event: str | None = None
    weight: float | None = None


@dataclass(frozen=True)
class LoggedEvent(Event):
    """An event as stored, with its arrival order `seq`."""

    seq: int = 0


class EventLog:
    """The SQLite event log at `path` (created with its folder); see the module doc. Thread-safe."""

    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            # isolation_level=None: no implicit transactions; each write below is one explicit BEGIN ... COMMIT
            self._db = sqlite3.connect(
                self.path, timeout=BUSY_TIMEOUT_MS / 1000, check_same_thread=False, isolation_level=None
            )
            self._db.execute(f"PRAGMA busy_timeout = {BUSY_TIMEOUT_MS}")
            mode = self._db.execute("PRAGMA journal_mode = WAL").fetchone()[0]
            self._db.execute("PRAGMA synchronous = FULL")
            self._db.executescript(_SCHEMA)
        except (OSError, sqlite3.Error) as exc:
            raise ConfigError(f"cannot open the event log {self.path}: {exc}") from exc
        if str(mode).lower() != "wal":
            raise ConfigError(f"the event log {self.path} cannot use WAL mode (got {mode}): is it on a network share?")
        self._lock = threading.Lock()  # one connection; sqlite3 serialises writers anyway

    def append(self, events: Sequence[Event]) -> tuple[list[bool], float]:
        """Insert `events` in one fsynced transaction; (was each one new, the commit's milliseconds).

        The answer comes after the commit returned, i.e. after the WAL was fsynced (module doc).
        """
        received = time.time_ns() // 1000
        with self._lock:
            try:
                cursor = self._db.cursor()
                cursor.execute("BEGIN IMMEDIATE")
                inserted = []
                for e in events:
                    cursor.execute(
                        _INSERT,
                        (e.event_id, e.user_id, e.item_id, e.ts_us, e.event, e.weight, received, e.event_id),
                    )
                    inserted.append(cursor.rowcount == 1)
                started = time.perf_counter()
                cursor.execute("COMMIT")
                commit_ms = (time.perf_counter() - started) * 1000
            except BaseException:
                if self._db.in_transaction:
                    self._db.execute("ROLLBACK")
                raise
        return inserted, commit_ms

    def since(self, seq: int = 0, limit: int | None = None) -> list[LoggedEvent]:
        """Events with `seq` above `seq`, in arrival order (at most `limit`)."""
        sql = f"SELECT {_COLUMNS} FROM events WHERE seq > ? ORDER BY seq"
        params: tuple[int, ...] = (seq,)
        if limit is not None:
            sql, params = sql + " LIMIT ?", (seq, limit)
        with self._lock:
            rows = self._db.execute(sql, params).fetchall()
        return [LoggedEvent(e, u, i, int(t), kind, w, seq=int(s)) for s, e, u, i, t, kind, w in rows]

    def watermark(self, name: str = "ingested") -> int:
        """The last `seq` a consumer (`name`) has taken; 0 when none."""
        with self._lock:
            row = self._db.execute("SELECT seq FROM watermarks WHERE name = ?", (name,)).fetchone()
        return int(row[0]) if row else 0

    def mark(self, upto: int, *, compact: bool = False, name: str = "ingested") -> int:
        """Move `name`'s watermark to `upto` and, with `compact`, delete the rows up to it; rows deleted.

        One transaction: rows that arrived after the consumer read (larger `seq`) stay, unmarked.
        """
        with self._lock:
            try:
                cursor = self._db.cursor()
                cursor.execute("BEGIN IMMEDIATE")
                cursor.execute(
                    "INSERT INTO watermarks (name, seq) VALUES (?, ?) "
                    "ON CONFLICT(name) DO UPDATE SET seq = max(seq, excluded.seq)",
                    (name, upto),
                )
                deleted = 0
                if compact:
                    cursor.execute(
                        "INSERT OR IGNORE INTO compacted (event_id) SELECT event_id FROM events WHERE seq <= ?",
                        (upto,),
                    )
                    deleted = cursor.execute("DELETE FROM events WHERE seq <= ?", (upto,)).rowcount
                cursor.execute("COMMIT")
            except BaseException:
                if self._db.in_transaction:
                    self._db.execute("ROLLBACK")
                raise
        return deleted

    def __len__(self) -> int:
        with self._lock:
            return int(self._db.execute("SELECT count(*) FROM events").fetchone()[0])

    def close(self) -> None:
        with self._lock:
            self._db.close()

    def __enter__(self) -> EventLog:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
