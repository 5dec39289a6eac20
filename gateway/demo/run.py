"""``things-gateway demo``: a private broker, simulated devices and a gateway, in one process.

No account, broker or credential is needed.  The broker is mosquitto when it is
installed, else the embedded amqtt broker (``pip install 'things-gateway[demo]'``).
Both rules fire once as soon as the first readings are in, then on their schedule.
"""

from __future__ import annotations

import logging
import signal
import sys
import threading
import time
from datetime import UTC, datetime
from importlib import resources
from pathlib import Path
from types import FrameType
from typing import Literal

from gateway.config import GatewayConfig, read_toml
from gateway.demo.broker import BrokerStartError, BrokerUnavailable, start_broker
from gateway.outbox.store import Outbox
from gateway.publishers.file import ARCHIVE_NAME, read_archive_ids
from gateway.runtime.app import Gateway
from gateway.runtime.loading import validate_config
from gateway.runtime.logs import setup_logging
from gateway.runtime.paths import DB_NAME
from gateway.runtime.web import WebServer

log = logging.getLogger(__name__)

WARM_UP_SECONDS = 3.0


def demo_config(port: int, state_dir: Path) -> GatewayConfig:
    """The packaged demo config, pointed at ``port`` and ``state_dir``."""
    with resources.as_file(resources.files("gateway.demo") / "demo.toml") as path:
        data = read_toml(path)
    data["mqtt"]["port"] = port
    data["gateway"]["state_dir"] = str(state_dir)
    return validate_config(data)


def run_demo(
    duration: float | None, state_dir: Path, broker: Literal["auto", "mosquitto", "amqtt"] = "auto"
) -> int:
    """Run the demo until Ctrl-C (or ``duration`` seconds); returns an exit code."""
    from devices.simulate import Simulator

    setup_logging("info")
    stop = stop_event_on_signals()
    try:
        handle = start_broker(prefer=broker)
    except (BrokerUnavailable, BrokerStartError) as exc:
        print(f"things-gateway demo: {exc}", file=sys.stderr)
        return 1
    deadline = None if duration is None else time.monotonic() + duration
    started = datetime.now(UTC)
    with handle:
        config = demo_config(handle.port, state_dir)
        gateway = Gateway(config)
        web = start_web(config, gateway)
        print(f"things-gateway demo: its page is at {web.url}", flush=True)
        log.info("demo broker: %s on %s:%d", handle.kind, handle.host, handle.port)
        simulator = Simulator(
            handle.host, handle.port, prefix="demo", interval=2.0, camera_interval=5.0
        )
        gateway.start()
        # Subscribed before the camera's first frame: a retained frame the broker hands
        # over on subscribe is of unknown age and not taken (gateway/media/frames.py).
        gateway.ingest.ready.wait(_remaining(deadline, 10.0))
        simulator.start()
        try:
            if not stop.wait(_remaining(deadline, WARM_UP_SECONDS)):
                for rule in gateway.config.rules:
                    gateway.fire(rule.id)
                stop.wait(_remaining(deadline, None))
        finally:
            simulator.stop()
            gateway.stop()
            web.stop()
    return report_archive(gateway.state_dir, since=started)


def start_web(config: GatewayConfig, gateway: Gateway) -> WebServer:
    """The demo's page on 127.0.0.1:8080, or on a free port when 8080 is taken."""
    try:
        web = WebServer(config, gateway=gateway)
    except OSError:
        web = WebServer(config, ("127.0.0.1", 0), gateway=gateway)
    web.start_thread()
    return web


def report_archive(state_dir: Path, since: datetime) -> int:
    """Say whether every post the console showed since ``since`` reached the archive.

    Returns the demo's exit code: 1 when a post is missing, so a broken archive is
    never reported as a success.
    """
    archive = state_dir / "posts" / ARCHIVE_NAME
    outbox = Outbox(state_dir / DB_NAME)
    try:
        history = outbox.history(limit=1_000_000)
    finally:
        outbox.close()
    shown = [
        p
        for p in reversed(history)
        if datetime.fromisoformat(p["created_at"]) >= since
        and p["deliveries"].get("console", {}).get("status") == "sent"
    ]
    archived = set(read_archive_ids(archive))
    missing = [p for p in shown if p["id"] not in archived]
    if not missing:
        print(
            f"\ndemo stopped; all {len(shown)} posts shown are archived in {archive}",
            file=sys.stderr,
        )
        return 0
    print(
        f"\ndemo stopped; {len(missing)} of the {len(shown)} posts shown are missing "
        f"from {archive}:",
        file=sys.stderr,
    )
    for post in missing:
        error = post["deliveries"].get("archive", {}).get("last_error") or "not delivered yet"
        print(f"  {post['id']} ({post['rule']}): {error}", file=sys.stderr)
    return 1


def stop_event_on_signals() -> threading.Event:
    """An event set by SIGTERM or SIGINT (Ctrl-C)."""
    stop = threading.Event()

    def handler(signum: int, frame: FrameType | None) -> None:
        stop.set()

    signal.signal(signal.SIGTERM, handler)
    signal.signal(signal.SIGINT, handler)
    return stop


def _remaining(deadline: float | None, cap: float | None) -> float | None:
    if deadline is None:
        return cap
    left = max(0.0, deadline - time.monotonic())
    return left if cap is None else min(left, cap)
