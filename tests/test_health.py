"""Health pieces without a daemon: the health row's write policy, rates, credentials folder."""

from __future__ import annotations

import sqlite3
from datetime import UTC, datetime
from pathlib import Path

import pytest

from gateway.config import lookup_secret
from gateway.model import Post
from gateway.outbox.store import Outbox
from gateway.runtime.health import HealthStore, OutboxSummary, RateMeter, status_line


def body(connected: bool, stale: bool, written_at: str = "t1") -> dict[str, object]:
    return {
        "pid": 42,
        "written_at": written_at,
        "mqtt": {"host": "h", "port": 1, "connected": connected},
        "readings": 10,
        "sensors": {"temp": {"stale": stale, "last_at": written_at}},
        "low_disk": False,
    }


def wal_frames(db: Path) -> int:
    wal = db.with_name(db.name + "-wal")
    return wal.stat().st_size if wal.exists() else 0


def test_health_row_is_written_only_when_something_noticeable_changed(tmp_path: Path) -> None:
    db = tmp_path / "gateway.db"
    Outbox(db).close()
    store = HealthStore(db)
    assert store.maybe_write(body(True, False), now=0.0)
    assert not store.maybe_write(body(True, False, written_at="t2"), now=60.0)  # times only
    size = wal_frames(db)
    assert not store.maybe_write(body(True, False, written_at="t3"), now=120.0)
    assert wal_frames(db) == size  # no write at all
    assert store.maybe_write(body(False, False), now=180.0)  # broker lost
    assert store.maybe_write(body(False, True), now=240.0)  # a sensor went stale
    assert store.maybe_write(body(False, True, written_at="t9"), now=240.0 + 3600)  # hourly
    reader = HealthStore(db, read_only=True)
    row = reader.read()
    assert row is not None
    assert row["written_at"] == "t9"
    with pytest.raises(sqlite3.OperationalError):  # read-only really is read-only
        reader.maybe_write(body(True, True))
    reader.close()
    store.close()


def test_summary_counts_per_publisher_and_last_post(tmp_path: Path) -> None:
    outbox = Outbox(tmp_path / "gateway.db")
    at = datetime(2026, 11, 22, 10, 0, tzinfo=UTC)
    for n, rule in enumerate(("a", "b", "a")):
        post = Post(f"0{n}", rule, at.replace(minute=n), f"text {n}", (), None)
        outbox.add(post, {"archive": "x", "mastodon": "y"})
    summary = HealthStore(tmp_path / "gateway.db", read_only=True).summary()
    assert summary.depth == 6
    assert summary.per_publisher == {"archive": {"pending": 3}, "mastodon": {"pending": 3}}
    assert summary.last_post_per_rule == {
        "a": at.replace(minute=2).isoformat(),
        "b": at.replace(minute=1).isoformat(),
    }
    assert summary.last_post_at == at.replace(minute=2).isoformat()
    outbox.close()


def test_rate_meter_and_status_line() -> None:
    clock = [0.0]
    meter = RateMeter(clock=lambda: clock[0])
    assert meter.update(100) == 0.0
    clock[0] = 10.0
    assert meter.update(600) == 50.0
    line = status_line(50.0, OutboxSummary(depth=3, failed=1, last_post_at="14:00"), True)
    assert line == "connected; 50.0 readings/s; outbox 3 (1 failing); last post 14:00"
    assert status_line(0, OutboxSummary(), False).startswith("broker unreachable;")


def test_secret_from_a_credentials_folder_loaded_by_the_unit(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # LoadCredential=gw:/etc/things-gateway/credentials names each file gw_<file>.
    (tmp_path / "gw_MQTT_PASSWORD").write_text("s3cret\n")
    (tmp_path / "TOKEN").write_text("plain")
    monkeypatch.setenv("CREDENTIALS_DIRECTORY", str(tmp_path))
    monkeypatch.delenv("MQTT_PASSWORD", raising=False)
    assert lookup_secret("MQTT_PASSWORD") == "s3cret"
    assert lookup_secret("TOKEN") == "plain"
    assert lookup_secret("MISSING") is None
