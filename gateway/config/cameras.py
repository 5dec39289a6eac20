"""``[[cameras]]`` entries: a union of frame sources keyed by ``source``.

Part of the configuration; :mod:`gateway.config` re-exports these names.
"""

from __future__ import annotations

from collections.abc import Mapping
from datetime import timedelta
from typing import Annotated, Any, Literal

from pydantic import Discriminator, Field, SecretStr, Tag

from gateway.config.durations import Duration
from gateway.config.sections import Identifier, Section, Size

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


class StreamCameraConfig(CameraConfig):
    """``source = "stream"``: an RTSP/HTTP video stream or a V4L2 device, opened with
    PyAV; a photo is one decoded frame, a clip is recorded from the stream."""

    source: Literal["stream"] = Field(description="Selects this source.")
    url: SecretStr = Field(
        description=(
            'rtsp://user:pass@cam.lan/stream1, http://…, or a device such as "/dev/video0"'
            ' (with format = "v4l2"); never logged.'
        )
    )
    format: str | None = Field(
        default=None,
        pattern=r"^[a-z0-9_]{1,32}\Z",
        description='FFmpeg input format, e.g. "v4l2"; default: guessed from the URL.',
    )
    rtsp_transport: Literal["tcp", "udp"] = Field(
        default="tcp", description="RTSP over TCP (default: through NAT and Wi-Fi) or UDP."
    )
    timeout: Duration = Field(
        default=timedelta(seconds=10),
        description="Opening, and waiting for each frame, gives up after this long.",
    )


_CAMERA_CLASSES: dict[str, type[CameraConfig]] = {
    "mqtt": MqttCameraConfig,
    "http": HttpCameraConfig,
    "file": FileCameraConfig,
    "command": CommandCameraConfig,
    "picamera": PicameraConfig,
    "stream": StreamCameraConfig,
}
CAMERA_SOURCES: tuple[str, ...] = tuple(_CAMERA_CLASSES)
"""Every ``source`` value, used to drop the union tag from error paths."""


def _camera_source(value: Any) -> str:
    # `source` may be left out: cameras were MQTT-only before the other sources existed
    if isinstance(value, Mapping):
        return str(value.get("source", "mqtt"))
    return str(getattr(value, "source", "mqtt"))


AnyCameraConfig = (
    MqttCameraConfig
    | HttpCameraConfig
    | FileCameraConfig
    | CommandCameraConfig
    | PicameraConfig
    | StreamCameraConfig
)
"""Every camera source's config class."""

CameraConfigs = Annotated[
    Annotated[MqttCameraConfig, Tag("mqtt")]
    | Annotated[HttpCameraConfig, Tag("http")]
    | Annotated[FileCameraConfig, Tag("file")]
    | Annotated[CommandCameraConfig, Tag("command")]
    | Annotated[PicameraConfig, Tag("picamera")]
    | Annotated[StreamCameraConfig, Tag("stream")],
    Discriminator(
        _camera_source,
        custom_error_type="camera_source",
        custom_error_message="source must be one of: mqtt, http, file, command, picamera, stream",
    ),
]
"""The ``[[cameras]]`` entries: a union keyed by ``source`` (default mqtt)."""
