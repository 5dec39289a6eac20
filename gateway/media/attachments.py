"""The images a rule attaches to a post: camera photos, charts and timelapses.

Each is made once per post as a *master* under ``<media>/posts/<post id>/``;
:mod:`gateway.media.fitting` then derives each publisher's copy.  A photo is decoded
once, at the largest size its post's publishers take (a JPEG at the DCT scale that
covers it), captioned at that size and encoded within the largest of their byte
budgets, so the publisher with the largest limits posts the master itself; only
when a publisher takes images of any size is the master kept at full resolution.
Templates are rendered by :mod:`gateway.compose.composer`; this module gets
their text.  A photo or timelapse that cannot be made raises :class:`MissingMediaError`,
carrying the camera's ``on_missing`` choice.
"""

from __future__ import annotations

import contextlib
import itertools
import logging
import statistics
from collections.abc import Iterable, Mapping, Sequence
from datetime import datetime, timedelta, tzinfo
from pathlib import Path
from typing import Literal, Protocol

from gateway.config import (
    ChartSpec,
    ClipSpec,
    GatewayConfig,
    OnMissing,
    PicameraConfig,
    StreamCameraConfig,
    TimelapseSpec,
)
from gateway.media.charts import render_chart
from gateway.media.fonts import Fonts
from gateway.media.frames import FrameStore, frame_time
from gateway.media.images import (
    RENDER_LOCK,
    Caption,
    ImageError,
    ImageLimits,
    RenderedImage,
    fit_size,
    render_image,
)
from gateway.media.sources import CameraFrames
from gateway.media.timelapse import build_timelapse, evenly_spaced
from gateway.media.video import (
    VideoError,
    VideoInfo,
    constant_rate,
)
from gateway.media.videoworker import VideoWorker
from gateway.model import MediaItem

log = logging.getLogger(__name__)

MASTER_LIMITS = ImageLimits(max_side=4096, max_pixels=16_777_216)
"""Photos are kept at most this large before per-publisher fitting (no service takes more)."""
TIMELAPSE_MAX_BYTES = 5_000_000
"""A timelapse's budget when no target publisher sets a smaller one."""
MIN_GAP = timedelta(minutes=3)


class HistorySource(Protocol):
    """A sensor's past values for charts (the SQLite readings history)."""

    def series(
        self, sensor: str, since: datetime, until: datetime
    ) -> list[tuple[datetime, float | None]]:
        """``(time, value)`` points within ``since``..``until``, oldest first; None is a gap."""
        ...


class MissingMediaError(Exception):
    """A photo or timelapse could not be made; ``on_missing`` says what the rule does."""

    def __init__(self, reason: str, on_missing: OnMissing) -> None:
        super().__init__(reason)
        self.on_missing = on_missing


def master_limits(size: tuple[int, int], targets: Iterable[ImageLimits]) -> ImageLimits:
    """The limits a photo's master is rendered to: the largest any target needs.

    ``size`` is the photo's upright size.  With no targets, or a target with no size
    limit, the master is as large as :data:`MASTER_LIMITS` allows (and has no byte
    budget when a target has none).
    """
    wanted = list(targets)
    budgets = [t.max_bytes for t in wanted]
    max_bytes = max(b for b in budgets if b is not None) if wanted and None not in budgets else None
    if not wanted or any(t.max_side is None and t.max_pixels is None for t in wanted):
        return ImageLimits(
            max_bytes=max_bytes,
            max_pixels=MASTER_LIMITS.max_pixels,
            max_side=MASTER_LIMITS.max_side,
        )
    capped = fit_size(size, MASTER_LIMITS)
    largest = max((fit_size(capped, t) for t in wanted), key=lambda wh: wh[0] * wh[1])
    return ImageLimits(max_bytes=max_bytes, max_side=max(largest))


def _item(out: RenderedImage, alt: str) -> MediaItem:
    return MediaItem(out.path, out.mime, out.width, out.height, out.bytes, alt)


def chart_gap(
    points: Sequence[tuple[datetime, float | None]], expire: timedelta | None
) -> timedelta:
    """Silence longer than this breaks a chart's line: the sensor's ``expire_after``,
    else three times the median interval between readings (at least 3 minutes)."""
    if expire is not None:
        return expire
    times = [at for at, value in points if value is not None]
    steps = [(b - a).total_seconds() for a, b in itertools.pairwise(times)]
    if not steps:
        return MIN_GAP
    return max(MIN_GAP, timedelta(seconds=3 * statistics.median(steps)))


class MediaBuilder:
    """Makes a post's master images from cameras, history and archived frames."""

    def __init__(
        self,
        config: GatewayConfig,
        frames: CameraFrames,
        store: FrameStore,
        history: HistorySource | None,
        media_dir: Path,
    ) -> None:
        self._config = config
        self._frames = frames
        self._store = store
        self._history = history
        self._media_dir = media_dir
        self._tz: tzinfo = config.gateway.tz
        self.fonts = Fonts(config.media.caption_font, config.media.emoji_font)
        self.worker = VideoWorker.from_config(config)

    def photo(
        self,
        post_id: str,
        n: int,
        camera: str,
        caption: str | None,
        alt: str,
        now: datetime,
        targets: Sequence[ImageLimits] = (),
    ) -> MediaItem:
        """The camera's current frame, captioned, as large as the largest of ``targets``
        takes (see :func:`master_limits`); MissingMediaError when there is none."""
        on_missing = self._config.camera(camera).on_missing
        result = self._frames.current(camera, now)
        if result.frame is None:
            raise MissingMediaError(f"camera {camera}: {result.reason}", on_missing)
        dest = self._media_dir / post_id / f"{n}.jpg"
        try:
            with RENDER_LOCK:
                out = render_image(
                    result.frame.path,
                    dest,
                    limits=master_limits((result.frame.width, result.frame.height), targets),
                    caption=Caption(caption, fonts=self.fonts) if caption else None,
                )
        except (ImageError, OSError) as exc:
            raise MissingMediaError(
                f"camera {camera}: frame {result.frame.path.name} unusable: {exc}", on_missing
            ) from exc
        return _item(out, alt)

    def chart(self, post_id: str, n: int, spec: ChartSpec, alt: str, now: datetime) -> MediaItem:
        """A line chart of the sensor over ``spec.window`` (a "no data" chart when empty)."""
        sensor = next(s for s in self._config.sensors if s.id == spec.sensor)
        since = now - spec.window
        points = self._history.series(spec.sensor, since, now) if self._history else []
        # None points at both ends make the time axis span the whole window
        framed = [(since, None), *points, (now, None)]
        with RENDER_LOCK:
            out = render_chart(
                framed,
                title=spec.title or spec.sensor.replace("_", " "),
                unit=sensor.unit,
                tz=self._tz,
                dest=self._media_dir / post_id / f"{n}-chart-{spec.sensor}.png",
                gap=chart_gap(points, sensor.expire_after),
                precision=sensor.precision,
                fonts=self.fonts,
            )
        return _item(out, alt)

    def timelapse(
        self,
        post_id: str,
        spec: TimelapseSpec,
        alt: str,
        now: datetime,
        max_bytes: int | None = None,
        caption: str | None = None,
    ) -> MediaItem:
        """An animation (or an MP4) of the camera's archived frames within ``spec.window``;
        ``caption`` (rendered) is drawn on every frame of an MP4."""
        on_missing = self._config.camera(spec.camera).on_missing
        paths = self._store.archived(spec.camera, now - spec.window, now)
        chosen = evenly_spaced(paths, spec.frames)
        if spec.format == "mp4":
            return self._video_timelapse(post_id, spec, chosen, alt, caption)
        fmt: Literal["WEBP", "GIF"] = "GIF" if spec.format == "gif" else "WEBP"
        dest = self._media_dir / post_id / f"timelapse-{spec.camera}.{spec.format}"
        try:
            with RENDER_LOCK:
                out = build_timelapse(
                    chosen,
                    dest,
                    max_bytes=max_bytes or TIMELAPSE_MAX_BYTES,
                    max_side=spec.max_side,
                    fps=spec.fps,
                    format=fmt,
                )
        except (ImageError, OSError) as exc:
            raise MissingMediaError(f"timelapse of {spec.camera}: {exc}", on_missing) from exc
        return _item(out, alt)

    def clip(
        self, post_id: str, spec: ClipSpec, alt: str, now: datetime, caption: str | None = None
    ) -> MediaItem:
        """An MP4 of the camera's last ``spec.seconds``: recorded from the stream of a
        ``stream`` camera, else made of the frames the camera delivered in that window
        (pushed over MQTT, fetched over HTTP, read from files), at a constant rate."""
        camera = self._config.camera(spec.camera)
        drawn = Caption(caption, fonts=self.fonts) if caption else None
        dest = self._media_dir / post_id / f"clip-{spec.camera}.mp4"
        if isinstance(camera, StreamCameraConfig):
            timeout = camera.timeout.total_seconds()
            return self._video(
                f"clip of {spec.camera}",
                camera.on_missing,
                alt,
                "record_stream",
                locked=False,  # recording waits on the camera: other renders go on
                extra_time=spec.seconds + timeout,
                url=camera.url.get_secret_value(),
                dest=dest,
                seconds=spec.seconds,
                fps=spec.fps,
                max_side=spec.max_side,
                caption=drawn,
                fmt=camera.format,
                transport=camera.rtsp_transport,
                timeout=timeout,
            )
        if isinstance(camera, PicameraConfig):
            return self._video(
                f"clip of {spec.camera}",
                camera.on_missing,
                alt,
                "record_picamera",
                locked=False,
                extra_time=spec.seconds,
                dest=dest,
                seconds=spec.seconds,
                fps=spec.fps,
                max_side=spec.max_side,
                caption=drawn,
            )
        since = now - timedelta(seconds=spec.seconds)
        paths = self._store.archived(spec.camera, since, now)
        timed = [(at, path) for path in paths if (at := frame_time(path)) is not None]
        frames = list(constant_rate(timed, since, spec.seconds, spec.fps))
        return self._video(
            f"clip of {spec.camera}",
            camera.on_missing,
            alt,
            "encode_frames",
            frames=frames,
            dest=dest,
            fps=spec.fps,
            max_side=spec.max_side,
            caption=drawn,
        )

    def _video_timelapse(
        self,
        post_id: str,
        spec: TimelapseSpec,
        chosen: Sequence[Path],
        alt: str,
        caption: str | None,
    ) -> MediaItem:
        """An H.264 MP4 of ``chosen`` and its poster frame (publishers fit it later)."""
        dest = self._media_dir / post_id / f"timelapse-{spec.camera}.mp4"
        drawn = Caption(caption, fonts=self.fonts) if caption else None
        return self._video(
            f"timelapse of {spec.camera}",
            self._config.camera(spec.camera).on_missing,
            alt,
            "encode_frames",
            frames=list(chosen),
            dest=dest,
            fps=spec.fps,
            max_side=spec.max_side,
            caption=drawn,
        )

    def _video(
        self,
        what: str,
        on_missing: OnMissing,
        alt: str,
        job: str,
        *,
        locked: bool = True,
        extra_time: float = 0.0,
        **kwargs: object,
    ) -> MediaItem:
        """Run ``job`` in the video worker (under the render lock unless told not to),
        with its poster frame; a failure is a MissingMediaError carrying ``on_missing``."""
        dest = kwargs["dest"]
        assert isinstance(dest, Path)
        poster = dest.with_suffix(".poster.jpg")
        try:
            with RENDER_LOCK if locked else contextlib.nullcontext():
                out = self.worker.run(job, extra_time=extra_time, poster=poster, **kwargs)
        except (VideoError, OSError) as exc:
            raise MissingMediaError(f"{what}: {exc}", on_missing) from exc
        return video_item(out, poster, alt)


def video_item(out: VideoInfo, poster: Path, alt: str) -> MediaItem:
    """The post's media item of an encoded video."""
    return MediaItem(
        out.path,
        out.mime,
        out.width,
        out.height,
        out.bytes,
        alt,
        poster=poster,
        duration=out.duration,
        fps=out.fps,
    )


def smallest_budget(budgets: Mapping[str, int | None]) -> int | None:
    """The smallest byte limit among publishers (None when none sets one)."""
    known = [b for b in budgets.values() if b is not None]
    return min(known) if known else None
