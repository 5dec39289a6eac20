"""Count and fit post text exactly as each platform does (pure functions, no I/O).

Length is measured in the unit a :class:`~gateway.publishers.base.Capabilities` names:

- ``graphemes``: extended grapheme clusters. With ``url_length`` set the count is
  Mastodon's: every http(s) URL counts as ``url_length`` and a remote mention
  ``@user@domain`` counts as ``@user`` (Mastodon's ``StatusLengthValidator``). Without
  it (Bluesky) URLs count in full.
- ``weighted``: X's twitter-text v3 rules (NFC, code points in the Latin/punctuation
  ranges weigh 1, everything else 2, an emoji sequence 2, every URL ``url_length``, 23
  by default), computed by the ``twitter-text-parser`` package, a port of twitter-text
  that passes the official conformance suite.
- ``chars``: code points; ``bytes``: UTF-8 bytes; both with URLs as ``url_length`` when set.

``max_text_bytes`` is always checked on the raw UTF-8 text (Bluesky's 3000-byte cap).

Grapheme clusters come from the ``regex`` module's ``\\X``: it is released monthly
against the current Unicode version (emoji ZWJ sequences, flags, Indic conjuncts),
runs in C, and we need it anyway for UAX #29 word boundaries. The ``grapheme``
package has not been updated since Unicode 13.

Fitting never cuts inside a grapheme cluster, a URL, a hashtag or a mention: a cut
point is only ever a grapheme boundary outside those spans, so an entity that would
not fit is dropped whole.
"""

from __future__ import annotations

import importlib
import importlib.resources
import importlib.util
import sys
import types
from collections.abc import Callable, Iterator
from functools import cache
from itertools import pairwise
from typing import Any

import regex

from gateway.model import Capabilities


def _resource_string(module_name: str, name: str) -> bytes:
    # Like pkg_resources: the resource sits beside the module (spec.parent is its package).
    spec = sys.modules[module_name].__spec__
    package = spec.parent if spec is not None and spec.parent else module_name
    return importlib.resources.files(package).joinpath(name).read_bytes()


def _twitter_text_package() -> None:
    """Put the ``twitter_text`` package in ``sys.modules`` without running its
    ``__init__``, which imports everything: its emoji table alone is 4 MB, and only X's
    weighted count needs it.  Its submodules then import one by one."""
    if "twitter_text" in sys.modules:
        return
    spec = importlib.util.find_spec("twitter_text")
    if spec is None:
        raise ModuleNotFoundError("twitter-text-parser is not installed", name="twitter_text")
    sys.modules["twitter_text"] = importlib.util.module_from_spec(spec)


@cache
def _url_extractor() -> Callable[[str, bool], list[dict[str, Any]]]:
    """twitter-text's URL extraction, imported on first use (about 1.3 MB)."""
    _twitter_text_package()
    module = importlib.import_module("twitter_text.extract_urls")
    extract: Callable[[str, bool], list[dict[str, Any]]] = module.extract_urls_with_indices
    return extract


def _import_with_pkg_resources(name: str) -> types.ModuleType:
    """Import ``name`` from twitter-text-parser, which reads its emoji table via
    ``pkg_resources``.

    ``pkg_resources`` left setuptools in v81 (and is slow and warns before that), but
    the package only calls ``resource_string`` once, at import. A stand-in module is
    put in ``sys.modules`` for the duration of the import, then the previous state is
    restored, so nothing else ever sees it.
    """
    if sys.modules.get("pkg_resources") is not None:
        return importlib.import_module(name)
    missing = "pkg_resources" not in sys.modules
    stand_in = types.ModuleType("pkg_resources")
    stand_in.__dict__["resource_string"] = _resource_string
    sys.modules["pkg_resources"] = stand_in
    try:
        return importlib.import_module(name)
    finally:
        if missing:
            del sys.modules["pkg_resources"]
        else:
            sys.modules["pkg_resources"] = None  # type: ignore[assignment]


@cache
def _tweet_parser() -> tuple[Callable[..., Any], dict[str, Any]]:
    """twitter-text's ``parse_tweet`` and its v3 config, imported on first use (about
    6 MB and 0.1 s: only a gateway posting to X loads it)."""
    _twitter_text_package()
    module = _import_with_pkg_resources("twitter_text.parse_tweet")
    return module.parse_tweet, importlib.import_module("twitter_text.config").config["version3"]


__all__ = [
    "BLUESKY",
    "MASTODON",
    "X",
    "count_length",
    "find_urls",
    "fit_text",
    "fits",
    "graphemes",
    "split_thread",
]

MASTODON = Capabilities(text_counting="graphemes", max_text=500, url_length=23)
"""Mastodon's default limit; the publisher reads the real one from the instance."""
BLUESKY = Capabilities(text_counting="graphemes", max_text=300, max_text_bytes=3000)
X = Capabilities(text_counting="weighted", max_text=280, url_length=23)

_TWITTER_URL_LENGTH = 23
_GRAPHEME = regex.compile(r"\X")
_WORD_BOUNDARY = regex.compile(r"\b", flags=regex.WORD | regex.V1)
# Catches http(s) links twitter-text rejects (unknown TLDs) so they are still never cut.
_LOOSE_URL = regex.compile(r"https?://[^\s<>\"'`]+")
# Every URL twitter-text finds has a scheme or a dot before its (alphabetic) TLD.
_MAYBE_URL = regex.compile(r"://|[.\uff0e\u3002\uff61]\p{L}")
_LOOSE_URL_TAIL = regex.compile(r"[.,;:!?…)\]}»”’]+$")
_HASHTAG = regex.compile(r"[#＃][\p{L}\p{M}\p{Nd}_\u200c\u200d]+")
_MENTION = regex.compile(r"@\w+(?:[.-]+\w+)*(?:@[\w.-]+\w)?")
# Mastodon's server-side StatusLengthValidator counts a remote mention as "@user"
# (Account::MENTION_RE); matching its regex, not the looser web-UI one, avoids undercounts.
_REMOTE_MENTION = regex.compile(
    r"(?<![=/\w])@([a-z0-9_]+(?:[.-]+[a-z0-9_]+)*)@[\w.-]+\w", regex.IGNORECASE
)
_PARAGRAPHS = regex.compile(r".+?(?:\n[ \t]*\n\s*|\Z)", regex.DOTALL)
_SENTENCES = regex.compile(r".+?(?:[.!?…]+[\"'”’»)\]]*(?:\s+|\Z)|[。！？]+\s*|\Z)", regex.DOTALL)
_WORDS = regex.compile(r"\S+\s*|\s+")

Span = tuple[int, int]


def graphemes(text: str) -> list[str]:
    """Split ``text`` into extended grapheme clusters (what a reader sees as one character)."""
    return list(_GRAPHEME.findall(text))


def _twitter_spans(text: str, *, bare_domains: bool) -> list[Span]:
    found = _url_extractor()(text, bare_domains)
    return [(int(u["indices"][0]), int(u["indices"][1])) for u in found]


def find_urls(text: str) -> list[tuple[int, int]]:
    """Character spans ``(start, end)`` of URLs in ``text``, sorted and non-overlapping.

    These are the URLs twitter-text extracts (http(s) links and bare domains such as
    ``example.com``, as X counts them), plus any other ``http(s)://`` token so that a
    link with an unusual TLD is still treated as one unit.
    """
    if not _MAYBE_URL.search(text):
        return []  # a reading like "24.3" or "n/a": no need to load twitter-text
    spans = _twitter_spans(text, bare_domains=True)
    for match in _LOOSE_URL.finditer(text):
        tail = _LOOSE_URL_TAIL.search(match.group())
        end = match.end() - (len(tail.group()) if tail else 0)
        spans.append((match.start(), end))
    return _merge(spans)


def _merge(spans: list[Span]) -> list[Span]:
    merged: list[Span] = []
    for start, end in sorted(spans):
        if merged and start < merged[-1][1]:
            merged[-1] = (merged[-1][0], max(end, merged[-1][1]))
        else:
            merged.append((start, end))
    return merged


def _weighted_length(text: str, url_length: int) -> int:
    parse_tweet, v3 = _tweet_parser()
    options = dict(v3, transformed_url_length=url_length)
    return int(parse_tweet(text, options).weightedLength)


def _countable_text(text: str, caps: Capabilities) -> str:
    """The text with each URL replaced by a placeholder of ``url_length`` characters."""
    if caps.url_length is None:
        return text
    placeholder = "x" * caps.url_length
    pieces: list[str] = []
    last = 0
    # Mastodon gives this concession only to links with a scheme.
    for start, end in _twitter_spans(text, bare_domains=False):
        pieces += [text[last:start], placeholder]
        last = end
    pieces.append(text[last:])
    countable = "".join(pieces)
    if caps.text_counting == "graphemes":
        countable = _REMOTE_MENTION.sub(r"@\1", countable)
    return countable


def count_length(text: str, caps: Capabilities) -> int:
    """Length of ``text`` in ``caps.text_counting`` units, as the platform counts it.

    URLs count as ``caps.url_length`` when it is set (X always shortens, to 23 by
    default). For ``graphemes`` with ``url_length`` set, ``@user@domain`` counts as
    ``@user``, as on Mastodon.
    """
    if caps.text_counting == "weighted":
        return _weighted_length(text, caps.url_length or _TWITTER_URL_LENGTH)
    countable = _countable_text(text, caps)
    if caps.text_counting == "graphemes":
        return sum(1 for _ in _GRAPHEME.finditer(countable))
    if caps.text_counting == "bytes":
        return len(countable.encode("utf-8"))
    return len(countable)


def fits(text: str, caps: Capabilities) -> bool:
    """Whether ``text`` respects both ``caps.max_text`` and ``caps.max_text_bytes``."""
    if caps.max_text_bytes is not None and len(text.encode("utf-8")) > caps.max_text_bytes:
        return False
    return caps.max_text is None or count_length(text, caps) <= caps.max_text


def _grapheme_boundaries(text: str) -> list[int]:
    return [m.end() for m in _GRAPHEME.finditer(text)]


def _protected_spans(text: str, boundaries: set[int]) -> list[Span]:
    """URL, hashtag and mention spans, widened to grapheme boundaries."""
    spans = find_urls(text)
    spans += [m.span() for m in _HASHTAG.finditer(text)]
    spans += [m.span() for m in _MENTION.finditer(text)]
    widened: list[Span] = []
    for start, end in spans:
        while start > 0 and start not in boundaries:
            start -= 1
        while end < len(text) and end not in boundaries:
            end += 1
        widened.append((start, end))
    return _merge(widened)


def _cut_points(text: str) -> tuple[list[int], list[int]]:
    """Word and grapheme cut positions (0 < p < len) outside protected spans."""
    bounds = _grapheme_boundaries(text)
    bound_set = set(bounds) | {0}
    spans = _protected_spans(text, bound_set)
    inside = {p for start, end in spans for p in range(start + 1, end)}
    grapheme_cuts = [p for p in bounds if p not in inside and 0 < p < len(text)]
    words = {m.start() for m in _WORD_BOUNDARY.finditer(text)}
    word_cuts = [p for p in grapheme_cuts if p in words]
    return word_cuts, grapheme_cuts


def _strip_space(text: str, *, leading: bool = False) -> str:
    """Strip whole whitespace grapheme clusters only (``" \\u0301"`` is not whitespace)."""
    clusters = graphemes(text)
    if leading:
        while clusters and clusters[0].isspace():
            clusters.pop(0)
    while clusters and clusters[-1].isspace():
        clusters.pop()
    return "".join(clusters)


def _shortened(text: str, cut: int, ellipsis: str, url_ends: set[int]) -> str:
    body = _strip_space(text[:cut])
    if not body:
        return ""
    # A link followed directly by "…" would be linkified with the ellipsis in it.
    joiner = " " if len(body) in url_ends else ""
    return body + joiner + ellipsis


def _longest_fit(cuts: list[int], make: Callable[[int], str], caps: Capabilities) -> str:
    """The longest candidate that fits; binary search, then a downward scan to be sure."""
    lo, hi = 0, len(cuts) - 1
    while lo <= hi:
        mid = (lo + hi) // 2
        candidate = make(cuts[mid])
        if candidate and fits(candidate, caps):
            lo = mid + 1
        else:
            hi = mid - 1
    # Counting is not strictly monotonic (URL detection can change with the cut).
    for index in range(min(lo, len(cuts) - 1), -1, -1):
        candidate = make(cuts[index])
        if candidate and fits(candidate, caps):
            return candidate
    return ""


def fit_text(text: str, caps: Capabilities, *, ellipsis: str = "…") -> str:
    """Return ``text`` unchanged when it fits, else a shortened prefix ending in ``ellipsis``.

    The cut is at the last word boundary (UAX #29) that fits, falling back to a grapheme
    boundary when no word does; a URL, hashtag, mention or grapheme cluster is never
    cut in half (it is dropped whole). A link at the end is kept apart from the
    ellipsis by one space. Returns ``""`` when not even the ellipsis fits.
    """
    if fits(text, caps):
        return text
    word_cuts, grapheme_cuts = _cut_points(text)
    url_ends = {end for _, end in find_urls(text)}

    def make(cut: int) -> str:
        return _shortened(text, cut, ellipsis, url_ends)

    for cuts in (word_cuts, grapheme_cuts):
        best = _longest_fit(cuts, make, caps)
        if best:
            return best
    return ellipsis if fits(ellipsis, caps) else ""


def _atoms(text: str) -> list[str]:
    """Single grapheme clusters, with each URL/hashtag/mention kept as one atom."""
    _, grapheme_cuts = _cut_points(text)
    edges = [0, *grapheme_cuts, len(text)]
    return [text[a:b] for a, b in pairwise(edges) if a < b]


_LEVELS: tuple[Callable[[str], list[str]], ...] = (
    _PARAGRAPHS.findall,
    _SENTENCES.findall,
    _WORDS.findall,
    _atoms,
    graphemes,
)


def _units(text: str, part_fits: Callable[[str], bool], level: int = 0) -> Iterator[str]:
    """Pieces of ``text`` in order, each fitting alone, split as coarsely as possible."""
    for piece in _LEVELS[level](text):
        if not _strip_space(piece, leading=True) or part_fits(piece):
            yield piece
        elif level + 1 < len(_LEVELS):
            yield from _units(piece, part_fits, level + 1)
        else:
            raise ValueError(f"limit too small for the grapheme cluster {piece!r}")


def _pack(text: str, caps: Capabilities, suffix: str) -> list[str]:
    def part_fits(part: str) -> bool:
        return fits(_strip_space(part, leading=True) + suffix, caps)

    parts: list[str] = []
    current = ""
    for unit in _units(text, part_fits):
        if part_fits(current + unit):
            current += unit
            continue
        if _strip_space(current, leading=True):
            parts.append(_strip_space(current, leading=True))
        current = unit
    if _strip_space(current, leading=True):
        parts.append(_strip_space(current, leading=True))
    return parts


def split_thread(text: str, caps: Capabilities, *, numbering: str = " {i}/{n}") -> list[str]:
    """Split ``text`` into numbered posts that each fit ``caps``, suffix included.

    Splits at paragraph, then sentence, then word boundaries, then between grapheme
    clusters (keeping URLs, hashtags and mentions whole when they fit in one post).
    ``numbering`` is formatted with ``i`` (1-based) and ``n``. Text that fits is
    returned as one part without numbering. Raises ``ValueError`` when the limit
    cannot hold even the numbering and one grapheme cluster.
    """
    if fits(text, caps):
        return [text]
    for digits in range(1, 7):
        widest = 10**digits - 1
        parts = _pack(text, caps, numbering.format(i=widest, n=widest))
        if len(parts) > widest:
            continue
        numbered = [p + numbering.format(i=i, n=len(parts)) for i, p in enumerate(parts, 1)]
        if all(fits(part, caps) for part in numbered):
            return numbered
    raise ValueError("text cannot be split into posts that fit")
