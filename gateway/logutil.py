"""Logging set-up and rate-limited logging.

Under systemd (``$JOURNAL_STREAM`` set) lines carry no timestamp, because the
journal adds its own; on a terminal they do.
"""

from __future__ import annotations

import logging
import os
import sys
import threading
import time
from collections.abc import Callable


def setup_logging(level: str = "info") -> None:
    """Log to stderr in a format that suits a terminal or the journal."""
    if os.environ.get("JOURNAL_STREAM"):
        fmt = "%(levelname)s %(name)s: %(message)s"
    else:
        fmt = "%(asctime)s %(levelname)s %(name)s: %(message)s"
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(logging.Formatter(fmt, datefmt="%Y-%m-%d %H:%M:%S"))
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level.upper())
    # These log every job run or state change at INFO; only their problems matter here.
    for chatty in ("apscheduler", "amqtt", "transitions"):
        logging.getLogger(chatty).setLevel(max(logging.WARNING, root.level))
    # HTTP libraries log every request's full URL, and a webhook or Apprise URL is a secret.
    for revealing in ("httpx", "httpcore", "urllib3", "apprise"):
        logging.getLogger(revealing).setLevel(logging.WARNING)


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
        self._logger.warning(message, *args, exc_info=exc_info)
        return True
