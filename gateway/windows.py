"""Rolling statistics and per-minute buckets of numeric readings, in bounded memory.

A :class:`RollingWindow` splits its window into a fixed number of time slots held
in flat arrays (a ring): adding a reading touches one slot, O(1), and memory never
grows with the reading rate.  Answers are exact per slot, so the window's far
edge is resolved to one slot (1/30 of the window by default): "the last hour"
covers between 58 and 60 minutes.

:class:`MinuteBuckets` folds readings into one (count, sum, min, max) row per
minute and keeps finished rows until the history writer takes them, so SQLite
sees one batch every few minutes rather than one write per reading.
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


class RollingWindow:
    """min, max, mean, count, first and last of the readings in the last ``window``."""

    __slots__ = ("_data", "_slots", "_width", "last", "last_t", "size", "window")

    def __init__(self, window: timedelta, slots: int = DEFAULT_SLOTS) -> None:
        self.window = window
        self.size = slots
        self._width = window.total_seconds() / slots
        self._slots = array("q", [-1]) * slots
        self._data = array("d", [0.0]) * (slots * _FIELDS)
        self.last = 0.0
        self.last_t = float("-inf")

    def add(self, value: float, t: float) -> None:
        """Count a reading taken at ``t`` (seconds since the epoch)."""
        slot = int(t // self._width)
        i = slot % self.size
        base = i * _FIELDS
        data = self._data
        held = self._slots[i]
        if held == slot:
            data[base] += 1
            data[base + 1] += value
            if value < data[base + 2]:
                data[base + 2] = value
            if value > data[base + 3]:
                data[base + 3] = value
        elif held < slot:
            self._slots[i] = slot
            data[base : base + _FIELDS] = array("d", (1, value, value, value, value, t))
        else:
            return  # older than the window this slot now holds: too late to count
        if t >= self.last_t:
            self.last, self.last_t = value, t

    def stats(self, now: float) -> WindowStats | None:
        """Statistics of the readings in the window ending at ``now``; None if there are none."""
        oldest = int(now // self._width) - self.size + 1
        count, total = 0, 0.0
        low, high = float("inf"), float("-inf")
        first_slot, first, first_t = None, 0.0, 0.0
        data = self._data
        for i, slot in enumerate(self._slots):
            if slot < oldest:
                continue
            base = i * _FIELDS
            count += int(data[base])
            total += data[base + 1]
            low = min(low, data[base + 2])
            high = max(high, data[base + 3])
            if first_slot is None or slot < first_slot:
                first_slot, first, first_t = slot, data[base + 4], data[base + 5]
        if count == 0:
            return None
        return WindowStats(
            window=self.window,
            count=count,
            min=low,
            max=high,
            mean=total / count,
            first=first,
            last=self.last,
            first_at=datetime.fromtimestamp(first_t, UTC),
            last_at=datetime.fromtimestamp(self.last_t, UTC),
        )


MinuteRow = tuple[int, int, float, float, float]
"""One minute of a sensor: (minute since the epoch, count, sum, min, max)."""


class MinuteBuckets:
    """The current minute's running totals plus finished minutes not yet written."""

    __slots__ = ("_count", "_max", "_min", "_minute", "_sum", "dropped", "limit", "pending")

    def __init__(self, limit: int = 1440) -> None:
        self.pending: list[MinuteRow] = []
        self.limit = limit
        self.dropped = 0
        self._minute = -1
        self._count = 0
        self._sum = self._min = self._max = 0.0

    def add(self, value: float, t: float) -> None:
        """Fold a reading into its minute."""
        minute = int(t // 60)
        if minute == self._minute and self._count:
            self._count += 1
            self._sum += value
            if value < self._min:
                self._min = value
            if value > self._max:
                self._max = value
            return
        if minute < self._minute:
            return  # a late reading for a finished minute; history is coarse anyway
        self._finish()
        self._minute, self._count = minute, 1
        self._sum = self._min = self._max = value

    def _finish(self) -> None:
        if self._count:
            self.pending.append((self._minute, self._count, self._sum, self._min, self._max))
            if len(self.pending) > self.limit:  # the writer is failing: keep the newest
                del self.pending[0]
                self.dropped += 1
        self._count = 0

    def take(self, now: float, *, include_current: bool = False) -> list[MinuteRow]:
        """Remove and return finished minutes (and the current one when asked, e.g. at exit)."""
        if include_current or int(now // 60) > self._minute:
            self._finish()
        rows, self.pending = self.pending, []
        return rows

    def peek(self) -> list[MinuteRow]:
        """Unwritten minutes including the current one, without removing them."""
        rows = list(self.pending)
        if self._count:
            rows.append((self._minute, self._count, self._sum, self._min, self._max))
        return rows
