"""Which sensors and cameras a topic belongs to.

Exact topics are a dict lookup; filters with ``+`` or ``#`` are checked in order.
The router is built once from the config and never changes, so paho's thread
reads it without locks.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Generic, TypeVar

T = TypeVar("T")


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
