"""Each publisher's copy of a post's images, fitted to its :class:`Capabilities`.

A post's master images are made once; a publisher gets a copy within its byte,
pixel and side limits (Bluesky 1,000,000 bytes, X 5 MB, Mastodon what the
instance says).  Copies are made through a :class:`RenderCache`, so publishers
with the same limits share one file, and a master that already fits is used as
is, so nothing is re-encoded for nothing.  An animation (a timelapse) cannot be
re-encoded as a still: a publisher whose limits it exceeds goes without it.

A video (an MP4) is re-encoded within a publisher's ``Capabilities.video`` limits
(duration, bytes, side, frame rate; copies shared by publishers with the same
limits); a publisher that takes no video (``video`` is ``None``) gets the video's
poster frame as a photo, fitted like any other image.
"""

from __future__ import annotations

import hashlib
import logging
import threading
from collections.abc import Mapping
from dataclasses import replace
from pathlib import Path

from PIL import Image

from gateway.media.images import ImageError, ImageLimits, RenderCache
from gateway.media.videoworker import VideoWorker
from gateway.model import Capabilities, MediaItem, Post, VideoLimits

log = logging.getLogger(__name__)

VIDEO_CACHE_ENTRIES = 64
"""Fitted videos remembered (per master and limits) before the memo starts over."""
FITTED_DIR = "fitted"
"""Per-publisher copies go into this folder beside the post's masters."""


def limits_for(caps: Capabilities) -> ImageLimits:
    """The image limits a publisher declares."""
    return ImageLimits(
        max_bytes=caps.max_image_bytes,
        max_pixels=caps.max_image_pixels,
        max_side=caps.max_image_side,
    )


def fits(item: MediaItem, limits: ImageLimits) -> bool:
    """True when ``item`` already satisfies every limit."""
    return (
        (limits.max_bytes is None or item.bytes <= limits.max_bytes)
        and (limits.max_pixels is None or item.width * item.height <= limits.max_pixels)
        and (limits.max_side is None or max(item.width, item.height) <= limits.max_side)
    )


def fit_alt(alt: str, limit: int | None) -> str:
    """Alt text cut to ``limit`` characters (with an ellipsis) when it is longer."""
    if limit is None or len(alt) <= limit:
        return alt
    return alt[: max(0, limit - 1)].rstrip() + "…"


def probe_size(path: Path) -> tuple[int, int]:
    """An image's width and height (reads the header only)."""
    with Image.open(path) as im:
        return im.size


def is_animated(path: Path) -> bool:
    """True for an animated GIF or WebP (reads the header only)."""
    try:
        with Image.open(path) as im:
            return bool(getattr(im, "is_animated", False))
    except (OSError, ValueError):
        return False


class MediaFitter:
    """Fits masters to publishers' limits, rendering each (master, limits) once."""

    def __init__(self, cache: RenderCache | None = None, worker: VideoWorker | None = None) -> None:
        """``worker`` re-encodes videos (default: the default bounds)."""
        self.cache = cache or RenderCache()
        self._video_lock = threading.Lock()
        self._worker = worker or VideoWorker()
        self._videos: dict[tuple[Path, VideoLimits], MediaItem] = {}

    def fit(self, media: tuple[MediaItem, ...], caps: Capabilities) -> tuple[MediaItem, ...]:
        """The copies of ``media`` one publisher gets (at most ``caps.max_images``)."""
        limits = limits_for(caps)
        fitted: list[MediaItem] = []
        for item in media:
            if len(fitted) >= caps.max_images:
                left_out = len(media) - len(fitted)
                log.info("%d image(s) over the publisher's limit left out", left_out)
                break
            copy = self._fit_video(item, caps) if item.is_video else self._fit_one(item, limits)
            if copy is not None:
                fitted.append(replace(copy, alt=fit_alt(item.alt, caps.max_alt_text)))
        videos = [item for item in fitted if item.is_video]
        if videos and caps.video is not None and caps.video.alone and len(fitted) > 1:
            log.info("a video goes alone: %d other item(s) left out", len(fitted) - 1)
            return (videos[0],)
        return tuple(fitted)

    def _fit_video(self, item: MediaItem, caps: Capabilities) -> MediaItem | None:
        from gateway.media.video import VideoError

        if caps.video is None:
            return self._poster(item, caps, "the publisher takes no video")
        limits = caps.video
        if item.duration is not None and limits.admits(
            item.width, item.height, item.duration, item.bytes, item.fps or 0.0
        ):
            return item
        key = repr(limits).encode()
        tag = hashlib.sha256(key).hexdigest()[:12]
        dest = item.path.parent / FITTED_DIR / f"{item.path.stem}-{tag}.mp4"
        with self._video_lock:
            cached = self._videos.get((item.path, limits))
            if cached is not None and cached.path.exists():
                return replace(cached, alt=item.alt)
            try:
                out = self._worker.run("fit_video", src=item.path, dest=dest, budget=limits)
            except (VideoError, OSError) as exc:
                log.warning(
                    "%s cannot be fitted: the poster frame goes instead: %s", item.path.name, exc
                )
                return self._poster(item, caps, "the video cannot be fitted")
            copy = replace(
                item,
                path=out.path,
                width=out.width,
                height=out.height,
                bytes=out.bytes,
                duration=out.duration,
                fps=out.fps,
            )
            if len(self._videos) >= VIDEO_CACHE_ENTRIES:
                self._videos.clear()
            self._videos[(item.path, limits)] = copy
            return copy

    def _poster(self, item: MediaItem, caps: Capabilities, why: str) -> MediaItem | None:
        """A video's poster frame (a JPEG) fitted as an image, for where the video cannot go."""
        if item.poster is None or not item.poster.exists():
            log.warning("%s: %s and there is no poster", item.path.name, why)
            return None
        w, h = probe_size(item.poster)
        size = item.poster.stat().st_size
        still = MediaItem(item.poster, "image/jpeg", w, h, size, item.alt)
        return self._fit_one(still, limits_for(caps))

    def _fit_one(self, item: MediaItem, limits: ImageLimits) -> MediaItem | None:
        if fits(item, limits):
            return item
        if is_animated(item.path):
            log.warning("%s exceeds a publisher's limits and cannot be re-encoded", item.path.name)
            return None
        try:
            out = self.cache.render(item.path, limits, None, item.path.parent / FITTED_DIR)
        except (ImageError, OSError) as exc:
            log.warning("%s cannot be fitted: %s", item.path.name, exc)
            return None
        return MediaItem(out.path, out.mime, out.width, out.height, out.bytes, item.alt)

    def fit_post(
        self, post: Post, targets: Mapping[str, Capabilities]
    ) -> dict[str, tuple[MediaItem, ...]]:
        """Every target publisher's media for ``post`` (publisher id → fitted copies)."""
        return {pid: self.fit(post.media, caps) for pid, caps in targets.items()}
