"""Where ingest meets composition: template statistics come from the state's rolling windows."""

from __future__ import annotations

import tomllib
from datetime import UTC, datetime, timedelta
from pathlib import Path

from gateway.compose.composer import Composer
from gateway.runtime.loading import validate_config
from gateway.state.store import StateStore

CONFIG = """
[[sensors]]
id = "water"
topic = "pool/water"
unit = "°C"

[[rules]]
id = "stats"
every = "1h"
text = '''now {{ water }}, 24h {{ water.min_24h }}-{{ water.max_24h }}, \
1h mean {{ water.mean_1h | number(1) }}, {{ water.trend }} {{ water | arrow }}'''
publish_to = ["archive"]

[[publishers]]
id = "archive"
type = "file"
"""


def test_template_sees_rolling_statistics(tmp_path: Path) -> None:
    config = validate_config(tomllib.loads(CONFIG))
    state = StateStore(windows=config.state.windows)
    now = datetime(2026, 7, 1, 12, 0, tzinfo=UTC)
    # Ten hours ago it was cold; over the last hour it warmed from 20 to 26.
    readings = [(now - timedelta(hours=10), 12.0)] + [
        (now - timedelta(minutes=55 - 8 * i), 20.0 + i) for i in range(7)
    ]
    for at, value in readings:
        state.record("water", value, "°C", at, "pool/water")
    post = Composer(config, state, tmp_path).compose(config.rule("stats"), now)
    assert post.text == "now 26 °C, 24h 12 °C-26 °C, 1h mean 23.0, rising ↑"


def test_template_statistics_are_na_without_readings(tmp_path: Path) -> None:
    config = validate_config(tomllib.loads(CONFIG))
    state = StateStore(windows=config.state.windows)
    now = datetime(2026, 7, 1, 12, 0, tzinfo=UTC)
    state.record("water", 21.0, "°C", now - timedelta(minutes=1), "pool/water")
    post = Composer(config, state, tmp_path).compose(config.rule("stats"), now)
    assert post.text.startswith("now 21 °C, 24h 21 °C-21 °C, 1h mean 21.0")


def test_statistics_render_with_the_sensor_unit_and_precision(tmp_path: Path) -> None:
    ph = '\n[[sensors]]\nid = "ph"\ntopic = "p"\nprecision = 2\n'
    source = CONFIG.replace('unit = "°C"', 'unit = "°C"\n' + ph)
    source = source.replace(
        "text = '''", "text = '''{{ water.mean_1h }} {{ ph.mean_1h }} {{ ph.min_24h }}|"
    )
    config = validate_config(tomllib.loads(source))
    state = StateStore(windows=config.state.windows)
    now = datetime(2026, 7, 1, 12, 0, tzinfo=UTC)
    for i, (water, ph) in enumerate([(24.1, 7.214), (24.5, 7.3)]):
        state.record("water", water, "°C", now - timedelta(minutes=20 - i), "pool/water")
        state.record("ph", ph, "", now - timedelta(minutes=20 - i), "p")
    composer = Composer(config, state, tmp_path)
    text = composer.compose(config.rule("stats"), now).text
    assert text.partition("|")[0] == "24.3 °C 7.26 7.21"
    view = composer.context(config.rule("stats"), now)["water"]
    assert view.mean_1h > 24  # still a number for conditions and arithmetic
    assert round(view.mean_1h + 1, 1) == 25.3
