"""``things-gateway preview`` reads the readings history the daemon keeps, as the daemon does.

A real ``gateway.db`` written by :class:`HistoryStore`, a real ``state.json`` written by
:class:`SnapshotWriter`, then the CLI in a subprocess: its chart has a line and its
statistics have values.
"""

from __future__ import annotations

import re
from datetime import UTC, datetime, timedelta
from pathlib import Path

from PIL import Image

from gateway.media.charts import LINE_COLOR
from gateway.state.history import HistoryStore, HistoryWriter
from gateway.state.snapshot import SNAPSHOT_NAME, SnapshotWriter
from gateway.state.store import StateStore
from tests.gwutil import cli

TEXT = (
    "{{ water_temp }} min {{ water_temp.min_24h }} max {{ water_temp.max_24h }}"
    " mean {{ water_temp.mean_1h }} {{ water_temp.trend }} previous {{ water_temp.previous }}"
)
CONFIG = """
[gateway]
name = "pool"
state_dir = "{state}"

[[sensors]]
id = "water_temp"
topic = "pool/water"
unit = "°C"

[[rules]]
id = "daily"
every = "24h"
text = "{text}"
publish_to = ["archive"]

[[rules.charts]]
sensor = "water_temp"
window = "6h"
alt = "Water from {{{{ water_temp.min_24h }}}} to {{{{ water_temp.max_24h }}}}"

[[publishers]]
id = "archive"
type = "file"
"""


def write_daemon_state(state_dir: Path, now: datetime) -> None:
    """Three hours of readings, one a minute, rising 20.00 -> 23.58 °C: history and state.json."""
    state = StateStore(windows=(timedelta(hours=1), timedelta(hours=24)))
    for i in range(180):
        at = now - timedelta(minutes=180 - i)
        state.record("water_temp", round(20 + i * 0.02, 2), "°C", at, "pool/water")
    store = HistoryStore(state_dir / "gateway.db", state)
    HistoryWriter(state, store).flush(now, include_current=True)
    store.close()
    SnapshotWriter(state, state_dir / SNAPSHOT_NAME).save()


def plot_line_columns(path: Path) -> int:
    """How many columns of the plot band hold a pixel of the line's colour."""
    with Image.open(path) as im:
        rgb = im.convert("RGB")
    band = rgb.crop((0, int(rgb.height * 0.2), rgb.width, int(rgb.height * 0.86)))
    data = band.load()
    assert data is not None
    found = 0
    for x in range(band.width):
        for y in range(band.height):
            pixel = data[x, y]
            assert isinstance(pixel, tuple)
            if all(abs(a - b) < 40 for a, b in zip(pixel, LINE_COLOR, strict=False)):
                found += 1
                break
    return found


def test_preview_shows_history_charts_and_statistics(tmp_path: Path) -> None:
    state_dir = tmp_path / "state"
    state_dir.mkdir()
    write_daemon_state(state_dir, datetime.now(UTC))
    config = tmp_path / "gateway.toml"
    config.write_text(CONFIG.format(state=state_dir, text=TEXT), encoding="utf-8")

    result = cli("preview", "daily", "-c", str(config), "--out", str(tmp_path / "out"))

    assert result.returncode == 0, result.stderr
    assert "n/a" not in result.stdout
    text = result.stdout.splitlines()[1]
    # the latest value and the one before it, from state.json
    assert text.startswith("23.58 °C min 20 °C max 23.58 °C mean ")  # as sent
    assert re.search(r" mean 2[23]\.\d °C rising previous 23.56$", text), text
    image = re.search(r"image: (\S+) \(1200x675, \d+ bytes\) alt: (.*)", result.stdout)
    assert image is not None, result.stdout
    assert image.group(2) == "Water from 20 °C to 23.58 °C"
    # three of the chart's six hours have a line: about half the plot's width
    assert plot_line_columns(Path(image.group(1))) > 400


def test_preview_without_a_database_creates_none(tmp_path: Path) -> None:
    state_dir = tmp_path / "state"
    config = tmp_path / "gateway.toml"
    config.write_text(CONFIG.format(state=state_dir, text=TEXT), encoding="utf-8")
    result = cli("preview", "daily", "-c", str(config), "--out", str(tmp_path / "out"))
    assert result.returncode == 0, result.stderr
    assert "no readings history" in result.stderr
    assert not (state_dir / "gateway.db").exists()
