"""Markup defusing gaps (issue 15, item 14): confusable ``@``, bidi overrides, controls
and HTML in values are defused before a post's text is made."""

from __future__ import annotations

import pytest

from gateway.compose.filters import defuse_markup
from gateway.compose.textfit import find_urls
from gateway.support.text import clean_text
from tests.test_compose_rules import compose, state_with

WJ = "\u2060"


@pytest.mark.parametrize("at", ["\uff20", "\ufe6b"])
def test_confusable_at_is_treated_like_at(at: str) -> None:
    text = compose("Bridge: {{ bridge }}", state_with(bridge=f"{at}someone hi"))
    assert text == f"Bridge: @{WJ}someone hi"
    assert at not in text


@pytest.mark.parametrize(
    "control", ["\u202e", "\u202d", "\u2066", "\u2069", "\u200f", "\u061c", "\x00", "\x07", "\x9b"]
)
def test_bidi_overrides_and_controls_are_removed(control: str) -> None:
    text = compose("Bridge: {{ bridge }}", state_with(bridge=f"open{control}gpj.exe"))
    assert control not in text
    assert text.replace(WJ, "") == "Bridge: opengpj.exe"


def test_bidi_and_controls_removed_even_where_markup_is_allowed() -> None:
    text = compose("{{ bridge }}", state_with(bridge="a\u202eb\x00c"), allow_markup=True)
    assert text == "abc"


def test_html_in_values_is_not_raw_in_the_text() -> None:
    text = compose("Bridge: {{ bridge }}", state_with(bridge="<script>alert(1)</script> &amp;"))
    assert "<script" not in text
    assert "</script" not in text
    assert "&amp;" not in text
    assert text.replace(WJ, "") == "Bridge: <script>alert(1)</script> &amp;"


def test_line_breaks_normalised() -> None:
    assert clean_text("a\r\nb\rc\x85d\u2028e\u2029f\x1cg") == "a\nb\nc\nd\ne\nf\ng"


def test_defusing_reads_the_same() -> None:
    for text in ("<b>x</b>", "R&D", "a＠b.example"):
        defused = defuse_markup(text)
        assert defused.replace(WJ, "") == text.replace("＠", "@")
        assert find_urls(defused) == []
