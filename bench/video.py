"""Wall time and peak RSS of encoding an H.264 MP4 with the gateway (PyAV) beside the ffmpeg CLI.

Run from the repository: ``python bench/video.py [--runs 5]`` (needs ``ffmpeg`` on the
PATH: ``apt-get install ffmpeg``).  Two jobs, each on the same JPEG files on disk:
a 48-frame 1080p timelapse (1920x1080 camera-like frames at 8 fps) and a 10 s 720p
clip (250 frames of 1280x720 at 25 fps).  Each encode runs in a fresh process: the
daemon's video worker, ``python -m gateway.media.videoworker`` under the default
``[media] video_memory`` bound, running ``encode_frames`` (frames decoded and
streamed through libx264 one at a time), exactly as the daemon starts it; and, as the
same-run baseline, ``ffmpeg -framerate N -i
frame-%04d.jpg`` with the same settings (libx264, preset veryfast, crf 23,
``x264-params rc-lookahead=4:bframes=1``, yuv420p, ``+faststart``, no audio).
Printed per job and encoder, as median (range) of ``--runs`` runs: the wall time of
the process and its peak RSS (``ru_maxrss``), and for the gateway its peak above an
idle process that imported the same modules (the memory the encode itself needs);
the ratio to ffmpeg's median time closes each job.
"""

from __future__ import annotations

import argparse
import os
import pickle
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from gateway.config.sections import MediaSection
from gateway.media.video import X264_PARAMS, VideoInfo
from tests.mediautil import camera_jpeg

ROOT = Path(__file__).resolve().parent.parent
CRF = 23
PRESET = "veryfast"


@dataclass(frozen=True)
class Job:
    """One encode: ``frames`` JPEGs of ``size`` played at ``fps``."""

    name: str
    size: tuple[int, int]
    frames: int
    fps: int


JOBS = (
    Job("48-frame 1080p timelapse", (1920, 1080), 48, 8),
    Job("10 s 720p clip", (1280, 720), 250, 25),
)

GATEWAY_IDLE = """
import av, PIL.Image
import gateway.media.video
"""


def measured(argv: list[str], stdin: bytes | None = None) -> tuple[float, int, bytes]:
    """Run ``argv`` to completion, ``stdin`` written to it: (wall seconds, peak RSS in
    bytes, its output)."""
    start = time.perf_counter()
    process = subprocess.Popen(
        argv,
        stdin=subprocess.PIPE if stdin is not None else subprocess.DEVNULL,
        stdout=subprocess.PIPE,
        cwd=ROOT,
    )
    assert process.stdout is not None
    if stdin is not None:
        assert process.stdin is not None
        process.stdin.write(stdin)
        process.stdin.close()
    out = process.stdout.read()
    _, status, usage = os.wait4(process.pid, 0)
    elapsed = time.perf_counter() - start
    process.returncode = os.waitstatus_to_exitcode(status)
    if process.returncode != 0:
        raise SystemExit(f"{argv[0]} failed ({process.returncode})")
    return elapsed, usage.ru_maxrss * 1024, out


def worker_encode(folder: Path, job: Job, out: Path) -> tuple[float, int]:
    """The encode as the daemon runs it: ``python -m gateway.media.videoworker`` under
    the default ``[media] video_memory`` bound, the job on its stdin."""
    frames = sorted(folder.glob("frame-*.jpg"))
    kwargs = {"frames": frames, "dest": out, "fps": job.fps, "max_side": max(job.size), "crf": CRF}
    bound = MediaSection().video_memory
    argv = [sys.executable, "-m", "gateway.media.videoworker", str(bound)]
    elapsed, peak, answer = measured(argv, pickle.dumps(("encode_frames", kwargs, None)))
    if not isinstance(pickle.loads(answer), VideoInfo):
        raise SystemExit(f"the video worker failed: {pickle.loads(answer)}")
    return elapsed, peak


def write_frames(folder: Path, job: Job) -> None:
    """The job's frames as camera-like JPEGs (the same bytes for both encoders)."""
    base = camera_jpeg(job.size)
    from io import BytesIO

    from PIL import Image, ImageDraw

    with Image.open(BytesIO(base)) as im:
        scene = im.convert("RGB")
    for n in range(job.frames):
        frame = scene.copy()
        x = n * job.size[0] // job.frames
        ImageDraw.Draw(frame).ellipse((x, 100, x + 120, 220), fill=(255, 220, 0))
        frame.save(folder / f"frame-{n:04}.jpg", quality=85)


def ffmpeg_argv(folder: Path, job: Job, out: Path) -> list[str]:
    """The ffmpeg command line with the gateway's settings."""
    return [
        "ffmpeg", "-nostdin", "-y", "-loglevel", "error",
        "-framerate", str(job.fps), "-i", str(folder / "frame-%04d.jpg"),
        "-c:v", "libx264", "-preset", PRESET, "-crf", str(CRF), "-x264-params", X264_PARAMS,
        "-pix_fmt", "yuv420p",
        "-movflags", "+faststart", "-an", str(out),
    ]  # fmt: skip


def _stat(values: Sequence[float], scale: float, unit: str, digits: int = 2) -> str:
    scaled = [v / scale for v in values]
    median = statistics.median(scaled)
    return f"{median:8.{digits}f} {unit} ({min(scaled):.{digits}f}..{max(scaled):.{digits}f})"


def main() -> None:
    """Measure each job ``--runs`` times with both encoders and print a table."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=5)
    args = parser.parse_args()
    if shutil.which("ffmpeg") is None:
        raise SystemExit("ffmpeg is not installed (apt-get install ffmpeg)")
    print(__doc__.splitlines()[0])
    print(f"libx264 preset {PRESET}, crf {CRF}, {X264_PARAMS}, yuv420p, +faststart, no audio;"
          f" {args.runs} runs each; median (range); {os.cpu_count()} CPUs")  # fmt: skip
    mib = 1024 * 1024
    idle = [measured([sys.executable, "-c", GATEWAY_IDLE])[1] for _ in range(args.runs)]
    print(f"idle process with av + gateway.media.video imported: peak {_stat(idle, mib, 'MiB', 1)}")
    with tempfile.TemporaryDirectory() as tmp:
        for job in JOBS:
            folder = Path(tmp) / job.name.replace(" ", "-")
            folder.mkdir()
            write_frames(folder, job)
            ours: list[tuple[float, int]] = []
            theirs: list[tuple[float, int]] = []
            for run in range(args.runs):  # interleaved, so load changes hit both alike
                ours.append(worker_encode(folder, job, folder / f"gw-{run}.mp4"))
                ff = measured(ffmpeg_argv(folder, job, folder / f"ff-{run}.mp4"))
                theirs.append(ff[:2])
            sizes = [(folder / f"gw-{r}.mp4").stat().st_size for r in range(args.runs)]
            ff_sizes = [(folder / f"ff-{r}.mp4").stat().st_size for r in range(args.runs)]
            print(f"\n{job.name}: {job.frames} frames {job.size[0]}x{job.size[1]} at {job.fps} fps")
            for label, results, out_sizes in (
                ("gateway (PyAV)", ours, sizes),
                ("ffmpeg CLI    ", theirs, ff_sizes),
            ):
                times = [t for t, _ in results]
                peaks = [float(p) for _, p in results]
                print(
                    f"  {label} time {_stat(times, 1, 's')}  peak RSS {_stat(peaks, mib, 'MiB', 1)}"
                    f"  file {statistics.median(out_sizes) / 1024:.0f} KiB"
                )
            above = [p - statistics.median(idle) for _, p in ours]
            ratio = statistics.median(t for t, _ in ours) / statistics.median(t for t, _ in theirs)
            print(f"  gateway peak above idle {_stat(above, mib, 'MiB', 1)};"
                  f" time / ffmpeg's: {ratio:.2f}x")  # fmt: skip


if __name__ == "__main__":
    main()
