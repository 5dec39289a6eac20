"""The latest state of every sensor and camera.

Written by the MQTT thread, read by rule jobs.  Each sensor's latest reading is
an immutable :class:`SensorSnapshot` replaced whole, so a reader never sees half
an update; the lock only orders writers and guards the rolling windows.  Memory
is bounded: at most ``max_sensors`` sensors, each with fixed-size windows.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING, NamedTuple

from gateway.model import Frame, Reading, Value
from gateway.state.windows import FullRow, MinuteRow, Series, WindowSet, WindowStats

if TYPE_CHECKING:
    from gateway.state.journal import ReadingJournal

UNKNOWN_TIME = datetime.fromtimestamp(0, UTC)
"""The ``at`` of a reading of unknown age (a retained message with no time in it): it
is stale, has no age, and is not counted in the windows."""


class SensorSnapshot(NamedTuple):
    """What is known about one sensor right now (immutable).

    ``offline`` is set by the device's availability topic or LWT; whether the
    sensor is *stale* depends on the time of asking (:meth:`StateStore.is_stale`).
    A named tuple rather than a frozen dataclass: it is made for every reading,
    and a tuple is five times cheaper to build.
    """

    sensor: str
    value: Value
    unit: str
    at: datetime
    previous: Value | None = None
    previous_at: datetime | None = None
    count: int = 1  # type: ignore[assignment]  # shadows tuple.count, on purpose
    offline: bool = False
    topic: str = ""

    def age(self, now: datetime) -> timedelta:
        """Time since the last reading."""
        return now - self.at


_new_tuple = tuple.__new__


@dataclass
class SensorCounters:
    """Per-sensor ingest counters."""

    accepted: int = 0
    rejected: int = 0
    last_error: str | None = None


class _Sensor:
    """Mutable record of one sensor; only touched under the store's lock."""

    __slots__ = ("counters", "offline", "series", "snapshot")

    def __init__(self, windows: WindowSet) -> None:
        self.snapshot: SensorSnapshot | None = None
        self.counters: SensorCounters | None = None
        """Made on the first rejected payload (most sensors never have one)."""
        self.series = Series(windows)
        self.offline = False


class StateStore:
    """Latest readings and frames, rolling statistics, availability and counters."""

    def __init__(
        self,
        expire_after: dict[str, timedelta] | None = None,
        *,
        windows: Sequence[timedelta] = (),
        max_sensors: int = 5000,
    ) -> None:
        self._snapshots: dict[str, SensorSnapshot] = {}
        self._records: dict[str, _Sensor] = {}
        self._frames: dict[str, Frame] = {}
        self._expire_after = dict(expire_after or {})
        self._windows = WindowSet(windows)
        self._layouts = {self._windows.windows: self._windows}
        """One :class:`WindowSet` per distinct list of windows, shared by its sensors."""
        self._max_sensors = max_sensors
        self._lock = threading.Lock()
        self.refused = 0
        """Readings refused because ``max_sensors`` sensors already exist."""
        self.journal: ReadingJournal | None = None
        """Where every counted reading is also journaled (set once the journal is open)."""

    # -- writing (MQTT thread) -----------------------------------------------------

    def register(
        self,
        sensor: str,
        *,
        expire_after: timedelta | None = None,
        windows: Sequence[timedelta] | None = None,
    ) -> bool:
        """Declare a sensor and its settings; False when the store is full."""
        with self._lock:
            return self._record(sensor, expire_after, windows) is not None

    def _record(
        self,
        sensor: str,
        expire_after: timedelta | None = None,
        windows: Sequence[timedelta] | None = None,
    ) -> _Sensor | None:
        record = self._records.get(sensor)
        if record is None:
            if len(self._records) >= self._max_sensors:
                return None
            if expire_after is not None:
                self._expire_after[sensor] = expire_after
            record = _Sensor(self._layout(windows))
            self._records[sensor] = record
        return record

    def _layout(self, windows: Sequence[timedelta] | None) -> WindowSet:
        """The shared :class:`WindowSet` of ``windows`` (the store's own when None)."""
        if windows is None:
            return self._windows
        key = tuple(windows)
        layout = self._layouts.get(key)
        if layout is None:
            layout = self._layouts[key] = WindowSet(key)
        return layout

    def update(self, reading: Reading) -> SensorSnapshot:
        """Record a reading and return the sensor's new snapshot."""
        snap = self.record(reading.sensor, reading.value, reading.unit, reading.at, reading.topic)
        if snap is None:  # the store is full: answer as if kept, but keep nothing
            return SensorSnapshot(reading.sensor, reading.value, reading.unit, reading.at)
        return snap

    def record(
        self,
        sensor: str,
        value: Value,
        unit: str,
        at: datetime,
        topic: str = "",
        t: float | None = None,
    ) -> SensorSnapshot | None:
        """Record one reading (``t``: ``at`` as epoch seconds, if already known); one at
        :data:`UNKNOWN_TIME` is not counted in the windows.

        Returns the new snapshot, or None when the store is full.
        """
        if t is None:
            t = at.timestamp()
        with self._lock:
            record = self._records.get(sensor) or self._record(sensor)
            if record is None:
                self.refused += 1
                return None
            old = record.snapshot
            # tuple.__new__ directly: the named tuple's own __new__ is Python code
            fields: tuple[object, ...]
            if old is None:
                fields = (sensor, value, unit, at, None, None, 1, False, topic)
            else:
                fields = (sensor, value, unit, at, old.value, old.at, old.count + 1, False, topic)
            snap = _new_tuple(SensorSnapshot, fields)
            record.snapshot = snap
            record.offline = False
            if type(value) is float and t > 0.0:
                record.series.add(value, t)
                journal = self.journal
                if journal is not None:
                    journal.add(sensor, value, t)
            self._snapshots[sensor] = snap
        return snap

    def restore(self, snap: SensorSnapshot) -> bool:
        """Put back a saved snapshot (e.g. from ``state.json``) as the sensor's latest.

        Unlike :meth:`record` it is not a new reading: the statistics and the history
        do not count it again.  False when the store is full.
        """
        with self._lock:
            record = self._record(snap.sensor)
            if record is None:
                self.refused += 1
                return False
            current = record.snapshot
            if current is not None and current.at > snap.at:
                return True
            record.snapshot = self._snapshots[snap.sensor] = snap
            return True

    def replay_minutes(self, sensor: str, rows: Iterable[MinuteRow]) -> int:
        """Rebuild a sensor's rolling windows from its stored per-minute history (oldest
        first); the rows are not queued for the history writer.  Returns rows used."""
        with self._lock:
            record = self._record(sensor)
            if record is None:
                self.refused += 1
                return 0
            used = 0
            for row in rows:
                record.series.replay(row)
                used += 1
            return used

    def reject(self, sensor: str, reason: str) -> int:
        """Count a rejected payload; returns the sensor's rejection total."""
        with self._lock:
            record = self._record(sensor)
            if record is None:
                self.refused += 1
                return 0
            counters = record.counters
            if counters is None:
                counters = record.counters = SensorCounters()
            counters.rejected += 1
            counters.last_error = reason
            return counters.rejected

    def set_online(self, sensor: str, online: bool) -> None:
        """Record what the device's availability topic (or LWT) said."""
        with self._lock:
            record = self._record(sensor)
            if record is None:
                self.refused += 1
                return
            record.offline = offline = not online
            if record.snapshot is not None and record.snapshot.offline != offline:
                record.snapshot = record.snapshot._replace(offline=offline)
                self._snapshots[sensor] = record.snapshot

    # -- reading (any thread) ------------------------------------------------------

    def get(self, sensor: str) -> SensorSnapshot | None:
        """The sensor's snapshot, or None before its first reading."""
        return self._snapshots.get(sensor)

    def sensor_count(self) -> int:
        """How many sensors have a value (cheap: no copy)."""
        return len(self._snapshots)

    def sensors(self) -> dict[str, SensorSnapshot]:
        """A copy of every sensor's snapshot."""
        return dict(self._snapshots)

    def counters(self) -> dict[str, SensorCounters]:
        """A copy of the per-sensor counters."""
        with self._lock:
            return {
                k: SensorCounters(
                    r.snapshot.count if r.snapshot else 0,
                    r.counters.rejected if r.counters else 0,
                    r.counters.last_error if r.counters else None,
                )
                for k, r in self._records.items()
            }

    def is_stale(self, sensor: str, now: datetime) -> bool:
        """True when the sensor has no reading, or none within its ``expire_after``."""
        snap = self._snapshots.get(sensor)
        if snap is None or snap.at == UNKNOWN_TIME:
            return True
        limit = self._expire_after.get(sensor)
        return limit is not None and now - snap.at > limit

    def is_offline(self, sensor: str) -> bool:
        """True when the device's availability topic or LWT last said offline."""
        record = self._records.get(sensor)
        return record is not None and record.offline

    def age(self, sensor: str, now: datetime) -> timedelta | None:
        """Time since the sensor's last reading, or None before its first (or when its
        age is unknown)."""
        snap = self._snapshots.get(sensor)
        return None if snap is None or snap.at == UNKNOWN_TIME else now - snap.at

    def stats(
        self, sensor: str, window: timedelta | str, now: datetime | None = None
    ) -> WindowStats | None:
        """Rolling statistics over one of the sensor's configured windows (e.g. ``"1h"``).

        None when the sensor is unknown, has no numeric reading in the window, or
        has no such window configured.
        """
        if isinstance(window, str):
            from gateway.config.durations import parse_duration

            parsed = parse_duration(window)
            assert isinstance(parsed, timedelta)
            window = parsed
        t = time.time() if now is None else now.timestamp()
        with self._lock:
            record = self._records.get(sensor)
            return record.series.stats(window, t) if record else None

    def windows(self, sensor: str) -> tuple[timedelta, ...]:
        """The windows kept for a sensor."""
        record = self._records.get(sensor)
        return record.series.layout.windows if record else ()

    # -- per-minute history ----------------------------------------------------------

    def take_minutes(
        self, now: datetime | None = None, *, include_current: bool = False
    ) -> list[tuple[str, MinuteRow]]:
        """Remove and return finished per-minute rows of every sensor, for the history writer."""
        t = time.time() if now is None else now.timestamp()
        with self._lock:
            return [
                (sensor, row)
                for sensor, record in self._records.items()
                for row in record.series.take(t, include_current=include_current)
            ]

    def rotate_journal(
        self, journal: ReadingJournal, now: datetime | None = None, *, include_current: bool = False
    ) -> tuple[list[tuple[str, MinuteRow]], int]:
        """:meth:`take_minutes` and, in the same moment, the journal's next generation
        with every minute still in progress carried into it; returns the rows and the
        closed generation (what the history flush marks as written)."""
        t = time.time() if now is None else now.timestamp()
        with self._lock:
            rows = [
                (sensor, row)
                for sensor, record in self._records.items()
                for row in record.series.take(t, include_current=include_current)
            ]
            carried = [
                (sensor, current)
                for sensor, record in self._records.items()
                if (current := record.series.current()) is not None
            ]
            return rows, journal.rotate(carried)

    def replay_reading(self, sensor: str, value: float, t: float) -> bool:
        """Count a journaled reading again after a crash: into the windows and the
        unwritten minutes, not the latest value (``state.json`` has that).  False when
        the store is full."""
        with self._lock:
            record = self._records.get(sensor) or self._record(sensor)
            if record is None:
                self.refused += 1
                return False
            record.series.add(value, t)
            return True

    def replay_carried(self, sensor: str, row: FullRow) -> bool:
        """Put back a journaled minute in progress (see :meth:`rotate_journal`)."""
        with self._lock:
            record = self._records.get(sensor) or self._record(sensor)
            if record is None:
                self.refused += 1
                return False
            record.series.resume(row)
            return True

    def unwritten_minutes(self, sensor: str) -> list[MinuteRow]:
        """Per-minute rows of a sensor not yet written to the history."""
        with self._lock:
            record = self._records.get(sensor)
            return record.series.peek() if record else []

    # -- frames ----------------------------------------------------------------------

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
