"""Rolling statistics and per-minute buckets of numeric readings, in bounded memory.

A reading only touches the running totals of its minute (a few attribute
updates: O(1), no allocation).  When a minute ends it is folded into each
rolling window (a ring of slots, one slot per ``window / 30``) and queued for
the history writer, so SQLite sees one batch every few minutes rather than one
write per reading.  Memory per sensor is fixed whatever the reading rate.
Answers are exact per slot, so a window's far edge is resolved to one slot:
"the last hour" covers between 58 and 60 minutes.

Memory is what limits how many sensors a small board can follow, so a sensor's
windows live in two flat arrays shared by all its windows (:class:`Series`),
and what is the same for every sensor with the same windows (sizes, slot
widths) lives once, in a :class:`WindowSet`.  A slot needs no stored slot
number: a window only ever moves forward, and the slots it passes are cleared
as it goes, so every slot in the ring belongs to the last ``size`` slots.
"""

from __future__ import annotations

from array import array
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Literal

DEFAULT_SLOTS = 30
_COUNT_MAX = 0xFFFF_FFFF  # a slot's count is an unsigned 32-bit integer; it saturates


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


class WindowSet:
    """The shape of a set of rolling windows, shared by every sensor that keeps them.

    Window ``k`` is a ring of ``sizes[k]`` slots of ``widths[k]`` whole minutes
    (``window / slots``, at least one); its slots start at ``bases[k]`` in a
    :class:`Series`' arrays.
    """

    __slots__ = ("bases", "sizes", "slots", "widths", "windows")

    def __init__(self, windows: Sequence[timedelta] = (), slots: int = DEFAULT_SLOTS) -> None:
        self.windows = tuple(windows)
        widths, sizes, bases = [], [], []
        base = 0
        for window in self.windows:
            minutes = max(1, round(window.total_seconds() / 60))
            width = max(1, round(minutes / slots))
            widths.append(width)
            sizes.append(-(-minutes // width))
            bases.append(base)
            base += sizes[-1]
        self.widths, self.sizes, self.bases = tuple(widths), tuple(sizes), tuple(bases)
        self.slots = base
        """Slots of all windows together."""

    def index(self, window: timedelta) -> int | None:
        """The position of ``window`` in the set, or None when it is not kept."""
        try:
            return self.windows.index(window)
        except ValueError:
            return None


# Series._values: per slot (sum, min, max, first); Series._counts: per slot (count,
# milliseconds from the slot's start to its first reading), then per window the number
# of its newest slot (0 before the first: slot 0 was in 1970).
_V, _C = 4, 2


class Series:
    """One sensor's numeric readings: the minute in progress, finished minutes not yet
    written to the history, and the rolling windows every finished minute is folded into.

    Per slot: count, sum, min, max, first and the time of the first reading (to the
    millisecond), in 40 bytes; per sensor, two arrays for all its windows.
    """

    __slots__ = (
        "_count", "_counts", "_first", "_first_t", "_last", "_last_t", "_max", "_min",
        "_minute", "_pending", "_sum", "_values", "dropped", "last", "last_t",
        "layout", "limit",
    )  # fmt: skip

    def __init__(self, layout: WindowSet | None = None, limit: int = 1440) -> None:
        self.layout = layout or WindowSet()
        self.limit = limit
        """Finished minutes kept for the history writer at most (it may be failing)."""
        self.dropped = 0
        """Finished minutes dropped because ``limit`` were already waiting."""
        self.last = 0.0
        self.last_t = float("-inf")
        """The last reading of the newest finished minute, and its time."""
        self._pending: array[float] | None = None  # 5 numbers per finished minute
        self._values: array[float] | None = None  # made with the first finished minute
        self._counts: array[int] | None = None
        self._minute = -1
        self._count = 0
        self._sum = self._min = self._max = 0.0
        self._first = self._first_t = self._last = self._last_t = 0.0

    # -- the minute in progress (paho's thread, for every reading) -------------------

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

    # -- finished minutes --------------------------------------------------------------

    def _finish(self) -> None:
        row = self.current()
        if row is None:
            return
        self._count = 0
        if self.layout.slots:
            self._fold(row)
        pending = self._pending
        if pending is None:
            pending = self._pending = array("d")
        pending.extend(row[:5])
        if len(pending) > 5 * self.limit:  # the writer is failing: keep the newest
            del pending[:5]
            self.dropped += 1

    def _fold(self, row: FullRow) -> None:
        """Add one finished minute to the slot it falls in, in every window."""
        minute, count, total, low, high, first, first_t, last, last_t = row
        layout = self.layout
        values, counts = self._values, self._counts
        if values is None or counts is None:
            # array * n allocates exactly n items; array(typecode, bytes) over-allocates
            values = self._values = array("d", [0.0]) * (_V * layout.slots)
            counts = self._counts = array("I", [0]) * (_C * layout.slots + len(layout.windows))
        newest = _C * layout.slots
        for k, width in enumerate(layout.widths):
            size, slot = layout.sizes[k], minute // width
            held = counts[newest + k]
            if slot <= held - size:
                continue  # older than the whole window: too late to count
            if slot > held:  # the window moves on: clear the slots it passes
                for s in range(max(held + 1, slot - size + 1), slot + 1):
                    counts[_C * (layout.bases[k] + s % size)] = 0
                counts[newest + k] = slot
            i = layout.bases[k] + slot % size
            v, c = _V * i, _C * i
            offset = round((first_t - slot * width * 60) * 1000)
            if counts[c] == 0:
                values[v : v + _V] = array("d", (total, low, high, first))
                counts[c], counts[c + 1] = min(count, _COUNT_MAX), offset
                continue
            counts[c] = min(counts[c] + count, _COUNT_MAX)
            values[v] += total
            values[v + 1] = min(values[v + 1], low)
            values[v + 2] = max(values[v + 2], high)
            if offset < counts[c + 1]:
                values[v + 3], counts[c + 1] = first, offset
        if last_t >= self.last_t:
            self.last, self.last_t = last, last_t

    def resume(self, row: FullRow) -> None:
        """Put back a minute that was in progress (from the readings journal): merged
        with the minute in progress if it is the same, else finished before it."""
        minute, count, total, low, high, first, first_t, last, last_t = row
        if count <= 0 or minute < self._minute:
            return
        if minute == self._minute and self._count:
            self._count += count
            self._sum += total
            self._min, self._max = min(self._min, low), max(self._max, high)
            if first_t < self._first_t:
                self._first, self._first_t = first, first_t
            if last_t >= self._last_t:
                self._last, self._last_t = last, last_t
            return
        self._finish()
        self._minute, self._count = minute, count
        self._sum, self._min, self._max = total, low, high
        self._first, self._first_t, self._last, self._last_t = first, first_t, last, last_t

    def replay(self, row: MinuteRow) -> None:
        """Fold a minute read back from the history into the windows (not queued again).

        A stored minute keeps no first and last reading: its mean stands for both.
        """
        if not self.layout.slots or row[1] <= 0:
            return
        minute, count, total, low, high = row
        mean, start = total / count, minute * 60.0
        self._fold((minute, count, total, low, high, mean, start, mean, start + 59.999))

    def take(self, now: float, *, include_current: bool = False) -> list[MinuteRow]:
        """Remove and return finished minutes (and the current one when asked, e.g. at exit)."""
        if include_current or int(now // 60) > self._minute:
            self._finish()
        rows = self._rows()
        self._pending = None
        return rows

    def peek(self) -> list[MinuteRow]:
        """Unwritten minutes including the current one, without removing them."""
        current = self.current()
        rows = self._rows()
        return [*rows, current[:5]] if current else rows

    @property
    def pending(self) -> int:
        """Finished minutes waiting for the history writer."""
        return len(self._pending) // 5 if self._pending is not None else 0

    def _rows(self) -> list[MinuteRow]:
        p = self._pending
        if p is None:
            return []
        return [
            (int(p[i]), int(p[i + 1]), p[i + 2], p[i + 3], p[i + 4]) for i in range(0, len(p), 5)
        ]

    # -- statistics (any thread, under the state's lock) -------------------------------

    def stats(self, window: timedelta, now: float) -> WindowStats | None:
        """Statistics of ``window`` ending at ``now``, the minute in progress included.

        None when the window is not kept or no reading fell in it.
        """
        k = self.layout.index(window)
        if k is None:
            return None
        width, size = self.layout.widths[k], self.layout.sizes[k]
        oldest = int(now // 60) // width - size + 1
        count, total = 0, 0.0
        low, high = float("inf"), float("-inf")
        first, first_t = 0.0, float("inf")
        last, last_t = self.last, self.last_t
        values, counts = self._values, self._counts
        if values is not None and counts is not None:
            base, held = self.layout.bases[k], counts[_C * self.layout.slots + k]
            # oldest first, so the first slot with readings holds the window's first reading
            for slot in range(max(oldest, held - size + 1), held + 1):
                i = base + slot % size
                n = counts[_C * i]
                if not n:
                    continue
                v = _V * i
                if not count:
                    first = values[v + 3]
                    first_t = slot * width * 60 + counts[_C * i + 1] / 1000
                count += n
                total += values[v]
                low = min(low, values[v + 1])
                high = max(high, values[v + 2])
        current = self.current()
        if current is not None and current[0] // width >= oldest:
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
            window=window,
            count=count,
            min=low,
            max=high,
            mean=total / count,
            first=first,
            last=last,
            first_at=datetime.fromtimestamp(first_t, UTC),
            last_at=datetime.fromtimestamp(last_t, UTC),
        )
