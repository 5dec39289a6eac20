"""Line charts of a sensor's history, drawn with Pillow alone (no matplotlib on a Pi).

The chart is drawn at twice its size and scaled down, which is Pillow's cheapest
way to anti-alias lines.  Text sizes are fractions of the height so a 1200x675
chart stays legible when a phone shows it 400 pixels wide.
"""

from __future__ import annotations

import io
import math
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta, tzinfo
from pathlib import Path

from PIL import Image, ImageDraw, ImageFont

from gateway.media.captions import find_font
from gateway.media.images import RenderedImage
from gateway.support.files import atomic_write

SUPERSAMPLE = 2
BACKGROUND = (255, 255, 255)
TEXT_COLOR = (40, 40, 40)
GRID_COLOR = (225, 225, 225)
AXIS_COLOR = (120, 120, 120)
LINE_COLOR = (0, 114, 178)
MARK_COLOR = (213, 94, 0)

_TIME_STEPS = [
    timedelta(minutes=m) for m in (1, 2, 5, 10, 15, 30, 60, 120, 180, 360, 720, 1440, 2880, 10080)
]

Point = tuple[datetime, float | None]
Font = ImageFont.FreeTypeFont | ImageFont.ImageFont


@dataclass(frozen=True)
class _Frame:
    """The plot area in pixels and the data ranges it shows."""

    left: int
    top: int
    right: int
    bottom: int
    t0: float
    t1: float
    v0: float
    v1: float

    def xy(self, at: datetime, value: float) -> tuple[float, float]:
        x = self.left + (at.timestamp() - self.t0) / (self.t1 - self.t0) * (self.right - self.left)
        y = self.bottom - (value - self.v0) / (self.v1 - self.v0) * (self.bottom - self.top)
        return x, y


def nice_ticks(low: float, high: float, count: int = 5) -> list[float]:
    """Round tick values (1, 2, 2.5 or 5 times a power of ten) covering low..high."""
    span = (high - low) or 1.0
    raw = span / max(1, count - 1)
    power = 10 ** math.floor(math.log10(raw))
    step = next(m * power for m in (1, 2, 2.5, 5, 10) if m * power >= raw)
    first = math.floor(low / step) * step
    ticks = []
    value = first
    while value <= high + step * 1e-9:
        if value >= low - step * 1e-9:
            ticks.append(round(value, 10))
        value += step
    return ticks


def time_ticks(start: datetime, end: datetime, tz: tzinfo, max_ticks: int = 7) -> list[datetime]:
    """Tick times on round local wall-clock values (every 15 min, 3 h, midnight...)."""
    span = end - start
    step = next((s for s in _TIME_STEPS if span / s <= max_ticks - 1), _TIME_STEPS[-1])
    local = start.astimezone(tz)
    if step >= timedelta(days=1):
        tick = local.replace(hour=0, minute=0, second=0, microsecond=0)
    else:
        minutes = local.hour * 60 + local.minute
        floor = minutes - minutes % int(step.total_seconds() // 60)
        tick = local.replace(hour=floor // 60, minute=floor % 60, second=0, microsecond=0)
    ticks = []
    while tick <= end:
        if tick >= start:
            ticks.append(tick)
        tick = tick + step  # wall-clock arithmetic: labels stay on the hour across DST
    return ticks


def _segments(points: Sequence[Point], gap: timedelta | None) -> list[list[tuple[datetime, float]]]:
    """Runs of consecutive values, split at None and at silences longer than ``gap``."""
    runs: list[list[tuple[datetime, float]]] = []
    current: list[tuple[datetime, float]] = []
    for at, value in sorted(points, key=lambda p: p[0]):
        too_late = gap is not None and current and at - current[-1][0] > gap
        if value is None or too_late or not math.isfinite(value):
            if current:
                runs.append(current)
            current = []
        if value is not None and math.isfinite(value):
            current.append((at, value))
    if current:
        runs.append(current)
    return runs


def _fmt(value: float) -> str:
    return f"{value:.0f}" if abs(value) >= 100 else f"{value:.3g}" if value else "0"


def _value_range(values: list[float]) -> tuple[float, float]:
    low, high = min(values), max(values)
    pad = (high - low) * 0.15 or max(1.0, abs(high) * 0.05)  # leaves room for min/max labels
    ticks = nice_ticks(low - pad, high + pad)
    return min(ticks[0], low - pad), max(ticks[-1], high + pad)


def _time_range(points: Sequence[Point]) -> tuple[float, float]:
    stamps = [p[0].timestamp() for p in points]
    t0, t1 = min(stamps), max(stamps)
    return (t0 - 1800, t1 + 1800) if t1 - t0 < 60 else (t0, t1)


def _plot_frame(
    draw: ImageDraw.ImageDraw,
    size: tuple[int, int],
    label: Font,
    t_range: tuple[float, float],
    v_range: tuple[float, float],
) -> _Frame:
    w, h = size
    widest = max(draw.textlength(_fmt(v), font=label) for v in nice_ticks(*v_range))
    left = int(widest + w * 0.03)
    return _Frame(left, int(h * 0.2), int(w * 0.97), int(h * 0.86), *t_range, *v_range)


def _draw_axes(
    draw: ImageDraw.ImageDraw, frame: _Frame, tz: tzinfo, label: Font, unit: str
) -> None:
    s = SUPERSAMPLE
    for value in nice_ticks(frame.v0, frame.v1):
        y = frame.xy(datetime.fromtimestamp(frame.t0, tz), value)[1]
        draw.line((frame.left, y, frame.right, y), fill=GRID_COLOR, width=s)
        draw.text((frame.left - 8 * s, y), _fmt(value), TEXT_COLOR, label, anchor="rm")
    draw.text((frame.left - 8 * s, frame.top - 14 * s), unit, TEXT_COLOR, label, anchor="rd")
    start = datetime.fromtimestamp(frame.t0, tz)
    end = datetime.fromtimestamp(frame.t1, tz)
    for tick in time_ticks(start, end, tz):
        x = frame.xy(tick, frame.v0)[0]
        midnight = tick.hour == 0 and tick.minute == 0
        text = tick.strftime("%a %d") if midnight else tick.strftime("%H:%M")
        draw.line((x, frame.top, x, frame.bottom), fill=GRID_COLOR, width=s)
        draw.line((x, frame.bottom, x, frame.bottom + 6 * s), fill=AXIS_COLOR, width=s)
        half = draw.textlength(text, font=label) / 2  # keep edge labels inside the image
        x = min(max(x, half), draw.im.size[0] - half - s)
        draw.text((x, frame.bottom + 10 * s), text, TEXT_COLOR, label, anchor="ma")
    draw.line((frame.left, frame.bottom, frame.right, frame.bottom), fill=AXIS_COLOR, width=s)
    draw.line((frame.left, frame.top, frame.left, frame.bottom), fill=AXIS_COLOR, width=s)


def _draw_series(
    draw: ImageDraw.ImageDraw, frame: _Frame, runs: list[list[tuple[datetime, float]]], width: int
) -> None:
    for run in runs:
        xy = [frame.xy(at, value) for at, value in run]
        if len(xy) == 1:  # a lone reading between two gaps is still a reading
            x, y = xy[0]
            draw.ellipse((x - width, y - width, x + width, y + width), fill=LINE_COLOR)
        else:
            draw.line(xy, fill=LINE_COLOR, width=width, joint="curve")


def _draw_extremes(
    draw: ImageDraw.ImageDraw,
    frame: _Frame,
    runs: list[list[tuple[datetime, float]]],
    label: Font,
    unit: str,
) -> None:
    readings = [p for run in runs for p in run]
    low = min(readings, key=lambda p: p[1])
    high = max(readings, key=lambda p: p[1])
    r = 5 * SUPERSAMPLE
    room = 2 * r + label.getbbox("0")[3]
    for (at, value), name in ((high, "max"), (low, "min")):
        x, y = frame.xy(at, value)
        draw.ellipse((x - r, y - r, x + r, y + r), outline=MARK_COLOR, width=SUPERSAMPLE * 2)
        x = min(max(x, frame.left + 90 * SUPERSAMPLE), frame.right - 90 * SUPERSAMPLE)
        # max labels go above the mark and min labels below, unless the frame edge is near
        above = y - room > frame.top if name == "max" else y + room > frame.bottom
        anchor, dy = ("md", -2 * r) if above else ("ma", 2 * r)
        draw.text(
            (x, y + dy),
            f"{name} {_fmt(value)} {unit}".strip(),
            MARK_COLOR,
            label,
            anchor=anchor,
            stroke_width=SUPERSAMPLE * 2,
            stroke_fill=BACKGROUND,
        )
        if low == high:
            break


def _draw_title(
    draw: ImageDraw.ImageDraw,
    size: tuple[int, int],
    title: str,
    unit: str,
    runs: list[list[tuple[datetime, float]]],
) -> None:
    w, h = size
    draw.text((w * 0.03, h * 0.04), title, TEXT_COLOR, find_font(int(h * 0.065), bold=True))
    if runs:
        latest = max((p for run in runs for p in run), key=lambda p: p[0])
        text = f"{_fmt(latest[1])} {unit}".strip()
        draw.text(
            (w * 0.97, h * 0.04),
            text,
            LINE_COLOR,
            find_font(int(h * 0.065), bold=True),
            anchor="ra",
        )


def render_chart(
    points: Sequence[Point],
    *,
    title: str,
    unit: str,
    tz: tzinfo,
    dest: Path,
    size: tuple[int, int] = (1200, 675),
    gap: timedelta | None = None,
) -> RenderedImage:
    """Draw ``points`` as a PNG line chart at ``dest`` (written atomically).

    A None value, or a silence longer than ``gap`` between two readings, breaks the
    line.  Times are labelled in ``tz``; the lowest and highest readings are marked.
    An empty series gives a chart that says "no data".
    """
    big = (size[0] * SUPERSAMPLE, size[1] * SUPERSAMPLE)
    im = Image.new("RGB", big, BACKGROUND)
    draw = ImageDraw.Draw(im)
    label = find_font(int(big[1] * 0.042))
    runs = _segments(points, gap)
    values = [v for run in runs for _, v in run]
    v_range = _value_range(values) if values else (0.0, 1.0)
    t_range = _time_range(points) if points else _time_range([(datetime.now(tz), None)])
    frame = _plot_frame(draw, big, label, t_range, v_range)
    _draw_title(draw, big, title, unit, runs)
    _draw_axes(draw, frame, tz, label, unit)
    if runs:
        _draw_series(draw, frame, runs, width=3 * SUPERSAMPLE)
        _draw_extremes(draw, frame, runs, label, unit)
    else:
        centre = ((frame.left + frame.right) / 2, (frame.top + frame.bottom) / 2)
        draw.text(centre, "no data", AXIS_COLOR, find_font(int(big[1] * 0.07)), anchor="mm")
    # a 2x2 box average in one pass: LANCZOS's intermediate image added 6.5 MiB of peak RSS
    im = im.reduce(SUPERSAMPLE)
    buf = io.BytesIO()
    im.save(buf, "PNG", optimize=False, compress_level=6)
    data = buf.getvalue()
    atomic_write(dest, data)
    return RenderedImage(dest, "image/png", size[0], size[1], len(data))
