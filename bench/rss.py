"""Memory of the running gateway with every backend configured, next to a baseline.

Run from the repository: ``python bench/rss.py [--posts N]``.  In the same run it
starts a private mosquitto and local fakes of every HTTP service (the test suite's
fakes), then runs the gateway as a subprocess twice:

- baseline: ``console`` + ``file`` only;
- all: console, file, webhook, mastodon, bluesky, x, mqtt (and apprise when installed);
- all-but-apprise, when apprise is installed (it loads every Apprise plugin: ~20 MiB).

Each run posts every second until ``--posts`` posts were delivered to every
publisher, then VmHWM (peak RSS) and VmRSS are read from ``/proc/<pid>/status``.
"""

from __future__ import annotations

import argparse
import importlib.util
import signal
import sqlite3
import subprocess
import sys
import tempfile
import time
from contextlib import ExitStack
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from gateway.demo.broker import Broker, start_broker
from tests.fakes import backends


def toml_value(value: Any) -> str:
    """A TOML literal for a str, number or list of str."""
    if isinstance(value, str):
        return f'"{value}"'
    if isinstance(value, list):
        return "[" + ", ".join(toml_value(v) for v in value) + "]"
    return str(value)


def config_text(state: Path, broker: Broker, publishers: list[dict[str, Any]]) -> str:
    """A gateway config posting every second to every given publisher."""
    ids = [p["id"] for p in publishers]
    text = f"""
[gateway]
name = "rssbench"
state_dir = "{state}"
log_level = "warning"

[mqtt]
host = "{broker.host}"
port = {broker.port}
persistent_session = false

[[rules]]
id = "tick"
every = "1s"
text = "Water 24.5 °C at {{{{ now | time('%H:%M:%S') }}}} #bench https://example.org/pool"
publish_to = {toml_value(ids)}
"""
    for entry in publishers:
        text += "\n[[publishers]]\n" + "".join(f"{k} = {toml_value(v)}\n" for k, v in entry.items())
    return text


def sent_posts(db: Path, publishers: int) -> int:
    """Posts delivered to every publisher so far."""
    try:
        with sqlite3.connect(db) as conn:
            row = conn.execute(
                "SELECT COUNT(*) FROM (SELECT post_id FROM deliveries WHERE status='sent'"
                " GROUP BY post_id HAVING COUNT(*) = ?)",
                (publishers,),
            ).fetchone()
            return int(row[0])
    except sqlite3.Error:
        return 0


def proc_memory(pid: int) -> dict[str, int]:
    """VmHWM and VmRSS of a process, in kB."""
    fields = {}
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        name, _, value = line.partition(":")
        if name in ("VmHWM", "VmRSS"):
            fields[name] = int(value.split()[0])
    return fields


def measure(
    name: str, workdir: Path, broker: Broker, publishers: list[dict[str, Any]], posts: int
) -> dict[str, int]:
    """Run the gateway until ``posts`` posts reached every publisher; its memory then."""
    state = workdir / name
    config = workdir / f"{name}.toml"
    config.write_text(config_text(state, broker, publishers), encoding="utf-8")
    process = subprocess.Popen(
        [sys.executable, "-m", "gateway", "run", "-c", str(config)],
        stdout=subprocess.DEVNULL,
        stderr=(workdir / f"{name}.log").open("wb"),
    )
    try:
        deadline = time.monotonic() + 60 + 2 * posts
        while sent_posts(state / "gateway.db", len(publishers)) < posts:
            if process.poll() is not None or time.monotonic() > deadline:
                log = (workdir / f"{name}.log").read_text(errors="replace")[-2000:]
                raise SystemExit(f"{name}: gateway did not deliver {posts} posts:\n{log}")
            time.sleep(0.2)
        return proc_memory(process.pid)
    finally:
        process.send_signal(signal.SIGTERM)
        process.wait(30)


def all_publishers(stack: ExitStack) -> list[dict[str, Any]]:
    """Every backend, each pointing at a fake started on ``stack``."""
    entries: list[dict[str, Any]] = [
        {"id": "console", "type": "console"},
        {"id": "archive", "type": "file"},
        {"id": "bus", "type": "mqtt", "topic": "bench/{rule}/post"},
    ]
    table = list(backends.HTTP_BACKENDS)
    if importlib.util.find_spec("apprise") is None:
        table = [b for b in table if b.type != "apprise"]
    for backend in table:
        fake = stack.enter_context(backend.make_fake())
        entries.append({"id": backend.type, **backend.config(fake)})
    return entries


def main() -> None:
    """Measure the baseline and the all-backends gateway; print both."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--posts", type=int, default=5, help="posts to deliver before measuring")
    args = parser.parse_args()
    with ExitStack() as stack, tempfile.TemporaryDirectory() as tmp:
        broker = stack.enter_context(start_broker(prefer="mosquitto"))
        workdir = Path(tmp)
        baseline = [{"id": "console", "type": "console"}, {"id": "archive", "type": "file"}]
        everything = all_publishers(stack)
        runs = {"baseline": baseline, "all": everything}
        if any(p["type"] == "apprise" for p in everything):
            runs["all-but-apprise"] = [p for p in everything if p["type"] != "apprise"]
        results = {
            f"{name} ({', '.join(p['type'] for p in publishers)})": measure(
                name, workdir, broker, publishers, args.posts
            )
            for name, publishers in runs.items()
        }
    print(
        f"gateway memory after {args.posts} posts delivered to every publisher "
        f"(Python {sys.version.split()[0]}):"
    )
    for name, mem in results.items():
        print(f"  {name}: VmHWM {mem['VmHWM'] / 1024:.1f} MiB, VmRSS {mem['VmRSS'] / 1024:.1f} MiB")
    base, full, *_ = results.values()
    print(
        f"  difference: VmHWM +{(full['VmHWM'] - base['VmHWM']) / 1024:.1f} MiB, "
        f"VmRSS +{(full['VmRSS'] - base['VmRSS']) / 1024:.1f} MiB"
    )


if __name__ == "__main__":
    main()
