"""Sensor state: snapshots, staleness, availability, rolling windows, per-minute history."""

from __future__ import annotations

import sqlite3
import statistics
import sys
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from gateway.model import Reading
from gateway.state.history import HistoryStore, HistoryWriter
from gateway.state.store import StateStore
from gateway.state.windows import Series, WindowSet

T0 = datetime(2026, 5, 1, 12, 0, tzinfo=UTC)
HOUR = timedelta(hours=1)


def feed(state: StateStore, sensor: str, values: list[float], step: timedelta) -> datetime:
    at = T0
    for value in values:
        state.record(sensor, value, "°C", at, "t")
        at += step
    return at - step


def test_snapshot_previous_count_age_and_staleness() -> None:
    state = StateStore({"t": timedelta(minutes=15)})
    state.update(Reading("t", 20.0, "°C", T0, "x"))
    state.update(Reading("t", 21.0, "°C", T0 + timedelta(minutes=1), "x"))
    snap = state.get("t")
    assert snap is not None
    assert (snap.value, snap.previous, snap.count, snap.topic) == (21.0, 20.0, 2, "x")
    now = T0 + timedelta(minutes=10)
    assert state.age("t", now) == timedelta(minutes=9)
    assert not state.is_stale("t", now)
    assert state.is_stale("t", T0 + timedelta(minutes=17))
    assert state.is_stale("unknown", now)
    assert state.age("unknown", now) is None


def test_offline_is_kept_across_snapshots_until_a_reading() -> None:
    state = StateStore()
    state.set_online("t", False)  # availability can come before any reading
    assert state.is_offline("t")
    state.record("t", 1.0, "", T0)
    assert not state.is_offline("t")
    state.set_online("t", False)
    snap = state.get("t")
    assert snap is not None
    assert snap.offline
    assert snap.value == 1.0


def test_window_statistics_and_trend() -> None:
    state = StateStore(windows=[HOUR, timedelta(hours=24)])
    values = [10.0, 12.0, 11.0, 15.0, 14.0, 18.0]
    last = feed(state, "t", values, timedelta(minutes=5))
    stats = state.stats("t", "1h", now=last)
    assert stats is not None
    assert (stats.count, stats.min, stats.max) == (6, 10.0, 18.0)
    assert stats.mean == pytest.approx(statistics.mean(values))
    assert (stats.first, stats.last, stats.trend) == (10.0, 18.0, "rising")
    assert stats.rate_per_hour == pytest.approx(8.0 / (25 / 60))
    assert state.stats("t", timedelta(hours=24), now=last) is not None
    assert state.stats("t", "2h", now=last) is None  # not a configured window
    # two hours later the 1-hour window is empty, the 24-hour one still holds everything
    later = last + timedelta(hours=2)
    assert state.stats("t", HOUR, now=later) is None
    day = state.stats("t", "24h", now=later)
    assert day is not None
    assert day.count == 6


def test_window_forgets_old_slots_and_text_values_are_not_counted() -> None:
    state = StateStore(windows=[HOUR])
    feed(state, "t", [100.0] * 6 + [6.0, 5.0, 4.0, 3.0, 2.0, 1.0], timedelta(minutes=10))
    stats = state.stats("t", HOUR, now=T0 + timedelta(minutes=110))
    assert stats is not None
    assert (stats.count, stats.max, stats.first, stats.trend) == (6, 6.0, 6.0, "falling")
    state.record("door", "open", "", T0)
    state.record("flag", True, "", T0)
    assert state.stats("door", HOUR, now=T0) is None
    assert state.stats("flag", HOUR, now=T0) is None


@settings(max_examples=100, deadline=None)
@given(
    st.lists(
        st.tuples(st.integers(0, 7200), st.floats(-1e6, 1e6, allow_nan=False)),
        min_size=1,
        max_size=200,
    ).map(sorted)
)
def test_window_matches_brute_force(readings: list[tuple[int, float]]) -> None:
    state = StateStore(windows=[HOUR])  # 30 slots of 2 minutes
    base = T0.timestamp()
    for offset, value in readings:
        state.record("t", value, "", T0 + timedelta(seconds=offset))
    now = T0 + timedelta(seconds=readings[-1][0])
    oldest_slot = int(now.timestamp() // 120) - 29
    inside = [v for o, v in readings if int((base + o) // 120) >= oldest_slot]
    stats = state.stats("t", HOUR, now=now)
    assert stats is not None
    assert stats.count == len(inside)
    assert (stats.min, stats.max) == (min(inside), max(inside))
    assert stats.mean == pytest.approx(statistics.fmean(inside), rel=1e-6, abs=1e-6)
    assert (stats.first, stats.last) == (inside[0], readings[-1][1])


WINDOWS = (HOUR, timedelta(hours=24), timedelta(minutes=7))


def brute_force(
    readings: list[tuple[float, float]], window: timedelta, now: float
) -> tuple[int, float, float, float, float, float, float, float] | None:
    """What a window should say at ``now``: every reading of its slots, kept in full."""
    layout = WindowSet([window])
    width, size = layout.widths[0], layout.sizes[0]
    oldest = int(now // 60) // width - size + 1
    inside = [(t, v) for t, v in readings if int(t // 60) // width >= oldest]
    if not inside:
        return None
    values = [v for _, v in inside]
    return (
        len(values), min(values), max(values), statistics.fmean(values),
        inside[0][1], inside[-1][1], inside[0][0], inside[-1][0],
    )  # fmt: skip


@settings(max_examples=150, deadline=None)
@given(
    st.lists(
        st.tuples(
            # seconds after T0: up to three days, so rings wrap and long gaps clear slots
            st.one_of(st.integers(0, 7200), st.integers(0, 3 * 86400)),
            st.floats(-1e6, 1e6, allow_nan=False),
        ),
        min_size=1,
        max_size=300,
    ).map(sorted),
    st.lists(st.integers(0, 4 * 86400), max_size=4),
    st.sets(st.integers(0, 299), max_size=5),
)
def test_every_window_matches_brute_force(
    readings: list[tuple[int, float]], asks: list[int], flushes: set[int]
) -> None:
    """Several windows of one sensor, asked at the end and later, with history flushes
    (which finish a minute early, so the same minute can be folded twice)."""
    state = StateStore(windows=WINDOWS)
    base = T0.timestamp()
    kept: list[tuple[float, float]] = []
    for i, (offset, value) in enumerate(readings):
        state.record("t", value, "", T0 + timedelta(seconds=offset))
        kept.append((base + offset, value))
        if i in flushes:
            state.take_minutes(T0 + timedelta(seconds=offset), include_current=True)
    end = kept[-1][0]
    for now in [end, *(end + a for a in asks)]:
        for window in WINDOWS:
            expected = brute_force(kept, window, now)
            stats = state.stats("t", window, now=datetime.fromtimestamp(now, UTC))
            if expected is None:
                assert stats is None
                continue
            assert stats is not None
            count, low, high, mean, first, last, first_t, last_t = expected
            assert (stats.count, stats.min, stats.max) == (count, low, high)
            assert stats.mean == pytest.approx(mean, rel=1e-6, abs=1e-6)
            assert (stats.first, stats.last) == (first, last)
            # times are kept to the millisecond
            assert stats.first_at.timestamp() == pytest.approx(first_t, abs=1e-3)
            assert stats.last_at.timestamp() == pytest.approx(last_t, abs=1e-3)


def test_sub_second_times_are_kept_to_the_millisecond() -> None:
    state = StateStore(windows=[HOUR])
    start = T0 + timedelta(seconds=61, microseconds=123_456)
    state.record("t", 1.0, "", start)
    state.record("t", 3.0, "", start + timedelta(minutes=30, microseconds=500_000))
    state.take_minutes(start + HOUR / 2, include_current=True)  # both minutes folded
    stats = state.stats("t", HOUR, now=start + HOUR / 2)
    assert stats is not None
    assert abs((stats.first_at - start).total_seconds()) <= 0.0005
    assert stats.rate_per_hour == pytest.approx(2.0 / (1800.5 / 3600), rel=1e-6)


def test_a_slot_count_saturates_instead_of_overflowing() -> None:
    series = Series(WindowSet([HOUR]))
    minute = int(T0.timestamp() // 60)
    huge = 2**32 + 5  # more readings than a slot counts (4 294 967 295)
    t = minute * 60.0
    series._fold((minute, huge, 1.0, 1.0, 1.0, 1.0, t, 1.0, t))
    series._fold((minute, 7, 1.0, 1.0, 1.0, 1.0, t, 1.0, t))
    stats = series.stats(HOUR, t)
    assert stats is not None
    assert stats.count == 2**32 - 1


def test_a_minute_older_than_the_window_is_not_folded() -> None:
    """Series.add drops late readings itself; _fold must not put one into a reused slot."""
    series = Series(WindowSet([HOUR]))  # 30 slots of 2 minutes
    now = int(T0.timestamp() // 60)
    for minute, value in ((now, 5.0), (now - 60, 100.0), (now - 59, 100.0)):
        t = minute * 60.0
        series._fold((minute, 1, value, value, value, value, t, value, t))
    stats = series.stats(HOUR, now * 60.0)
    assert stats is not None
    assert (stats.count, stats.max) == (1, 5.0)  # now - 60 would share now's ring slot


def test_window_slots_take_forty_bytes() -> None:
    """Per slot: sum, min, max, first (doubles), count and first-reading offset (uint32)."""
    layout = WindowSet([HOUR, timedelta(hours=24)])
    assert (layout.widths, layout.sizes, layout.slots) == ((2, 48), (30, 30), 60)
    state = StateStore(windows=layout.windows)
    feed(state, "t", [1.0, 2.0], timedelta(minutes=1))  # the first minute is folded
    series = state._records["t"].series
    assert series._values is not None
    assert series._counts is not None
    data = len(series._values) * series._values.itemsize
    data += len(series._counts) * series._counts.itemsize
    assert data == 60 * 40 + 2 * 4  # plus each window's newest slot number
    state.record("u", 1.0, "", T0)
    assert state._records["u"].series.layout is series.layout  # shared, not copied
    # sensors with windows of their own share one layout per distinct list too
    for name in ("v", "w"):
        state.register(name, windows=[timedelta(minutes=30)])
    own = state._records["v"].series.layout
    assert own is state._records["w"].series.layout
    assert (own.windows, own.widths, own.sizes) == ((timedelta(minutes=30),), (1,), (30,))


def test_window_memory_is_bounded() -> None:
    state = StateStore(windows=[timedelta(hours=24)])
    state.record("t", 0.0, "", T0)
    state.record("t", 1.0, "", T0 + timedelta(minutes=1))  # the first minute is folded
    series = state._records["t"].series
    before = sys.getsizeof(series._values) + sys.getsizeof(series._counts)
    for i in range(100_000):
        state.record("t", float(i), "", T0 + timedelta(seconds=i))
    assert sys.getsizeof(series._values) + sys.getsizeof(series._counts) == before
    assert series.pending <= 1440


def test_max_sensors_bounds_the_store() -> None:
    state = StateStore(max_sensors=2)
    for name in ("a", "b", "c"):
        state.record(name, 1.0, "", T0)
    assert set(state.sensors()) == {"a", "b"}
    assert state.refused == 1


def test_minute_buckets() -> None:
    buckets = Series()
    base = T0.timestamp()
    for second, value in [(0, 1.0), (30, 3.0), (59, 2.0), (61, 10.0), (200, 5.0)]:
        buckets.add(value, base + second)
    minute = int(base // 60)
    assert buckets.take(base + 200) == [
        (minute, 3, 6.0, 1.0, 3.0),
        (minute + 1, 1, 10.0, 10.0, 10.0),
    ]
    assert buckets.peek() == [(minute + 3, 1, 5.0, 5.0, 5.0)]
    assert buckets.take(base + 200, include_current=True) == [(minute + 3, 1, 5.0, 5.0, 5.0)]
    buckets.add(7.0, base + 201)  # the same minute again after a forced flush: a new row
    assert buckets.take(base + 400) == [(minute + 3, 1, 7.0, 7.0, 7.0)]


def test_history_written_in_batches_and_read_back(tmp_path: Path) -> None:
    db = tmp_path / "gateway.db"
    state = StateStore()
    store = HistoryStore(db, state)
    writer = HistoryWriter(state, store, interval=timedelta(hours=1))
    # three hours of readings every 20 s: 540 readings
    at = T0
    for i in range(540):
        state.record("t", float(i % 60), "", at)
        at += timedelta(seconds=20)
    assert (
        writer.flush(at - timedelta(seconds=20)) == 179
    )  # finished minutes, in one batch (the current one waits)
    assert writer.batches == 1
    rows = store.history("t", T0, T0 + 3 * HOUR)
    assert len(rows) == 180  # 179 stored + the current minute still in memory
    assert rows[0].at == T0
    assert (rows[0].min, rows[0].max, rows[0].count) == (0.0, 2.0, 3)
    assert rows[0].mean == pytest.approx(1.0)
    hourly = store.history("t", T0, T0 + 3 * HOUR, step=HOUR)
    assert [p.count for p in hourly] == [180, 180, 180]
    writer.stop()  # writes the current minute too
    conn = sqlite3.connect(db)
    assert conn.execute("SELECT count(*), sum(count) FROM readings_minute").fetchone() == (180, 540)
    # a minute written twice is merged, not duplicated
    store.write([("t", (int(T0.timestamp() // 60), 1, 100.0, 100.0, 100.0))])
    first = store.history("t", T0, T0)[0]
    assert (first.count, first.max) == (4, 100.0)
    assert store.prune(T0 + HOUR) == 60
    assert len(store.history("t", T0, T0 + 3 * HOUR)) == 120
    store.close()


def test_history_survives_a_restart(tmp_path: Path) -> None:
    db = tmp_path / "gateway.db"
    state = StateStore()
    store = HistoryStore(db, state)
    feed(state, "t", [1.0, 2.0, 3.0], timedelta(minutes=1))
    HistoryWriter(state, store).stop()
    store.close()
    reopened = HistoryStore(db, StateStore())
    assert [p.mean for p in reopened.history("t", T0, T0 + HOUR)] == [1.0, 2.0, 3.0]
    assert reopened.sensors() == ["t"]
    reopened.close()


def test_templates_see_offline_stale_and_age() -> None:
    from gateway.compose.composer import SensorView, render

    state = StateStore({"t": timedelta(minutes=5)})
    state.record("t", 21.0, "°C", T0)
    state.set_online("t", False)
    now = T0 + timedelta(minutes=10)
    view = SensorView.of("t", state.get("t"), state.is_stale("t", now), now, "°C")
    text = render("{{ t }} {{ t.offline }} {{ t.stale }} {{ t.age.seconds }}", {"t": view})
    assert text == "21 °C True True 600"
