"""End to end: a real mosquitto, the gateway as a subprocess, posts in the archive and history."""

from __future__ import annotations

import io
import json
import signal
import subprocess
import sys
from pathlib import Path

from PIL import Image

from devices.simulate import make_frame
from gateway.demo.broker import Broker
from tests.gwutil import archive_posts, base_config, cli, publish, start_gateway, wait_until


def test_gateway_posts_published_values(broker: Broker, mqtt_topic: str, tmp_path: Path) -> None:
    state = tmp_path / "state"
    config = tmp_path / "gateway.toml"
    config.write_text(
        base_config(broker, state)
        + f"""
[[sensors]]
id = "water_temp"
topic = "{mqtt_topic}/pool/temp"
unit = "°C"

[[sensors]]
id = "level"
topic = "{mqtt_topic}/+/SENSOR"
format = "json"
field = "Level.cm"
unit = "cm"

[[cameras]]
id = "cam"
topic = "{mqtt_topic}/cam"

[[rules]]
id = "status"
every = "1s"
text = "Water {{{{ water_temp }}}}, level {{{{ level }}}} #test"
images = [
  {{ camera = "cam", caption = "{{{{ water_temp }}}}", alt = "Pool at {{{{ now | time }}}}" }},
]
publish_to = ["archive", "console"]

[[publishers]]
id = "archive"
type = "file"

[[publishers]]
id = "console"
type = "console"
""",
        encoding="utf-8",
    )
    gateway = start_gateway(config)
    try:
        wait_until(lambda: (state / "gateway.db").exists(), timeout=10)

        # Keep publishing until the gateway (which subscribes asynchronously) has seen the values.
        def posted() -> dict[str, object] | None:
            publish(
                broker,
                [
                    (f"{mqtt_topic}/pool/temp", "27.25"),
                    (f"{mqtt_topic}/river/SENSOR", json.dumps({"Level": {"cm": 131.0}})),
                    (f"{mqtt_topic}/cam", make_frame_bytes()),
                ],
            )
            for post in archive_posts(state):
                if "27.25 °C" in post["text"] and "131 cm" in post["text"] and post["media"]:
                    return post
            return None

        post = wait_until(posted, timeout=30, interval=0.5)
    finally:
        gateway.send_signal(signal.SIGTERM)
        out, err = gateway.communicate(timeout=20)
    assert gateway.returncode == 0, err
    assert post["rule"] == "status"
    assert post["text"] == "Water 27.25 °C, level 131 cm #test"  # as sent
    assert "Water 27.25 °C" in out  # the console publisher printed it too
    (media,) = post["media"]
    image_path = state / "posts" / media["file"]
    with Image.open(image_path) as image:
        assert image.format == "JPEG"
        assert (image.width, image.height) == (media["width"], media["height"])
    assert media["bytes"] == image_path.stat().st_size
    assert media["alt"].startswith("Pool at ")

    history = cli("history", "--json", "-c", str(config))
    assert history.returncode == 0, history.stderr
    entries = json.loads(history.stdout)
    assert entries == sorted(entries, key=lambda e: e["id"], reverse=True)
    entry = next(e for e in entries if e["id"] == post["id"])
    assert entry["text"] == post["text"]
    assert set(entry["deliveries"]) == {"archive", "console"}
    for delivery in entry["deliveries"].values():
        assert delivery["status"] == "sent"
        assert delivery["attempts"] == 1
        assert delivery["last_error"] is None
    assert entry["deliveries"]["archive"]["remote_id"] == post["id"]

    text = cli("history", "--limit", "1", "-c", str(config))
    assert text.returncode == 0
    assert "archive: sent" in text.stdout


def make_frame_bytes() -> bytes:
    from datetime import UTC, datetime

    data = make_frame(datetime.now(UTC))
    Image.open(io.BytesIO(data)).verify()
    return data


def test_run_with_bad_config_exits_78(tmp_path: Path) -> None:
    config = tmp_path / "bad.toml"
    config.write_text("[mqtt]\nport = 'eleven'\n", encoding="utf-8")
    process = subprocess.run(
        [sys.executable, "-m", "gateway", "run", "-c", str(config)],
        capture_output=True,
        text=True,
        timeout=20,
    )
    assert process.returncode == 78
    assert "mqtt.port" in process.stderr
