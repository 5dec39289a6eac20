"""A hostile or careless client on the gateway's broker, and the gateway's own echoes.

Real mosquitto (the session's broker), the real daemon in a subprocess.
"""

from __future__ import annotations

import signal
import subprocess
import threading
import time
from pathlib import Path

import paho.mqtt.client as mqtt
import pytest
from paho.mqtt.enums import CallbackAPIVersion

from gateway.demo.broker import Broker
from tests.gwutil import archive_posts, base_config, cli, publish, start_gateway, wait_until


def test_messages_the_gateway_published_itself_fire_no_rule(broker: Broker, tmp_path: Path) -> None:
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
        # The gateway's retained "online" and its heartbeats are on echo-status/echo-gw/.
        def seen(n: int) -> bool:
            return len([p for p in archive_posts(state) if p["rule"] == "seen"]) >= n

        # Until the gateway has subscribed, a message is lost: send until one is seen.
        wait_until(lambda: publish(broker, [("echo-in/events", "one")]) or seen(1), 30, 0.5)
        publish(broker, [("echo-in/events", "two")])
        wait_until(lambda: any(p["text"] == "seen two" for p in archive_posts(state)), 30)
    finally:
        gateway.send_signal(signal.SIGTERM)
        _out, err = gateway.communicate(timeout=30)
    rules = {p["rule"] for p in archive_posts(state)}
    assert rules == {"seen"}, err
    assert "the gateway published it itself" in err


def retained(broker: Broker, topic: str, timeout: float = 2.0) -> bytes | None:
    """The retained message on ``topic`` now (None when there is none)."""
    got: list[bytes] = []
    done = threading.Event()
    client = mqtt.Client(CallbackAPIVersion.VERSION2)
    client.on_message = lambda c, u, m: (got.append(m.payload), done.set())
    client.connect(broker.host, broker.port)
    client.subscribe(topic, qos=1)
    client.loop_start()
    try:
        done.wait(timeout)
    finally:
        client.disconnect()
        client.loop_stop()
    return got[0] if got else None


def start_online(broker: Broker, tmp_path: Path, name: str) -> tuple[Path, subprocess.Popen[str]]:
    """Start a gateway with Home Assistant discovery; return once its status is online."""
    config = tmp_path / "gateway.toml"
    config.write_text(
        base_config(broker, tmp_path / "state", name=name)
        + f"""
status_prefix = "{name}-status"

[homeassistant]
enabled = true
discovery_prefix = "{name}-ha"

[[publishers]]
id = "console"
type = "console"
""",
        encoding="utf-8",
    )
    gateway = start_gateway(config)
    try:
        wait_until(lambda: retained(broker, f"{name}-status/{name}/status", 0.3) == b"online")
    except AssertionError:
        gateway.kill()
        raise
    return config, gateway


def test_a_retained_offline_or_deleted_discovery_config_is_put_back(
    broker: Broker, tmp_path: Path
) -> None:
    name = "guarded"
    status = f"{name}-status/{name}/status"
    discovery = f"{name}-ha/binary_sensor/{name}/online/config"
    _config, gateway = start_online(broker, tmp_path, name)
    try:
        original = wait_until(lambda: retained(broker, discovery, 0.3))
        publish(broker, [(status, "offline")], retain=True)  # a hostile client
        wait_until(lambda: retained(broker, status, 0.3) == b"online", timeout=10)
        publish(broker, [(discovery, "")], retain=True)  # deletes the entity
        assert wait_until(lambda: retained(broker, discovery, 0.3), timeout=10) == original
    finally:
        gateway.send_signal(signal.SIGTERM)
        _out, err = gateway.communicate(timeout=30)
    assert gateway.returncode == 0, err
    assert "was changed by another client" in err
    assert "was deleted by another client" in err
    # Stopping, the gateway writes its own offline, and leaves it.
    assert retained(broker, status) == b"offline"


def test_a_session_takeover_is_detected_and_shown_by_status(broker: Broker, tmp_path: Path) -> None:
    name = "stolen"
    config, gateway = start_online(broker, tmp_path, name)
    try:
        for _ in range(4):  # the thief connects with the gateway's predictable client id
            thief = mqtt.Client(CallbackAPIVersion.VERSION2, client_id=f"{name}-gw")
            thief.connect(broker.host, broker.port)
            thief.loop_start()
            time.sleep(0.5)
            thief.loop_stop()
            thief.disconnect()
            time.sleep(2.5)  # the gateway reconnects (and takes the session back)

        def shown() -> str | None:
            out = cli("status", "-c", str(config)).stdout
            return out if "SESSION TAKEN OVER" in out else None

        report = wait_until(shown, timeout=20, interval=0.5)
    finally:
        gateway.send_signal(signal.SIGTERM)
        _out, err = gateway.communicate(timeout=30)
    assert "another client uses the gateway's client id" in report
    assert "MQTT SESSION TAKEN OVER" in err
    assert err.count("MQTT SESSION TAKEN OVER") == 1  # loud, but once a minute


@pytest.mark.parametrize("persistent", [False, True])
def test_a_restart_does_not_mistake_its_own_last_offline_for_another_client(
    broker: Broker, tmp_path: Path, persistent: bool
) -> None:
    """The last run's own ``offline`` (retained, or queued for a persistent session)
    comes back at the next start before the new ``online``: that is not a hostile
    client, and a restart logs no warning about it."""
    name = "restarted" + ("p" if persistent else "")
    config, gateway = start_online(broker, tmp_path, name)
    if persistent:
        text = config.read_text(encoding="utf-8").replace(
            "persistent_session = false",
            f'persistent_session = true\nclient_id = "{name}-gw"',
        )
        config.write_text(text, encoding="utf-8")
    errs = []
    for _run in range(3):
        gateway.send_signal(signal.SIGTERM)
        _out, err = gateway.communicate(timeout=30)
        assert gateway.returncode == 0, err
        errs.append(err)
        gateway = start_gateway(config)
        status = f"{name}-status/{name}/status"
        wait_until(lambda: retained(broker, status, 0.3) == b"online")  # noqa: B023
        time.sleep(1)
    gateway.send_signal(signal.SIGTERM)
    _out, err = gateway.communicate(timeout=30)
    errs.append(err)
    assert not [e for e in errs if "another client" in e], errs
