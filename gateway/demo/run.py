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
from importlib import resources
from pathlib import Path
from types import FrameType
from typing import Literal

from gateway.config import GatewayConfig, read_toml
from gateway.demo.broker import BrokerStartError, BrokerUnavailable, start_broker
from gateway.runtime.app import Gateway
from gateway.runtime.loading import validate_config
from gateway.runtime.logs import setup_logging

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
    with handle:
        log.info("demo broker: %s on %s:%d", handle.kind, handle.host, handle.port)
        gateway = Gateway(demo_config(handle.port, state_dir))
        simulator = Simulator(
            handle.host, handle.port, prefix="demo", interval=2.0, camera_interval=5.0
        )
        gateway.start()
        simulator.start()
        try:
            if not stop.wait(_remaining(deadline, WARM_UP_SECONDS)):
                for rule in gateway.config.rules:
                    gateway.fire(rule.id)
                stop.wait(_remaining(deadline, None))
        finally:
            simulator.stop()
            gateway.stop()
    archive = state_dir / "posts" / "posts.jsonl"
    print(f"\ndemo stopped; posts archived in {archive}", file=sys.stderr)
    return 0


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
