"""Where a camera agent gets a frame: a command, an HTTP snapshot URL, ffmpeg
(V4L2 device or RTSP stream) or picamera2.

Each source is a callable returning JPEG (or PNG) bytes and raising
:class:`FrameSourceError` (the gateway's own) with a message a person can act on.
Commands run through the gateway's :func:`~gateway.media.cameras.run_snapshot_command`.
"""

from __future__ import annotations

import io
import shlex
from collections.abc import Callable
from typing import Any

import httpx
from PIL import Image

from gateway.config.secrets import redact
from gateway.media.cameras import FrameSourceError, run_snapshot_command
from gateway.media.frames import sniff_image

__all__ = [
    "FrameSource",
    "FrameSourceError",
    "command_source",
    "ffmpeg_argv",
    "ffmpeg_source",
    "fit_jpeg",
    "http_source",
    "picamera_source",
]

FrameSource = Callable[[], bytes]


def _check_image(data: bytes, where: str) -> bytes:
    if not data:
        raise FrameSourceError(f"{where}: returned no data")
    if sniff_image(data) is None:  # what the gateway takes from a camera topic
        raise FrameSourceError(f"{where}: did not return a JPEG or PNG ({len(data)} bytes)")
    return data


def command_source(
    command: str, timeout: float = 20.0, max_bytes: int = 64 * 1024 * 1024
) -> FrameSource:
    """Run ``command`` (split like a shell would, not run by one); its stdout is the frame.

    The gateway's runner does the work: the command gets its own process group, killed
    as a whole on timeout, so a wrapper script cannot leave a camera tool running and
    holding the camera for every later capture; its error output is quoted with any
    credentials masked.
    """
    argv = shlex.split(command)
    if not argv:
        raise ValueError("empty command")

    def capture() -> bytes:
        data = run_snapshot_command(argv, timeout=timeout, max_bytes=max_bytes)
        return _check_image(data, argv[0])

    return capture


def http_source(url: str, timeout: float = 20.0, max_bytes: int = 16 * 1024 * 1024) -> FrameSource:
    """GET ``url`` (credentials may be in the URL: basic auth); the body is the frame."""
    client = httpx.Client(timeout=timeout, follow_redirects=True)
    shown = redact(url)

    def capture() -> bytes:
        try:
            with client.stream("GET", url) as response:
                if response.status_code != 200:
                    raise FrameSourceError(f"{shown}: HTTP {response.status_code}")
                body = bytearray()
                for chunk in response.iter_bytes():
                    body += chunk
                    if len(body) > max_bytes:
                        raise FrameSourceError(f"{shown}: snapshot larger than {max_bytes} bytes")
        except httpx.HTTPError as exc:
            raise FrameSourceError(redact(f"{shown}: {type(exc).__name__}: {exc}")) from None
        return _check_image(bytes(body), shown)

    return capture


def ffmpeg_argv(*, device: str | None = None, rtsp_url: str | None = None) -> list[str]:
    """ffmpeg arguments that grab one JPEG from a V4L2 device or an RTSP stream to stdout."""
    if device:
        source = ["-f", "v4l2", "-i", device]
    elif rtsp_url:
        source = ["-rtsp_transport", "tcp", "-i", rtsp_url]
    else:
        raise ValueError("need a V4L2 device or an RTSP URL")
    return [
        "ffmpeg", "-hide_banner", "-loglevel", "error", "-nostdin", "-y", *source,
        "-frames:v", "1", "-f", "image2", "-c:v", "mjpeg", "-q:v", "3", "pipe:1",
    ]  # fmt: skip


def ffmpeg_source(
    *, device: str | None = None, rtsp_url: str | None = None, timeout: float = 20.0
) -> FrameSource:
    """One frame per call via ffmpeg (``apt install ffmpeg``)."""
    return command_source(shlex.join(ffmpeg_argv(device=device, rtsp_url=rtsp_url)), timeout)


def picamera_source() -> FrameSource:
    """A Raspberry Pi camera through picamera2 (``sudo apt install python3-picamera2``;
    the venv needs ``--system-site-packages``)."""
    try:
        from picamera2 import Picamera2  # type: ignore[import-not-found]  # optional, Pi only
    except ImportError:
        raise FrameSourceError(
            "picamera2 is not importable: on Raspberry Pi OS run `sudo apt install"
            " python3-picamera2` and create the venv with --system-site-packages"
        ) from None
    camera: Any = Picamera2()
    camera.configure(camera.create_still_configuration())
    camera.start()

    def capture() -> bytes:
        out = io.BytesIO()
        try:
            camera.capture_file(out, format="jpeg")
        except Exception as exc:  # libcamera raises many kinds; all mean "no frame"
            raise FrameSourceError(f"picamera2: {exc}") from None
        return out.getvalue()

    return capture


def fit_jpeg(data: bytes, max_bytes: int) -> bytes:
    """``data`` if it fits in ``max_bytes``, else re-encoded smaller (quality, then size)."""
    if len(data) <= max_bytes:
        return data
    try:
        with Image.open(io.BytesIO(data)) as opened:
            image = opened.convert("RGB")
    except (OSError, ValueError) as exc:
        raise FrameSourceError(f"frame of {len(data)} bytes cannot be decoded: {exc}") from None
    for _ in range(8):
        for quality in (85, 70, 55):
            out = io.BytesIO()
            image.save(out, format="JPEG", quality=quality, optimize=True)
            if out.tell() <= max_bytes:
                return out.getvalue()
        image = image.resize((max(1, image.width * 3 // 4), max(1, image.height * 3 // 4)))
    raise FrameSourceError(f"frame cannot be made smaller than {max_bytes} bytes")
