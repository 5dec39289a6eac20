"""Bluesky rich-text facets, detected as the official client does.

A port of ``packages/api/src/rich-text/detection.ts`` and ``util.ts`` of
``bluesky-social/atproto`` (commit d6296a1c, August 2026): mentions, links (with
``https://`` or a bare domain whose top-level domain exists) and hashtags, with
UTF-8 byte offsets.  Cashtags (``$AAPL``), which that client has added since, are
not detected: a sensor post's ``$5`` or ``$CO2`` must not become a tag.

A mention's ``did`` is the handle here; :func:`resolve_mentions` replaces it by the
DID a resolver returns, or drops the facet (the text stays plain) when there is none.
"""

from __future__ import annotations

import functools
import importlib.resources
import unicodedata
from collections.abc import Callable
from typing import Any

import regex

_JS_SPACE = (
    "\t\n\v\f\r \u00a0\u1680\u2000\u2001\u2002\u2003\u2004\u2005\u2006\u2007\u2008"
    "\u2009\u200a\u2028\u2029\u202f\u205f\u3000\ufeff"
)
"""What JavaScript's ``\\s`` matches (Python's differs in a few control characters)."""
_S = regex.escape(_JS_SPACE)
_ZERO_WIDTH = "\u00ad\u2060\u200a\u200b\u200c\u200d\u20e2"
_Z = regex.escape(_ZERO_WIDTH)
MENTION = regex.compile(rf"(?:^|[{_S}(])@([a-zA-Z0-9.-]+)\b", regex.ASCII)
URL = regex.compile(
    rf"(?:^|(?<=[{_S}(]))(?:https?://[^{_S}]+"
    rf"|(?P<domain>[a-z][a-z0-9]*(?:\.[a-z0-9]+)+)[^{_S}]*)",
    regex.IGNORECASE | regex.MULTILINE,
)
TAG = regex.compile(
    rf"(?:^|(?<=[{_S}]))[#＃]((?!\ufe0f)[^{_S}{_Z}]*[^0-9{_S}\p{{P}}{_Z}]+[^{_S}{_Z}]*)?"
)
"""``TAG_REGEX``: a tag needs one character that is no digit and no punctuation."""
MAX_TAG_GRAPHEMES = 64


@functools.cache
def top_level_domains() -> frozenset[str]:
    """The IANA top-level domains (``tlds.txt``, from the npm package the client uses)."""
    text = importlib.resources.files(__package__).joinpath("tlds.txt").read_text("utf-8")
    return frozenset(
        line.strip() for line in text.splitlines() if line.strip() and not line.startswith("#")
    )


def is_valid_domain(name: str) -> bool:
    """Whether ``name`` ends with ``.<a known top-level domain>`` (case as written)."""
    _, dot, tld = name.rpartition(".")
    return bool(dot) and tld in top_level_domains()


def _utf8(text: str, index: int) -> int:
    return len(text[:index].encode("utf-8"))


def _facet(text: str, start: int, end: int, kind: str, **value: str) -> dict[str, Any]:
    return {
        "index": {"byteStart": _utf8(text, start), "byteEnd": _utf8(text, end)},
        "features": [{"$type": f"app.bsky.richtext.facet#{kind}", **value}],
    }


def _utf16_len(text: str) -> int:
    return len(text.encode("utf-16-le")) // 2


def _strip_trailing_punctuation(tag: str) -> str:
    end = len(tag)
    while end and unicodedata.category(tag[end - 1]).startswith("P"):
        end -= 1
    return tag[:end]


def detect_facets(text: str) -> list[dict[str, Any]]:
    """Mention (``did`` = the handle, unresolved), link and tag facets, sorted by start."""
    facets = []
    for match in MENTION.finditer(text):
        handle = match.group(1)
        if not is_valid_domain(handle) and not handle.endswith(".test"):
            continue  # probably not a handle
        start = match.start(1) - 1
        facets.append(_facet(text, start, match.end(1), "mention", did=handle))
    for match in URL.finditer(text):
        uri, start, end = match.group(), match.start(), match.end()
        if not uri.startswith("http"):  # as the client: case-sensitive
            domain = match.group("domain")
            if not domain or not is_valid_domain(domain):
                continue
            uri = f"https://{uri}"
        if uri[-1] in ".,;:!?":
            uri, end = uri[:-1], end - 1
        if uri.endswith(")") and "(" not in uri:
            uri, end = uri[:-1], end - 1
        facets.append(_facet(text, start, end, "link", uri=uri))
    for match in TAG.finditer(text):
        tag = match.group(1)
        if not tag:
            continue
        tag = _strip_trailing_punctuation(tag.strip(_JS_SPACE))
        if not tag or (_utf16_len(tag) > MAX_TAG_GRAPHEMES and _graphemes(tag) > MAX_TAG_GRAPHEMES):
            continue
        start = match.start()
        facets.append(_facet(text, start, start + 1 + len(tag), "tag", tag=tag))
    return sorted(facets, key=lambda f: f["index"]["byteStart"])


def _graphemes(text: str) -> int:
    return len(regex.findall(r"\X", text))


def resolve_mentions(
    facets: list[dict[str, Any]], resolve: Callable[[str], str | None]
) -> list[dict[str, Any]]:
    """Mention facets with the DID ``resolve(handle)`` gives; unresolved ones dropped."""
    out = []
    for facet in facets:
        feature = facet["features"][0]
        if feature["$type"] != "app.bsky.richtext.facet#mention":
            out.append(facet)
            continue
        did = resolve(feature["did"])
        if did:
            out.append({**facet, "features": [{**feature, "did": did}]})
    return out


__all__ = ["detect_facets", "is_valid_domain", "resolve_mentions", "top_level_domains"]
