"""A fake clock and fake timers, so time-based behaviour is tested without waiting."""

from __future__ import annotations

import heapq
import itertools
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from gateway.outbox.delivery import DeliveryWorker
    from gateway.outbox.store import Outbox


@dataclass(order=True)
class _Call:
    when: datetime
    seq: int
    fn: Callable[[], None] = field(compare=False)
    cancelled: bool = field(default=False, compare=False)

    def cancel(self) -> None:
        self.cancelled = True


class FakeClock:
    """A clock that moves only when told; implements ``Timers.call_at`` too."""

    def __init__(self, start: datetime) -> None:
        self.now = start
        self._calls: list[_Call] = []
        self._seq = itertools.count()

    def __call__(self) -> datetime:
        return self.now

    def call_at(self, when: datetime, fn: Callable[[], None]) -> _Call:
        call = _Call(when, next(self._seq), fn)
        heapq.heappush(self._calls, call)
        return call

    def pending(self) -> int:
        """Timers set and not cancelled."""
        return sum(1 for c in self._calls if not c.cancelled)

    def advance(self, delta: timedelta) -> None:
        """Move time forward, running every due timer at its own time, in order."""
        target = self.now + delta
        while self._calls and self._calls[0].when <= target:
            call = heapq.heappop(self._calls)
            if call.cancelled:
                continue
            self.now = max(self.now, call.when)
            call.fn()
        self.now = target


class EpochClock:
    """Epoch seconds that move only when the test says so (starts at the real now)."""

    def __init__(self) -> None:
        self.now = time.time()

    def __call__(self) -> float:
        return self.now


def drain(
    worker: DeliveryWorker, outbox: Outbox, clock: EpochClock, publisher: str, steps: int = 100
) -> list[float]:
    """Step a delivery worker, moving ``clock`` by each wait, until nothing is open;
    return every wait it asked for."""
    waits = []
    for _ in range(steps):
        if outbox.next_delivery(publisher) is None:
            return waits
        wait = worker.step()
        if wait > 0:
            waits.append(wait)
            clock.now += wait
    raise AssertionError("the outbox did not drain")
