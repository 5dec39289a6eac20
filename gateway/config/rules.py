"""``[[rules]]`` entries: triggers, guards, post text and attachments.

Part of the configuration; :mod:`gateway.config` re-exports these names.
Conditions, cron lines and quiet hours are languages of the rule engine: they are
checked by the :class:`RuleChecks` that :func:`gateway.config.validate_config` was
given (:mod:`gateway.rules.checks`), so this package never imports the engine.
Pydantic validators cannot take arguments, so the checks reach them through a
context variable set for the duration of one validation (:func:`checking_with`).
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from contextvars import ContextVar
from datetime import timedelta
from typing import Literal, Protocol

from pydantic import Field, field_validator, model_validator
from pydantic_core import PydanticCustomError

from gateway.config.durations import Duration
from gateway.config.sections import Identifier, Section

_LANGUAGE_TAG = re.compile(
    r"""
    (?P<language>[a-z]{2,3}(?:-[a-z]{3}){0,3})
    (?:-(?P<script>[a-z]{4}))?
    (?:-(?P<region>[a-z]{2}|[0-9]{3}))?
    (?:-(?:[a-z0-9]{5,8}|[0-9][a-z0-9]{3}))*
    (?:-[0-9a-wy-z](?:-[a-z0-9]{2,8})+)*
    (?:-x(?:-[a-z0-9]{1,8})+)?
    """,
    re.VERBOSE | re.IGNORECASE,
)
"""A well-formed BCP 47 ``langtag`` (RFC 5646 section 2.1): language (with extended
subtags), script, region, variants, extensions, private use.  The reserved 4-letter and
registered 5-8 letter primary subtags are left out: none is in use, and ``english`` is
a mistake, not a tag."""


def language_tag(value: str) -> str:
    """``value`` as a well-formed BCP 47 tag in its conventional case (``zh-Hant-TW``).

    Raises ValueError for a tag that is not well-formed.
    """
    match = _LANGUAGE_TAG.fullmatch(value)
    if match is None:
        raise ValueError(f"not a BCP 47 language tag: {value!r} (e.g. en, pt-BR, zh-Hant-TW)")
    out, singleton = [], False
    for n, subtag in enumerate(value.split("-")):
        singleton = singleton or len(subtag) == 1
        if n and not singleton and len(subtag) == 4 and subtag.isalpha():
            out.append(subtag.title())  # script
        elif n and not singleton and len(subtag) == 2:
            out.append(subtag.upper())  # region
        else:
            out.append(subtag.lower())
    return "-".join(out)


class ImageSpec(Section):
    """One image of a rule: a camera's latest frame with an optional caption."""

    camera: Identifier = Field(description="Camera id.")
    caption: str | None = Field(default=None, description="Template drawn onto the image.")
    alt: str = Field(
        min_length=1, description="Alt-text template (required: posts are for everyone)."
    )


class ChartSpec(Section):
    """One chart of a rule: a line chart of a sensor's recent history."""

    sensor: Identifier = Field(description="Sensor id (numeric readings).")
    window: Duration = Field(default=timedelta(hours=24), description="How far back to draw.")
    title: str | None = Field(default=None, description="Chart title; default: the sensor id.")
    alt: str = Field(min_length=1, description="Alt-text template (required).")


class TimelapseSpec(Section):
    """A rule's timelapse: an animation of a camera's archived frames."""

    camera: Identifier = Field(description="Camera id.")
    window: Duration = Field(default=timedelta(hours=24), description="How far back to look.")
    frames: int = Field(default=48, ge=2, le=300, description="Frames in the animation (at most).")
    format: Literal["webp", "gif", "mp4"] = Field(
        default="webp",
        description=(
            "webp (smaller), gif (where a service needs it) or mp4 (H.264 video, re-encoded"
            " to each service's video limits; services without video get its poster frame)."
        ),
    )
    caption: str | None = Field(
        default=None, description="Template drawn on every frame (mp4 only)."
    )
    fps: float = Field(default=8, gt=0, le=30, description="Frames per second.")
    max_side: int = Field(default=640, ge=160, le=2048, description="Longest side in pixels.")
    alt: str = Field(min_length=1, description="Alt-text template (required).")


class ClipSpec(Section):
    """A rule's clip: an MP4 of the last ``seconds`` of a camera's frames."""

    camera: Identifier = Field(description="Camera id.")
    seconds: float = Field(
        default=10, gt=0, le=180, description="Length: the frames of the last this many seconds."
    )
    fps: float = Field(default=8, gt=0, le=30, description="Frames per second of the video.")
    max_side: int = Field(default=1280, ge=160, le=2048, description="Longest side in pixels.")
    caption: str | None = Field(default=None, description="Template drawn on every frame.")
    alt: str = Field(min_length=1, description="Alt-text template (required).")


class RuleChecks(Protocol):
    """What only the rule engine can judge: each method raises ValueError with the reason."""

    def condition(self, source: str) -> None:
        """A ``when``/``clear_when``/``on_message.when`` condition parses."""
        ...

    def cron(self, source: str) -> None:
        """A 5-field crontab line is valid."""
        ...

    def quiet_hours(self, source: str) -> None:
        """A ``"HH:MM-HH:MM"`` window is valid."""
        ...

    def rule_problems(self, rule: RuleConfig) -> Iterable[str]:
        """Problems of a rule's options that depend on its condition (``changes()``...)."""
        ...


_checks: ContextVar[RuleChecks | None] = ContextVar("gateway_config_checks", default=None)


@contextmanager
def checking_with(checks: RuleChecks | None) -> Iterator[None]:
    """Validate with ``checks`` inside this block (None: the shape only)."""
    token = _checks.set(checks)
    try:
        yield
    finally:
        _checks.reset(token)


def active_checks() -> RuleChecks | None:
    """The checks of the validation in progress, if any."""
    return _checks.get()


EngineCheck = Literal["condition", "cron", "quiet_hours"]


def _engine_check(kind: EngineCheck, value: str | None, message: str = "{error}") -> str | None:
    """``value`` checked by the active checks' method ``kind`` (unchecked without any)."""
    checks = _checks.get()
    if value is None or checks is None:
        return value
    try:
        getattr(checks, kind)(value)
    except ValueError as exc:
        raise PydanticCustomError(kind, message, {"error": str(exc)}) from None
    return value


def _check_condition(value: str | None) -> str | None:
    return _engine_check("condition", value)


class OnMessage(Section):
    """``on_message``: fire a rule for each (matching) message on an MQTT topic."""

    topic: str = Field(min_length=1, description="MQTT topic or filter, e.g. frigate/events.")
    when: str | None = Field(
        default=None,
        description="Condition over the message, e.g. \"event.type == 'new'\"; JSON fields"
        " are event.<path>.",
    )

    @field_validator("when")
    @classmethod
    def _condition(cls, value: str | None) -> str | None:
        return _check_condition(value)


class OnMention(Section):
    """``on_mention``: fire a rule for each new mention (or MQTT question) that matches."""

    match: tuple[str, ...] = Field(
        default=(),
        description="Keywords (any, case-insensitive) the mention must contain; empty: any.",
    )
    publishers: tuple[str, ...] = Field(
        default=(), description="Only mentions read by these publishers (`ask`: MQTT); empty: all."
    )


class RuleConfig(Section):
    """``[[rules]]``: when to post, what to say, and where."""

    id: Identifier = Field(description="Rule name, shown in history and used by `preview`.")
    every: Duration | None = Field(default=None, description="Post at this interval, e.g. 1h.")
    cron: str | None = Field(
        default=None, description="Crontab schedule in the gateway's time zone, e.g. '0 8 * * *'."
    )
    jitter: Duration | None = Field(
        default=None, description="Delay each scheduled run by a random 0..jitter."
    )
    when: str | None = Field(
        default=None, description="Condition over sensors, e.g. 'water_temp > 30'."
    )
    hold: Duration | None = Field(
        default=None,
        alias="for",
        description="`when` must hold this long before the rule fires, e.g. 10m.",
    )
    clear_when: str | None = Field(
        default=None, description="Re-arm a fired `when` rule only once this condition is true."
    )
    clear_below: float | None = Field(
        default=None, description="Re-arm once the (single) sensor of `when` is below this."
    )
    clear_above: float | None = Field(
        default=None, description="Re-arm once the (single) sensor of `when` is above this."
    )
    on_mention: OnMention | None = Field(
        default=None,
        description="Fire for each new mention that matches (needs [conversations] enabled).",
    )
    on_message: OnMessage | None = Field(
        default=None, description="Fire on messages of an MQTT topic; templates see `event`."
    )
    cooldown: Duration | None = Field(
        default=None, description="At least this long between two posts of the rule."
    )
    max_per_day: int | None = Field(
        default=None, ge=1, description="At most this many posts per local day."
    )
    quiet_hours: str | None = Field(
        default=None, description="No posts in this daily window, e.g. '23:00-07:00'."
    )
    require_fresh: tuple[str, ...] = Field(
        default=(), description="Sensors that must be fresh; else skip or use fallback_text."
    )
    fallback_text: str | None = Field(
        default=None,
        min_length=1,
        description="Template used when a require_fresh sensor is stale.",
    )
    dedupe_window: Duration | None = Field(
        default=None,
        description="Skip a post whose text equals the rule's previous one within this.",
    )
    overflow: Literal["shorten", "thread"] = Field(
        default="shorten", description="Too long: shorten with an ellipsis, or split into a thread."
    )
    allow_markup: bool = Field(
        default=False,
        description="Let sensor/event values carry @mentions and links (off: they are defused).",
    )
    video_fallback: Literal["poster", "skip"] = Field(
        default="poster",
        description="A publisher that takes no video (or whose limits the video cannot be "
        "fitted to) gets the video's poster frame, or (skip) nothing of this post.",
    )
    video_note: str | None = Field(
        default=None,
        min_length=1,
        max_length=200,
        description="Plain text added below the text of a post that goes with the poster "
        'frame instead of its video, e.g. "The timelapse is on mastodon.social/@poolcam".',
    )
    text: str = Field(min_length=1, description="Jinja2 template of the post text.")
    images: tuple[ImageSpec, ...] = Field(default=(), description="Images to attach.")
    charts: tuple[ChartSpec, ...] = Field(default=(), description="Charts to attach.")
    timelapse: TimelapseSpec | None = Field(default=None, description="A timelapse to attach.")
    clip: ClipSpec | None = Field(
        default=None, description="A clip (MP4) of the camera's last seconds to attach."
    )
    publish_to: tuple[str, ...] = Field(min_length=1, description="Publisher ids.")
    language: str | None = Field(
        default=None,
        pattern=r"^[A-Za-z]{2,3}(-[A-Za-z0-9]{1,8})*\Z",
        description="BCP 47 language tag (en, pt-BR, zh-Hant-TW, sr-Latn, es-419).",
    )

    @field_validator("language")
    @classmethod
    def _language_tag(cls, value: str | None) -> str | None:
        return None if value is None else language_tag(value)

    @field_validator("when", "clear_when")
    @classmethod
    def _conditions(cls, value: str | None) -> str | None:
        return _check_condition(value)

    @field_validator("cron")
    @classmethod
    def _valid_cron(cls, value: str | None) -> str | None:
        return _engine_check("cron", value, "invalid cron: {error}")

    @field_validator("quiet_hours")
    @classmethod
    def _quiet_hours(cls, value: str | None) -> str | None:
        return _engine_check("quiet_hours", value)

    @model_validator(mode="after")
    def _one_trigger(self) -> RuleConfig:
        kinds = ("every", "cron", "when", "on_message", "on_mention")
        triggers = [name for name in kinds if getattr(self, name) is not None]
        if len(triggers) != 1:
            raise PydanticCustomError(
                "trigger",
                "set exactly one of `every`, `cron`, `when`, `on_message` or `on_mention`",
            )
        if self.every is not None and self.every.total_seconds() < 1:
            raise PydanticCustomError("trigger", "`every` must be at least 1s")
        for problem in _condition_option_problems(self):
            raise PydanticCustomError("condition_options", problem)
        return self

    @property
    def is_scheduled(self) -> bool:
        """True for `every`/`cron` rules."""
        return self.every is not None or self.cron is not None


def _condition_option_problems(rule: RuleConfig) -> Iterator[str]:
    if rule.jitter is not None and not rule.is_scheduled:
        yield "`jitter` needs `every` or `cron`"
    only_when = ("hold", "clear_when", "clear_below", "clear_above")
    if rule.when is None and any(getattr(rule, name) is not None for name in only_when):
        yield "`for`, `clear_when`, `clear_below` and `clear_above` need `when`"
    clears = [n for n in only_when[1:] if getattr(rule, n) is not None]
    if len(clears) > 1:
        yield f"set at most one of {', '.join(clears)}"
    checks = _checks.get()
    if rule.when is not None and checks is not None:
        yield from checks.rule_problems(rule)
