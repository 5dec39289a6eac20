"""Logging a repeated problem at most once a minute, with a count of the rest.

Bad payloads, a full disk or an unreachable camera can repeat many times a second;
the journal of an SD-card device should get one line a minute that says how many
were left out.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable


class RateLimitedLog:
    """Logs a message at most once per ``interval`` seconds per key.

    Suppressed repeats are counted and reported with the next line that gets
    through, so nothing is hidden, only summarised.
    """

    def __init__(
        self,
        logger: logging.Logger,
        interval: float = 60.0,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._logger = logger
        self._interval = interval
        self._clock = clock
        self._last: dict[str, float] = {}
        self._suppressed: dict[str, int] = {}
        self._lock = threading.Lock()

    def warning(self, key: str, message: str, *args: object, exc_info: bool = False) -> bool:
        """Log ``message`` unless ``key`` was logged within the interval; True if logged.

        ``exc_info=True`` adds the traceback of the exception being handled.
        """
        return self.log(logging.WARNING, key, message, *args, exc_info=exc_info)

    def error(self, key: str, message: str, *args: object, exc_info: bool = False) -> bool:
        """Like :meth:`warning`, at ERROR level."""
        return self.log(logging.ERROR, key, message, *args, exc_info=exc_info)

    def log(
        self, level: int, key: str, message: str, *args: object, exc_info: bool = False
    ) -> bool:
        """Log at ``level`` unless ``key`` was logged within the interval; True if logged."""
        now = self._clock()
        with self._lock:
            last = self._last.get(key)
            if last is not None and now - last < self._interval:
                self._suppressed[key] = self._suppressed.get(key, 0) + 1
                return False
            self._last[key] = now
            suppressed = self._suppressed.pop(key, 0)
        if suppressed:
            message += f" (and {suppressed} more like it since the last report)"
        self._logger.log(level, message, *args, exc_info=exc_info)
        return True
