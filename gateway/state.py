"""The latest state of every sensor and camera.

Written by the MQTT thread, read by rule jobs.  Each sensor's state is an
immutable snapshot replaced whole, so a reader never sees half an update; the
lock only orders writers.
"""

from __future__ import annotations

import threading
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import datetime, timedelta

from gateway.model import Frame, Reading, Value


@dataclass(frozen=True, slots=True)
class SensorSnapshot:
    """What is known about one sensor right now."""

    sensor: str
    value: Value
    unit: str
    at: datetime
    previous: Value | None = None
    previous_at: datetime | None = None
    count: int = 1

    def age(self, now: datetime) -> timedelta:
        """Time since the last reading."""
        return now - self.at


@dataclass
class SensorCounters:
    """Per-sensor ingest counters."""

    accepted: int = 0
    rejected: int = 0
    last_error: str | None = None


class StateStore:
    """Latest readings and frames, with per-sensor counters."""

    def __init__(self, expire_after: dict[str, timedelta] | None = None) -> None:
        self._sensors: dict[str, SensorSnapshot] = {}
        self._frames: dict[str, Frame] = {}
        self._expire_after = dict(expire_after or {})
        self._counters: dict[str, SensorCounters] = {}
        self._lock = threading.Lock()

    def update(self, reading: Reading) -> SensorSnapshot:
        """Record a reading and return the sensor's new snapshot."""
        with self._lock:
            old = self._sensors.get(reading.sensor)
            snap = SensorSnapshot(
                sensor=reading.sensor,
                value=reading.value,
                unit=reading.unit,
                at=reading.at,
                previous=old.value if old else None,
                previous_at=old.at if old else None,
                count=old.count + 1 if old else 1,
            )
            self._sensors[reading.sensor] = snap
            self._counter(reading.sensor).accepted += 1
        return snap

    def reject(self, sensor: str, reason: str) -> int:
        """Count a rejected payload; returns the sensor's rejection total."""
        with self._lock:
            counter = self._counter(sensor)
            counter.rejected += 1
            counter.last_error = reason
            return counter.rejected

    def _counter(self, sensor: str) -> SensorCounters:
        counter = self._counters.get(sensor)
        if counter is None:
            counter = self._counters[sensor] = SensorCounters()
        return counter

    def get(self, sensor: str) -> SensorSnapshot | None:
        """The sensor's snapshot, or None before its first reading."""
        return self._sensors.get(sensor)

    def sensors(self) -> dict[str, SensorSnapshot]:
        """A copy of every sensor's snapshot."""
        return dict(self._sensors)

    def counters(self) -> dict[str, SensorCounters]:
        """A copy of the per-sensor counters."""
        with self._lock:
            return {
                k: SensorCounters(v.accepted, v.rejected, v.last_error)
                for k, v in self._counters.items()
            }

    def is_stale(self, sensor: str, now: datetime) -> bool:
        """True when the sensor has no reading, or none within its ``expire_after``."""
        snap = self._sensors.get(sensor)
        if snap is None:
            return True
        limit = self._expire_after.get(sensor)
        return limit is not None and now - snap.at > limit

    def set_frame(self, frame: Frame) -> None:
        """Record a camera's newest frame."""
        with self._lock:
            current = self._frames.get(frame.camera)
            if current is None or frame.at >= current.at:
                self._frames[frame.camera] = frame

    def latest_frame(self, camera: str) -> Frame | None:
        """A camera's newest frame, or None."""
        return self._frames.get(camera)

    def frames(self) -> Iterable[Frame]:
        """Every camera's newest frame."""
        return list(self._frames.values())
