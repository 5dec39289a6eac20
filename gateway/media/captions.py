"""Captions drawn on images: any script, right to left included, emoji in colour,
legible on any background.

Text is laid out by Pillow's raqm engine (libraqm: shaping, bidi) with DejaVu
Sans (or ``[media] caption_font``), found in the usual places of each distribution;
emoji are drawn with a colour emoji font (:mod:`gateway.media.richtext`).  Without
raqm, or without the fonts, captions still render (Latin only, emoji as boxes) and the
log says what to install.
"""

from __future__ import annotations

import logging
import math
from dataclasses import dataclass, field
from typing import Literal

from PIL import Image, ImageFont

from gateway.media.fonts import FONT_CANDIDATES as FONT_CANDIDATES
from gateway.media.fonts import Fonts, text_font
from gateway.media.richtext import Align, TextBlock
from gateway.support.ratelog import RateLimitedLog
from gateway.support.text import clean_text

log = logging.getLogger(__name__)
_ratelog = RateLimitedLog(log)

Position = Literal["top-left", "top-right", "bottom-left", "bottom-right", "top", "bottom"]
RGB = tuple[int, int, int]


@dataclass(frozen=True)
class Caption:
    """Text drawn on an image; sizes are fractions of the image height.

    ``direction`` and ``language`` are hints for libraqm; by default the direction
    is detected from the text, so Arabic or Hebrew come out right to left.
    """

    text: str
    position: Position = "bottom-left"
    size: float = 0.045
    color: RGB = (255, 255, 255)
    outline_color: RGB = (0, 0, 0)
    outline: float = 0.1  # stroke width as a fraction of the font size
    margin: float = 0.025
    direction: Literal["ltr", "rtl"] | None = None
    language: str | None = None
    fonts: Fonts = field(default_factory=Fonts)
    """The text and emoji fonts (``[media] caption_font``, ``emoji_font``)."""


def find_font(
    size: int, *, bold: bool = False, fonts: Fonts | None = None
) -> ImageFont.FreeTypeFont | ImageFont.ImageFont:
    """The text font at ``size`` pixels (raqm layout when available), else Pillow's default."""
    return text_font(size, bold, fonts.text if fonts else None)


def draw_caption(im: Image.Image, caption: Caption) -> Image.Image:
    """Draw ``caption`` on ``im`` (in place) with an outline so it reads on any background.

    Line breaks of any kind (``\\r``, U+0085, U+2029...) become ``\\n`` and controls
    are removed first; a caption that still cannot be laid out is left off, with a
    (rate-limited) warning: the image goes out without it.
    """
    text = clean_text(caption.text)
    if not text.strip():
        return im
    try:
        _draw(im, caption, text)
    except (RuntimeError, OSError, ValueError) as exc:  # raqm_layout() failed, and kin
        _ratelog.warning("caption", "caption left off, it cannot be drawn: %s", exc)
    return im


def _draw(im: Image.Image, caption: Caption, text: str) -> None:
    margin = round(caption.margin * im.height)
    px = max(8, round(caption.size * im.height))
    align: Align = "right" if caption.position.endswith("right") else "left"
    align = "center" if caption.position in ("top", "bottom") else align
    for _ in range(3):  # shrink a caption wider than the image, proportionally
        block = TextBlock(
            text,
            px,
            caption.fonts,
            stroke=max(1, round(px * caption.outline)),
            direction=caption.direction,
            language=caption.language,
        )
        room = im.width - 2 * margin
        if block.width <= room or px <= 8:
            break
        px = max(8, math.floor(px * room / block.width))
    x = {
        "left": margin,
        "right": im.width - margin - block.width,
        "center": (im.width - block.width) // 2,
    }
    y = margin if caption.position.startswith("top") else im.height - margin - block.height
    block.draw(im, (x[align], y), caption.color, stroke_fill=caption.outline_color, align=align)
