"""The last known state on disk: restored at start and reload, read by ``preview``.

:func:`restore_state` is what a start, a reload and ``preview`` begin with: the
latest values from ``state.json`` with their own times (sensors made from captures,
like ``temp_kitchen`` from ``temp_{room}``, included), the rolling windows rebuilt
from the per-minute history in SQLite plus the readings journal of a run that ended
without writing them (:mod:`gateway.state.journal`), and the ``when`` rules'
armed/fired state.

The daemon writes ``<state_dir>/state.json`` — each sensor's latest value, unit and
time (and its previous value), and each camera's newest frame file — every few
minutes *only when something changed*, and once at shutdown.  An SD card sees a
handful of small atomic writes an hour, not one per reading.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Callable, Collection
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from gateway.config import GatewayConfig
from gateway.model import Frame, Value
from gateway.state.history import HistoryStore
from gateway.state.journal import Replayed, journal_files, replay
from gateway.state.store import SensorSnapshot, StateStore
from gateway.support.files import atomic_write
from gateway.support.ratelog import RateLimitedLog

log = logging.getLogger(__name__)

SNAPSHOT_NAME = "state.json"
SAVE_EVERY_SECONDS = 300.0
NEW_SENSOR_CHECK_SECONDS = 10.0
"""How often the writer looks for sensors never saved and ``when`` rules that fired or
re-armed since the last save (a power cut then forgets neither, only newer values)."""


Known = Collection[str] | Callable[[str], bool]
"""Which saved sensors to restore: a set of ids, or a test (that may declare the id)."""


def snapshot_of(state: StateStore, rules: dict[str, Any] | None = None) -> dict[str, Any]:
    """The state as a JSON-ready dict (plus ``rules``: the ``when`` rules' tracks)."""
    return {
        "rules": rules or {},
        "sensors": {sid: _sensor(snap) for sid, snap in sorted(state.sensors().items())},
        "frames": {
            frame.camera: {
                "path": str(frame.path),
                "at": frame.at.isoformat(),
                "width": frame.width,
                "height": frame.height,
                "mime": frame.mime,
                "sha256": frame.sha256,
            }
            for frame in state.frames()
        },
    }


def _sensor(snap: SensorSnapshot) -> dict[str, Any]:
    item: dict[str, Any] = {"value": snap.value, "unit": snap.unit, "at": snap.at.isoformat()}
    if snap.previous is not None and snap.previous_at is not None:
        item.update(previous=snap.previous, previous_at=snap.previous_at.isoformat())
    return item


def _value(value: object) -> Value | None:
    if isinstance(value, int) and not isinstance(value, bool):
        return float(value)
    return value if isinstance(value, bool | float | str) else None


def _accepts(known: Known) -> Callable[[str], bool]:
    if callable(known):
        return known
    return known.__contains__


def restore(data: dict[str, Any], state: StateStore, known_sensors: Known) -> None:
    """Load a snapshot dict into ``state`` (sensors ``known_sensors`` refuses are ignored).

    Restored values are the sensors' latest (and previous) values with their own
    times, not new readings: they do not touch the rolling statistics, which
    :func:`rebuild_windows` rebuilds from the readings history.
    """
    accepts = _accepts(known_sensors)
    for sid, item in data.get("sensors", {}).items():
        value = _value(item.get("value"))
        if value is None or not accepts(sid):
            continue
        previous_at = item.get("previous_at")
        previous = _value(item.get("previous")) if isinstance(previous_at, str) else None
        state.restore(
            SensorSnapshot(
                sid,
                value,
                str(item.get("unit", "")),
                datetime.fromisoformat(item["at"]),
                previous,
                datetime.fromisoformat(previous_at) if previous is not None else None,
                topic="snapshot",
            )
        )
    for camera, item in data.get("frames", {}).items():
        frame = Frame(
            camera,
            Path(item["path"]),
            datetime.fromisoformat(item["at"]),
            int(item["width"]),
            int(item["height"]),
            str(item["mime"]),
            str(item["sha256"]),
        )
        if frame.path.is_file():
            state.set_frame(frame)


def read_snapshot(path: Path) -> dict[str, Any] | None:
    """The saved snapshot dict; None when there is none or it is unusable (logged)."""
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        return None
    except (OSError, ValueError) as exc:
        log.warning("state snapshot %s unusable: %s", path, exc)
        return None
    if not isinstance(data, dict):
        log.warning("state snapshot %s unusable: not an object", path)
        return None
    return data


def load_snapshot(path: Path, state: StateStore, known_sensors: Known) -> bool:
    """Restore ``path`` into ``state``; False when there is no usable snapshot."""
    data = read_snapshot(path)
    if data is None:
        return False
    return _load(path, data, state, known_sensors)


def _load(path: Path, data: dict[str, Any], state: StateStore, known: Known) -> bool:
    try:
        restore(data, state, known)
    except (ValueError, KeyError, TypeError, AttributeError) as exc:
        log.warning("state snapshot %s unusable: %s", path, exc)
        return False
    return True


def config_sensors(config: GatewayConfig, state: StateStore) -> Callable[[str], bool]:
    """A ``known_sensors`` test: True for the ids the config makes (captured ones like
    ``temp_kitchen`` too), each declared in ``state`` with its entry's expiry and windows
    as ingest would."""

    def declare(sensor_id: str) -> bool:
        spec = config.sensor_for(sensor_id)
        if spec is None:
            return False
        return state.register(sensor_id, expire_after=spec.expire_after, windows=spec.windows)

    return declare


def rebuild_windows(
    history: HistoryStore, state: StateStore, sensors: Collection[str], now: datetime
) -> int:
    """Refill the sensors' rolling windows (``min_24h``, ``mean_1h``, ``trend``...) from
    the per-minute rows stored before ``now``; returns the rows used."""
    used = 0
    for sensor in sensors:
        longest = max(state.windows(sensor), default=None)
        if longest is not None:
            rows = history.stored_minutes(sensor, now - longest - timedelta(minutes=1), now)
            used += state.replay_minutes(sensor, rows)
    return used


@dataclass
class Restored:
    """What :func:`restore_state` found."""

    snapshot: dict[str, Any] | None
    """The ``state.json`` dict (its ``rules`` part is for the rule watcher), or None
    when there was no usable one."""
    journal: Replayed = field(default_factory=Replayed)
    """Readings of the journal counted again (a run that ended without writing them)."""
    acks: dict[int, int] = field(default_factory=dict)
    """Messages the journal says were acknowledged (packet id → digest)."""
    mark: int = 0
    """The newest journal generation the history holds."""


def restore_state(
    config: GatewayConfig, state: StateStore, history: HistoryStore | None, now: datetime
) -> Restored:
    """What a start, a reload and ``preview`` begin with: every configured sensor
    declared, the latest values of ``state.json`` with their times, and the windows
    rebuilt from ``history`` (every sensor the config makes that has rows) and from the
    readings journal's files the history does not hold yet (read, not changed).
    """
    declare = config_sensors(config, state)
    for sensor in config.sensors:
        if not sensor.captures:
            declare(sensor.id)
    state_dir = config.gateway.resolved_state_dir()
    path = state_dir / SNAPSHOT_NAME
    data = read_snapshot(path)
    if data is not None and not _load(path, data, state, declare):
        data = None
    restored = Restored(data)
    if history is None:
        return restored
    ids = {s.id for s in config.sensors if not s.captures} | set(state.sensors())
    ids |= {sid for sid in history.sensors() if sid not in ids and declare(sid)}
    rebuild_windows(history, state, sorted(ids), now)
    restored.mark = mark = history.journal_mark()
    files = [(gen, p) for gen, p in journal_files(state_dir) if gen > mark]
    if files:

        def known(sensor: str) -> bool:
            """A sensor of this config (one removed since is not counted again)."""
            if sensor not in ids:
                if not declare(sensor):
                    return False
                ids.add(sensor)
            return True

        restored.journal, restored.acks = replay(
            files,
            mark,
            lambda sensor, value, t: known(sensor) and state.replay_reading(sensor, value, t),
            lambda sensor, row: known(sensor) and state.replay_carried(sensor, row),
        )
        _latest_from_journal(config, state, restored.journal)
    return restored


def _latest_from_journal(config: GatewayConfig, state: StateStore, replayed: Replayed) -> None:
    """A journaled reading newer than ``state.json``'s value becomes the latest (a
    killed run may not have saved it): so no sensor renders ``n/a`` after a crash."""
    for sensor, (t, value) in replayed.last.items():
        at = datetime.fromtimestamp(t, UTC)
        snap = state.get(sensor)
        if snap is not None and snap.at >= at:
            continue
        if snap is None:
            spec = config.sensor_for(sensor)
            snap = SensorSnapshot(sensor, value, spec.unit if spec else "", at)
        else:
            snap = snap._replace(
                value=value, at=at, previous=snap.value, previous_at=snap.at, offline=False
            )
        state.restore(snap)


class SnapshotWriter:
    """Writes the state snapshot when it changed since the last write."""

    def __init__(
        self,
        state: StateStore,
        path: Path,
        rules: Callable[[], dict[str, Any]] | None = None,
    ) -> None:
        self._state = state
        self.path = path
        self._rules = rules
        self._last: bytes | None = None
        self._saved_sensors = -1
        self._saved_rules: dict[str, Any] | None = None
        self._rate_log = RateLimitedLog(log)
        self.writes = 0

    def save_if_new_sensors(self) -> bool:
        """Save now if a sensor appeared or a ``when`` rule fired or re-armed since the
        last save (rare: not per reading); True if written."""
        rules = self._rules() if self._rules is not None else None
        if self._state.sensor_count() == self._saved_sensors and rules == self._saved_rules:
            return False
        return self.save()

    def save(self) -> bool:
        """Write the snapshot if it differs from the last one written; True if written."""
        rules = self._rules() if self._rules is not None else None
        count = self._state.sensor_count()
        data = json.dumps(snapshot_of(self._state, rules), ensure_ascii=False, indent=1).encode()
        if data == self._last:
            self._saved_sensors, self._saved_rules = count, rules
            return False
        try:
            atomic_write(self.path, data)
        except OSError as exc:
            # tried every 10 s while new sensors wait to be saved: a full disk logs a line
            # a minute, not six
            self._rate_log.warning("write", "cannot write state snapshot %s: %s", self.path, exc)
            return False
        self._last = data
        self._saved_sensors, self._saved_rules = count, rules
        self.writes += 1
        return True
