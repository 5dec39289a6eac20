"""Templates (issue 15, item 15): the classic sandbox escapes are refused by
``check-config``, and rendering is bounded in output size, loop iterations and time."""

from __future__ import annotations

import re
import resource
import subprocess
import sys
import time

import pytest

from gateway.compose.composer import ComposeError, render
from gateway.compose.sandbox import MAX_ITERATIONS, MAX_SECONDS, MAX_TEXT
from gateway.config import ConfigError
from tests.test_compose_rules import config_with

ESCAPES = [
    "{{ ''.__class__.__mro__[1].__subclasses__() }}",
    "{{ ().__class__.__bases__[0].__subclasses__() }}",
    "{{ cycler.__init__.__globals__.os.popen('id').read() }}",
    "{{ joiner.__init__.__globals__ }}",
    "{{ lipsum.__globals__['os'] }}",
    "{{ namespace.__init__.__globals__['__builtins__'] }}",
    "{{ self._TemplateReference__context }}",
    "{{ ''|attr('__class__') }}",
    "{{ ''['__class__'] }}",
    "{{ now.__class__.mro() }}",
    "{{ lipsum.func_globals }}",
    "{{ ''|attr('__cla' ~ 'ss__') }}",
    "{% set f = lipsum %}{{ f.__code__.co_consts }}",
]


@pytest.mark.parametrize("template", ESCAPES)
def test_sandbox_escapes_are_refused_by_check_config(template: str) -> None:
    with pytest.raises(ConfigError) as info:
        config_with(template)
    assert "rules[0].text" in str(info.value)
    assert "unsafe attribute" in str(info.value) or "attr filter" in str(info.value)


@pytest.mark.parametrize("template", ESCAPES)
def test_sandbox_escapes_fail_at_render_time_too(template: str) -> None:
    with pytest.raises(ComposeError):
        render(template, {"now": time})


def test_ordinary_attributes_still_pass_check() -> None:
    config_with("{{ water_temp.value }} {{ water_temp | attr('unit') }} {{ now.hour }}")
    config_with("{{ event._id }} {{ event['_rev'] }}", on_message={"topic": "x"})
    assert render("{{ event._id }}", {"event": {"_id": "a1"}}) == "a1"


_RENDER = """
import sys
from gateway.compose.composer import ComposeError, render
try:
    render(sys.stdin.read(), {})
except ComposeError as exc:
    print("refused:", exc)
else:
    print("rendered")
"""
_LIMIT_BYTES = 768 * 1024 * 1024


def _limit_memory() -> None:
    resource.setrlimit(resource.RLIMIT_AS, (_LIMIT_BYTES, _LIMIT_BYTES))


def render_in_child(template: str) -> str:
    """Render in a child under a 768 MB address-space limit and a time-out: a template
    that eats memory or hangs fails the test instead of the test run."""
    try:
        done = subprocess.run(
            [sys.executable, "-c", _RENDER],
            input=template,
            capture_output=True,
            text=True,
            timeout=MAX_SECONDS + 30,
            preexec_fn=_limit_memory,
            check=False,
        )
    except subprocess.TimeoutExpired:
        pytest.fail(f"rendering {template!r} hung")
    assert done.returncode == 0, done.stderr[-2000:]
    return done.stdout


@pytest.mark.parametrize(
    ("template", "reason"),
    [
        ("{{ 'a' * 300000000 }}", "longer than"),
        ("{{ 300000000 * 'a' }}", "longer than"),
        ("{{ [1] * 300000000 }}", "longer than"),
        ("{{ 'a'.ljust(300000000) }}", "longer than"),
        ("{{ 'a' | center(300000000) }}", "longer than"),
        ("{{ '%300000000s' % 1 }}", "format width"),
        ("{{ '{:>300000000}'.format(1) }}", "format width"),
        ("{{ 9 ** 999999999 }}", "power too large"),
        (
            "{% for i in range(100000) %}{% for j in range(100000) %}{% endfor %}{% endfor %}",
            "loops ran more than",
        ),
        ("{% for i in range(100000) %}{{ 'x' * 1000 }}{% endfor %}", "output longer than"),
        ("{% set s = 'a' * 90000 %}{{ s | replace('', s) }}", "longer than"),
        ("{% set s = 'a' * 90000 %}{{ [s, s] | join }}", "longer than"),
        ("{% macro f(n) %}{{ f(n) }}{% endmacro %}{{ f(1) }}", "recursion|longer than"),
    ],
)
def test_rendering_is_bounded(template: str, reason: str) -> None:
    started = time.monotonic()
    out = render_in_child(template)
    assert out.startswith("refused: template error:"), out
    assert re.search(reason, out), out
    assert time.monotonic() - started < MAX_SECONDS + 20  # failed fast, not after a hang


def test_slow_templates_stop_at_the_time_limit() -> None:
    # exponential macro recursion: little output, few loop iterations, much time
    template = (
        "{% macro f(n) %}{% if n %}{{ f(n - 1) }}{{ f(n - 1) }}{% endif %}{% endmacro %}{{ f(40) }}"
    )
    out = render_in_child(template)
    assert out.startswith("refused: template error: template took longer than"), out


def test_ordinary_templates_render() -> None:
    assert render("{% for i in range(3) %}{{ i }}{% endfor %} {{ 'ab' * 2 }}", {}) == "012 abab"
    assert render("{{ ['a', 'b'] | join(', ') }} {{ 'x' | center(5) }}|", {}) == "a, b   x  |"
    assert MAX_ITERATIONS >= 1000
    assert MAX_TEXT >= 10_000
