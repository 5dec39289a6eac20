"""Image pipeline benchmark: one 12 MP photo, three ways, plus a chart and a timelapse.

Run: ``python bench/images.py``.  Everything is measured in the same run, as the
median of a few repetitions, so the ratios compare like with like:

(a) the naive Pillow path: full decode, LANCZOS to 2048 px, JPEG quality 85;
(b) ImageMagick ``convert`` doing the same resize (skipped when not installed);
(c) the gateway: fit to Bluesky (2000 px, 1,000,000 bytes), caption, no EXIF.

Target: (c) at most half of (a), and faster than (b).
"""

from __future__ import annotations

import math
import random
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path
from zoneinfo import ZoneInfo

import PIL
from PIL import ExifTags, Image, ImageChops, ImageDraw, ImageFilter

from gateway.media.charts import render_chart
from gateway.media.images import Caption, ImageLimits, render_image
from gateway.media.timelapse import build_timelapse

SIZE = (4056, 3040)  # Raspberry Pi HQ camera, 12.3 MP
BLUESKY = ImageLimits(max_bytes=1_000_000, max_side=2000)
REPEAT = 5


def make_photo(size: tuple[int, int], seed: int = 1) -> Image.Image:
    """Gradients, shapes and sensor-like noise: compresses like a photo, not like a flat fill."""
    w, h = size
    rnd = random.Random(seed)
    grad = Image.linear_gradient("L").resize(size)
    base = Image.merge("RGB", (grad, Image.radial_gradient("L").resize(size), grad.rotate(180)))
    draw = ImageDraw.Draw(base)
    for _ in range(300):
        x, y, r = rnd.randrange(w), rnd.randrange(h), rnd.randrange(10, w // 8)
        colour = (rnd.randrange(256), rnd.randrange(256), rnd.randrange(256))
        if rnd.random() < 0.5:
            draw.ellipse((x - r, y - r, x + r, y + r), fill=colour)
        else:
            end = (rnd.randrange(w), rnd.randrange(h))
            draw.line((x, y, *end), fill=colour, width=rnd.randrange(1, 12))
    base = base.filter(ImageFilter.GaussianBlur(2))
    noise = Image.merge("RGB", [Image.effect_noise(size, 6 + 2 * i) for i in range(3)])
    return ImageChops.add(base, noise, offset=-128)


def camera_exif() -> Image.Exif:
    exif = Image.Exif()
    exif[ExifTags.Base.Make] = "Raspberry Pi"
    exif[ExifTags.Base.Model] = "HQ Camera"
    gps = exif.get_ifd(ExifTags.IFD.GPSInfo)
    gps[ExifTags.GPS.GPSLatitudeRef] = "N"
    gps[ExifTags.GPS.GPSLatitude] = (51.0, 32.0, 18.0)
    return exif


def median_time(fn: Callable[[], object], repeat: int = REPEAT) -> float:
    times = []
    for _ in range(repeat):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def naive(src: Path, dest: Path) -> None:
    with Image.open(src) as im:
        im.load()
        w, h = im.size
        small = im.resize((2048, round(h * 2048 / w)), Image.Resampling.LANCZOS)
    small.save(dest, "JPEG", quality=85)


def imagemagick(src: Path, dest: Path) -> None:
    cmd = ["convert", str(src), "-resize", "2048x2048", "-quality", "85", str(dest)]
    subprocess.run(cmd, check=True)


def chart_points() -> list[tuple[datetime, float | None]]:
    start = datetime(2026, 7, 1, tzinfo=UTC)
    points: list[tuple[datetime, float | None]] = []
    for i in range(1440):
        offline = 600 <= i < 690  # an hour and a half without readings
        value = 24 + 2 * math.sin(i / 229) + 0.3 * math.sin(i / 7)
        points.append((start + timedelta(minutes=i), None if offline else value))
    return points


def make_frames(folder: Path, photo: Image.Image, count: int = 48) -> list[Path]:
    """Archived frames at 2028x1520 (the camera's binned mode) with a moving object."""
    base = photo.resize((2028, 1520), Image.Resampling.BILINEAR)
    paths = []
    for i in range(count):
        frame = base.copy()
        x = i * 40
        ImageDraw.Draw(frame).ellipse((x, 600, x + 200, 800), fill=(250, 220, 40))
        path = folder / f"frame-{i:02}.jpg"
        frame.save(path, quality=85)
        paths.append(path)
    return paths


def describe(path: Path) -> str:
    with Image.open(path) as im:
        exif = "EXIF" if im.getexif() else "no EXIF"
        frames = getattr(im, "n_frames", 1)
        extra = f", {frames} frames" if frames > 1 else ""
        return f"{im.width}x{im.height} {im.format}, {path.stat().st_size:,} B, {exif}{extra}"


Row = tuple[str, float | None, str]


def photo_rows(src: Path, folder: Path) -> list[Row]:
    """(a), (b), (c) and the 2048 px gateway run, on the same source file."""
    out_a, out_b, out_c, out_d = (folder / f"{n}.jpg" for n in "abcd")
    t_a = median_time(lambda: naive(src, out_a))
    rows: list[Row] = [("(a) naive Pillow: full decode, LANCZOS 2048, q85", t_a, describe(out_a))]
    if shutil.which("convert"):
        t_b = median_time(lambda: imagemagick(src, out_b))
        rows.append(("(b) ImageMagick convert -resize 2048x2048 -quality 85", t_b, describe(out_b)))
    else:
        rows.append(("(b) ImageMagick: not installed, skipped", None, ""))
    caption = Caption("Water 24.1 °C · 14:30 · الماء")
    t_c = median_time(lambda: render_image(src, out_c, limits=BLUESKY, caption=caption))
    rows.append(("(c) gateway: Bluesky fit (2000 px, <1 MB), caption", t_c, describe(out_c)))
    wide = ImageLimits(max_bytes=1_000_000, max_side=2048)
    t_d = median_time(lambda: render_image(src, out_d, limits=wide, caption=caption))
    rows.append(("    (info) gateway at 2048 px: draft() cannot help", t_d, describe(out_d)))
    return rows


def media_rows(folder: Path, photo: Image.Image) -> list[Row]:
    """A 24 h chart and a 48-frame timelapse, as WebP and as GIF."""
    out_chart = folder / "chart.png"
    points = chart_points()
    london = ZoneInfo("Europe/London")
    five_minutes = timedelta(minutes=5)
    t_chart = median_time(
        lambda: render_chart(
            points,
            title="Water temperature",
            unit="°C",
            tz=london,
            dest=out_chart,
            gap=five_minutes,
        )
    )
    rows: list[Row] = [("chart: 24 h, 1440 points, 1200x675", t_chart, describe(out_chart))]
    frames = make_frames(folder, photo)
    for fmt in ("WEBP", "GIF"):
        out = folder / f"timelapse.{fmt.lower()}"
        seconds = median_time(
            lambda fmt=fmt, out=out: build_timelapse(  # type: ignore[misc]
                frames, out, max_bytes=5_000_000, format=fmt
            ),
            repeat=3,
        )
        rows.append((f"timelapse: 48 frames 2028x1520 -> {fmt} <5 MB", seconds, describe(out)))
    return rows


def print_table(rows: list[Row]) -> None:
    """Times, and ratios to (a) for the four runs on the photo."""
    reference = rows[0][1] or 1.0
    print(f"{'case':<56} {'median':>9} {'vs (a)':>7}  output")
    print("-" * 120)
    for name, seconds, output in rows:
        timing = f"{seconds * 1000:7.0f} ms" if seconds is not None else f"{'-':>9}"
        compared = seconds is not None and name.lstrip().startswith("(")
        ratio = f"{seconds / reference:6.2f}x" if compared and seconds else f"{'':>7}"
        print(f"{name:<56} {timing} {ratio}  {output}")


def main() -> int:
    """Make the source photo, run every case, print the table and the verdicts."""
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        photo = make_photo(SIZE)
        src = folder / "photo.jpg"
        photo.save(src, "JPEG", quality=92, exif=camera_exif())
        print(f"source: {SIZE[0]}x{SIZE[1]} JPEG, {src.stat().st_size:,} bytes, with GPS EXIF")
        print(f"Python {sys.version.split()[0]}, Pillow {PIL.__version__}, median of {REPEAT}\n")
        rows = photo_rows(src, folder)
        rows += media_rows(folder, photo)
        print_table(rows)
        t_a, t_b, t_c = (row[1] for row in rows[:3])
        assert t_a is not None
        assert t_c is not None
        print()
        print(f"(c)/(a) = {t_c / t_a:.2f}  target <= 0.50: {'OK' if t_c <= t_a / 2 else 'MISSED'}")
        if t_b is not None:
            print(f"(c)/(b) = {t_c / t_b:.2f}  target < 1.00: {'OK' if t_c < t_b else 'MISSED'}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
