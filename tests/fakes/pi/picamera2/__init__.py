"""A stand-in for picamera2 (which needs a Raspberry Pi's camera and libcamera): the
part of its API the gateway uses, as its own tests use it (``Picamera2()``,
``sensor_resolution``, ``create_video_configuration(main={"size": ...})``,
``configure``, ``start``, ``capture_image("main")``, ``stop``, ``close``).

Put ``tests/fakes/pi`` on PYTHONPATH to use it.  Frames are a ball crossing a
gradient, one position per capture; ``FAKE_PICAMERA=busy`` makes opening fail as
libcamera does when another process holds the camera.
"""

from __future__ import annotations

import os
from typing import Any

from PIL import Image, ImageDraw


class Picamera2:
    """One camera with a 4:3 sensor."""

    sensor_resolution = (2028, 1520)

    def __init__(self, camera_num: int = 0) -> None:
        if os.environ.get("FAKE_PICAMERA") == "busy":
            raise RuntimeError("Failed to acquire camera: Device or resource busy")
        self._size: tuple[int, int] | None = None
        self._started = False
        self._frames = 0

    def create_video_configuration(self, main: dict[str, Any] | None = None) -> dict[str, Any]:
        """A video configuration; ``main["size"]`` defaults to 1280x720 as picamera2's."""
        return {"use_case": "video", "main": {"size": (1280, 720), **(main or {})}}

    def configure(self, config: dict[str, Any]) -> None:
        self._size = tuple(config["main"]["size"])  # type: ignore[assignment]

    def start(self) -> None:
        if self._size is None:
            raise RuntimeError("Camera has not been configured")
        self._started = True

    def capture_image(self, name: str = "main") -> Image.Image:
        if not self._started or self._size is None:
            raise RuntimeError("Camera is not running")
        w, h = self._size
        im = Image.linear_gradient("L").resize((w, h)).convert("RGBA")
        x = (self._frames * 37) % max(1, w - 40)
        ImageDraw.Draw(im).ellipse((x, h // 3, x + 40, h // 3 + 40), fill=(255, 220, 0, 255))
        self._frames += 1
        return im  # picamera2 gives RGBA/XBGR images in a video configuration

    def stop(self) -> None:
        self._started = False

    def close(self) -> None:
        self._started = False
