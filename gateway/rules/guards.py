"""Per-rule guards: pure decisions over values and a clock.

Whether a firing may post is decided from plain facts — the time now, when the
rule last posted, how many posts it made since local midnight, which sensors are
stale — so the decisions are tested with a fake clock and no database.  The
facts about past posts come from the outbox, so they survive a restart.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import datetime, time, timedelta, tzinfo

_QUIET = re.compile(r"^\s*(\d{1,2}):(\d{2})\s*-\s*(\d{1,2}):(\d{2})\s*$")


@dataclass(frozen=True, slots=True)
class QuietHours:
    """A daily window, ``start`` inclusive to ``end`` exclusive; may cross midnight."""

    start: time
    end: time

    def contains(self, moment: time) -> bool:
        """True when the wall-clock time ``moment`` falls in the window."""
        if self.start <= self.end:
            return self.start <= moment < self.end
        return moment >= self.start or moment < self.end


def parse_quiet_hours(text: str) -> QuietHours:
    """``"23:00-07:00"`` → QuietHours; ValueError for anything else."""
    match = _QUIET.match(text)
    if match is None:
        raise ValueError("expected HH:MM-HH:MM, e.g. 23:00-07:00")
    h1, m1, h2, m2 = (int(g) for g in match.groups())
    if h1 > 23 or h2 > 23 or m1 > 59 or m2 > 59:
        raise ValueError("hours must be 0-23 and minutes 0-59")
    if (h1, m1) == (h2, m2):
        raise ValueError("start and end of quiet_hours are equal")
    return QuietHours(time(h1, m1), time(h2, m2))


def local_midnight(now: datetime, tz: tzinfo) -> datetime:
    """The start of ``now``'s day in ``tz`` (an aware datetime, DST-correct)."""
    local = now.astimezone(tz)
    return datetime(local.year, local.month, local.day, tzinfo=tz)


@dataclass(frozen=True, slots=True)
class Guards:
    """A rule's guard settings (all optional)."""

    cooldown: timedelta | None = None
    max_per_day: int | None = None
    quiet_hours: QuietHours | None = None
    require_fresh: tuple[str, ...] = ()
    has_fallback: bool = False


@dataclass(frozen=True, slots=True)
class PostHistory:
    """What the outbox knows about a rule's earlier posts."""

    last_post_at: datetime | None
    posts_today: int


@dataclass(frozen=True, slots=True)
class Decision:
    """Post (``skip`` is None), post the fallback text, or skip for a named reason."""

    skip: str | None = None
    use_fallback: bool = False

    @property
    def allowed(self) -> bool:
        """True when a post will be made."""
        return self.skip is None


def decide(
    guards: Guards, now: datetime, tz: tzinfo, history: PostHistory, stale: frozenset[str]
) -> Decision:
    """Apply quiet hours, max_per_day, cooldown and require_fresh, in that order."""
    if guards.quiet_hours is not None and guards.quiet_hours.contains(
        now.astimezone(tz).time().replace(tzinfo=None)
    ):
        return Decision(skip="quiet hours")
    if guards.max_per_day is not None and history.posts_today >= guards.max_per_day:
        return Decision(skip=f"max_per_day ({guards.max_per_day}) reached")
    if (
        guards.cooldown is not None
        and history.last_post_at is not None
        and now - history.last_post_at < guards.cooldown
    ):
        return Decision(skip="cooldown")
    missing = sorted(s for s in guards.require_fresh if s in stale)
    if missing:
        if guards.has_fallback:
            return Decision(use_fallback=True)
        return Decision(skip=f"stale: {', '.join(missing)}")
    return Decision()


def is_duplicate(
    text: str,
    now: datetime,
    previous_text: str | None,
    previous_at: datetime | None,
    window: timedelta | None,
) -> bool:
    """True when ``text`` repeats the rule's previous post within ``window``."""
    if window is None or previous_text is None or previous_at is None:
        return False
    return text == previous_text and now - previous_at < window
