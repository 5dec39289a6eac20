"""Telling a session takeover from an ordinary disconnection.

A broker lets a new connection with a client id already in use take the session
over: the older connection is closed, and the newcomer receives the queued QoS 1
messages (readings stolen from the gateway).  MQTT 5 brokers may say so with
reason code 0x8E; mosquitto often just closes the socket, which paho reports as
"Unspecified error".  So besides 0x8E, a connection lost and won back at once
(the broker is up: it accepted us again within seconds), several times within ten
minutes, is reported as a takeover: a restarting broker does not do that.
"""

from __future__ import annotations

import time
from collections import deque
from collections.abc import Callable

SESSION_TAKEN_OVER = 0x8E
QUICK_RECONNECT = 5.0
"""Seconds between losing the connection and getting it back that count as 'at once'."""
WINDOW = 600.0
REPEATS = 3
"""Quick reconnections within WINDOW seconds that make a takeover."""


class TakeoverDetector:
    """Fed every disconnection and connection; counts session takeovers."""

    def __init__(self, clock: Callable[[], float] = time.monotonic) -> None:
        self._clock = clock
        self._lost_at: float | None = None
        self._quick: deque[float] = deque()
        self.takeovers = 0
        """Takeovers seen since start (0x8E, or repeated quick reconnections)."""
        self.last_at: float | None = None
        """Wall-clock time of the last takeover, for ``status``."""

    def disconnected(self, reason_code: int, failure: bool) -> bool:
        """A lost connection; True when the broker said it is a takeover (0x8E)."""
        if not failure:
            self._lost_at = None
            return False
        self._lost_at = self._clock()
        if reason_code == SESSION_TAKEN_OVER:
            self._lost_at = None  # counted now, not again at the reconnection
            self._count()
            return True
        return False

    def connected(self) -> bool:
        """A (re)connection; True when it completes a pattern of takeovers."""
        lost_at, self._lost_at = self._lost_at, None
        if lost_at is None:
            return False
        now = self._clock()
        if now - lost_at > QUICK_RECONNECT:
            return False
        self._quick.append(now)
        while self._quick and now - self._quick[0] > WINDOW:
            self._quick.popleft()
        if len(self._quick) < REPEATS:
            return False
        self._count()
        return True

    def _count(self) -> None:
        self.takeovers += 1
        self.last_at = time.time()
