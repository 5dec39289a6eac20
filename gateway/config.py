"""The gateway's configuration: one TOML file, validated, with env overrides.

Load order (later wins): the TOML file, then environment variables prefixed
``THINGS_GATEWAY_`` with ``__`` for nesting (``THINGS_GATEWAY_MQTT__HOST``).
Any string may be ``"${NAME}"``: it is read from the environment variable
``NAME``, else from the file ``$CREDENTIALS_DIRECTORY/NAME`` (systemd's
``LoadCredential=``).  Unknown keys are errors.  Every problem is reported as one
line naming its path, e.g. ``sensors[1].topic: Field required``; values are never
echoed, so secrets stay out of logs.
"""

from __future__ import annotations

import os
import re
import tomllib
from collections.abc import Iterator, Mapping
from datetime import timedelta
from pathlib import Path
from typing import Annotated, Any, Literal
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from pydantic import (
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Discriminator,
    Field,
    SecretStr,
    Tag,
    ValidationError,
    ValidationInfo,
    field_validator,
    model_validator,
)
from pydantic_core import PydanticCustomError
from pydantic_settings import BaseSettings, PydanticBaseSettingsSource, SettingsConfigDict

from gateway.durations import Duration, format_duration, parse_duration  # noqa: F401 - re-exported
from gateway.publishers import PUBLISHER_TYPES, PublisherConfigs

DEFAULT_CONFIG_PATH = Path("/etc/things-gateway/gateway.toml")
CONFIG_ENV = "THINGS_GATEWAY_CONFIG"
ENV_PREFIX = "THINGS_GATEWAY_"
CREDENTIAL_FOLDER_ID = "gw"
"""The unit loads /etc/things-gateway/credentials/ as credentials named ``gw_<file>``."""

_REF = re.compile(r"\$\{([A-Za-z_][A-Za-z0-9_]*)\}")


_SIZE = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*(?:([kmgt])(i?))?b?\s*$", re.IGNORECASE)
_SIZE_PREFIXES = "kmgt"


def parse_size(value: object) -> object:
    """Turn ``"500MB"``, ``"2 GiB"``, ``"750k"`` or a number of bytes into an int.

    ``KB``/``MB``/``GB`` are powers of 1000, ``KiB``/``MiB``/``GiB`` powers of 1024.
    """
    if isinstance(value, bool):
        raise PydanticCustomError("size", "expected a size such as 500MB")
    if isinstance(value, int):
        return value
    if isinstance(value, float) and value.is_integer():
        return int(value)
    match = _SIZE.match(value) if isinstance(value, str) else None
    if match is None:
        raise PydanticCustomError(
            "size", "invalid size: use a number and a unit (B, KB, MB, GB, KiB, MiB, GiB)"
        )
    prefix, binary = (match.group(2) or "").lower(), bool(match.group(3))
    power = _SIZE_PREFIXES.index(prefix) + 1 if prefix else 0
    return int(float(match.group(1)) * (1024 if binary else 1000) ** power)


Size = Annotated[int, BeforeValidator(parse_size), Field(ge=0)]

Identifier = Annotated[str, Field(pattern=r"^[A-Za-z_][A-Za-z0-9_]{0,63}$")]


class Section(BaseModel):
    """Base of every config table: unknown keys are errors; values are frozen."""

    model_config = ConfigDict(extra="forbid", frozen=True)


class GatewaySection(Section):
    """``[gateway]``: who this gateway is and where it keeps its state."""

    name: str = Field(
        default="things-gateway",
        pattern=r"^[A-Za-z0-9_.-]{1,64}$",
        description="Short name; used in the MQTT status topic and client id.",
    )
    timezone: str = Field(
        default="UTC", description="IANA time zone for schedules and times in posts."
    )
    state_dir: Path | None = Field(
        default=None,
        description="Database, media and archive live here. Default: $STATE_DIRECTORY, else ./var.",
    )
    log_level: Literal["debug", "info", "warning", "error"] = Field(
        default="info", description="Least severe log level printed."
    )

    @field_validator("timezone")
    @classmethod
    def _known_zone(cls, value: str) -> str:
        try:
            ZoneInfo(value)
        except (ZoneInfoNotFoundError, ValueError):
            raise PydanticCustomError(
                "timezone", f"unknown time zone {value!r} (use e.g. Europe/London)"
            ) from None
        return value

    def resolved_state_dir(self) -> Path:
        """``state_dir``, else ``$STATE_DIRECTORY`` (systemd), else ``./var``."""
        if self.state_dir is not None:
            return self.state_dir
        from_systemd = os.environ.get("STATE_DIRECTORY", "").split(":")[0]
        return Path(from_systemd) if from_systemd else Path("var")

    @property
    def tz(self) -> ZoneInfo:
        """The configured time zone."""
        return ZoneInfo(self.timezone)


class TlsSection(Section):
    """``[mqtt.tls]``: encrypt the broker connection (present means on)."""

    ca_file: Path | None = Field(
        default=None,
        description="CA certificate(s) that signed the broker's certificate. Default: the"
        " system's trusted CAs.",
    )
    cert_file: Path | None = Field(
        default=None, description="Client certificate, for brokers that require one."
    )
    key_file: Path | None = Field(default=None, description="Private key of `cert_file`.")
    key_password: SecretStr | None = Field(
        default=None, description='Passphrase of `key_file`, e.g. "${MQTT_KEY_PASSWORD}".'
    )
    insecure: bool = Field(
        default=False,
        description="Skip the check that the certificate names `host`. Only for testing.",
    )

    @model_validator(mode="after")
    def _cert_and_key(self) -> TlsSection:
        if (self.cert_file is None) != (self.key_file is None):
            raise PydanticCustomError("tls_pair", "set both `cert_file` and `key_file`, or neither")
        return self


class MqttSection(Section):
    """``[mqtt]``: the broker the gateway subscribes to."""

    host: str = Field(default="localhost", description="Broker host name or address.")
    port: int = Field(default=1883, ge=1, le=65535, description="Broker TCP port (TLS: 8883).")
    client_id: str | None = Field(
        default=None, description="MQTT client id. Default: '<gateway name>-gw'."
    )
    protocol: Literal[5, 311] = Field(default=5, description="MQTT protocol: 5 or 311 (3.1.1).")
    qos: Literal[0, 1, 2] = Field(default=1, description="QoS of the gateway's subscriptions.")
    persistent_session: bool = Field(
        default=True,
        description="Keep the broker session across restarts, so QoS 1 readings sent meanwhile"
        " arrive.",
    )
    session_expiry: Duration = Field(
        default=timedelta(days=1),
        description="MQTT 5 session expiry when persistent_session is on.",
    )
    keepalive: int = Field(default=60, ge=5, le=65535, description="Keepalive interval in seconds.")
    username: str | None = Field(default=None, description="Broker user name.")
    password: SecretStr | None = Field(
        default=None, description='Broker password, e.g. "${MQTT_PASSWORD}".'
    )
    tls: TlsSection | None = Field(default=None, description="[mqtt.tls]: TLS settings.")
    reconnect_min: Duration = Field(
        default=timedelta(seconds=1), description="First delay before reconnecting."
    )
    reconnect_max: Duration = Field(
        default=timedelta(minutes=1),
        description="Reconnect delays double up to this cap while the broker is away.",
    )
    share_group: str | None = Field(
        default=None,
        pattern=r"^[^/+#]{1,64}$",
        description="Subscribe as '$share/<group>/<filter>' so gateways in one group split"
        " the stream (MQTT 5 shared subscriptions).",
    )
    status_prefix: str = Field(
        default="things-gateway",
        description="Retained status topic: '<status_prefix>/<gateway name>/status'"
        " (online/offline).",
    )
    max_payload_bytes: int = Field(
        default=8 * 1024 * 1024, ge=1024, description="Larger messages are rejected and counted."
    )
    max_sensor_payload_bytes: int = Field(
        default=64 * 1024,
        ge=16,
        description="Larger messages on a sensor topic are rejected and counted for the sensor.",
    )

    @field_validator("reconnect_min")
    @classmethod
    def _reconnect_min(cls, value: timedelta) -> timedelta:
        if value.total_seconds() < 0.1:
            raise PydanticCustomError("reconnect", "must be at least 100ms")
        return value

    @field_validator("reconnect_max")
    @classmethod
    def _reconnect_max(cls, value: timedelta, info: ValidationInfo) -> timedelta:
        low = info.data.get("reconnect_min")
        if isinstance(low, timedelta) and value < low:
            raise PydanticCustomError("reconnect", "less than `reconnect_min`")
        return value


class MediaSection(Section):
    """``[media]``: frames and rendered images under ``<state_dir>/media/``, and their limits."""

    max_age: Duration = Field(
        default=timedelta(days=7), description="Frames and renders older than this are deleted."
    )
    max_bytes: Size = Field(
        default=500_000_000, description='Disk budget of the media folder, e.g. "500MB".'
    )
    retention_interval: Duration = Field(
        default=timedelta(minutes=5), description="How often the limits are enforced."
    )
    keep_recent_frames: int = Field(
        default=30, ge=1, description="Newest frames kept per camera, however close together."
    )
    keep_frame_every: Duration = Field(
        default=timedelta(minutes=5),
        description="Older frames are thinned to one per this interval (for timelapses).",
    )


class HealthSection(Section):
    """``[health]``: the daemon's own health: watchdog, health row, shutdown."""

    interval: Duration = Field(
        default=timedelta(seconds=60),
        description="How often the health row for `things-gateway status` is refreshed;"
        " it is only written when something in it changed.",
    )
    stall_after: Duration = Field(
        default=timedelta(seconds=120),
        description="A thread (ingest, scheduler, delivery) silent this long counts as hung:"
        " the systemd watchdog is no longer fed and systemd restarts the service.",
    )
    disk_check: Duration = Field(
        default=timedelta(seconds=30),
        description="How often free disk space is checked (`disk nearly full` is logged"
        " and shown by `status` while it is low).",
    )
    shutdown_timeout: Duration = Field(
        default=timedelta(seconds=10),
        description="On SIGTERM, how long in-flight deliveries may take before the rest"
        " stay in the outbox.",
    )


class HomeAssistantSection(Section):
    """``[homeassistant]``: MQTT discovery of the gateway's own health."""

    enabled: bool = Field(default=False, description="Publish Home Assistant discovery.")
    discovery_prefix: str = Field(
        default="homeassistant", description="Home Assistant's discovery prefix."
    )
    node_id: str | None = Field(
        default=None,
        pattern=r"^[A-Za-z0-9_-]{1,64}$",
        description="Node id in discovery topics. Default: the gateway name.",
    )
    interval: Duration = Field(
        default=timedelta(seconds=60), description="How often the health state is published."
    )



SensorFormat = Literal["number", "json", "text", "bool", "tasmota", "zigbee2mqtt"]
_CAPTURE = re.compile(r"\{([A-Za-z_][A-Za-z0-9_]*)\}")
_JSON_FORMATS = frozenset({"json", "tasmota", "zigbee2mqtt"})


def topic_captures(topic: str) -> list[str]:
    """Names of the ``{name}`` levels of a sensor topic, in order."""
    return _CAPTURE.findall(topic)


class SensorConfig(Section):
    """``[[sensors]]``: one value read from an MQTT topic (or one per ``{capture}``)."""

    id: str = Field(
        pattern=r"^[A-Za-z_{][A-Za-z0-9_{}]{0,63}$",
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
        description="number: plain number ('21.5', '21.5 °C'); json: an object, value at `field`;"
        " text; bool; tasmota: tele/<device>/SENSOR JSON + LWT; zigbee2mqtt: zigbee2mqtt/<device>"
        " JSON + availability.",
    )
    field: str | None = Field(
        default=None,
        description="Dotted path into a JSON payload (arrays by index), e.g. DS18B20.Temperature.",
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

    @property
    def is_json(self) -> bool:
        """True when the payload is a JSON document read at `field`."""
        return self.format in _JSON_FORMATS

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


class StateSection(Section):
    """``[state]``: rolling statistics and the per-minute readings history."""

    windows: tuple[Duration, ...] = Field(
        default=(timedelta(hours=1), timedelta(hours=24)),
        max_length=4,
        description="Rolling statistics windows of every numeric sensor (min, max, mean, trend).",
    )
    history_flush_interval: Duration = Field(
        default=timedelta(minutes=10),
        description="Per-minute history is written to SQLite this often (few SD card writes).",
    )
    history_retention: Duration = Field(
        default=timedelta(days=30), description="Per-minute history older than this is deleted."
    )
    max_sensors: int = Field(
        default=5000, ge=1, description="Upper bound on sensors held in memory (all entries)."
    )

    @field_validator("windows")
    @classmethod
    def _window_sizes(cls, value: tuple[timedelta, ...]) -> tuple[timedelta, ...]:
        for window in value:
            if not 60 <= window.total_seconds() <= 31 * 86400:
                raise PydanticCustomError("window", "each window must be between 1m and 31d")
        return value

    @field_validator("history_flush_interval")
    @classmethod
    def _flush_interval(cls, value: timedelta) -> timedelta:
        if value.total_seconds() < 1:
            raise PydanticCustomError("flush", "must be at least 1s")
        return value


OnMissing = Literal["skip_image", "skip_post"]


class CameraConfig(Section):
    """``[[cameras]]``: a source of frames for posts (fields every ``source`` shares)."""

    id: Identifier = Field(description="Name rules use in `images` and `timelapse`.")
    max_age: Duration = Field(
        default=timedelta(minutes=10),
        description="An older frame is stale: the rule does what `on_missing` says.",
    )
    on_missing: OnMissing = Field(
        default="skip_image",
        description="No fresh frame: skip_image posts without it, skip_post posts nothing.",
    )

    @property
    def pulled(self) -> bool:
        """True when frames are fetched on demand (not pushed over MQTT)."""
        return not isinstance(self, MqttCameraConfig)


class MqttCameraConfig(CameraConfig):
    """``source = "mqtt"``: JPEG or PNG payloads (raw or base64) pushed on a topic."""

    source: Literal["mqtt"] = Field(default="mqtt", description="Selects this source.")
    topic: str = Field(min_length=1, description="MQTT topic carrying binary JPEG or PNG frames.")


class HttpCameraConfig(CameraConfig):
    """``source = "http"``: a snapshot URL fetched when a rule needs a frame."""

    source: Literal["http"] = Field(description="Selects this source.")
    url: str = Field(
        pattern=r"^https?://", description="Snapshot URL, e.g. http://esp32cam.lan/capture."
    )
    timeout: Duration = Field(
        default=timedelta(seconds=10), description="Connect/read timeout; the body gets twice it."
    )
    username: str | None = Field(default=None, description="User name for the camera.")
    password: SecretStr | None = Field(
        default=None, description='Password, e.g. "${CAMERA_PASSWORD}"; never logged.'
    )
    auth: Literal["basic", "digest"] = Field(
        default="basic", description="basic (sent up front) or digest (answers the challenge)."
    )
    max_bytes: Size = Field(default=10_000_000, description="Larger snapshots are refused.")

    def credentials(self) -> tuple[str, str] | None:
        """``(user, password)`` when a user is set."""
        if self.username is None:
            return None
        secret = self.password.get_secret_value() if self.password else ""
        return self.username, secret


class FileCameraConfig(CameraConfig):
    """``source = "file"``: the newest file matching a path or glob (motion, fswebcam)."""

    source: Literal["file"] = Field(description="Selects this source.")
    path: str = Field(
        min_length=1, description="File or glob (``**`` allowed), e.g. /var/lib/motion/*.jpg."
    )
    max_bytes: Size = Field(default=20_000_000, description="Larger files are refused.")


class CommandCameraConfig(CameraConfig):
    """``source = "command"``: a command that writes one image to stdout."""

    source: Literal["command"] = Field(description="Selects this source.")
    argv: tuple[str, ...] = Field(
        min_length=1, description='Program and arguments, no shell: ["rpicam-still", "-o", "-"].'
    )
    timeout: Duration = Field(
        default=timedelta(seconds=20), description="The command is killed after this long."
    )
    max_bytes: Size = Field(default=20_000_000, description="More output than this is refused.")


class PicameraConfig(CameraConfig):
    """``source = "picamera"``: the Raspberry Pi camera through picamera2 (optional)."""

    source: Literal["picamera"] = Field(description="Selects this source.")
    resolution: tuple[int, int] | None = Field(
        default=None, description="Still size [width, height]; default: the sensor's full size."
    )


_CAMERA_CLASSES: dict[str, type[CameraConfig]] = {
    "mqtt": MqttCameraConfig,
    "http": HttpCameraConfig,
    "file": FileCameraConfig,
    "command": CommandCameraConfig,
    "picamera": PicameraConfig,
}
CAMERA_SOURCES: tuple[str, ...] = tuple(_CAMERA_CLASSES)
"""Every ``source`` value, used to drop the union tag from error paths."""


def _camera_source(value: Any) -> str:
    # `source` may be left out: cameras were MQTT-only before the other sources existed
    if isinstance(value, Mapping):
        return str(value.get("source", "mqtt"))
    return str(getattr(value, "source", "mqtt"))


AnyCameraConfig = (
    MqttCameraConfig | HttpCameraConfig | FileCameraConfig | CommandCameraConfig | PicameraConfig
)
"""Every camera source's config class."""

CameraConfigs = Annotated[
    Annotated[MqttCameraConfig, Tag("mqtt")]
    | Annotated[HttpCameraConfig, Tag("http")]
    | Annotated[FileCameraConfig, Tag("file")]
    | Annotated[CommandCameraConfig, Tag("command")]
    | Annotated[PicameraConfig, Tag("picamera")],
    Discriminator(
        _camera_source,
        custom_error_type="camera_source",
        custom_error_message="source must be one of: mqtt, http, file, command, picamera",
    ),
]
"""The ``[[cameras]]`` entries: a union keyed by ``source`` (default mqtt)."""


class ImageSpec(Section):
    """One image of a rule: a camera's latest frame with an optional caption."""

    camera: Identifier = Field(description="Camera id.")
    caption: str | None = Field(default=None, description="Template drawn onto the image.")
    alt: str = Field(
        min_length=1, description="Alt-text template (required: posts are for everyone)."
    )


class ChartSpec(Section):
    """One chart of a rule: a line chart of a sensor's recent history."""

    sensor: Identifier = Field(description="Sensor id (numeric readings).")
    window: Duration = Field(default=timedelta(hours=24), description="How far back to draw.")
    title: str | None = Field(default=None, description="Chart title; default: the sensor id.")
    alt: str = Field(min_length=1, description="Alt-text template (required).")


class TimelapseSpec(Section):
    """A rule's timelapse: an animation of a camera's archived frames."""

    camera: Identifier = Field(description="Camera id.")
    window: Duration = Field(default=timedelta(hours=24), description="How far back to look.")
    frames: int = Field(default=48, ge=2, le=300, description="Frames in the animation (at most).")
    format: Literal["webp", "gif"] = Field(
        default="webp", description="webp (smaller) or gif (where a service needs it)."
    )
    fps: float = Field(default=8, gt=0, le=30, description="Frames per second.")
    max_side: int = Field(default=640, ge=160, le=2048, description="Longest side in pixels.")
    alt: str = Field(min_length=1, description="Alt-text template (required).")


def _check_condition(value: str | None) -> str | None:
    if value is None:
        return None
    from gateway.expr import ExprError, parse

    try:
        parse(value)
    except ExprError as exc:
        raise PydanticCustomError("condition", "{error}", {"error": str(exc)}) from None
    return value


class OnMessage(Section):
    """``on_message``: fire a rule for each (matching) message on an MQTT topic."""

    topic: str = Field(min_length=1, description="MQTT topic or filter, e.g. frigate/events.")
    when: str | None = Field(
        default=None,
        description="Condition over the message, e.g. \"event.type == 'new'\"; JSON fields"
        " are event.<path>.",
    )

    @field_validator("when")
    @classmethod
    def _condition(cls, value: str | None) -> str | None:
        return _check_condition(value)


class RuleConfig(Section):
    """``[[rules]]``: when to post, what to say, and where."""

    id: Identifier = Field(description="Rule name, shown in history and used by `preview`.")
    every: Duration | None = Field(default=None, description="Post at this interval, e.g. 1h.")
    cron: str | None = Field(
        default=None, description="Crontab schedule in the gateway's time zone, e.g. '0 8 * * *'."
    )
    jitter: Duration | None = Field(
        default=None, description="Delay each scheduled run by a random 0..jitter."
    )
    when: str | None = Field(
        default=None, description="Condition over sensors, e.g. 'water_temp > 30'."
    )
    hold: Duration | None = Field(
        default=None,
        alias="for",
        description="`when` must hold this long before the rule fires, e.g. 10m.",
    )
    clear_when: str | None = Field(
        default=None, description="Re-arm a fired `when` rule only once this condition is true."
    )
    clear_below: float | None = Field(
        default=None, description="Re-arm once the (single) sensor of `when` is below this."
    )
    clear_above: float | None = Field(
        default=None, description="Re-arm once the (single) sensor of `when` is above this."
    )
    on_message: OnMessage | None = Field(
        default=None, description="Fire on messages of an MQTT topic; templates see `event`."
    )
    cooldown: Duration | None = Field(
        default=None, description="At least this long between two posts of the rule."
    )
    max_per_day: int | None = Field(
        default=None, ge=1, description="At most this many posts per local day."
    )
    quiet_hours: str | None = Field(
        default=None, description="No posts in this daily window, e.g. '23:00-07:00'."
    )
    require_fresh: tuple[str, ...] = Field(
        default=(), description="Sensors that must be fresh; else skip or use fallback_text."
    )
    fallback_text: str | None = Field(
        default=None,
        min_length=1,
        description="Template used when a require_fresh sensor is stale.",
    )
    dedupe_window: Duration | None = Field(
        default=None,
        description="Skip a post whose text equals the rule's previous one within this.",
    )
    overflow: Literal["shorten", "thread"] = Field(
        default="shorten", description="Too long: shorten with an ellipsis, or split into a thread."
    )
    allow_markup: bool = Field(
        default=False,
        description="Let sensor/event values carry @mentions and links (off: they are defused).",
    )
    text: str = Field(min_length=1, description="Jinja2 template of the post text.")
    images: tuple[ImageSpec, ...] = Field(default=(), description="Images to attach.")
    charts: tuple[ChartSpec, ...] = Field(default=(), description="Charts to attach.")
    timelapse: TimelapseSpec | None = Field(default=None, description="A timelapse to attach.")
    publish_to: tuple[str, ...] = Field(min_length=1, description="Publisher ids.")
    language: str | None = Field(
        default=None, pattern=r"^[a-z]{2,3}(-[A-Za-z0-9]+)?$", description="BCP-47 language tag."
    )

    @field_validator("when", "clear_when")
    @classmethod
    def _conditions(cls, value: str | None) -> str | None:
        return _check_condition(value)

    @field_validator("cron")
    @classmethod
    def _valid_cron(cls, value: str | None) -> str | None:
        if value is not None:
            from gateway.scheduler import cron_trigger

            try:
                cron_trigger(value, ZoneInfo("UTC"))
            except ValueError as exc:
                raise PydanticCustomError(
                    "cron", "invalid cron: {error}", {"error": str(exc)}
                ) from None
        return value

    @field_validator("quiet_hours")
    @classmethod
    def _quiet_hours(cls, value: str | None) -> str | None:
        if value is not None:
            from gateway.guards import parse_quiet_hours

            try:
                parse_quiet_hours(value)
            except ValueError as exc:
                raise PydanticCustomError("quiet_hours", "{error}", {"error": str(exc)}) from None
        return value

    @model_validator(mode="after")
    def _one_trigger(self) -> RuleConfig:
        kinds = ("every", "cron", "when", "on_message")
        triggers = [name for name in kinds if getattr(self, name) is not None]
        if len(triggers) != 1:
            raise PydanticCustomError(
                "trigger", "set exactly one of `every`, `cron`, `when` or `on_message`"
            )
        if self.every is not None and self.every.total_seconds() < 1:
            raise PydanticCustomError("trigger", "`every` must be at least 1s")
        for problem in _condition_option_problems(self):
            raise PydanticCustomError("condition_options", problem)
        return self

    @property
    def is_scheduled(self) -> bool:
        """True for `every`/`cron` rules."""
        return self.every is not None or self.cron is not None


def _condition_option_problems(rule: RuleConfig) -> Iterator[str]:
    if rule.jitter is not None and not rule.is_scheduled:
        yield "`jitter` needs `every` or `cron`"
    only_when = ("hold", "clear_when", "clear_below", "clear_above")
    if rule.when is None and any(getattr(rule, name) is not None for name in only_when):
        yield "`for`, `clear_when`, `clear_below` and `clear_above` need `when`"
    clears = [n for n in only_when[1:] if getattr(rule, n) is not None]
    if len(clears) > 1:
        yield f"set at most one of {', '.join(clears)}"
    if rule.when is None:
        return
    from gateway.expr import calls, names, parse

    tree = parse(rule.when)
    if calls(tree, "changes") and (rule.hold is not None or clears):
        yield "a `changes()` condition fires on every change; it takes no `for` or clear_*"
    if (rule.clear_below is not None or rule.clear_above is not None) and len(names(tree)) != 1:
        yield "`clear_below`/`clear_above` need a `when` over exactly one sensor (else clear_when)"


def _resolve_refs(data: Any, path: str, errors: list[str]) -> Any:
    """Replace ``${NAME}`` in every string; record names that cannot be found."""
    if isinstance(data, str):

        def lookup(match: re.Match[str]) -> str:
            value = lookup_secret(match.group(1))
            if value is None:
                errors.append(
                    f"{path}: ${{{match.group(1)}}} is not set "
                    "(no environment variable and no $CREDENTIALS_DIRECTORY file of that name)"
                )
                return ""
            return value

        return _REF.sub(lookup, data)
    if isinstance(data, Mapping):
        return {
            k: _resolve_refs(v, f"{path}.{k}" if path else str(k), errors) for k, v in data.items()
        }
    if isinstance(data, list | tuple):
        return [_resolve_refs(v, f"{path}[{i}]", errors) for i, v in enumerate(data)]
    return data


def lookup_secret(name: str) -> str | None:
    """A value from the environment, else from ``$CREDENTIALS_DIRECTORY/name``."""
    if name in os.environ:
        return os.environ[name]
    cred_dir = os.environ.get("CREDENTIALS_DIRECTORY")
    if cred_dir:
        # "gw_NAME": a whole folder loaded with LoadCredential=gw:/etc/things-gateway/credentials
        for candidate in (name, f"{CREDENTIAL_FOLDER_ID}_{name}"):
            path = Path(cred_dir) / candidate
            if path.is_file():
                return path.read_text(encoding="utf-8").rstrip("\n")
    return None


class GatewayConfig(BaseSettings):
    """The whole configuration file."""

    model_config = SettingsConfigDict(
        extra="forbid",
        frozen=True,
        env_prefix=ENV_PREFIX,
        env_nested_delimiter="__",
        nested_model_default_partial_update=True,
    )

    gateway: GatewaySection = Field(default_factory=GatewaySection, description="[gateway]")
    mqtt: MqttSection = Field(default_factory=MqttSection, description="[mqtt]")
    state: StateSection = Field(default_factory=StateSection, description="[state]")
    media: MediaSection = Field(default_factory=MediaSection, description="[media]")
    sensors: tuple[SensorConfig, ...] = Field(default=(), description="[[sensors]]")
    cameras: tuple[CameraConfigs, ...] = Field(default=(), description="[[cameras]]")
    rules: tuple[RuleConfig, ...] = Field(default=(), description="[[rules]]")
    publishers: tuple[PublisherConfigs, ...] = Field(default=(), description="[[publishers]]")
    health: HealthSection = Field(default_factory=HealthSection, description="[health]")
    homeassistant: HomeAssistantSection = Field(
        default_factory=HomeAssistantSection, description="[homeassistant]"
    )

    @classmethod
    def settings_customise_sources(
        cls,
        settings_cls: type[BaseSettings],
        init_settings: PydanticBaseSettingsSource,
        env_settings: PydanticBaseSettingsSource,
        dotenv_settings: PydanticBaseSettingsSource,
        file_secret_settings: PydanticBaseSettingsSource,
    ) -> tuple[PydanticBaseSettingsSource, ...]:
        """Environment variables override the file; no dotenv, no secrets dir."""
        return (env_settings, init_settings)

    @model_validator(mode="before")
    @classmethod
    def _resolve_secret_refs(cls, data: Any) -> Any:
        errors: list[str] = []
        resolved = _resolve_refs(data, "", errors)
        if errors:
            raise PydanticCustomError("unresolved", "\n".join(errors))
        return resolved

    @model_validator(mode="after")
    def _cross_references(self) -> GatewayConfig:
        problems = list(_reference_problems(self))
        if problems:
            raise PydanticCustomError("reference", "\n".join(problems))
        return self

    def rule(self, rule_id: str) -> RuleConfig:
        """The rule with this id (KeyError if none)."""
        for rule in self.rules:
            if rule.id == rule_id:
                return rule
        raise KeyError(rule_id)

    def camera(self, camera_id: str) -> AnyCameraConfig:
        """The camera with this id (KeyError if none)."""
        for camera in self.cameras:
            if camera.id == camera_id:
                return camera
        raise KeyError(camera_id)


def _duplicates(kind: str, ids: list[str]) -> Iterator[str]:
    seen: set[str] = set()
    for index, item in enumerate(ids):
        if item in seen:
            yield f"{kind}[{index}].id: duplicate id {item!r}"
        seen.add(item)


def _reference_problems(config: GatewayConfig) -> Iterator[str]:
    yield from _duplicates("sensors", [s.id for s in config.sensors])
    yield from _duplicates("cameras", [c.id for c in config.cameras])
    yield from _duplicates("rules", [r.id for r in config.rules])
    yield from _duplicates("publishers", [p.id for p in config.publishers])
    cameras = {c.id for c in config.cameras}
    sensors = {s.id for s in config.sensors}
    publishers = {p.id for p in config.publishers}
    for r, rule in enumerate(config.rules):
        for p, target in enumerate(rule.publish_to):
            if target not in publishers:
                yield f"rules[{r}].publish_to[{p}]: no publisher with id {target!r}"
        for i, image in enumerate(rule.images):
            if image.camera not in cameras:
                yield f"rules[{r}].images[{i}].camera: no camera with id {image.camera!r}"
        for i, chart in enumerate(rule.charts):
            if chart.sensor not in sensors:
                yield f"rules[{r}].charts[{i}].sensor: no sensor with id {chart.sensor!r}"
        if rule.timelapse is not None and rule.timelapse.camera not in cameras:
            yield f"rules[{r}].timelapse.camera: no camera with id {rule.timelapse.camera!r}"
    for p, publisher in enumerate(config.publishers):
        if publisher.enabled:
            yield from (f"publishers[{p}]: {m}" for m in publisher.missing_dependencies())
    for r, rule in enumerate(config.rules):
        yield from (f"rules[{r}].{problem}" for problem in _rule_sensor_problems(rule, config))
    if not config.rules:
        return  # nothing to check; spares the process compose's jinja2, Pillow and textfit
    from gateway.compose import template_problems

    for r, rule in enumerate(config.rules):
        yield from (f"rules[{r}].{problem}" for problem in template_problems(rule, config))


def _rule_sensor_problems(rule: RuleConfig, config: GatewayConfig) -> Iterator[str]:
    """Names in conditions and require_fresh that are not sensors of this config."""
    from gateway.expr import calls, names, parse

    sensors = {s.id: s for s in config.sensors}
    conditions = [("when", rule.when), ("clear_when", rule.clear_when)]
    if rule.on_message is not None:
        conditions.append(("on_message.when", rule.on_message.when))
    for field, source in conditions:
        if source is None:
            continue
        tree = parse(source)
        for name in sorted(names(tree)):
            if field == "on_message.when" and (name == "event" or name.startswith("event.")):
                continue
            if name not in sensors:
                yield f"{field}: unknown sensor {name!r}"
        for name in sorted(calls(tree, "stale", "offline")):
            if name in sensors and sensors[name].expire_after is None:
                yield f"{field}: stale({name}) needs `expire_after` on sensor {name!r}"
    for i, name in enumerate(rule.require_fresh):
        if name not in sensors:
            yield f"require_fresh[{i}]: unknown sensor {name!r}"


class ConfigError(Exception):
    """The config cannot be used; ``errors`` holds one line per problem."""

    def __init__(self, errors: list[str]) -> None:
        super().__init__("\n".join(errors))
        self.errors = errors


_UNION_TAGS: dict[int | str, tuple[str, ...]] = {
    "publishers": PUBLISHER_TYPES,
    "cameras": CAMERA_SOURCES,
}


def _format_loc(loc: tuple[int | str, ...]) -> str:
    out = ""
    for i, part in enumerate(loc):
        if isinstance(part, int):
            out += f"[{part}]"
        elif i > 0 and isinstance(loc[i - 1], int) and part in _UNION_TAGS.get(loc[0], ()):
            continue  # a discriminated union's tag, not a key the user wrote
        else:
            out += f".{part}" if out else str(part)
    return out


_SUBPATH = re.compile(r"^[A-Za-z_]\w*(\[\d+\])*: ")


def format_validation_error(error: ValidationError) -> list[str]:
    """One line per problem, ``path: message``, never echoing the input value."""
    lines = []
    for item in error.errors(include_input=False, include_url=False):
        loc = _format_loc(tuple(item["loc"]))
        message = item["msg"]
        if item["type"] == "extra_forbidden":
            message = "unknown key"
        for part in message.split("\n"):
            if loc and _SUBPATH.match(part):
                lines.append(f"{loc}.{part}")  # a model check naming one of its fields
            elif loc and not part.startswith(f"{loc}"):
                lines.append(f"{loc}: {part}")
            else:
                lines.append(part)
    return lines


def config_path(explicit: str | Path | None) -> Path:
    """``-c PATH``, else ``$THINGS_GATEWAY_CONFIG``, else the system default."""
    if explicit:
        return Path(explicit)
    from_env = os.environ.get(CONFIG_ENV)
    return Path(from_env) if from_env else DEFAULT_CONFIG_PATH


def read_toml(path: Path) -> dict[str, Any]:
    """Parse a TOML file; a missing file or syntax error is a ConfigError."""
    try:
        raw = path.read_bytes()
    except FileNotFoundError:
        raise ConfigError([f"{path}: config file not found"]) from None
    except OSError as exc:
        raise ConfigError([f"{path}: cannot read config file: {exc.strerror}"]) from None
    try:
        return tomllib.loads(raw.decode("utf-8"))
    except UnicodeDecodeError:
        raise ConfigError([f"{path}: config file is not UTF-8 text"]) from None
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError([f"{path}: TOML syntax error: {exc}"]) from None


def load_config(
    path: str | Path | None = None, *, overrides: Mapping[str, Any] | None = None
) -> GatewayConfig:
    """Read, resolve and validate a config file; raise ConfigError listing every problem."""
    data = read_toml(config_path(path))
    if overrides:
        data = _deep_merge(data, overrides)
    return validate_config(data)


def validate_config(data: Mapping[str, Any]) -> GatewayConfig:
    """Validate an already-parsed config mapping (plus env overrides)."""
    try:
        return GatewayConfig(**data)
    except ValidationError as exc:
        raise ConfigError(format_validation_error(exc)) from None


def _deep_merge(base: Mapping[str, Any], extra: Mapping[str, Any]) -> dict[str, Any]:
    merged = dict(base)
    for key, value in extra.items():
        if isinstance(value, Mapping) and isinstance(merged.get(key), Mapping):
            merged[key] = _deep_merge(merged[key], value)
        else:
            merged[key] = value
    return merged
