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
    retained: bool = False


class FrameStore:
    """Bounded queue plus worker thread that stores frames under ``folder/<camera>/``.

    Each camera keeps its ``keep_recent`` newest frames; older ones are thinned to
    the first of every ``keep_every`` interval, so a camera sending a frame a second
    still leaves a day of evenly spread frames for a timelapse.  Age and disk budget
    are enforced separately, by :mod:`gateway.media.retention`.

    A frame is stored with the time it arrived, so a frame that is not new must not
    be stored again: one with the same bytes as the camera's newest stored frame (a
    retained frame sent again on every reconnect, a resend) makes that stored frame,
    with its own time, the camera's latest; a retained frame of unknown age is
    ignored.  Otherwise a dead camera's last frame would look fresh after every
    restart, defeating ``max_age``, and repeat in timelapses.
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
        self._newest: dict[str, Frame | None] = {}
        self.dropped = 0
        self.rejected = 0
        self.stored = 0
        self.repeated = 0
        """Frames identical to the camera's newest stored one (not stored again)."""
        self.retained_ignored = 0
        """Retained frames of unknown age, not stored."""

    def offer(self, camera: str, payload: bytes, at: datetime, *, retained: bool = False) -> bool:
        """Queue a frame without blocking; False (and counted) when it was refused.

        ``retained``: the broker kept it from before we subscribed (see the class)."""
        payload = maybe_base64(payload)
        if sniff_image(payload) is None:
            self.rejected += 1
            self._rate_log.warning(
                f"reject:{camera}", "camera %s: payload is not a JPEG or PNG", camera
            )
            return False
        try:
            self._queue.put_nowait(_Job(camera, payload, at, retained))
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
        while (job := self._queue.get()) is not None:
            # here, with the first frame: the MQTT side never decodes images, and a
            # gateway without cameras never loads Pillow
            from PIL import Image

            try:
                frame = self._take(job)
            except (OSError, ValueError, Image.DecompressionBombError) as exc:
                self.rejected += 1
                self._rate_log.warning(
                    f"store:{job.camera}", "camera %s: frame not stored: %s", job.camera, exc
                )
                continue
            if frame is not None:
                self._state.set_frame(frame)

    def _take(self, job: _Job) -> Frame | None:
        """The frame ``job`` makes the camera's latest (stored if new), or None."""
        newest = self.newest_stored(job.camera)
        if newest is not None and not newest.path.exists():
            newest = None  # removed by retention (max_age): nothing to compare with
        digest = hashlib.sha256(job.payload).hexdigest()
        if newest is not None and newest.sha256 == digest:
            self.repeated += 1
            return newest
        if job.retained:
            self.retained_ignored += 1
            self._rate_log.log(
                logging.INFO,
                f"retained:{job.camera}",
                "camera %s: ignored a retained frame of unknown age; waiting for a new one",
                job.camera,
            )
            return None
        return self.store(job.camera, job.payload, job.at, digest=digest)

    def newest_stored(self, camera: str) -> Frame | None:
        """The camera's newest frame on disk (read once after a start, then kept)."""
        with self._write_lock:
            if camera in self._newest:
                return self._newest[camera]
        files = [p for p in (self.folder / camera).glob("*") if frame_time(p) is not None]
        frame = None
        if files:
            path = max(files, key=lambda p: p.name)  # names sort by time
            frame = self._frame_of_file(camera, path)
        with self._write_lock:
            return self._newest.setdefault(camera, frame)

    @staticmethod
    def _frame_of_file(camera: str, path: Path) -> Frame | None:
        from PIL import Image, UnidentifiedImageError

        try:
            payload = path.read_bytes()
            with Image.open(io.BytesIO(payload)) as image:
                width, height = image.size
                mime = Image.MIME.get(image.format or "", "application/octet-stream")
        except (OSError, UnidentifiedImageError):
            return None  # unreadable or deleted meanwhile: treat the camera as new
        at = frame_time(path)
        assert at is not None
        digest = hashlib.sha256(payload).hexdigest()
        return Frame(camera, path, at, width, height, mime, digest)

    def store(
        self, camera: str, payload: bytes, at: datetime, *, digest: str | None = None
    ) -> Frame:
        """Validate and write one frame; returns its Frame record (``digest``: its
        sha256, when already known)."""
        kind = sniff_image(payload)
        if kind is None:
            raise ValueError("not a JPEG or PNG")
        mime, _suffix = kind
        from PIL import Image

        with Image.open(io.BytesIO(payload)) as image:  # reads the header only
            width, height = image.size
        return self.save(camera, payload, at, mime, width, height, digest=digest)

    def save(
        self,
        camera: str,
        payload: bytes,
        at: datetime,
        mime: str,
        width: int,
        height: int,
        *,
        digest: str | None = None,
    ) -> Frame:
        """Write an already validated image atomically as the camera's frame taken ``at``."""
        suffix = _SUFFIXES.get(mime, ".img")
        path = self.folder / camera / f"{frame_stem(at)}{suffix}"
        digest = digest or hashlib.sha256(payload).hexdigest()
        frame = Frame(camera, path, at, width, height, mime, digest)
        with self._write_lock:  # the frame writer and rule threads may both store frames
            atomic_write(path, payload)
            self.stored += 1
            self._prune(path.parent)
            newest = self._newest.get(camera)
            if newest is None or at >= newest.at:
                self._newest[camera] = frame
        return frame

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
