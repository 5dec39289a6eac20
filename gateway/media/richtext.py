"""Text with emoji, drawn with two fonts: the text font for text, the emoji font for emoji.

A line is split into runs (:func:`gateway.media.fonts.split_runs`).  Text runs are
drawn by Pillow (raqm: shaping, right to left) with an outline; each emoji is drawn
in colour (``embedded_color``) at the emoji font's own size, 109 pixels, then scaled to
the text's size and pasted on the baseline.  Characters no font has are drawn by the
text font (as boxes) and logged once.
"""

from __future__ import annotations

import logging
import unicodedata
from dataclasses import dataclass
from functools import lru_cache
from typing import Literal

import regex
from PIL import Image, ImageDraw, ImageFont

from gateway.media.fonts import (
    DEFAULT_FONTS,
    EMOJI_PIXEL_SIZE,
    Fonts,
    describe_missing,
    emoji_font,
    emoji_font_path,
    split_runs,
    text_font,
)

log = logging.getLogger(__name__)

Align = Literal["left", "center", "right"]
Font = ImageFont.FreeTypeFont | ImageFont.ImageFont
RGB = tuple[int, int, int]
LINE_SPACING = 4  # pixels between lines, as Pillow's multiline text
_GRAPHEME = regex.compile(r"\X")
_warned: set[str] = set()
_WARN_MAX = 256  # distinct characters warned about; bounded like everything else


@dataclass(frozen=True)
class _Glyph:
    """One emoji at one size: its pixels, where they sit from the pen, its advance."""

    image: Image.Image
    left: int
    top: int
    advance: float


@lru_cache(maxsize=32)
def _emoji_master(path: str, cluster: str) -> _Glyph:
    font = emoji_font(path)
    left, top, right, bottom = (int(v) for v in font.getbbox(cluster, anchor="ls"))
    im = Image.new("RGBA", (max(1, right - left), max(1, bottom - top)))
    ImageDraw.Draw(im).text((-left, -top), cluster, font=font, anchor="ls", embedded_color=True)
    return _Glyph(im, left, top, font.getlength(cluster))


@lru_cache(maxsize=64)
def _emoji_glyph(path: str, cluster: str, size: int) -> _Glyph:
    """The emoji scaled from the font's 109 pixels to ``size`` (a bounded cache)."""
    master = _emoji_master(path, cluster)
    k = size / EMOJI_PIXEL_SIZE
    w, h = master.image.size
    scaled = master.image.resize(
        (max(1, round(w * k)), max(1, round(h * k))), Image.Resampling.LANCZOS
    )
    return _Glyph(scaled, round(master.left * k), round(master.top * k), master.advance * k)


def _metrics(font: Font) -> tuple[int, int]:
    if isinstance(font, ImageFont.FreeTypeFont):
        return font.getmetrics()
    top, bottom = font.getbbox("Ag")[1::2]
    return int(-top), int(bottom)


def _is_rtl(line: str) -> bool:
    for char in line:
        kind = unicodedata.bidirectional(char)
        if kind in ("R", "AL"):
            return True
        if kind == "L":
            return False
    return False


def _warn_missing(missing: str, fonts: Fonts) -> None:
    new = "".join(c for c in dict.fromkeys(missing) if c not in _warned and not c.isspace())
    if new and len(_warned) < _WARN_MAX:
        _warned.update(new)
        log.warning("%s", describe_missing(new, fonts))


class TextBlock:
    """Lines of text and emoji laid out at ``size`` pixels, ready to measure and draw."""

    def __init__(
        self,
        text: str,
        size: int,
        fonts: Fonts = DEFAULT_FONTS,
        *,
        bold: bool = False,
        stroke: int = 0,
        direction: Literal["ltr", "rtl"] | None = None,
        language: str | None = None,
    ) -> None:
        """Lay out ``text`` (``\\n`` breaks lines); ``stroke`` is the outline's width."""
        self.font = text_font(size, bold, fonts.text)
        self.size, self.stroke, self.fonts = size, stroke, fonts
        raqm = (
            isinstance(self.font, ImageFont.FreeTypeFont)
            and self.font.layout_engine == ImageFont.Layout.RAQM
        )
        # the basic layout rejects direction and language outright
        self._direction, self._language = (direction, language) if raqm else (None, None)
        self._emoji_path = emoji_font_path(fonts.emoji)
        self.ascent, self.descent = _metrics(self.font)
        self.lines: list[list[tuple[str, bool]]] = []
        self.widths: list[float] = []
        missing = ""
        for line in text.split("\n"):
            runs, lost = split_runs(line, fonts, bold)
            missing += lost
            rtl = direction == "rtl" or (direction is None and _is_rtl(line))
            self.lines.append(runs[::-1] if rtl else runs)  # each run is still shaped by raqm
            self.widths.append(sum(self._advance(run, emoji) for run, emoji in runs))
        if missing:
            _warn_missing(missing, fonts)

    @property
    def line_height(self) -> int:
        """Pixels from one line's top to the next line's top."""
        return self.ascent + self.descent + LINE_SPACING

    @property
    def width(self) -> int:
        """The block's width, outline included."""
        return round(max(self.widths, default=0)) + 2 * self.stroke

    @property
    def height(self) -> int:
        """The block's height, outline included."""
        return len(self.lines) * self.line_height - LINE_SPACING + 2 * self.stroke

    def _clusters(self, run: str) -> list[str]:
        return list(_GRAPHEME.findall(run))

    def _advance(self, run: str, emoji: bool) -> float:
        if emoji and self._emoji_path:
            return sum(
                _emoji_glyph(self._emoji_path, c, self.size).advance for c in self._clusters(run)
            )
        return float(
            self.font.getlength(run, direction=self._direction, language=self._language)
            if isinstance(self.font, ImageFont.FreeTypeFont)
            else self.font.getlength(run)
        )

    def draw(
        self,
        im: Image.Image,
        xy: tuple[float, float],
        fill: RGB,
        *,
        stroke_fill: RGB = (0, 0, 0),
        align: Align = "left",
    ) -> None:
        """Draw the block with its top-left corner (outline included) at ``xy``."""
        draw = ImageDraw.Draw(im)
        left, top = xy[0] + self.stroke, xy[1] + self.stroke
        inner = max(self.widths, default=0)
        for n, (runs, width) in enumerate(zip(self.lines, self.widths, strict=True)):
            x = left + {"left": 0.0, "center": (inner - width) / 2, "right": inner - width}[align]
            baseline = top + n * self.line_height + self.ascent
            for run, emoji in runs:
                if emoji and self._emoji_path:
                    x = self._draw_emoji(im, run, x, baseline)
                    continue
                draw.text(
                    (x, baseline),
                    run,
                    fill,
                    self.font,
                    anchor="ls",
                    stroke_width=self.stroke,
                    stroke_fill=stroke_fill,
                    direction=self._direction,
                    language=self._language,
                )
                x += self._advance(run, False)

    def _draw_emoji(self, im: Image.Image, run: str, x: float, baseline: float) -> float:
        assert self._emoji_path is not None
        for cluster in self._clusters(run):
            glyph = _emoji_glyph(self._emoji_path, cluster, self.size)
            where = (round(x) + glyph.left, round(baseline) + glyph.top)
            im.paste(glyph.image, where, glyph.image)
            x += glyph.advance
        return x


def draw_text(
    im: Image.Image,
    xy: tuple[float, float],
    text: str,
    size: int,
    fill: RGB,
    fonts: Fonts = DEFAULT_FONTS,
    *,
    bold: bool = False,
    anchor: Literal["left", "right"] = "left",
) -> TextBlock:
    """Draw one line of ``text`` (emoji in colour) with its top at ``xy[1]`` and its
    left (or right, with ``anchor="right"``) edge at ``xy[0]``; returns its layout."""
    block = TextBlock(text, size, fonts, bold=bold)
    x = xy[0] - block.width if anchor == "right" else xy[0]
    block.draw(im, (x, xy[1]), fill)
    return block
