"""The condition language: parsed without eval, evaluated as a pure function."""

from __future__ import annotations

from dataclasses import dataclass, field

import pytest

from gateway.rules.expr import Call, Compare, Const, ExprError, Name, calls, evaluate, names, parse


@dataclass
class Facts:
    values: dict[str, float | bool | str] = field(default_factory=dict)
    stale_sensors: set[str] = field(default_factory=set)
    changed_sensors: set[str] = field(default_factory=set)

    def value(self, name: str) -> float | bool | str | None:
        return self.values.get(name)

    def stale(self, sensor: str) -> bool:
        return sensor in self.stale_sensors

    def changed(self, sensor: str) -> bool:
        return sensor in self.changed_sensors

    def offline(self, sensor: str) -> bool:
        return sensor in self.stale_sensors or sensor == "door"


def test_parse_tree() -> None:
    assert parse("water_temp > 30") == Compare(">", Name("water_temp"), Const(30.0))
    assert parse("changes(bridge)") == Call("changes", "bridge")
    tree = parse("a >= 1.5 and (not stale(b) or c == 'open') and offline(d)")
    assert names(tree) == {"a", "b", "c", "d"}
    assert calls(tree, "stale", "offline") == {"b", "d"}
    assert calls(tree, "changes") == set()


@pytest.mark.parametrize(
    ("source", "expected"),
    [
        ("t > 30", True),
        ("t > 31", False),
        ("t >= 31 or t < -5", True),
        ("t <= 31 and t != 31", False),
        ("not t == 31", False),
        ("bridge == 'open'", True),
        ('bridge != "closed"', True),
        ("bridge > 'a'", False),  # strings compare for (in)equality only
        ("pump", True),
        ("pump == true", True),
        ("pump == 1", False),  # a flag is not a number
        ("missing > 0 or missing <= 0", False),  # unknown makes every comparison false
        ("missing != 1", False),
        ("t", False),  # a bare number is not true
        ("changes(bridge) and bridge == 'open'", True),
        ("stale(t) or stale(pump)", True),
        ("(t > 30 or pump) and not (t > 40)", True),
        ("t > 1e1", True),
        ("level < -2.5", True),
        ("offline(door) and not stale(door)", True),
        ("offline(pump)", True),
        ("offline(t)", False),
    ],
)
def test_evaluate(source: str, expected: bool) -> None:
    facts = Facts(
        values={"t": 31.0, "bridge": "open", "pump": True, "level": -3.0},
        stale_sensors={"pump"},
        changed_sensors={"bridge"},
    )
    assert evaluate(parse(source), facts) is expected


@pytest.mark.parametrize(
    ("source", "message"),
    [
        ("", "empty condition"),
        ("t >", "unexpected end of condition"),
        ("t > > 3", "unexpected '>' at column 5"),
        ("(t > 3", "expected ')'"),
        ("t $ 3", "unexpected '$' at column 3"),
        ("stale(3)", "stale() needs a sensor id"),
        ("t 3", "unexpected '3' at column 3"),
        ("__import__('os').system('x')", "unexpected"),
        ("and t", "unexpected 'and' at column 1"),
    ],
)
def test_parse_errors_name_the_problem(source: str, message: str) -> None:
    with pytest.raises(ExprError, match=None) as info:
        parse(source)
    assert message in str(info.value)
