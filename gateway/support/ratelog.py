"""Logging a repeated problem at most once a minute, with a count of the rest.

Bad payloads, a full disk or an unreachable camera can repeat many times a second;
the journal of an SD-card device should get one line a minute that says how many
were left out.
"""

from __future__ import annotations

import errno
import logging
import sqlite3
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


_KNOWN_ERRNOS = {
    errno.ENOSPC: "the disk is full",
    errno.EDQUOT: "the disk quota is used up",
    errno.EROFS: "the file system is read-only",
    errno.EIO: "an I/O error on the disk",
    errno.EACCES: "permission denied",
}
_KNOWN_SQLITE = ("disk is full", "readonly database", "disk I/O error", "unable to open")


def known_failure(exc: BaseException) -> str | None:
    """One line for a failure whose traceback tells nothing more (a full disk), else None.

    Such failures repeat on every firing or write until someone acts: they are
    logged as this line (rate-limited), never as a traceback each time.
    """
    if isinstance(exc, OSError) and exc.errno in _KNOWN_ERRNOS:
        return _KNOWN_ERRNOS[exc.errno]
    if isinstance(exc, sqlite3.Error) and any(k in str(exc) for k in _KNOWN_SQLITE):
        return f"database: {exc}"
    return None
