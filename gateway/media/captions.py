"""Captions drawn on images: any script, right to left included, legible on any background.

Text is laid out by Pillow's raqm engine (libraqm: shaping, bidi) with DejaVu
Sans, found in the usual places of each distribution; without raqm, or without
the font, captions still render (Latin only) and the log says what to install.
"""

from __future__ import annotations

import logging
import math
from dataclasses import dataclass
from functools import lru_cache
from typing import Literal

from PIL import Image, ImageDraw, ImageFont, features

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


@lru_cache(maxsize=4)
def _font_path(bold: bool) -> str | None:
    name = "DejaVuSans-Bold" if bold else "DejaVuSans"
    for pattern in FONT_CANDIDATES:
        candidate = pattern.format(name=name)
        try:
            ImageFont.truetype(candidate, 10)
        except OSError:
            continue
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


def find_font(size: int, *, bold: bool = False) -> ImageFont.FreeTypeFont | ImageFont.ImageFont:
    """DejaVu Sans at ``size`` pixels (raqm layout when available), else Pillow's default."""
    path = _font_path(bold)
    if path is None:
        return ImageFont.load_default(size)
    return ImageFont.truetype(path, size)


def _uses_raqm(font: ImageFont.FreeTypeFont | ImageFont.ImageFont) -> bool:
    return isinstance(font, ImageFont.FreeTypeFont) and font.layout_engine == ImageFont.Layout.RAQM


def draw_caption(im: Image.Image, caption: Caption) -> Image.Image:
    """Draw ``caption`` on ``im`` (in place) with an outline so it reads on any background."""
    if not caption.text.strip():
        return im
    margin = round(caption.margin * im.height)
    px = max(8, round(caption.size * im.height))
    align = "right" if caption.position.endswith("right") else "left"
    align = "center" if caption.position in ("top", "bottom") else align
    draw = ImageDraw.Draw(im)
    for _ in range(3):  # shrink a caption wider than the image, proportionally
        font = find_font(px)
        raqm = _uses_raqm(font)  # the basic layout rejects direction and language outright
        direction, language = (caption.direction, caption.language) if raqm else (None, None)
        stroke = max(1, round(px * caption.outline))
        left, top, right, bottom = draw.textbbox(
            (0, 0),
            caption.text,
            font,
            align=align,
            stroke_width=stroke,
            direction=direction,
            language=language,
        )
        room = im.width - 2 * margin
        if right - left <= room or px <= 8:
            break
        px = max(8, math.floor(px * room / (right - left)))
    width = right - left
    x = {"left": margin, "right": im.width - margin - width, "center": (im.width - width) // 2}
    y = margin if caption.position.startswith("top") else im.height - margin - (bottom - top)
    draw.text(
        (x[align] - left, y - top),
        caption.text,
        caption.color,
        font,
        align=align,
        stroke_width=stroke,
        stroke_fill=caption.outline_color,
        direction=direction,
        language=language,
    )
    return im
