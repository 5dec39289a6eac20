"""Fonts for captions and charts: a text font, an emoji font, and which glyphs each has.

Text is drawn with DejaVu Sans (or ``[media] caption_font``); what it has no glyph
for — emoji, mostly — with a colour emoji font (Noto Color Emoji, or ``[media]
emoji_font``).  Which font has which character is read from the font's ``cmap``
table (a few kilobytes, parsed here: Pillow does not expose it), so a caption's
characters are sorted before anything is drawn, and a character no font has is
reported by ``check-config``, ``preview`` and the log instead of silently becoming
an empty box.

Memory is bounded: font objects, coverage tables and rendered emoji are kept in
small LRU caches (one NotoColorEmoji face is a memory-mapped file, not a copy).
"""

from __future__ import annotations

import bisect
import logging
import struct
from dataclasses import dataclass
from functools import lru_cache
from typing import TYPE_CHECKING

import regex
from PIL import ImageFont, features

if TYPE_CHECKING:
    from gateway.config import GatewayConfig

log = logging.getLogger(__name__)

FONT_CANDIDATES = (
    "/usr/share/fonts/truetype/dejavu/{name}.ttf",  # Debian, Raspberry Pi OS, Ubuntu
    "/usr/share/fonts/TTF/{name}.ttf",  # Arch
    "/usr/share/fonts/dejavu-sans-fonts/{name}.ttf",  # Fedora
    "/usr/share/fonts/dejavu/{name}.ttf",  # Alpine
    "/usr/local/share/fonts/{name}.ttf",
    "/Library/Fonts/{name}.ttf",
    "{name}.ttf",  # Pillow then searches the platform's font folders
)
EMOJI_FONT_CANDIDATES = (
    "/usr/share/fonts/truetype/noto/NotoColorEmoji.ttf",  # Debian, Raspberry Pi OS, Ubuntu
    "/usr/share/fonts/noto/NotoColorEmoji.ttf",  # Arch
    "/usr/share/fonts/google-noto-color-emoji-fonts/NotoColorEmoji.ttf",  # Fedora
    "/usr/share/fonts/noto-emoji/NotoColorEmoji.ttf",  # Alpine
    "/usr/local/share/fonts/NotoColorEmoji.ttf",
)
EMOJI_PIXEL_SIZE = 109
"""NotoColorEmoji is a bitmap (CBDT) font with one strike: it loads at 109 pixels only.
Emoji are drawn at that size and scaled to the text's (a scalable colour font too)."""
EMOJI_HINT = "install fonts-noto-color-emoji, or set [media] emoji_font"

_GRAPHEME = regex.compile(r"\X")
_EMOJI_STYLE = regex.compile(r"\p{Emoji_Presentation}|\uFE0F")
_JOINERS = frozenset({0x200D, 0xFE0E, 0xFE0F, 0x20E3})
_TEMPLATE_CODE = regex.compile(r"\{\{.*?\}\}|\{%.*?%\}|\{#.*?#\}", regex.DOTALL)
_BUILTIN_COVERAGE = ((0x20, 0x7E), (0xA0, 0xFF))  # Pillow's own font: Latin-1


@dataclass(frozen=True)
class Fonts:
    """Which fonts to draw with: configured paths, or None to find the usual ones."""

    text: str | None = None
    """A TrueType/OpenType file for text (``[media] caption_font``); default DejaVu Sans."""
    emoji: str | None = None
    """A colour emoji font (``[media] emoji_font``); default Noto Color Emoji."""


DEFAULT_FONTS = Fonts()
"""DejaVu Sans and Noto Color Emoji, wherever the distribution put them."""


class Coverage:
    """The characters a font has a glyph for, as sorted ranges (bisect, no big set)."""

    def __init__(self, ranges: list[tuple[int, int]]) -> None:
        """``ranges``: inclusive ``(first, last)`` code points, in any order."""
        merged: list[list[int]] = []
        for first, last in sorted(ranges):
            if merged and first <= merged[-1][1] + 1:
                merged[-1][1] = max(merged[-1][1], last)
            else:
                merged.append([first, last])
        self._starts = [r[0] for r in merged]
        self._ends = [r[1] for r in merged]

    def __contains__(self, char: object) -> bool:
        if not isinstance(char, int):
            return False
        i = bisect.bisect_right(self._starts, char) - 1
        return i >= 0 and char <= self._ends[i]

    def __len__(self) -> int:
        return sum(e - s + 1 for s, e in zip(self._starts, self._ends, strict=True))


def _cmap_ranges(data: bytes) -> list[tuple[int, int]]:
    """Code point ranges of an sfnt font's best Unicode cmap subtable (format 12 or 4)."""
    base = struct.unpack_from(">I", data, 12)[0] if data[:4] == b"ttcf" else 0
    (tables,) = struct.unpack_from(">H", data, base + 4)
    cmap = next(
        struct.unpack_from(">I", data, base + 12 + 16 * i + 8)[0]
        for i in range(tables)
        if data[base + 12 + 16 * i : base + 16 + 16 * i] == b"cmap"
    )
    (count,) = struct.unpack_from(">H", data, cmap + 2)
    subtables = {}
    for i in range(count):
        platform, encoding, offset = struct.unpack_from(">HHI", data, cmap + 4 + 8 * i)
        subtables[(platform, encoding)] = cmap + offset
    for key in ((3, 10), (0, 6), (0, 4), (3, 1), (0, 3), (0, 2), (0, 1), (0, 0)):
        at = subtables.get(key)
        if at is None:
            continue
        (fmt,) = struct.unpack_from(">H", data, at)
        if fmt == 12:
            (groups,) = struct.unpack_from(">I", data, at + 12)
            return [struct.unpack_from(">II", data, at + 16 + 12 * g) for g in range(groups)]
        if fmt == 4:
            return _format4(data, at)
    raise ValueError("no Unicode cmap of format 4 or 12")


def _format4(data: bytes, at: int) -> list[tuple[int, int]]:
    segments = struct.unpack_from(">H", data, at + 6)[0] // 2
    ends = struct.unpack_from(f">{segments}H", data, at + 14)
    starts = struct.unpack_from(f">{segments}H", data, at + 16 + 2 * segments)
    range_at = at + 16 + 6 * segments
    offsets = struct.unpack_from(f">{segments}H", data, range_at)
    ranges = []
    for i, (start, end) in enumerate(zip(starts, ends, strict=True)):
        if start == 0xFFFF:
            continue
        if offsets[i] == 0:
            ranges.append((start, end))
            continue
        for char in range(start, end + 1):  # glyph ids from the array; 0 means none
            where = range_at + 2 * i + offsets[i] + 2 * (char - start)
            if struct.unpack_from(">H", data, where)[0]:
                ranges.append((char, char))
    return ranges


@lru_cache(maxsize=8)
def coverage(path: str | None) -> Coverage:
    """The characters the font at ``path`` has (None: Pillow's built-in font, Latin-1)."""
    if path is None:
        return Coverage(list(_BUILTIN_COVERAGE))
    try:
        with open(path, "rb") as f:
            return Coverage(_cmap_ranges(f.read()))
    except (OSError, ValueError, struct.error, StopIteration) as exc:
        log.warning("font %s: cannot read its character map (%s); assuming Latin-1", path, exc)
        return Coverage(list(_BUILTIN_COVERAGE))


def _loads(path: str, size: int) -> bool:
    try:
        ImageFont.truetype(path, size)
    except OSError:
        return False
    return True


@lru_cache(maxsize=8)
def text_font_path(configured: str | None = None, bold: bool = False) -> str | None:
    """The text font: the configured file, else DejaVu Sans; None means Pillow's own."""
    if configured is not None:
        if _loads(configured, 10):
            return configured
        log.warning("caption_font %s cannot be loaded; using the default font", configured)
    name = "DejaVuSans-Bold" if bold else "DejaVuSans"
    for pattern in FONT_CANDIDATES:
        candidate = pattern.format(name=name)
        if _loads(candidate, 10):
            log.info("caption font: %s", candidate)
            if not features.check("raqm"):
                log.warning(
                    "libraqm not found: right-to-left and complex scripts will not be "
                    "shaped (apt install libraqm0)"
                )
            return candidate
    log.warning(
        "DejaVu Sans not found (apt install fonts-dejavu-core); using Pillow's "
        "built-in font, which covers Latin only"
    )
    return None


@lru_cache(maxsize=4)
def emoji_font_path(configured: str | None = None) -> str | None:
    """The colour emoji font: the configured file, else Noto Color Emoji; None if absent."""
    for candidate in (configured,) if configured else EMOJI_FONT_CANDIDATES:
        if candidate and _loads(candidate, EMOJI_PIXEL_SIZE):
            return candidate
    log.warning("no colour emoji font (%s): emoji are drawn as boxes", EMOJI_HINT)
    return None


@lru_cache(maxsize=16)
def text_font(
    size: int, bold: bool = False, configured: str | None = None
) -> ImageFont.FreeTypeFont | ImageFont.ImageFont:
    """The text font at ``size`` pixels (a bounded cache: captions use a few sizes)."""
    path = text_font_path(configured, bold)
    if path is None:
        return ImageFont.load_default(size)
    return ImageFont.truetype(path, size)


@lru_cache(maxsize=2)
def emoji_font(path: str) -> ImageFont.FreeTypeFont:
    """The emoji font at :data:`EMOJI_PIXEL_SIZE` (the only size a bitmap emoji font has)."""
    return ImageFont.truetype(path, EMOJI_PIXEL_SIZE)


def _drawable(cluster: str, cov: Coverage) -> bool:
    return all(ord(c) in cov for c in cluster if ord(c) not in _JOINERS)


def split_runs(text: str, fonts: Fonts, bold: bool = False) -> tuple[list[tuple[str, bool]], str]:
    """``text`` as runs of ``(text, is_emoji)``, and the characters no font can draw.

    A character cluster goes to the emoji font when it asks for emoji style (🌿, or
    U+FE0F) or the text font lacks it, and the emoji font has it.
    """
    text_cov = coverage(text_font_path(fonts.text, bold))
    emoji_path = emoji_font_path(fonts.emoji)
    emoji_cov = coverage(emoji_path) if emoji_path else None
    runs: list[tuple[str, bool]] = []
    missing = ""
    for cluster in _GRAPHEME.findall(text):
        base = ord(cluster[0])
        has_emoji = emoji_cov is not None and base in emoji_cov and not cluster.isspace()
        wants_emoji = bool(_EMOJI_STYLE.match(cluster)) or "\ufe0f" in cluster
        in_text = cluster.isspace() or _drawable(cluster, text_cov)
        is_emoji = has_emoji and (wants_emoji or not in_text)
        if not is_emoji and not in_text:
            missing += cluster
        if runs and runs[-1][1] == is_emoji:
            runs[-1] = (runs[-1][0] + cluster, is_emoji)
        else:
            runs.append((cluster, is_emoji))
    return runs, missing


def missing_glyphs(text: str, fonts: Fonts = DEFAULT_FONTS, *, bold: bool = False) -> str:
    """The characters of ``text`` that no configured font can draw (empty when all can)."""
    return split_runs(text, fonts, bold)[1]


def describe_missing(missing: str, fonts: Fonts) -> str:
    """A warning's text for characters no font has, with what to do about it."""
    chars = " ".join(dict.fromkeys(c for c in missing if not c.isspace()))
    codes = ", ".join(f"U+{ord(c):04X}" for c in dict.fromkeys(missing) if ord(c) not in _JOINERS)
    emoji = emoji_font_path(fonts.emoji)
    used = ", ".join(p for p in (text_font_path(fonts.text), emoji) if p) or "Pillow's own font"
    hint = "" if emoji else f"; {EMOJI_HINT}"
    return f"{chars} ({codes}) cannot be drawn by any configured font ({used}){hint}"


def glyph_warnings(config: GatewayConfig) -> list[str]:
    """Captions and chart titles with characters no configured font can draw.

    A caption is a template: its literal text is checked (values come later, and a
    value's missing glyphs are logged when drawn).
    """
    fonts = Fonts(config.media.caption_font, config.media.emoji_font)
    found = []
    for r, rule in enumerate(config.rules):
        texts = [
            (f"images[{i}].caption", _TEMPLATE_CODE.sub("", image.caption), False)
            for i, image in enumerate(rule.images)
            if image.caption
        ]
        texts += [
            (f"charts[{i}].title", chart.title, True)
            for i, chart in enumerate(rule.charts)
            if chart.title
        ]
        for where, text, bold in texts:
            missing = missing_glyphs(text, fonts, bold=bold)
            if missing.strip():
                found.append(f"rules[{r}].{where}: {describe_missing(missing, fonts)}")
    return found
