"""Video encoding in a child process with a memory bound.

An encode (libx264 and FFmpeg's decoders) is the one job of the daemon whose
memory grows with its input: a 4K stream, a timelapse of huge frames or a corrupt
file could take hundreds of megabytes, and on a 512 MB Pi the kernel's OOM killer
would then take the daemon with it.  So :func:`run` starts ``python -m
gateway.media.videoworker``, which limits its own address space (``RLIMIT_AS``)
before it imports PyAV, runs one function of :mod:`gateway.media.video` and
exits.  Running out of memory, being killed, or taking longer than ``timeout`` is
a :class:`~gateway.media.video.VideoError` in the daemon, which goes on; the
libraries' memory is returned to the system when the child exits.

The job goes to the child as a pickle on its stdin and the result comes back on
its stdout: both ends are this program (the child is our own interpreter with
our own code), so nothing from outside is ever unpickled.
"""

from __future__ import annotations

import errno
import logging
import os
import pickle
import resource
import signal
import subprocess
import sys
import time
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from gateway.media.video import VideoError, VideoInfo

if TYPE_CHECKING:
    from gateway.config import GatewayConfig

log = logging.getLogger(__name__)

JOBS = ("encode_frames", "record_stream", "record_picamera", "fit_video")
"""The functions of :mod:`gateway.media.video` a worker runs."""
MEMORY_ERROR_EXIT = 3
"""The worker's exit status when it ran out of its memory bound."""
THREAD_STACK = 2 * 1024 * 1024
"""The stack of each encoder thread in a bounded worker."""
MIN_MEMORY = 64 * 1024 * 1024
"""Below this the interpreter itself cannot start; smaller bounds are raised to it."""


def run(
    job: str,
    kwargs: Mapping[str, Any],
    *,
    max_memory: int | None,
    timeout: float,
    poster: Path | None = None,
) -> VideoInfo:
    """Run ``gateway.media.video.<job>(**kwargs)`` in a child process, and write the
    video's poster frame to ``poster`` there too.

    ``max_memory`` bounds the child's address space in bytes (None: unbounded);
    ``timeout`` its wall time in seconds.  Raises :class:`VideoError` when the job
    fails, the bound is hit, the child dies or the time runs out.
    """
    if job not in JOBS:
        raise ValueError(f"not a video job: {job}")
    argv = [sys.executable, "-m", "gateway.media.videoworker", str(max_memory or 0)]
    payload = pickle.dumps((job, dict(kwargs), poster))
    started = time.monotonic()
    with subprocess.Popen(
        argv,
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        env=_environment(),
    ) as child:
        try:
            out, err = child.communicate(payload, timeout=timeout)
        except subprocess.TimeoutExpired:
            child.kill()
            child.communicate()
            raise VideoError(f"the video worker took longer than {timeout:g} s") from None
    code = child.returncode
    for line in err.decode("utf-8", "replace").splitlines():
        if line.startswith(("WARNING ", "ERROR ")):
            log.warning("video worker: %s", line.split(" ", 1)[1])
    log.debug("video worker %s: exit %s in %.2f s", job, code, time.monotonic() - started)
    bound = f"{max_memory / 1e6:.0f} MB ([media] video_memory)" if max_memory else ""
    if code == 0:
        result = pickle.loads(out)  # noqa: S301 - written by our own child, see above
        if isinstance(result, VideoInfo):
            return result
        kind, message = result
        if kind == "crash" and bound:  # FFmpeg says "Generic error" when malloc fails
            message += f" (is the memory bound of {bound} too small?)"
        raise VideoError(message)
    if code == MEMORY_ERROR_EXIT:
        raise VideoError(f"the video needs more memory than {bound}")
    if code < 0:
        name = signal.Signals(-code).name
        raise VideoError(f"the video worker was killed ({name})")
    tail = err.decode("utf-8", "replace").strip().splitlines()[-1:] or ["no message"]
    raise VideoError(f"the video worker failed (exit {code}): {tail[0][:200]}")


@dataclass(frozen=True, slots=True)
class VideoWorker:
    """Where the daemon's videos are encoded: a child process per job, bounded by
    ``max_memory`` bytes (None: unbounded) and ``timeout`` seconds."""

    max_memory: int | None = 320_000_000
    timeout: float = 600.0

    @classmethod
    def from_config(cls, config: GatewayConfig) -> VideoWorker:
        """The bounds of ``[media] video_memory`` and ``video_timeout``."""
        media = config.media
        return cls(media.video_memory or None, media.video_timeout.total_seconds())

    def run(
        self, job: str, *, extra_time: float = 0.0, poster: Path | None = None, **kwargs: Any
    ) -> VideoInfo:
        """:func:`run` ``job`` within this worker's bounds (``extra_time`` seconds more:
        a recording's own length), writing the poster frame to ``poster`` if given."""
        timeout = self.timeout + extra_time
        return run(job, kwargs, max_memory=self.max_memory, timeout=timeout, poster=poster)


def _environment() -> dict[str, str]:
    env = dict(os.environ)
    # One malloc arena per thread reserves 64 MB of address space each; libx264's
    # threads would spend the bound on reservations they never touch.
    env.setdefault("MALLOC_ARENA_MAX", "2")
    return env


def _limit(max_memory: int) -> None:
    if max_memory > 0:
        bound = max(max_memory, MIN_MEMORY)
        resource.setrlimit(resource.RLIMIT_DATA, (bound, bound))
        # glibc sizes each new thread's stack by RLIMIT_STACK (8 MB by default),
        # reserved up front out of the bound; libx264's threads need far less.
        _, hard = resource.getrlimit(resource.RLIMIT_STACK)
        stack = THREAD_STACK if hard == resource.RLIM_INFINITY else min(THREAD_STACK, hard)
        resource.setrlimit(resource.RLIMIT_STACK, (stack, hard))


OOM_SCORE_ADJ = "1000"
"""The worker's ``oom_score_adj``: when the service's cgroup (the unit's ``MemoryMax``,
daemon and worker together) runs out, the kernel's OOM killer takes the worker, whose
death is one error, never the daemon (which a large encode would otherwise outweigh
only sometimes)."""


def _first_for_the_oom_killer() -> None:
    """Make this process the OOM killer's first choice (raising it needs no privilege)."""
    try:
        Path("/proc/self/oom_score_adj").write_text(OOM_SCORE_ADJ, encoding="ascii")
    except OSError as exc:  # no /proc (not Linux), or a read-only one
        log.debug("oom_score_adj left as it is: %s", exc.strerror)


def main(argv: list[str]) -> int:
    """The child: limit memory, read the job, run it, write the result."""
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(message)s")
    _first_for_the_oom_killer()
    try:
        _limit(int(argv[0]) if argv else 0)
    except OSError as exc:  # a seccomp filter without setrlimit (an older unit file)
        log.warning("the encode runs without its memory bound: setrlimit: %s", exc.strerror)
    try:
        job, kwargs, poster = pickle.loads(sys.stdin.buffer.read())  # noqa: S301 - our parent
        from gateway.media import video

        result: object = getattr(video, job)(**kwargs)
        if poster is not None:
            assert isinstance(result, VideoInfo)
            video.write_poster(result.path, poster)
    except MemoryError:
        return MEMORY_ERROR_EXIT
    except VideoError as exc:
        result = ("error", str(exc))
    except Exception as exc:  # every failure goes back as a message
        if getattr(exc, "errno", None) == errno.ENOMEM:
            return MEMORY_ERROR_EXIT
        result = ("crash", f"{type(exc).__name__}: {exc}")
    sys.stdout.buffer.write(pickle.dumps(result))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
