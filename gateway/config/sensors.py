"""``[[sensors]]`` entries: one value read from an MQTT topic (or one per capture).

Part of the configuration; :mod:`gateway.config` re-exports these names.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from typing import Literal

from pydantic import Field, model_validator
from pydantic_core import PydanticCustomError

from gateway.config.durations import Duration
from gateway.config.sections import Section

SensorFormat = Literal["number", "json", "text", "bool", "tasmota", "zigbee2mqtt"]
_CAPTURE = re.compile(r"\{([A-Za-z_][A-Za-z0-9_]*)\}")
_JSON_FORMATS = frozenset({"json", "tasmota", "zigbee2mqtt"})


def topic_captures(topic: str) -> list[str]:
    """Names of the ``{name}`` levels of a sensor topic, in order."""
    return _CAPTURE.findall(topic)


def id_pattern(sensor_id: str) -> re.Pattern[str]:
    """The ids a sensor id with ``{captures}`` produces, as a regex with one group per
    capture (a captured level becomes letters, digits and ``_``)."""
    parts = _CAPTURE.split(sensor_id)
    out = []
    for i, part in enumerate(parts):
        out.append(f"(?P<{part}>[A-Za-z0-9_]+?)" if i % 2 else re.escape(part))
    return re.compile("".join(out))


class SensorConfig(Section):
    """``[[sensors]]``: one value read from an MQTT topic (or one per ``{capture}``)."""

    id: str = Field(
        pattern=r"^[A-Za-z_{][A-Za-z0-9_{}]{0,63}\Z",
        description="Name used in templates and rules, e.g. water_temp; may use the topic's"
        " captures, e.g. temp_{room}.",
    )
    topic: str = Field(
        min_length=1,
        description="MQTT topic or filter (+ and # allowed); a level written {name} matches"
        " like + and captures the level for the id.",
    )
    format: SensorFormat = Field(
        default="number",
        description="number: plain number ('21.5', '21.5 °C', the unit being the sensor's or a"
        " common one); json: an object, value at `field` (numbers only when the sensor has a"
        " unit, range, scale, offset or precision);"
        " text; bool; tasmota: tele/<device>/SENSOR JSON + LWT; zigbee2mqtt: zigbee2mqtt/<device>"
        " JSON + availability.",
    )
    field: str | None = Field(
        default=None,
        description="Dotted path into a JSON payload (arrays by index), e.g. DS18B20.Temperature.",
    )
    time_field: str | None = Field(
        default=None,
        description="Dotted path to the time the device took the reading (ISO 8601, or"
        " epoch seconds/milliseconds), read for retained messages, whose age is otherwise"
        " unknown. Default: tasmota Time, zigbee2mqtt last_seen.",
    )
    unit: str = Field(default="", description="Unit shown after the value, e.g. °C.")
    scale: float = Field(default=1.0, description="Numbers are multiplied by this ...")
    offset: float = Field(default=0.0, description="... then this is added.")
    precision: int | None = Field(
        default=None, ge=0, le=10, description="Round numbers to this many decimals."
    )
    range: tuple[float, float] | None = Field(
        default=None,
        description="[min, max] after scale and offset; readings outside are rejected.",
    )
    expire_after: Duration | None = Field(
        default=None, description="Mark the sensor stale when no reading came for this long."
    )
    availability_topic: str | None = Field(
        default=None,
        description="Topic saying online/offline for the device (may use the same captures)."
        " Default: tasmota tele/<device>/LWT, zigbee2mqtt <topic>/availability, else none.",
    )
    windows: tuple[Duration, ...] | None = Field(
        default=None, description="Rolling statistics windows. Default: [state].windows."
    )
    max_instances: int = Field(
        default=100,
        ge=1,
        le=10_000,
        description="With captures: at most this many sensors are created from one entry.",
    )

    @model_validator(mode="after")
    def _consistent(self) -> SensorConfig:
        problems = list(_sensor_problems(self))
        if problems:
            raise PydanticCustomError("sensor", "\n".join(problems))
        return self

    @property
    def captures(self) -> list[str]:
        """The names captured from the topic."""
        return topic_captures(self.topic)

    def makes(self, sensor_id: str) -> bool:
        """True when this entry's id is ``sensor_id``, or its captures can produce it
        (``temp_{room}`` makes ``temp_kitchen``)."""
        if not self.captures:
            return sensor_id == self.id
        return id_pattern(self.id).fullmatch(sensor_id) is not None

    @property
    def is_json(self) -> bool:
        """True when the payload is a JSON document read at `field`."""
        return self.format in _JSON_FORMATS

    @property
    def is_numeric(self) -> bool:
        """True when the sensor holds numbers only (text such as ``off`` is refused).

        The ``number`` format; and a JSON format with a ``unit``, ``range``, ``scale``,
        ``offset`` or ``precision`` (or a Tasmota temperature, whose unit is in the payload).
        """
        if self.format == "number":
            return True
        if not self.is_json:
            return False
        return bool(
            self.unit
            or self.range is not None
            or self.scale != 1.0
            or self.offset != 0.0
            or self.precision is not None
            or (self.format == "tasmota" and (self.field or "").endswith("Temperature"))
        )

    def default_time_field(self) -> str | None:
        """``time_field``, else the convention of the payload format (None: no time)."""
        if self.time_field is not None:
            return self.time_field
        return {"tasmota": "Time", "zigbee2mqtt": "last_seen"}.get(self.format)

    def default_availability_topic(self) -> str | None:
        """``availability_topic``, else the convention of the payload format."""
        if self.availability_topic is not None:
            return self.availability_topic
        if self.format == "zigbee2mqtt":
            return f"{self.topic}/availability"
        if self.format == "tasmota":
            head, _, last = self.topic.rpartition("/")
            if head and last in ("SENSOR", "STATE"):
                return f"{head}/LWT"
        return None


def _topic_problems(name: str, topic: str) -> Iterator[str]:
    levels = topic.split("/")
    for i, level in enumerate(levels):
        if "#" in level and (level != "#" or i != len(levels) - 1):
            yield f"{name}: '#' must be a whole level, and the last one"
        elif "+" in level and level != "+":
            yield f"{name}: '+' must be a whole level"
        elif ("{" in level or "}" in level) and not _CAPTURE.fullmatch(level):
            yield f"{name}: a capture must be a whole level, like {{room}}"
    names = topic_captures(topic)
    if len(set(names)) != len(names):
        yield f"{name}: a capture name is used twice"


def _sensor_problems(sensor: SensorConfig) -> Iterator[str]:
    if sensor.time_field is not None and not sensor.is_json:
        yield "time_field: needs a JSON format (json, tasmota, zigbee2mqtt)"
    if sensor.is_json and not sensor.field:
        yield f"field: format {sensor.format!r} needs `field`"
    yield from _topic_problems("topic", sensor.topic)
    captures = set(sensor.captures)
    for name in _CAPTURE.findall(sensor.id):
        if name not in captures:
            yield f"id: {{{name}}} is not captured by the topic"
    if captures and not _CAPTURE.search(sensor.id):
        yield "id: a topic with captures needs them in the id, e.g. temp_{room}"
    if not re.fullmatch(r"[A-Za-z_][A-Za-z0-9_]*", _CAPTURE.sub("x", sensor.id)):
        yield "id: use letters, digits, _ and whole {capture} names"
    if sensor.availability_topic is not None:
        yield from _topic_problems("availability_topic", sensor.availability_topic)
        for name in topic_captures(sensor.availability_topic):
            if name not in captures:
                yield f"availability_topic: {{{name}}} is not captured by the topic"
    if sensor.range is not None and sensor.range[0] > sensor.range[1]:
        yield "range: min is greater than max"
    if sensor.scale == 0:
        yield "scale: must not be 0"
    for i, window in enumerate(sensor.windows or ()):
        if not 60 <= window.total_seconds() <= 31 * 86400:
            yield f"windows[{i}]: must be between 1m and 31d"
