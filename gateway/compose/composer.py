"""Composition: a rule's templates plus the current state become a :class:`Post`.

Templates run in Jinja2's sandbox: they come from the config file, the values
they see come from MQTT.  Unknown names are errors at ``check-config`` time; a
template that fails at run time raises :class:`ComposeError` and no half-made
post is ever stored.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from datetime import datetime, timedelta
from functools import partial
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol

import jinja2

from gateway.compose.checking import stat_names, template_names, template_sources
from gateway.compose.filters import FILTERS, defuse_markup
from gateway.compose.sandbox import BoundedSandbox, RenderLimitError, render_bounded
from gateway.config.sensors import id_pattern
from gateway.media.frames import FrameStore
from gateway.model import MediaItem, Post, Value, new_post_id
from gateway.state.store import UNKNOWN_TIME, SensorSnapshot, StateStore
from gateway.support.text import clean_text

if TYPE_CHECKING:
    from gateway.config import GatewayConfig, RuleConfig, SensorConfig
    from gateway.config.rules import ImageSpec
    from gateway.media.attachments import HistorySource, MediaBuilder
    from gateway.media.fitting import MediaFitter
    from gateway.media.images import ImageLimits
    from gateway.model import Capabilities

log = logging.getLogger(__name__)

_TIGHT_UNITS = ("%", "°")


class ComposeError(Exception):
    """A post could not be composed (template error, missing value)."""


class PostSkippedError(ComposeError):
    """A camera with ``on_missing = "skip_post"`` had no fresh frame: no post this time."""


@dataclass(frozen=True)
class MessageEvent:
    """An MQTT message that fired an ``on_message`` rule: its topic and decoded payload."""

    topic: str
    data: Any
    """The JSON value of the payload, or its text when it is not JSON."""


MAX_DECIMALS = 4
"""A reading without ``precision`` renders as sent, up to this many decimals."""


def format_number(value: float, precision: int | None = None) -> str:
    """``precision`` decimals; None: the number as the device sent it (``21.25``), at
    most :data:`MAX_DECIMALS` decimals and no trailing zeros.  Whole numbers have none."""
    if value.is_integer() and abs(value) < 1e15:
        return str(int(value))
    if precision is not None:
        return f"{value:.{precision}f}"
    text = f"{value:.{MAX_DECIMALS}f}".rstrip("0").rstrip(".")
    return "0" if text in ("-0", "") else text


def format_value(value: Value | None, unit: str = "", precision: int | None = None) -> str:
    """A reading as people read it: ``24.3 °C``, ``61%``, ``open``; ``n/a`` when unknown.

    Numbers have ``precision`` decimals, else what the device sent (:func:`format_number`).
    """
    if value is None:
        return "n/a"
    if isinstance(value, bool):
        text = "on" if value else "off"
    elif isinstance(value, float):
        text = format_number(value, precision)
    else:
        text = str(value)
    if not unit:
        return text
    return f"{text}{unit}" if unit in _TIGHT_UNITS else f"{text} {unit}"


class Measure(float):
    """A statistic of a sensor (``mean_1h``...): a number that renders like the sensor.

    ``{{ water_temp.mean_1h }}`` reads ``24.3 °C``; comparisons, arithmetic and the
    ``number``/``round`` filters see the plain float.
    """

    __slots__ = ("precision", "unit")

    unit: str
    precision: int | None

    def __new__(cls, value: float, unit: str = "", precision: int | None = 1) -> Measure:
        """A float ``value`` that remembers its ``unit`` and display ``precision`` (None:
        as the device sent it, see :func:`format_number`)."""
        self = super().__new__(cls, value)
        self.unit = unit
        self.precision = precision
        return self

    def __str__(self) -> str:
        return format_value(float(self), self.unit, self.precision)

    def __format__(self, spec: str) -> str:
        return str(self) if not spec else format(float(self), spec)


class StatsSource(Protocol):
    """The rolling-statistics interface of the state store (:meth:`StateStore.stats`).

    ``stats(sensor, window, now)`` returns an object with ``min``, ``max`` and ``mean``
    (floats or None; ``trend`` optional), or None when nothing is known (``n/a``).
    """

    def stats(self, sensor: str, window: timedelta, now: datetime | None = None) -> Any:
        """Statistics of a sensor's readings over the ``window`` before ``now``."""
        ...


def _stat(stats: Any, name: str) -> float | None:
    value = getattr(stats, name, None) if stats is not None else None
    return float(value) if isinstance(value, int | float) and not isinstance(value, bool) else None


def _measure(stats: Any, name: str, unit: str, precision: int | None) -> Measure | None:
    """A statistic rendered like its sensor; without ``precision`` the lowest and highest
    are readings shown as sent, a mean has one decimal."""
    value = _stat(stats, name)
    if value is None:
        return None
    if precision is None and name not in ("min", "max"):
        precision = 1
    return Measure(value, unit, precision)


def trend_of(value: Value | None, hour: Any) -> str | None:
    """``rising``, ``falling`` or ``steady`` from the last hour's statistics; None if unknown."""
    explicit = getattr(hour, "trend", None) if hour is not None else None
    if isinstance(explicit, str):
        return explicit
    mean, low, high = _stat(hour, "mean"), _stat(hour, "min"), _stat(hour, "max")
    if mean is None or not isinstance(value, int | float) or isinstance(value, bool):
        return None
    spread = (high - low) if low is not None and high is not None else 0.0
    delta = float(value) - mean
    if abs(delta) <= max(spread * 0.25, 1e-9):
        return "steady"
    return "rising" if delta > 0 else "falling"


DEFAULT_WINDOWS = (timedelta(hours=1), timedelta(hours=24))


@dataclass(frozen=True)
class SensorView:
    """What a template sees of one sensor: ``{{ water_temp }}`` renders value and unit.

    Besides its fields it has ``min_<w>``, ``max_<w>`` and ``mean_<w>`` for each of
    the sensor's windows ``<w>`` (``min_24h``, ``mean_1h``; see
    :func:`gateway.compose.checking.stat_names`), None (``n/a``) when unknown.
    """

    id: str
    value: Value | None
    unit: str
    at: datetime | None
    age: timedelta | None
    stale: bool
    previous: Value | None
    trend: str | None = None
    offline: bool = False
    """The device's LWT or availability topic last said offline."""
    stats: Mapping[str, Measure | None] = field(default_factory=dict)
    """Window statistics by attribute name (``max_24h``)."""
    precision: int | None = None
    """The sensor's ``precision``; None: the value renders as the device sent it."""
    captured: Mapping[str, str] = field(default_factory=dict)
    """What its entry's ``{captures}`` took from the topic (``{"room": "kitchen"}``);
    also readable as attributes (``t.room``)."""

    @classmethod
    def of(
        cls,
        sensor: str,
        snap: SensorSnapshot | None,
        stale: bool,
        now: datetime,
        unit: str,
        stats_source: StatsSource | None = None,
        precision: int | None = None,
        windows: Sequence[timedelta] = DEFAULT_WINDOWS,
    ) -> SensorView:
        """Build the view of a sensor's snapshot (or of a sensor with no reading yet).

        Statistics render with the unit, and ``precision`` decimals (default 1).
        """
        names = stat_names(windows)
        if snap is None:
            return cls(sensor, None, unit, None, None, True, None, stats=dict.fromkeys(names))
        by_window = {
            window: stats_source.stats(sensor, window, now) if stats_source else None
            for window in windows
        }
        # The trend compares the value with the shortest window's mean (the last hour's).
        shortest = by_window[min(windows)] if windows else None
        unit = snap.unit or unit
        known = snap.at != UNKNOWN_TIME  # else a retained reading of unknown age
        return cls(
            sensor,
            snap.value,
            unit,
            snap.at if known else None,
            now - snap.at if known else None,
            stale,
            snap.previous,
            trend=trend_of(snap.value, shortest),
            offline=snap.offline,
            stats={
                name: _measure(by_window[w], stat, unit, precision)
                for name, (stat, w) in names.items()
            },
            precision=precision,
        )

    def __getattr__(self, name: str) -> Measure | None:
        # Called only for names that are not fields: the window statistics.
        stats = self.__dict__.get("stats", {})
        if name in stats:
            return stats[name]  # type: ignore[no-any-return]
        captured = self.__dict__.get("captured", {})
        if name in captured:
            return captured[name]  # type: ignore[no-any-return]
        raise AttributeError(f"sensor {self.__dict__.get('id')!r} has no attribute {name!r}")

    def __str__(self) -> str:
        return format_value(self.value, self.unit, self.precision)


def make_environment(*, allow_markup: bool = False) -> BoundedSandbox:
    """The sandboxed Jinja2 environment every template of the gateway runs in.

    Unless ``allow_markup``, every ``{{ ... }}`` output is passed through
    :func:`defuse_markup`: values come from MQTT and must not add mentions or links.
    """
    env = BoundedSandbox(
        undefined=jinja2.StrictUndefined,
        autoescape=False,
        keep_trailing_newline=False,
        finalize=_plain if allow_markup else _defused,
    )
    env.filters.update(FILTERS)
    return env


def _plain(value: object) -> object:
    # An unknown statistic (no readings in the window yet) reads "n/a", never "None";
    # text never brings controls or bidi overrides, even where markup is allowed.
    return "n/a" if value is None else clean_text(str(value))


def _defused(value: object) -> str:
    return defuse_markup(str(_plain(value)))


_ENV = make_environment()
_MARKUP_ENV = make_environment(allow_markup=True)


def render(source: str, context: Mapping[str, Any], *, allow_markup: bool = False) -> str:
    """Render one template completely, or raise ComposeError (never half a text)."""
    env = _MARKUP_ENV if allow_markup else _ENV
    try:
        return render_bounded(env.from_string(source), context).strip()
    except jinja2.TemplateError as exc:
        raise ComposeError(f"template error: {exc}") from exc
    except RenderLimitError as exc:
        raise ComposeError(f"template error: {exc}") from exc
    except RecursionError:
        raise ComposeError("template error: recursion too deep") from None
    except (ArithmeticError, TypeError, ValueError, AttributeError, MemoryError) as exc:
        raise ComposeError(f"template error: {type(exc).__name__}: {exc}") from exc


class Composer:
    """Builds posts for rules from the current state, with their images."""

    def __init__(
        self,
        config: GatewayConfig,
        state: StateStore,
        media_dir: Path,
        *,
        frames: FrameStore | None = None,
        history: HistorySource | None = None,
        fitter: MediaFitter | None = None,
    ) -> None:
        """``frames`` stores pulled frames (default: a store under ``media_dir/frames``);
        ``history`` feeds charts (none: charts say "no data")."""
        self._config = config
        self._state = state
        self._media_dir = media_dir
        self._units = {s.id: s.unit for s in config.sensors}
        self._precision = {s.id: s.precision for s in config.sensors}
        self._windows = config.sensor_windows()
        self._entries = {s.id: s for s in config.sensors if s.captures}
        self._made_by: dict[str, SensorConfig | None] = {}
        """Sensor id → the ``{capture}`` entry that made it (None: no such entry)."""
        self._used: dict[str, set[str]] = {}
        """Rule id → the captured sensor names its templates use (``temp_kitchen``)."""
        self._frames = frames or FrameStore(media_dir / "frames", state)
        self._history = history
        self._builder: MediaBuilder | None = None
        self._fitter = fitter
        self.mention_counts: Callable[[datetime], Mapping[str, int]] | None = None
        """With conversations on: ``mentions.seen``/``answered``/``skipped`` (24 h) and
        ``mentions.today`` for templates (set by the gateway)."""

    # Pillow, the chart and caption code load with the first post that has an image.
    @property
    def _media(self) -> MediaBuilder:
        if self._builder is None:
            from gateway.media.attachments import MediaBuilder
            from gateway.media.sources import CameraFrames

            cameras = CameraFrames(self._config.cameras, self._state, self._frames)
            self._builder = MediaBuilder(
                self._config, cameras, self._frames, self._history, self._media_dir
            )
        return self._builder

    @property
    def fitter(self) -> MediaFitter:
        """Fits a post's images to each publisher (made on first use)."""
        if self._fitter is None:
            from gateway.media.fitting import MediaFitter
            from gateway.media.videoworker import VideoWorker

            self._fitter = MediaFitter(worker=VideoWorker.from_config(self._config))
        return self._fitter

    def is_stale(self, sensor: str, now: datetime) -> bool:
        """True when a sensor has no fresh reading."""
        return self._state.is_stale(sensor, now)

    def context(
        self,
        rule: RuleConfig,
        now: datetime,
        event: MessageEvent | None = None,
        readings: Mapping[str, SensorSnapshot] | None = None,
    ) -> dict[str, Any]:
        """The names a template sees: each sensor, ``now``, ``gateway``, ``rule``.

        ``on_message`` rules also see ``event`` (the decoded message) and ``topic``.
        ``readings`` (sensor values at trigger time) take precedence over the state.
        """
        readings = readings or {}
        views: dict[str, SensorView] = {}
        ctx: dict[str, Any] = {
            sensor: SensorView.of(
                sensor,
                readings.get(sensor) or self._state.get(sensor),
                self._state.is_stale(sensor, now),
                now,
                unit,
                self._state,
                self._precision[sensor],
                self._windows[sensor],
            )
            for sensor, unit in self._units.items()
        }
        view = partial(self._captured_view, now=now, readings=readings, views=views)
        for sensor in self._captured_used(rule):
            ctx.setdefault(sensor, view(sensor))
        ctx["family"] = partial(self._family, view)
        ctx.update(now=now, gateway=self._config.gateway.name, rule=rule.id)
        if self.mention_counts is not None:
            ctx["mentions"] = self.mention_counts(now)
        if event is not None:
            ctx.update(event=event.data, topic=event.topic)
        return ctx

    def _made(self, sensor: str) -> SensorConfig | None:
        """The ``{capture}`` entry that makes ``sensor`` (cached; None if none)."""
        if sensor in self._made_by:
            return self._made_by[sensor]
        spec = None
        if sensor not in self._units:
            found = self._config.sensor_for(sensor)
            spec = found if found is not None and found.captures else None
        if len(self._made_by) < 4 * self._config.state.max_sensors:
            self._made_by[sensor] = spec
        return spec

    def _captured_used(self, rule: RuleConfig) -> set[str]:
        used = self._used.get(rule.id)
        if used is None:
            names: set[str] = set()
            for _, source in template_sources(rule):
                names |= template_names(source)
            used = self._used[rule.id] = {n for n in names if self._made(n) is not None}
        return used

    def _captured_view(
        self,
        sensor: str,
        now: datetime,
        readings: Mapping[str, SensorSnapshot],
        views: dict[str, SensorView],
    ) -> SensorView:
        view = views.get(sensor)
        if view is None:
            spec = self._made(sensor)
            assert spec is not None
            view = SensorView.of(
                sensor,
                readings.get(sensor) or self._state.get(sensor),
                self._state.is_stale(sensor, now),
                now,
                spec.unit,
                self._state,
                spec.precision,
                self._windows[spec.id],
            )
            match = id_pattern(spec.id).fullmatch(sensor)
            captured = match.groupdict() if match else {}
            view = views[sensor] = replace(view, captured=captured)
        return view

    def _family(self, view: Callable[[str], SensorView], entry: str) -> list[SensorView]:
        """``family("temp_{room}")``: every sensor made from that entry so far, by id."""
        spec = self._entries.get(entry)
        if spec is None:
            raise ComposeError(f"family({entry!r}): not a sensor entry with captures")
        return [view(s) for s in sorted(self._state.sensors()) if self._made(s) is spec]

    def compose(
        self,
        rule: RuleConfig,
        now: datetime,
        targets: Mapping[str, Capabilities] | None = None,
        *,
        event: MessageEvent | None = None,
        use_fallback: bool = False,
        readings: Mapping[str, SensorSnapshot] | None = None,
    ) -> Post:
        """Render a rule's text and images into a post (not yet stored anywhere).

        ``targets`` (publisher id → capabilities) bound the size of a timelapse.
        ``use_fallback`` renders ``fallback_text`` instead of ``text`` (a required
        sensor is stale).  Raises :class:`PostSkippedError` when a ``skip_post``
        camera has no frame.
        """
        ctx = self.context(rule, now, event, readings)
        source = rule.fallback_text if use_fallback and rule.fallback_text else rule.text
        text = render(source, ctx, allow_markup=rule.allow_markup)
        if not text:
            raise ComposeError("the text template rendered to nothing")
        post_id = new_post_id()
        media = self._attachments(rule, post_id, ctx, now, targets or {})
        return Post(
            id=post_id, rule=rule.id, created_at=now, text=text, media=media, lang=rule.language
        )

    def fit_media(
        self, post: Post, targets: Mapping[str, Capabilities]
    ) -> dict[str, tuple[MediaItem, ...]]:
        """Each target's copy of the post's images, fitted to its limits."""
        if not post.media:
            return {pid: () for pid in targets}
        return self.fitter.fit_post(post, targets)

    def _attachments(
        self,
        rule: RuleConfig,
        post_id: str,
        ctx: Mapping[str, Any],
        now: datetime,
        targets: Mapping[str, Capabilities],
    ) -> tuple[MediaItem, ...]:
        if not (rule.images or rule.charts or rule.timelapse or rule.clip):
            return ()
        from gateway.media.attachments import smallest_budget
        from gateway.media.fitting import limits_for

        limits: list[ImageLimits] = [limits_for(caps) for caps in targets.values()]
        budget = smallest_budget({pid: caps.max_image_bytes for pid, caps in targets.items()})
        markup = rule.allow_markup
        makers = self._photo_makers(rule.images, post_id, ctx, now, limits, markup)
        for n, chart in enumerate(rule.charts, start=len(rule.images)):
            alt = render(chart.alt, ctx, allow_markup=markup)
            makers.append(partial(self._media.chart, post_id, n, chart, alt, now))
        if rule.timelapse is not None:
            lapse = rule.timelapse
            alt = render(lapse.alt, ctx, allow_markup=markup)
            caption = render(lapse.caption, ctx, allow_markup=markup) if lapse.caption else None
            makers.append(partial(self._media.timelapse, post_id, lapse, alt, now, budget, caption))
        if rule.clip is not None:
            clip = rule.clip
            alt = render(clip.alt, ctx, allow_markup=markup)
            caption = render(clip.caption, ctx, allow_markup=markup) if clip.caption else None
            makers.append(partial(self._media.clip, post_id, clip, alt, now, caption))
        return tuple(item for make in makers if (item := self._attach(rule.id, make)))

    def _photo_makers(
        self,
        images: Sequence[ImageSpec],
        post_id: str,
        ctx: Mapping[str, Any],
        now: datetime,
        limits: list[ImageLimits],
        markup: bool,
    ) -> list[Callable[[], MediaItem]]:
        makers: list[Callable[[], MediaItem]] = []
        for n, image in enumerate(images):
            caption = render(image.caption, ctx, allow_markup=markup) if image.caption else None
            alt = render(image.alt, ctx, allow_markup=markup)
            photo = partial(self._media.photo, post_id, n, image.camera, caption, alt, now)
            makers.append(partial(photo, limits))
        return makers

    def photos(
        self,
        owner: str,
        images: Sequence[ImageSpec],
        post_id: str,
        ctx: Mapping[str, Any],
        now: datetime,
        targets: Mapping[str, Capabilities],
    ) -> tuple[MediaItem, ...]:
        """The camera photos of ``images`` for a post that is no rule's (a reply to a
        mention; ``owner`` names it in the log).  A camera without a usable frame is
        left out, whatever its ``on_missing``: an answer still goes."""
        from gateway.media.fitting import limits_for

        limits = [limits_for(caps) for caps in targets.values()]
        out = []
        for make in self._photo_makers(images, post_id, ctx, now, limits, False):
            try:
                item = self._attach(owner, make)
            except PostSkippedError as exc:
                log.warning("%s: answering without a photo: %s", owner, exc)
                continue
            if item is not None:
                out.append(item)
        return tuple(out)

    @staticmethod
    def _attach(rule_id: str, make: Callable[[], MediaItem]) -> MediaItem | None:
        from gateway.media.attachments import MissingMediaError

        try:
            return make()
        except MissingMediaError as exc:
            if exc.on_missing == "skip_post":
                raise PostSkippedError(f"{exc} (on_missing = skip_post)") from exc
            log.warning("rule %s: posting without an image: %s", rule_id, exc)
            return None
        except OSError as exc:
            log.warning("rule %s: posting without an image: %s", rule_id, exc)
            return None
