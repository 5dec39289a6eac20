"""Sensor history charts: gaps, empty and degenerate series, local time ticks."""

from __future__ import annotations

import math
from datetime import UTC, datetime, timedelta
from pathlib import Path
from zoneinfo import ZoneInfo

import pytest
from PIL import Image

from gateway.media.charts import LINE_COLOR, nice_ticks, render_chart, time_ticks

LONDON = ZoneInfo("Europe/London")
START = datetime(2026, 6, 1, 0, 0, tzinfo=UTC)


def series(minutes: int, skip: range = range(0)) -> list[tuple[datetime, float | None]]:
    return [
        (START + timedelta(minutes=i), 20 + 3 * math.sin(i / 40))
        for i in range(minutes)
        if i not in skip
    ]


def line_columns(path: Path) -> list[int]:
    """Columns of the plot band that hold a pixel of the line's colour."""
    with Image.open(path) as im:
        rgb = im.convert("RGB")
    w, h = rgb.size
    band = rgb.crop((0, int(h * 0.2), w, int(h * 0.86)))
    data = band.load()
    assert data is not None
    cols = []
    for x in range(band.width):
        for y in range(band.height):
            pixel = data[x, y]
            assert isinstance(pixel, tuple)
            if all(abs(a - b) < 40 for a, b in zip(pixel, LINE_COLOR, strict=False)):
                cols.append(x)
                break
    return cols


def assert_gap(cols: list[int], start: float, end: float) -> None:
    """No line pixels between fractions ``start`` and ``end`` of the line's extent."""
    lo, hi = min(cols), max(cols)
    span = hi - lo
    inside = [x for x in cols if lo + span * start + 4 < x < lo + span * end - 4]
    assert inside == []
    assert any(x < lo + span * start for x in cols)
    assert any(x > lo + span * end for x in cols)


def test_offline_period_leaves_a_gap(tmp_path: Path) -> None:
    points = series(360, skip=range(120, 180))  # offline from 02:00 to 03:00 of six hours
    out = render_chart(
        points,
        title="Water",
        unit="°C",
        tz=LONDON,
        dest=tmp_path / "c.png",
        gap=timedelta(minutes=5),
    )
    assert (out.mime, out.width, out.height) == ("image/png", 1200, 675)
    assert out.bytes == out.path.stat().st_size
    assert_gap(line_columns(out.path), 120 / 359, 180 / 359)


def test_without_gap_the_silence_is_bridged(tmp_path: Path) -> None:
    points = series(360, skip=range(120, 180))
    out = render_chart(points, title="Water", unit="°C", tz=LONDON, dest=tmp_path / "c.png")
    cols = line_columns(out.path)
    assert len(cols) > 0.95 * (max(cols) - min(cols))


def test_none_and_nan_values_break_the_line(tmp_path: Path) -> None:
    points = series(360)
    points[100:200] = [(at, None) for at, _ in points[100:200]]
    points[250:300] = [(at, math.nan) for at, _ in points[250:300]]
    out = render_chart(points, title="Water", unit="°C", tz=LONDON, dest=tmp_path / "c.png")
    cols = line_columns(out.path)
    assert_gap(cols, 100 / 359, 199 / 359)
    assert_gap(cols, 250 / 359, 299 / 359)


@pytest.mark.parametrize(
    "points",
    [
        [],
        [(START, 21.5)],
        [(START, None), (START + timedelta(hours=1), None)],
        [(START + timedelta(hours=i), 5.0) for i in range(6)],
        [(START + timedelta(hours=i), -1e-9 * i) for i in range(6)],
        [(START - timedelta(minutes=i), 1e6 + i) for i in range(30)],  # unsorted, large
    ],
    ids=["empty", "one", "all-none", "constant", "tiny", "reversed"],
)
def test_degenerate_series_render(tmp_path: Path, points: list[tuple[datetime, float]]) -> None:
    out = render_chart(points, title="Pool", unit="%", tz=LONDON, dest=tmp_path / "c.png")
    with Image.open(out.path) as im:
        assert im.format == "PNG"
        assert im.size == (1200, 675)


def test_custom_size(tmp_path: Path) -> None:
    out = render_chart(
        series(60), title="t", unit="", tz=LONDON, dest=tmp_path / "c.png", size=(600, 400)
    )
    assert (out.width, out.height) == (600, 400)


def test_time_ticks_are_round_in_the_local_zone() -> None:
    kolkata = ZoneInfo("Asia/Kolkata")  # UTC+05:30: round local hours are half past in UTC
    start = datetime(2026, 6, 1, 10, 17, tzinfo=UTC)
    ticks = time_ticks(start, start + timedelta(hours=24), kolkata)
    assert 3 <= len(ticks) <= 7
    for tick in ticks:
        local = tick.astimezone(kolkata)
        assert (local.minute, local.hour % 3) == (0, 0)
        assert tick.astimezone(UTC).minute == 30


def test_time_ticks_across_a_dst_change_stay_on_the_hour() -> None:
    start = datetime(2026, 3, 28, 12, 0, tzinfo=UTC)
    ticks = time_ticks(start, start + timedelta(hours=24), LONDON)
    assert all(t.astimezone(LONDON).minute == 0 for t in ticks)


def test_nice_ticks() -> None:
    assert nice_ticks(0, 10) == [0, 2.5, 5, 7.5, 10]
    assert nice_ticks(19.3, 24.6) == [20, 22, 24]
    assert nice_ticks(5, 5)


WATER = [(START + timedelta(minutes=i), 25 + 0.04 * math.sin(i / 20)) for i in range(240)]
"""Pool water held at 24.96..25.04 °C: whole-number labels read 25 / 25 / 25."""


def test_ticks_of_a_narrow_range_have_distinct_labels(tmp_path: Path) -> None:
    out = render_chart(WATER, title="Water", unit="°C", tz=LONDON, dest=tmp_path / "c.png")
    labels = out.axis_labels
    assert len(labels) >= 3
    assert len(set(labels)) == len(labels)  # distinct ticks, distinct labels
    assert labels == tuple(sorted(labels, key=float))
    assert float(labels[0]) <= 24.96
    assert float(labels[-1]) >= 25.04
    high = max(v for _, v in WATER)
    assert f"max {high:.2f} °C" in out.marks
    assert f"min {min(v for _, v in WATER):.2f} °C" in out.marks


def test_sensor_precision_sets_the_decimals(tmp_path: Path) -> None:
    out = render_chart(
        WATER, title="Water", unit="°C", tz=LONDON, dest=tmp_path / "c.png", precision=1
    )
    # ticks no finer than the sensor resolves, each label at most one decimal
    assert all(len(label.partition(".")[2]) <= 1 for label in out.axis_labels)
    assert len(set(out.axis_labels)) == len(out.axis_labels) >= 2
    assert out.marks[0] == f"{WATER[-1][1]:.1f} °C"
    assert "max 25.0 °C" in out.marks
    coarse = render_chart(
        WATER, title="Water", unit="°C", tz=LONDON, dest=tmp_path / "d.png", precision=0
    )
    assert coarse.axis_labels == ("24", "25", "26")


def test_large_values_keep_whole_labels(tmp_path: Path) -> None:
    points = [(START + timedelta(minutes=i), 1000.0 + i) for i in range(60)]
    out = render_chart(points, title="Air", unit="hPa", tz=LONDON, dest=tmp_path / "c.png")
    assert all("." not in label for label in out.axis_labels)
    assert "max 1059 hPa" in out.marks
