"""Every problem of a config file in one run, not the first batch of them.

Pydantic stops at the field errors: the cross references (``publish_to`` naming a
publisher that does not exist) and the engine's checks (templates, unknown sensors
in conditions) run only on a model that validated.  A user fixing a file would see
four problems, fix them, then meet three more.  So when a validation fails,
:func:`validate_in_one_pass` sets the broken parts aside and validates the rest
again, to report what the rest has to say as well:

- a broken section (``[mqtt]``) or unknown top-level key is dropped: the rest is
  checked against its defaults;
- a broken sensor, camera or publisher is replaced by a stand-in with the same id
  (a sensor on a topic nobody uses, a disabled console publisher), so what refers
  to it is not reported as a dangling reference;
- a broken rule loses its broken keys (a broken trigger becomes ``every = "1h"``),
  so its references and templates are still checked; a rule that is still broken
  is left out (nothing refers to rules) and the later rules' lines are renumbered
  back to their place in the file.

Later passes report only what the whole-file checks find (references, the engine's
checks): their field errors are about the stand-ins, and a stand-in's own lines are
never reported.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping
from typing import Any

from pydantic import ValidationError
from pydantic_core import ErrorDetails

FormatItems = Callable[[list[ErrorDetails]], list[str]]
"""Error items (``ValidationError.errors()``) to ``path: message`` lines."""

_PLAIN_ID = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")
_ENTRY = re.compile(r"^(sensors|cameras|rules|publishers)\[(\d+)\]")
_MAX_PASSES = 4
"""Each pass sets at least one more part aside; a few are enough for any real file."""


def _stub_id(entry: object, kind: str, index: int) -> str:
    raw = entry.get("id") if isinstance(entry, Mapping) else None
    return raw if isinstance(raw, str) and _PLAIN_ID.match(raw) else f"_invalid_{kind}_{index}"


def _stand_in(kind: str, index: int, entry: object) -> dict[str, Any]:
    """A valid entry with the broken one's id, referring to nothing real."""
    ident = _stub_id(entry, kind, index)
    if kind == "sensors":
        # expire_after: a stale(x) condition on a broken sensor is not a second problem.
        topic = f"things-gateway/invalid/sensors/{index}"
        return {"id": ident, "topic": topic, "expire_after": "1h"}
    if kind == "cameras":
        return {"id": ident, "source": "mqtt", "topic": f"things-gateway/invalid/cameras/{index}"}
    return {"id": ident, "type": "console", "enabled": False}


_TRIGGER_KEYS = (
    "every",
    "cron",
    "jitter",
    "when",
    "for",
    "clear_when",
    "clear_below",
    "clear_above",
    "on_message",
)
_RULE_STAND_INS = {"text": "-"}


def _repair_rule(rule: Mapping[str, Any], keys: set[str | int]) -> dict[str, Any] | None:
    """The rule without its broken keys (a broken trigger becomes ``every = "1h"``)."""
    fixed = dict(rule)
    if "publish_to" in keys or "id" in keys:
        return None  # what refers onwards is broken: nothing left to check
    for key in keys:
        if key == "" or key in _TRIGGER_KEYS:  # "": the rule's own check (one trigger...)
            for trigger in _TRIGGER_KEYS:
                fixed.pop(trigger, None)
            fixed["every"] = "1h"
        elif isinstance(key, str) and key in _RULE_STAND_INS:
            fixed[key] = _RULE_STAND_INS[key]
        elif isinstance(key, str):
            fixed.pop(key, None)
    return fixed


class _Reduced:
    """The data as validated in a later pass, and how its lines map back to the file."""

    def __init__(self, data: Mapping[str, Any]) -> None:
        self.data: dict[str, Any] = dict(data)
        self.stand_ins: set[str] = set()  # "sensors[2]": lines about them are not the user's
        self.rule_index: list[int] = list(range(len(data.get("rules") or ())))
        self.repaired: set[int] = set()  # rules (file numbers) with broken keys taken out

    def set_aside(self, error: ValidationError) -> bool:
        """Set aside every part an error names; False when nothing more can be."""
        broken_rules: dict[int, set[str | int]] = {}
        changed = False
        for item in error.errors(include_input=False, include_url=False):
            loc = tuple(item["loc"])
            if not loc or not isinstance(loc[0], str) or loc[0] not in self.data:
                continue  # a whole-file check (references) or an environment override
            key = loc[0]
            entries = self.data[key]
            if key in ("sensors", "cameras", "publishers", "rules") and isinstance(entries, list):
                if len(loc) < 2 or not isinstance(loc[1], int) or loc[1] >= len(entries):
                    continue
                if key == "rules":
                    broken_rules.setdefault(loc[1], set()).add(loc[2] if len(loc) > 2 else "")
                elif f"{key}[{loc[1]}]" not in self.stand_ins:
                    entries = self.data[key] = list(entries)
                    entries[loc[1]] = _stand_in(key, loc[1], entries[loc[1]])
                    self.stand_ins.add(f"{key}[{loc[1]}]")
                    changed = True
            else:
                del self.data[key]
                changed = True
        return self._set_rules_aside(broken_rules) or changed

    def _set_rules_aside(self, broken: dict[int, set[str | int]]) -> bool:
        if not broken:
            return False
        rules = list(self.data["rules"])
        keep = []
        for i, rule in enumerate(rules):
            if i in broken:
                fixed = None
                if isinstance(rule, Mapping) and self.rule_index[i] not in self.repaired:
                    fixed = _repair_rule(rule, broken[i])
                if fixed is None:
                    continue  # broken again after a repair: leave the rule out
                rules[i] = fixed
                self.repaired.add(self.rule_index[i])
            keep.append(i)
        self.data["rules"] = [rules[i] for i in keep]
        self.rule_index = [self.rule_index[i] for i in keep]
        return True

    def in_file_terms(self, line: str) -> str | None:
        """The line with the file's rule numbers; None for a stand-in's own line."""
        match = _ENTRY.match(line)
        if match is None:
            return line
        kind, index = match.group(1), int(match.group(2))
        if kind == "rules":
            return f"rules[{self.rule_index[index]}]" + line[match.end() :]
        return None if f"{kind}[{index}]" in self.stand_ins else line


def _whole_file_lines(error: ValidationError, format_items: FormatItems) -> list[str]:
    """The lines of the checks that run on a complete model (references, engine checks).

    A later pass's field errors are about the stand-ins and repairs, never news.
    """
    items = error.errors(include_input=False, include_url=False)
    return format_items([e for e in items if not e["loc"]])


def validate_in_one_pass(
    build: Callable[[Mapping[str, Any]], Any],
    data: Mapping[str, Any],
    format_items: FormatItems,
) -> tuple[Any, list[str], Any]:
    """``(build(data), [], None)``, or None, every problem found in the data and its
    valid parts, and the model built from those parts (None if none could be)."""
    try:
        return build(data), [], None
    except ValidationError as exc:
        error = exc
    problems = format_items(error.errors(include_input=False, include_url=False))
    reduced = _Reduced(data)
    for _ in range(_MAX_PASSES):
        if not reduced.set_aside(error):
            break
        try:
            return None, problems, build(reduced.data)
        except ValidationError as exc:
            error = exc
        for line in _whole_file_lines(error, format_items):
            mapped = reduced.in_file_terms(line)
            if mapped is not None and mapped not in problems:
                problems.append(mapped)
    return None, problems, None
