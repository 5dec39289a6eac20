"""Time-based triggers in the gateway's time zone, across DST changes, with jitter."""

from __future__ import annotations

import itertools
from datetime import UTC, datetime, timedelta
from zoneinfo import ZoneInfo

from gateway.rules.scheduler import JOB_DEFAULTS, RuleScheduler, cron_trigger, trigger_for
from gateway.runtime.loading import validate_config

LONDON = ZoneInfo("Europe/London")


def fire_times(trigger: object, start: datetime, count: int) -> list[datetime]:
    """The next ``count`` fire times after ``start``, as the scheduler would compute them."""
    out: list[datetime] = []
    previous = None
    now = start
    for _ in range(count):
        nxt = trigger.get_next_fire_time(previous, now)  # type: ignore[attr-defined]
        out.append(nxt)
        previous, now = nxt, nxt
    return out


def test_daily_cron_keeps_local_time_across_spring_forward() -> None:
    trigger = cron_trigger("0 8 * * *", LONDON)
    times = fire_times(trigger, datetime(2026, 3, 27, 12, 0, tzinfo=LONDON), 4)
    assert [t.astimezone(LONDON).strftime("%m-%d %H:%M") for t in times] == [
        "03-28 08:00",
        "03-29 08:00",
        "03-30 08:00",
        "03-31 08:00",
    ]
    # In UTC the same runs move an hour earlier once BST starts.
    assert [t.astimezone(UTC).hour for t in times] == [8, 7, 7, 7]


def test_hourly_cron_across_spring_forward_has_no_gap_or_duplicate() -> None:
    trigger = cron_trigger("0 * * * *", LONDON)
    times = fire_times(trigger, datetime(2026, 3, 29, 0, 0, 1, tzinfo=UTC), 4)
    utc = [t.astimezone(UTC) for t in times]
    assert [b - a for a, b in itertools.pairwise(utc)] == [timedelta(hours=1)] * 3
    assert [t.astimezone(LONDON).hour for t in times] == [2, 3, 4, 5]  # 01:00 never exists


def test_cron_time_missing_on_spring_forward_day_runs_once_just_after() -> None:
    trigger = cron_trigger("30 1 * * *", LONDON)  # 01:30 does not exist on 29 March 2026
    times = fire_times(trigger, datetime(2026, 3, 28, 2, 0, tzinfo=LONDON), 3)
    assert [t.astimezone(UTC).isoformat() for t in times] == [
        "2026-03-29T01:30:00+00:00",  # 02:30 BST, the first moment after the gap
        "2026-03-30T00:30:00+00:00",  # 01:30 BST
        "2026-03-31T00:30:00+00:00",
    ]


def test_hourly_cron_across_fall_back_runs_every_real_hour() -> None:
    trigger = cron_trigger("0 * * * *", LONDON)
    times = fire_times(trigger, datetime(2026, 10, 24, 23, 30, tzinfo=UTC), 4)
    assert [t.astimezone(UTC).strftime("%H:%M") for t in times] == [
        "00:00",  # 01:00 BST
        "01:00",  # 01:00 GMT, the repeated hour
        "02:00",
        "03:00",
    ]


def test_daily_cron_across_fall_back_runs_once_a_day() -> None:
    trigger = cron_trigger("30 1 * * *", LONDON)  # 01:30 happens twice on 25 October 2026
    times = fire_times(trigger, datetime(2026, 10, 24, 12, 0, tzinfo=LONDON), 3)
    days = [t.astimezone(LONDON).date().isoformat() for t in times]
    assert days == ["2026-10-25", "2026-10-26", "2026-10-27"]
    assert all(t.astimezone(LONDON).strftime("%H:%M") == "01:30" for t in times)


def test_crontab_weekdays_in_local_time() -> None:
    trigger = cron_trigger("0 8 * * 1-5", LONDON)  # Monday to Friday
    times = fire_times(trigger, datetime(2026, 3, 27, 9, 0, tzinfo=LONDON), 3)  # a Friday
    assert [t.astimezone(LONDON).strftime("%a %d %H:%M") for t in times] == [
        "Mon 30 08:00",
        "Tue 31 08:00",
        "Wed 01 08:00",
    ]


def test_jitter_delays_within_bounds() -> None:
    config = validate_config(
        {
            "rules": [
                {"id": "a", "every": "1h", "jitter": "5m", "text": "x", "publish_to": ["c"]},
                {"id": "b", "cron": "0 8 * * *", "jitter": "2m", "text": "x", "publish_to": ["c"]},
            ],
            "publishers": [{"id": "c", "type": "console"}],
        }
    )
    start = datetime(2026, 7, 1, 7, 0, tzinfo=LONDON)
    hourly = trigger_for(config.rules[0], LONDON)
    delays = set()
    for _ in range(50):
        nxt = hourly.get_next_fire_time(start, start)
        assert nxt is not None
        delay = nxt - start - timedelta(hours=1)
        assert timedelta(0) <= delay <= timedelta(minutes=5)
        delays.add(delay)
    assert len(delays) > 1  # it is random
    daily = trigger_for(config.rules[1], LONDON)
    nxt = daily.get_next_fire_time(None, start)
    assert nxt is not None
    assert (
        datetime(2026, 7, 1, 8, 0, tzinfo=LONDON)
        <= nxt
        <= datetime(2026, 7, 1, 8, 2, tzinfo=LONDON)
    )


def test_scheduler_takes_only_time_rules_with_safe_defaults() -> None:
    config = validate_config(
        {
            "sensors": [{"id": "t", "topic": "t"}],
            "rules": [
                {"id": "hourly", "every": "1h", "text": "x", "publish_to": ["c"]},
                {"id": "hot", "when": "t > 3", "text": "x", "publish_to": ["c"]},
                {"id": "msg", "on_message": {"topic": "m"}, "text": "x", "publish_to": ["c"]},
            ],
            "publishers": [{"id": "c", "type": "console"}],
        }
    )
    scheduler = RuleScheduler(config.rules, LONDON, lambda rule: None)
    scheduler.add_periodic("save-state", lambda: None, 300)
    assert set(scheduler.jobs()) == {"hourly", "_save-state"}
    assert JOB_DEFAULTS == {"coalesce": True, "max_instances": 1, "misfire_grace_time": 60}
