"""The broker's dropped-message counter ($SYS) reaches the log and `things-gateway status`."""

from __future__ import annotations

import signal
import threading
from collections.abc import Callable
from pathlib import Path

import paho.mqtt.client as mqtt
from paho.mqtt.enums import CallbackAPIVersion

from gateway.demo.broker import Broker
from tests.gwutil import base_config, cli, publish, start_gateway, wait_until


def _away_session(broker: Broker, topic: str) -> None:
    """A persistent QoS 1 subscriber that then goes away: its queue holds 5 at most."""
    client = mqtt.Client(CallbackAPIVersion.VERSION2, client_id="away", clean_session=False)
    subscribed = threading.Event()
    client.on_subscribe = lambda *_a: subscribed.set()
    client.connect(broker.host, broker.port)
    client.loop_start()
    client.subscribe(topic, qos=1)
    assert subscribed.wait(10)
    client.disconnect()
    client.loop_stop()


def test_status_shows_messages_the_broker_dropped(
    broker_factory: Callable[..., Broker], tmp_path: Path
) -> None:
    broker = broker_factory(
        prefer="mosquitto", extra_config=["sys_interval 1", "max_queued_messages 5"]
    )
    config = tmp_path / "gateway.toml"
    config.write_text(
        base_config(broker, tmp_path / "state", name="dropped")
        + """
[health]
interval = "1s"

[[sensors]]
id = "t"
topic = "dropped/t"

[[publishers]]
id = "console"
type = "console"
""",
        encoding="utf-8",
    )
    gateway = start_gateway(config)
    try:
        _away_session(broker, "flood/#")
        publish(broker, [(f"flood/{i}", str(i)) for i in range(50)])  # 45 over its queue

        def shown() -> str | None:
            out = cli("status", "-c", str(config)).stdout
            return out if "BROKER DROPPED" in out else None

        report = wait_until(shown, timeout=20, interval=0.5)
    finally:
        gateway.send_signal(signal.SIGTERM)
        _out, err = gateway.communicate(timeout=30)
    line = next(x for x in report.splitlines() if "BROKER DROPPED" in x)
    assert int(line.split()[2]) >= 45
    assert "config/mosquitto.conf" in line
    assert "the broker dropped" in err
