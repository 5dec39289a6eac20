"""Time-based rule triggers on APScheduler 3.x.

APScheduler 3 numbers weekdays from Monday=0, unlike crontab (Sunday=0 or 7),
so :func:`cron_trigger` rewrites the day-of-week field into names before handing
it over: ``0 8 * * 1-5`` means weekdays here, as it does in crontab.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from datetime import UTC, datetime, timedelta, tzinfo
from typing import Any

from apscheduler.schedulers.background import BackgroundScheduler
from apscheduler.triggers.base import BaseTrigger
from apscheduler.triggers.cron import CronTrigger
from apscheduler.triggers.interval import IntervalTrigger

from gateway.config import RuleConfig

log = logging.getLogger(__name__)

_DAY_NAMES = ("sun", "mon", "tue", "wed", "thu", "fri", "sat", "sun")


def _day_number(token: str) -> int:
    token = token.strip().lower()
    if token.isdigit():
        number = int(token)
        if not 0 <= number <= 7:
            raise ValueError(f"day of week {token} is not in 0-7")
        return number % 7
    if token[:3] in _DAY_NAMES:
        return _DAY_NAMES.index(token[:3])
    raise ValueError(f"unknown day of week {token!r}")


def crontab_days(field: str) -> str:
    """Translate a crontab day-of-week field (0/7 = Sunday) into APScheduler day names."""
    if field == "*" or field == "?":
        return "*"
    days: list[int] = []
    for part in field.split(","):
        base, _, step_text = part.partition("/")
        step = int(step_text) if step_text else 1
        if step < 1:
            raise ValueError("step must be at least 1")
        if base == "*":
            span = list(range(7))
        elif "-" in base:
            first, last = (_day_number(t) for t in base.split("-", 1))
            if base.split("-", 1)[1].strip() == "7":
                last = 7
            span = (
                list(range(first, last + 1))
                if first <= last
                else [*range(first, 7), *range(0, last + 1)]
            )
        else:
            span = [_day_number(base)]
        days.extend(d % 7 for d in span[::step])
    return ",".join(_DAY_NAMES[d] for d in sorted(set(days)))


class LocalCronTrigger(CronTrigger):  # type: ignore[misc]
    """A CronTrigger that runs a fixed-hour job once per wall-clock time, as cron does.

    APScheduler 3 fires ``30 1 * * *`` twice on the night clocks go back (01:30 BST
    and 01:30 GMT).  When the hour field is fixed, a fire time showing the same local
    wall time as the previous run is skipped.  Jobs with ``*`` hours (``0 * * * *``)
    keep running every real hour through the change.
    """

    def __init__(self, *, once_per_wall_time: bool, **fields: Any) -> None:
        super().__init__(**fields)
        self.once_per_wall_time = once_per_wall_time

    def _wall(self, moment: datetime) -> tuple[int, ...]:
        local = moment.astimezone(self.timezone)
        key = (local.year, local.month, local.day, local.hour, local.minute)
        return key if self.jitter is None else key[:4]

    def get_next_fire_time(
        self, previous_fire_time: datetime | None, now: datetime
    ) -> datetime | None:
        """The next fire time, skipping a repeat of the previous wall-clock time."""
        nxt: datetime | None = super().get_next_fire_time(previous_fire_time, now)
        if not self.once_per_wall_time or previous_fire_time is None:
            return nxt
        for _ in range(3):  # the repeated hour is one hour long; never loop for ever
            if nxt is None or self._wall(nxt) != self._wall(previous_fire_time):
                break
            # Probe an hour on, in UTC: APScheduler loses `fold` in local arithmetic.
            nxt = super().get_next_fire_time(nxt, nxt.astimezone(UTC) + timedelta(hours=1))
        return nxt


def cron_trigger(expr: str, tz: tzinfo, jitter: float | None = None) -> CronTrigger:
    """A CronTrigger from a 5-field crontab expression, with crontab weekday numbering.

    Times are wall-clock times in ``tz``: ``0 8 * * *`` is 08:00 local on both sides of
    a DST change; a time that does not exist that day (01:30 when clocks spring forward
    in Europe/London) runs an hour later, at 02:30 BST; one that happens twice runs once.
    """
    fields = expr.split()
    if len(fields) != 5:
        raise ValueError(f"expected 5 fields (minute hour day month weekday), got {len(fields)}")
    minute, hour, day, month, weekday = fields
    return LocalCronTrigger(
        once_per_wall_time="*" not in hour,
        minute=minute,
        hour=hour,
        day=day,
        month=month,
        day_of_week=crontab_days(weekday),
        timezone=tz,
        jitter=jitter,
    )


def trigger_for(rule: RuleConfig, tz: tzinfo) -> BaseTrigger:
    """The APScheduler trigger of a time-based rule (with its random ``jitter``, if any)."""
    jitter = int(rule.jitter.total_seconds()) if rule.jitter else None
    if rule.cron is not None:
        return cron_trigger(rule.cron, tz, jitter)
    assert rule.every is not None
    return IntervalTrigger(seconds=rule.every.total_seconds(), timezone=tz, jitter=jitter)


TriggerKey = tuple[object, ...]
"""What a rule's schedule depends on; equal keys mean the same trigger."""
Plan = dict[str, tuple[TriggerKey, datetime]]
"""Rule id → (its trigger key, its next run time): what a reload carries over."""


def trigger_key(rule: RuleConfig, tz: tzinfo) -> TriggerKey:
    """The settings a time-based rule's trigger is made of."""
    return (rule.every, rule.cron, rule.jitter, str(tz))


MISFIRE_GRACE_SECONDS = 60
"""A run up to this late still happens (e.g. the pool was busy); later ones are skipped."""
JOB_DEFAULTS = {"coalesce": True, "max_instances": 1, "misfire_grace_time": MISFIRE_GRACE_SECONDS}


class RuleScheduler:
    """Runs ``fire(rule_id)`` for each time-based rule on its schedule (others are ignored)."""

    def __init__(
        self, rules: tuple[RuleConfig, ...], tz: tzinfo, fire: Callable[[str], object]
    ) -> None:
        self._scheduler = BackgroundScheduler(
            timezone=tz,
            executors={"default": {"type": "threadpool", "max_workers": 2}},
            # A rule that missed its time (busy or suspended) runs once, not N times.
            job_defaults=JOB_DEFAULTS,
        )
        self._tz = tz
        self._keys: dict[str, TriggerKey] = {}
        for rule in rules:
            if rule.every is None and rule.cron is None:
                continue
            self._keys[rule.id] = trigger_key(rule, tz)
            self._scheduler.add_job(
                fire, trigger_for(rule, tz), args=[rule.id], id=rule.id, name=rule.id
            )

    def add_periodic(self, name: str, fn: Callable[[], object], every_seconds: float) -> None:
        """Run a housekeeping function at an interval (e.g. saving the state snapshot)."""
        self._scheduler.add_job(
            fn, IntervalTrigger(seconds=every_seconds, timezone=self._tz), id=f"_{name}", name=name
        )

    def next_runs(self) -> dict[str, datetime]:
        """Rule id → its next run time, for the rules scheduled so far (after start)."""
        runs = {}
        for job in self._scheduler.get_jobs():
            next_run = getattr(job, "next_run_time", None)  # unset until the start
            if not job.id.startswith("_") and next_run is not None:
                runs[job.id] = next_run
        return runs

    def plan(self) -> Plan:
        """Each rule's trigger key and next run time (for :meth:`resume` after a reload)."""
        runs = self.next_runs()
        return {rid: (key, runs[rid]) for rid, key in self._keys.items() if rid in runs}

    def resume(self, previous: Plan) -> list[str]:
        """Before :meth:`start`: rules whose trigger is unchanged keep ``previous``'s next
        run time, so a reload does not push back an ``every`` timer (a reload every few
        minutes would otherwise keep a rule from ever firing).  Returns their ids."""
        kept = []
        for rule_id, key in self._keys.items():
            carried = previous.get(rule_id)
            if carried is not None and carried[0] == key:
                self._scheduler.modify_job(rule_id, next_run_time=carried[1])
                kept.append(rule_id)
        return kept

    def jobs(self) -> dict[str, BaseTrigger]:
        """Job id → trigger, for status and tests."""
        return {job.id: job.trigger for job in self._scheduler.get_jobs()}

    def add_heartbeat(self, beat: Callable[[], object], seconds: float) -> None:
        """Run ``beat`` every ``seconds`` on the scheduler's own pool (proves it is not hung)."""
        self.add_periodic("_heartbeat_", beat, seconds)

    def start(self) -> None:
        """Start the scheduler thread."""
        self._scheduler.start()
        for job in self._scheduler.get_jobs():
            if job.id.startswith("__"):
                continue
            log.info("rule %s: next run at %s", job.id, job.next_run_time)

    def stop(self) -> None:
        """Stop scheduling; a rule already running is not waited for."""
        if self._scheduler.running:
            self._scheduler.shutdown(wait=False)

    def is_alive(self) -> bool:
        """True while the scheduler runs."""
        return bool(self._scheduler.running)
