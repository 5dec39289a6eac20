"""Animated timelapses (WebP, or GIF where a publisher needs it) from archived frames.

Speed matters more than the last percent of size on a Raspberry Pi: frames are
decoded with JPEG ``draft()`` at roughly the output size, WebP uses libwebp's
fastest method, and a GIF gets one palette built from a small montage of frames,
so 48 frames are quantized in a fraction of a second instead of 48 palette
searches.  The byte budget is met by lowering quality, then size, then frame count,
each step sized from the last attempt's overshoot.
"""

from __future__ import annotations

import io
import logging
import math
from collections.abc import Sequence
from pathlib import Path
from typing import Literal, TypeVar

from PIL import Image, ImageOps

from gateway.media.images import ImageError, RenderedImage, open_image
from gateway.support.files import atomic_write

log = logging.getLogger(__name__)

WEBP_QUALITIES = (75, 50, 35)
MIN_SIDE = 160
MAX_ATTEMPTS = 8
T = TypeVar("T")


def evenly_spaced(items: Sequence[T], count: int) -> list[T]:
    """``count`` items spread evenly over ``items``, first and last included."""
    if count >= len(items):
        return list(items)
    if count <= 1:
        return list(items[-1:])
    return [items[round(i * (len(items) - 1) / (count - 1))] for i in range(count)]


STORE_QUALITY = 95
"""JPEG quality of the frames kept between encode attempts (invisible under WebP/GIF)."""


class _StoredFrame:
    """A decoded, fitted frame kept as JPEG bytes until an encode attempt needs it.

    Decoded, a 640x360 frame takes 0.9 MiB (Pillow keeps 4 bytes a pixel), so 48 of
    them held at once were the daemon's largest allocation; as JPEG one is ~60 KiB.
    """

    def __init__(self, im: Image.Image) -> None:
        buf = io.BytesIO()
        im.save(buf, "JPEG", quality=STORE_QUALITY, subsampling=0)
        self.data = buf.getvalue()
        self.size = im.size

    def image(self, size: tuple[int, int]) -> Image.Image:
        """The frame decoded at ``size``."""
        with Image.open(io.BytesIO(self.data)) as stored:
            im = stored.convert("RGB")
        if im.size != size:
            im = im.resize(size, Image.Resampling.BILINEAR)
        return im


class _Slot:
    """The one decoded frame of a clip being encoded."""

    def __init__(self) -> None:
        self.frame: _StoredFrame | None = None
        self.image: Image.Image | None = None


class _LazyFrame:
    """Stands in for a frame in WebP's ``append_images``: decoded only when Pillow's
    encoder reads it, into a slot shared by all frames of the clip, so at most one of
    them is decoded at a time (libwebp keeps only what it encoded)."""

    n_frames = 1  # Pillow counts the frames first: answered without decoding

    def __init__(self, frame: _StoredFrame, size: tuple[int, int], slot: _Slot) -> None:
        self._frame = frame
        self._size = size
        self._slot = slot

    def __getattr__(self, name: str) -> object:
        # mode, getim(), seek() ... answered by this frame's pixels, decoded on demand
        slot = self._slot
        if slot.frame is not self._frame or slot.image is None:
            slot.image = None  # the previous frame goes before this one is decoded
            slot.image, slot.frame = self._frame.image(self._size), self._frame
        return getattr(slot.image, name)


def _load_frames(paths: Sequence[Path], max_side: int) -> list[_StoredFrame]:
    frames: list[_StoredFrame] = []
    for path in paths:
        try:
            im = open_image(path, target=(max_side, max_side))
        except (ImageError, OSError) as exc:
            log.warning("timelapse: skipping %s: %s", path, exc)
            continue
        if im.mode != "RGB":
            im = im.convert("RGB")
        if frames and im.size != frames[0].size:  # a camera changed resolution mid-window
            im = ImageOps.fit(im, frames[0].size)
        frames.append(_StoredFrame(im))
    return frames


def _shared_palette(frames: Sequence[Image.Image]) -> Image.Image:
    """One 256-colour palette from a montage of up to eight frames."""
    sample = evenly_spaced(frames, 8)
    w, h = max(1, frames[0].width // 2), max(1, frames[0].height // 2)
    montage = Image.new("RGB", (w * len(sample), h))
    for i, frame in enumerate(sample):
        montage.paste(frame.resize((w, h), Image.Resampling.BOX), (i * w, 0))
    return montage.quantize(256, method=Image.Quantize.MEDIANCUT)


def _encode(
    frames: Sequence[_StoredFrame], size: tuple[int, int], fmt: str, quality: int, duration: float
) -> bytes:
    buf = io.BytesIO()
    common = {"save_all": True, "duration": round(duration), "loop": 0}
    if fmt == "WEBP":
        slot = _Slot()
        rest = [_LazyFrame(f, size, slot) for f in frames[1:]]
        # method 0 is libwebp's fastest: about 3x quicker than the default for ~5% more bytes
        first = frames[0].image(size)
        first.save(buf, "WEBP", append_images=rest, quality=quality, method=0, **common)
    else:
        # Pillow's GIF writer keeps every frame to compare them: decode them all
        images = [f.image(size) for f in frames]
        palette = _shared_palette(images)
        indexed = [f.quantize(palette=palette, dither=Image.Dither.FLOYDSTEINBERG) for f in images]
        del images
        indexed[0].save(buf, "GIF", append_images=indexed[1:], optimize=False, **common)
    return buf.getvalue()


def _clip_size(size: tuple[int, int], scale: float) -> tuple[int, int]:
    if scale >= 1.0:
        return size
    return max(1, math.floor(size[0] * scale)), max(1, math.floor(size[1] * scale))


def build_timelapse(
    frames: Sequence[Path],
    dest: Path,
    *,
    max_bytes: int,
    max_side: int = 640,
    fps: float = 8,
    format: Literal["WEBP", "GIF"] = "WEBP",
) -> RenderedImage:
    """Write an animation of ``frames`` (oldest first) to ``dest`` within ``max_bytes``.

    Unreadable frames are skipped.  When the budget is tight, quality drops first
    (WebP), then the size (not below 160 px), then every other frame is dropped with
    each remaining one shown longer, so the clip keeps its length.  Raises
    :class:`ImageError` with fewer than two readable frames or when nothing fits.
    """
    loaded = _load_frames(frames, max_side)
    if len(loaded) < 2:
        raise ImageError(f"a timelapse needs two readable frames, got {len(loaded)}")
    qualities = WEBP_QUALITIES if format == "WEBP" else (0,)
    level, scale, step = 0, 1.0, 1
    for _ in range(MAX_ATTEMPTS):
        size = _clip_size(loaded[0].size, scale)
        data = _encode(loaded[::step], size, format, qualities[level], 1000 / fps * step)
        if len(data) <= max_bytes:
            atomic_write(dest, data)
            mime = "image/webp" if format == "WEBP" else "image/gif"
            return RenderedImage(dest, mime, size[0], size[1], len(data))
        ratio = max_bytes / len(data)
        if level + 1 < len(qualities) and ratio > 0.4:
            level += 1
            continue
        level = len(qualities) - 1
        smaller = scale * math.sqrt(ratio) * 0.92
        if max(loaded[0].size) * smaller >= MIN_SIDE:
            scale = smaller
        elif len(loaded[:: step * 2]) >= 2:
            scale = min(scale, MIN_SIDE / max(loaded[0].size))
            step *= max(2, math.ceil(1.1 / ratio))
            step = min(step, len(loaded) - 1)
        else:
            break
    raise ImageError(f"cannot fit {len(loaded)} frames in {max_bytes} bytes")
