"""``[conversations]`` (safety of answering mentions) and ``[[replies]]`` (what to answer).

Shape only, like every config class: the reply templates are checked by the engine
(:mod:`gateway.rules.checks`), the regexes here because they are plain Python.
"""

from __future__ import annotations

import re
from datetime import timedelta

from pydantic import Field, field_validator

from gateway.config.durations import Duration
from gateway.config.rules import ImageSpec, _engine_check
from gateway.config.sections import Identifier, Section


class ConversationsSection(Section):
    """``[conversations]``: when the gateway reads mentions and whom it never answers."""

    enabled: bool = False
    """Read mentions of every publisher that has an account and answer them."""
    poll_interval: Duration = timedelta(seconds=60)
    streaming: bool = True
    """Follow the server's streaming API where it offers one (Mastodon), polling as the
    fallback and after a drop; off: always poll every ``poll_interval``."""
    max_age: Duration = timedelta(hours=1)
    """Mentions older than this are never answered (a gateway back after a day offline)."""
    cooldown: Duration = timedelta(minutes=2)
    """Per asker: no second answer within this time."""
    per_asker_hourly: int = Field(default=5, ge=0)
    global_hourly: int = Field(default=60, ge=0)
    answer_bots: bool = False
    """Answer accounts marked as bots; off so two things never talk to each other forever."""
    allow_accounts: tuple[str, ...] = ()
    """When not empty, only these accounts (``user@host`` or ``user``) are answered."""
    deny_accounts: tuple[str, ...] = ()
    allow_domains: tuple[str, ...] = ()
    deny_domains: tuple[str, ...] = ()
    quiet_hours: str | None = None
    """``"HH:MM-HH:MM"`` in the gateway's time zone (may cross midnight): mentions that
    come in then are not answered, then or later (reason ``quiet hours``)."""
    mqtt: bool = True
    """Answer questions published on ``<status_prefix>/<name>/ask`` (JSON ``{"id",
    "from", "text"}``) on ``<status_prefix>/<name>/answer``."""
    quote_chars: int = Field(default=40, ge=0, le=200)
    """The longest quote of the asker's text a reply can echo (``mention.quote``)."""

    @field_validator("quiet_hours")
    @classmethod
    def _quiet_hours(cls, value: str | None) -> str | None:
        return _engine_check("quiet_hours", value)

    @field_validator("allow_accounts", "deny_accounts", "allow_domains", "deny_domains")
    @classmethod
    def _lower(cls, value: tuple[str, ...]) -> tuple[str, ...]:
        return tuple(v.strip().lstrip("@").lower() for v in value)


class ReplyConfig(Section):
    """``[[replies]]``: one kind of answer, chosen by ``match``."""

    id: Identifier
    match: tuple[str, ...] = ()
    """Keywords (any matches, case-insensitive); empty with ``fallback`` set."""
    regex: str | None = None
    text: str
    """A template: ``asker``, ``mention`` (``quote``, ``publisher``) and every sensor."""
    publish_to: tuple[str, ...] = ()
    """Defaults to the publisher the mention came from."""
    language: str | None = None
    images: tuple[ImageSpec, ...] = ()
    """Photos to answer with (``camera``, ``alt``, ``caption`` templates, as a rule's)."""
    fresh: bool = True
    """Ask each MQTT camera of ``images`` for a new frame first (``<topic>/capture``, what
    ``things-device camera`` answers) and wait up to 5 s for it; else its latest frame."""
    fallback: bool = False
    """Answer mentions no other reply matches (e.g. a list of what the thing can answer)."""

    @field_validator("regex")
    @classmethod
    def _compiles(cls, value: str | None) -> str | None:
        if value is not None:
            try:
                re.compile(value, re.IGNORECASE)
            except re.error as exc:
                raise ValueError(f"not a regex: {exc}") from None
        return value
