"""Guards with a fake clock: pure decisions, then through RuleRunner and a real SQLite outbox."""

from __future__ import annotations

import json
import sqlite3
from datetime import UTC, datetime, time, timedelta
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

import pytest

from gateway.compose.composer import Composer
from gateway.compose.textfit import BLUESKY, count_length
from gateway.config import GatewayConfig
from gateway.model import Reading
from gateway.outbox.store import Outbox
from gateway.rules.guards import (
    Guards,
    PostHistory,
    decide,
    is_duplicate,
    local_midnight,
    parse_quiet_hours,
)
from gateway.rules.runner import RuleRunner
from gateway.rules.triggers import ThresholdWatcher
from gateway.runtime.loading import validate_config
from gateway.state.store import StateStore
from tests.fakeclock import FakeClock

LONDON = ZoneInfo("Europe/London")
NONE = PostHistory(None, 0)


def at(text: str) -> datetime:
    return datetime.fromisoformat(text).replace(tzinfo=LONDON)


@pytest.mark.parametrize(
    ("moment", "quiet"),
    [
        ("22:59", False),
        ("23:00", True),
        ("23:59", True),
        ("00:00", True),
        ("03:30", True),
        ("06:59", True),
        ("07:00", False),
        ("12:00", False),
    ],
)
def test_quiet_hours_across_midnight(moment: str, quiet: bool) -> None:
    window = parse_quiet_hours("23:00-07:00")
    assert window.contains(time.fromisoformat(moment)) is quiet
    guards = Guards(quiet_hours=window)
    day = at(f"2026-07-01T{moment}")
    assert (decide(guards, day, LONDON, NONE, frozenset()).skip == "quiet hours") is quiet


def test_quiet_hours_within_a_day_and_in_local_time() -> None:
    window = parse_quiet_hours("12:00-13:30")
    assert window.contains(time(12, 0))
    assert window.contains(time(13, 29))
    assert not window.contains(time(13, 30))
    assert not window.contains(time(11, 59))
    # 11:30 UTC is 12:30 in London in summer: quiet there.
    guards = Guards(quiet_hours=window)
    utc = datetime(2026, 7, 1, 11, 30, tzinfo=UTC)
    assert decide(guards, utc, LONDON, NONE, frozenset()).skip == "quiet hours"
    assert decide(guards, utc, UTC, NONE, frozenset()).allowed


@pytest.mark.parametrize("bad", ["23:00", "7-8", "24:00-01:00", "10:00-10:00", "ab:cd-ef:gh"])
def test_bad_quiet_hours(bad: str) -> None:
    with pytest.raises(ValueError, match=r"."):
        parse_quiet_hours(bad)


def test_cooldown_and_max_per_day() -> None:
    now = at("2026-07-01T12:00")
    guards = Guards(cooldown=timedelta(minutes=30), max_per_day=3)
    recent = PostHistory(now - timedelta(minutes=29), 1)
    assert decide(guards, now, LONDON, recent, frozenset()).skip == "cooldown"
    later = PostHistory(now - timedelta(minutes=30), 1)
    assert decide(guards, now, LONDON, later, frozenset()).allowed
    full = PostHistory(now - timedelta(hours=2), 3)
    assert decide(guards, now, LONDON, full, frozenset()).skip == "max_per_day (3) reached"


def test_local_midnight_on_dst_days() -> None:
    # The day clocks go forward is 23 hours long; midnight is still 00:00 local.
    spring = datetime(2026, 3, 29, 12, 0, tzinfo=UTC)
    assert local_midnight(spring, LONDON) == datetime(2026, 3, 29, 0, 0, tzinfo=LONDON)
    autumn = datetime(2026, 10, 24, 23, 30, tzinfo=UTC)  # 00:30 BST on the 25th
    midnight = local_midnight(autumn, LONDON)
    assert midnight.astimezone(UTC) == datetime(2026, 10, 24, 23, 0, tzinfo=UTC)


def test_require_fresh_skips_or_falls_back() -> None:
    now = at("2026-07-01T12:00")
    stale = frozenset({"water_temp"})
    skip = decide(Guards(require_fresh=("water_temp",)), now, LONDON, NONE, stale)
    assert skip.skip == "stale: water_temp"
    fallback = Guards(require_fresh=("water_temp",), has_fallback=True)
    decision = decide(fallback, now, LONDON, NONE, stale)
    assert decision.allowed
    assert decision.use_fallback
    assert decide(fallback, now, LONDON, NONE, frozenset()) == decide(
        Guards(), now, LONDON, NONE, frozenset()
    )


def test_is_duplicate() -> None:
    now = at("2026-07-01T12:00")
    window = timedelta(hours=6)
    assert is_duplicate("a", now, "a", now - timedelta(hours=5), window)
    assert not is_duplicate("a", now, "a", now - timedelta(hours=6), window)
    assert not is_duplicate("a", now, "b", now - timedelta(hours=1), window)
    assert not is_duplicate("a", now, "a", now, None)


# -- through the runner, with a real outbox -------------------------------------------


def make_config(tmp_path: Path, **rule: Any) -> GatewayConfig:
    return validate_config(
        {
            "gateway": {"timezone": "Europe/London", "state_dir": str(tmp_path)},
            "sensors": [{"id": "water_temp", "topic": "t", "unit": "°C", "expire_after": "15m"}],
            "rules": [
                {"id": "r", "text": "Water {{ water_temp }}", "publish_to": ["bsky"], **rule}
            ],
            "publishers": [{"id": "bsky", "type": "file"}],
        }
    )


class Rig:
    def __init__(self, tmp_path: Path, start: datetime, **rule: Any) -> None:
        self.config = make_config(tmp_path, **rule)
        self.clock = FakeClock(start)
        self.state = StateStore({"water_temp": timedelta(minutes=15)})
        self.outbox = Outbox(tmp_path / "gateway.db")
        self.runner = self.make_runner()

    def make_runner(self) -> RuleRunner:
        return RuleRunner(
            config=self.config,
            composer=Composer(self.config, self.state, Path("unused")),
            outbox=self.outbox,
            capabilities={"bsky": BLUESKY},
            wake=lambda pid: None,
            clock=self.clock,
        )

    def read(self, value: float) -> None:
        self.state.update(Reading("water_temp", value, "°C", self.clock.now, "t"))

    def texts(self) -> list[str]:
        return [p["text"] for p in reversed(self.outbox.history(100))]


def test_cooldown_survives_a_restart(tmp_path: Path) -> None:
    rig = Rig(tmp_path, at("2026-07-01T12:00"), every="1m", cooldown="1h")
    rig.read(20.0)
    assert rig.runner.fire("r") is not None
    rig.clock.advance(timedelta(minutes=30))
    rig.read(21.0)
    assert rig.runner.fire("r") is None
    assert rig.runner.stats["r"].last_skip == "cooldown"
    rig.outbox.close()
    rig.outbox = Outbox(tmp_path / "gateway.db")  # a restart: only the database remains
    rig.runner = rig.make_runner()
    assert rig.runner.fire("r") is None
    rig.clock.advance(timedelta(minutes=30))
    assert rig.runner.fire("r") is not None
    assert rig.texts() == ["Water 20 °C", "Water 21 °C"]


def test_max_per_day_counts_since_local_midnight(tmp_path: Path) -> None:
    rig = Rig(tmp_path, at("2026-07-01T21:00"), every="1m", max_per_day=2)
    posted = []
    for n in range(8):  # 21:00 .. 00:30, every 30 minutes
        rig.read(float(n))
        posted.append(rig.runner.fire("r") is not None)
        rig.clock.advance(timedelta(minutes=30))
    assert posted == [True, True, False, False, False, False, True, True]
    assert rig.runner.stats["r"].skipped == 4


def test_dedupe_window(tmp_path: Path) -> None:
    rig = Rig(tmp_path, at("2026-07-01T12:00"), every="1m", dedupe_window="2h")
    rig.read(20.0)
    assert rig.runner.fire("r") is not None
    rig.clock.advance(timedelta(hours=1))
    assert rig.runner.fire("r") is None
    assert rig.runner.stats["r"].last_skip == "same text as the previous post"
    rig.read(20.0)  # same text, but the window has passed
    rig.clock.advance(timedelta(hours=1))
    rig.read(20.0)
    assert rig.runner.fire("r") is not None
    assert rig.texts() == ["Water 20 °C", "Water 20 °C"]


def test_require_fresh_fallback_text(tmp_path: Path) -> None:
    rig = Rig(
        tmp_path,
        at("2026-07-01T12:00"),
        every="1m",
        require_fresh=["water_temp"],
        fallback_text="No water reading for {{ water_temp.age | duration }}",
    )
    rig.read(20.0)
    rig.clock.advance(timedelta(minutes=20))
    assert rig.runner.fire("r") is not None
    assert rig.texts() == ["No water reading for 20 min"]


def test_thread_overflow_stores_parts(tmp_path: Path) -> None:
    long_text = " ".join(f"Sentence number {n} about the pool." for n in range(30))
    rig = Rig(tmp_path, at("2026-07-01T12:00"), every="1m", overflow="thread", text=long_text)
    post = rig.runner.fire("r")
    assert post is not None
    delivery = rig.outbox.next_delivery("bsky")
    assert delivery is not None
    assert len(delivery.parts) > 1
    assert delivery.text == delivery.parts[0]
    assert delivery.parts[0].endswith(f" 1/{len(delivery.parts)}")
    assert all(count_length(p, BLUESKY) <= 300 for p in delivery.parts)
    raw = sqlite3.connect(tmp_path / "gateway.db").execute("SELECT parts FROM deliveries")
    assert json.loads(raw.fetchone()[0]) == list(delivery.parts)


def test_single_post_delivery_text_stays_plain(tmp_path: Path) -> None:
    rig = Rig(tmp_path, at("2026-07-01T12:00"), every="1m", overflow="thread")
    rig.read(20.0)
    rig.runner.fire("r")
    delivery = rig.outbox.next_delivery("bsky")
    assert delivery is not None
    assert (delivery.text, delivery.parts) == ("Water 20 °C", ())


def test_crossing_clearing_and_recurring_after_cooldown(tmp_path: Path) -> None:
    """The pure version of the end-to-end test: watcher → runner → outbox, fake time."""
    rig = Rig(
        tmp_path,
        at("2026-07-01T12:00"),
        when="water_temp > 30",
        cooldown="30m",
        text="Hot: {{ water_temp }}",
    )
    watcher = ThresholdWatcher(
        rig.config.rules,
        rig.state,
        {},
        rig.clock,
        rig.clock,
        lambda r, e, s: rig.runner.fire(r, e, s),
    )

    def reading(value: float, minutes: int) -> None:
        rig.clock.advance(timedelta(minutes=minutes))
        watcher.on_reading(rig.state.update(Reading("water_temp", value, "°C", rig.clock.now, "t")))

    for value in (29.0, 31.0, 32.0, 29.0, 31.5):  # crosses at 12:01, recurs at 12:04
        reading(value, 1)
    assert rig.texts() == ["Hot: 31 °C"]  # the recurrence fell in the cooldown
    reading(29.0, 30)
    reading(33.0, 1)
    assert rig.texts() == ["Hot: 31 °C", "Hot: 33 °C"]
