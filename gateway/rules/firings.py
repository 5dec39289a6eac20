"""Event firings, queued durably: no acknowledged event is ever dropped.

An ``on_message`` event or a ``when`` crossing becomes a row of the ``firings``
table before its MQTT message is acknowledged: ingest hands firings over in paho's
thread (:meth:`RuleDispatch.submit`), and the batch's rows are committed in one
transaction (``synchronous=FULL``) just before the batch's PUBACKs are written
(:meth:`RuleDispatch.commit`, the client's ``on_batch_end``).  A firing from a timer
thread is committed at once.

Workers then fire the rows in order: the oldest first, a rule's firings one after
the other (a rule never runs twice at once), different rules side by side.  Only a
window of :data:`WINDOW` rows is held in memory, so a backlog of any size costs the
same memory.  A row is marked done in the same transaction that commits its post
(``Outbox.add(done_firing=...)``), so a firing interrupted by a crash is fired again
at the next start and a post is never made twice; a firing that made no post
(a guard said no) is marked done after it.  Done rows stay for a while
(:data:`KEEP_DONE`): a message the broker delivers again (MQTT's DUP flag) whose
firings are already recorded is recognised (:meth:`FiringQueue.seen`) and not fired twice.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import logging
import sqlite3
import threading
import time
from collections import deque
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any

from gateway.compose.composer import MessageEvent
from gateway.state.store import SensorSnapshot
from gateway.support.database import ensure_schema
from gateway.support.ratelog import RateLimitedLog

__all__ = ["KEEP_DONE", "WINDOW", "Firing", "FiringQueue", "RuleDispatch", "event_key"]

log = logging.getLogger(__name__)

Readings = Mapping[str, SensorSnapshot]
Fire = Callable[..., object]
"""``fire(rule_id, event, readings, firing=row id)``: the rule runner's ``fire``."""
WINDOW = 256
"""Queued firings held in memory at once; the rest wait in SQLite."""
MAX_HELD = 10_000
"""Firings held in memory while the database cannot be written (a full disk); past
that, new ones are refused and counted (``RuleDispatch.refused``)."""
KEEP_DONE = 20_000
"""Done firings kept (newest first) to recognise redelivered messages."""


def event_key(topic: str, data: Any) -> str:
    """What identifies a message's content: a digest of its topic and decoded payload."""
    text = json.dumps(data, sort_keys=True, ensure_ascii=False, default=str)
    return hashlib.sha1(f"{topic}\0{text}".encode(), usedforsecurity=False).hexdigest()[:20]


def _readings_to_json(readings: Readings | None) -> str | None:
    if readings is None:
        return None
    return json.dumps(
        [
            [
                s.sensor,
                s.value,
                s.unit,
                s.at.isoformat(),
                s.previous,
                s.previous_at.isoformat() if s.previous_at else None,
                s.count,
                s.offline,
                s.topic,
            ]
            for s in readings.values()
        ]
    )


def _readings_from_json(raw: str | None) -> dict[str, SensorSnapshot] | None:
    if raw is None:
        return None
    out: dict[str, SensorSnapshot] = {}
    for sensor, value, unit, at, prev, prev_at, count, offline, topic in json.loads(raw):
        out[sensor] = SensorSnapshot(
            sensor,
            value,
            unit,
            datetime.fromisoformat(at),
            prev,
            datetime.fromisoformat(prev_at) if prev_at else None,
            count,
            offline,
            topic,
        )
    return out


@dataclass(frozen=True, slots=True)
class Firing:
    """One queued firing, as read back from SQLite."""

    id: int
    rule: str
    event: MessageEvent | None
    readings: dict[str, SensorSnapshot] | None


class FiringQueue:
    """The ``firings`` table of ``gateway.db``; safe to use from several threads."""

    def __init__(self, path: Path) -> None:
        """Open (and migrate) the database at ``path``."""
        ensure_schema(path)
        self._conn = sqlite3.connect(
            path, timeout=30, isolation_level=None, check_same_thread=False
        )
        self._conn.execute("PRAGMA journal_mode=WAL")
        self._conn.execute("PRAGMA synchronous=FULL")
        self._lock = threading.Lock()
        self._pending: list[tuple[str, str | None, str | None, str | None, str | None, float]] = []
        self._done_since_prune = 0
        self._closed = False

    def add(self, rule: str, event: MessageEvent | None, readings: Readings | None) -> bool:
        """Hold a firing until :meth:`commit` (cheap: no I/O); False when refused
        (more than :data:`MAX_HELD` held: the database has not been writable)."""
        topic = data = key = None
        if event is not None:
            topic = event.topic
            data = json.dumps(event.data, ensure_ascii=False, default=str)
            key = event_key(event.topic, event.data)
        row = (rule, topic, data, _readings_to_json(readings), key, time.time())
        with self._lock:
            if len(self._pending) >= MAX_HELD:
                return False
            self._pending.append(row)
        return True

    def commit(self) -> int:
        """Write the held firings in one transaction; how many were written.  On a
        database error they stay held (for the next commit) and the error is raised."""
        with self._lock:
            if self._closed:
                return 0
            rows, self._pending = self._pending, []
            if not rows:
                return 0
            conn = self._conn
            conn.execute("BEGIN IMMEDIATE")
            try:
                conn.executemany(
                    "INSERT INTO firings (rule, topic, data, readings, key, created_at)"
                    " VALUES (?,?,?,?,?,?)",
                    rows,
                )
                # in WAL mode the pages are written here: a full disk fails the COMMIT
                conn.execute("COMMIT")
            except BaseException:
                if conn.in_transaction:
                    with contextlib.suppress(sqlite3.Error):
                        conn.execute("ROLLBACK")
                self._pending[:0] = rows
                raise
        return len(rows)

    def seen(self, topic: str, data: Any) -> bool:
        """True when a firing of this message content is recorded (a redelivery)."""
        key = event_key(topic, data)
        with self._lock:
            row = self._conn.execute("SELECT 1 FROM firings WHERE key=? LIMIT 1", (key,)).fetchone()
        return row is not None

    def load(self, after: int, limit: int) -> list[Firing]:
        """Open firings with an id above ``after``, oldest first."""
        with self._lock:
            rows = self._conn.execute(
                "SELECT id, rule, topic, data, readings FROM firings"
                " WHERE done=0 AND id>? ORDER BY id LIMIT ?",
                (after, limit),
            ).fetchall()
        firings = []
        for fid, rule, topic, data, readings in rows:
            event = None if topic is None else MessageEvent(topic, json.loads(data))
            firings.append(Firing(fid, rule, event, _readings_from_json(readings)))
        return firings

    def mark_done(self, firing_id: int) -> None:
        """Mark a firing done (when its post did not already), pruning old done rows."""
        with self._lock:
            self._conn.execute("UPDATE firings SET done=1 WHERE id=? AND done=0", (firing_id,))
            self._done_since_prune += 1
            if self._done_since_prune >= 1000:
                self._done_since_prune = 0
                self._conn.execute(
                    "DELETE FROM firings WHERE done=1 AND id < (SELECT MAX(id) FROM firings) - ?",
                    (KEEP_DONE,),
                )

    def open_count(self) -> int:
        """Firings not yet done."""
        with self._lock:
            row = self._conn.execute("SELECT COUNT(*) FROM firings WHERE done=0").fetchone()
        return int(row[0])

    def close(self) -> None:
        """Write what is held, then close the connection.  Firings still held then (the
        database cannot be written: a full disk) are lost, and the log says how many."""
        try:
            self.commit()
        except sqlite3.Error as exc:
            log.error(
                "%d event firings held in memory could not be written at stop and are lost: %s",
                len(self._pending),
                exc,
            )
        with self._lock:
            self._closed = True
            self._conn.close()


class RuleDispatch:
    """Runs queued firings on a few worker threads, off the ingest thread.

    No back-pressure drops anything: firings wait in SQLite (a bounded window in
    memory) until a worker takes them.  Workers start firing once :meth:`open_gate`
    is called (the gateway waits for retained messages first, bounded).
    """

    def __init__(
        self,
        fire: Fire,
        queue: FiringQueue,
        *,
        workers: int = 2,
        deferred: Callable[[], bool] = lambda: False,
    ) -> None:
        """``deferred()`` is true in the thread whose firings are committed by a later
        :meth:`commit` (paho's network thread); other threads' firings commit at once."""
        self._fire = fire
        self.queue = queue
        self._workers = workers
        self.deferred = deferred
        """True in the thread whose firings a later :meth:`commit` writes (settable)."""
        self._cond = threading.Condition()
        self._window: deque[Firing] = deque()
        self._last_loaded = 0
        self._more = True
        self._busy: set[str] = set()
        self._running = 0
        self._stopping = False
        self._gate = threading.Event()
        self._threads: list[threading.Thread] = []
        self._rate_log = RateLimitedLog(log)
        self.fired = 0
        self.refused = 0

    def start(self) -> None:
        """Start the workers (they wait for :meth:`open_gate`)."""
        for n in range(self._workers):
            thread = threading.Thread(target=self._work, name=f"rules-{n}", daemon=True)
            thread.start()
            self._threads.append(thread)

    @property
    def held(self) -> int:
        """Queued firings held in memory now (at most :data:`WINDOW`)."""
        return len(self._window)

    def open_gate(self) -> None:
        """Let the workers fire (queued firings from before included)."""
        self._gate.set()
        with self._cond:
            self._cond.notify_all()

    def submit(
        self, rule_id: str, event: MessageEvent | None = None, readings: Readings | None = None
    ) -> None:
        """Queue a firing of ``rule_id`` (never blocks on other firings, never drops one
        while the database can be written)."""
        if not self.queue.add(rule_id, event, readings):
            self.refused += 1
            self._rate_log.warning(
                "refused",
                "rule %s: firing refused: the database cannot be written (%d refused)",
                rule_id,
                self.refused,
            )
            return
        if not self.deferred():
            self.commit()

    def commit(self) -> None:
        """Commit the held firings and wake the workers (before PUBACKs are written)."""
        try:
            written = self.queue.commit()
        except sqlite3.Error as exc:
            self._rate_log.error(
                "commit", "cannot queue event firings (kept in memory, retried): %s", exc
            )
            return
        if written:
            with self._cond:
                self._more = True
                self._cond.notify_all()

    def seen(self, topic: str, data: Any) -> bool:
        """True when firings of this message are already recorded."""
        return self.queue.seen(topic, data)

    def _claim(self) -> Firing | None:
        """The oldest firing of a rule not running now (under ``_cond``)."""
        if self._more and len(self._window) < WINDOW // 2:
            want = WINDOW - len(self._window)
            loaded = self.queue.load(self._last_loaded, want)
            if loaded:
                self._last_loaded = loaded[-1].id
                self._window.extend(loaded)
            self._more = len(loaded) == want
        for i, firing in enumerate(self._window):
            if firing.rule not in self._busy:
                del self._window[i]
                self._busy.add(firing.rule)
                self._running += 1
                return firing
        return None

    def _work(self) -> None:
        while True:
            with self._cond:
                while True:
                    if self._stopping:
                        return
                    firing = self._claim() if self._gate.is_set() else None
                    if firing is not None:
                        break
                    self._cond.wait(1.0)
            try:
                self._fire(firing.rule, firing.event, firing.readings, firing=firing.id)
            except Exception:
                log.exception("rule %s: firing failed", firing.rule)
            try:
                self.queue.mark_done(firing.id)
            except sqlite3.Error as exc:  # a full disk: one line a minute, no traceback
                self._rate_log.error(
                    "done", "rule %s: could not mark a firing done: %s", firing.rule, exc
                )
            with self._cond:
                self.fired += 1
                self._busy.discard(firing.rule)
                self._running -= 1
                self._cond.notify_all()

    def drain(self, timeout: float) -> bool:
        """Wait until nothing is queued or running (True), or ``timeout`` passes."""
        deadline = time.monotonic() + timeout
        with self._cond:
            while self._running or self._window or self._more:
                if not self._threads or not self._gate.is_set():
                    return False
                left = deadline - time.monotonic()
                if left <= 0:
                    return False
                self._cond.wait(min(left, 0.2))
        return True

    def stop(self, timeout: float = 5.0) -> None:
        """Fire what is queued for up to ``timeout`` seconds (a crossing just before
        shutdown still posts), finish the running firings; the rest stay queued."""
        self.commit()
        self.drain(timeout)
        with self._cond:
            self._stopping = True
            self._cond.notify_all()
        for thread in self._threads:
            thread.join()
        self._threads.clear()
