"""Per-minute readings history in SQLite, written in batches to spare the SD card.

The MQTT thread only folds readings into in-memory minute buckets
(:mod:`gateway.state.windows`).  :class:`HistoryWriter` takes the finished minutes every
``flush_interval`` (10 minutes by default) and writes them in one transaction,
then deletes rows older than the retention.  :meth:`HistoryStore.history` reads
the stored minutes plus those not yet written, for charts.

The table ``readings_minute`` is created by migration 2 in
:data:`gateway.support.database.MIGRATIONS` (same ``gateway.db`` as the outbox).
"""

from __future__ import annotations

import logging
import sqlite3
import threading
import time
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path

from gateway.state.journal import MARK_KEY, ReadingJournal
from gateway.state.store import StateStore
from gateway.state.windows import MinuteRow
from gateway.support.database import ensure_schema
from gateway.support.ratelog import RateLimitedLog

log = logging.getLogger(__name__)

MAX_RETRY_ROWS = 200_000


@dataclass(frozen=True, slots=True)
class HistoryPoint:
    """A sensor over one step of time (a minute, or a coarser ``step``)."""

    at: datetime
    min: float
    max: float
    mean: float
    count: int


def _minute(at: datetime) -> int:
    return int(at.timestamp() // 60)


class HistoryStore:
    """Reads and writes ``readings_minute``; one connection, guarded by a lock."""

    def __init__(self, path: Path, state: StateStore | None = None) -> None:
        ensure_schema(path)  # the history table is one of the file's migrations
        self._state = state
        self._lock = threading.Lock()
        self._conn = sqlite3.connect(
            path, timeout=30, isolation_level=None, check_same_thread=False
        )
        self._conn.execute("PRAGMA journal_mode=WAL")
        self._conn.execute("PRAGMA synchronous=NORMAL")  # history may lose a batch, never the db

    def write(self, rows: Iterable[tuple[str, MinuteRow]], *, journal: int | None = None) -> int:
        """Add minute rows in one transaction (a minute written twice is merged); with
        ``journal``, record in it that the readings journal's generations up to that
        one are written (:mod:`gateway.state.journal`)."""
        params = [(sensor, *row) for sensor, row in rows]
        if not params and journal is None:
            return 0
        with self._lock:
            self._conn.execute("BEGIN IMMEDIATE")
            try:
                self._conn.executemany(
                    "INSERT INTO readings_minute (sensor, minute, count, sum, min, max)"
                    " VALUES (?,?,?,?,?,?) ON CONFLICT (sensor, minute) DO UPDATE SET"
                    " count = count + excluded.count, sum = sum + excluded.sum,"
                    " min = min(min, excluded.min), max = max(max, excluded.max)",
                    params,
                )
                if journal is not None:
                    self._conn.execute(
                        "INSERT INTO kv (key, value) VALUES (?, ?) ON CONFLICT (key)"
                        " DO UPDATE SET value = excluded.value",
                        (MARK_KEY, str(journal)),
                    )
            except BaseException:
                self._conn.execute("ROLLBACK")
                raise
            self._conn.execute("COMMIT")
        return len(params)

    def journal_mark(self) -> int:
        """The newest readings-journal generation whose readings are written (0: none)."""
        with self._lock:
            row = self._conn.execute("SELECT value FROM kv WHERE key = ?", (MARK_KEY,)).fetchone()
        try:
            return int(row[0]) if row else 0
        except ValueError:
            return 0

    def prune(self, older_than: datetime) -> int:
        """Delete minutes before ``older_than``; returns how many rows went."""
        with self._lock:
            cur = self._conn.execute(
                "DELETE FROM readings_minute WHERE minute < ?", (_minute(older_than),)
            )
            return cur.rowcount

    def history(
        self, sensor: str, since: datetime, until: datetime, step: timedelta | None = None
    ) -> list[HistoryPoint]:
        """``(at, min, max, mean, count)`` per minute (or per ``step``), oldest first.

        Includes the minutes still in memory, so a chart is current.
        """
        first, last = _minute(since), _minute(until)
        stored = self.stored_minutes(sensor, since, until)
        rows: dict[int, list[float]] = {}
        unwritten = self._state.unwritten_minutes(sensor) if self._state else []
        size = max(1, int(step.total_seconds() // 60)) if step else 1
        for minute, count, total, low, high in [*stored, *unwritten]:
            if not first <= minute <= last:
                continue
            key = minute - minute % size
            merged = rows.get(key)
            if merged is None:
                rows[key] = [count, total, low, high]
            else:
                merged[0] += count
                merged[1] += total
                merged[2] = min(merged[2], low)
                merged[3] = max(merged[3], high)
        return [
            HistoryPoint(
                datetime.fromtimestamp(key * 60, UTC), low, high, total / count, int(count)
            )
            for key, (count, total, low, high) in sorted(rows.items())
        ]

    def stored_minutes(self, sensor: str, since: datetime, until: datetime) -> list[MinuteRow]:
        """The minutes written to SQLite within ``since``..``until``, oldest first."""
        with self._lock:
            rows = self._conn.execute(
                "SELECT minute, count, sum, min, max FROM readings_minute"
                " WHERE sensor = ? AND minute BETWEEN ? AND ? ORDER BY minute",
                (sensor, _minute(since), _minute(until)),
            ).fetchall()
        return [(int(m), int(c), float(t), float(lo), float(hi)) for m, c, t, lo, hi in rows]

    def series(
        self, sensor: str, since: datetime, until: datetime
    ) -> list[tuple[datetime, float | None]]:
        """``(minute, mean)`` points, oldest first: the charts' ``HistorySource``."""
        return [(point.at, point.mean) for point in self.history(sensor, since, until)]

    def sensors(self) -> list[str]:
        """Sensors with stored history."""
        with self._lock:
            return [r[0] for r in self._conn.execute("SELECT DISTINCT sensor FROM readings_minute")]

    def close(self) -> None:
        """Close the connection."""
        with self._lock:
            self._conn.close()


class HistoryWriter:
    """Thread that moves finished minutes from state to SQLite every ``interval``."""

    def __init__(
        self,
        state: StateStore,
        store: HistoryStore,
        *,
        interval: timedelta = timedelta(minutes=10),
        retention: timedelta = timedelta(days=30),
        journal: ReadingJournal | None = None,
    ) -> None:
        self._state = state
        self._store = store
        self._journal = journal
        self._wake = threading.Event()
        self._interval = interval.total_seconds()
        self._retention = retention
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._retry: list[tuple[str, MinuteRow]] = []
        self._ok = True
        """The last flush was written."""
        self._rate_log = RateLimitedLog(log, interval=600)
        self.batches = 0
        self.rows = 0

    def start(self) -> None:
        """Start the writer thread."""
        self._thread = threading.Thread(target=self._run, name="history-writer", daemon=True)
        self._thread.start()

    def wake(self) -> None:
        """Flush now (any thread): the readings journal grew large."""
        self._wake.set()

    def stop(self, timeout: float = 10.0) -> None:
        """Write everything held in memory (the current minute too), then stop."""
        self._stop.set()
        self._wake.set()
        if self._thread is not None:
            self._thread.join(timeout)
            self._thread = None
        self.flush(include_current=True)
        if self._journal is not None and self._journal.opened:
            self._journal.close(flushed=self._ok)

    def _run(self) -> None:
        last_prune = 0.0
        while True:
            self._wake.wait(self._interval)
            self._wake.clear()
            if self._stop.is_set():
                return
            self.flush()
            if time.monotonic() - last_prune > 3600:
                last_prune = time.monotonic()
                self._prune()

    def flush(self, now: datetime | None = None, *, include_current: bool = False) -> int:
        """Write the minutes finished by ``now`` (default: the clock); returns rows written.

        With a journal, its generation turns in the same moment the minutes are taken,
        and the flush marks the closed one written; its files then go."""
        journal = self._journal
        closed: int | None = None
        if journal is None or not journal.opened:
            taken = self._state.take_minutes(now, include_current=include_current)
        else:
            taken, closed = self._state.rotate_journal(
                journal, now, include_current=include_current
            )
        rows = self._retry + taken
        self._retry = []
        try:
            written = self._store.write(rows, journal=closed)
        except sqlite3.Error as exc:
            self._retry = rows[-MAX_RETRY_ROWS:]
            self._rate_log.warning("write", "history not written (will retry): %s", exc)
            self._ok = False
            return 0
        self._ok = True
        if journal is not None and closed is not None:
            journal.flushed(closed)
        if written:
            self.batches += 1
            self.rows += written
        return written

    def _prune(self) -> None:
        try:
            self._store.prune(datetime.now(UTC) - self._retention)
        except sqlite3.Error as exc:
            self._rate_log.warning("prune", "old history not deleted: %s", exc)
