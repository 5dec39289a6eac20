"""Which sensors and cameras a topic belongs to.

Exact topics are a dict lookup; filters with ``+`` or ``#`` are checked in order.
A sensor topic may also name a level, ``sensors/{room}/temperature``: it matches
like ``+`` and the level's text is captured for the sensor id.  The router is
built once from the config and never changes, so paho's thread reads it without
locks.  Shared subscriptions (``$share/<group>/<filter>``) only change what is
*subscribed*; incoming messages carry the plain topic, matched against the plain
filter.
"""

from __future__ import annotations

import re
import unicodedata
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Generic, TypeVar

T = TypeVar("T")

_CAPTURE_LEVEL = re.compile(r"^\{([A-Za-z_][A-Za-z0-9_]*)\}$")
_UNSAFE = re.compile(r"[^\w]+")  # \w: letters and digits of any script, and "_"

MAX_CAPTURE_LENGTH = 64
"""A captured level longer than this (in characters) makes no sensor: configured ids
are at most 64 characters too, and each id is stored with every reading."""


def topic_matches(filter_: str, topic: str) -> bool:
    """MQTT topic filter matching (``+`` one level, ``#`` the rest)."""
    f_parts = filter_.split("/")
    t_parts = topic.split("/")
    if topic.startswith("$") and f_parts[0] in ("+", "#"):
        return False  # MQTT: wildcards at the root never match $SYS-style topics
    for i, part in enumerate(f_parts):
        if part == "#":
            return True
        if i >= len(t_parts):
            return False
        if part != "+" and part != t_parts[i]:
            return False
    return len(f_parts) == len(t_parts)


def is_filter(topic: str) -> bool:
    """True when a subscription topic contains wildcards."""
    return "+" in topic.split("/") or "#" in topic.split("/")


def filter_covers(wide: str, narrow: str) -> bool:
    """True when every topic that ``narrow`` matches is matched by ``wide`` too."""
    w_parts, n_parts = wide.split("/"), narrow.split("/")
    if narrow.startswith("$") and w_parts[0] in ("+", "#"):
        return False
    for i, part in enumerate(w_parts):
        if part == "#":
            return True
        if i >= len(n_parts) or n_parts[i] == "#":
            return False
        if part != "+" and (n_parts[i] == "+" or part != n_parts[i]):
            return False
    return len(w_parts) == len(n_parts)


def minimal_filters(filters: Iterable[str]) -> list[str]:
    """The filters not covered by another one, in order.

    Overlapping subscriptions would make an MQTT 5 broker deliver a message once
    per matching filter (and a shared subscription could hand each copy to a
    different gateway); the router matches every target anyway.
    """
    unique = list(dict.fromkeys(filters))
    return [f for f in unique if not any(g != f and filter_covers(g, f) for g in unique)]


def shared(filter_: str, group: str | None) -> str:
    """The subscription for ``filter_``: ``$share/<group>/<filter>`` when a group is set."""
    return f"$share/{group}/{filter_}" if group else filter_


def safe_id_part(text: str) -> str | None:
    """A captured topic level made fit for a sensor id, or None when it is refused.

    Letters and digits of every script are kept (``кухня`` and ``спальня`` stay two
    rooms), runs of anything else become ``_`` (``living room`` → ``living_room``).
    Refused: a level over :data:`MAX_CAPTURE_LENGTH` characters, or one with no
    letter or digit at all.  Two levels that still give the same part (``living
    room`` and ``living-room``) are told apart by the route table, which refuses the
    second (:class:`gateway.ingest.routes.RouteTable`).
    """
    if len(text) > MAX_CAPTURE_LENGTH:
        return None
    part = _UNSAFE.sub("_", unicodedata.normalize("NFC", text)).strip("_")
    return part or None


@dataclass(frozen=True, slots=True)
class TopicPattern:
    """A topic with optional ``{name}`` levels: its MQTT filter and its captures.

    ``filter`` is what is subscribed (captures become ``+``); :meth:`captures`
    extracts the captured levels from a matching topic.
    """

    source: str
    filter: str
    names: tuple[tuple[int, str], ...]

    @classmethod
    def parse(cls, source: str) -> TopicPattern:
        """Compile ``sensors/{room}/temperature`` into filter ``sensors/+/temperature``."""
        levels = source.split("/")
        names = []
        for i, level in enumerate(levels):
            match = _CAPTURE_LEVEL.match(level)
            if match:
                names.append((i, match.group(1)))
                levels[i] = "+"
        return cls(source, "/".join(levels), tuple(names))

    def captures(self, topic: str) -> dict[str, str]:
        """The captured levels of a topic this pattern matches."""
        if not self.names:
            return {}
        levels = topic.split("/")
        return {name: levels[i] for i, name in self.names}

    def expand(self, captures: dict[str, str]) -> str | None:
        """The source with its ``{name}`` levels filled in; None if a capture is missing."""
        try:
            return self.source.format_map(captures) if self.names else self.source
        except (KeyError, ValueError, IndexError):
            return None


@dataclass
class TopicRouter(Generic[T]):
    """Maps incoming topics to the targets (sensor or camera specs) subscribed to them."""

    _exact: dict[str, list[T]] = field(default_factory=dict)
    _filters: list[tuple[str, T]] = field(default_factory=list)

    def add(self, topic: str, target: T) -> None:
        """Route ``topic`` (exact or a filter) to ``target``."""
        if is_filter(topic):
            self._filters.append((topic, target))
        else:
            self._exact.setdefault(topic, []).append(target)

    def match(self, topic: str) -> list[T]:
        """Every target whose topic or filter matches ``topic``."""
        found = list(self._exact.get(topic, ()))
        for filter_, target in self._filters:
            if topic_matches(filter_, topic):
                found.append(target)
        return found

    def subscriptions(self) -> list[str]:
        """The distinct topics and filters to subscribe to."""
        topics: Iterable[str] = [*self._exact, *(f for f, _ in self._filters)]
        return list(dict.fromkeys(topics))
