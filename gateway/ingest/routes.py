"""Per-topic handlers, compiled once: what a concrete topic feeds, and how to decode it.

The first message on a topic is matched against every filter, its ``{captures}``
are resolved into sensor ids, and the result is cached as a :class:`Route`; every
later message on that topic is one dict lookup.  Sensors created from captures
are bounded per config entry (``max_instances``) and the cache by ``max_routes``.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import datetime, timedelta, tzinfo
from functools import cache
from typing import Any

from gateway.config import CameraConfig, GatewayConfig, MqttCameraConfig, SensorConfig
from gateway.ingest.decoders import (
    DecodeError,
    coerce_json,
    decode_payload,
    json_field,
    transform_number,
)
from gateway.ingest.topics import (
    MAX_CAPTURE_LENGTH,
    TopicPattern,
    TopicRouter,
    minimal_filters,
    safe_id_part,
)
from gateway.model import Value
from gateway.state.store import StateStore
from gateway.support.ratelog import RateLimitedLog

log = logging.getLogger(__name__)

DEFAULT_MAX_ROUTES = 20_000
MAX_ID_LENGTH = 64
"""Like a configured id: a sensor id made from captures may be this long at most."""
MAX_CACHED_TOPIC = 1024
"""Longer topics are matched each time rather than kept in the route cache."""
_TASMOTA_UNITS = {"C": "°C", "F": "°F"}


@cache
def _field_parts(field: str) -> tuple[str, ...]:
    """``field`` split at dots, made once per configured field (not once per sensor)."""
    return tuple(field.split("."))


class SensorBinding:
    """One config entry bound to one concrete sensor id, with its decoding settings."""

    __slots__ = (
        "field", "fixed_unit", "fmt", "high", "is_json", "low", "numeric", "offset", "parts",
        "precision", "scale", "sensor", "spec", "time_field", "transform", "unit",
    )  # fmt: skip

    def __init__(self, sensor: str, spec: SensorConfig) -> None:
        self.sensor = sensor
        self.spec = spec
        self.fmt = spec.format
        self.field = spec.field or ""
        self.parts = _field_parts(self.field)
        self.is_json = spec.is_json
        self.unit = spec.unit
        # Tasmota names a temperature's unit in the payload (TempUnit); read it once.
        self.fixed_unit = bool(spec.unit) or not (
            spec.format == "tasmota" and self.field.endswith("Temperature")
        )
        self.low, self.high = spec.range if spec.range else (float("-inf"), float("inf"))
        self.scale, self.offset, self.precision = spec.scale, spec.offset, spec.precision
        self.transform = spec.scale != 1.0 or spec.offset != 0.0 or spec.precision is not None
        self.numeric = spec.is_numeric
        self.time_field = spec.default_time_field()

    def sent_at(self, document: Any, tz: tzinfo, now: float) -> float | None:
        """When the device says it took the reading (``time_field``), as epoch seconds
        no later than ``now``; None when the payload carries no usable time."""
        if self.time_field is None or document is None:
            return None
        try:
            raw = json_field(document, self.time_field)
        except DecodeError:
            return None
        t: float | None = None
        if isinstance(raw, int | float) and not isinstance(raw, bool):
            t = raw / 1000.0 if raw > 1e11 else float(raw)  # epoch milliseconds or seconds
        elif isinstance(raw, str):
            try:
                at = datetime.fromisoformat(raw)
            except ValueError:
                return None
            t = (at if at.tzinfo else at.replace(tzinfo=tz)).timestamp()
        if t is None or t != t or t <= 0:
            return None
        return min(t, now)

    def decode(self, payload: bytes, document: Any) -> Value:
        """The reading's value from the raw payload, or from the already parsed JSON."""
        if self.is_json:
            try:  # the common case inline: objects all the way down
                node = document
                for part in self.parts:
                    node = node[part]  # only a dict takes a str key; lists, str etc. raise
            except (KeyError, TypeError, IndexError):
                node = json_field(document, self.field)  # arrays, or the error
            # x - x == 0.0 only for finite floats; anything else goes the long way
            value = (
                node
                if type(node) is float and node - node == 0.0
                else coerce_json(node, self.numeric, self.unit)
            )
        else:
            value = decode_payload(payload, self.fmt, None, unit=self.unit)
        if type(value) is float:
            if self.transform:
                result = value * self.scale + self.offset  # transform_number, inlined
                if result - result != 0.0:  # overflowed to infinity: let it raise
                    result = transform_number(value, self.scale, self.offset, self.precision)
                precision = self.precision
                value = result if precision is None else round(result, precision)
            if not self.low <= value <= self.high:
                raise DecodeError(f"{value:g} is outside the range {self.low:g}..{self.high:g}")
        return value

    def unit_for(self, document: Any) -> str:
        """The configured unit; for a Tasmota temperature without one, its ``TempUnit``."""
        if self.fixed_unit:
            return self.unit
        raw = document.get("TempUnit") if isinstance(document, dict) else None
        if isinstance(raw, str) and raw in _TASMOTA_UNITS:
            self.unit, self.fixed_unit = _TASMOTA_UNITS[raw], True
        return self.unit


@dataclass(slots=True)
class Route:
    """Everything one concrete topic feeds."""

    topic: str = ""
    """The topic itself: readings keep this one string rather than each message's copy."""
    sensors: tuple[SensorBinding, ...] = ()
    needs_json: bool = False
    cameras: tuple[str, ...] = ()
    availability: tuple[str, ...] = ()
    """Sensor ids whose device reports online/offline on this topic."""
    empty: bool = True
    """True when nothing subscribes to this topic."""


@dataclass(frozen=True, slots=True)
class _Entry:
    kind: str  # "sensor" | "availability" | "camera"
    index: int
    pattern: TopicPattern
    sensor: SensorConfig | None = None
    camera: CameraConfig | None = None


@dataclass
class RouteTable:
    """Compiles and caches :class:`Route` objects for the topics that arrive."""

    config: GatewayConfig
    state: StateStore
    max_routes: int = DEFAULT_MAX_ROUTES
    _router: TopicRouter[_Entry] = field(default_factory=TopicRouter)
    cache: dict[str, Route] = field(default_factory=dict)
    """topic → compiled route; read directly by the message handler."""
    _instances: dict[int, set[str]] = field(default_factory=dict)
    _captured_from: dict[str, tuple[tuple[str, str], ...]] = field(default_factory=dict)
    """sensor id made from captures → the captured levels it was first made from."""
    refused_ids: int = 0
    """Topics whose captured levels made no sensor (too long, nothing left, a collision)."""
    _rate_log: RateLimitedLog = field(default_factory=lambda: RateLimitedLog(log))

    def __post_init__(self) -> None:
        for index, sensor in enumerate(self.config.sensors):
            self._add(_Entry("sensor", index, TopicPattern.parse(sensor.topic), sensor=sensor))
            avail = sensor.default_availability_topic()
            if avail is not None:
                self._add(_Entry("availability", index, TopicPattern.parse(avail), sensor=sensor))
        for index, camera in enumerate(self.config.cameras):
            if isinstance(camera, MqttCameraConfig):  # other sources are pulled, not pushed
                self._add(_Entry("camera", index, TopicPattern.parse(camera.topic), camera=camera))

    def _add(self, entry: _Entry) -> None:
        self._router.add(entry.pattern.filter, entry)

    def subscriptions(self) -> list[str]:
        """The filters to subscribe to: none covered by another (an MQTT 5 broker would
        deliver a message once per matching filter)."""
        return minimal_filters(self._router.subscriptions())

    def route(self, topic: str) -> Route:
        """The cached route of ``topic``, compiled on first sight."""
        found = self.cache.get(topic)
        if found is None:
            refused = self.refused_ids
            found = self.compile(topic)
            # A refused captured id is not cached: each of its messages is counted.
            cacheable = len(topic) <= MAX_CACHED_TOPIC and self.refused_ids == refused
            if cacheable and len(self.cache) < self.max_routes:
                self.cache[topic] = found
        return found

    def compile(self, topic: str) -> Route:
        """Match ``topic`` against every entry and bind its sensors (no caching)."""
        sensors: list[SensorBinding] = []
        cameras: list[str] = []
        availability: list[str] = []
        for entry in self._router.match(topic):
            if entry.camera is not None:
                cameras.append(entry.camera.id)
                continue
            sensor_id = self._sensor_id(entry, topic)
            if sensor_id is None:
                continue
            if entry.kind == "availability":
                availability.append(sensor_id)
            else:
                assert entry.sensor is not None
                sensors.append(SensorBinding(sensor_id, entry.sensor))
        return Route(
            topic,
            tuple(sensors),
            any(s.is_json for s in sensors),
            tuple(cameras),
            tuple(availability),
            not (sensors or cameras or availability),
        )

    def _sensor_id(self, entry: _Entry, topic: str) -> str | None:
        spec = entry.sensor
        assert spec is not None
        if not entry.pattern.names:
            self._declare(spec, spec.id)
            return spec.id
        raw = entry.pattern.captures(topic)
        captures = {k: safe_id_part(v) for k, v in raw.items()}
        try:
            sensor_id = spec.id.format_map(captures)
        except KeyError:
            return None  # an availability topic that does not name every capture of the id
        if not self._captured_id_fits(entry, spec, sensor_id, captures, raw, topic):
            return None
        known = self._instances.setdefault(entry.index, set())
        if sensor_id not in known:
            if len(known) >= spec.max_instances:
                self._rate_log.warning(
                    f"instances:{entry.index}",
                    "sensors[%d] (%s): max_instances=%d reached; ignoring topic %s",
                    entry.index,
                    spec.id,
                    spec.max_instances,
                    topic,
                )
                return None
            known.add(sensor_id)
        self._declare(spec, sensor_id)
        return sensor_id

    def _captured_id_fits(
        self,
        entry: _Entry,
        spec: SensorConfig,
        sensor_id: str,
        captures: dict[str, str | None],
        raw: dict[str, str],
        topic: str,
    ) -> bool:
        """False (counted, logged once a minute) for a refused or colliding captured id."""
        if None in captures.values() or len(sensor_id) > MAX_ID_LENGTH:
            reason = (
                f"a captured level is over {MAX_CAPTURE_LENGTH} characters or has no"
                f" letter or digit, or the id is over {MAX_ID_LENGTH}"
            )
        else:
            source = tuple(sorted(raw.items()))
            if entry.kind == "availability":  # names a sensor, never claims an id
                first = self._captured_from.get(sensor_id, source)
            else:
                first = self._captured_from.setdefault(sensor_id, source)
            if first == source:
                return True
            reason = f"its id {sensor_id!r} is already taken by {dict(first)!r}"
        self.refused_ids += 1
        self._rate_log.warning(
            f"captured-id:{entry.index}",
            "sensors[%d] (%s): ignoring topic %.200s: %s (%d refused so far)",
            entry.index,
            spec.id,
            topic,
            reason,
            self.refused_ids,
        )
        return False

    def _declare(self, spec: SensorConfig, sensor_id: str) -> None:
        windows: tuple[timedelta, ...] | None = spec.windows
        self.state.register(sensor_id, expire_after=spec.expire_after, windows=windows)

    def sensor_ids(self) -> Iterator[str]:
        """Sensor ids bound so far (config ids and ids made from captures)."""
        seen: set[str] = set()
        for route in list(self.cache.values()):  # the MQTT thread may add routes meanwhile
            for binding in route.sensors:
                if binding.sensor not in seen:
                    seen.add(binding.sensor)
                    yield binding.sensor
