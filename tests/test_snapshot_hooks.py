"""The saved state for preview, the ingest hook for event topics, and the real timers."""

from __future__ import annotations

import json
import threading
import tomllib
from datetime import UTC, datetime, timedelta
from pathlib import Path

from gateway.demo.broker import Broker
from gateway.ingest.mqtt import MqttIngest
from gateway.media.frames import FrameStore
from gateway.model import Frame, Reading
from gateway.rules.triggers import ThreadTimers
from gateway.runtime.app import Gateway
from gateway.runtime.loading import validate_config
from gateway.state.snapshot import SnapshotWriter, load_snapshot
from gateway.state.store import StateStore
from tests.gwutil import base_config

NOW = datetime(2026, 7, 1, 12, 0, tzinfo=UTC)


def test_snapshot_is_written_only_when_changed_and_restores(tmp_path: Path) -> None:
    state = StateStore()
    state.update(Reading("water_temp", 24.5, "°C", NOW, "t"))
    state.update(Reading("bridge", "open", "", NOW, "t"))
    frame_file = tmp_path / "frame.jpg"
    frame_file.write_bytes(b"jpeg")
    state.set_frame(Frame("cam", frame_file, NOW, 640, 480, "image/jpeg", "ab"))
    writer = SnapshotWriter(state, tmp_path / "state.json")
    assert writer.save() is True
    assert writer.save() is False  # nothing changed: no write (an SD card thanks us)
    assert writer.writes == 1
    state.update(Reading("water_temp", 25.0, "°C", NOW + timedelta(minutes=1), "t"))
    assert writer.save() is True
    assert writer.writes == 2
    saved = json.loads((tmp_path / "state.json").read_text(encoding="utf-8"))
    assert saved["sensors"]["water_temp"] == {
        "value": 25.0,
        "unit": "°C",
        "at": (NOW + timedelta(minutes=1)).isoformat(),
        "previous": 24.5,
        "previous_at": NOW.isoformat(),
    }

    restored = StateStore()
    assert load_snapshot(tmp_path / "state.json", restored, {"water_temp"}) is True
    snap = restored.get("water_temp")
    assert snap is not None
    assert (snap.value, snap.unit, snap.at) == (25.0, "°C", NOW + timedelta(minutes=1))
    assert (snap.previous, snap.previous_at) == (24.5, NOW)
    assert restored.take_minutes(include_current=True) == []  # restored, not a new reading
    assert restored.get("bridge") is None  # not a sensor of this config
    frame = restored.latest_frame("cam")
    assert frame is not None
    assert frame.path == frame_file
    assert load_snapshot(tmp_path / "missing.json", StateStore(), set()) is False
    (tmp_path / "bad.json").write_text("{", encoding="utf-8")
    assert load_snapshot(tmp_path / "bad.json", StateStore(), set()) is False


def test_ingest_passes_extra_topic_messages_to_the_hook(tmp_path: Path) -> None:
    config = validate_config(
        {"sensors": [{"id": "t", "topic": "pool/temp"}], "publishers": [], "rules": []}
    )
    state = StateStore()
    seen: list[tuple[str, bytes]] = []
    readings: list[str] = []
    ingest = MqttIngest(
        config,
        state,
        FrameStore(tmp_path / "frames", state),
        on_reading=lambda snap: readings.append(snap.sensor),
        extra_topics=("frigate/+", "pool/temp"),
        on_extra=lambda topic, payload: seen.append((topic, payload)),
    )
    ingest.handle("frigate/events", b'{"type": "new"}', NOW)
    ingest.handle("pool/temp", b"21.5", NOW)  # a sensor topic can be an event topic too
    ingest.handle("elsewhere", b"x", NOW)
    assert seen == [("frigate/events", b'{"type": "new"}'), ("pool/temp", b"21.5")]
    assert readings == ["t"]


def test_thread_timers_run_and_cancel() -> None:
    timers = ThreadTimers(lambda: datetime.now(UTC))
    ran = threading.Event()
    cancelled = threading.Event()
    timers.call_at(datetime.now(UTC) - timedelta(seconds=1), ran.set)  # overdue: runs now
    later = timers.call_at(datetime.now(UTC) + timedelta(hours=1), cancelled.set)
    assert ran.wait(10)
    later.cancel()
    timers.stop()
    assert not cancelled.is_set()


def test_a_started_gateway_restores_sensors_with_their_own_times(
    tmp_path: Path, broker: Broker
) -> None:
    """A restart does not blank every sensor, and an old value is still stale."""
    now = datetime.now(UTC)
    saved = {
        "sensors": {
            "fresh": {"value": 21.5, "unit": "°C", "at": (now - timedelta(minutes=5)).isoformat()},
            "old": {"value": 3.0, "unit": "", "at": (now - timedelta(hours=2)).isoformat()},
            "gone": {"value": 1.0, "unit": "", "at": now.isoformat()},  # no longer configured
        },
        "frames": {},
    }
    state_dir = tmp_path / "state"
    state_dir.mkdir()
    (state_dir / "state.json").write_text(json.dumps(saved), encoding="utf-8")
    config = validate_config(
        tomllib.loads(
            base_config(broker, state_dir)
            + '[[sensors]]\nid = "fresh"\ntopic = "x/fresh"\nexpire_after = "1h"\n'
            + '[[sensors]]\nid = "old"\ntopic = "x/old"\nexpire_after = "1h"\n'
        )
    )
    gateway = Gateway(config)
    gateway.start()
    try:
        fresh, old = gateway.state.get("fresh"), gateway.state.get("old")
        assert fresh is not None
        assert old is not None
        assert (fresh.value, fresh.unit, fresh.at) == (21.5, "°C", now - timedelta(minutes=5))
        assert old.at == now - timedelta(hours=2)
        assert not gateway.state.is_stale("fresh", now)
        assert gateway.state.is_stale("old", now)  # expire_after still holds
        assert gateway.state.get("gone") is None
        # a restored value is not a new reading: the 1 h window did not count it again
        assert gateway.state.stats("fresh", "1h", now) is None
    finally:
        gateway.stop()
