"""End to end with a real mosquitto: event rules in a gateway subprocess; preview."""

from __future__ import annotations

import json
import signal
import sqlite3
from pathlib import Path

from gateway.demo.broker import Broker
from tests.gwutil import base_config, cli, publish, start_gateway, wait_until


def rule_config(broker: Broker, state: Path, topic: str) -> str:
    name = "rules-" + topic.rsplit("/", 1)[-1]  # a client id no other test shares
    return (
        base_config(broker, state, name=name)
        + f"""
[[sensors]]
id = "water_temp"
topic = "{topic}/temp"
unit = "°C"

[[sensors]]
id = "marker"
topic = "{topic}/marker"
format = "text"

[[rules]]
id = "hot"
when = "water_temp > 30"
cooldown = "2s"
text = "Hot: {{{{ water_temp }}}}"
publish_to = ["archive"]

[[rules]]
id = "sync"
when = "changes(marker)"
text = "sync {{{{ marker }}}}"
publish_to = ["archive"]

[[rules]]
id = "person"
on_message = {{ topic = "{topic}/events", when = "event.type == 'new'" }}
text = "Seen: {{{{ event.after.label }}}}"
publish_to = ["archive"]

[[publishers]]
id = "archive"
type = "file"
"""
    )


def posts(state: Path, rule: str) -> list[str]:
    db = state / "gateway.db"
    if not db.exists():
        return []
    with sqlite3.connect(db) as conn:
        rows = conn.execute("SELECT text FROM posts WHERE rule=? ORDER BY id", (rule,))
        return [text for (text,) in rows]


def sync(broker: Broker, topic: str, state: Path, n: int) -> None:
    """Wait until the gateway has handled every message sent before this (in order)."""
    value = f"m{n}"

    def seen() -> bool:
        publish(broker, [(f"{topic}/marker", f"x{n}"), (f"{topic}/marker", value)])
        return f"sync {value}" in posts(state, "sync")

    wait_until(seen, timeout=30, interval=0.5)


def test_threshold_crossing_posts_once_then_again_after_clear_and_cooldown(
    broker: Broker, mqtt_topic: str, tmp_path: Path
) -> None:
    state = tmp_path / "state"
    config = tmp_path / "gateway.toml"
    config.write_text(rule_config(broker, state, mqtt_topic), encoding="utf-8")
    gateway = start_gateway(config)
    try:
        publish(broker, [(f"{mqtt_topic}/temp", "25")])
        sync(broker, mqtt_topic, state, 1)  # subscribed and processing
        publish(broker, [(f"{mqtt_topic}/temp", v) for v in ("29.5", "31", "32", "33.5")])
        wait_until(lambda: posts(state, "hot"), timeout=20)
        sync(broker, mqtt_topic, state, 2)  # the readings above 30 after the crossing are done
        after_first_crossing = posts(state, "hot")

        # Clear and recur until one recurrence falls after the 2 s cooldown.
        def second_post() -> bool:
            publish(broker, [(f"{mqtt_topic}/temp", "28"), (f"{mqtt_topic}/temp", "34")])
            return len(posts(state, "hot")) >= 2

        wait_until(second_post, timeout=30, interval=0.5)

        publish(
            broker,
            [
                (f"{mqtt_topic}/events", json.dumps({"type": "update", "after": {"label": "x"}})),
                (f"{mqtt_topic}/events", json.dumps({"type": "new", "after": {"label": "@cat"}})),
            ],
        )
        wait_until(lambda: posts(state, "person"), timeout=20)
    finally:
        gateway.send_signal(signal.SIGTERM)
        _out, err = gateway.communicate(timeout=20)
    assert gateway.returncode == 0, err
    assert after_first_crossing == ["Hot: 31 °C"], err
    assert posts(state, "hot") == ["Hot: 31 °C", "Hot: 34 °C"], err
    assert posts(state, "person") == ["Seen: @\u2060cat"], err

    # The daemon saved its last state at shutdown; preview renders from it.
    saved = json.loads((state / "state.json").read_text(encoding="utf-8"))
    assert saved["sensors"]["water_temp"]["value"] == 34.0
    preview = cli("preview", "hot", "-c", str(config))
    assert preview.returncode == 0, preview.stderr
    assert "Hot: 34 °C" in preview.stdout
    assert len(posts(state, "hot")) == 2  # preview posted nothing


def test_preview_event_rule_and_thread(tmp_path: Path) -> None:
    config = tmp_path / "gateway.toml"
    config.write_text(
        f"""
[gateway]
state_dir = "{tmp_path / "state"}"

[[sensors]]
id = "water_temp"
topic = "t"
unit = "°C"

[[rules]]
id = "person"
on_message = {{ topic = "frigate/events" }}
text = "Seen: {{{{ event.after.label }}}} while water is {{{{ water_temp }}}}"
publish_to = ["bsky"]

[[rules]]
id = "long"
every = "1h"
overflow = "thread"
text = "{{{{ 'The pool report. ' * 40 }}}}"
publish_to = ["bsky"]

[[publishers]]
id = "bsky"
type = "bluesky"
handle = "pool.example"
app_password = "not-used-by-preview"
""",
        encoding="utf-8",
    )
    event = tmp_path / "event.json"
    event.write_text(json.dumps({"after": {"label": "person"}}), encoding="utf-8")
    sample = tmp_path / "sample.json"
    sample.write_text(json.dumps({"water_temp": 21.5}), encoding="utf-8")

    result = cli(
        "preview", "person", "-c", str(config), "--event", str(event), "--sample", str(sample)
    )
    assert result.returncode == 0, result.stderr
    assert "Seen: person while water is 21.5 °C" in result.stdout
    missing = cli("preview", "person", "-c", str(config))
    assert missing.returncode == 2
    assert "--event FILE" in missing.stderr

    thread = cli("preview", "long", "-c", str(config))
    assert thread.returncode == 0, thread.stderr
    assert "part 1/" in thread.stdout
    assert not (tmp_path / "state" / "gateway.db").exists()  # preview stores nothing


def test_check_config_names_every_rule_error_by_path(tmp_path: Path) -> None:
    config = tmp_path / "bad.toml"
    config.write_text(
        """
[[sensors]]
id = "soil"
topic = "s"

[[rules]]
id = "ok"
every = "1h"
text = "fine"
publish_to = ["a"]

[[rules]]
id = "dry"
when = "soil < 20 and"
quiet_hours = "late"
text = "x"
publish_to = ["a"]

[[rules]]
id = "ev"
on_message = { topic = "e", when = "event.kind = 'x'" }
text = "{{ event.kind }}"
publish_to = ["a"]

[[publishers]]
id = "a"
type = "console"
""",
        encoding="utf-8",
    )
    result = cli("check-config", "-c", str(config))
    assert result.returncode == 78
    lines = [line.strip() for line in result.stderr.splitlines()]
    assert "rules[1].when: unexpected end of condition" in lines
    assert any(line.startswith("rules[1].quiet_hours: expected HH:MM-HH:MM") for line in lines)
    assert "rules[2].on_message.when: unexpected '=' at column 12" in lines
