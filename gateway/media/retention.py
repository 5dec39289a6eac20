"""Keeps the media folder within an age limit and a disk budget, oldest files first.

An SD card that fills up stops the whole gateway (SQLite included), so frames and
rendered media are pruned on a schedule.  Files touched in the last few seconds
are never deleted: a frame that just arrived may be about to be posted, and a
temp file (name starting with a dot) is still being written by
:func:`gateway.support.files.atomic_write`.  Temp files left behind by a crash are
removed once they are clearly stale.

Media that posts still waiting for delivery need are never deleted either: a
delivery that is ``pending``, ``sending`` or ``failed`` may be retried for days,
and a retry without its photo would go out incomplete or fail.  The caller
passes those paths as ``keep`` (the gateway asks
:meth:`gateway.outbox.store.Outbox.media_in_use` once per pass).  Kept files still
count toward ``max_bytes``, so the other files are pruned harder; when only
kept or fresh files are left over budget, nothing more is deleted.  If the list
of files to keep cannot be read, the pass deletes nothing.
"""

from __future__ import annotations

import logging
import os
import threading
import time
from collections.abc import Callable, Iterable
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
    entries: list[_Entry],
    now: float,
    max_age: timedelta | None,
    max_bytes: int | None,
    keep: frozenset[Path] = frozenset(),
) -> list[_Entry]:
    """The entries to delete: stale temp files, then too old, then oldest over budget.

    Entries whose path is in ``keep`` are never deleted but count toward ``max_bytes``.
    """
    doomed: list[_Entry] = []
    kept: list[_Entry] = []
    for entry in sorted(entries, key=lambda e: e.mtime):
        age = now - entry.mtime
        if entry.path in keep:
            kept.append(entry)
        elif entry.path.name.startswith("."):
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
            if (
                now - entry.mtime > GRACE_SECONDS
                and not entry.path.name.startswith(".")
                and entry.path not in keep
            ):
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


def _log_kept_over_budget(
    folder: Path, kept: int, max_bytes: int, entries: list[_Entry], protected: frozenset[Path]
) -> None:
    """Say, once per pass, when media waiting for delivery hold the folder over budget."""
    waiting = sum(e.size for e in entries if e.path in protected)
    if waiting:  # else only fresh files are over: they go next pass, nothing to report
        log.info(
            "retention: %s holds %d bytes, over the %d budget; %d of them are media of"
            " posts still waiting for delivery and are kept",
            folder,
            kept,
            max_bytes,
            waiting,
        )


def enforce_retention(
    folder: Path,
    *,
    max_age: timedelta | None,
    max_bytes: int | None,
    now: float | None = None,
    exclude: Iterable[Path] = (),
    keep: Iterable[Path] = (),
) -> RetentionResult:
    """Delete files under ``folder`` older than ``max_age``, then the oldest until the
    total size is at most ``max_bytes``.  Empty subfolders are removed too.

    Folders in ``exclude`` (and everything under them) are neither counted nor
    touched: the archive publisher's files are its own.  Files in ``keep`` (media of
    posts still to be delivered) are never deleted but are counted.  ``now`` (a Unix
    time) is for tests.  A missing folder is not an error.
    """
    if not folder.is_dir():
        return RetentionResult(0, 0, 0)
    now = time.time() if now is None else now
    # Scanning from the resolved folder yields resolved paths (symlinks are skipped),
    # comparable with the resolved `keep` paths without resolving every file.
    folder = folder.resolve()
    excluded = frozenset(p.resolve() for p in exclude)
    protected = frozenset(p.resolve() for p in keep)
    entries = _scan(folder, excluded)
    deleted = freed = 0
    for entry in _doomed(entries, now, max_age, max_bytes, protected):
        if _delete(entry):
            deleted += 1
            freed += entry.size
    _remove_empty_dirs(folder, now, excluded)
    kept = sum(e.size for e in entries) - freed
    if deleted:
        log.info("retention: deleted %d files (%d bytes) under %s", deleted, freed, folder)
    if max_bytes is not None and kept > max_bytes:
        _log_kept_over_budget(folder, kept, max_bytes, entries, protected)
    return RetentionResult(deleted, freed, kept)


class RetentionJob:
    """Runs :func:`enforce_retention` on a folder every ``interval``, in its own thread.

    ``keep``, when given, is called once per pass for the media still needed (see
    :meth:`gateway.outbox.store.Outbox.media_in_use`); if it fails, the pass deletes nothing.
    """

    def __init__(
        self,
        folder: Path,
        *,
        max_age: timedelta | None,
        max_bytes: int | None,
        interval: timedelta,
        exclude: Iterable[Path] = (),
        keep: Callable[[], Iterable[Path]] | None = None,
    ) -> None:
        self.folder = folder
        self.max_age = max_age
        self.max_bytes = max_bytes
        self.interval = interval
        self.exclude = tuple(exclude)
        self.keep = keep
        self.runs = 0
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def run_once(self, now: float | None = None) -> RetentionResult:
        """One pass now; errors are logged, never raised (the next pass tries again)."""
        try:
            keep = frozenset(self.keep()) if self.keep is not None else frozenset()
        except Exception as exc:  # sqlite3.Error, OSError, a corrupt row: delete nothing
            log.warning(
                "retention of %s skipped: cannot tell which media are still to be delivered: %s",
                self.folder,
                exc,
            )
            result = RetentionResult(0, 0, 0)
        else:
            result = self._enforce(now, keep)
        self.runs += 1
        return result

    def _enforce(self, now: float | None, keep: frozenset[Path]) -> RetentionResult:
        try:
            return enforce_retention(
                self.folder,
                max_age=self.max_age,
                max_bytes=self.max_bytes,
                now=now,
                exclude=self.exclude,
                keep=keep,
            )
        except OSError as exc:
            log.warning("retention of %s failed: %s", self.folder, exc)
            return RetentionResult(0, 0, 0)

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
