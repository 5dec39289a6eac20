"""The daemon's view of its own health: hung threads, counters, the health row.

Three consumers: the systemd watchdog (fed only while no thread is hung), the
``STATUS=`` line of ``systemctl status``, and ``things-gateway status`` (which
reads the health row from SQLite, so it works from another process over SSH).

The health row lives in the outbox's ``kv`` table under :data:`HEALTH_KEY`.  It is
written on its own connection with ``synchronous=NORMAL`` (it is a hint, not a
record) and only when something a person would notice changed — the broker
connection, a sensor going stale or fresh, a rule starting or stopping to fail — or
once an hour, so an SD card sees almost no writes from it.
"""

from __future__ import annotations

import json
import os
import sqlite3
import time
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

from gateway.config.secrets import redact

if TYPE_CHECKING:
    from gateway.runtime.app import Gateway

HEALTH_KEY = "gateway.health"
REFRESH_SECONDS = 3600.0
"""The row is rewritten at least this often even when nothing changed."""


@dataclass
class OutboxSummary:
    """What the outbox holds, in a few numbers."""

    depth: int = 0
    failed: int = 0
    dead: int = 0
    last_post_at: str | None = None
    last_post_url: str | None = None
    per_publisher: dict[str, dict[str, int]] = field(default_factory=dict)
    last_post_per_rule: dict[str, str] = field(default_factory=dict)


class HealthStore:
    """Reads outbox summaries and reads/writes the health row on its own connection."""

    def __init__(self, db: Path, *, read_only: bool = False) -> None:
        if read_only:
            self._conn = sqlite3.connect(f"file:{db}?mode=ro", uri=True, timeout=5)
        else:
            self._conn = sqlite3.connect(db, timeout=30, isolation_level=None)
            # A lost health row costs nothing; a commit without fsync costs no SD wear.
            self._conn.execute("PRAGMA synchronous=NORMAL")
        self._conn.row_factory = sqlite3.Row
        self._written: dict[str, Any] | None = None
        self._written_at = 0.0

    def close(self) -> None:
        """Close the connection."""
        self._conn.close()

    def summary(self) -> OutboxSummary:
        """Deliveries per status and publisher, and the newest posts."""
        out = OutboxSummary()
        rows = self._conn.execute(
            "SELECT publisher, status, COUNT(*) AS n FROM deliveries GROUP BY publisher, status"
        )
        for row in rows:
            out.per_publisher.setdefault(row["publisher"], {})[row["status"]] = row["n"]
            if row["status"] in ("pending", "sending", "failed"):
                out.depth += row["n"]
            if row["status"] == "failed":
                out.failed += row["n"]
            if row["status"] == "dead":
                out.dead += row["n"]
        last = self._conn.execute(
            "SELECT p.created_at, (SELECT url FROM deliveries d WHERE d.post_id = p.id"
            " AND d.url IS NOT NULL ORDER BY publisher LIMIT 1) AS url"
            " FROM posts p ORDER BY p.id DESC LIMIT 1"
        ).fetchone()
        if last is not None:
            out.last_post_at, out.last_post_url = last["created_at"], last["url"]
        for row in self._conn.execute(
            "SELECT rule, MAX(created_at) AS at FROM posts GROUP BY rule ORDER BY rule"
        ):
            out.last_post_per_rule[row["rule"]] = row["at"]
        return out

    def read(self) -> dict[str, Any] | None:
        """The last health row written by a daemon, or None."""
        row = self._conn.execute("SELECT value FROM kv WHERE key=?", (HEALTH_KEY,)).fetchone()
        return None if row is None else dict(json.loads(row[0]))

    def maybe_write(self, body: dict[str, Any], now: float | None = None) -> bool:
        """Store ``body`` if its stable part changed (or an hour passed); True if written."""
        now = time.monotonic() if now is None else now
        stable = _stable_part(body)
        if stable == self._written and now - self._written_at < REFRESH_SECONDS:
            return False
        self._conn.execute(
            "INSERT INTO kv (key, value) VALUES (?, ?)"
            " ON CONFLICT(key) DO UPDATE SET value=excluded.value",
            (HEALTH_KEY, json.dumps(body, ensure_ascii=False)),
        )
        self._written, self._written_at = stable, now
        return True


def _stable_part(body: dict[str, Any]) -> dict[str, Any]:
    """What a person would notice: connection, freshness, pid — not times or rates."""
    return {
        "pid": body.get("pid"),
        "connected": body.get("mqtt", {}).get("connected"),
        # at most once an `interval` while a broker drops messages: worth a (no-fsync) write
        "broker_dropped": body.get("mqtt", {}).get("broker_dropped"),
        "stale": {k: v.get("stale") for k, v in body.get("sensors", {}).items()},
        "low_disk": body.get("low_disk"),
        # not the failure count: a rule failing every minute must not write every minute
        "rules": {
            rule: (item.get("failing_since"), item.get("last_error"))
            for rule, item in body.get("rules", {}).items()
        },
        "publishers": body.get("publishers"),
    }


def health_body(gateway: Gateway, *, started_at: datetime, low_disk: bool) -> dict[str, Any]:
    """The health row's content, from the running gateway."""
    now = datetime.now(UTC)
    snapshots = gateway.state.sensors()
    sensors = {}
    for sensor in gateway.config.sensors:
        snap = snapshots.get(sensor.id)
        sensors[sensor.id] = {
            "stale": gateway.state.is_stale(sensor.id, now),
            "last_at": snap.at.isoformat(timespec="seconds") if snap else None,
        }
    return {
        "pid": os.getpid(),
        "written_at": now.isoformat(timespec="seconds"),
        "started_at": started_at.isoformat(timespec="seconds"),
        "mqtt": {
            "host": gateway.config.mqtt.host,
            "port": gateway.config.mqtt.port,
            "connected": gateway.ingest.connected.is_set(),
            **takeover_body(gateway),
            **broker_dropped_body(gateway),
        },
        "readings": gateway.ingest.stats.readings,
        "rejected": gateway.ingest.stats.rejected,
        "sensors": sensors,
        "rules": rule_health(gateway),
        "publishers": publisher_holds(gateway),
        "low_disk": low_disk,
    }


def publisher_holds(gateway: Gateway) -> dict[str, str]:
    """Publishers paused (a refused credential) or waiting for a service's cap, and why."""
    holds = {}
    for publisher_id, worker in gateway.workers.items():
        if worker.paused is not None:
            holds[publisher_id] = f"PAUSED until a reload with a new credential: {worker.paused}"
        elif worker.waiting is not None:
            holds[publisher_id] = worker.waiting[0]
    return holds


def broker_dropped_body(gateway: Gateway) -> dict[str, Any]:
    """The broker's dropped-message counter, when it reports one ($SYS)."""
    dropped = gateway.ingest.stats.broker_dropped
    return {} if dropped is None else {"broker_dropped": dropped}


def takeover_body(gateway: Gateway) -> dict[str, Any]:
    """Session takeovers of the gateway's client id (none: nothing)."""
    detector = gateway.ingest.takeover
    if not detector.takeovers or detector.last_at is None:
        return {}
    at = datetime.fromtimestamp(detector.last_at, UTC).isoformat(timespec="seconds")
    return {"takeovers": detector.takeovers, "takeover_at": at}


def rule_health(gateway: Gateway) -> dict[str, dict[str, Any]]:
    """Rules that failed since start: how often, the last error and when, still failing?"""
    rules = {}
    for rule_id, stats in gateway.runner.stats.items():
        if stats.last_error_at is None:
            continue
        since = stats.failing_since
        rules[rule_id] = {
            "failing": stats.failing,
            "failing_since": since.isoformat(timespec="seconds") if since else None,
            "failed": stats.failed,
            # the error may quote a rendered value or a URL: never a secret in the row
            "last_error": redact(stats.last_error or ""),
            "last_error_at": stats.last_error_at.isoformat(timespec="seconds"),
        }
    return rules


class RateMeter:
    """Readings per second from a growing counter, averaged between calls."""

    def __init__(self, clock: Any = time.monotonic) -> None:
        self._clock = clock
        self._last: tuple[float, int] | None = None
        self.rate = 0.0

    def update(self, total: int) -> float:
        """Feed the counter's current total; returns the rate since the last call."""
        now = self._clock()
        if self._last is not None and now > self._last[0]:
            then, before = self._last
            self.rate = max(0, total - before) / (now - then)
        self._last = (now, total)
        return self.rate


def status_line(rate: float, summary: OutboxSummary, connected: bool) -> str:
    """The one line ``systemctl status`` shows (``STATUS=``)."""
    broker = "connected" if connected else "broker unreachable"
    last = summary.last_post_at or "none yet"
    return (
        f"{broker}; {rate:.1f} readings/s; outbox {summary.depth}"
        f"{f' ({summary.failed} failing)' if summary.failed else ''}; last post {last}"
    )


def free_bytes(path: Path) -> int:
    """Bytes available to unprivileged writers on the file system holding ``path``."""
    st = os.statvfs(path)
    return st.f_bavail * st.f_frsize
