"""The last known state on disk: restored at start and reload, read by ``preview``.

The daemon writes ``<state_dir>/state.json`` — each sensor's latest value, unit and
time (and its previous value), and each camera's newest frame file — every few
minutes *only when something changed*, and once at shutdown.  An SD card sees a
handful of small atomic writes an hour, not one per reading.
"""

from __future__ import annotations

import json
import logging
from datetime import datetime
from pathlib import Path
from typing import Any

from gateway.model import Frame, Value
from gateway.state.store import SensorSnapshot, StateStore
from gateway.support.files import atomic_write

log = logging.getLogger(__name__)

SNAPSHOT_NAME = "state.json"
SAVE_EVERY_SECONDS = 300.0


def snapshot_of(state: StateStore) -> dict[str, Any]:
    """The state as a JSON-ready dict."""
    return {
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


def restore(data: dict[str, Any], state: StateStore, known_sensors: set[str]) -> None:
    """Load a snapshot dict into ``state`` (sensors not in the config are ignored).

    Restored values are the sensors' latest (and previous) values, not new readings:
    rolling statistics come from the readings history, which already holds them.
    """
    for sid, item in data.get("sensors", {}).items():
        value = _value(item.get("value"))
        if sid not in known_sensors or value is None:
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


def load_snapshot(path: Path, state: StateStore, known_sensors: set[str]) -> bool:
    """Restore ``path`` into ``state``; False when there is no usable snapshot."""
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
        restore(data, state, known_sensors)
    except FileNotFoundError:
        return False
    except (OSError, ValueError, KeyError, TypeError) as exc:
        log.warning("state snapshot %s unusable: %s", path, exc)
        return False
    return True


class SnapshotWriter:
    """Writes the state snapshot when it changed since the last write."""

    def __init__(self, state: StateStore, path: Path) -> None:
        self._state = state
        self.path = path
        self._last: bytes | None = None
        self.writes = 0

    def save(self) -> bool:
        """Write the snapshot if it differs from the last one written; True if written."""
        data = json.dumps(snapshot_of(self._state), ensure_ascii=False, indent=1).encode()
        if data == self._last:
            return False
        try:
            atomic_write(self.path, data)
        except OSError as exc:
            log.warning("cannot write state snapshot %s: %s", self.path, exc)
            return False
        self._last = data
        self.writes += 1
        return True
