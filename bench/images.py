"""Image path benchmark: one post with a 12 MP photo, through the daemon and two baselines.

Run: ``python bench/images.py`` (``--quick`` for 3 runs, ``--exact-2048`` for outputs of
exactly 2048 px, ``--media`` to add a chart and a timelapse).  Every figure is the
median and range (min-max) of N runs, in the same process run as its baselines:

* the daemon: a rule firing with a captioned photo, composed and fitted to 1, 2 and 4
  publishers (file publishers given the limits below), stored in its outbox;
* naive Pillow: full decode, EXIF transpose, per publisher a LANCZOS resize, the same
  caption (DejaVu Sans, 4.5% of the height, outlined) and JPEG quality lowered in
  steps of 5 from 85 until the byte budget fits; decoded once per post;
* ImageMagick ``convert -auto-orient -resize -strip -annotate -define jpeg:extent``,
  one command per publisher.

Each output is checked: upright (EXIF orientation 6 applied), long side within the
limit (exactly 2048 px with ``--exact-2048``), within its byte budget, EXIF stripped,
and a caption in its bottom band.  The photo is 4056x3040 (Raspberry Pi HQ camera):
the daemon decodes it at the DCT scale 1/2 (2028 px) and enlarges that by 1% to 2048 px,
where the baselines decode it whole and shrink it.  So that this saving is not bought
with quality, each daemon output's PSNR against naive Pillow's output of the same size
is printed (above the caption band, where the two draw the same pixels).
"""

from __future__ import annotations

import argparse
import io
import math
import random
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
import tomllib
from collections.abc import Callable, Sequence
from datetime import UTC, datetime, timedelta
from functools import partial
from pathlib import Path
from zoneinfo import ZoneInfo

import PIL
from PIL import ExifTags, Image, ImageChops, ImageDraw, ImageFilter, ImageFont, ImageOps, ImageStat

from gateway.media.charts import render_chart
from gateway.media.fonts import text_font_path
from gateway.media.timelapse import build_timelapse
from gateway.model import Capabilities
from gateway.runtime.app import Gateway
from gateway.runtime.loading import validate_config

SIZE = (4056, 3040)  # Raspberry Pi HQ camera, 12.3 MP
CAPTION = "Water 24.1 °C · 14:30"
PUBLISHERS: list[tuple[str, int, int]] = [
    ("bluesky_like", 1_000_000, 2048),
    ("x_like", 5_242_880, 2048),
    ("bluesky_too", 1_000_000, 2048),
    ("small", 150_000, 1280),
]
"""(id, byte budget, longest side): the first n of these are a post's n publishers."""


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
    """What a camera writes: make, model, GPS, and orientation 6 (stored sideways)."""
    exif = Image.Exif()
    exif[ExifTags.Base.Make] = "Raspberry Pi"
    exif[ExifTags.Base.Model] = "HQ Camera"
    exif[ExifTags.Base.Orientation] = 6
    gps = exif.get_ifd(ExifTags.IFD.GPSInfo)
    gps[ExifTags.GPS.GPSLatitudeRef] = "N"
    gps[ExifTags.GPS.GPSLatitude] = (51.0, 32.0, 18.0)
    return exif


def timed(fn: Callable[[], object], runs: int) -> list[float]:
    """Seconds each of ``runs`` calls took."""
    times = []
    for _ in range(runs):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return times


# -- naive Pillow ---------------------------------------------------------------------


def _naive_caption(im: Image.Image) -> None:
    px = max(8, round(0.045 * im.height))
    path = text_font_path()
    font = ImageFont.truetype(path, px) if path else ImageFont.load_default(px)
    margin = round(0.025 * im.height)
    draw = ImageDraw.Draw(im)
    draw.text(
        (margin, im.height - margin),
        CAPTION,
        font=font,
        fill=(255, 255, 255),
        stroke_width=max(1, round(px * 0.1)),
        stroke_fill=(0, 0, 0),
        anchor="ld",
    )


def naive(src: Path, out_dir: Path, targets: Sequence[tuple[str, int, int]]) -> list[Path]:
    """Decode once, then per publisher: resize, caption, JPEG within the budget."""
    with Image.open(src) as im:
        upright = ImageOps.exif_transpose(im)
    outputs = []
    for name, budget, side in targets:
        scale = side / max(upright.size)
        size = (round(upright.width * scale), round(upright.height * scale))
        small = upright.resize(size, Image.Resampling.LANCZOS)
        _naive_caption(small)
        quality = 85
        while True:
            buf = io.BytesIO()
            small.save(buf, "JPEG", quality=quality, optimize=True)
            if buf.tell() <= budget or quality <= 30:
                break
            quality -= 5
        path = out_dir / f"naive-{name}.jpg"
        path.write_bytes(buf.getvalue())
        outputs.append(path)
    return outputs


# -- ImageMagick ----------------------------------------------------------------------


def imagemagick(src: Path, out_dir: Path, targets: Sequence[tuple[str, int, int]]) -> list[Path]:
    """One ``convert`` per publisher: orient, resize, strip, caption, byte budget."""
    outputs = []
    for name, budget, side in targets:
        height = side  # the photo is portrait once upright
        path = out_dir / f"magick-{name}.jpg"
        font = text_font_path()
        cmd = ["convert", str(src), "-auto-orient", "-resize", f"{side}x{side}", "-strip"]
        if font:
            cmd += ["-font", font]
        px = round(0.045 * height)
        cmd += [
            "-pointsize", str(px), "-fill", "white", "-stroke", "black",
            "-strokewidth", str(max(1, round(px * 0.1))), "-gravity", "southwest",
            "-annotate", f"+{round(0.025 * height)}+{round(0.025 * height)}", CAPTION,
            "-quality", "85", "-define", f"jpeg:extent={budget}", str(path),
        ]  # fmt: skip
        subprocess.run(cmd, check=True)
        outputs.append(path)
    return outputs


# -- the daemon -----------------------------------------------------------------------


def daemon_gateway(state_dir: Path, targets: Sequence[tuple[str, int, int]]) -> Gateway:
    """A gateway whose rule posts the captioned photo to ``targets`` (file publishers)."""
    names = ", ".join(f'"{name}"' for name, _, _ in targets)
    text = f"""
[gateway]
name = "bench"
timezone = "Europe/London"
state_dir = "{state_dir}"
[[cameras]]
id = "cam"
topic = "bench/cam"
[[rules]]
id = "photo"
every = "1h"
text = "The pool"
images = [{{ camera = "cam", caption = "{CAPTION}", alt = "The pool" }}]
publish_to = [{names}]
"""
    for name, _, _ in targets:
        text += f'[[publishers]]\nid = "{name}"\ntype = "file"\npath = "{name}"\n'
    gateway = Gateway(validate_config(tomllib.loads(text)))
    for name, budget, side in targets:
        caps = Capabilities(max_image_bytes=budget, max_image_side=side)
        gateway.publishers[name].capabilities = caps
    gateway.runner.capabilities = {p: pub.capabilities for p, pub in gateway.publishers.items()}
    return gateway


def daemon_outputs(gateway: Gateway, targets: Sequence[tuple[str, int, int]]) -> list[Path]:
    """Fire the rule; each publisher's fitted image file."""
    post = gateway.fire("photo")
    assert post is not None, "the rule posted nothing"
    fitted = gateway.runner.composer.fit_media(post, gateway.runner.capabilities)
    return [fitted[name][0].path for name, _, _ in targets]


# -- checks ---------------------------------------------------------------------------


def check(path: Path, budget: int, side: int, reference: Image.Image, exact: bool) -> str:
    """What is wrong with one output ("" when nothing)."""
    problems = []
    size = path.stat().st_size
    if size > budget:
        problems.append(f"{size} B over {budget}")
    with Image.open(path) as im:
        if im.getexif():
            problems.append("EXIF kept")
        rgb = im.convert("RGB")
    # exactly: the 2048 px publishers (a smaller one is fitted with its aspect rounded)
    if max(rgb.size) > side or (exact and side == 2048 and max(rgb.size) != side):
        problems.append(f"size {rgb.width}x{rgb.height}")
    if rgb.height <= rgb.width:
        problems.append("not upright")
        return ", ".join(problems)
    ref = reference.resize(rgb.size, Image.Resampling.BILINEAR)

    def band_diff(top: float, bottom: float) -> float:
        box = (0, int(rgb.height * top), rgb.width, int(rgb.height * bottom))
        diff = ImageChops.difference(rgb.crop(box), ref.crop(box)).convert("L")
        return float(ImageStat.Stat(diff).mean[0])

    if band_diff(0.0, 0.3) > 12:
        problems.append("top differs from the upright source (orientation?)")
    if band_diff(0.9, 1.0) < 2 * band_diff(0.0, 0.3) + 3:
        problems.append("no caption in the bottom band")
    return ", ".join(problems)


def psnr_note(path: Path, naive_path: Path) -> str:
    """`` PSNR n dB``: ``path`` against naive Pillow's output of the same size, above the
    caption band ("" for naive itself or when the sizes differ)."""
    if path == naive_path:
        return ""
    with Image.open(path) as a, Image.open(naive_path) as b:
        if a.size != b.size:
            return ""
        box = (0, 0, a.width, int(a.height * 0.85))
        diff = ImageChops.difference(a.convert("RGB").crop(box), b.convert("RGB").crop(box))
    mse = statistics.fmean(ImageStat.Stat(diff.point(lambda x: x * x)).mean)
    return f" PSNR {10 * math.log10(255 * 255 / mse):.0f} dB" if mse else " identical"


def summary(times: list[float]) -> str:
    """Median and range in milliseconds."""
    ms = sorted(t * 1000 for t in times)
    return f"{statistics.median(ms):7.0f} ms  ({ms[0]:.0f}-{ms[-1]:.0f})"


def photo_section(folder: Path, src: Path, runs: int, exact: bool) -> list[str]:
    """Time the three paths for 1, 2 and 4 publishers; print rows, return problems."""
    with Image.open(src) as im:
        reference = ImageOps.exif_transpose(im)
    has_magick = shutil.which("convert") is not None
    problems: list[str] = []
    print(f"{'publishers / path':<34} {'median':>10}  {'(range)':<14} {'vs naive':>8}  outputs")
    for n in (1, 2, 4):
        targets = PUBLISHERS[:n]
        out = folder / f"n{n}"
        out.mkdir()
        gateway = daemon_gateway(folder / f"state{n}", targets)
        frame = src.read_bytes()
        gateway.state.set_frame(gateway.frames.store("cam", frame, datetime.now(UTC)))
        rows: list[tuple[str, Callable[[], list[Path]]]] = [
            ("naive Pillow", partial(naive, src, out, targets)),
            ("daemon", partial(daemon_outputs, gateway, targets)),
        ]
        if has_magick:
            rows.append(("ImageMagick", partial(imagemagick, src, out, targets)))
        results: dict[str, list[float]] = {}
        made: dict[str, list[Path]] = {}
        for _ in range(runs):  # interleaved, so load on the machine hits all alike
            for name, fn in rows:
                start = time.perf_counter()
                made[name] = fn()
                results.setdefault(name, []).append(time.perf_counter() - start)
        base = statistics.median(results["naive Pillow"])
        for name, _ in rows:
            ratio = statistics.median(results[name]) / base
            outputs = []
            for i, (path, (pid, budget, side)) in enumerate(zip(made[name], targets,
                                                                 strict=True)):  # fmt: skip
                with Image.open(path) as im:
                    outputs.append(f"{im.width}x{im.height} {path.stat().st_size // 1000} kB"
                                   + psnr_note(path, made["naive Pillow"][i]))  # fmt: skip
                issue = check(path, budget, side, reference, exact)
                if issue:
                    problems.append(f"{n} publishers, {name}, {pid}: {issue}")
            label = f"{n} / {name}"
            print(f"{label:<34} {summary(results[name])} {ratio:7.2f}x  {'; '.join(outputs)}")
        gateway.outbox.close()
    if not has_magick:
        print("ImageMagick: not installed, skipped")
    return problems


def chart_points() -> list[tuple[datetime, float | None]]:
    """A day of minutes with an hour and a half offline."""
    start = datetime(2026, 7, 1, tzinfo=UTC)
    points: list[tuple[datetime, float | None]] = []
    for i in range(1440):
        value = 24 + 2 * math.sin(i / 229) + 0.3 * math.sin(i / 7)
        points.append((start + timedelta(minutes=i), None if 600 <= i < 690 else value))
    return points


def media_section(folder: Path, photo: Image.Image, runs: int) -> None:
    """A 24 h chart and a 48-frame timelapse (no baseline: informational)."""
    points = chart_points()
    london = ZoneInfo("Europe/London")
    chart = folder / "chart.png"

    def make_chart() -> None:
        render_chart(points, title="Water", unit="°C", tz=london, dest=chart,
                     gap=timedelta(minutes=5))  # fmt: skip

    print(f"\n(info, no baseline) chart 24 h, 1440 points: {summary(timed(make_chart, runs))}")
    base = photo.resize((2028, 1520), Image.Resampling.BILINEAR)
    frames = []
    for i in range(48):
        frame = base.copy()
        ImageDraw.Draw(frame).ellipse((i * 40, 600, i * 40 + 200, 800), fill=(250, 220, 40))
        frames.append(folder / f"frame-{i:02}.jpg")
        frame.save(frames[-1], quality=85)
    for fmt in ("WEBP", "GIF"):
        out = folder / f"timelapse.{fmt.lower()}"
        times = timed(lambda fmt=fmt, out=out: build_timelapse(frames, out, max_bytes=5_000_000,
                                                               format=fmt), max(1, runs // 2))  # type: ignore[misc]  # fmt: skip
        print(f"(info, no baseline) timelapse 48 frames -> {fmt}: {summary(times)}")


def main(argv: Sequence[str] | None = None) -> int:
    """Parse the flags, make the source photo, run and verify every case."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=7, help="runs per case (default 7)")
    parser.add_argument("--quick", action="store_true", help="3 runs per case")
    parser.add_argument("--exact-2048", action="store_true", help="outputs exactly 2048 px")
    parser.add_argument("--media", action="store_true", help="also a chart and a timelapse")
    args = parser.parse_args(argv)
    runs = 3 if args.quick else args.runs
    mode = "exactly 2048 px" if args.exact_2048 else "long side <= 2048 px"
    print(
        "bench/images.py: one post with a 12 MP photo (EXIF orientation 6, GPS), captioned, "
        f"{mode}, each budget met, EXIF stripped: the daemon's real path (rule fired, "
        f"composed, fitted, stored) vs naive Pillow and ImageMagick; median and range of {runs}"
    )
    print(f"Python {sys.version.split()[0]}, Pillow {PIL.__version__}; 2 shared cores: noisy\n")
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        photo = make_photo(SIZE)
        src = folder / "photo.jpg"
        photo.save(src, "JPEG", quality=92, exif=camera_exif())
        print(f"source: {SIZE[0]}x{SIZE[1]} JPEG q92, {src.stat().st_size:,} bytes\n")
        problems = photo_section(folder, src, runs, args.exact_2048)
        if args.media:
            media_section(folder, photo, runs)
    print()
    for problem in problems:
        print(f"OUTPUT CHECK FAILED: {problem}")
    if not problems:
        print("every output checked: upright, size, byte budget, no EXIF, caption")
    return 1 if problems else 0


if __name__ == "__main__":
    raise SystemExit(main())
