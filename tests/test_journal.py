"""The readings journal: a run killed at any moment loses no counted reading and counts
none twice (real files, real SQLite, the daemon's own restore path)."""

from __future__ import annotations

import random
import sqlite3
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from gateway.config import GatewayConfig
from gateway.runtime.loading import load_config
from gateway.state.history import HistoryStore, HistoryWriter
from gateway.state.journal import ReadingJournal, journal_files
from gateway.state.snapshot import Restored, restore_state
from gateway.state.store import StateStore

HOUR = timedelta(hours=1)


def make_config(tmp_path: Path) -> GatewayConfig:
    path = tmp_path / "gateway.toml"
    path.write_text(
        f"""
[gateway]
name = "journal"
state_dir = "{tmp_path / "state"}"

[mqtt]
host = "127.0.0.1"

[[sensors]]
id = "temp"
topic = "j/temp"
unit = "°C"

[[sensors]]
id = "room_{{room}}"
topic = "j/{{room}}/t"

[[rules]]
id = "r"
every = "1h"
text = "{{{{ temp }}}}"
publish_to = ["archive"]

[[publishers]]
id = "archive"
type = "file"
path = "posts"
""",
        encoding="utf-8",
    )
    return load_config(path)


class Run:
    """One daemon run's state, history and journal, as the app wires them."""

    def __init__(self, config: GatewayConfig) -> None:
        self.dir = config.gateway.resolved_state_dir()
        self.dir.mkdir(parents=True, exist_ok=True)
        self.state = StateStore(windows=config.state.windows)
        self.history = HistoryStore(self.dir / "gateway.db", self.state)
        self.journal = ReadingJournal(self.dir)
        self.writer = HistoryWriter(self.state, self.history, journal=self.journal)
        self.restored: Restored = restore_state(config, self.state, self.history, datetime.now(UTC))
        self.journal.open(self.restored.mark)
        self.state.journal = self.journal

    def record(self, sensor: str, value: float, at: float) -> None:
        self.state.record(sensor, value, "°C", datetime.fromtimestamp(at, UTC))

    def totals(self, sensor: str) -> tuple[int, float, float, float]:
        """count, sum, min, max over stored history plus minutes still in memory."""
        points = self.history.history(
            sensor, datetime.now(UTC) - 2 * HOUR, datetime.now(UTC) + HOUR
        )
        count = sum(p.count for p in points)
        total = sum(p.mean * p.count for p in points)
        return count, total, min(p.min for p in points), max(p.max for p in points)


@pytest.mark.parametrize("seed", range(12))
def test_a_run_killed_at_any_moment_loses_no_reading_and_counts_none_twice(
    tmp_path: Path, seed: int
) -> None:
    """Readings over 40 minutes in three killed runs, with history flushes (and flushes
    cut off between the journal's turn and the commit) at random moments; each restart
    sees exactly the readings taken, in the history and in the 1-hour window."""
    rng = random.Random(seed)
    config = make_config(tmp_path)
    start = time.time() - 45 * 60
    taken: dict[str, list[float]] = {"temp": [], "room_hall": []}
    t = start
    for _run in range(3):
        run = Run(config)
        for _ in range(rng.randint(50, 400)):
            t += rng.uniform(0.5, 2.0)  # 40 minutes at most: all within the 1-hour window
            sensor = rng.choice(list(taken))
            value = round(rng.uniform(-5, 35), 2)
            run.record(sensor, value, t)
            taken[sensor].append(value)
            if rng.random() < 0.3:
                run.journal.write()  # the end of an MQTT batch
            roll = rng.random()
            if roll < 0.02:
                run.writer.flush(datetime.fromtimestamp(t, UTC))
            elif roll < 0.03:  # killed between the journal's turn and the commit
                run.journal.write()
                run.state.rotate_journal(run.journal, datetime.fromtimestamp(t, UTC))
                break
        run.journal.write()
        # killed: no stop, nothing more written; the files stay as they are
        run.history.close()

    run = Run(config)
    for sensor, values in taken.items():
        count, total, low, high = run.totals(sensor)
        assert count == len(values), sensor
        assert total == pytest.approx(sum(values))
        assert (low, high) == (min(values), max(values))
        stats = run.state.stats(sensor, "1h")
        assert stats is not None
        assert stats.count == len(values)  # all within the hour
        assert stats.mean == pytest.approx(sum(values) / len(values))
        assert (stats.min, stats.max) == (min(values), max(values))
    assert run.state.get("temp") is not None  # the latest value came back too
    run.writer.stop()  # a clean stop writes everything and leaves no journal
    assert journal_files(run.dir) == []
    stored = sqlite3.connect(run.dir / "gateway.db").execute(
        "SELECT sensor, SUM(count) FROM readings_minute GROUP BY sensor ORDER BY sensor"
    )
    assert dict(stored.fetchall()) == {s: len(v) for s, v in taken.items()}


def test_the_latest_value_of_a_killed_run_is_restored_with_its_time(tmp_path: Path) -> None:
    config = make_config(tmp_path)
    run = Run(config)
    at = time.time() - 30
    run.record("temp", 21.25, at)
    run.journal.write()
    run.history.close()  # killed before state.json was ever written
    again = Run(config)
    snap = again.state.get("temp")
    assert snap is not None
    assert (snap.value, snap.unit) == (21.25, "°C")
    assert abs(snap.at.timestamp() - at) < 0.001  # kept to the millisecond


def test_torn_and_damaged_lines_are_skipped(tmp_path: Path) -> None:
    config = make_config(tmp_path)
    run = Run(config)
    now = time.time() - 60
    for i in range(10):
        run.record("temp", float(i), now + i)
    run.journal.write()
    run.history.close()
    (_gen, path), *_ = journal_files(run.dir)
    with path.open("ab") as f:
        f.write(b"r\t0\tnot-a-time\t1.0\t\n")  # damaged
        f.write(b"r\t7\t1.0\t1.0\t\n")  # a sensor number the file never defined
        f.write(b"\xff\xfe\t\n")  # not UTF-8
        f.write(f"r\t0\t{now + 20!r}\t99.0".encode())  # torn: no closing tab, no newline
    again = Run(config)
    assert again.restored.journal.readings == 10
    assert again.restored.journal.bad_lines == 3
    count, _total, _low, high = again.totals("temp")
    assert (count, high) == (10, 9.0)


def test_a_clean_stop_writes_everything_and_the_next_start_replays_nothing(
    tmp_path: Path,
) -> None:
    config = make_config(tmp_path)
    run = Run(config)
    now = time.time() - 120
    for i in range(100):
        run.record("temp", float(i), now + i)
    run.journal.write()
    run.writer.stop()
    run.history.close()
    assert journal_files(run.dir) == []
    again = Run(config)
    assert again.restored.journal.files == 0
    assert again.totals("temp")[0] == 100


def test_acknowledged_messages_are_handed_back(tmp_path: Path) -> None:
    """The journal keeps each acknowledged QoS 1 message's id and digest: after a kill,
    the MQTT client recognises the broker's redelivery of one already counted."""
    config = make_config(tmp_path)
    run = Run(config)
    run.record("temp", 1.0, time.time())
    run.journal.ack([(1, 111), (2, 222), (3, 0)])  # 0: paho handled it, no digest
    run.journal.write()
    run.journal.ack([(1, 333)])  # the id used again for another message
    run.journal.write()
    run.history.close()
    again = Run(config)
    assert again.restored.acks == {1: 333, 2: 222}


def test_a_large_journal_asks_for_an_early_flush(tmp_path: Path) -> None:
    """A flood of readings must not grow the journal without bound: past its size it
    wakes the history writer, whose flush starts a new, small file."""
    import gateway.state.journal as journal_module

    config = make_config(tmp_path)
    run = Run(config)
    asked: list[int] = []
    run.journal.on_full = lambda: asked.append(run.journal.size)
    limit = journal_module.ROTATE_BYTES
    journal_module.ROTATE_BYTES = 10_000
    try:
        now = time.time() - 300
        for i in range(2000):
            run.record("temp", float(i % 50), now + i / 10)
            if i % 100 == 99:
                run.journal.write()
    finally:
        journal_module.ROTATE_BYTES = limit
    assert len(asked) == 1  # asked once, not at every batch
    assert asked[0] > 10_000
    run.writer.flush()
    assert run.journal.size < 1_000  # the new generation holds only the carried minute
    assert len(journal_files(run.dir)) == 1
    assert run.totals("temp")[0] == 2000


def test_the_newest_acknowledgements_outlive_a_flush_and_a_clean_stop(tmp_path: Path) -> None:
    """A PUBACK may be lost with the connection right after a flush or at a clean stop:
    the newest acknowledged messages are carried into each new file, and a clean stop
    leaves a file with only them (no reading is counted again)."""
    config = make_config(tmp_path)
    run = Run(config)
    run.record("temp", 1.0, time.time() - 5)
    run.journal.ack([(7, 777)])
    run.journal.write()
    run.writer.flush()  # the file with the ack is deleted; the new one carries it
    run.journal.ack([(8, 888)])
    run.writer.stop()
    run.history.close()
    again = Run(config)
    assert again.restored.acks == {7: 777, 8: 888}
    assert again.restored.journal.readings == again.restored.journal.carried == 0
    assert again.totals("temp")[0] == 1
