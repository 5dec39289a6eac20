"""A hostile or careless client on the gateway's broker, and the gateway's own echoes.

Real mosquitto (the session's broker), the real daemon in a subprocess.
"""

from __future__ import annotations

import signal
from pathlib import Path

from gateway.demo.broker import Broker
from tests.gwutil import archive_posts, base_config, publish, start_gateway, wait_until


def test_messages_the_gateway_published_itself_fire_no_rule(
    broker: Broker, tmp_path: Path
) -> None:
    state = tmp_path / "state"
    config = tmp_path / "gateway.toml"
    config.write_text(
        base_config(broker, state, name="echo-gw")
        + """
status_prefix = "echo-status"

[[rules]]
id = "self"
on_message = { topic = "echo-status/#" }
text = "heard myself: {{ event }}"
publish_to = ["archive"]

[[rules]]
id = "seen"
on_message = { topic = "echo-in/events" }
text = "seen {{ event }}"
publish_to = ["archive"]

[[publishers]]
id = "archive"
type = "file"
""",
        encoding="utf-8",
    )
    gateway = start_gateway(config)
    try:
        wait_until(lambda: (state / "gateway.db").exists())
        # The gateway's retained "online" and its heartbeats are on echo-status/echo-gw/.
        publish(broker, [("echo-in/events", "one")])
        wait_until(lambda: [p for p in archive_posts(state) if p["rule"] == "seen"], timeout=30)
        publish(broker, [("echo-in/events", "two")])
        wait_until(
            lambda: len([p for p in archive_posts(state) if p["rule"] == "seen"]) == 2, timeout=30
        )
    finally:
        gateway.send_signal(signal.SIGTERM)
        _out, err = gateway.communicate(timeout=30)
    rules = [p["rule"] for p in archive_posts(state)]
    assert rules == ["seen", "seen"], err
    assert "the gateway published it itself" in err
