"""Bluesky facets agree with the official client's rich-text detection (issue 16, items 1-2).

The tables are copied from ``packages/api/tests/rich-text-detection.test.ts`` of
``bluesky-social/atproto`` at commit d6296a1cfdb40a773319cb59061300e4e8e52f26 (2026-08-20):
``SEGMENTS`` is its "correctly handles a set of text inputs" table (text → segments, a
faceted segment with its mention DID or link URI; the test resolves ``@handle`` to
``did:fake:handle`` as the official test's mock does), ``TAGS`` its "correctly detects
tags inline" table (text → tags and UTF-8 byte ranges).  ``OBSERVED`` are the cases
issue 16 found to differ, with the official client's answer.
"""

from __future__ import annotations

from typing import Any

import pytest

from gateway.publishers.facets import detect_facets, resolve_mentions

SEGMENTS: list[tuple[str, list[list[str]]]] = [
    ("no mention", [["no mention"]]),
    ("@handle.com middle end", [["@handle.com", "did:fake:handle.com"], [" middle end"]]),
    ("start @handle.com end", [["start "], ["@handle.com", "did:fake:handle.com"], [" end"]]),
    ("start middle @handle.com", [["start middle "], ["@handle.com", "did:fake:handle.com"]]),
    (
        "@handle.com @handle.com @handle.com",
        [
            ["@handle.com", "did:fake:handle.com"],
            [" "],
            ["@handle.com", "did:fake:handle.com"],
            [" "],
            ["@handle.com", "did:fake:handle.com"],
        ],
    ),
    ("@full123-chars.test", [["@full123-chars.test", "did:fake:full123-chars.test"]]),
    ("not@right", [["not@right"]]),
    ("@handle.com!@#$chars", [["@handle.com", "did:fake:handle.com"], ["!@#$chars"]]),
    (
        "@handle.com\n@handle.com",
        [["@handle.com", "did:fake:handle.com"], ["\n"], ["@handle.com", "did:fake:handle.com"]],
    ),
    (
        "parenthetical (@handle.com)",
        [["parenthetical ("], ["@handle.com", "did:fake:handle.com"], [")"]],
    ),
    (
        "👨\u200d👩\u200d👧\u200d👧 @handle.com 👨\u200d👩\u200d👧\u200d👧",
        [
            ["👨\u200d👩\u200d👧\u200d👧 "],
            ["@handle.com", "did:fake:handle.com"],
            [" 👨\u200d👩\u200d👧\u200d👧"],
        ],
    ),
    (
        "start https://middle.com end",
        [["start "], ["https://middle.com", "https://middle.com"], [" end"]],
    ),
    (
        "start https://middle.com/foo/bar end",
        [["start "], ["https://middle.com/foo/bar", "https://middle.com/foo/bar"], [" end"]],
    ),
    (
        "start https://middle.com/foo/bar?baz=bux end",
        [
            ["start "],
            ["https://middle.com/foo/bar?baz=bux", "https://middle.com/foo/bar?baz=bux"],
            [" end"],
        ],
    ),
    (
        "start https://middle.com/foo/bar?baz=bux#hash end",
        [
            ["start "],
            ["https://middle.com/foo/bar?baz=bux#hash", "https://middle.com/foo/bar?baz=bux#hash"],
            [" end"],
        ],
    ),
    (
        "https://start.com/foo/bar?baz=bux#hash middle end",
        [
            ["https://start.com/foo/bar?baz=bux#hash", "https://start.com/foo/bar?baz=bux#hash"],
            [" middle end"],
        ],
    ),
    (
        "start middle https://end.com/foo/bar?baz=bux#hash",
        [
            ["start middle "],
            ["https://end.com/foo/bar?baz=bux#hash", "https://end.com/foo/bar?baz=bux#hash"],
        ],
    ),
    (
        "https://newline1.com\nhttps://newline2.com",
        [
            ["https://newline1.com", "https://newline1.com"],
            ["\n"],
            ["https://newline2.com", "https://newline2.com"],
        ],
    ),
    (
        "👨\u200d👩\u200d👧\u200d👧 https://middle.com 👨\u200d👩\u200d👧\u200d👧",
        [
            ["👨\u200d👩\u200d👧\u200d👧 "],
            ["https://middle.com", "https://middle.com"],
            [" 👨\u200d👩\u200d👧\u200d👧"],
        ],
    ),
    ("start middle.com end", [["start "], ["middle.com", "https://middle.com"], [" end"]]),
    (
        "start middle.com/foo/bar end",
        [["start "], ["middle.com/foo/bar", "https://middle.com/foo/bar"], [" end"]],
    ),
    (
        "start middle.com/foo/bar?baz=bux end",
        [
            ["start "],
            ["middle.com/foo/bar?baz=bux", "https://middle.com/foo/bar?baz=bux"],
            [" end"],
        ],
    ),
    (
        "start middle.com/foo/bar?baz=bux#hash end",
        [
            ["start "],
            ["middle.com/foo/bar?baz=bux#hash", "https://middle.com/foo/bar?baz=bux#hash"],
            [" end"],
        ],
    ),
    (
        "start.com/foo/bar?baz=bux#hash middle end",
        [
            ["start.com/foo/bar?baz=bux#hash", "https://start.com/foo/bar?baz=bux#hash"],
            [" middle end"],
        ],
    ),
    (
        "start middle end.com/foo/bar?baz=bux#hash",
        [
            ["start middle "],
            ["end.com/foo/bar?baz=bux#hash", "https://end.com/foo/bar?baz=bux#hash"],
        ],
    ),
    (
        "newline1.com\nnewline2.com",
        [
            ["newline1.com", "https://newline1.com"],
            ["\n"],
            ["newline2.com", "https://newline2.com"],
        ],
    ),
    (
        "a example.com/index.php php link",
        [["a "], ["example.com/index.php", "https://example.com/index.php"], [" php link"]],
    ),
    (
        "a trailing bsky.app: colon",
        [["a trailing "], ["bsky.app", "https://bsky.app"], [": colon"]],
    ),
    ("not.. a..url ..here", [["not.. a..url ..here"]]),
    ("e.g.", [["e.g."]]),
    ("something-cool.jpg", [["something-cool.jpg"]]),
    ("website.com.jpg", [["website.com.jpg"]]),
    ("e.g./foo", [["e.g./foo"]]),
    ("website.com.jpg/foo", [["website.com.jpg/foo"]]),
    (
        "Classic article "
        "https://socket3.wordpress.com/2018/02/03/designing-windows-95s-user-interface/",
        [
            ["Classic article "],
            [
                "https://socket3.wordpress.com/2018/02/03/designing-windows-95s-user-interface/",
                "https://socket3.wordpress.com/2018/02/03/designing-windows-95s-user-interface/",
            ],
        ],
    ),
    (
        "Classic article "
        "https://socket3.wordpress.com/2018/02/03/designing-windows-95s-user-interface/ ",
        [
            ["Classic article "],
            [
                "https://socket3.wordpress.com/2018/02/03/designing-windows-95s-user-interface/",
                "https://socket3.wordpress.com/2018/02/03/designing-windows-95s-user-interface/",
            ],
            [" "],
        ],
    ),
    (
        "https://foo.com https://bar.com/whatever https://baz.com",
        [
            ["https://foo.com", "https://foo.com"],
            [" "],
            ["https://bar.com/whatever", "https://bar.com/whatever"],
            [" "],
            ["https://baz.com", "https://baz.com"],
        ],
    ),
    (
        "punctuation https://foo.com, https://bar.com/whatever; https://baz.com.",
        [
            ["punctuation "],
            ["https://foo.com", "https://foo.com"],
            [", "],
            ["https://bar.com/whatever", "https://bar.com/whatever"],
            ["; "],
            ["https://baz.com", "https://baz.com"],
            ["."],
        ],
    ),
    (
        "parenthentical (https://foo.com)",
        [["parenthentical ("], ["https://foo.com", "https://foo.com"], [")"]],
    ),
    (
        "except for https://foo.com/thing_(cool)",
        [["except for "], ["https://foo.com/thing_(cool)", "https://foo.com/thing_(cool)"]],
    ),
]

TAGS: list[tuple[str, list[str], list[tuple[int, int]]]] = [
    ("#a", ["a"], [(0, 2)]),
    ("#a #b", ["a", "b"], [(0, 2), (3, 5)]),
    ("#1", [], []),
    ("#1a", ["1a"], [(0, 3)]),
    ("#tag", ["tag"], [(0, 4)]),
    ("body #tag", ["tag"], [(5, 9)]),
    ("#tag body", ["tag"], [(0, 4)]),
    ("body #tag body", ["tag"], [(5, 9)]),
    ("body #1", [], []),
    ("body #1a", ["1a"], [(5, 8)]),
    ("body #a1", ["a1"], [(5, 8)]),
    ("#", [], []),
    ("#?", [], []),
    ("text #", [], []),
    ("text # text", [], []),
    (
        "body #thisisa64characterstring_aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa",
        ["thisisa64characterstring_aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa"],
        [(5, 70)],
    ),
    ("body #thisisa65characterstring_aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaab", [], []),
    (
        "body #thisisa64characterstring_aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa!",
        ["thisisa64characterstring_aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa"],
        [(5, 70)],
    ),
    ("its a #double#rainbow", ["double#rainbow"], [(6, 21)]),
    ("##hashash", ["#hashash"], [(0, 9)]),
    ("##", [], []),
    ("some #n0n3s@n5e!", ["n0n3s@n5e"], [(5, 15)]),
    ("works #with,punctuation", ["with,punctuation"], [(6, 23)]),
    (
        "strips trailing #punctuation, #like. #this!",
        ["punctuation", "like", "this"],
        [(16, 28), (30, 35), (37, 42)],
    ),
    ("strips #multi_trailing___...", ["multi_trailing"], [(7, 22)]),
    ("works with #🦋 emoji, and #butter🦋fly", ["🦋", "butter🦋fly"], [(11, 16), (28, 42)]),
    (
        "#same #same #but #diff",
        ["same", "same", "but", "diff"],
        [(0, 5), (6, 11), (12, 16), (17, 22)],
    ),
    ("this #️⃣tag should not be a tag", [], []),
    ("this ##️⃣tag should be a tag", ["#️⃣tag"], [(5, 16)]),
    ("this #t\nag should be a tag", ["t"], [(5, 7)]),
    ("no match (\\u200B): #\u200b", [], []),
    ("no match (\\u200Ba): #\u200ba", [], []),
    ("match (a\\u200Bb): #a\u200bb", ["a"], [(18, 20)]),
    ("match (ab\\u200B): #ab\u200b", ["ab"], [(18, 21)]),
    ("no match (\\u20e2tag): #⃢tag", [], []),
    ("no match (a\\u20e2b): #a⃢b", ["a"], [(21, 23)]),
    ("match full width number sign (tag): ＃tag", ["tag"], [(36, 42)]),
    ("match full width number sign (tag): ＃#️⃣tag", ["#️⃣tag"], [(36, 49)]),
    ("no match 1?: #1?", [], []),
]

OBSERVED: list[tuple[str, list[str]]] = [
    ("#مسبح،", ["مسبح"]),
    ("#プール。", ["プール"]),
    ("#poolcam»", ["poolcam"]),
    ("#\ufe0f\u20e3", []),
    ("#1.5", []),
    ("#a#b", ["a#b"]),
]


def segments(text: str, facets: list[dict[str, Any]]) -> list[list[str]]:
    """The text cut at the facets, as the official test's ``segmentToOutput`` shows it."""
    raw, out, at = text.encode("utf-8"), [], 0
    for facet in facets:
        start, end = facet["index"]["byteStart"], facet["index"]["byteEnd"]
        if start > at:
            out.append([raw[at:start].decode("utf-8")])
        feature = facet["features"][0]
        out.append([raw[start:end].decode("utf-8"), feature.get("did") or feature.get("uri", "")])
        at = end
    if at < len(raw):
        out.append([raw[at:].decode("utf-8")])
    return out


@pytest.mark.parametrize(("text", "expected"), SEGMENTS)
def test_mentions_and_links_match_the_official_client(text: str, expected: list[list[str]]) -> None:
    facets = resolve_mentions(detect_facets(text), lambda handle: f"did:fake:{handle}")
    assert segments(text, facets) == expected


@pytest.mark.parametrize(("text", "tags", "ranges"), TAGS)
def test_tags_match_the_official_client(
    text: str, tags: list[str], ranges: list[tuple[int, int]]
) -> None:
    facets = detect_facets(text)
    assert [f["features"][0]["tag"] for f in facets] == tags
    assert [(f["index"]["byteStart"], f["index"]["byteEnd"]) for f in facets] == ranges


@pytest.mark.parametrize(("text", "tags"), OBSERVED)
def test_the_tags_issue_16_found_wrong(text: str, tags: list[str]) -> None:
    found = [f["features"][0]["tag"] for f in detect_facets(text)]
    assert found == tags
    for facet, tag in zip(detect_facets(text), tags, strict=True):
        # the range covers "#" and the tag, counted in UTF-8 bytes
        start, end = facet["index"]["byteStart"], facet["index"]["byteEnd"]
        assert text.encode("utf-8")[start:end].decode("utf-8")[1:] == tag


def test_an_unresolved_mention_stays_plain_text() -> None:
    facets = resolve_mentions(
        detect_facets("hi @sensor.bsky.social and @gone.bsky.social"),
        lambda handle: "did:plc:abc" if handle == "sensor.bsky.social" else None,
    )
    assert [f["features"][0] for f in facets] == [
        {"$type": "app.bsky.richtext.facet#mention", "did": "did:plc:abc"}
    ]
