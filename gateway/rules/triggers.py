"""Event triggers: ``when`` conditions checked as readings arrive, and ``on_message`` rules.

``ThresholdWatcher.on_reading`` runs in paho's thread: it only evaluates the
rules that read the sensor that changed (an index built once), moves each
rule's small state machine, and hands a firing to ``submit`` — composition and
storage happen on the dispatcher's worker threads, never in the ingest path.

A rule's state machine (:func:`advance`, pure):

- ``armed``: waiting for the condition. True → fire (or ``pending`` when ``for`` is set).
- ``pending``: true since ``since``; a timer fires at ``since + for`` even if no new
  reading arrives. False before that → ``armed``.
- ``fired``: fired; re-armed only once the clear condition holds (``clear_when``,
  ``clear_below``/``clear_above``, else "the condition is false again") — hysteresis.

``changes(x)`` conditions are edge-triggered: every change fires.  Hysteresis lives in
memory; after a restart the outbox-backed guards (cooldown, max_per_day) still apply.
"""

from __future__ import annotations

import functools
import json
import logging
import threading
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any, Literal, Protocol

import paho.mqtt.client as mqtt

from gateway.compose.composer import MessageEvent
from gateway.config import RuleConfig, id_pattern
from gateway.rules import expr
from gateway.state.store import SensorSnapshot, StateStore
from gateway.support.ratelog import RateLimitedLog

log = logging.getLogger(__name__)

Phase = Literal["armed", "pending", "fired"]
Readings = Mapping[str, SensorSnapshot]
Submit = Callable[[str, MessageEvent | None, Readings | None], None]
"""Hand a firing off: rule id, the message (on_message rules), sensor values at trigger time."""
STALE_MARGIN = timedelta(seconds=1)
"""Checked this long after a sensor is due to turn stale, so the check sees it stale."""


@dataclass(frozen=True, slots=True)
class Track:
    """Where one ``when`` rule stands."""

    phase: Phase = "armed"
    since: datetime | None = None


def advance(
    track: Track,
    held: bool,
    cleared: bool,
    now: datetime,
    hold: timedelta,
    *,
    edge: bool = False,
    due: bool = False,
) -> tuple[Track, bool]:
    """The next state of a rule and whether it fires now (pure).

    ``held``: the condition is true now; ``cleared``: the re-arm condition is true;
    ``due``: the ``for`` timer went off (the hold time has passed).
    """
    if edge:
        return Track(), held
    if track.phase == "fired":
        return (Track(), False) if cleared else (track, False)
    if not held:
        return Track(), False
    if track.phase == "armed":
        if hold <= timedelta(0):
            return Track("fired", now), True
        return Track("pending", now), False
    assert track.since is not None
    if due or now - track.since >= hold:
        return Track("fired", now), True
    return track, False


class Cancellable(Protocol):
    """A scheduled call that can be called off."""

    def cancel(self) -> None:
        """Call it off (no effect once it ran)."""
        ...


class Timers(Protocol):
    """Runs a function at a wall-clock time (a fake clock's in tests)."""

    def call_at(self, when: datetime, fn: Callable[[], None]) -> Cancellable:
        """Call ``fn`` at ``when``, in some thread."""
        ...


class ThreadTimers:
    """:class:`Timers` on ``threading.Timer`` (daemon threads, cancelled at ``stop``)."""

    def __init__(self, clock: Callable[[], datetime]) -> None:
        self._clock = clock
        self._live: set[threading.Timer] = set()
        self._lock = threading.Lock()

    def call_at(self, when: datetime, fn: Callable[[], None]) -> Cancellable:
        """Start a timer thread that calls ``fn`` at ``when``."""
        delay = max(0.0, (when - self._clock()).total_seconds())

        def run() -> None:
            with self._lock:
                self._live.discard(timer)
            fn()

        timer = threading.Timer(delay, run)
        timer.daemon = True
        with self._lock:
            self._live.add(timer)
        timer.start()
        return timer

    def stop(self) -> None:
        """Cancel every timer that has not run."""
        with self._lock:
            live, self._live = self._live, set()
        for timer in live:
            timer.cancel()


def _scalar(value: Any) -> expr.Scalar | None:
    if isinstance(value, bool | str):
        return value
    if isinstance(value, int | float):
        return float(value)
    return None


@dataclass(frozen=True)
class StateFacts:
    """:class:`expr.Facts` over the state store at one moment (plus an event, if any)."""

    state: StateStore
    now: datetime
    changed_sensors: frozenset[str] = frozenset()
    event: Any = None

    def value(self, name: str) -> expr.Scalar | None:
        """A sensor's latest value, or a field of the event (``event.a.b``)."""
        if name == "event" or name.startswith("event."):
            data = self.event
            for part in name.split(".")[1:]:
                if isinstance(data, Mapping):
                    data = data.get(part)
                elif isinstance(data, list) and part.isdigit() and int(part) < len(data):
                    data = data[int(part)]
                else:
                    return None
            return _scalar(data)
        snap = self.state.get(name)
        return None if snap is None else snap.value

    def stale(self, sensor: str) -> bool:
        """True when the sensor has no fresh reading."""
        return self.state.is_stale(sensor, self.now)

    def changed(self, sensor: str) -> bool:
        """True when the reading being handled changed this sensor's value."""
        return sensor in self.changed_sensors

    def family(self, pattern: str) -> list[expr.Scalar]:
        """The values of every sensor the entry ``pattern`` (``temp_{room}``) made."""
        match = id_pattern(pattern).fullmatch
        return [s.value for sid, s in self.state.sensors().items() if match(sid)]

    def offline(self, sensor: str) -> bool:
        """Stale, or offline by its availability topic when the state tracks that."""
        said_offline = getattr(self.state, "is_offline", None)
        return self.stale(sensor) or bool(said_offline is not None and said_offline(sensor))


@dataclass(frozen=True)
class Condition:
    """A ``when`` rule, compiled."""

    rule: str
    when: expr.Node
    clear: expr.Node | None
    hold: timedelta
    edge: bool
    text: str = ""
    """The rule's ``when`` as written (a saved track is kept only for the same text)."""

    @classmethod
    def of(cls, rule: RuleConfig) -> Condition:
        """Compile a rule's ``when``, ``for`` and clear options."""
        assert rule.when is not None
        when = expr.parse(rule.when)
        clear: expr.Node | None = None
        if rule.clear_when is not None:
            clear = expr.parse(rule.clear_when)
        elif rule.clear_below is not None or rule.clear_above is not None:
            (sensor,) = expr.names(when)
            if rule.clear_below is not None:
                clear = expr.Compare("<", expr.Name(sensor), expr.Const(rule.clear_below))
            else:
                above = float(rule.clear_above or 0)
                clear = expr.Compare(">", expr.Name(sensor), expr.Const(above))
        edge = bool(expr.calls(when, "changes"))
        text = f"{rule.when}|{rule.clear_when}|{rule.clear_below}|{rule.clear_above}"
        return cls(rule.id, when, clear, rule.hold or timedelta(0), edge, text)

    def sensors(self) -> set[str]:
        """Sensors whose readings can change the outcome."""
        return expr.names(self.when) | (expr.names(self.clear) if self.clear else set())


class ThresholdWatcher:
    """Evaluates ``when`` rules as readings arrive; fires through ``submit``."""

    def __init__(
        self,
        rules: Iterable[RuleConfig],
        state: StateStore,
        expire_after: Mapping[str, timedelta],
        clock: Callable[[], datetime],
        timers: Timers,
        submit: Submit,
    ) -> None:
        self._conditions = {r.id: Condition.of(r) for r in rules if r.when is not None}
        self._state = state
        self._clock = clock
        self._timers = timers
        self._submit = submit
        self._by_sensor: dict[str, list[Condition]] = {}
        families: dict[str, list[Condition]] = {}
        for cond in self._conditions.values():
            for sensor in cond.sensors():
                table = families if "{" in sensor else self._by_sensor
                table.setdefault(sensor, []).append(cond)
        self._families = [(id_pattern(p).fullmatch, conds) for p, conds in families.items()]
        """``max(temp_{room})``: the conditions of a family, found by matching the id."""
        self._seen: set[str] = set(self._by_sensor)
        watched: set[str] = set()
        for cond in self._conditions.values():
            watched |= expr.calls(cond.when, "stale", "offline")
        self._stale_after = {s: expire_after[s] for s in watched if s in expire_after}
        self._tracks = {rule: Track() for rule in self._conditions}
        self._hold_timers: dict[str, Cancellable] = {}
        self._stale_timers: dict[str, Cancellable] = {}
        self._lock = threading.Lock()

    def start(self) -> None:
        """Give every sensor watched by ``stale()`` its expiry time to report first."""
        now = self._clock()
        with self._lock:
            for sensor, limit in self._stale_after.items():
                self._schedule_stale_check(sensor, now + limit)

    def stop(self) -> None:
        """Cancel pending timers."""
        with self._lock:
            for timer in [*self._hold_timers.values(), *self._stale_timers.values()]:
                timer.cancel()
            self._hold_timers.clear()
            self._stale_timers.clear()

    def saved_tracks(self) -> dict[str, dict[str, str]]:
        """The rules' armed/pending/fired state for ``state.json`` (JSON-ready)."""
        with self._lock:
            return {
                rule: {
                    "phase": track.phase,
                    "since": track.since.isoformat() if track.since else "",
                    "when": self._conditions[rule].text,
                }
                for rule, track in sorted(self._tracks.items())
                if track.phase != "armed"
            }

    def restore_tracks(self, saved: Mapping[str, Any]) -> list[str]:
        """Take back the tracks saved by :meth:`saved_tracks` (before :meth:`start`), so a
        condition that stayed true across a restart or reload does not fire again.
        Tracks of rules whose condition changed are dropped.  Returns the rules restored."""
        restored = []
        with self._lock:
            for rule, item in saved.items():
                cond = self._conditions.get(rule)
                if cond is None or cond.edge or not isinstance(item, Mapping):
                    continue
                phase, since = item.get("phase"), item.get("since")
                if item.get("when") != cond.text or phase not in ("pending", "fired"):
                    continue
                try:
                    at = datetime.fromisoformat(str(since))
                except ValueError:
                    continue
                self._tracks[rule] = Track(phase, at)
                if phase == "pending":
                    self._hold_timers[rule] = self._timers.call_at(
                        at + cond.hold, functools.partial(self._hold_elapsed, rule, at)
                    )
                restored.append(rule)
        return restored

    def track(self, rule_id: str) -> Track:
        """Where a rule stands (for tests and status)."""
        return self._tracks[rule_id]

    def on_reading(self, snap: SensorSnapshot) -> None:
        """Ingest hook: re-evaluate the rules reading this sensor (paho's thread; cheap)."""
        changed = snap.previous is not None and snap.value != snap.previous
        changed_set = frozenset({snap.sensor}) if changed else frozenset()
        now = self._clock()
        with self._lock:
            if self._families and snap.sensor not in self._seen:
                self._join_families(snap.sensor)
            for cond in self._by_sensor.get(snap.sensor, ()):
                self._step(cond, now, changed_set)
            limit = self._stale_after.get(snap.sensor)
            if limit is not None:
                self._schedule_stale_check(snap.sensor, snap.at + limit)

    def _join_families(self, sensor: str) -> None:
        """A sensor seen for the first time: add the family conditions it feeds."""
        self._seen.add(sensor)
        for match, conds in self._families:
            if match(sensor):
                listed = self._by_sensor.setdefault(sensor, [])
                listed += [c for c in conds if c not in listed]

    def _schedule_stale_check(self, sensor: str, stale_at: datetime) -> None:
        old = self._stale_timers.pop(sensor, None)
        if old is not None:
            old.cancel()
        self._stale_timers[sensor] = self._timers.call_at(
            stale_at + STALE_MARGIN, lambda: self._recheck(sensor)
        )

    def _recheck(self, sensor: str) -> None:
        now = self._clock()
        with self._lock:
            self._stale_timers.pop(sensor, None)
            for cond in self._by_sensor.get(sensor, ()):
                self._step(cond, now, frozenset())

    def _hold_elapsed(self, rule_id: str, since: datetime) -> None:
        now = self._clock()
        with self._lock:
            track = self._tracks[rule_id]
            if track.phase != "pending" or track.since != since:
                return  # a timer that was called off just as it went off
            self._hold_timers.pop(rule_id, None)
            self._step(self._conditions[rule_id], now, frozenset(), due=True)

    def _step(
        self, cond: Condition, now: datetime, changed: frozenset[str], *, due: bool = False
    ) -> None:
        facts = StateFacts(self._state, now, changed)
        held = expr.evaluate(cond.when, facts)
        cleared = expr.evaluate(cond.clear, facts) if cond.clear is not None else not held
        old = self._tracks[cond.rule]
        new, fire = advance(old, held, cleared, now, cond.hold, edge=cond.edge, due=due)
        self._tracks[cond.rule] = new
        if new.phase == "pending" and old.phase != "pending":
            self._hold_timers[cond.rule] = self._timers.call_at(
                now + cond.hold, lambda: self._hold_elapsed(cond.rule, now)
            )
        elif old.phase == "pending" and new.phase != "pending":
            timer = self._hold_timers.pop(cond.rule, None)
            if timer is not None:
                timer.cancel()
        if fire:
            log.info("rule %s: condition met (%s)", cond.rule, "changed" if cond.edge else "held")
            # The post shows the values that made the rule fire, not later ones.
            self._submit(cond.rule, None, self._state.sensors())


def decode_event(payload: bytes) -> Any:
    """A message's JSON value, else its text (undecodable bytes replaced)."""
    text = payload.decode("utf-8", errors="replace")
    try:
        return json.loads(text)
    except (ValueError, RecursionError):  # absurdly nested JSON is taken as text
        return text


class MessageRules:
    """``on_message`` rules: a matching message (passing the rule's ``when``) fires the rule."""

    def __init__(
        self,
        rules: Iterable[RuleConfig],
        state: StateStore,
        clock: Callable[[], datetime],
        submit: Submit,
        own_topics: Iterable[str] = (),
    ) -> None:
        self._rules = [
            (r.id, r.on_message.topic, expr.parse(r.on_message.when) if r.on_message.when else None)
            for r in rules
            if r.on_message is not None
        ]
        self._state = state
        self._clock = clock
        self._submit = submit
        self._own = tuple(own_topics)
        self._ratelog = RateLimitedLog(log)
        self.own_ignored = 0
        """Messages the gateway itself published, never a trigger (a post loop otherwise)."""

    @property
    def topics(self) -> tuple[str, ...]:
        """Topic filters to subscribe to."""
        return tuple(dict.fromkeys(topic for _, topic, _ in self._rules))

    def on_message(self, topic: str, payload: bytes) -> None:
        """Ingest hook for the extra topics (paho's thread: decode, filter, hand off)."""
        data: Any = None
        for rule_id, topic_filter, condition in self._rules:
            if not mqtt.topic_matches_sub(topic_filter, topic):
                continue
            if data is None:
                if self._is_own(topic):
                    return
                data = decode_event(payload)
            if condition is not None:
                facts = StateFacts(self._state, self._clock(), event=data)
                if not expr.evaluate(condition, facts):
                    continue
            self._submit(rule_id, MessageEvent(topic, data), None)

    def _is_own(self, topic: str) -> bool:
        if not any(mqtt.topic_matches_sub(own, topic) for own in self._own):
            return False
        self.own_ignored += 1
        self._ratelog.warning(
            "own-message",
            "ignored a message on %s: the gateway published it itself, so it fires no rule"
            " (%d so far)",
            topic,
            self.own_ignored,
        )
        return True
