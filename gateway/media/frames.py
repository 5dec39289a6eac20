"""Camera frames received over MQTT: validated and written to disk off the MQTT thread.

paho's ``on_message`` only checks the magic bytes and hands the payload to a
bounded queue; a worker thread writes the file atomically and records the
:class:`~gateway.model.Frame`.  When the queue is full the *incoming* frame is
dropped and counted: a camera resends soon, and blocking paho's thread would
stall every sensor.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import io
import logging
import queue
import threading
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path

from gateway.model import Frame
from gateway.state.store import StateStore
from gateway.support.files import atomic_write
from gateway.support.ratelog import RateLimitedLog

log = logging.getLogger(__name__)

_MAGIC = ((b"\xff\xd8\xff", "image/jpeg", ".jpg"), (b"\x89PNG\r\n\x1a\n", "image/png", ".png"))


def sniff_image(payload: bytes) -> tuple[str, str] | None:
    """``(mime, suffix)`` when the payload starts like a JPEG or PNG, else None."""
    for magic, mime, suffix in _MAGIC:
        if payload.startswith(magic):
            return mime, suffix
    return None


def maybe_base64(payload: bytes) -> bytes:
    """Decode a base64 text payload that holds an image; otherwise return it unchanged."""
    if sniff_image(payload) or len(payload) < 16:
        return payload
    try:
        decoded = base64.b64decode(payload.strip(), validate=True)
    except (binascii.Error, ValueError):
        return payload
    return decoded if sniff_image(decoded) else payload


@dataclass(frozen=True, slots=True)
class _Job:
    camera: str
    payload: bytes
    at: datetime


class FrameStore:
    """Bounded queue plus worker thread that stores frames under ``folder/<camera>/``.

    Each camera keeps its ``keep_recent`` newest frames; older ones are thinned to
    the first of every ``keep_every`` interval, so a camera sending a frame a second
    still leaves a day of evenly spread frames for a timelapse.  Age and disk budget
    are enforced separately, by :mod:`gateway.media.retention`.
    """

    def __init__(
        self,
        folder: Path,
        state: StateStore,
        *,
        queue_size: int = 8,
        keep_recent: int = 30,
        keep_every: timedelta | None = timedelta(minutes=5),
    ) -> None:
        self.folder = folder
        self._state = state
        self._queue: queue.Queue[_Job | None] = queue.Queue(maxsize=queue_size)
        self._keep_recent = keep_recent
        self._keep_every = keep_every
        self._write_lock = threading.Lock()
        self._thread: threading.Thread | None = None
        self._rate_log = RateLimitedLog(log)
        self.dropped = 0
        self.rejected = 0
        self.stored = 0

    def offer(self, camera: str, payload: bytes, at: datetime) -> bool:
        """Queue a frame without blocking; False (and counted) when it was refused."""
        payload = maybe_base64(payload)
        if sniff_image(payload) is None:
            self.rejected += 1
            self._rate_log.warning(
                f"reject:{camera}", "camera %s: payload is not a JPEG or PNG", camera
            )
            return False
        try:
            self._queue.put_nowait(_Job(camera, payload, at))
        except queue.Full:
            self.dropped += 1
            self._rate_log.warning(
                f"drop:{camera}", "camera %s: frame queue full, frame dropped", camera
            )
            return False
        return True

    def start(self) -> None:
        """Start the writer thread."""
        self._thread = threading.Thread(target=self._run, name="frame-writer", daemon=True)
        self._thread.start()

    def stop(self, timeout: float = 5.0) -> None:
        """Write what is queued, then stop the thread."""
        if self._thread is None:
            return
        self._queue.put(None)
        self._thread.join(timeout)
        self._thread = None

    def is_alive(self) -> bool:
        """True while the writer thread runs."""
        return self._thread is not None and self._thread.is_alive()

    def _run(self) -> None:
        from PIL import Image  # here, not at import: the MQTT side never decodes images

        while (job := self._queue.get()) is not None:
            try:
                frame = self.store(job.camera, job.payload, job.at)
            except (OSError, ValueError, Image.DecompressionBombError) as exc:
                self.rejected += 1
                self._rate_log.warning(
                    f"store:{job.camera}", "camera %s: frame not stored: %s", job.camera, exc
                )
                continue
            self._state.set_frame(frame)

    def store(self, camera: str, payload: bytes, at: datetime) -> Frame:
        """Validate and write one frame; returns its Frame record."""
        kind = sniff_image(payload)
        if kind is None:
            raise ValueError("not a JPEG or PNG")
        mime, _suffix = kind
        from PIL import Image

        with Image.open(io.BytesIO(payload)) as image:  # reads the header only
            width, height = image.size
        return self.save(camera, payload, at, mime, width, height)

    def save(
        self, camera: str, payload: bytes, at: datetime, mime: str, width: int, height: int
    ) -> Frame:
        """Write an already validated image atomically as the camera's frame taken ``at``."""
        suffix = _SUFFIXES.get(mime, ".img")
        path = self.folder / camera / f"{frame_stem(at)}{suffix}"
        with self._write_lock:  # the frame writer and rule threads may both store frames
            atomic_write(path, payload)
            self.stored += 1
            self._prune(path.parent)
        digest = hashlib.sha256(payload).hexdigest()
        return Frame(camera, path, at, width, height, mime, digest)

    def archived(self, camera: str, since: datetime, until: datetime) -> list[Path]:
        """The camera's stored frames taken within ``since``..``until``, oldest first."""
        folder = self.folder / camera
        if not folder.is_dir():
            return []
        found = []
        for path in folder.iterdir():
            at = frame_time(path)
            if at is not None and since <= at <= until:
                found.append((at, path))
        return [path for _, path in sorted(found)]

    def _prune(self, folder: Path) -> None:
        files = sorted(p for p in folder.iterdir() if frame_time(p) is not None)
        older = files[: max(0, len(files) - self._keep_recent)]
        if self._keep_every is None:
            doomed = older
        else:
            step = self._keep_every.total_seconds()
            doomed, last_bucket = [], None
            for path in older:  # keep the first frame of every `keep_every` interval
                stamp = frame_time(path)
                assert stamp is not None
                bucket = int(stamp.timestamp() // step) if step > 0 else None
                if bucket is not None and bucket == last_bucket:
                    doomed.append(path)
                last_bucket = bucket
        for old in doomed:
            old.unlink(missing_ok=True)


_SUFFIXES = {
    "image/jpeg": ".jpg",
    "image/png": ".png",
    "image/webp": ".webp",
    "image/gif": ".gif",
    "image/bmp": ".bmp",
    "image/tiff": ".tif",
}
_STEM_FORMAT = "%Y%m%dT%H%M%S_%f"


def frame_stem(at: datetime) -> str:
    """A frame's file name without suffix: its UTC time, so names sort by time."""
    return at.astimezone(UTC).strftime(_STEM_FORMAT)


def frame_time(path: Path) -> datetime | None:
    """The UTC time a frame file's name records, or None for other files."""
    if path.name.startswith("."):
        return None
    try:
        return datetime.strptime(path.stem, _STEM_FORMAT).replace(tzinfo=UTC)
    except ValueError:
        return None
