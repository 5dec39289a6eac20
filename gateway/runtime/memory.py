"""glibc malloc settings that keep a long-running daemon's memory flat.

glibc serves an allocation of 128 KiB or more with its own ``mmap`` and returns it to
the system on ``free`` -- until the first such block is freed: from then on the
threshold rises to that block's size (up to 32 MiB), so a decoded camera frame
(1920x1080 is an 8 MiB Pillow buffer) and the timelapse frames come from the heap
instead.  Freed, they leave holes that small, long-lived allocations (a reload's new
gateway, a thread's arena) settle into, so the heap can only grow: ``bench/soak.py``
showed +14 MiB per minute of posts and reloads, and flat RSS with the threshold
fixed.  ``malloc_trim(0)`` did not bring it back.  ``mallopt(M_MMAP_THRESHOLD)``
fixes the threshold (it also turns the dynamic adjustment off), so every large image
buffer is its own mapping, unmapped when Pillow frees it.
"""

from __future__ import annotations

import ctypes
import functools
import logging
import os
import platform
import sqlite3
from typing import Any

log = logging.getLogger(__name__)

M_MMAP_THRESHOLD = -3
"""mallopt's parameter number (malloc.h)."""
MMAP_THRESHOLD = 128 * 1024
"""glibc's default: blocks of this size or more are mapped, and unmapped when freed."""
ENV_OVERRIDE = "MALLOC_MMAP_THRESHOLD_"
"""glibc reads this at start; when set, the user chose and we leave it alone."""
M_ARENA_MAX = -8
ARENA_MAX = 2
"""Heaps shared by the threads (glibc's default: 8 per core); more only hold freed memory."""
ARENA_ENV_OVERRIDE = "MALLOC_ARENA_MAX"
SQLITE_SOFT_HEAP_LIMIT = 8 * 1024 * 1024
"""Bytes of memory all of the process's SQLite connections may hold before SQLite
recycles page-cache pages instead of allocating more (by default each connection's
cache grows to 2 MiB with the database; the daemon keeps several connections open)."""


@functools.cache
def _glibc_function(name: str) -> Any:
    """A glibc function, looked up once (``platform.libc_ver`` reads the executable,
    and the daemon trims every minute); None on another C library."""
    if platform.libc_ver()[0] != "glibc":
        return None
    try:
        return getattr(ctypes.CDLL(None), name)
    except (OSError, AttributeError):
        return None


def tune_malloc() -> bool:
    """Fix glibc's mmap threshold at 128 KiB and use 2 arenas; True when the threshold was set.

    Does nothing on another C library; a setting given in the environment
    (``MALLOC_MMAP_THRESHOLD_``, ``MALLOC_ARENA_MAX``) is left alone (False for the
    threshold).  Call it before threads start; safe to call more than once.
    """
    mallopt = _glibc_function("mallopt")
    if mallopt is None:
        return False
    mallopt.argtypes = [ctypes.c_int, ctypes.c_int]
    mallopt.restype = ctypes.c_int
    if os.environ.get(ARENA_ENV_OVERRIDE) is None:
        # measured by bench/soak.py: about 3 MiB less RSS and peak, no other change
        mallopt(M_ARENA_MAX, ARENA_MAX)
    if os.environ.get(ENV_OVERRIDE) is not None:
        return False
    done = bool(mallopt(M_MMAP_THRESHOLD, MMAP_THRESHOLD))
    if not done:
        log.debug("mallopt(M_MMAP_THRESHOLD) failed; memory may grow with large images")
    return done


def limit_sqlite_memory(limit: int = SQLITE_SOFT_HEAP_LIMIT) -> int:
    """Set SQLite's process-wide soft heap limit; returns the limit now in force.

    A soft limit: SQLite frees cached pages to stay under it and never fails a query
    because of it.  Takes a throwaway in-memory connection (the pragma is global).
    """
    conn = sqlite3.connect(":memory:")
    try:
        conn.execute(f"PRAGMA soft_heap_limit = {int(limit)}")
        return int(conn.execute("PRAGMA soft_heap_limit").fetchone()[0])
    finally:
        conn.close()


def trim_malloc() -> bool:
    """Give free heap pages back to the system (glibc ``malloc_trim(0)``); True if any were.

    Without it, memory a post or a reload freed stays in the process between
    long-lived allocations.  A no-op (False) on other C libraries.
    """
    malloc_trim = _glibc_function("malloc_trim")
    if malloc_trim is None:
        return False
    malloc_trim.argtypes = [ctypes.c_size_t]
    malloc_trim.restype = ctypes.c_int
    return bool(malloc_trim(0))
