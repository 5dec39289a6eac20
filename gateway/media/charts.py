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
from gateway.media.fonts import DEFAULT_FONTS, Fonts
from gateway.media.images import RenderedImage
from gateway.media.richtext import draw_text
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


@dataclass(frozen=True)
class RenderedChart(RenderedImage):
    """A rendered chart, with the numbers it shows (for alt text, previews and tests)."""

    axis_labels: tuple[str, ...] = ()
    """The value axis's tick labels, bottom to top."""
    marks: tuple[str, ...] = ()
    """The readings written on it: the latest (with its unit), then ``max ...``, ``min ...``."""


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


def tick_step(low: float, high: float, count: int = 5, precision: int | None = None) -> float:
    """A round step (1, 2, 2.5 or 5 times a power of ten) for about ``count`` ticks.

    With ``precision`` (the sensor's decimals) the step is never finer than the
    sensor resolves, and never needs more decimals than it has: 2.5 x 10^-p is skipped.
    """
    span = (high - low) or 1.0
    raw = span / max(1, count - 1)
    if precision is not None:
        raw = max(raw, 10.0**-precision)
    power = 10.0 ** math.floor(math.log10(raw))
    fits = [m * power for m in (1, 2, 2.5, 5, 10) if m * power >= raw * (1 - 1e-9)]
    if precision is not None:
        fits = [step for step in fits if _decimals(step) <= precision] or [10.0**-precision]
    return fits[0]


def nice_ticks(
    low: float, high: float, count: int = 5, precision: int | None = None
) -> list[float]:
    """Round tick values (1, 2, 2.5 or 5 times a power of ten) covering low..high."""
    step = tick_step(low, high, count, precision)
    first = math.floor(low / step) * step
    ticks = []
    value = first
    while value <= high + step * 1e-9:
        if value >= low - step * 1e-9:
            ticks.append(round(value, 10))
        value += step
    return ticks


def _decimals(step: float) -> int:
    """Decimals that write ``step`` exactly (0.25 -> 2, 5 -> 0)."""
    for places in range(12):
        if abs(round(step, places) - step) <= abs(step) * 1e-9:
            return places
    return 12


def axis_decimals(ticks: Sequence[float]) -> int:
    """Decimals of the value axis: as many as the tick step needs, so distinct ticks
    never share a label (24.95 / 25.00 / 25.05, not 25 / 25 / 25)."""
    return _decimals(ticks[1] - ticks[0]) if len(ticks) > 1 else 1


def value_decimals(ticks: Sequence[float], precision: int | None) -> int:
    """Decimals of a reading written on the chart (latest, min, max): the sensor's
    ``precision`` when configured, else at least one, or the axis's when finer."""
    if precision is not None:
        return precision
    step = ticks[1] - ticks[0] if len(ticks) > 1 else 1.0
    return axis_decimals(ticks) if step >= 10 else max(1, axis_decimals(ticks))


def format_number(value: float, decimals: int) -> str:
    """``value`` with ``decimals`` places; never ``-0.0``."""
    text = f"{value:.{decimals}f}"
    return text[1:] if text.startswith("-") and float(text) == 0 else text


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


@dataclass(frozen=True)
class ValueScale:
    """The value axis: its range, its ticks and their labels, and how readings are written."""

    low: float
    high: float
    ticks: tuple[float, ...]
    labels: tuple[str, ...]
    decimals: int
    """Decimals of the readings written on the chart (latest, min, max)."""

    def value(self, value: float) -> str:
        """A reading as the chart writes it."""
        return format_number(value, self.decimals)


def value_scale(values: Sequence[float], precision: int | None = None) -> ValueScale:
    """The axis for ``values``: padded for the min/max labels, ends on round ticks."""
    if not values:
        low, high = 0.0, 1.0
    else:
        low, high = min(values), max(values)
        pad = (high - low) * 0.15 or max(1.0, abs(high) * 0.05)  # room for min/max labels
        low, high = low - pad, high + pad
    step = tick_step(low, high, precision=precision)
    low, high = math.floor(low / step) * step, math.ceil(high / step) * step
    ticks = nice_ticks(low, high, precision=precision)
    places = axis_decimals(ticks)
    return ValueScale(
        low,
        high,
        tuple(ticks),
        tuple(format_number(t, places) for t in ticks),
        value_decimals(ticks, precision),
    )


def _time_range(points: Sequence[Point]) -> tuple[float, float]:
    stamps = [p[0].timestamp() for p in points]
    t0, t1 = min(stamps), max(stamps)
    return (t0 - 1800, t1 + 1800) if t1 - t0 < 60 else (t0, t1)


def _plot_frame(
    draw: ImageDraw.ImageDraw,
    size: tuple[int, int],
    label: Font,
    t_range: tuple[float, float],
    scale: ValueScale,
) -> _Frame:
    w, h = size
    widest = max(draw.textlength(text, font=label) for text in scale.labels)
    left = int(widest + w * 0.03)
    return _Frame(left, int(h * 0.2), int(w * 0.97), int(h * 0.86), *t_range, scale.low, scale.high)


def _draw_axes(
    draw: ImageDraw.ImageDraw,
    frame: _Frame,
    tz: tzinfo,
    label: Font,
    unit: str,
    scale: ValueScale,
) -> None:
    s = SUPERSAMPLE
    for value, text in zip(scale.ticks, scale.labels, strict=True):
        y = frame.xy(datetime.fromtimestamp(frame.t0, tz), value)[1]
        draw.line((frame.left, y, frame.right, y), fill=GRID_COLOR, width=s)
        draw.text((frame.left - 8 * s, y), text, TEXT_COLOR, label, anchor="rm")
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
    scale: ValueScale,
) -> list[str]:
    readings = [p for run in runs for p in run]
    low = min(readings, key=lambda p: p[1])
    high = max(readings, key=lambda p: p[1])
    r = 5 * SUPERSAMPLE
    room = 2 * r + label.getbbox("0")[3]
    drawn = []
    for (at, value), name in ((high, "max"), (low, "min")):
        x, y = frame.xy(at, value)
        draw.ellipse((x - r, y - r, x + r, y + r), outline=MARK_COLOR, width=SUPERSAMPLE * 2)
        x = min(max(x, frame.left + 90 * SUPERSAMPLE), frame.right - 90 * SUPERSAMPLE)
        # max labels go above the mark and min labels below, unless the frame edge is near
        above = y - room > frame.top if name == "max" else y + room > frame.bottom
        anchor, dy = ("md", -2 * r) if above else ("ma", 2 * r)
        drawn.append(f"{name} {scale.value(value)} {unit}".strip())
        draw.text(
            (x, y + dy),
            drawn[-1],
            MARK_COLOR,
            label,
            anchor=anchor,
            stroke_width=SUPERSAMPLE * 2,
            stroke_fill=BACKGROUND,
        )
        if low == high:
            break
    return drawn


def _draw_title(
    im: Image.Image,
    fonts: Fonts,
    size: tuple[int, int],
    title: str,
    unit: str,
    runs: list[list[tuple[datetime, float]]],
    scale: ValueScale,
) -> list[str]:
    w, h = size
    px = int(h * 0.065)
    draw_text(im, (w * 0.03, h * 0.03), title, px, TEXT_COLOR, fonts, bold=True)
    if runs:
        latest = max((p for run in runs for p in run), key=lambda p: p[0])
        text = f"{scale.value(latest[1])} {unit}".strip()
        draw_text(im, (w * 0.97, h * 0.03), text, px, LINE_COLOR, fonts, bold=True, anchor="right")
        return [text]
    return []


def render_chart(
    points: Sequence[Point],
    *,
    title: str,
    unit: str,
    tz: tzinfo,
    dest: Path,
    size: tuple[int, int] = (1200, 675),
    gap: timedelta | None = None,
    precision: int | None = None,
    fonts: Fonts = DEFAULT_FONTS,
) -> RenderedChart:
    """Draw ``points`` as a PNG line chart at ``dest`` (written atomically).

    A None value, or a silence longer than ``gap`` between two readings, breaks the
    line.  Times are labelled in ``tz``; the lowest and highest readings are marked.
    An empty series gives a chart that says "no data".  Numbers have the sensor's
    ``precision`` (decimals) when given, else as many decimals as the ticks need.
    Text is drawn with ``fonts`` (emoji in a title in colour).
    """
    big = (size[0] * SUPERSAMPLE, size[1] * SUPERSAMPLE)
    im = Image.new("RGB", big, BACKGROUND)
    draw = ImageDraw.Draw(im)
    label = find_font(int(big[1] * 0.042), fonts=fonts)
    runs = _segments(points, gap)
    values = [v for run in runs for _, v in run]
    scale = value_scale(values, precision)
    t_range = _time_range(points) if points else _time_range([(datetime.now(tz), None)])
    frame = _plot_frame(draw, big, label, t_range, scale)
    marks = _draw_title(im, fonts, big, title, unit, runs, scale)
    _draw_axes(draw, frame, tz, label, unit, scale)
    if runs:
        _draw_series(draw, frame, runs, width=3 * SUPERSAMPLE)
        marks += _draw_extremes(draw, frame, runs, label, unit, scale)
    else:
        centre = ((frame.left + frame.right) / 2, (frame.top + frame.bottom) / 2)
        big_font = find_font(int(big[1] * 0.07), fonts=fonts)
        draw.text(centre, "no data", AXIS_COLOR, big_font, anchor="mm")
    # a 2x2 box average in one pass: LANCZOS's intermediate image added 6.5 MiB of peak RSS
    im = im.reduce(SUPERSAMPLE)
    buf = io.BytesIO()
    im.save(buf, "PNG", optimize=False, compress_level=6)
    data = buf.getvalue()
    atomic_write(dest, data)
    return RenderedChart(dest, "image/png", size[0], size[1], len(data), scale.labels, tuple(marks))
