"""Safe decoding, fitting, captions and the render cache, on real image bytes."""

from __future__ import annotations

import io
import random
import struct
import tempfile
import threading
import zlib
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from PIL import ExifTags, Image, ImageChops, ImageDraw, ImageFont, features

from gateway.media.images import (
    Caption,
    ImageError,
    ImageLimits,
    RenderCache,
    draw_caption,
    find_font,
    open_image,
    probe_image,
    render_image,
)

RED = (255, 0, 0)
BLUE = (0, 0, 255)


def photo(size: tuple[int, int], seed: int = 1) -> Image.Image:
    """A small picture with noise and shapes, so it compresses like a photo."""
    rnd = random.Random(seed)
    noise = Image.merge("RGB", [Image.effect_noise(size, 30) for _ in range(3)])
    draw = ImageDraw.Draw(noise)
    for _ in range(10):
        x, y = rnd.randrange(size[0]), rnd.randrange(size[1])
        draw.ellipse((x, y, x + size[0] // 4, y + size[1] // 4), fill=(0, rnd.randrange(256), 90))
    return noise


def jpeg_bytes(im: Image.Image, **save: object) -> bytes:
    buf = io.BytesIO()
    im.save(buf, "JPEG", quality=90, **save)
    return buf.getvalue()


def write(path: Path, data: bytes) -> Path:
    path.write_bytes(data)
    return path


def marked_landscape() -> Image.Image:
    """60x40, red in the stored top-left corner, blue elsewhere."""
    im = Image.new("RGB", (60, 40), BLUE)
    im.paste(RED, (0, 0, 20, 20))
    return im


def exif_with_gps(orientation: int = 1) -> Image.Exif:
    exif = Image.Exif()
    exif[ExifTags.Base.Make] = "PoolCam"
    exif[ExifTags.Base.Orientation] = orientation
    gps = exif.get_ifd(ExifTags.IFD.GPSInfo)
    gps[ExifTags.GPS.GPSLatitudeRef] = "N"
    gps[ExifTags.GPS.GPSLatitude] = (51.0, 32.0, 18.0)
    return exif


def close_to(pixel: object, colour: tuple[int, int, int]) -> bool:
    assert isinstance(pixel, tuple)
    return all(abs(a - b) < 60 for a, b in zip(pixel, colour, strict=False))


def test_exif_orientation_6_comes_out_upright(tmp_path: Path) -> None:
    src = write(tmp_path / "in.jpg", jpeg_bytes(marked_landscape(), exif=exif_with_gps(6)))
    out = render_image(src, tmp_path / "out.jpg", limits=ImageLimits())
    assert (out.width, out.height) == (40, 60)
    with Image.open(out.path) as im:
        assert im.size == (40, 60)
        # orientation 6 means "rotate 90 degrees clockwise to view"
        assert close_to(im.getpixel((35, 5)), RED)
        assert close_to(im.getpixel((5, 5)), BLUE)
    assert probe_image(src.read_bytes()) == ("image/jpeg", 40, 60)


def test_exif_gps_and_comment_are_stripped(tmp_path: Path) -> None:
    data = jpeg_bytes(photo((120, 80)), exif=exif_with_gps(), comment=b"secret place")
    assert b"PoolCam" in data
    src = write(tmp_path / "in.jpg", data)
    out = render_image(src, tmp_path / "out.jpg", limits=ImageLimits(max_bytes=50_000))
    raw = out.path.read_bytes()
    assert b"Exif" not in raw
    assert b"PoolCam" not in raw
    assert b"secret place" not in raw
    with Image.open(out.path) as im:
        assert not im.getexif()
        assert not im.getexif().get_ifd(ExifTags.IFD.GPSInfo)


def png_header_claiming(width: int, height: int) -> bytes:
    def chunk(kind: bytes, body: bytes) -> bytes:
        crc = zlib.crc32(kind + body) & 0xFFFFFFFF
        return struct.pack(">I", len(body)) + kind + body + struct.pack(">I", crc)

    ihdr = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    idat = zlib.compress(b"\0" * 64)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", idat) + chunk(b"IEND", b"")


@pytest.mark.parametrize("size", [(100_000, 100_000), (10_000, 6_000)])
def test_decompression_bomb_header_is_rejected(size: tuple[int, int]) -> None:
    data = png_header_claiming(*size)
    with pytest.raises(ImageError, match="too many pixels"):
        open_image(data)
    with pytest.raises(ImageError, match="too many pixels"):
        probe_image(data)


def test_real_image_over_a_small_limit_is_rejected() -> None:
    data = jpeg_bytes(photo((300, 300)))
    with pytest.raises(ImageError, match=r"too many pixels \(90000 > 10000\)"):
        open_image(data, max_pixels=10_000)


def test_truncated_jpeg_is_rejected() -> None:
    data = jpeg_bytes(photo((320, 240)))
    cut = data[: len(data) // 2]
    with pytest.raises(ImageError, match="truncated"):
        open_image(cut)
    with pytest.raises(ImageError, match="truncated"):
        open_image(cut, target=(40, 30))
    with pytest.raises(ImageError, match="truncated"):
        probe_image(cut)


def test_trailer_after_the_end_marker_is_accepted() -> None:
    data = jpeg_bytes(photo((64, 48))) + b"SEFH trailer from a phone"
    assert probe_image(data) == ("image/jpeg", 64, 48)
    assert open_image(data).size == (64, 48)


@pytest.mark.parametrize("data", [random.Random(3).randbytes(5000), b"", b"GIF89a broken"])
def test_garbage_is_rejected(data: bytes) -> None:
    with pytest.raises(ImageError):
        open_image(data)
    with pytest.raises(ImageError):
        probe_image(data)


def test_formats_outside_the_allow_list_are_rejected() -> None:
    buf = io.BytesIO()
    Image.new("RGB", (10, 10)).save(buf, "PPM")
    with pytest.raises(ImageError, match="not an image"):
        open_image(buf.getvalue())


def test_open_image_with_target_fits_the_box() -> None:
    data = jpeg_bytes(photo((1600, 1200)))
    im = open_image(data, target=(200, 200))
    assert im.size == (200, 150)
    assert im.mode == "RGB"
    assert not im.info


def test_a_dct_scale_just_short_of_the_target_is_decoded_and_enlarged_to_it() -> None:
    # 4056 px for 2048: the 1/2 scale (2028 px) is 99% of the target, so the JPEG is
    # decoded at 1/2 and enlarged to exactly 2048, not decoded whole and shrunk
    data = jpeg_bytes(photo((4056, 3040)))
    im = open_image(data, target=(2048, 2048))
    assert im.size == (2048, 1535)
    with Image.open(io.BytesIO(data)) as half:
        half.draft("RGB", (2028, 1520))
        assert half.size == (2028, 1520)
        expected = half.convert("RGB").resize((2048, 1535), Image.Resampling.BICUBIC)
    assert ImageChops.difference(im, expected).getbbox() is None
    # a scale further off (1/4 = 1014 px for 1100) is not enlarged: decoded at 1/2, shrunk
    assert open_image(data, target=(1100, 1100)).size == (1100, 824)


@settings(max_examples=30, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    width=st.integers(8, 320),
    height=st.integers(8, 320),
    max_side=st.one_of(st.none(), st.integers(16, 400)),
    max_pixels=st.one_of(st.none(), st.integers(400, 100_000)),
    max_bytes=st.integers(2_500, 60_000),
)
def test_output_always_fits_its_budget(
    width: int, height: int, max_side: int | None, max_pixels: int | None, max_bytes: int
) -> None:
    limits = ImageLimits(max_bytes=max_bytes, max_pixels=max_pixels, max_side=max_side)
    with tempfile.TemporaryDirectory() as tmp:
        src = write(Path(tmp) / "in.jpg", jpeg_bytes(photo((width, height))))
        out = render_image(src, Path(tmp) / "out.jpg", limits=limits, caption=Caption("21.5 °C"))
        assert out.bytes == out.path.stat().st_size <= max_bytes
        assert out.width * out.height <= (max_pixels or width * height)
        assert max(out.width, out.height) <= (max_side or max(width, height))
        # aspect kept to whole pixels: each side is less than one pixel off
        assert abs(out.width * height - out.height * width) < width + height
        with Image.open(out.path) as im:
            assert im.size == (out.width, out.height)
            assert im.format == "JPEG"


def test_impossible_budget_is_an_error(tmp_path: Path) -> None:
    src = write(tmp_path / "in.jpg", jpeg_bytes(photo((64, 64))))
    with pytest.raises(ImageError, match="cannot fit"):
        render_image(src, tmp_path / "out.jpg", limits=ImageLimits(max_bytes=50))


def test_png_with_alpha_is_flattened_for_jpeg_only_publishers(tmp_path: Path) -> None:
    src = tmp_path / "chart.png"
    Image.new("RGBA", (50, 40), (0, 0, 0, 0)).save(src)
    out = render_image(src, tmp_path / "a.png", limits=ImageLimits(formats=("JPEG",)))
    assert (out.path.suffix, out.mime) == (".jpg", "image/jpeg")
    kept = render_image(src, tmp_path / "b.png", limits=ImageLimits(formats=("JPEG", "PNG")))
    assert (kept.path, kept.mime) == (tmp_path / "b.png", "image/png")


def test_unknown_output_format_is_refused() -> None:
    with pytest.raises(ValueError, match="formats"):
        ImageLimits(formats=("GIF",))
    assert ImageLimits(formats=("GIF", "PNG")).formats == ("GIF", "PNG")


CAPTIONS = [
    "الماء ٢١٫٥ درجة",  # Arabic, right to left
    "Температура воды 21,5 °C",
    "Zażółć gęślą jaźń",
    "Pool 🌡️ 21.5 °C 🏊",
    "line one\nsecond line",
    "שלום 21:30 hello",  # Hebrew mixed with Latin
]


@pytest.mark.parametrize("text", CAPTIONS)
@pytest.mark.parametrize("position", ["top-left", "bottom-right", "top", "bottom"])
def test_captions_in_any_script_render(text: str, position: str) -> None:
    base = photo((320, 240))
    out = draw_caption(base.copy(), Caption(text, position=position))  # type: ignore[arg-type]
    changed = ImageChops.difference(base, out).getbbox()
    assert changed is not None
    left, top, right, bottom = changed
    assert left > 0
    assert right < 320
    if position.startswith("top"):
        assert bottom < 120
    else:
        assert top > 120


def test_long_caption_is_shrunk_to_the_width() -> None:
    base = Image.new("RGB", (300, 200), (30, 30, 30))
    out = draw_caption(base.copy(), Caption("Water temperature 21.5 °C at 14:30", size=0.2))
    changed = ImageChops.difference(base, out).getbbox()
    assert changed is not None
    assert changed[0] > 0
    assert changed[2] < 300


@pytest.mark.skipif(not features.check("raqm"), reason="libraqm not installed")
def test_arabic_is_shaped_by_raqm() -> None:
    font = find_font(40)
    assert isinstance(font, ImageFont.FreeTypeFont)
    assert font.layout_engine == ImageFont.Layout.RAQM
    basic = ImageFont.truetype(font.path, 40, layout_engine=ImageFont.Layout.BASIC)
    text = "مرحبا بالعالم"

    def rendered(f: ImageFont.FreeTypeFont) -> bytes:
        im = Image.new("L", (400, 60))
        ImageDraw.Draw(im).text((5, 5), text, 255, f)
        return im.tobytes()

    # joined (shaped) letters differ from the isolated forms the basic layout draws
    assert rendered(font) != rendered(basic)


def test_find_font_prefers_dejavu() -> None:
    font = find_font(20)
    if isinstance(font, ImageFont.FreeTypeFont):
        assert font.size == 20
        assert "DejaVu" in (font.getname()[0] or "")


def test_render_writes_atomically(tmp_path: Path) -> None:
    src = write(tmp_path / "in.jpg", jpeg_bytes(photo((100, 80))))
    out_dir = tmp_path / "out"
    render_image(src, out_dir / "x.jpg", limits=ImageLimits(max_bytes=20_000))
    assert [p.name for p in out_dir.iterdir()] == ["x.jpg"]


def test_render_cache_renders_once_per_key(tmp_path: Path) -> None:
    src = write(tmp_path / "frame.jpg", jpeg_bytes(photo((200, 150))))
    out_dir = tmp_path / "media"
    bluesky = ImageLimits(max_bytes=20_000, max_side=100)
    cache = RenderCache()
    results: list[object] = []
    threads = [
        threading.Thread(target=lambda: results.append(cache.render(src, bluesky, None, out_dir)))
        for _ in range(3)
    ]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert len(set(results)) == 1
    assert len(list(out_dir.iterdir())) == 1
    first = cache.render(src, bluesky, None, out_dir)
    stamp = first.path.stat().st_mtime_ns

    other = cache.render(src, ImageLimits(max_bytes=30_000), None, out_dir)
    captioned = cache.render(src, bluesky, Caption("hi"), out_dir)
    assert len({first.path, other.path, captioned.path}) == 3

    restarted = RenderCache().render(src, bluesky, None, out_dir)
    assert restarted == first
    assert first.path.stat().st_mtime_ns == stamp

    write(src, jpeg_bytes(photo((200, 150), seed=2)) + b"\0")  # rewritten in place
    assert cache.render(src, bluesky, None, out_dir).path != first.path


def test_render_cache_renders_again_when_the_file_was_pruned(tmp_path: Path) -> None:
    src = write(tmp_path / "frame.jpg", jpeg_bytes(photo((80, 60))))
    cache = RenderCache()
    first = cache.render(src, ImageLimits(), None, tmp_path / "m")
    first.path.unlink()
    again = cache.render(src, ImageLimits(), None, tmp_path / "m")
    assert again.path.exists()
