"""Run the installed daemon under a memory cap (a cgroup v1 memory group), as systemd's
``MemoryMax=256M`` would, and watch what one camera frame costs it.

Used by ``tests/test_frame_memory.py`` and ``bench/frames.py``.  Needs root and the
v1 memory controller at ``/sys/fs/cgroup/memory``; :func:`cgroup_unavailable` says
why not when they are missing, so callers can skip with that reason.
"""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import time
import uuid
from dataclasses import dataclass
from pathlib import Path

from gateway.demo.broker import Broker
from tests.gwutil import archive_posts, base_config, publish

CGROUP_ROOT = Path("/sys/fs/cgroup/memory")
MIB = 1024 * 1024


def cgroup_unavailable() -> str | None:
    """Why a memory cgroup cannot be made here, or None when it can."""
    if not (CGROUP_ROOT / "memory.limit_in_bytes").exists():
        return "no cgroup v1 memory controller at /sys/fs/cgroup/memory"
    probe = CGROUP_ROOT / f"tg-probe-{uuid.uuid4().hex[:8]}"
    try:
        probe.mkdir()
    except OSError as exc:
        return f"cannot create a memory cgroup ({exc.strerror}; needs root)"
    probe.rmdir()
    return None


class MemoryCgroup:
    """A v1 memory cgroup with a hard limit (swap included when swap accounting exists)."""

    def __init__(self, limit_bytes: int) -> None:
        """Create the group; :meth:`remove` deletes it."""
        self.path = CGROUP_ROOT / f"things-gateway-test-{uuid.uuid4().hex[:8]}"
        self.path.mkdir()
        (self.path / "memory.limit_in_bytes").write_text(str(limit_bytes))
        memsw = self.path / "memory.memsw.limit_in_bytes"
        if memsw.exists():
            memsw.write_text(str(limit_bytes))

    def enter(self) -> None:
        """Move the calling process into the group (a ``preexec_fn``)."""
        (self.path / "cgroup.procs").write_text(str(os.getpid()))

    def peak(self) -> int:
        """The group's peak usage (page cache included) in bytes."""
        return int((self.path / "memory.max_usage_in_bytes").read_text())

    def oom_kills(self) -> int:
        """OOM kills in the group so far (0 on kernels that do not count them)."""
        for line in (self.path / "memory.oom_control").read_text().splitlines():
            key, _, value = line.partition(" ")
            if key == "oom_kill":
                return int(value)
        return 0

    def remove(self) -> None:
        """Delete the group (its processes must have ended)."""
        for _ in range(50):
            try:
                self.path.rmdir()
                return
            except OSError:
                time.sleep(0.1)


def daemon_command() -> list[str]:
    """``things-gateway run`` as installed next to this Python (the console script)."""
    script = Path(sys.executable).with_name("things-gateway")
    return [str(script)] if script.exists() else [sys.executable, "-m", "gateway"]


def frame_config(broker: Broker, state_dir: Path) -> str:
    """A daemon config: one MQTT camera, one rule posting its captioned frame to a file."""
    return (
        base_config(broker, state_dir, name="framemem")
        + """max_payload_bytes = 67108864

[[cameras]]
id = "cam"
topic = "framemem/cam"
max_age = "1h"

[[rules]]
id = "photo"
every = "2s"
text = "Frame at {{ now | time }}"
images = [{ camera = "cam", caption = "Pool 21.5 °C", alt = "The camera" }]
publish_to = ["archive"]

[[publishers]]
id = "archive"
type = "file"
"""
    )


@dataclass
class FrameRun:
    """What one daemon run with one frame did."""

    posts: int
    """Posts archived."""
    with_image: int
    """Of those, posts that carried the frame."""
    alive: bool
    """The daemon was still running at the end."""
    peak_rss: int
    """The daemon's VmHWM, bytes (0 when it died first)."""
    rss_after: int
    """The daemon's VmRSS after the last post, bytes (0 when it died first)."""
    cgroup_peak: int
    """The cgroup's peak usage, bytes (page cache included; 0 without a cgroup)."""
    oom_kills: int
    seconds: float
    """From the frame's arrival to the first post archived (or the end)."""
    stderr: str


def _vm(pid: int, field: str) -> int:
    try:
        status = Path(f"/proc/{pid}/status").read_text()
    except OSError:
        return 0
    for line in status.splitlines():
        if line.startswith(f"{field}:"):
            return int(line.split()[1]) * 1024
    return 0


def run_daemon_with_frame(
    broker: Broker,
    workdir: Path,
    frame: bytes,
    *,
    limit_bytes: int | None,
    posts: int = 3,
    timeout: float = 120.0,
) -> FrameRun:
    """Start the daemon (capped at ``limit_bytes`` when given), send ``frame`` retained to
    its camera, and wait for ``posts`` posts (or the daemon's death, or ``timeout``)."""
    state = workdir / "state"
    shutil.rmtree(state, ignore_errors=True)
    state.mkdir(parents=True)
    config = workdir / "gateway.toml"
    config.write_text(frame_config(broker, state))
    topic = "framemem/cam"
    group = MemoryCgroup(limit_bytes) if limit_bytes else None
    log = workdir / "daemon.log"
    with log.open("w") as stderr_file:
        proc = subprocess.Popen(
            [*daemon_command(), "run", "-c", str(config)],
            stdout=subprocess.DEVNULL,
            stderr=stderr_file,
            preexec_fn=group.enter if group else None,
        )
    try:
        time.sleep(1.0)  # connected and subscribed before the frame comes
        started = time.monotonic()
        publish(broker, [(topic, frame)], retain=True)
        first = 0.0
        records: list[dict[str, object]] = []
        while time.monotonic() - started < timeout and proc.poll() is None:
            records = archive_posts(state)
            if records and not first:
                first = time.monotonic() - started
            if len(records) >= posts:
                break
            time.sleep(0.2)
        alive = proc.poll() is None
        peak = _vm(proc.pid, "VmHWM") if alive else 0
        rss_after = _vm(proc.pid, "VmRSS") if alive else 0
        records = archive_posts(state)
        with_image = sum(1 for r in records if r.get("media"))
    finally:
        if proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
        stderr = log.read_text(errors="replace")
        publish(broker, [(topic, b"")], retain=True)  # clear the retained frame
        cgroup_peak = group.peak() if group else 0
        kills = group.oom_kills() if group else 0
        if group:
            group.remove()
    return FrameRun(
        posts=len(records),
        with_image=with_image,
        alive=alive,
        peak_rss=peak,
        rss_after=rss_after,
        cgroup_peak=cgroup_peak,
        oom_kills=kills,
        seconds=first or timeout,
        stderr=stderr[-3000:],
    )
