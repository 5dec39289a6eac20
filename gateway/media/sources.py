"""A camera's current frame, whatever its ``source``: pushed over MQTT or pulled on demand.

MQTT cameras push frames; the newest one is in :class:`~gateway.state.store.StateStore`.
The other sources (http, file, command, picamera) are pulled here, when a rule
needs a frame — in the rule's worker thread, never in paho's — and the image is
stored like a pushed one (``<media>/frames/<camera>/``, atomically), so timelapses
and retention treat every camera alike.

Every failure is reported as a missing frame with a reason; what a rule does then
(post without the image, or skip the post) is the camera's ``on_missing``.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import UTC, datetime

from gateway.config import (
    AnyCameraConfig,
    CommandCameraConfig,
    FileCameraConfig,
    HttpCameraConfig,
    PicameraConfig,
    StreamCameraConfig,
)
from gateway.media.cameras import (
    FrameSourceError,
    capture_picamera,
    fetch_http_snapshot,
    newest_file,
    run_snapshot_command,
)
from gateway.media.frames import FrameStore
from gateway.media.images import ImageError, probe_image
from gateway.model import Frame
from gateway.state.store import StateStore

log = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True)
class FrameResult:
    """A camera's frame for a post, or why there is none."""

    frame: Frame | None
    reason: str | None = None


class CameraFrames:
    """Gives rules the current frame of each configured camera."""

    def __init__(
        self, cameras: Iterable[AnyCameraConfig], state: StateStore, store: FrameStore
    ) -> None:
        self._cameras = {c.id: c for c in cameras}
        self._state = state
        self._store = store

    def current(self, camera_id: str, now: datetime) -> FrameResult:
        """The camera's frame if one no older than its ``max_age`` can be had now."""
        camera = self._cameras[camera_id]
        if camera.pulled:
            try:
                self._pull(camera, now)
            except FrameSourceError as exc:
                return FrameResult(None, str(exc))
        frame = self._state.latest_frame(camera_id)
        if frame is None:
            return FrameResult(None, "no frame received yet")
        age = now - frame.at
        if age > camera.max_age:
            return FrameResult(None, f"newest frame is {age.total_seconds():.0f}s old")
        return FrameResult(frame)

    def _pull(self, camera: AnyCameraConfig, now: datetime) -> None:
        if isinstance(camera, FileCameraConfig):
            self._pull_file(camera)
            return
        data = fetch_frame_bytes(camera)
        self._keep(camera.id, data, now.astimezone(UTC))

    def _pull_file(self, camera: FileCameraConfig) -> None:
        path = newest_file(os.path.expanduser(camera.path))
        if path is None:
            raise FrameSourceError(f"no file matches {camera.path}")
        try:
            st = path.stat()
            taken = datetime.fromtimestamp(st.st_mtime, UTC)
            current = self._state.latest_frame(camera.id)
            if current is not None and current.at == taken:
                return  # the same file as last time: already stored
            if st.st_size > camera.max_bytes:
                raise FrameSourceError(f"{path.name} is larger than {camera.max_bytes} bytes")
            data = path.read_bytes()
        except OSError as exc:
            raise FrameSourceError(f"cannot read {path}: {exc.strerror or exc}") from None
        self._keep(camera.id, data, taken, where=path.name)

    def _keep(self, camera_id: str, data: bytes, at: datetime, where: str = "the camera") -> None:
        try:
            mime, width, height = probe_image(data)
        except ImageError as exc:
            raise FrameSourceError(f"{where} is not a usable image: {exc}") from None
        try:
            frame = self._store.save(camera_id, data, at, mime, width, height)
        except OSError as exc:
            raise FrameSourceError(f"cannot store the frame: {exc.strerror or exc}") from None
        self._state.set_frame(frame)


def fetch_frame_bytes(camera: AnyCameraConfig) -> bytes:
    """Fetch one image from a pulled source (http, command, picamera); FrameSourceError if not."""
    if isinstance(camera, HttpCameraConfig):
        return fetch_http_snapshot(
            camera.url,
            timeout=camera.timeout.total_seconds(),
            max_bytes=camera.max_bytes,
            auth=camera.credentials(),
            auth_scheme=camera.auth,
        )
    if isinstance(camera, CommandCameraConfig):
        return run_snapshot_command(
            camera.argv, timeout=camera.timeout.total_seconds(), max_bytes=camera.max_bytes
        )
    if isinstance(camera, PicameraConfig):
        return capture_picamera(camera.resolution)
    if isinstance(camera, StreamCameraConfig):
        from gateway.media.video import VideoError, stream_snapshot

        try:
            return stream_snapshot(
                camera.url.get_secret_value(),
                fmt=camera.format,
                transport=camera.rtsp_transport,
                timeout=camera.timeout.total_seconds(),
            )
        except VideoError as exc:
            raise FrameSourceError(f"camera {camera.id}: {exc}") from None
    raise FrameSourceError(f"camera {camera.id} is not pulled")
