"""Payload decoders: MQTT bytes in, a sensor value out, or a DecodeError.

Pure functions with no I/O; they run in paho's network thread, so they are kept
cheap.  Nothing but DecodeError may escape them, whatever the payload.
"""

from __future__ import annotations

import json
import math
import re
from collections.abc import Callable
from typing import Any

from gateway.model import Value

MAX_TEXT_LENGTH = 256
_TRUE = frozenset({"1", "true", "on", "yes", "open", "online"})
_FALSE = frozenset({"0", "false", "off", "no", "closed", "offline"})


class DecodeError(ValueError):
    """The payload cannot be turned into a reading; the message says why."""


def _text(payload: bytes) -> str:
    try:
        return payload.decode("utf-8").strip()
    except UnicodeDecodeError:
        raise DecodeError("payload is not valid UTF-8") from None


_NUMBER = re.compile(r"[+-]?(?:[0-9]+(?:\.[0-9]*)?|\.[0-9]+)(?:[eE][+-]?[0-9]+)?", re.ASCII)
COMMON_UNITS = frozenset(
    {"°C", "°F", "C", "F", "K", "%", "hPa", "Pa", "mbar", "bar", "V", "mV", "A", "mA", "W", "kW",
     "Wh", "kWh", "lx", "ppm", "ppb", "dB", "dBm", "m", "cm", "mm", "s", "Hz", "µg/m³", "l", "L"}
)  # fmt: skip
"""Unit suffixes a number may carry when its sensor names no unit (``21.5 °C``)."""


_NOT_FINITE = frozenset({"nan", "inf", "infinity"})


def to_number(raw: object, unit: str = "") -> float:
    """A finite float from a JSON number or a numeric string; bools are refused.

    Strings are ASCII decimal numbers only (no ``1_000``, no ``١٢``, no ``12 garbage``),
    optionally followed by a unit: the sensor's ``unit`` (``21.5°C``, ``21.5 °C``) or,
    when the sensor names none, one of :data:`COMMON_UNITS`.
    """
    if isinstance(raw, bool):
        raise DecodeError("expected a number, got a boolean")
    if isinstance(raw, int | float):
        try:
            value = float(raw)
        except OverflowError:  # a JSON integer with hundreds of digits
            raise DecodeError("number too large") from None
    elif isinstance(raw, str):
        text = raw.strip()
        if text.lower().lstrip("+-") in _NOT_FINITE:
            raise DecodeError("number is not finite (NaN or infinity)")
        match = _NUMBER.match(text)
        suffix = text[match.end() :].strip() if match else text
        if match is None or (suffix and not _unit_matches(suffix, unit)):
            raise DecodeError(f"not a number: {raw[:40]!r}")
        try:
            value = float(match.group(0))
        except (ValueError, OverflowError):  # pragma: no cover - the pattern is float syntax
            raise DecodeError(f"not a number: {raw[:40]!r}") from None
    else:
        raise DecodeError(f"expected a number, got {type(raw).__name__}")
    if not math.isfinite(value):
        raise DecodeError("number is not finite (NaN or infinity)")
    return value


def _unit_matches(suffix: str, unit: str) -> bool:
    if unit:
        return suffix.replace(" ", "") == unit.replace(" ", "")
    return suffix in COMMON_UNITS


def to_bool(raw: object) -> bool:
    """True/false from JSON booleans, 1/0, or words like on/off, open/closed."""
    if isinstance(raw, bool):
        return raw
    if isinstance(raw, int | float) and raw in (0, 1):
        return bool(raw)
    if isinstance(raw, str):
        word = raw.strip().lower()
        if word in _TRUE:
            return True
        if word in _FALSE:
            return False
    raise DecodeError(f"not a boolean: {str(raw)[:40]!r}")


def to_text(raw: object) -> str:
    """A short text value; long or structured values are refused."""
    if isinstance(raw, dict | list) or raw is None:
        raise DecodeError("expected text, got a structure")
    text = raw if isinstance(raw, str) else json.dumps(raw)
    if len(text) > MAX_TEXT_LENGTH:
        raise DecodeError(f"text longer than {MAX_TEXT_LENGTH} characters")
    return text


_DECODER = json.JSONDecoder()

_fast_loads: Callable[[bytes], Any] | None
try:  # optional accelerator (the `fast` extra): about 4x quicker on small documents
    from orjson import JSONDecodeError as _FastError
    from orjson import loads as _fast_loads
except ImportError:  # pragma: no cover - depends on the installation
    _FastError = json.JSONDecodeError  # type: ignore[misc,assignment]
    _fast_loads = None


def parse_json(payload: bytes) -> Any:
    """Parse JSON, turning every failure (including absurd nesting) into DecodeError.

    Uses orjson when it is installed (it refuses NaN/Infinity literals and nesting
    deeper than 1024 outright), else :func:`parse_json_std`.
    """
    if _fast_loads is not None:
        try:
            return _fast_loads(payload)
        except _FastError as exc:
            raise DecodeError(f"invalid JSON: {str(exc)[:80]}") from None
    return parse_json_std(payload)


def parse_json_std(payload: bytes) -> Any:
    """:func:`parse_json` with the standard library's decoder."""
    try:
        text = payload.decode("utf-8")
    except UnicodeDecodeError:
        raise DecodeError("payload is not valid UTF-8") from None
    try:
        return _DECODER.decode(text)
    except RecursionError:
        raise DecodeError("JSON nested too deeply") from None
    except json.JSONDecodeError as exc:
        raise DecodeError(f"invalid JSON: {exc.msg} at position {exc.pos}") from None
    except ValueError as exc:  # e.g. an integer longer than Python's digit limit
        raise DecodeError(f"invalid JSON: {str(exc)[:80]}") from None


def json_field(document: Any, path: str) -> object:
    """Follow a dotted path (``a.b.0.c``) into a JSON document."""
    node = document
    if not isinstance(node, dict):
        raise DecodeError("JSON payload is not an object")
    for part in path.split("."):
        if isinstance(node, dict):
            if part not in node:
                raise DecodeError(f"field {path!r} missing")
            node = node[part]
        elif isinstance(node, list) and part.lstrip("-").isdigit():
            index = int(part)
            if not -len(node) <= index < len(node):
                raise DecodeError(f"field {path!r} missing (index {index} out of range)")
            node = node[index]
        else:
            raise DecodeError(f"field {path!r} missing")
    return node


def coerce(raw: object, kind: str, unit: str = "") -> Value:
    """Convert a raw value to the kind of value a sensor holds.

    ``kind`` is ``bool``, ``text``, ``number`` (numbers only: text such as ``off`` is
    refused) or ``number-or-json`` (a number, a boolean, or short text).
    """
    if kind == "bool":
        return to_bool(raw)
    if kind == "text":
        return to_text(raw)
    if kind == "number":
        return to_number(raw, unit)
    if isinstance(raw, bool):
        return raw
    if isinstance(raw, str) and not _looks_numeric(raw):
        return to_text(raw)
    return to_number(raw)


def coerce_json(raw: object, numeric: bool = False, unit: str = "") -> Value:
    """A JSON field's value as a reading: number, bool, or short text (numeric text → number).

    A ``numeric`` sensor takes numbers only (and numeric text, with its ``unit``).
    """
    return coerce(raw, "number" if numeric else "number-or-json", unit)


def _looks_numeric(text: str) -> bool:
    try:
        to_number(text)
    except DecodeError:
        return False
    return True


JSON_FORMATS = frozenset({"json", "tasmota", "zigbee2mqtt"})


def decode_payload(
    payload: bytes, fmt: str, field: str | None, *, unit: str = "", numeric: bool = False
) -> Value:
    """Decode one sensor payload in the given format.

    ``number``, ``bool`` and ``text`` read the whole payload; ``json``,
    ``tasmota`` and ``zigbee2mqtt`` read the value at the dotted ``field`` (a
    ``numeric`` sensor's field must hold a number).  ``unit`` is the sensor's
    unit, which a number may carry as a suffix.
    """
    if fmt == "number":
        return to_number(_text(payload), unit)
    if fmt == "bool":
        return to_bool(_text(payload))
    if fmt == "text":
        return to_text(_text(payload))
    if fmt in JSON_FORMATS:
        if not field:
            raise DecodeError(f"format {fmt!r} needs a field")
        return from_document(parse_json(payload), field, numeric=numeric, unit=unit)
    raise DecodeError(f"unknown format {fmt!r}")


def from_document(
    document: Any,
    field: str,
    parts: tuple[str, ...] | None = None,
    *,
    numeric: bool = False,
    unit: str = "",
) -> Value:
    """The value at ``field`` of an already parsed JSON document.

    ``parts`` is ``field.split(".")``, precomputed by callers on the hot path;
    ``numeric`` and ``unit`` as in :func:`coerce_json`.
    """
    node = document
    if type(node) is dict:  # fast path: objects all the way down
        for part in parts or field.split("."):
            if type(node) is not dict or part not in node:
                node = json_field(document, field)  # the general walk, or its error
                break
            node = node[part]
        if type(node) is float and math.isfinite(node):
            return node
    else:
        node = json_field(document, field)
    return coerce_json(node, numeric, unit)


def parse_availability(payload: bytes) -> bool:
    """True for online, False for offline.

    Accepts Tasmota's ``Online``/``Offline`` LWT, Zigbee2MQTT's ``{"state":"online"}``
    and its legacy plain ``online``/``offline``, and bool-like words (1/0, true/false).
    """
    text = _text(payload)
    if text.startswith("{"):
        document = parse_json(payload)
        if not isinstance(document, dict) or "state" not in document:
            raise DecodeError("availability JSON has no 'state'")
        return to_bool(document["state"])
    return to_bool(text)


def transform_number(value: float, scale: float, offset: float, precision: int | None) -> float:
    """``value * scale + offset``, rounded to ``precision`` decimals when given."""
    result = value * scale + offset
    if not math.isfinite(result):
        raise DecodeError("number is not finite after scale and offset")
    return round(result, precision) if precision is not None else result
