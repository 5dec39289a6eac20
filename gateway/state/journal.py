"""The readings journal: readings not yet in the minute history survive a SIGKILL.

The per-minute history is written to SQLite in batches (``history_flush_interval``) to
spare the SD card; in between, the minutes live in memory.  So that a crash, an OOM
kill or a ``kill -9`` loses no acknowledged reading, every counted reading is also
appended to a journal file beside ``gateway.db``: the MQTT thread writes the batch's
lines with one ``write()`` just before the batch's PUBACKs go out (no fsync: the lines
are in the kernel once written, which is what survives the process; a power cut may
lose the last seconds, as it may lose the broker's own unsynced queue).

Files are ``readings-<generation>.journal``.  Each history flush closes the current
generation and opens the next, under the state's lock, and writes into the new file the
minute each sensor has in progress (a *carry* line): the new file plus the history
rows being flushed hold everything the old file held.  The flush's SQLite transaction
records the closed generation (``kv`` key :data:`MARK_KEY`); after it commits, the old
files are deleted.  At start, every file newer than the mark is replayed into the
windows and the unwritten minutes; a file's carry lines count only when the file before
it was flushed (otherwise that file is replayed whole, carry and all would count twice).

The journal also keeps the packet id and a content digest of every acknowledged QoS 1
message (``a`` lines): a kill between the journal write and the PUBACK leaves the broker
redelivering messages already counted, and the replay hands them to the MQTT client,
which recognises such a redelivery (MQTT's DUP flag, same id, same content).  The newest
:data:`MAX_ACKS` are carried into each new generation, and a clean stop leaves a file
with only them (its PUBACKs may have been lost with the connection).

Line format (UTF-8, tab-separated, each line ending with a tab and a newline, so a line
torn by a crash or a full disk is recognised and skipped)::

    s <id> <sensor as JSON>                    the file's number for a sensor
    r <id> <t> <value>                         a reading (epoch milliseconds, float)
    c <id> <minute> <count> <sum> <min> <max> <first> <first_t> <last> <last_t>
    a <packet id> <digest>                     an acknowledged QoS 1 message
"""

from __future__ import annotations

import json
import logging
import os
import re
import threading
from collections import deque
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from gateway.state.windows import FullRow
from gateway.support.ratelog import RateLimitedLog

__all__ = ["MARK_KEY", "ReadingJournal", "Replayed", "journal_files", "replay"]

log = logging.getLogger(__name__)

MARK_KEY = "readings_journal_flushed"
"""``kv`` key of the last journal generation whose readings are in ``readings_minute``."""
ROTATE_BYTES = 16 * 1024 * 1024
"""A journal past this size asks for an early history flush (a flood of readings)."""
MAX_BUFFERED = 200_000
"""Lines held in memory while the journal cannot be written (a full disk); past that
the oldest are dropped (they are still counted in memory, only not crash-safe)."""
MAX_ACKS = 1024
"""Acknowledged messages handed back to the MQTT client at start (newest kept).  A
broker resends only the messages in flight when the connection ended: at most its
``max_inflight_messages`` (mosquitto: 20 by default)."""

_READING, _ACK, _CARRY = 0, 1, 2
_NAME = re.compile(r"readings-(\d{1,18})\.journal")


def journal_files(folder: Path) -> list[tuple[int, Path]]:
    """The journal files in ``folder``, oldest generation first."""
    found = []
    try:
        names = os.listdir(folder)
    except OSError:
        return []
    for name in names:
        match = _NAME.fullmatch(name)
        if match:
            found.append((int(match.group(1)), folder / name))
    return sorted(found)


@dataclass
class Replayed:
    """What :meth:`ReadingJournal.replay` put back."""

    readings: int = 0
    carried: int = 0
    files: int = 0
    bad_lines: int = 0
    last: dict[str, tuple[float, float]] = field(default_factory=dict)
    """Each sensor's last journaled reading: ``(t, value)``."""


class ReadingJournal:
    """The append-only journal of one gateway's counted readings (see the module doc).

    :meth:`open` (at start) replays nothing by itself; :func:`replay` reads the files
    newer than the flushed mark.  :meth:`add` is called for every counted reading (under
    the state's lock), :meth:`write` at the end of every MQTT batch, :meth:`rotate` by
    the history writer under the state's lock, :meth:`flushed` after its commit.
    """

    def __init__(self, folder: Path, *, on_full: Callable[[], None] | None = None) -> None:
        self.folder = folder
        self.on_full = on_full
        self._lock = threading.Lock()
        self._pending: list[tuple[int, str, Any, Any]] = []
        self._ids: dict[str, int] = {}
        self._recent: deque[tuple[int, int]] = deque(maxlen=MAX_ACKS)
        """The newest acknowledged messages: carried into each new generation."""
        self._fd: int | None = None
        self._size = 0
        self._full_asked = False
        self.generation = 0
        self.opened = False
        """True once :meth:`open` ran (a journal never opened is not rotated)."""
        self.dropped = 0
        """Lines dropped because the journal could not be written for too long."""
        self.write_errors = 0
        self._rate_log = RateLimitedLog(log)

    # -- start ----------------------------------------------------------------------

    def open(self, flushed: int) -> None:
        """Delete the files whose readings are in the history (generation ≤ ``flushed``;
        the others were replayed, see :func:`replay`) and start a new generation."""
        newest = flushed
        for gen, path in journal_files(self.folder):
            newest = max(newest, gen)
            if gen <= flushed:
                _unlink(path)
        with self._lock:
            self._open_locked(newest + 1)
            self.opened = True

    # -- running ----------------------------------------------------------------------

    def add(self, sensor: str, value: float, t: float) -> None:
        """Journal one counted reading (written at the next :meth:`write`).

        Called for every reading, so it takes no lock of its own: readings come from
        paho's thread under the state's lock, which :meth:`rotate` holds too, and
        :meth:`write` runs in that same thread (or under that lock)."""
        self._pending.append((_READING, sensor, t, value))

    def ack(self, keys: Iterable[tuple[int, int]]) -> None:
        """Journal acknowledged QoS 1 messages: ``(packet id, digest)`` (0: no digest)."""
        with self._lock:
            for mid, key in keys:
                if key:
                    self._pending.append((_ACK, "", mid, key))
                    self._recent.append((mid, key))

    def write(self) -> None:
        """Write what was added since the last write (one ``write()``; no fsync)."""
        with self._lock:
            self._write_locked()
            full = self._size > ROTATE_BYTES and not self._full_asked
            if full:
                self._full_asked = True
        if full and self.on_full is not None:
            self.on_full()

    def rotate(self, carried: Iterable[tuple[str, FullRow]]) -> int:
        """Close this generation, open the next with ``carried`` (the minutes in
        progress); call under the state's lock.  Returns the closed generation."""
        with self._lock:
            self._write_locked()
            # What could not be written (a full disk) is still in memory: in the rows
            # this flush commits, or in the carried minutes below.
            self._pending = []
            closed = self.generation
            self._open_locked(closed + 1)
            self._pending.extend((_CARRY, sensor, row, 0.0) for sensor, row in carried)
            self._pending.extend((_ACK, "", mid, key) for mid, key in self._recent)
            self._write_locked()
            return closed

    def flushed(self, generation: int) -> None:
        """The history holds every generation up to ``generation``: delete their files."""
        for gen, path in journal_files(self.folder):
            if gen <= generation and gen != self.generation:
                _unlink(path)

    def close(self, *, flushed: bool) -> None:
        """Write what is left and close.  ``flushed``: the history holds every reading,
        so the file keeps only the newest acknowledged messages (a PUBACK may still have
        been lost with the connection), or goes when there are none."""
        with self._lock:
            if flushed:
                self._pending = [(_ACK, "", mid, key) for mid, key in self._recent]
                if self._fd is not None:
                    try:
                        os.ftruncate(self._fd, 0)
                    except OSError:
                        os.close(self._fd)
                        self._fd = None
                        _unlink(self._path(self.generation))
                self._size = 0
            self._write_locked()
            fd, self._fd = self._fd, None
            if fd is not None:
                os.close(fd)
            if flushed and not self._recent:
                _unlink(self._path(self.generation))
            self._pending = []
            self.opened = False

    @property
    def size(self) -> int:
        """Bytes written to the current generation."""
        return self._size

    # -- inside the lock ------------------------------------------------------------------

    def _path(self, gen: int) -> Path:
        return self.folder / f"readings-{gen}.journal"

    def _open_locked(self, gen: int) -> None:
        if self._fd is not None:
            os.close(self._fd)
            self._fd = None
        self.generation = gen
        self._ids = {}
        self._size = 0
        self._full_asked = False
        try:
            self._fd = os.open(self._path(gen), os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600)
        except OSError as exc:
            self.write_errors += 1
            self._rate_log.warning("open", "readings journal not opened: %s", exc)

    def _format(self, new: dict[str, int]) -> str:
        """The pending records as lines; sensors new to this file get an ``s`` line (and
        a number in ``new``, kept once the lines are written)."""
        out: list[str] = []
        append = out.append
        ids = self._ids
        for kind, sensor, a, b in self._pending:
            if kind == _ACK:
                append(f"a\t{a}\t{b}\t\n")
                continue
            sid = ids.get(sensor)
            if sid is None:
                sid = new.get(sensor)
                if sid is None:
                    sid = new[sensor] = len(ids) + len(new)
                    append(f"s\t{sid}\t{json.dumps(sensor, ensure_ascii=False)}\t\n")
            if kind == _READING:  # the time to the millisecond, as the windows keep it
                append(f"r\t{sid}\t{round(a * 1000)}\t{b!r}\t\n")
            else:
                minute, count, *rest = a
                append(f"c\t{sid}\t{minute}\t{count}\t")
                append("\t".join(repr(float(v)) for v in rest) + "\t\n")
        return "".join(out)

    def _write_locked(self) -> None:
        if not self._pending:
            return
        if self._fd is None:
            self._open_locked(self.generation + 1)  # after an error: a fresh file
            if self._fd is None:
                self._bound()
                return
        new: dict[str, int] = {}
        data = self._format(new).encode()
        try:
            written = 0
            while written < len(data):
                written += os.write(self._fd, data[written:])
        except OSError as exc:
            self.write_errors += 1
            self._rate_log.warning("write", "readings journal not written: %s", exc)
            self._undo_partial()
            self._bound()
            return
        self._size += len(data)
        self._ids.update(new)
        self._pending = []

    def _undo_partial(self) -> None:
        """Cut a partly written batch off the file; where that fails, leave the file
        (a torn line is skipped at replay) and write the next batch to a new one."""
        assert self._fd is not None
        try:
            os.ftruncate(self._fd, self._size)
        except OSError:
            os.close(self._fd)
            self._fd = None

    def _bound(self) -> None:
        excess = len(self._pending) - MAX_BUFFERED
        if excess > 0:
            del self._pending[:excess]
            self.dropped += excess


def replay(
    files: Iterable[tuple[int, Path]],
    flushed: int,
    add: Callable[[str, float, float], bool],
    carry: Callable[[str, FullRow], bool],
) -> tuple[Replayed, dict[int, int]]:
    """Feed the files' readings to ``add(sensor, value, t)`` and carried minutes to
    ``carry(sensor, row)`` (each returns False for a sensor it cannot keep), in order.

    Returns what was replayed and the acknowledged messages (packet id → digest).
    """
    done = Replayed()
    acks: dict[int, int] = {}
    previous = flushed
    for gen, path in files:
        use_carry = previous <= flushed  # the file before was flushed: its carry counts
        previous = gen
        done.files += 1
        for kind, sensor, fields in _records(path, done):
            try:
                if kind == "r":
                    t, value = int(fields[0]) / 1000, float(fields[1])
                    if add(sensor, value, t):
                        done.readings += 1
                        done.last[sensor] = (t, value)
                elif kind == "c" and use_carry:
                    row = _carried_row(fields)
                    if carry(sensor, row):
                        done.carried += row[1]
                elif kind == "a":
                    acks[int(fields[0])] = int(fields[1])
                    if len(acks) > MAX_ACKS:
                        del acks[next(iter(acks))]
            except (ValueError, IndexError):
                done.bad_lines += 1
    return done, acks


def _carried_row(fields: list[str]) -> FullRow:
    """A ``c`` line's minute; ValueError when it is not one."""
    if len(fields) != 9 or int(fields[1]) <= 0:
        raise ValueError("not a carried minute")
    first, first_t, last, last_t = (float(f) for f in fields[5:9])
    total, low, high = (float(f) for f in fields[2:5])
    return (int(fields[0]), int(fields[1]), total, low, high, first, first_t, last, last_t)


def _records(path: Path, done: Replayed) -> Iterator[tuple[str, str, list[str]]]:
    """``(kind, sensor, fields)`` of each whole, well-formed line of a journal file."""
    names: dict[str, str] = {}
    try:
        data = path.read_bytes()
    except OSError as exc:
        log.warning("readings journal %s not read: %s", path, exc)
        return
    end = data.rfind(b"\n")
    for raw in data[: end + 1].split(b"\n")[:-1]:
        try:
            parts = raw.decode("utf-8").split("\t")
            if len(parts) < 3 or parts.pop() != "":
                raise ValueError("torn line")  # every whole line ends with a tab
            kind = parts[0]
            if kind == "s":
                names[parts[1]] = str(json.loads(parts[2]))
                continue
            if kind == "a":
                yield kind, "", parts[1:3]
                continue
            if kind in ("r", "c"):
                yield kind, names[parts[1]], parts[2:]
                continue
        except (UnicodeDecodeError, IndexError, KeyError, ValueError):
            pass
        done.bad_lines += 1


def _unlink(path: Path) -> None:
    try:
        path.unlink()
    except FileNotFoundError:
        pass
    except OSError as exc:
        log.warning("readings journal %s not deleted: %s", path, exc)
