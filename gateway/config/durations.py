"""Durations in config files: ``"90s"``, ``"15m"``, ``"1h30m"``, ``"2d"`` or seconds.

Kept apart from :mod:`gateway.config` so publisher configs (which that module
imports) can use :data:`Duration` too.
"""

from __future__ import annotations

import re
from datetime import timedelta
from typing import Annotated

from pydantic import BeforeValidator
from pydantic_core import PydanticCustomError

_DURATION_PART = re.compile(r"(\d+(?:\.\d+)?)\s*(ms|s|m|h|d|w)")
_DURATION_UNITS = {"ms": 0.001, "s": 1, "m": 60, "h": 3600, "d": 86400, "w": 604800}


def parse_duration(value: object) -> object:
    """Turn ``"90s"``, ``"15m"``, ``"1h30m"``, ``"2d"`` or a number of seconds into a timedelta."""
    if isinstance(value, timedelta | bool):
        return value
    if isinstance(value, int | float):
        return timedelta(seconds=value)
    if not isinstance(value, str):
        raise PydanticCustomError("duration", "expected a duration such as 90s, 15m, 1h")
    text = value.strip().replace(" ", "")
    pos, seconds = 0, 0.0
    for match in _DURATION_PART.finditer(text):
        if match.start() != pos:
            break
        seconds += float(match.group(1)) * _DURATION_UNITS[match.group(2)]
        pos = match.end()
    if pos != len(text) or not text:
        raise PydanticCustomError(
            "duration",
            f"invalid duration {value!r}: use a number and a unit (ms, s, m, h, d, w)",
        )
    return timedelta(seconds=seconds)


def format_duration(delta: timedelta) -> str:
    """The shortest ``1h30m``-style spelling of a duration."""
    seconds = int(delta.total_seconds())
    parts = []
    for unit, size in (("d", 86400), ("h", 3600), ("m", 60), ("s", 1)):
        if seconds >= size:
            parts.append(f"{seconds // size}{unit}")
            seconds %= size
    return "".join(parts) or "0s"


Duration = Annotated[timedelta, BeforeValidator(parse_duration)]
"""A timedelta field that accepts the spellings :func:`parse_duration` reads."""
