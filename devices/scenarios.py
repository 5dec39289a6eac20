"""Scenario profiles for ``things-device simulate --scenario``.

Each profile publishes what the matching example config under ``config/examples/``
subscribes to, so ``things-gateway run -c config/examples/<name>.toml`` next to
``things-device simulate --scenario <name>`` posts something meaningful:

- ``pool`` (also the demo): ``pool/temperature`` number, ``weather/SENSOR`` Tasmota JSON,
  ``river/level`` JSON and a JPEG on ``cam/pool``;
- ``plant``: ``plant/soil`` JSON ``{"moisture": 27.5, "temperature": 19.2}``,
  ``plant/light`` lux number, ``plant/pump`` ``on``/``off``; a moisture that dries
  out over minutes and jumps back after a watering; no camera;
- ``bridge``: ``bridge/state`` ``open``/``closed`` text, ``bridge/vessel`` JSON
  ``{"name": "...", "length_m": 31.0}``, ``bridge/wind`` m/s number and a JPEG on
  ``cam/bridge``.
"""

from __future__ import annotations

import json
import random
from datetime import datetime
from typing import Protocol

SCENARIOS = ("pool", "plant", "bridge")
CAMERA_TOPICS = {"pool": "cam/pool", "plant": None, "bridge": "cam/bridge"}
"""Which topic (under the prefix) carries the scenario's camera frames, if any."""

VESSELS = ("Marianne", "Thames Clipper", "Dutch Barge Anna", "Tall Ship Tenacious", "Havengore")


class Model(Protocol):
    """What the simulator needs from a scenario model."""

    def messages(self, prefix: str, at: datetime) -> list[tuple[str, bytes]]:
        """One (topic, payload) per sensor for a reading taken at ``at``."""
        ...


class PlantModel:
    """A pot plant: soil dries out, a pump waters it when it gets too dry."""

    def __init__(self, seed: int | None = None) -> None:
        """Start moist; ``seed`` makes the sequence repeatable."""
        self._rng = random.Random(seed)
        self._moisture = self._rng.uniform(35.0, 45.0)
        self._pump = False

    def messages(self, prefix: str, at: datetime) -> list[tuple[str, bytes]]:
        """Soil JSON, light level and pump state."""
        self._pump = self._moisture < 22.0
        if self._pump:
            self._moisture = self._rng.uniform(55.0, 65.0)
        else:
            self._moisture = max(5.0, self._moisture - self._rng.uniform(0.2, 0.8))
        hour = at.hour + at.minute / 60
        light = max(0.0, 12000.0 * (1 - abs(hour - 13.0) / 7.0)) + self._rng.uniform(0, 50)
        soil = {
            "moisture": round(self._moisture, 1),
            "temperature": round(19.0 + self._rng.gauss(0, 0.3), 1),
        }
        return [
            (f"{prefix}/plant/soil", json.dumps(soil).encode()),
            (f"{prefix}/plant/light", f"{light:.0f}".encode()),
            (f"{prefix}/plant/pump", b"on" if self._pump else b"off"),
        ]


class BridgeModel:
    """A bascule bridge that opens for a passing vessel every few readings."""

    def __init__(self, seed: int | None = None, cycle: int = 6) -> None:
        """Open for ``cycle // 2`` readings out of every ``cycle``."""
        self._rng = random.Random(seed)
        self._cycle = cycle
        self._n = 0
        self._vessel = self._rng.choice(VESSELS)

    def messages(self, prefix: str, at: datetime) -> list[tuple[str, bytes]]:
        """Bridge state, the vessel passing (or last passed) and the wind."""
        phase = self._n % self._cycle
        if phase == 0:
            self._vessel = self._rng.choice(VESSELS)
        self._n += 1
        state = b"open" if phase < self._cycle // 2 else b"closed"
        vessel = {"name": self._vessel, "length_m": round(self._rng.uniform(12.0, 60.0), 1)}
        wind = max(0.0, self._rng.gauss(6.0, 2.0))
        return [
            (f"{prefix}/bridge/state", state),
            (f"{prefix}/bridge/vessel", json.dumps(vessel).encode()),
            (f"{prefix}/bridge/wind", f"{wind:.1f}".encode()),
        ]
