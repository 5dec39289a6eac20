"""H.264 MP4 video (timelapses and clips) with PyAV, whose wheels carry FFmpeg.

Every file this module writes is what all the services take: H.264 (libx264) in
an MP4, ``yuv420p``, even width and height, a constant frame rate, the ``moov``
atom at the front (``movflags=+faststart``, so a player starts before the whole
file is loaded) and no audio.  Frames are streamed through the encoder one at a
time: a source is decoded, fitted, captioned and encoded, then dropped, so a
48-frame 1080p timelapse never holds more than one decoded frame.

:func:`encode_frames` makes a video from still frames (a camera's archive, or the
frames that arrived during a clip's window); :func:`fit_video` re-encodes a video
into a service's :class:`VideoBudget` (duration, bytes, side, frame rate), and
:func:`write_poster` keeps a JPEG of the first frame for previews, the archive and
services that take no video.  Files are written beside ``dest`` and renamed into
place, so a crash never leaves half a video under its final name.
"""

from __future__ import annotations

import contextlib
import logging
import math
import os
import queue
import threading
import time
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from fractions import Fraction
from pathlib import Path
from typing import TYPE_CHECKING

from PIL import Image, ImageOps

from gateway.media.captions import Caption, draw_caption
from gateway.media.images import DEFAULT_MAX_DECODE_PIXELS, ImageError, open_image
from gateway.model import VideoLimits

if TYPE_CHECKING:
    import av
    import av.container

log = logging.getLogger(__name__)

MIME = "video/mp4"
CODEC = "libx264"
PIX_FMT = "yuv420p"
MASTER_CRF = 23
"""libx264's constant-quality level of a master (its default; lower is better)."""
PRESET = "veryfast"
"""Speed over the last percent of size on a Raspberry Pi."""
X264_PARAMS = "rc-lookahead=4:bframes=1"
"""Fewer frames in flight inside libx264 (veryfast looks 10 ahead with 3 B-frames):
its 1080p peak drops from ~165 to ~105 MiB for ~5% more bytes (bench/video.py)."""
MIN_BITRATE = 64_000
MAX_FIT_ATTEMPTS = 4
CONTAINER_OVERHEAD = 0.94
"""Share of a byte budget left for the video stream (moov, headers, bitrate overshoot)."""


class VideoError(Exception):
    """A video could not be made (no readable frame, a broken source, nothing fits)."""


@dataclass(frozen=True, slots=True)
class VideoInfo:
    """A video written to disk."""

    path: Path
    width: int
    height: int
    frames: int
    fps: float
    duration: float
    bytes: int
    mime: str = MIME


VideoBudget = VideoLimits
"""A service's video limits (:class:`gateway.model.VideoLimits`)."""


def even_size(size: tuple[int, int], max_side: int | None = None) -> tuple[int, int]:
    """``size`` scaled to fit ``max_side`` (never up), both sides rounded down to even."""
    w, h = size
    if max_side is not None and max(w, h) > max_side:
        scale = max_side / max(w, h)
        w, h = max(2, math.floor(w * scale)), max(2, math.floor(h * scale))
    return max(2, w - w % 2), max(2, h - h % 2)


def _temp(dest: Path) -> Path:
    return dest.with_name(f".{dest.name}.{os.getpid()}.part")


class _Writer:
    """An MP4 being written: frames go in one at a time as RGB images."""

    def __init__(
        self,
        dest: Path,
        size: tuple[int, int],
        fps: float,
        *,
        crf: int | None = MASTER_CRF,
        bit_rate: int | None = None,
    ) -> None:
        import av

        dest.parent.mkdir(parents=True, exist_ok=True)
        self.tmp = _temp(dest)
        self.size = size
        self.rate = Fraction(fps).limit_denominator(1001)
        self.count = 0
        self._container = av.open(
            str(self.tmp), mode="w", format="mp4", options={"movflags": "+faststart"}
        )
        stream = self._container.add_stream(CODEC, rate=self.rate)
        assert isinstance(stream, av.VideoStream)
        stream.width, stream.height = size
        stream.pix_fmt = PIX_FMT
        options: dict[str, object] = {"preset": PRESET, "x264-params": X264_PARAMS}
        if bit_rate is not None:
            stream.bit_rate = bit_rate
            # a capped VBV keeps the size near the target without a second pass
            options |= {"maxrate": str(bit_rate), "bufsize": str(bit_rate * 2)}
        elif crf is not None:
            options["crf"] = str(crf)
        stream.options = options
        stream.codec_context.time_base = 1 / self.rate
        self._stream = stream

    def add(self, im: Image.Image) -> None:
        if im.size != self.size:
            im = ImageOps.fit(im, self.size, Image.Resampling.BILINEAR)
        self.add_frame(_to_frame(im))

    def add_frame(self, frame: av.VideoFrame) -> None:
        """Encode one ``yuv420p`` frame of the writer's size."""
        from av.video.frame import PictureType

        # a decoded JPEG says it is an I picture: left so, libx264 makes every frame a
        # keyframe (40x the bytes); NONE lets the encoder choose
        frame.pict_type = PictureType.NONE
        frame.pts = self.count
        frame.time_base = 1 / self.rate
        self._container.mux(self._stream.encode(frame))
        self.count += 1

    def finish(self, dest: Path) -> VideoInfo:
        self._container.mux(self._stream.encode(None))
        self._container.close()
        os.replace(self.tmp, dest)
        fps = float(self.rate)
        return VideoInfo(dest, *self.size, self.count, fps, self.count / fps, dest.stat().st_size)

    def abort(self) -> None:
        with contextlib.suppress(Exception):  # the partial file is removed below either way
            self._container.close()
        self.tmp.unlink(missing_ok=True)


def _readable(paths: Iterable[Path], max_side: int) -> Iterator[Image.Image]:
    for path in paths:
        try:
            im = open_image(path, target=(max_side, max_side))
        except (ImageError, OSError) as exc:
            log.warning("video: skipping frame %s: %s", path.name, exc)
            continue
        yield im.convert("RGB") if im.mode != "RGB" else im


def encode_frames(
    frames: Iterable[Path | Image.Image],
    dest: Path,
    *,
    fps: float = 8,
    max_side: int = 1280,
    caption: Caption | None = None,
    crf: int = MASTER_CRF,
    min_frames: int = 2,
) -> VideoInfo:
    """Encode ``frames`` (paths or images, oldest first) to an H.264 MP4 at ``dest``.

    The first readable frame sets the size (fitted to ``max_side``, even); later
    frames of another size are cropped to it.  Unreadable files are skipped.
    ``caption`` is drawn on every frame.  Raises :class:`VideoError` with fewer than
    ``min_frames`` readable frames.

    Frames are decoded, captioned and converted to ``yuv420p`` in a helper thread
    while libx264 encodes the ones before (at most :data:`PREFETCH` converted frames
    wait in between), so JPEG decoding and encoding use two cores.
    """
    prepared = _Prefetch(_converted(frames, max_side, caption))
    writer: _Writer | None = None
    try:
        for size, frame in prepared:
            if writer is None:
                writer = _Writer(dest, size, fps, crf=crf)
            writer.add_frame(frame)
        if writer is None or writer.count < min_frames:
            got = 0 if writer is None else writer.count
            raise VideoError(f"a video needs {min_frames} readable frames, got {got}")
        return writer.finish(dest)
    except BaseException:
        prepared.close()
        if writer is not None:
            writer.abort()
        raise


ORIENTATION_TAG = 0x0112
PREFETCH = 2
"""Converted frames waiting for the encoder (each a third of an RGB frame's bytes)."""


def _converted(
    items: Iterable[Path | Image.Image], max_side: int, caption: Caption | None
) -> Iterator[tuple[tuple[int, int], av.VideoFrame]]:
    """Each frame fitted to the first one's even size, captioned, as a yuv420p frame.

    A JPEG file is decoded by FFmpeg's decoder and scaled by swscale straight to
    ``yuv420p`` (what the ffmpeg CLI does; three times quicker than Pillow's decode
    and RGB round trip); Pillow decodes everything else, and a JPEG that needs turning
    (EXIF orientation) or cropping to the video's shape.
    """
    size: tuple[int, int] | None = None
    last: tuple[Path, tuple[int, int], av.VideoFrame] | None = None
    for item in items:
        if last is not None and item == last[0]:
            yield last[1], last[2]  # a clip repeating a frame: converted once
            continue
        if isinstance(item, Path):
            decoded = _jpeg_frame(item, max_side, size)
            if decoded is not None:
                if size is None:
                    size = even_size((decoded.width, decoded.height), max_side)
                frame = decoded.reformat(width=size[0], height=size[1], format=PIX_FMT)
                if caption is not None:
                    frame = _to_frame(draw_caption(frame.to_image(), caption))  # type: ignore[no-untyped-call]
                last = (item, size, frame)
                yield size, frame
                continue
        for im in [item] if isinstance(item, Image.Image) else _readable([item], max_side):
            if size is None:
                size = even_size(im.size, max_side)
            if im.size != size:
                im = ImageOps.fit(im, size, Image.Resampling.BILINEAR)
            if caption is not None:
                im = im.copy() if im.readonly else im
                draw_caption(im, caption)
            frame = _to_frame(im)
            if isinstance(item, Path):
                last = (item, size, frame)
            yield size, frame


def _jpeg_frame(path: Path, max_side: int, size: tuple[int, int] | None) -> av.VideoFrame | None:
    """The JPEG at ``path`` decoded by FFmpeg, or None when Pillow must do it: not a
    JPEG, an EXIF orientation to apply, too many pixels, or another shape than
    ``size`` (the video's, once known)."""
    import av

    try:
        with Image.open(path) as im:  # the header only
            if im.format != "JPEG" or im.width * im.height > DEFAULT_MAX_DECODE_PIXELS:
                return None
            if im.getexif().get(ORIENTATION_TAG, 1) != 1:
                return None
            width, height = im.size
    except (OSError, ValueError, SyntaxError):
        return None
    if size is not None and abs(width * size[1] - height * size[0]) > max(width, height):
        return None  # another aspect ratio: cropped by the Pillow path
    try:
        with av.open(str(path)) as container:
            frame: av.VideoFrame = next(container.decode(video=0))
            return frame
    except (av.FFmpegError, StopIteration, IndexError):
        return None  # Pillow tries, and skips it with a warning if it cannot either


def _to_frame(im: Image.Image) -> av.VideoFrame:
    import av

    rgb = av.VideoFrame.from_image(im.convert("RGB"))  # type: ignore[no-untyped-call]
    frame: av.VideoFrame = rgb.reformat(format=PIX_FMT)
    return frame


class _Prefetch:
    """Runs an iterator in a helper thread, ``PREFETCH`` items ahead of its consumer."""

    _DONE = object()

    def __init__(self, items: Iterator[tuple[tuple[int, int], av.VideoFrame]]) -> None:
        self._queue: queue.Queue[object] = queue.Queue(PREFETCH)
        self._stop = threading.Event()
        self._thread = threading.Thread(
            target=self._run, args=(items,), name="video-frames", daemon=True
        )
        self._thread.start()

    def _run(self, items: Iterator[tuple[tuple[int, int], av.VideoFrame]]) -> None:
        try:
            for item in items:
                if not self._put(item):
                    return
            self._put(self._DONE)
        except BaseException as exc:  # handed to the consumer, raised there
            self._put(exc)

    def _put(self, item: object) -> bool:
        while not self._stop.is_set():
            try:
                self._queue.put(item, timeout=0.1)
                return True
            except queue.Full:
                continue
        return False

    def __iter__(self) -> Iterator[tuple[tuple[int, int], av.VideoFrame]]:
        while True:
            item = self._queue.get()
            if item is self._DONE:
                return
            if isinstance(item, BaseException):
                raise item
            yield item  # type: ignore[misc]

    def close(self) -> None:
        """Stop the helper thread (the consumer gave up)."""
        self._stop.set()
        self._thread.join()


def constant_rate(
    frames: Sequence[tuple[datetime, Path]], start: datetime, seconds: float, fps: float
) -> Iterator[Path]:
    """The frames (time, path; oldest first) a constant-rate clip of ``seconds`` from
    ``start`` shows: at each tick, the latest frame taken by then (a frame is repeated
    while no newer one came; ticks before the first frame show the first).  A clip of
    frames that arrived unevenly keeps their real timing."""
    if not frames:
        return
    ticks = max(1, round(seconds * fps))
    n = 0
    for k in range(ticks):
        at = start + timedelta(seconds=k / fps)
        while n + 1 < len(frames) and frames[n + 1][0] <= at:
            n += 1
        yield frames[n][1]


def probe(path: Path) -> VideoInfo:
    """Size, frame rate, frame count and duration of an MP4 (reads its header only)."""
    import av

    try:
        with av.open(str(path)) as container:
            stream = container.streams.video[0]
            rate = float(stream.average_rate or stream.guessed_rate or 0) or 1.0
            frames = stream.frames
            if stream.duration is not None and stream.time_base is not None:
                duration = float(stream.duration * stream.time_base)
            else:
                duration = float(container.duration or 0) / 1_000_000
            if not frames:
                frames = round(duration * rate)
            return VideoInfo(
                path,
                stream.codec_context.width,
                stream.codec_context.height,
                frames,
                rate,
                duration,
                path.stat().st_size,
            )
    except (av.FFmpegError, IndexError) as exc:
        raise VideoError(f"{path.name}: not a readable video: {exc}") from exc


def decoded_frames(path: Path, *, max_duration: float | None = None) -> Iterator[Image.Image]:
    """The frames of a video as RGB images, one at a time (up to ``max_duration``)."""
    import av

    try:
        with av.open(str(path)) as container:
            stream = container.streams.video[0]
            stream.thread_type = "AUTO"
            for frame in container.decode(stream):
                late = frame.time is not None and frame.time >= (max_duration or 0) - 1e-6
                if max_duration is not None and late:
                    return
                yield frame.to_image()  # type: ignore[no-untyped-call]
    except av.FFmpegError as exc:
        raise VideoError(f"{path.name}: cannot decode: {exc}") from exc


def write_poster(video: Path, dest: Path, *, quality: int = 85) -> Path:
    """A JPEG of the video's first frame at ``dest`` (for previews and the archive)."""
    from gateway.support.files import atomic_write

    first = next(decoded_frames(video), None)
    if first is None:
        raise VideoError(f"{video.name}: no frame for a poster")
    import io

    buf = io.BytesIO()
    first.save(buf, "JPEG", quality=quality)
    atomic_write(dest, buf.getvalue())
    return dest


def _thinned(frames: Iterator[Image.Image], src_fps: float, fps: float) -> Iterator[Image.Image]:
    """Every frame of a ``src_fps`` video that a ``fps`` one shows (constant rate)."""
    shown = 0
    for n, im in enumerate(frames):
        if math.floor(n * fps / src_fps + 1e-9) >= shown:
            shown += 1
            yield im


def fit_video(src: Path, dest: Path, budget: VideoBudget) -> VideoInfo:
    """``src`` re-encoded within ``budget``; ``src`` itself when it already fits.

    The duration is cut to ``max_duration`` (a video shorter than ``min_duration``
    plays its frames slower instead), the size fitted to ``max_side`` and
    ``max_pixels``, the frame rate lowered to ``max_fps`` (frames dropped evenly),
    and the bitrate set from ``max_bytes`` over the duration; an encode still over
    the byte budget is repeated at a bitrate lowered by its overshoot, then at a
    smaller size.  Raises :class:`VideoError` when nothing fits.
    """
    info = probe(src)
    if budget.admits(info.width, info.height, info.duration, info.bytes, info.fps):
        return info
    fps = min(info.fps, budget.max_fps) if budget.max_fps else info.fps
    duration = min(info.duration, budget.max_duration) if budget.max_duration else info.duration
    slowed = budget.min_duration is not None and info.duration < budget.min_duration
    if slowed:  # too short (X takes 0.5 s at least): every frame shown longer
        assert budget.min_duration is not None
        fps = info.frames / budget.min_duration
        duration = info.duration
    side = max(info.width, info.height)
    if budget.max_side is not None:
        side = min(side, budget.max_side)
    if budget.max_pixels is not None:
        area = info.width * info.height
        side = min(side, math.floor(side * math.sqrt(budget.max_pixels / area)))
    bit_rate: int | None = None
    if budget.max_bytes is not None:
        bit_rate = max(MIN_BITRATE, int(budget.max_bytes * 8 * CONTAINER_OVERHEAD / duration))
    for _ in range(MAX_FIT_ATTEMPTS):
        size = even_size((info.width, info.height), side)
        writer = _Writer(dest, size, fps, crf=None if bit_rate else MASTER_CRF, bit_rate=bit_rate)
        try:
            frames = decoded_frames(src, max_duration=duration)
            if not slowed:
                frames = _thinned(frames, info.fps, fps)
            for im in frames:
                writer.add(im)
            out = writer.finish(dest)
        except BaseException:
            writer.abort()
            raise
        if budget.max_bytes is None or out.bytes <= budget.max_bytes:
            return out
        assert bit_rate is not None
        if bit_rate > MIN_BITRATE:
            bit_rate = max(MIN_BITRATE, int(bit_rate * budget.max_bytes / out.bytes * 0.9))
        else:
            side = max(16, int(side * 0.7))
    dest.unlink(missing_ok=True)
    raise VideoError(f"{src.name}: cannot fit {budget}")


def _stream_error(exc: BaseException) -> str:
    """What went wrong with a stream, without its URL (it may carry a password)."""
    reason = getattr(exc, "strerror", None) or type(exc).__name__
    return str(reason)


def open_stream(
    url: str, *, fmt: str | None = None, transport: str = "tcp", timeout: float = 10.0
) -> av.container.InputContainer:
    """Open an RTSP/HTTP stream, a file or a V4L2 device (``fmt="v4l2"``) with PyAV.

    ``timeout`` bounds the opening and every later read, so a dead or silent camera
    is an error, never a hang.  Raises :class:`VideoError` (the URL is left out: it
    may carry a password).
    """
    import av

    options = {"rtsp_transport": transport} if url.startswith(("rtsp://", "rtsps://")) else {}
    try:
        return av.open(url, mode="r", format=fmt, options=options, timeout=(timeout, timeout))
    except (av.FFmpegError, OSError) as exc:
        raise VideoError(f"cannot open the stream: {_stream_error(exc)}") from None


def stream_snapshot(
    url: str, *, fmt: str | None = None, transport: str = "tcp", timeout: float = 10.0
) -> bytes:
    """One frame of a stream as JPEG bytes (a photo from an RTSP/V4L2 camera)."""
    import io

    import av

    with open_stream(url, fmt=fmt, transport=transport, timeout=timeout) as container:
        try:
            frame = next(container.decode(video=0))
        except (av.FFmpegError, OSError, StopIteration, IndexError) as exc:
            raise VideoError(f"no frame from the stream: {_stream_error(exc)}") from None
        buf = io.BytesIO()
        frame.to_image().save(buf, "JPEG", quality=90)  # type: ignore[no-untyped-call]
        return buf.getvalue()


class _Timing:
    """When each frame of a stream was taken: its own timestamp, or, for a stream
    whose frames carry none, the wall clock.  Never a mix of the two: a frame
    without a time in a timed stream counts as taken with the frame before it, and
    a first frame without one waits for the second to say which kind of stream
    this is (RTSP gives the first decoded frame no time)."""

    def __init__(self, clock: Callable[[], float]) -> None:
        self._clock = clock
        self._last: float | None = None
        self._untimed = 0
        self._wall = False

    def at(self, stamp: float | None) -> float | None:
        """The frame's time in seconds, or None while that cannot be said yet."""
        if self._wall:
            return self._clock()
        if stamp is not None:
            self._last = float(stamp)
            return self._last
        if self._last is not None:
            return self._last
        self._untimed += 1
        if self._untimed < 2:
            return None
        self._wall = True
        return self._clock()


def record_stream(
    url: str,
    dest: Path,
    *,
    seconds: float,
    fps: float = 8,
    max_side: int = 1280,
    caption: Caption | None = None,
    fmt: str | None = None,
    transport: str = "tcp",
    timeout: float = 10.0,
    clock: Callable[[], float] = time.monotonic,
) -> VideoInfo:
    """Record ``seconds`` of a stream (RTSP, HTTP, a file, a V4L2 device) to an H.264
    MP4 at a constant ``fps``: each tick shows the latest frame decoded by then (by
    the stream's timestamps), so a camera's own rate does not matter.

    Every read waits at most ``timeout``, and the whole recording at most ``seconds +
    timeout`` of wall time.  A stream that ends early gives a shorter clip; one that
    fails or stays silent raises :class:`VideoError`.
    """
    import av

    ticks = max(1, round(seconds * fps))
    deadline = clock() + seconds + timeout
    writer: _Writer | None = None
    try:
        with open_stream(url, fmt=fmt, transport=transport, timeout=timeout) as container:
            if not container.streams.video:
                raise VideoError("the stream has no video")
            size = (0, 0)
            timing = _Timing(clock)
            first: float | None = None
            shown: av.VideoFrame | None = None
            k = 0
            try:
                for frame in container.decode(video=0):
                    if frame.width * frame.height > DEFAULT_MAX_DECODE_PIXELS:
                        raise VideoError(f"stream frames of {frame.width}x{frame.height} refused")
                    if writer is None:
                        size = even_size((frame.width, frame.height), max_side)
                        writer = _Writer(dest, size, fps)
                    current = frame.reformat(width=size[0], height=size[1], format=PIX_FMT)
                    if caption is not None:
                        image = current.to_image()  # type: ignore[no-untyped-call]
                        current = _to_frame(draw_caption(image, caption))
                    at = timing.at(frame.time)
                    if at is None:  # an RTSP stream's first frame often has no time
                        shown = current
                        continue
                    if first is None:
                        first = at
                    while k < ticks and first + k / fps < at - 1e-9:
                        writer.add_frame(shown or current)
                        k += 1
                    shown = current
                    if k >= ticks or at - first >= seconds or clock() > deadline:
                        break
            except av.FFmpegError as exc:
                raise VideoError(f"the stream failed: {_stream_error(exc)}") from None
            if writer is None or shown is None:
                raise VideoError("no frame from the stream")
            if k < ticks:
                writer.add_frame(shown)  # the last frame gets its tick
            if writer.count < 2:
                raise VideoError(f"the stream gave {writer.count} frame(s) in {seconds:g} s")
            return writer.finish(dest)
    except BaseException:
        if writer is not None:
            writer.abort()
        raise


def record_picamera(
    dest: Path,
    *,
    seconds: float,
    fps: float = 8,
    max_side: int = 1280,
    caption: Caption | None = None,
    clock: Callable[[], float] = time.monotonic,
    sleep: Callable[[float], None] = time.sleep,
) -> VideoInfo:
    """Record ``seconds`` from the Raspberry Pi camera (picamera2, in a video
    configuration at the sensor's aspect, fitted to ``max_side``) to an H.264 MP4 at
    a constant ``fps``: a frame is taken at every tick.  Raises :class:`VideoError`
    when picamera2 is missing or the camera cannot be opened or read."""
    import importlib

    try:
        picamera2 = importlib.import_module("picamera2")
    except ImportError:
        raise VideoError(
            "a picamera clip needs picamera2: sudo apt install python3-picamera2, "
            "and create the gateway's venv with --system-site-packages"
        ) from None
    try:
        camera = picamera2.Picamera2()
    except Exception as exc:  # libcamera reports a busy or absent camera in many ways
        raise VideoError(f"cannot open the Pi camera: {exc}") from None
    writer: _Writer | None = None
    try:
        size = even_size(tuple(camera.sensor_resolution), max_side)
        camera.configure(camera.create_video_configuration(main={"size": size}))
        camera.start()
        writer = _Writer(dest, size, fps)
        ticks = max(2, round(seconds * fps))
        started = clock()
        for k in range(ticks):
            im = camera.capture_image("main").convert("RGB")
            writer.add(draw_caption(im, caption) if caption is not None else im)
            wait = started + (k + 1) / fps - clock()
            if wait > 0:
                sleep(wait)
        return writer.finish(dest)
    except VideoError:
        raise
    except Exception as exc:
        if writer is not None:
            writer.abort()
        raise VideoError(f"Pi camera recording failed: {exc}") from None
    finally:
        camera.close()


def moov_before_mdat(path: Path) -> bool:
    """True when the MP4's ``moov`` atom precedes its ``mdat`` (a fast-start file)."""
    with path.open("rb") as f:
        while True:
            header = f.read(8)
            if len(header) < 8:
                return False
            size = int.from_bytes(header[:4], "big")
            kind = header[4:8]
            if kind == b"moov":
                return True
            if kind == b"mdat":
                return False
            if size == 1:
                size = int.from_bytes(f.read(8), "big") - 8
            if size < 8:
                return False
            f.seek(size - 8, os.SEEK_CUR)


__all__ = [
    "MIME",
    "VideoBudget",
    "VideoError",
    "VideoInfo",
    "decoded_frames",
    "encode_frames",
    "even_size",
    "fit_video",
    "moov_before_mdat",
    "open_stream",
    "probe",
    "record_stream",
    "stream_snapshot",
    "write_poster",
]
