"""Peak memory and time of the installed daemon turning one camera frame into posts.

Run from the repository (as root, for the memory cap): ``python bench/frames.py
[--runs 3] [--no-cap]``.  In the same run it starts a private mosquitto and, for each
frame, starts ``things-gateway run`` (the installed console script, as users run
it) in a 256 MB memory cgroup (v1; ``--no-cap`` or no cgroup: unlimited), publishes
the frame retained to its camera topic and waits for two captioned posts to the file
archive.  Frames: a 640x480 JPEG (the baseline: the daemon with a small frame), a
12 MP and a 48 MP baseline JPEG, a 48 MP progressive JPEG and a 49 Mpx greyscale PNG
of tens of KB.  Printed per frame, as median and range of ``--runs`` runs: the
daemon's peak RSS (VmHWM), the cgroup's peak (page cache included), the RSS left
after the posts, and the time from publishing the frame to the first post archived;
beside the 256 MB budget.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
from collections.abc import Callable
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from gateway.demo.broker import start_broker
from tests.cgroup import MIB, FrameRun, cgroup_unavailable, run_daemon_with_frame
from tests.mediautil import camera_jpeg, flat_png

BUDGET = 256 * MIB

FRAMES: dict[str, Callable[[], bytes]] = {
    "baseline 640x480 JPEG": lambda: camera_jpeg((640, 480)),
    "12 MP JPEG (4000x3000)": lambda: camera_jpeg((4000, 3000)),
    "48 MP JPEG (8000x6000)": lambda: camera_jpeg((8000, 6000)),
    "48 MP progressive JPEG": lambda: camera_jpeg((8000, 6000), progressive=True),
    "49 Mpx PNG (7000x7000 L)": lambda: flat_png((7000, 7000)),
}


def _stat(values: list[float], scale: float, unit: str) -> str:
    scaled = [v / scale for v in values]
    return f"{statistics.median(scaled):7.1f} {unit} ({min(scaled):.1f}..{max(scaled):.1f})"


def main() -> None:
    """Measure every frame ``--runs`` times and print a table."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--no-cap", action="store_true", help="run without a memory cgroup")
    args = parser.parse_args()
    reason = None if args.no_cap else cgroup_unavailable()
    limit = None if args.no_cap or reason else BUDGET
    print(
        "Peak memory and time of the installed daemon (things-gateway run) posting one"
        " camera frame, captioned, to a file archive; same-run baseline: a 640x480 frame."
    )
    cap = "none (--no-cap)" if args.no_cap else f"none ({reason})" if reason else "256 MB"
    print(f"memory cap: {cap}; budget 256 MB; {args.runs} runs each; median (range)")
    with start_broker(prefer="mosquitto") as broker, tempfile.TemporaryDirectory() as tmp:
        for name, make in FRAMES.items():
            frame = make()
            runs: list[FrameRun] = [
                run_daemon_with_frame(broker, Path(tmp), frame, limit_bytes=limit, posts=2)
                for _ in range(args.runs)
            ]
            ok = [r for r in runs if r.alive and r.posts >= 2]
            images = sum(r.with_image for r in runs)
            print(f"\n{name}: {len(frame) / 1024:.0f} KiB")
            print(f"  daemon alive and posting: {len(ok)}/{len(runs)} runs; posts with the image:"
                  f" {images}/{sum(r.posts for r in runs)}; OOM kills: "
                  f"{sum(r.oom_kills for r in runs)}")  # fmt: skip
            if ok:
                print(f"  peak RSS      {_stat([r.peak_rss for r in ok], MIB, 'MiB')}"
                      f"   (budget {BUDGET // MIB} MiB)")  # fmt: skip
                if limit:
                    print(f"  cgroup peak   {_stat([r.cgroup_peak for r in ok], MIB, 'MiB')}")
                print(f"  RSS after     {_stat([r.rss_after for r in ok], MIB, 'MiB')}")
                print(f"  first post    {_stat([r.seconds for r in ok], 1, 's')}")
            for r in runs:
                if not r.alive:
                    print(f"  died: {r.stderr[-300:]!r}")


if __name__ == "__main__":
    main()
