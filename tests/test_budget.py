"""Per-publisher retry limits and posting budgets, counted from the outbox."""

from __future__ import annotations

import time
from datetime import datetime, timedelta
from pathlib import Path
from zoneinfo import ZoneInfo

from gateway.model import RetryableError
from gateway.outbox.delivery import DeliveryWorker, PostingBudget, RetryPolicy
from gateway.outbox.store import Outbox
from gateway.runtime.loading import validate_config
from tests.test_outbox import Recorder, make_post

LONDON = ZoneInfo("Europe/London")


class Clock:
    """A clock that starts at the real now and moves only when told."""

    def __init__(self) -> None:
        self.now = time.time()

    def __call__(self) -> float:
        return self.now


def drain(worker: DeliveryWorker) -> float:
    """Step until the worker asks to wait; return that wait."""
    while (wait := worker.step()) == 0:
        pass
    return wait


def statuses(outbox: Outbox) -> list[tuple[str, int, str | None]]:
    return [
        (
            e["deliveries"]["a"]["status"],
            e["deliveries"]["a"]["attempts"],
            e["deliveries"]["a"]["last_error"],
        )
        for e in reversed(outbox.history(10))
    ]


def test_daily_budget_holds_posts_until_local_midnight_even_across_restarts(
    tmp_path: Path,
) -> None:
    outbox = Outbox(tmp_path / "gateway.db")
    for n in range(3):
        outbox.add(make_post(f"post {n}"), {"a": f"post {n}"})
    clock = Clock()
    publisher = Recorder("a")
    budget = PostingBudget(LONDON, max_per_day=2)
    worker = DeliveryWorker(outbox, publisher, clock=clock, budget=budget)
    wait = drain(worker)
    assert [c[1] for c in publisher.calls] == ["post 0", "post 1"]
    _, midnight = budget.day_bounds(clock.now)
    assert datetime.fromtimestamp(midnight, LONDON).time().isoformat() == "00:00:00"
    assert wait == midnight - clock.now
    (held,) = outbox.open_deliveries()
    assert held["status"] == "failed"
    assert held["attempts"] == 0  # waiting for the budget is not a failed attempt
    assert held["next_attempt_at"] == midnight
    assert held["last_error"].startswith("daily budget of 2 posts used; waiting until ")

    # A restart counts the same sent deliveries from the database.
    outbox.close()
    outbox = Outbox(tmp_path / "gateway.db")
    worker = DeliveryWorker(outbox, publisher, clock=clock, budget=budget)
    assert worker.step() == midnight - clock.now
    assert len(publisher.calls) == 2

    clock.now = midnight + 1
    drain(worker)
    assert [c[1] for c in publisher.calls] == ["post 0", "post 1", "post 2"]
    assert [s[0] for s in statuses(outbox)] == ["sent", "sent", "sent"]
    assert statuses(outbox)[2][2] is None


def test_min_interval_spaces_posts(tmp_path: Path) -> None:
    outbox = Outbox(tmp_path / "gateway.db")
    for n in range(2):
        outbox.add(make_post(f"post {n}"), {"a": f"post {n}"})
    clock = Clock()
    publisher = Recorder("a")
    worker = DeliveryWorker(
        outbox, publisher, clock=clock, budget=PostingBudget(LONDON, min_interval=600)
    )
    wait = drain(worker)
    assert len(publisher.calls) == 1
    assert 590 < wait < 610  # from the real time the first was marked sent
    (held,) = outbox.open_deliveries()
    assert held["last_error"] == "min_interval 600s"
    clock.now += wait
    drain(worker)
    assert len(publisher.calls) == 2


def test_day_bounds_follow_daylight_saving() -> None:
    budget = PostingBudget(LONDON, max_per_day=1)
    spring = datetime(2026, 3, 29, 12, tzinfo=LONDON).timestamp()  # clocks go forward
    start, end = budget.day_bounds(spring)
    assert end - start == timedelta(hours=23).total_seconds()
    assert datetime.fromtimestamp(end, LONDON) == datetime(2026, 3, 30, tzinfo=LONDON)


def test_publisher_config_sets_retry_limits_and_budget(tmp_path: Path) -> None:
    config = validate_config(
        {
            "gateway": {"timezone": "Europe/Paris", "state_dir": str(tmp_path)},
            "publishers": [
                {
                    "id": "a",
                    "type": "console",
                    "max_attempts": 2,
                    "give_up_after": "6h",
                    "max_per_day": 24,
                    "min_interval": "10m",
                },
                {"id": "b", "type": "file"},
            ],
        }
    )
    a, b = config.publishers
    policy = RetryPolicy.for_publisher(a, RetryPolicy(base_delay=1, jitter=0))
    assert (policy.max_attempts, policy.max_age, policy.base_delay) == (2, 6 * 3600, 1)
    assert RetryPolicy.for_publisher(b).max_attempts == 20
    assert PostingBudget.for_publisher(a, ZoneInfo("Europe/Paris")) == PostingBudget(
        ZoneInfo("Europe/Paris"), 24, 600.0
    )
    assert PostingBudget.for_publisher(b, LONDON) is None

    from gateway.runtime.app import Gateway

    gateway = Gateway(config)
    try:
        assert gateway.workers["a"].policy.max_attempts == 2
        assert gateway.workers["a"].budget == PostingBudget(ZoneInfo("Europe/Paris"), 24, 600.0)
        assert gateway.workers["b"].budget is None
    finally:
        gateway.stop()

    # max_attempts from the config: the second failure is the last.
    outbox = Outbox(tmp_path / "other.db")
    outbox.add(make_post(), {"a": "x"})
    failing = Recorder("a", [RetryableError("down"), RetryableError("down again")])
    clock = Clock()
    worker = DeliveryWorker(outbox, failing, RetryPolicy.for_publisher(a), clock=clock)
    clock.now += drain(worker)
    assert worker.step() == 0
    (entry,) = outbox.history(1)
    assert entry["deliveries"]["a"]["status"] == "dead"
    assert entry["deliveries"]["a"]["last_error"] == "gave up after 2 attempts: down again"
