"""Composition: a rule's templates plus the current state become a :class:`Post`.

Templates run in Jinja2's sandbox: they come from the config file, the values
they see come from MQTT.  Unknown names are errors at ``check-config`` time; a
template that fails at run time raises :class:`ComposeError` and no half-made
post is ever stored.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime, timedelta
from pathlib import Path
from typing import TYPE_CHECKING, Any

import jinja2
from jinja2 import meta
from jinja2.sandbox import SandboxedEnvironment

from gateway.media.images import Caption, ImageError, ImageLimits, render_image
from gateway.model import MediaItem, Post, Value, new_post_id
from gateway.state import SensorSnapshot, StateStore

if TYPE_CHECKING:
    from gateway.config import GatewayConfig, RuleConfig

log = logging.getLogger(__name__)

POST_IMAGE_LIMITS = ImageLimits(max_bytes=1_000_000, max_pixels=4_194_304, max_side=2048)
"""What every built-in service accepts (1 MB is Bluesky's cap); per-publisher fitting refines it."""
BUILTIN_NAMES = frozenset({"now", "gateway", "rule"})
_TIGHT_UNITS = ("%", "°")


class ComposeError(Exception):
    """A post could not be composed (template error, missing value)."""


def format_value(value: Value | None, unit: str = "", precision: int = 1) -> str:
    """A reading as people read it: ``24.3 °C``, ``61%``, ``open``; ``n/a`` when unknown."""
    if value is None:
        return "n/a"
    if isinstance(value, bool):
        text = "on" if value else "off"
    elif isinstance(value, float):
        text = str(int(value)) if value.is_integer() else f"{value:.{precision}f}"
    else:
        text = str(value)
    if not unit:
        return text
    return f"{text}{unit}" if unit in _TIGHT_UNITS else f"{text} {unit}"


@dataclass(frozen=True)
class SensorView:
    """What a template sees of one sensor: ``{{ water_temp }}`` renders value and unit."""

    id: str
    value: Value | None
    unit: str
    at: datetime | None
    age: timedelta | None
    stale: bool
    previous: Value | None

    @classmethod
    def of(
        cls, sensor: str, snap: SensorSnapshot | None, stale: bool, now: datetime, unit: str
    ) -> SensorView:
        """Build the view of a sensor's snapshot (or of a sensor with no reading yet)."""
        if snap is None:
            return cls(sensor, None, unit, None, None, True, None)
        return cls(
            sensor, snap.value, snap.unit or unit, snap.at, now - snap.at, stale, snap.previous
        )

    def __str__(self) -> str:
        return format_value(self.value, self.unit)


def _time(value: datetime, fmt: str = "%H:%M") -> str:
    return value.strftime(fmt)


def _date(value: datetime, fmt: str = "%Y-%m-%d") -> str:
    return value.strftime(fmt)


def _number(value: object, precision: int = 1) -> str:
    raw = value.value if isinstance(value, SensorView) else value
    if isinstance(raw, int | float) and not isinstance(raw, bool):
        return f"{float(raw):.{precision}f}"
    return "n/a" if raw is None else str(raw)


def make_environment() -> SandboxedEnvironment:
    """The sandboxed Jinja2 environment every template of the gateway runs in."""
    env = SandboxedEnvironment(
        undefined=jinja2.StrictUndefined, autoescape=False, keep_trailing_newline=False
    )
    env.filters.update(time=_time, date=_date, number=_number)
    return env


_ENV = make_environment()


def template_problems(rule: RuleConfig, config: GatewayConfig) -> list[str]:
    """Syntax errors and unknown names in a rule's templates, as ``field: message`` lines."""
    known = BUILTIN_NAMES | {s.id for s in config.sensors}
    sources = [("text", rule.text)]
    for i, image in enumerate(rule.images):
        sources.append((f"images[{i}].alt", image.alt))
        if image.caption is not None:
            sources.append((f"images[{i}].caption", image.caption))
    problems = []
    for name, source in sources:
        try:
            ast = _ENV.parse(source)
        except jinja2.TemplateSyntaxError as exc:
            problems.append(f"{name}: template syntax error on line {exc.lineno}: {exc.message}")
            continue
        for unknown in sorted(meta.find_undeclared_variables(ast) - known):
            problems.append(
                f"{name}: unknown name {unknown!r} (not a sensor id or now/gateway/rule)"
            )
    return problems


def render(source: str, context: Mapping[str, Any]) -> str:
    """Render one template; any failure becomes a ComposeError."""
    try:
        return _ENV.from_string(source).render(context).strip()
    except jinja2.TemplateError as exc:
        raise ComposeError(f"template error: {exc}") from exc
    except (ArithmeticError, TypeError, ValueError, AttributeError) as exc:
        raise ComposeError(f"template error: {type(exc).__name__}: {exc}") from exc


class Composer:
    """Builds posts for rules from the current state."""

    def __init__(self, config: GatewayConfig, state: StateStore, media_dir: Path) -> None:
        self._config = config
        self._state = state
        self._media_dir = media_dir
        self._units = {s.id: s.unit for s in config.sensors}
        self._cameras = {c.id: c for c in config.cameras}

    def context(self, rule: RuleConfig, now: datetime) -> dict[str, Any]:
        """The names a template sees: each sensor, ``now``, ``gateway``, ``rule``."""
        ctx: dict[str, Any] = {
            sensor: SensorView.of(
                sensor, self._state.get(sensor), self._state.is_stale(sensor, now), now, unit
            )
            for sensor, unit in self._units.items()
        }
        ctx.update(now=now, gateway=self._config.gateway.name, rule=rule.id)
        return ctx

    def compose(self, rule: RuleConfig, now: datetime) -> Post:
        """Render a rule's text and images into a post (not yet stored anywhere)."""
        ctx = self.context(rule, now)
        text = render(rule.text, ctx)
        if not text:
            raise ComposeError("the text template rendered to nothing")
        post_id = new_post_id()
        media = tuple(
            item
            for n, spec in enumerate(rule.images)
            if (item := self._image(post_id, n, spec.camera, spec.caption, spec.alt, ctx, now))
        )
        return Post(
            id=post_id, rule=rule.id, created_at=now, text=text, media=media, lang=rule.language
        )

    def _image(
        self,
        post_id: str,
        n: int,
        camera: str,
        caption: str | None,
        alt: str,
        ctx: Mapping[str, Any],
        now: datetime,
    ) -> MediaItem | None:
        frame = self._state.latest_frame(camera)
        if frame is None or now - frame.at > self._cameras[camera].max_age:
            log.warning("camera %s: no fresh frame, posting without it", camera)
            return None
        caption_text = render(caption, ctx) if caption else None
        alt_text = render(alt, ctx)
        dest = self._media_dir / post_id / f"{n}.jpg"
        try:
            out = render_image(
                frame.path,
                dest,
                limits=POST_IMAGE_LIMITS,
                caption=Caption(caption_text) if caption_text else None,
            )
        except (ImageError, OSError) as exc:
            log.warning("camera %s: frame %s unusable: %s", camera, frame.path.name, exc)
            return None
        return MediaItem(out.path, out.mime, out.width, out.height, out.bytes, alt_text)
