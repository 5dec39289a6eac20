"""Emoji in captions and chart titles are drawn in colour, not as empty boxes.

Real fonts (DejaVu Sans and Noto Color Emoji, from fonts-dejavu-core and
fonts-noto-color-emoji), real rendered images whose pixels are inspected, and the
CLI in a subprocess for the warnings.
"""

from __future__ import annotations

import logging
from datetime import UTC, datetime, timedelta
from pathlib import Path
from zoneinfo import ZoneInfo

import pytest
from PIL import Image, ImageChops

from gateway.media.captions import Caption, draw_caption
from gateway.media.charts import render_chart
from gateway.media.fonts import Fonts, coverage, emoji_font_path, text_font_path
from tests.gwutil import cli

needs_emoji_font = pytest.mark.skipif(
    emoji_font_path() is None, reason="apt install fonts-noto-color-emoji"
)
GREY = (128, 128, 128)


Pixel = tuple[int, int, int]


def colour_map(im: Image.Image, box: tuple[int, int, int, int] | None = None) -> dict[int, Pixel]:
    """Pixels with real colour by index (text, outline, background and tofu are all grey)."""
    part = im.convert("RGB").crop(box) if box else im.convert("RGB")
    data = part.tobytes()
    pixels = (tuple(data[i : i + 3]) for i in range(0, len(data), 3))
    return {n: p for n, p in enumerate(pixels) if max(p) - min(p) > 60}  # type: ignore[misc]


def coloured(im: Image.Image, box: tuple[int, int, int, int] | None = None) -> list[Pixel]:
    """The pixels with real colour."""
    return list(colour_map(im, box).values())


def mean(pixels: list[Pixel]) -> tuple[float, float, float]:
    n = len(pixels)
    r, g, b = (sum(p[c] for p in pixels) / n for c in range(3))
    return r, g, b


@needs_emoji_font
@pytest.mark.parametrize(
    ("emoji", "hue"),
    [("🌿", "green"), ("🧺", "orange"), ("🌡", "red")],
)
def test_caption_emoji_are_drawn_in_colour(emoji: str, hue: str) -> None:
    base = Image.new("RGB", (480, 270), GREY)
    out = draw_caption(base.copy(), Caption(f"Pool {emoji} 21.5 °C", size=0.12))
    changed = ImageChops.difference(base, out).getbbox()
    assert changed is not None
    pixels = coloured(out)
    assert len(pixels) > 40  # a tofu box is white and black: no coloured pixel at all
    r, g, b = mean(pixels)
    assert {"green": g > r and g > b, "orange": r > b and g > b, "red": r > g and r > b}[hue]
    # scaled from the font's 109 pixels to the caption's size (0.12 x 270 = 32 pixels)
    ys = [n // out.width for n in colour_map(out)]
    assert 0.5 * 32 < max(ys) - min(ys) < 1.4 * 32


@needs_emoji_font
def test_an_emoji_zwj_sequence_is_one_glyph() -> None:
    base = Image.new("RGB", (480, 270), GREY)
    family = draw_caption(base.copy(), Caption("👨‍👩‍👧", size=0.2))
    single = draw_caption(base.copy(), Caption("👨", size=0.2))
    width = lambda im: ImageChops.difference(base, im).getbbox()[2]  # noqa: E731
    assert width(family) < 1.5 * width(single)  # one family glyph, not three people


@needs_emoji_font
def test_chart_title_emoji_are_coloured(tmp_path: Path) -> None:
    start = datetime(2026, 6, 1, tzinfo=UTC)
    points = [(start + timedelta(minutes=i), 40.0 + i % 7) for i in range(120)]
    out = render_chart(
        points, title="🌿 Soil", unit="%", tz=ZoneInfo("UTC"), dest=tmp_path / "c.png"
    )
    with Image.open(out.path) as im:
        title = coloured(im, (0, 0, im.width // 2, int(im.height * 0.15)))
    assert len(title) > 40
    r, g, b = mean(title)
    assert g > r
    assert g > b


def test_without_an_emoji_font_captions_still_render_and_warn(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    fonts = Fonts(emoji=str(tmp_path / "no-such-emoji-font.ttf"))
    base = Image.new("RGB", (480, 270), GREY)
    with caplog.at_level(logging.WARNING):
        out = draw_caption(base.copy(), Caption("Basket 🧺 ready", size=0.12, fonts=fonts))
    assert ImageChops.difference(base, out).getbbox() is not None  # the text is there
    assert coloured(out) == []  # the basket is a box now...
    assert "🧺 (U+1F9FA) cannot be drawn by any configured font" in caplog.text  # ...and said so
    assert "fonts-noto-color-emoji" in caplog.text


def test_font_coverage_is_read_from_the_cmap() -> None:
    dejavu = coverage(text_font_path())
    assert ord("A") in dejavu
    assert ord("°") in dejavu
    assert ord("ж") in dejavu
    assert ord("🧺") not in dejavu
    noto = emoji_font_path()
    if noto is not None:
        assert ord("🧺") in coverage(noto)
        assert ord("A") not in coverage(noto)


CONFIG = """
[media]
{media}

[[sensors]]
id = "soil"
topic = "garden/soil"
unit = "%"

[[cameras]]
id = "cam"
topic = "garden/cam"

[[rules]]
id = "laundry"
every = "1h"
text = "Soil {{{{ soil }}}}"
images = [{{ camera = "cam", caption = "🧺 {{{{ soil }}}} 漢", alt = "The garden" }}]
charts = [{{ sensor = "soil", title = "🌿 Soil", alt = "Soil moisture" }}]
publish_to = ["archive"]

[[publishers]]
id = "archive"
type = "file"
"""


def test_check_config_and_preview_warn_about_glyphs_no_font_has(tmp_path: Path) -> None:
    dejavu = text_font_path()
    assert dejavu is not None
    config = tmp_path / "gateway.toml"
    # an "emoji font" without emoji: nothing can draw the basket or the leaf
    media = f'caption_font = "{dejavu}"\nemoji_font = "{dejavu}"'
    config.write_text(CONFIG.format(media=media), encoding="utf-8")
    result = cli("check-config", "-c", str(config))
    assert result.returncode == 0, result.stderr
    lines = [line for line in result.stderr.splitlines() if line.startswith("warning: ")]
    assert lines[0].startswith(
        "warning: rules[0].images[0].caption: 🧺 漢 (U+1F9FA, U+6F22) cannot be drawn"
    )
    assert lines[1].startswith("warning: rules[0].charts[0].title: 🌿 (U+1F33F) cannot be drawn")
    sample = tmp_path / "sample.json"
    sample.write_text('{"soil": 41}', encoding="utf-8")
    preview = cli("preview", "laundry", "-c", str(config), "--sample", str(sample))
    assert preview.returncode == 0, preview.stderr
    assert "warning: rules[0].charts[0].title: 🌿 (U+1F33F) cannot be drawn" in preview.stderr


@needs_emoji_font
def test_with_the_emoji_font_only_the_missing_ideograph_is_reported(tmp_path: Path) -> None:
    config = tmp_path / "gateway.toml"
    config.write_text(CONFIG.format(media=""), encoding="utf-8")
    result = cli("check-config", "-c", str(config))
    assert result.returncode == 0, result.stderr
    warnings = [line for line in result.stderr.splitlines() if line.startswith("warning: ")]
    assert len(warnings) == 1
    assert warnings[0].startswith("warning: rules[0].images[0].caption: 漢 (U+6F22)")


def test_a_font_file_that_does_not_exist_is_a_config_error(tmp_path: Path) -> None:
    config = tmp_path / "gateway.toml"
    media = f'emoji_font = "{tmp_path / "missing.ttf"}"'
    config.write_text(CONFIG.format(media=media), encoding="utf-8")
    result = cli("check-config", "-c", str(config))
    assert result.returncode == 78
    assert f"media.emoji_font: no such font file: {tmp_path / 'missing.ttf'}" in result.stderr
