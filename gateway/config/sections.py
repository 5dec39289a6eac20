"""The plain tables of the configuration file and the types they share.

``[gateway]``, ``[mqtt]`` (with ``[mqtt.tls]``), ``[state]``, ``[media]``,
``[health]`` and ``[homeassistant]``; the base :class:`Section` every table
derives from, and the ``Size`` and ``Identifier`` field types.  The root model
and loading live in :mod:`gateway.config`, which re-exports these names.
"""

from __future__ import annotations

import os
import re
from datetime import timedelta
from pathlib import Path
from typing import Annotated, Literal
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from pydantic import (
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    SecretStr,
    ValidationInfo,
    field_validator,
    model_validator,
)
from pydantic_core import PydanticCustomError

from gateway.config.durations import Duration

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

Identifier = Annotated[str, Field(pattern=r"^[A-Za-z_][A-Za-z0-9_]{0,63}\Z")]


TABLE_CONFIG = ConfigDict(
    extra="forbid",
    frozen=True,
    # GatewayConfig builds the validator of every table inside its own, so a per-class
    # validator is only built when the class is used on its own (0.05-0.1 MB less RSS).
    defer_build=True,
    # Python's re rather than pydantic's Rust engine, whose compiled patterns take
    # 100-400 KB each (0.6 MB less RSS in all).  Patterns therefore end in \Z: Python's
    # $ would also match before a trailing newline.
    regex_engine="python-re",
)
"""Settings of every config table (and every publisher's config)."""


class Section(BaseModel):
    """Base of every config table: unknown keys are errors; values are frozen."""

    model_config = TABLE_CONFIG


def default_state_dir() -> Path:
    """``$STATE_DIRECTORY`` (systemd's ``StateDirectory=``), else ``./var``."""
    from_systemd = os.environ.get("STATE_DIRECTORY", "").split(":")[0]
    return Path(from_systemd) if from_systemd else Path("var")


class GatewaySection(Section):
    """``[gateway]``: who this gateway is and where it keeps its state."""

    name: str = Field(
        default="things-gateway",
        pattern=r"^[A-Za-z0-9_.-]{1,64}\Z",
        description="Short name; used in the MQTT status topic and client id.",
    )
    timezone: str = Field(
        default="UTC", description="IANA time zone for schedules and times in posts."
    )
    state_dir: Path = Field(
        default_factory=lambda: default_state_dir(),
        validate_default=True,
        description="Database, media and archive live here. Default: $STATE_DIRECTORY, else "
        "./var. A relative path is taken from the working directory when the config is loaded.",
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

    @field_validator("state_dir")
    @classmethod
    def _absolute_state_dir(cls, value: Path) -> Path:
        # Resolved once, here: a relative path used later (a file:// URI, a chdir, a
        # child process with another cwd) would break or point somewhere else.
        return Path(os.path.abspath(value))

    def resolved_state_dir(self) -> Path:
        """The absolute state folder (``state_dir`` is made absolute when loaded)."""
        return self.state_dir

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
        description="Removed: refused with an error (gateways splitting one stream each"
        " saw part of the readings). README 'Large sites' says how to split a site.",
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

    @field_validator("share_group")
    @classmethod
    def _share_group(cls, value: str | None) -> str | None:
        if value is not None:
            raise PydanticCustomError(
                "removed",
                "was removed (gateways splitting one stream each saw a random part of"
                " the readings, so wrong statistics and thresholds, and all ran the same"
                " `every` rules, so doubled posts). Give each gateway its own sensors and"
                " rules instead, see README.md, 'Large sites'",
            )
        return value

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
    caption_font: str | None = Field(
        default=None,
        description="Font file (TrueType/OpenType) for captions and chart text. "
        "Default: DejaVu Sans.",
    )
    emoji_font: str | None = Field(
        default=None,
        description="Colour emoji font file for emoji in captions and chart titles; "
        "default Noto Color Emoji (fonts-noto-color-emoji), when installed.",
    )

    video_memory: Size = Field(
        default=320_000_000,
        description="Memory bound of the process that encodes a video (its data "
        'segment, RLIMIT_DATA), e.g. "320MB"; 0 for none.',
    )
    video_timeout: Duration = Field(
        default=timedelta(minutes=10),
        gt=timedelta(0),
        description="Longest an encode may take (a clip: on top of its recording).",
    )

    @field_validator("caption_font", "emoji_font")
    @classmethod
    def _font_file(cls, value: str | None) -> str | None:
        if value is not None and not Path(value).is_file():
            raise PydanticCustomError("font", "no such font file: {path}", {"path": value})
        return value


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


class WebSection(Section):
    """``[web]``: the thing's page and live status over HTTP (in the daemon, or
    ``things-gateway serve`` beside it)."""

    enabled: bool = Field(default=False, description="Serve from the daemon itself (live values).")

    bind: str = Field(default="127.0.0.1", description="Address to listen on.")
    port: int = Field(default=8080, ge=1, le=65535, description="TCP port.")
    user: str = Field(default="admin", max_length=64, description="Basic auth user name.")
    password: SecretStr | None = Field(
        default=None,
        description="Basic auth password (a `${NAME}` credential) for everything but the"
        " public timeline and feeds; unset: no auth.",
    )
    site: str | None = Field(
        default=None,
        description="Id of the `file` publisher with `site = true` to serve (default: the"
        " first one).",
    )


class HomeAssistantSection(Section):
    """``[homeassistant]``: MQTT discovery of the gateway's own health."""

    enabled: bool = Field(default=False, description="Publish Home Assistant discovery.")
    discovery_prefix: str = Field(
        default="homeassistant", description="Home Assistant's discovery prefix."
    )
    node_id: str | None = Field(
        default=None,
        pattern=r"^[A-Za-z0-9_-]{1,64}\Z",
        description="Node id in discovery topics. Default: the gateway name.",
    )
    interval: Duration = Field(
        default=timedelta(seconds=60), description="How often the health state is published."
    )


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
