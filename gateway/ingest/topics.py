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


class _Node:
    """One level of a topic trie: children by level text, and the filter ending here."""

    __slots__ = ("children", "end")

    def __init__(self) -> None:
        self.children: dict[str, _Node] = {}
        self.end = False


def _trie(filters: Iterable[str]) -> _Node:
    root = _Node()
    for filter_ in filters:
        node = root
        for level in filter_.split("/"):
            child = node.children.get(level)
            if child is None:
                child = node.children[level] = _Node()
            node = child
        node.end = True
    return root


def _covered(root: _Node, levels: list[str]) -> bool:
    """True when a filter other than ``levels`` in the trie covers ``levels``.

    Walks only the branches that can cover (the literal level, ``+``, ``#``), so a
    filter costs its depth times the wildcard fan-out, not a pass over every filter.
    """
    dollar = levels[0].startswith("$")
    # (node, depth, whether the path so far differs from ``levels`` itself)
    stack: list[tuple[_Node, int, bool]] = [(root, 0, False)]
    while stack:
        node, i, other = stack.pop()
        wildcards_allowed = not (dollar and i == 0)
        hash_ = node.children.get("#")
        # "#" here covers the rest; it is ``levels`` itself only if that ends in "#" here
        itself = not other and i == len(levels) - 1 and levels[i] == "#"
        if wildcards_allowed and hash_ is not None and hash_.end and not itself:
            return True
        if i == len(levels):
            if node.end and other:
                return True
            continue
        level = levels[i]
        if level == "#":
            continue  # only a "#" covers a "#"
        plus = node.children.get("+") if wildcards_allowed else None
        if plus is not None:
            stack.append((plus, i + 1, other or level != "+"))
        if level != "+":
            literal = node.children.get(level)
            if literal is not None:
                stack.append((literal, i + 1, other))
    return False


def minimal_filters(filters: Iterable[str]) -> list[str]:
    """The filters not covered by another one, in order.

    Overlapping subscriptions would make an MQTT 5 broker deliver a message once
    per matching filter (and a shared subscription could hand each copy to a
    different gateway); the router matches every target anyway.  A topic trie keeps
    this linear in the number of filters: 10,000 declared sensors are checked on
    every (re)connect, in the MQTT thread.
    """
    unique = list(dict.fromkeys(filters))
    root = _trie(unique)
    return [f for f in unique if not _covered(root, f.split("/"))]


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


class _MatchNode(Generic[T]):
    """One level of the router's filter trie: children by level, targets ending here."""

    __slots__ = ("children", "targets")

    def __init__(self) -> None:
        self.children: dict[str, _MatchNode[T]] = {}
        self.targets: list[tuple[int, T]] = []


@dataclass
class TopicRouter(Generic[T]):
    """Maps incoming topics to the targets (sensor or camera specs) subscribed to them.

    Filters sit in a trie, so the first message on a topic costs its depth times the
    wildcard fan-out rather than one test per declared filter.
    """

    _exact: dict[str, list[T]] = field(default_factory=dict)
    _filters: list[tuple[str, T]] = field(default_factory=list)
    _root: _MatchNode[T] = field(default_factory=_MatchNode)

    def add(self, topic: str, target: T) -> None:
        """Route ``topic`` (exact or a filter) to ``target``."""
        if not is_filter(topic):
            self._exact.setdefault(topic, []).append(target)
            return
        node = self._root
        for level in topic.split("/"):
            child = node.children.get(level)
            if child is None:
                child = node.children[level] = _MatchNode()
            node = child
        node.targets.append((len(self._filters), target))
        self._filters.append((topic, target))

    def match(self, topic: str) -> list[T]:
        """Every target whose topic or filter matches ``topic`` (exact ones first, then
        filters in the order they were added)."""
        found = list(self._exact.get(topic, ()))
        if not self._filters:
            return found
        levels = topic.split("/")
        dollar = topic.startswith("$")
        hits: list[tuple[int, T]] = []
        stack: list[tuple[_MatchNode[T], int]] = [(self._root, 0)]
        while stack:
            node, i = stack.pop()
            wildcards_allowed = not (dollar and i == 0)
            if wildcards_allowed:
                rest = node.children.get("#")
                if rest is not None:
                    hits.extend(rest.targets)
            if i == len(levels):
                hits.extend(node.targets)
                continue
            literal = node.children.get(levels[i])
            if literal is not None:
                stack.append((literal, i + 1))
            plus = node.children.get("+") if wildcards_allowed else None
            if plus is not None and levels[i] != "+":
                stack.append((plus, i + 1))
        hits.sort(key=lambda hit: hit[0])
        found.extend(target for _, target in hits)
        return found

    def subscriptions(self) -> list[str]:
        """The distinct topics and filters to subscribe to."""
        topics: Iterable[str] = [*self._exact, *(f for f, _ in self._filters)]
        return list(dict.fromkeys(topics))
