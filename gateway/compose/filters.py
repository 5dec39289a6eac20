"""Template filters and markup defusing: pure functions over values.

Every filter is locale-neutral (``.`` for decimals, no locale lookups) and
accepts a sensor view as well as a plain value, so ``{{ water_temp | round }}``
and ``{{ water_temp.value | round }}`` agree.  Unknown values render as ``n/a``.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from datetime import datetime, timedelta
from typing import Any, Protocol, runtime_checkable

from gateway.compose.textfit import find_urls
from gateway.model import Value
from gateway.support.text import clean_text

_WORD_JOINER = "\u2060"
_URL_BREAKS = re.compile(r"[.:/]")
_CONFUSABLE_AT = re.compile("[\uff20\ufe6b]")
"""FULLWIDTH and SMALL COMMERCIAL AT: platforms (or readers) may take them for ``@``."""
_HTML_START = re.compile(r"[<&]")


def defuse_markup(text: str) -> str:
    """Text that reads the same but links nothing: no @mentions, no URLs, no HTML.

    Controls and bidi overrides are removed (:func:`clean_text`); a WORD JOINER
    (U+2060, invisible) goes after every ``@`` (confusables such as the fullwidth
    ``＠`` become ``@`` first), after every ``<`` and ``&`` (no tag or entity can
    start), and after the dots, colons and slashes of anything a platform would
    take for a link.
    """
    text = _CONFUSABLE_AT.sub("@", clean_text(text))
    text = text.replace("@", "@" + _WORD_JOINER)
    text = _HTML_START.sub(lambda m: m.group(0) + _WORD_JOINER, text)
    for start, end in reversed(find_urls(text)):
        url = _URL_BREAKS.sub(lambda m: m.group(0) + _WORD_JOINER, text[start:end])
        text = text[:start] + url + text[end:]
    return text


def _time(value: datetime, fmt: str = "%H:%M") -> str:
    return value.strftime(fmt)


def _date(value: datetime, fmt: str = "%Y-%m-%d") -> str:
    return value.strftime(fmt)


@runtime_checkable
class SensorLike(Protocol):
    """What filters read of a sensor view (``gateway.compose.composer.SensorView``)."""

    value: Value | None
    trend: str | None


def _raw(value: object) -> object:
    return value.value if isinstance(value, SensorLike) else value


def _number(value: object, precision: int = 1, group: bool = False) -> str:
    """Locale-neutral: ``.`` for decimals; ``group=True`` adds narrow spaces (12 345.6)."""
    raw = _raw(value)
    if isinstance(raw, int | float) and not isinstance(raw, bool):
        text = f"{float(raw):,.{precision}f}" if group else f"{float(raw):.{precision}f}"
        return text.replace(",", "\u202f")
    return "n/a" if raw is None else str(raw)


def _round(value: object, precision: int = 0) -> object:
    raw = _raw(value)
    if isinstance(raw, int | float) and not isinstance(raw, bool):
        rounded = round(float(raw), precision)
        return int(rounded) if precision <= 0 else rounded
    return "n/a" if raw is None else raw


def _duration(value: object) -> str:
    """``5 min``, ``1 h 20 min``, ``45 s``, ``2 d 3 h``; ``n/a`` when unknown."""
    if isinstance(value, int | float) and not isinstance(value, bool):
        value = timedelta(seconds=value)
    if not isinstance(value, timedelta):
        return "n/a"
    seconds = max(0, int(value.total_seconds()))
    if seconds < 60:
        return f"{seconds} s"
    parts = []
    for unit, size in (("d", 86400), ("h", 3600), ("min", 60)):
        if seconds >= size:
            parts.append(f"{seconds // size} {unit}")
            seconds %= size
    return " ".join(parts[:2])


_ARROWS = {"rising": "↑", "falling": "↓", "steady": "→"}


def _arrow(value: object) -> str:
    """A trend (or a sensor's trend) as an arrow: ↑ ↓ →; empty when unknown."""
    trend = value.trend if isinstance(value, SensorLike) else value
    return _ARROWS.get(trend, "") if isinstance(trend, str) else ""


FILTERS: dict[str, Callable[..., Any]] = {
    "time": _time,
    "date": _date,
    "number": _number,
    "round": _round,
    "duration": _duration,
    "arrow": _arrow,
}
"""Filters every template can use, besides Jinja2's built-ins."""
