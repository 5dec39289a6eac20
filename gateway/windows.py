"""Rolling statistics and per-minute buckets of numeric readings, in bounded memory.

A reading only touches the running totals of its minute (:class:`MinuteBuckets`,
a few attribute updates: O(1), no allocation).  When a minute ends it is folded
into each :class:`RollingWindow` (a ring of slots in flat arrays, one slot per
``window / 30``) and queued for the history writer, so SQLite sees one batch
every few minutes rather than one write per reading.  Memory per sensor is fixed
whatever the reading rate.  Answers are exact per slot, so a window's far edge is
resolved to one slot: "the last hour" covers between 58 and 60 minutes.
"""

from __future__ import annotations

from array import array
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Literal

DEFAULT_SLOTS = 30
_FIELDS = 6  # count, sum, min, max, first, first_t


@dataclass(frozen=True, slots=True)
class WindowStats:
    """Statistics of one sensor over one rolling window."""

    window: timedelta
    count: int
    min: float
    max: float
    mean: float
    first: float
    last: float
    first_at: datetime
    last_at: datetime

    @property
    def change(self) -> float:
        """``last - first``."""
        return self.last - self.first

    @property
    def rate_per_hour(self) -> float:
        """Change per hour between the first and the last reading (0 for a single reading)."""
        hours = (self.last_at - self.first_at).total_seconds() / 3600
        return self.change / hours if hours > 0 else 0.0

    @property
    def trend(self) -> Literal["rising", "falling", "steady"]:
        """Whether the value went up, down or nowhere over the window."""
        if self.change > 1e-9:
            return "rising"
        if self.change < -1e-9:
            return "falling"
        return "steady"


FullRow = tuple[int, int, float, float, float, float, float, float, float]
"""One minute in full: (minute, count, sum, min, max, first, first_t, last, last_t)."""

MinuteRow = tuple[int, int, float, float, float]
"""One minute as stored: (minute since the epoch, count, sum, min, max)."""


class RollingWindow:
    """min, max, mean, count, first and last of the readings in the last ``window``.

    Fed whole minutes by :class:`MinuteBuckets`; the minute in progress is passed
    to :meth:`stats`.  A slot is a whole number of minutes (``window / 30``, at
    least one), so the window's far edge is exact to one slot.
    """

    __slots__ = ("_data", "_slots", "_width", "last", "last_t", "size", "window")

    def __init__(self, window: timedelta, slots: int = DEFAULT_SLOTS) -> None:
        minutes = max(1, round(window.total_seconds() / 60))
        self.window = window
        self._width = max(1, round(minutes / slots))
        self.size = -(-minutes // self._width)
        self._slots = array("q", [-1]) * self.size
        self._data = array("d", [0.0]) * (self.size * _FIELDS)
        self.last = 0.0
        self.last_t = float("-inf")

    def add_minute(self, row: FullRow) -> None:
        """Fold one finished minute into its slot."""
        minute, count, total, low, high, first, first_t, last, last_t = row
        slot = minute // self._width
        i = slot % self.size
        base = i * _FIELDS
        data = self._data
        held = self._slots[i]
        if held == slot:
            data[base] += count
            data[base + 1] += total
            data[base + 2] = min(data[base + 2], low)
            data[base + 3] = max(data[base + 3], high)
            if first_t < data[base + 5]:
                data[base + 4], data[base + 5] = first, first_t
        elif held < slot:
            self._slots[i] = slot
            data[base : base + _FIELDS] = array("d", (count, total, low, high, first, first_t))
        else:
            return  # older than the slot's current minute: too late to count
        if last_t >= self.last_t:
            self.last, self.last_t = last, last_t

    def stats(self, now: float, current: FullRow | None = None) -> WindowStats | None:
        """Statistics of the window ending at ``now``, plus the minute in progress."""
        oldest = int(now // 60) // self._width - self.size + 1
        count, total = 0, 0.0
        low, high = float("inf"), float("-inf")
        first, first_t = 0.0, float("inf")
        last, last_t = self.last, self.last_t
        data = self._data
        for i, slot in enumerate(self._slots):
            if slot < oldest:
                continue
            base = i * _FIELDS
            count += int(data[base])
            total += data[base + 1]
            low = min(low, data[base + 2])
            high = max(high, data[base + 3])
            if data[base + 5] < first_t:
                first, first_t = data[base + 4], data[base + 5]
        if current is not None and current[0] // self._width >= oldest:
            count += current[1]
            total += current[2]
            low, high = min(low, current[3]), max(high, current[4])
            if current[6] < first_t:
                first, first_t = current[5], current[6]
            if current[8] >= last_t:
                last, last_t = current[7], current[8]
        if count == 0:
            return None
        return WindowStats(
            window=self.window,
            count=count,
            min=low,
            max=high,
            mean=total / count,
            first=first,
            last=last,
            first_at=datetime.fromtimestamp(first_t, UTC),
            last_at=datetime.fromtimestamp(last_t, UTC),
        )


class MinuteBuckets:
    """The current minute's running totals, finished minutes not yet written, and the
    rolling windows that finished minutes are folded into."""

    __slots__ = (
        "_count", "_first", "_first_t", "_last", "_last_t", "_max", "_min", "_minute", "_sum",
        "dropped", "limit", "pending", "windows",
    )  # fmt: skip

    def __init__(self, windows: tuple[RollingWindow, ...] = (), limit: int = 1440) -> None:
        self.windows = windows
        self.pending: list[MinuteRow] = []
        self.limit = limit
        self.dropped = 0
        self._minute = -1
        self._count = 0
        self._sum = self._min = self._max = 0.0
        self._first = self._first_t = self._last = self._last_t = 0.0

    def add(self, value: float, t: float) -> None:
        """Fold a reading taken at ``t`` (seconds since the epoch) into its minute."""
        minute = int(t // 60)
        if minute == self._minute and self._count:
            self._count += 1
            self._sum += value
            if value < self._min:
                self._min = value
            if value > self._max:
                self._max = value
            self._last, self._last_t = value, t
            return
        if minute < self._minute:
            return  # a late reading for a finished minute; history is coarse anyway
        self._finish()
        self._minute, self._count = minute, 1
        self._sum = self._min = self._max = self._first = self._last = value
        self._first_t = self._last_t = t

    def current(self) -> FullRow | None:
        """The minute in progress, if any reading fell in it."""
        if not self._count:
            return None
        return (
            self._minute, self._count, self._sum, self._min, self._max,
            self._first, self._first_t, self._last, self._last_t,
        )  # fmt: skip

    def _finish(self) -> None:
        row = self.current()
        if row is None:
            return
        self._count = 0
        for window in self.windows:
            window.add_minute(row)
        self.pending.append(row[:5])
        if len(self.pending) > self.limit:  # the writer is failing: keep the newest
            del self.pending[0]
            self.dropped += 1

    def take(self, now: float, *, include_current: bool = False) -> list[MinuteRow]:
        """Remove and return finished minutes (and the current one when asked, e.g. at exit)."""
        if include_current or int(now // 60) > self._minute:
            self._finish()
        rows, self.pending = self.pending, []
        return rows

    def peek(self) -> list[MinuteRow]:
        """Unwritten minutes including the current one, without removing them."""
        current = self.current()
        return [*self.pending, current[:5]] if current else list(self.pending)
