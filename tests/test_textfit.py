"""Tests for gateway.compose.textfit: known platform counts, then properties over mixed Unicode."""

from __future__ import annotations

import subprocess
import sys
import unicodedata

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from gateway.compose.textfit import (
    BLUESKY,
    MASTODON,
    X,
    count_length,
    find_urls,
    fit_text,
    fits,
    graphemes,
    split_thread,
)
from gateway.publishers.base import Capabilities

FAMILY = "👨‍👩‍👧‍👦"
LONG_URL = "https://example.com/" + "a" * 300
CHARS = Capabilities(text_counting="chars", max_text=10)
BYTES = Capabilities(text_counting="bytes", max_text=10)

COUNT_CASES = [
    # X: twitter-text v3 weighting
    ("x-280-ascii", "a" * 280, X, 280),
    ("x-140-cjk", "日" * 140, X, 280),
    ("x-141-cjk", "日" * 141, X, 282),
    ("x-url-any-length", LONG_URL, X, 23),
    ("x-short-url", "https://t.co", X, 23),
    ("x-bare-domain", "see example.com", X, 4 + 23),
    ("x-family-emoji", FAMILY, X, 2),
    ("x-flag", "🇵🇱", X, 2),
    ("x-decomposed-e", "e\u0301", X, 1),
    ("x-precomposed-e", "\u00e9", X, 1),
    ("x-polish", "zażółć gęślą jaźń", X, 17),
    ("x-cyrillic", "Привет", X, 6),
    ("x-arabic", "مرحبا", X, 5),
    ("x-hangul", "한국어", X, 6),
    ("x-remote-mention-full", "@bob@mastodon.social", X, 20),
    # Mastodon: graphemes, URLs 23, @user@domain as @user
    ("masto-url", LONG_URL, MASTODON, 23),
    ("masto-bare-domain-full", "example.com", MASTODON, 11),
    ("masto-remote-mention", "hi @bob@mastodon.social", MASTODON, 7),
    ("masto-local-mention", "hi @bob", MASTODON, 7),
    ("masto-dotted-mention", "@Bob.Smith@sub.example.co.uk.", MASTODON, 11),
    ("masto-mention-after-equals", "=@bob@x.org", MASTODON, 11),
    ("masto-family", FAMILY, MASTODON, 1),
    ("masto-combining", "e\u0301a\u0308\u0323", MASTODON, 2),
    ("masto-flags", "🇵🇱🇺🇦", MASTODON, 2),
    # Bluesky: graphemes, URLs in full
    ("bsky-url-full", "https://example.com/abc", BLUESKY, 23),
    ("bsky-long-url", LONG_URL, BLUESKY, len(LONG_URL)),
    ("bsky-family", FAMILY, BLUESKY, 1),
    ("bsky-zwj-phoenix", "🐦‍🔥", BLUESKY, 1),
    ("bsky-devanagari-conjunct", "क्ष", BLUESKY, 1),
    ("bsky-remote-mention-full", "@bob@mastodon.social", BLUESKY, 20),
    # chars and bytes
    ("chars-code-points", FAMILY, CHARS, 7),
    ("bytes-utf8", "ąę日", BYTES, 7),
]


@pytest.mark.parametrize(
    ("text", "caps", "expected"),
    [case[1:] for case in COUNT_CASES],
    ids=[case[0] for case in COUNT_CASES],
)
def test_count_length_known_cases(text: str, caps: Capabilities, expected: int) -> None:
    assert count_length(text, caps) == expected


FITS_CASES = [
    ("x-280-ascii", "a" * 280, X, True),
    ("x-281-ascii", "a" * 281, X, False),
    ("x-140-cjk", "日" * 140, X, True),
    ("x-141-cjk", "日" * 141, X, False),
    ("x-many-urls", " ".join([LONG_URL] * 11), X, True),
    ("x-140-family-emoji", FAMILY * 140, X, True),
    ("x-141-family-emoji", FAMILY * 141, X, False),
    ("masto-500", "ą" * 500, MASTODON, True),
    ("masto-501", "ą" * 501, MASTODON, False),
    ("masto-long-url", "x" * 470 + " " + LONG_URL, MASTODON, True),
    ("bsky-300", "a" * 300, BLUESKY, True),
    ("bsky-301", "a" * 301, BLUESKY, False),
    # 300 family emoji are 300 graphemes but 7500 bytes
    ("bsky-bytes", FAMILY * 300, BLUESKY, False),
    ("bsky-bytes-ok", FAMILY * 120, BLUESKY, True),
    ("no-limit", "a" * 10_000, Capabilities(), True),
]


@pytest.mark.parametrize(
    ("text", "caps", "expected"),
    [case[1:] for case in FITS_CASES],
    ids=[case[0] for case in FITS_CASES],
)
def test_fits_known_cases(text: str, caps: Capabilities, expected: bool) -> None:
    assert fits(text, caps) is expected


def test_x_counts_nfc_and_nfd_the_same() -> None:
    text = "Zażółć gęślą jaźń, café déjà vu"
    nfd = unicodedata.normalize("NFD", text)
    assert nfd != text
    assert count_length(nfd, X) == count_length(text, X) == len(text)


def test_graphemes_keep_clusters_whole() -> None:
    text = f"a{FAMILY}🇵🇱e\u0301🏳️‍🌈क्ष"
    assert graphemes(text) == ["a", FAMILY, "🇵🇱", "e\u0301", "🏳️‍🌈", "क्ष"]


def test_find_urls() -> None:
    text = "see https://example.com/a?b=1, example.org and https://foo.unknowntld/x."
    found = [text[a:b] for a, b in find_urls(text)]
    assert found == ["https://example.com/a?b=1", "example.org", "https://foo.unknowntld/x"]


FIT_CASES = [
    ("unchanged", "short text", X, "short text"),
    ("word-boundary", "one two three four", Capabilities(max_text=12), "one two…"),
    (
        "drops-url-whole",
        "Water 21°C https://example.com/pool/camera/underwater",
        Capabilities(text_counting="graphemes", max_text=30),
        "Water 21°C…",
    ),
    (
        "drops-hashtag-whole",
        "Pool is warm today #poolcamlondon",
        Capabilities(max_text=25),
        "Pool is warm today…",
    ),
    (
        "url-kept-apart-from-ellipsis",
        "See https://example.com/x and then more words",
        Capabilities(max_text=28),
        "See https://example.com/x …",
    ),
    ("grapheme-fallback", "abcdefghijklmnop", Capabilities(max_text=5), "abcd…"),
    ("cjk", "日本語のテキスト", Capabilities(text_counting="weighted", max_text=8), "日本語…"),
    ("emoji-not-split", FAMILY * 5, Capabilities(max_text=14), FAMILY + "…"),
    ("nothing-fits", "abc", Capabilities(max_text=0), ""),
]


@pytest.mark.parametrize(
    ("text", "caps", "expected"),
    [case[1:] for case in FIT_CASES],
    ids=[case[0] for case in FIT_CASES],
)
def test_fit_text_known_cases(text: str, caps: Capabilities, expected: str) -> None:
    assert fit_text(text, caps) == expected


def test_fit_text_x_long_cjk() -> None:
    fitted = fit_text("日本語" * 200, X)
    assert fitted == "日本語" * 46 + "日…"
    assert count_length(fitted, X) == 280


def test_fit_text_bluesky_byte_limit() -> None:
    fitted = fit_text(FAMILY * 300, BLUESKY)
    # 25 bytes per family emoji: 119 of them and the ellipsis (3 bytes) fit in 3000.
    assert fitted == FAMILY * 119 + "…"
    assert len(fitted.encode()) <= 3000


def test_fit_text_mastodon_counts_links_as_23() -> None:
    text = "x" * 470 + " " + LONG_URL + " tail words here"
    fitted = fit_text(text, MASTODON)
    assert fitted == "x" * 470 + " " + LONG_URL + " tail…"
    assert count_length(fitted, MASTODON) == 500


def test_fit_text_custom_ellipsis() -> None:
    assert fit_text("one two three four", Capabilities(max_text=12), ellipsis="...") == "one two..."


def test_split_thread_fits_in_one() -> None:
    assert split_thread("short", X) == ["short"]


def test_split_thread_paragraphs_then_sentences_then_words() -> None:
    caps = Capabilities(max_text=40)
    text = "First paragraph here.\n\nSecond one. It has two sentences and many words in it."
    assert split_thread(text, caps) == [
        "First paragraph here.\n\nSecond one. 1/3",
        "It has two sentences and many words 2/3",
        "in it. 3/3",
    ]


def test_split_thread_keeps_urls_whole() -> None:
    caps = Capabilities(text_counting="graphemes", max_text=30)
    text = "Look https://example.com/underwater/camera/feed now"
    parts = split_thread(text, caps)
    assert "https://example.com/underwater/camera/feed" not in "".join(parts)
    assert all(fits(p, caps) for p in parts)
    # On Mastodon the link counts 23, so it shares a post with the next word.
    masto = Capabilities(text_counting="graphemes", max_text=31, url_length=23)
    assert split_thread(text, masto) == [
        "Look 1/2",
        "https://example.com/underwater/camera/feed now 2/2",
    ]


def test_split_thread_many_parts_widens_numbering() -> None:
    caps = Capabilities(max_text=20)
    parts = split_thread(" ".join(f"word{i}" for i in range(300)), caps)
    assert len(parts) >= 10
    assert parts[-1].endswith(f" {len(parts)}/{len(parts)}")
    assert all(fits(p, caps) for p in parts)


def test_split_thread_too_small_limit() -> None:
    with pytest.raises(ValueError, match="limit too small"):
        split_thread("abcdef", Capabilities(max_text=4))


# --- properties -----------------------------------------------------------------------

FRAGMENTS = [
    *["مرحبا", "بالعالم", "السلام", "Привет", "мир", "Ёжик", "zażółć", "gęślą", "jaźń"],
    *["ąęłńóśźż", "Łódź", "日本語", "中文字符", "한국어", "テキスト", "hello", "world"],
    *[FAMILY, "🏳️‍🌈", "🧑🏽‍🚀", "🐦‍🔥", "👍🏿", "🇵🇱", "🇺🇦", "🇯🇵", "e\u0301", "a\u0308\u0323"],
    *["क्षत्रिय", "#poolcam", "#zażółć", "#日本", "@bob", "@bob@mastodon.social"],
    *["https://example.com/pool?t=21", "http://例え.jp/a", "example.org", "x.com/abc"],
    *["https://foo.unknowntld/path", LONG_URL, "end.", "Why?", "21°C", "3.5"],
]
SEPARATORS = [" ", " ", " ", "\n", "\n\n", ". ", ", ", ""]

fragment = st.one_of(
    st.sampled_from(FRAGMENTS),
    st.text(min_size=1, max_size=6),
)
token = st.tuples(fragment, st.sampled_from(SEPARATORS)).map("".join)
texts = st.lists(token, min_size=1, max_size=40).map("".join)

limited_caps = st.builds(
    Capabilities,
    text_counting=st.sampled_from(["chars", "graphemes", "weighted", "bytes"]),
    max_text=st.integers(min_value=24, max_value=160),
    max_text_bytes=st.none() | st.integers(min_value=60, max_value=400),
    url_length=st.none() | st.just(23),
)
caps_strategy = st.sampled_from([X, MASTODON, BLUESKY]) | limited_caps

PROPERTY_SETTINGS = settings(
    max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow]
)


def _boundaries(text: str) -> set[int]:
    ends = {0}
    position = 0
    for cluster in graphemes(text):
        position += len(cluster)
        ends.add(position)
    return ends


def _original_urls(text: str) -> set[str]:
    return {text[a:b] for a, b in find_urls(text)}


@PROPERTY_SETTINGS
@given(text=texts, caps=caps_strategy)
def test_fit_text_properties(text: str, caps: Capabilities) -> None:
    fitted = fit_text(text, caps)
    assert fits(fitted, caps)
    if fitted == text:
        return
    assert fitted.endswith("…")
    body = fitted.removesuffix("…").removesuffix(" ")
    assert text.startswith(body)
    assert len(body) in _boundaries(text)
    originals = _original_urls(text)
    for start, end in find_urls(fitted):
        assert fitted[start:end] in originals


@PROPERTY_SETTINGS
@given(text=texts, caps=caps_strategy)
def test_split_thread_properties(text: str, caps: Capabilities) -> None:
    try:
        parts = split_thread(text, caps)
    except ValueError:
        # Only allowed when some grapheme cluster cannot fit a part even alone
        # (with numbering no wider than one part per grapheme would need).
        n = len(graphemes(text))
        suffix = f" {n}/{n}"
        assert any(not fits(g + suffix, caps) for g in graphemes(text))
        return
    assert all(fits(part, caps) for part in parts)
    if len(parts) == 1 and parts[0] == text:
        return
    n = len(parts)
    bodies = [part.removesuffix(f" {i}/{n}") for i, part in enumerate(parts, 1)]
    assert all(body != part for body, part in zip(bodies, parts, strict=True))
    # Every word, in order: nothing but whitespace is lost between the parts.
    assert "".join("".join(bodies).split()) == "".join(text.split())
    # Each part is a slice of the original cut at grapheme boundaries.
    boundaries = _boundaries(text)
    position = 0
    for body in bodies:
        position = text.find(body, position)
        assert position >= 0
        assert {position, position + len(body)} <= boundaries
        position += len(body)


def test_imports_without_pkg_resources() -> None:
    # twitter-text-parser wants pkg_resources, which setuptools >= 81 no longer ships.
    code = (
        "import sys; sys.modules['pkg_resources'] = None\n"
        "import gateway.compose.textfit as t\n"
        "assert t.count_length('👍 https://example.com/abc', t.X) == 26\n"
        "assert sys.modules['pkg_resources'] is None\n"
    )
    subprocess.run([sys.executable, "-W", "error", "-c", code], check=True)


URLISH = st.tuples(
    st.sampled_from(["", "see ", "é", "1", "@", "#", "a."]),
    st.sampled_from(["", "http://", "https://", "www.", "ftp://"]),
    st.sampled_from(["example", "a", "t", "xn--p1ai", "münchen", "1", "é"]),
    st.sampled_from([".", "．", "。", "｡", ""]),
    st.sampled_from(["com", "co", "org", "xyz", "みんな", "de", "1", "notatld", ""]),
    st.sampled_from(["", "/", "/path?q=1", ".", " and", ")", ":8080"]),
).map("".join)


@settings(max_examples=300, deadline=None)
@given(text=URLISH)
def test_the_quick_no_url_check_never_hides_a_url_twitter_text_finds(text: str) -> None:
    import gateway.compose.textfit as textfit

    full = textfit._twitter_spans(text, bare_domains=True) or list(
        textfit._LOOSE_URL.finditer(text)
    )
    if full:
        assert find_urls(text), text


def test_rendering_readings_without_links_does_not_load_twitter_text() -> None:
    code = (
        "import sys; from gateway.compose.filters import defuse_markup;"
        "[defuse_markup(v) for v in ('24.3', 'n/a', '-3.5 °C', 'open', '12:00')];"
        "assert 'twitter_text.extract_urls' not in sys.modules;"
        "assert defuse_markup('see example.com') != 'see example.com';"
        "assert 'twitter_text.extract_urls' in sys.modules;"
        "assert 'twitter_text.parse_tweet' not in sys.modules"
    )
    subprocess.run([sys.executable, "-c", code], check=True)
