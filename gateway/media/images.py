"""Safe decoding and per-publisher fitting of camera frames.

Frames arrive from cameras we do not control, so decoding is defensive: a pixel
limit far below Pillow's own, a short list of formats (no EPS, which would run
Ghostscript), and ``load()`` inside the guard so truncated or corrupt data is an
:class:`ImageError`, never a half-grey picture or a stray Pillow exception.

Rendering is fast on a Raspberry Pi because a JPEG is decoded with ``draft()`` at
the smallest DCT scale (1/2, 1/4, 1/8) that still covers the output, then
resized, then rotated upright, then encoded by a short quality search that fits
the publisher's byte budget.  Nothing of the source's metadata (EXIF, GPS, XMP,
comments) is written out.  Captions are drawn by :mod:`gateway.media.captions`.
"""

from __future__ import annotations

import hashlib
import io
import logging
import math
import threading
from collections import OrderedDict
from dataclasses import dataclass
from pathlib import Path

from PIL import ExifTags, Image, UnidentifiedImageError

from gateway.media.captions import FONT_CANDIDATES as FONT_CANDIDATES
from gateway.media.captions import Caption as Caption
from gateway.media.captions import Position as Position
from gateway.media.captions import draw_caption as draw_caption
from gateway.media.captions import find_font as find_font
from gateway.support.files import atomic_write

log = logging.getLogger(__name__)

DEFAULT_MAX_DECODE_PIXELS = 50_000_000
RENDER_LOCK = threading.Lock()
"""Held while a post's image is decoded, drawn and encoded (photo, chart, timelapse,
a publisher's copy).  Each takes 8-16 MiB for a moment; two rules firing together
would add those peaks, so they take turns."""
"""Enough for a 12 MP (or 48 MP) camera; Pillow's own limit is ~89 MP, and only warns."""

DECODE_BUDGET_BYTES = 160 * 1024 * 1024
"""Most memory decoding one frame may take: the decoder's own buffers (a progressive
JPEG keeps every DCT coefficient: 2 bytes a sample), the decoded pixels (Pillow keeps
RGB in 4 bytes a pixel) and the fitted RGB image.  A JPEG is decoded at
the DCT scale (1/2, 1/4, 1/8) that fits; anything else over it is refused.  With the
daemon's own ~60 MiB this keeps a frame of any size within a 256 MiB unit."""

DECODE_FORMATS = ("JPEG", "PNG", "WEBP", "GIF", "BMP", "TIFF")
"""Formats we agree to decode (JPEG covers MPO); the rest of Pillow's plugins are attack surface."""

OUTPUT_FORMATS = {
    "JPEG": ("image/jpeg", ".jpg"),
    "WEBP": ("image/webp", ".webp"),
    "PNG": ("image/png", ".png"),
}
QUALITY_MAX = 85
QUALITY_MIN = 30

_TRANSPOSE = {
    2: Image.Transpose.FLIP_LEFT_RIGHT,
    3: Image.Transpose.ROTATE_180,
    4: Image.Transpose.FLIP_TOP_BOTTOM,
    5: Image.Transpose.TRANSPOSE,
    6: Image.Transpose.ROTATE_270,
    7: Image.Transpose.TRANSVERSE,
    8: Image.Transpose.ROTATE_90,
}


class ImageError(Exception):
    """The bytes are not an image we accept: not an image, truncated, too large, corrupt."""


@dataclass(frozen=True)
class ImageLimits:
    """What one publisher accepts; hashable so it can key the render cache."""

    max_bytes: int | None = None
    max_pixels: int | None = None
    max_side: int | None = None
    formats: tuple[str, ...] = ("JPEG",)

    def __post_init__(self) -> None:
        # other names (GIF, HEIC...) may be listed; stills are rendered to one of ours
        if not any(f in OUTPUT_FORMATS for f in self.formats):
            raise ValueError(
                f"formats must include one of {sorted(OUTPUT_FORMATS)}: {self.formats}"
            )


@dataclass(frozen=True)
class RenderedImage:
    """An image file ready to upload, with what publishers need to declare about it."""

    path: Path
    mime: str
    width: int
    height: int
    bytes: int


def _check_pixels(size: tuple[int, int], max_pixels: int) -> None:
    pixels = size[0] * size[1]
    if pixels > max_pixels:
        raise ImageError(f"too many pixels ({pixels} > {max_pixels})")


def _orientation(im: Image.Image) -> int:
    value = im.getexif().get(ExifTags.Base.Orientation, 1)
    return value if isinstance(value, int) and value in _TRANSPOSE else 1


def _display_size(im: Image.Image, orientation: int) -> tuple[int, int]:
    return (im.height, im.width) if orientation >= 5 else im.size


def _open_guarded(fp: Path | io.BytesIO, max_pixels: int) -> Image.Image:
    try:
        im = Image.open(fp, formats=DECODE_FORMATS)
    except UnidentifiedImageError:
        raise ImageError("not an image (or not a format we accept)") from None
    except Image.DecompressionBombError as exc:
        raise ImageError(f"too many pixels ({exc})") from None
    except OSError as exc:
        raise ImageError(f"unreadable image: {exc}") from exc
    _check_pixels(im.size, max_pixels)
    return im


def probe_image(
    data: bytes, *, max_pixels: int = DEFAULT_MAX_DECODE_PIXELS
) -> tuple[str, int, int]:
    """Return ``(mime, width, height)`` from the header, upright per EXIF, without decoding.

    A JPEG with no end-of-image marker after its last scan is reported as truncated:
    the usual sign of a camera command killed mid-write.  (Entropy-coded data cannot
    contain that marker, and trailers some phones append after it are accepted.)
    """
    im = _open_guarded(io.BytesIO(data), max_pixels)
    fmt = im.format or ""
    if fmt in ("JPEG", "MPO") and data.rfind(b"\xff\xd9") < data.rfind(b"\xff\xda"):
        raise ImageError("truncated JPEG (no end-of-image marker)")
    try:
        width, height = _display_size(im, _orientation(im))
    except Exception as exc:  # a corrupt EXIF block can raise almost anything
        raise ImageError(f"corrupt image metadata: {exc}") from exc
    return Image.MIME.get(fmt, "application/octet-stream"), width, height


def fit_size(size: tuple[int, int], limits: ImageLimits) -> tuple[int, int]:
    """Scale ``size`` down (never up) to fit ``max_side`` and ``max_pixels``, keeping the aspect."""
    w, h = size
    scale = 1.0
    if limits.max_side:
        scale = min(scale, limits.max_side / max(w, h))
    if limits.max_pixels:
        scale = min(scale, math.sqrt(limits.max_pixels / (w * h)))
    if scale >= 1.0:
        return size
    side = limits.max_side or max(w, h)
    while True:  # rounding may overshoot max_pixels by a row; shave until it fits
        fitted = (max(1, min(side, round(w * scale))), max(1, min(side, round(h * scale))))
        if not limits.max_pixels or fitted[0] * fitted[1] <= limits.max_pixels or scale < 1e-6:
            return fitted
        scale *= 0.995


def _fit_within(size: tuple[int, int], box: tuple[int, int]) -> tuple[int, int]:
    if size[0] <= box[0] and size[1] <= box[1]:
        return size
    # the limiting side gets the box's length exactly; the other is rounded
    if box[0] * size[1] <= box[1] * size[0]:
        return box[0], max(1, min(box[1], round(size[1] * box[0] / size[0])))
    return max(1, min(box[0], round(size[0] * box[1] / size[1]))), box[1]


_ONE_BYTE_MODES = frozenset({"1", "L", "P"})
_MIB = 1024 * 1024


def _pixel_bytes(mode: str) -> int:
    """Bytes Pillow keeps per pixel in ``mode`` (RGB is stored in 4)."""
    if mode in _ONE_BYTE_MODES:
        return 1
    return 2 if mode.startswith("I;16") else 4


def _jpeg_coefficient_bytes(im: Image.Image) -> int:
    """What libjpeg holds for a progressive (or multi-scan) JPEG: every DCT coefficient.

    A baseline JPEG is decoded a row of blocks at a time: nothing.
    """
    if not (im.info.get("progressive") or im.info.get("progression")):
        return 0
    layers = getattr(im, "layer", None) or [(1, 1, 1, 0)]
    h_max = max(h for _, h, _, _ in layers)
    v_max = max(v for _, _, v, _ in layers)
    width, height = im.size
    total = 0
    for _, h, v, _ in layers:
        blocks_x = math.ceil(math.ceil(width * h / h_max) / 8)
        blocks_y = math.ceil(math.ceil(height * v / v_max) / 8)
        total += blocks_x * blocks_y * 64 * 2
    return total


def decode_cost(im: Image.Image, size: tuple[int, int], fitted: tuple[int, int]) -> int:
    """Bytes decoding ``im`` at ``size`` takes, to end as ``fitted`` (see DECODE_BUDGET_BYTES)."""
    decoder = _jpeg_coefficient_bytes(im) if im.format in ("JPEG", "MPO") else 0
    decoded = size[0] * size[1] * (4 if im.format in ("JPEG", "MPO") else _pixel_bytes(im.mode))
    return decoder + decoded + fitted[0] * fitted[1] * 4


def _over_budget(cost: int, budget: int, what: str) -> ImageError:
    return ImageError(
        f"{what} needs {math.ceil(cost / _MIB)} MiB to decode, over the {budget // _MIB} MiB budget"
    )


DRAFT_SLACK = 0.98
"""A DCT scale whose size reaches this share of the target is decoded, then enlarged by
the last few percent: a 4056 px photo fitted to 2048 px decodes at 1/2 (2028 px, 4x
fewer pixels) and is resized up to 2048 px, rather than decoded whole and shrunk. That
takes under half the time (``bench/images.py --exact-2048``), and the result is within
a PSNR of about 43 dB of the whole decode shrunk with Lanczos: invisible."""


def _nearly_covers(size: tuple[int, int], box: tuple[int, int]) -> bool:
    """True when ``size`` reaches ``box`` on one side, or comes within 2% of it."""
    return max(size[0] / box[0], size[1] / box[1]) >= DRAFT_SLACK


def _jpeg_scale(im: Image.Image, box: tuple[int, int], budget: int) -> tuple[int, int]:
    """The size to ``draft()`` a JPEG to: covering ``box`` when the budget allows."""
    width, height = im.size
    scaled = {s: (math.ceil(width / s), math.ceil(height / s)) for s in (1, 2, 4, 8)}
    covering = max(s for s, size in scaled.items() if s == 1 or _nearly_covers(size, box))
    for s in (1, 2, 4, 8):
        if s < covering:
            continue
        fitted = _fit_within(scaled[s], box)
        if decode_cost(im, scaled[s], fitted) <= budget:
            return scaled[s]
    smallest = scaled[8]
    cost = decode_cost(im, smallest, _fit_within(smallest, box))
    raise _over_budget(cost, budget, f"a {width}x{height} JPEG")


def _decode(
    im: Image.Image, target: tuple[int, int] | None, budget: int = DECODE_BUDGET_BYTES
) -> Image.Image:
    orientation = _orientation(im)
    # the target is upright; the stored pixels may be sideways
    box = im.size if not target else (target[1], target[0]) if orientation >= 5 else target
    wanted = _fit_within(im.size, box)
    if im.format in ("JPEG", "MPO"):
        im.draft("RGB", _jpeg_scale(im, box, budget))
    cost = decode_cost(im, im.size, _fit_within(im.size, box))
    if cost > budget:
        raise _over_budget(cost, budget, f"a {im.width}x{im.height} {im.format or ''} {im.mode}")
    im.load()
    size = _fit_within(im.size, box)
    if size != wanted and _nearly_covers(im.size, wanted):
        size = wanted  # a DCT scale just short of the target: make up the last 2%
    if size != im.size:  # in the decoded mode: a one-byte PNG is shrunk before it grows
        # after draft() the remaining factor is below 2, where bicubic matches
        # Lanczos by eye and costs less
        ratio = im.width / size[0]
        flt = Image.Resampling.LANCZOS if ratio > 2 else Image.Resampling.BICUBIC
        im = im.resize(size, flt)
    mode = "RGBA" if im.has_transparency_data else "RGB"
    if im.mode != mode:
        im = im.convert(mode)
    if orientation != 1:
        im = im.transpose(_TRANSPOSE[orientation])
    return im


def open_image(
    src: Path | bytes,
    *,
    max_pixels: int = DEFAULT_MAX_DECODE_PIXELS,
    target: tuple[int, int] | None = None,
    budget: int = DECODE_BUDGET_BYTES,
) -> Image.Image:
    """Decode ``src`` safely into an upright RGB or RGBA image.

    With ``target`` (an upright width/height box) the result fits inside it, aspect
    kept, never upscaled; a JPEG is then decoded at a reduced scale.  Raises
    :class:`ImageError` for anything that is not a whole image within ``max_pixels``,
    or that cannot be decoded within ``budget`` bytes (a JPEG is decoded at a
    smaller DCT scale first, below the target if it must).
    """
    fp = io.BytesIO(src) if isinstance(src, bytes) else src
    im = _open_guarded(fp, max_pixels)
    try:
        with im:
            out = _decode(im, target, budget)
    except ImageError:
        raise
    except OSError as exc:
        if "truncated" in str(exc):
            raise ImageError(f"truncated image: {exc}") from exc
        raise ImageError(f"corrupt image: {exc}") from exc
    except Exception as exc:  # malformed files raise ValueError, SyntaxError, struct.error...
        raise ImageError(f"corrupt image: {exc!r}") from exc
    out.info = {}  # so no comment, EXIF or XMP can ride along into the output
    return out


def _choose_format(limits: ImageLimits, source_format: str | None, alpha: bool) -> str:
    order = [source_format] if source_format == "PNG" else []
    order += ["PNG", "WEBP", "JPEG"] if alpha else ["JPEG", "WEBP", "PNG"]
    return next(f for f in order if f in limits.formats)


def _encode(im: Image.Image, fmt: str, quality: int) -> bytes:
    buf = io.BytesIO()
    if fmt == "JPEG":
        if im.mode != "RGB":
            im = _flatten(im)
        im.save(buf, "JPEG", quality=quality, optimize=True)
    elif fmt == "WEBP":
        im.save(buf, "WEBP", quality=quality, method=4)
    else:
        im.save(buf, "PNG", compress_level=6)
    return buf.getvalue()


def _flatten(im: Image.Image) -> Image.Image:
    background = Image.new("RGB", im.size, (255, 255, 255))
    background.paste(im, mask=im.getchannel("A") if im.mode == "RGBA" else None)
    return background


def _search_quality(im: Image.Image, fmt: str, max_bytes: int) -> bytes | None:
    """Best quality whose encoding fits ``max_bytes``, or None when even the lowest does not."""
    best = _encode(im, fmt, QUALITY_MAX)
    if len(best) <= max_bytes or fmt == "PNG":
        return best if len(best) <= max_bytes else None
    low, high = QUALITY_MIN, QUALITY_MAX - 1
    found: bytes | None = None
    while low <= high:  # about five encodes of an already small image
        quality = (low + high) // 2
        data = _encode(im, fmt, quality)
        if len(data) <= max_bytes:
            found, low = data, quality + 1
        else:
            high = quality - 1
    return found


def encode_within(im: Image.Image, fmt: str, max_bytes: int | None) -> tuple[bytes, Image.Image]:
    """Encode ``im`` as ``fmt`` within ``max_bytes``, lowering quality then size as needed."""
    if max_bytes is None:
        return _encode(im, fmt, QUALITY_MAX), im
    while True:
        data = _search_quality(im, fmt, max_bytes)
        if data is not None:
            return data, im
        if max(im.size) <= 16:
            raise ImageError(f"cannot fit the image in {max_bytes} bytes")
        size = _encode_size_hint(im, fmt, max_bytes)
        im = im.resize(size, Image.Resampling.BICUBIC)


def _encode_size_hint(im: Image.Image, fmt: str, max_bytes: int) -> tuple[int, int]:
    smallest = len(_encode(im, fmt, QUALITY_MIN))
    scale = min(0.9, math.sqrt(max_bytes / smallest) * 0.95)
    return max(1, math.floor(im.width * scale)), max(1, math.floor(im.height * scale))


def _source_header(src: Path) -> tuple[str | None, tuple[int, int]]:
    with _open_guarded(src, DEFAULT_MAX_DECODE_PIXELS) as im:
        try:
            return im.format, _display_size(im, _orientation(im))
        except Exception as exc:  # a corrupt EXIF block can raise almost anything
            raise ImageError(f"corrupt image metadata: {exc}") from exc


def _output_path(dest: Path, fmt: str) -> Path:
    suffix = OUTPUT_FORMATS[fmt][1]
    ok = (suffix, ".jpeg") if fmt == "JPEG" else (suffix,)
    return dest if dest.suffix.lower() in ok else dest.with_suffix(suffix)


def render_image(
    src: Path, dest: Path, *, limits: ImageLimits, caption: Caption | None = None
) -> RenderedImage:
    """Fit ``src`` to ``limits``, draw ``caption``, and write it atomically to ``dest``.

    The suffix of ``dest`` is replaced when it does not match the chosen format;
    the returned :class:`RenderedImage` carries the real path.
    """
    source_format, size = _source_header(src)
    im = open_image(src, target=fit_size(size, limits))
    if caption is not None:
        draw_caption(im, caption)
    fmt = _choose_format(limits, source_format, im.mode == "RGBA")
    encoded, im = encode_within(im, fmt, limits.max_bytes)
    path = _output_path(dest, fmt)
    atomic_write(path, encoded)
    return RenderedImage(
        path=path, mime=OUTPUT_FORMATS[fmt][0], width=im.width, height=im.height, bytes=len(encoded)
    )


class RenderCache:
    """Renders each (frame, limits, caption) once, however many publishers ask.

    Keys hold the source's resolved path, mtime and size, so a frame rewritten in
    place renders afresh.  Output names hash the key, so after a restart a render
    still on disk is reused.  Two threads asking for the same key wait for one render.
    """

    def __init__(self, max_entries: int = 256) -> None:
        """Keep at most ``max_entries`` results in memory (least recently used go first)."""
        self._max_entries = max_entries
        self._entries: OrderedDict[tuple[object, ...], RenderedImage] = OrderedDict()
        self._pending: dict[tuple[object, ...], threading.Lock] = {}
        self._lock = threading.Lock()
        self.hits = 0
        """Requests answered from memory."""
        self.renders = 0
        """Requests that rendered an image (or found one an earlier run left on disk)."""

    def _lookup(self, key: tuple[object, ...]) -> RenderedImage | None:
        with self._lock:
            hit = self._entries.get(key)
            if hit is not None and hit.path.exists():
                self._entries.move_to_end(key)
                self.hits += 1
                return hit
            self._entries.pop(key, None)
            return None

    def _store(self, key: tuple[object, ...], result: RenderedImage) -> None:
        with self._lock:
            self.renders += 1
            self._entries[key] = result
            while len(self._entries) > self._max_entries:
                self._entries.popitem(last=False)

    def render(
        self, src: Path, limits: ImageLimits, caption: Caption | None, out_dir: Path
    ) -> RenderedImage:
        """Return the rendering of ``src`` for ``limits``, making it only when needed."""
        st = src.stat()
        key: tuple[object, ...] = (
            str(src.resolve()),
            st.st_mtime_ns,
            st.st_size,
            limits,
            caption,
            str(out_dir),
        )
        hit = self._lookup(key)
        if hit is not None:
            return hit
        with self._lock:
            key_lock = self._pending.setdefault(key, threading.Lock())
        with key_lock:
            try:
                hit = self._lookup(key)
                if hit is None:
                    with RENDER_LOCK:
                        hit = self._render(src, limits, caption, out_dir, key)
                    self._store(key, hit)
            finally:
                with self._lock:
                    self._pending.pop(key, None)
        return hit

    @staticmethod
    def _render(
        src: Path,
        limits: ImageLimits,
        caption: Caption | None,
        out_dir: Path,
        key: tuple[object, ...],
    ) -> RenderedImage:
        digest = hashlib.sha256(repr(key).encode()).hexdigest()[:16]
        stem = f"{src.stem}-{digest}"
        for fmt in (f for f in limits.formats if f in OUTPUT_FORMATS):  # left by an earlier run
            path = out_dir / (stem + OUTPUT_FORMATS[fmt][1])
            if path.exists():
                try:
                    data = path.read_bytes()
                    mime, width, height = probe_image(data)
                    return RenderedImage(path, mime, width, height, len(data))
                except (OSError, ImageError):
                    break
        return render_image(src, out_dir / (stem + ".jpg"), limits=limits, caption=caption)
