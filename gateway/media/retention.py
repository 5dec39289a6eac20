"""Keeps the media folder within an age limit and a disk budget, oldest files first.

An SD card that fills up stops the whole gateway (SQLite included), so frames and
rendered media are pruned on a schedule.  Files touched in the last few seconds
are never deleted: a frame that just arrived may be about to be posted, and a
temp file (name starting with a dot) is still being written by
:func:`gateway.fsutil.atomic_write`.  Temp files left behind by a crash are
removed once they are clearly stale.
"""

from __future__ import annotations

import logging
import os
import threading
import time
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import timedelta
from pathlib import Path

log = logging.getLogger(__name__)

GRACE_SECONDS = 10.0
"""Files modified more recently than this are never deleted."""

STALE_TEMP_SECONDS = 3600.0
"""A dot-file this old is a leftover from a crash, not a write in progress."""


@dataclass(frozen=True)
class RetentionResult:
    """What one pass deleted, and how much stays on disk."""

    deleted_files: int
    freed_bytes: int
    kept_bytes: int = 0


@dataclass(frozen=True)
class _Entry:
    path: Path
    mtime: float
    size: int


def _scan(folder: Path, exclude: frozenset[Path] = frozenset()) -> list[_Entry]:
    entries = []
    for root, dirs, files in os.walk(folder):
        if exclude:  # pruning `dirs` in place keeps os.walk out of them
            dirs[:] = [d for d in dirs if Path(root, d).resolve() not in exclude]
        for name in files:
            path = Path(root, name)
            try:
                st = path.lstat()
            except FileNotFoundError:
                continue
            if path.is_symlink() or not path.is_file():
                continue
            entries.append(_Entry(path, st.st_mtime, st.st_size))
    return entries


def _delete(entry: _Entry) -> bool:
    try:
        entry.path.unlink()
    except FileNotFoundError:  # someone else got there first: no bytes freed by us
        return False
    except OSError as exc:
        log.warning("retention: cannot delete %s: %s", entry.path, exc)
        return False
    return True


def _doomed(
    entries: list[_Entry], now: float, max_age: timedelta | None, max_bytes: int | None
) -> list[_Entry]:
    """The entries to delete: stale temp files, then too old, then oldest over budget."""
    doomed: list[_Entry] = []
    kept: list[_Entry] = []
    for entry in sorted(entries, key=lambda e: e.mtime):
        age = now - entry.mtime
        if entry.path.name.startswith("."):
            (doomed if age > STALE_TEMP_SECONDS else kept).append(entry)
        elif age > GRACE_SECONDS and max_age is not None and age > max_age.total_seconds():
            doomed.append(entry)
        else:
            kept.append(entry)
    if max_bytes is not None:
        total = sum(e.size for e in kept)
        for entry in kept:  # oldest first
            if total <= max_bytes:
                break
            if now - entry.mtime > GRACE_SECONDS and not entry.path.name.startswith("."):
                doomed.append(entry)
                total -= entry.size
    return doomed


def _remove_empty_dirs(folder: Path, now: float, exclude: frozenset[Path]) -> None:
    for root, dirs, files in os.walk(folder, topdown=False):
        path = Path(root)
        if path == folder or dirs or files or path.resolve() in exclude:
            continue
        try:
            # a fresh folder may be about to receive a file from atomic_write
            if now - path.stat().st_mtime > GRACE_SECONDS:
                path.rmdir()
        except OSError:
            continue


def enforce_retention(
    folder: Path,
    *,
    max_age: timedelta | None,
    max_bytes: int | None,
    now: float | None = None,
    exclude: Iterable[Path] = (),
) -> RetentionResult:
    """Delete files under ``folder`` older than ``max_age``, then the oldest until the
    total size is at most ``max_bytes``.  Empty subfolders are removed too.

    Folders in ``exclude`` (and everything under them) are neither counted nor
    touched: the archive publisher's files are its own.  ``now`` (a Unix time) is
    for tests.  A missing folder is not an error.
    """
    if not folder.is_dir():
        return RetentionResult(0, 0, 0)
    now = time.time() if now is None else now
    entries = _scan(folder, frozenset(p.resolve() for p in exclude))
    deleted = freed = 0
    for entry in _doomed(entries, now, max_age, max_bytes):
        if _delete(entry):
            deleted += 1
            freed += entry.size
    _remove_empty_dirs(folder, now, frozenset(p.resolve() for p in exclude))
    kept = sum(e.size for e in entries) - freed
    if deleted:
        log.info("retention: deleted %d files (%d bytes) under %s", deleted, freed, folder)
    return RetentionResult(deleted, freed, kept)


class RetentionJob:
    """Runs :func:`enforce_retention` on a folder every ``interval``, in its own thread."""

    def __init__(
        self,
        folder: Path,
        *,
        max_age: timedelta | None,
        max_bytes: int | None,
        interval: timedelta,
        exclude: Iterable[Path] = (),
    ) -> None:
        self.folder = folder
        self.max_age = max_age
        self.max_bytes = max_bytes
        self.interval = interval
        self.exclude = tuple(exclude)
        self.runs = 0
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def run_once(self, now: float | None = None) -> RetentionResult:
        """One pass now; errors are logged, never raised (the next pass tries again)."""
        try:
            result = enforce_retention(
                self.folder,
                max_age=self.max_age,
                max_bytes=self.max_bytes,
                now=now,
                exclude=self.exclude,
            )
        except OSError as exc:
            log.warning("retention of %s failed: %s", self.folder, exc)
            result = RetentionResult(0, 0, 0)
        self.runs += 1
        return result

    def start(self) -> None:
        """Start the thread: a pass at once, then one every ``interval``."""
        self._stop.clear()
        self._thread = threading.Thread(target=self._run, name="media-retention", daemon=True)
        self._thread.start()

    def _run(self) -> None:
        while not self._stop.is_set():
            self.run_once()
            self._stop.wait(self.interval.total_seconds())

    def stop(self, timeout: float = 5.0) -> None:
        """Stop the thread (a pass in progress finishes first)."""
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout)
            self._thread = None

    def is_alive(self) -> bool:
        """True while the thread runs."""
        return self._thread is not None and self._thread.is_alive()
