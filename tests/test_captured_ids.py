"""Sensor ids made from captured topic levels: bounded, distinct, never merged.

The real message handler (``MqttIngest.handle``) with a real StateStore; the
end-to-end case runs the daemon against the session's mosquitto.
"""

from __future__ import annotations

import json
import signal
import tomllib
from datetime import UTC, datetime
from pathlib import Path

import pytest

from gateway.demo.broker import Broker
from gateway.ingest.mqtt import MqttIngest
from gateway.ingest.topics import safe_id_part
from gateway.media.frames import FrameStore
from gateway.runtime.loading import validate_config
from gateway.state.store import StateStore
from tests.gwutil import archive_posts, base_config, publish, start_gateway, wait_until

AT = datetime(2026, 5, 1, 12, 0, tzinfo=UTC)

ROOMS = """
[[sensors]]
id = "room_{room}"
topic = "home/{room}/temperature"
unit = "°C"
max_instances = 1000
"""


def ingest(tmp_path: Path) -> tuple[MqttIngest, StateStore]:
    config = validate_config(
        tomllib.loads(f'[gateway]\nname = "ids"\nstate_dir = "{tmp_path}"\n{ROOMS}')
    )
    state = StateStore()
    frames = FrameStore(tmp_path / "frames", state)
    return MqttIngest(config, state, frames, lambda snap: None), state


def sensors(state: StateStore) -> dict[str, object]:
    return {sid: snap.value for sid, snap in state.sensors().items()}


def test_rooms_in_other_scripts_stay_distinct_sensors(tmp_path: Path) -> None:
    handler, state = ingest(tmp_path)
    handler.handle("home/кухня/temperature", b"21", AT)
    handler.handle("home/спальня/temperature", b"18", AT)
    handler.handle("home/küche/temperature", b"20", AT)
    handler.handle("home/厨房/temperature", b"22", AT)
    assert sensors(state) == {
        "room_кухня": 21.0,
        "room_спальня": 18.0,
        "room_küche": 20.0,
        "room_厨房": 22.0,
    }


def test_two_levels_giving_the_same_id_are_never_merged(tmp_path: Path) -> None:
    handler, state = ingest(tmp_path)
    handler.handle("home/living room/temperature", b"21", AT)
    handler.handle("home/living-room/temperature", b"35", AT)  # refused: it would merge
    handler.handle("home/living room/temperature", b"22", AT)
    assert sensors(state) == {"room_living_room": 22.0}
    assert handler.routes.refused_ids == 1


@pytest.mark.parametrize(
    "level",
    ["x" * 65, "ы" * 65_000, "***", "\u200b", ""],
    ids=["65-chars", "65000-chars", "punctuation-only", "zero-width-space", "empty"],
)
def test_captured_levels_too_long_or_empty_are_refused_and_counted(
    tmp_path: Path, level: str
) -> None:
    handler, state = ingest(tmp_path)
    handler.handle(f"home/{level}/temperature", b"21", AT)
    handler.handle(f"home/{level}/temperature", b"21", AT)
    handler.handle("home/hall/temperature", b"19", AT)
    assert sensors(state) == {"room_hall": 19.0}
    assert handler.routes.refused_ids == 2


def test_safe_id_part_keeps_letters_of_every_script() -> None:
    assert safe_id_part("living room") == "living_room"
    assert safe_id_part("Wohnzimmer (oben)") == "Wohnzimmer_oben"
    assert safe_id_part("кухня") == "кухня"
    assert safe_id_part("x" * 64) == "x" * 64
    assert safe_id_part("x" * 65) is None
    assert safe_id_part("-*-") is None


MARKER = """
[[rules]]
id = "sync"
on_message = { topic = "ids-marker" }
text = "sync {{ event }}"
publish_to = ["archive"]

[[publishers]]
id = "archive"
type = "file"
"""


def test_long_captured_levels_leave_the_state_files_small(broker: Broker, tmp_path: Path) -> None:
    """100 topics of 65,000-character levels made gateway.db 40 MB and state.json 6.5 MB."""
    state_dir = tmp_path / "state"
    config = tmp_path / "gateway.toml"
    config.write_text(
        base_config(broker, state_dir, name="ids-e2e")
        + ROOMS.replace("home/", "ids-e2e/")
        + MARKER,
        encoding="utf-8",
    )
    gateway = start_gateway(config)
    try:
        marker = [("ids-marker", "1")]
        # Until the gateway has subscribed, a message is lost: send until one is handled.
        wait_until(lambda: publish(broker, marker) or archive_posts(state_dir), 30, 0.5)
        messages = [(f"ids-e2e/{n:03d}{'y' * 65_000}/temperature", "21") for n in range(30)]
        # A marker of its own: one of the first ones may still be on its way.
        publish(broker, [*messages * 3, ("ids-e2e/hall/temperature", "19"), ("ids-marker", "2")])
        wait_until(lambda: any(p["text"] == "sync 2" for p in archive_posts(state_dir)), timeout=30)
    finally:
        gateway.send_signal(signal.SIGTERM)
        _out, err = gateway.communicate(timeout=30)
    assert gateway.returncode == 0, err
    saved = json.loads((state_dir / "state.json").read_text(encoding="utf-8"))
    assert list(saved["sensors"]) == ["room_hall"], err[-2000:]
    assert (state_dir / "state.json").stat().st_size < 10_000
    db_bytes = sum(f.stat().st_size for f in state_dir.glob("gateway.db*"))
    assert db_bytes < 1_000_000
    assert err.count("over 64 characters") == 1  # logged once a minute, not per message
