"""Each example config, fed by its simulator scenario, posts something carrying simulated values."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from devices.simulate import Simulator
from gateway.demo.broker import Broker
from gateway.runtime.app import Gateway
from gateway.runtime.loading import load_config
from tests.gwutil import archive_posts, wait_until

EXAMPLES = Path(__file__).resolve().parent.parent / "config" / "examples"

# scenario → (topic prefix in its example config, patterns every post of a rule must match)
CASES = {
    "pool": (
        "site",
        {
            "hourly_photo": r"water 2[3-7](\.\d+)? °C, air -?\d+(\.\d+)? °C",
            "morning": r"water is 2[3-7](\.\d+)? °C and the air -?\d+(\.\d+)? °C"
            r" at \d+(\.\d+)?% humidity",
            "daily": r"Now 2[3-7](\.\d+)? °C",
            "evening_questions": r"^0 people asked about the pool today\. The water is 2[3-7]",
        },
    ),
    "plant": (
        "home",
        {
            "how_am_i": r"(thirsty|fine): soil moisture \d+(\.\d+)?%",
            "daily": r"moisture \d+(\.\d+)?%, soil 1\d(\.\d+)? °C, pump (on|off)",
        },
    ),
    "bridge": (
        "river",
        {"bridge_watch": r"I'm (open for|closed; the last vessel through was) [A-Z][A-Za-z ]+"},
    ),
}


@pytest.mark.parametrize("scenario", sorted(CASES))
def test_example_config_posts_simulated_values(
    scenario: str, broker: Broker, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    prefix, patterns = CASES[scenario]
    path = EXAMPLES / f"{scenario}.toml"
    for name in set(re.findall(r"\$\{([A-Za-z_][A-Za-z0-9_]*)\}", path.read_text())):
        monkeypatch.setenv(name, "s3cret")  # secrets of publishers left disabled in the example
    config = load_config(
        path,
        overrides={
            "gateway": {"state_dir": str(tmp_path)},
            "mqtt": {"host": broker.host, "port": broker.port},
        },
    )
    gateway = Gateway(config)
    sim = Simulator(
        broker.host, broker.port, prefix=prefix, interval=0.2, camera_interval=0.5,
        seed=1, scenario=scenario,
    )  # fmt: skip
    gateway.start()
    sim.start()
    try:
        sensors = [s.id for s in config.sensors]
        wait_until(lambda: all(gateway.state.get(s) for s in sensors), timeout=20)
        cameras = [c.id for c in config.cameras]
        wait_until(lambda: all(gateway.state.latest_frame(c) for c in cameras), timeout=20)
        for rule in config.rules:
            assert gateway.fire(rule.id) is not None
        posts = wait_until(
            lambda: (p := archive_posts(tmp_path)) and len(p) == len(config.rules) and p,
            timeout=20,
        )
    finally:
        sim.stop()
        gateway.stop()
    by_rule = {post["rule"]: post for post in posts}
    assert set(by_rule) == set(patterns)
    for rule, pattern in patterns.items():
        text = by_rule[rule]["text"]
        assert re.search(pattern, text), (rule, text)
        assert "n/a" not in text
    for rule in config.rules:
        # Photos and charts always; a timelapse only once the camera has sent two frames.
        media = by_rule[rule.id]["media"]
        expected = len(rule.images) + len(rule.charts)
        assert expected <= len(media) <= expected + (rule.timelapse is not None)
        assert all(item["alt"] for item in media)
