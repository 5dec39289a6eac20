"""Recent sensor history in memory, per minute, for charts.

A stand-in for the SQLite readings history: it satisfies the same small
:class:`~gateway.compose.HistorySource` protocol (``series(sensor, since, until)``),
so swapping it for the durable history is one line where the gateway is wired.
It is fed by the ingest's reading listener and forgets what is older than its
horizon; numeric readings are averaged per minute so a chatty sensor costs no
more memory than a quiet one (a day is 1,440 buckets per sensor).
"""

from __future__ import annotations

import threading
from collections import deque
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

from gateway.state import SensorSnapshot

BUCKET_SECONDS = 60


@dataclass(slots=True)
class _Bucket:
    minute: int
    total: float
    count: int


class RecentReadings:
    """Per-minute means of each numeric sensor over the last ``horizon``."""

    def __init__(self, horizon: timedelta = timedelta(days=1)) -> None:
        self._max_buckets = max(2, int(horizon.total_seconds() // BUCKET_SECONDS) + 2)
        self._series: dict[str, deque[_Bucket]] = {}
        self._lock = threading.Lock()

    def record(self, snapshot: SensorSnapshot) -> None:
        """Add a reading (a listener for the ingest); text and on/off values are ignored."""
        value = snapshot.value
        if isinstance(value, bool) or not isinstance(value, int | float):
            return
        minute = int(snapshot.at.timestamp() // BUCKET_SECONDS)
        with self._lock:
            series = self._series.get(snapshot.sensor)
            if series is None:
                series = self._series[snapshot.sensor] = deque(maxlen=self._max_buckets)
            if series and series[-1].minute == minute:
                series[-1].total += value
                series[-1].count += 1
            elif not series or series[-1].minute < minute:
                series.append(_Bucket(minute, float(value), 1))
            # a reading older than the newest bucket (a late retained message) is dropped

    def series(
        self, sensor: str, since: datetime, until: datetime
    ) -> list[tuple[datetime, float | None]]:
        """``(minute, mean)`` points of ``sensor`` within ``since``..``until``, oldest first."""
        low, high = since.timestamp(), until.timestamp()
        with self._lock:
            buckets = list(self._series.get(sensor, ()))
        return [
            (datetime.fromtimestamp(b.minute * BUCKET_SECONDS, UTC), b.total / b.count)
            for b in buckets
            if low <= b.minute * BUCKET_SECONDS <= high
        ]
