"""A post's images per publisher, charts and timelapses in rules, and the deliveries' media."""

from __future__ import annotations

import io
import json
import sqlite3
from datetime import UTC, datetime, timedelta
from pathlib import Path

from PIL import ExifTags, Image

from gateway.media.attachments import chart_gap
from gateway.media.fitting import MediaFitter, fit_alt, limits_for
from gateway.model import MediaItem, Post, Reading
from gateway.outbox.store import Outbox
from gateway.publishers.base import Capabilities
from gateway.support.database import MIGRATIONS
from tests.gwutil import archive_posts
from tests.mediautil import deliver_all, image_size, make_gateway, noisy_jpeg, scene_jpeg  # noqa: F401


def photo_post(*paths: str, archive: bool = False) -> str:
    """A camera, a rule posting its captioned photo hourly to file publishers writing to
    ``paths`` (and to ``archive``, a file publisher with its default path, if asked)."""
    ids = [*paths, *(["archive"] if archive else [])]
    text = f"""
[[cameras]]
id = "cam"
topic = "pool/cam"

[[rules]]
id = "photo"
every = "1h"
text = "The pool"
images = [{{ camera = "cam", caption = "24.5 °C", alt = "The pool" }}]
publish_to = {json.dumps(ids)}
"""
    for path in paths:
        text += f'\n[[publishers]]\nid = "{path}"\ntype = "file"\npath = "{path}"\n'
    if archive:
        text += '\n[[publishers]]\nid = "archive"\ntype = "file"\n'
    return text


FOUR_PUBLISHERS = photo_post("small", "large", "large_too", archive=True)


def pin_capabilities(gateway, caps: dict[str, Capabilities]) -> None:
    for pid, value in caps.items():
        gateway.publishers[pid].capabilities = value
    gateway.runner.capabilities = {p: pub.capabilities for p, pub in gateway.publishers.items()}


def test_each_publisher_gets_images_within_its_budget_and_equal_limits_share_a_render(
    make_gateway,  # noqa: F811
) -> None:
    gateway = make_gateway(FOUR_PUBLISHERS)
    small = Capabilities(max_image_bytes=60_000, max_image_side=800)
    large = Capabilities(max_image_bytes=400_000, max_image_pixels=1_000_000)
    pin_capabilities(gateway, {"small": small, "large": large, "large_too": large})
    now = datetime.now(UTC)
    gateway.state.set_frame(gateway.frames.store("cam", noisy_jpeg((1600, 1200)), now))

    post = gateway.fire("photo")
    assert post is not None
    (master,) = post.media
    assert (master.width, master.height) == (1600, 1200)  # captioned at full resolution
    cache = gateway.runner.composer.fitter.cache
    assert cache.renders == 2  # small, and large once for both publishers with its limits
    assert cache.hits == 1
    deliver_all(gateway)

    def archived(folder: str) -> tuple[dict[str, object], Path]:
        (record,) = archive_posts(gateway.state_dir, folder)
        (media,) = record["media"]
        return media, gateway.state_dir / folder / str(media["file"])

    small_media, small_file = archived("small")
    assert small_file.stat().st_size <= 60_000
    assert max(image_size(small_file)) <= 800
    assert small_media["bytes"] == small_file.stat().st_size
    large_media, large_file = archived("large")
    assert 60_000 < large_file.stat().st_size <= 400_000
    width, height = image_size(large_file)
    assert width * height <= 1_000_000
    assert abs(width / height - 4 / 3) < 0.01  # aspect kept
    too_media, too_file = archived("large_too")
    assert too_file.read_bytes() == large_file.read_bytes()
    _archive_media, archive_file = archived("posts")  # no limits: the master itself
    assert archive_file.read_bytes() == master.path.read_bytes()
    for media in (small_media, large_media, too_media):
        assert media["alt"] == "The pool"

    rows = dict(
        sqlite3.connect(gateway.state_dir / "gateway.db").execute(
            "SELECT publisher, media FROM deliveries"
        )
    )
    assert set(rows) == {"small", "large", "large_too", "archive"}
    assert all(value is not None for value in rows.values())


def test_fitter_limits_image_count_and_alt_text(tmp_path: Path) -> None:
    items = []
    for n in range(3):
        path = tmp_path / f"{n}.jpg"
        path.write_bytes(scene_jpeg(size=(320, 240)))
        items.append(MediaItem(path, "image/jpeg", 320, 240, path.stat().st_size, "x" * 50))
    caps = Capabilities(max_images=2, max_alt_text=10, max_image_side=160)
    fitted = MediaFitter().fit(tuple(items), caps)
    assert len(fitted) == 2
    assert [m.alt for m in fitted] == ["xxxxxxxxx…"] * 2
    assert all(max(image_size(m.path)) <= 160 for m in fitted)
    assert fit_alt("short", 10) == "short"
    assert limits_for(caps).max_side == 160


def test_an_animation_too_big_for_a_publisher_is_left_out(tmp_path: Path) -> None:
    frames = [Image.new("RGB", (64, 64), (i * 40, 0, 0)) for i in range(4)]
    path = tmp_path / "clip.webp"
    frames[0].save(path, "WEBP", save_all=True, append_images=frames[1:], duration=100)
    item = MediaItem(path, "image/webp", 64, 64, path.stat().st_size, "clip")
    fitter = MediaFitter()
    assert fitter.fit((item,), Capabilities(max_image_bytes=10)) == ()
    assert fitter.fit((item,), Capabilities(max_image_bytes=10_000_000)) == (item,)


CHARTS = """
[[sensors]]
id = "water_temp"
topic = "pool/temp"
unit = "°C"
expire_after = "30m"

[[cameras]]
id = "underwater"
topic = "pool/cam"
max_age = "2h"

[[rules]]
id = "daily"
cron = "0 20 * * *"
text = "Today at the pool"
publish_to = ["archive"]

[[rules.charts]]
sensor = "water_temp"
window = "24h"
alt = "Water temperature over 24 hours, now {{ water_temp }}"

[rules.timelapse]
camera = "underwater"
window = "24h"
frames = 24
format = "webp"
alt = "The pool over the day"

[[publishers]]
id = "archive"
type = "file"
"""


def test_chart_and_timelapse_are_archived_with_alt_text(make_gateway) -> None:  # noqa: F811
    gateway = make_gateway(CHARTS)
    now = datetime.now(UTC)
    for minute in range(0, 24 * 60, 10):
        if 600 <= minute < 720:
            continue  # two hours offline: a gap in the chart
        at = now - timedelta(minutes=24 * 60 - minute)
        gateway.state.record("water_temp", 24 + minute / 600, "°C", at)
    gateway.state.update(Reading("water_temp", 26.5, "°C", now, "pool/temp"))
    for k in range(48, 0, -1):  # a frame every half hour
        at = now - timedelta(minutes=30 * k)
        gateway.state.set_frame(gateway.frames.store("underwater", scene_jpeg(at, (320, 240)), at))

    post = gateway.fire("daily")
    assert post is not None
    deliver_all(gateway)
    (record,) = archive_posts(gateway.state_dir)
    chart, clip = record["media"]
    assert chart["alt"] == "Water temperature over 24 hours, now 26.5 °C"
    assert chart["mime"] == "image/png"
    with Image.open(gateway.state_dir / "posts" / chart["file"]) as im:
        assert im.size == (1200, 675)
    assert clip["alt"] == "The pool over the day"
    assert clip["mime"] == "image/webp"
    with Image.open(gateway.state_dir / "posts" / clip["file"]) as im:
        assert im.is_animated
        assert im.n_frames == 24
        assert clip["bytes"] <= 5_000_000


def test_timelapse_without_frames_follows_on_missing(make_gateway) -> None:  # noqa: F811
    gateway = make_gateway(CHARTS)
    post = gateway.fire("daily")
    assert post is not None
    assert [m.mime for m in post.media] == ["image/png"]  # the chart, no timelapse
    skipping = make_gateway(
        CHARTS.replace('max_age = "2h"', 'max_age = "2h"\non_missing = "skip_post"')
    )
    assert skipping.fire("daily") is None


def test_chart_gap() -> None:
    start = datetime(2026, 6, 1, tzinfo=UTC)
    points = [(start + timedelta(minutes=5 * i), 1.0) for i in range(10)]
    assert chart_gap(points, None) == timedelta(minutes=15)
    assert chart_gap(points, timedelta(hours=1)) == timedelta(hours=1)
    assert chart_gap([], None) == timedelta(minutes=3)


def test_deliveries_media_migration_keeps_old_rows(tmp_path: Path) -> None:
    db = tmp_path / "gateway.db"
    conn = sqlite3.connect(db)
    conn.executescript(MIGRATIONS[0] + "; PRAGMA user_version = 1;")
    conn.execute(
        "INSERT INTO posts VALUES ('01OLD', 'r', '2026-01-01T00:00:00+00:00', 'hi', NULL,"
        ' \'[{"path": "/x.jpg", "mime": "image/jpeg", "width": 1, "height": 1,'
        ' "bytes": 1, "alt": "a"}]\')'
    )
    conn.execute(
        "INSERT INTO deliveries (post_id, publisher, text, status, next_attempt_at, updated_at)"
        " VALUES ('01OLD', 'p', 'hi', 'pending', 0, 0)"
    )
    conn.commit()
    conn.close()
    outbox = Outbox(db)
    try:
        old = outbox.next_delivery("p")
        assert old is not None
        assert old.media is None
        assert [m.path for m in old.media_to_send] == [Path("/x.jpg")]  # NULL: the post's media
        fitted = MediaItem(Path("/small.jpg"), "image/jpeg", 2, 2, 9, "a")
        post = Post("01NEW", "r", datetime.now(UTC), "hey", (fitted,))
        outbox.add(post, {"q": "hey", "r": "hey"}, media={"q": ()})
        assert outbox.next_delivery("q").media_to_send == ()  # type: ignore[union-attr]
        assert outbox.next_delivery("r").media_to_send == (fitted,)  # type: ignore[union-attr]
    finally:
        outbox.close()


TWO_BUDGETS = photo_post("big", "big_too", "small")


def _sideways_photo() -> bytes:
    """A 12 MP camera JPEG stored sideways (EXIF orientation 6), with GPS in its EXIF:
    red in the stored top-left corner, a grey field elsewhere."""
    im = Image.new("RGB", (4056, 3040), (90, 90, 90))
    im.paste((255, 0, 0), (0, 0, 600, 600))
    exif = Image.Exif()
    exif[ExifTags.Base.Orientation] = 6
    exif.get_ifd(ExifTags.IFD.GPSInfo)[ExifTags.GPS.GPSLatitudeRef] = "N"
    buf = io.BytesIO()
    im.save(buf, "JPEG", quality=92, exif=exif)
    return buf.getvalue()


def test_a_photo_is_decoded_once_at_the_largest_target_size_and_captioned_there(
    make_gateway,  # noqa: F811
) -> None:
    gateway = make_gateway(TWO_BUDGETS)
    big = Capabilities(max_image_bytes=1_000_000, max_image_side=2048)
    small = Capabilities(max_image_bytes=150_000, max_image_side=1024)
    pin_capabilities(gateway, {"big": big, "big_too": big, "small": small})
    gateway.state.set_frame(gateway.frames.store("cam", _sideways_photo(), datetime.now(UTC)))

    post = gateway.fire("photo")
    assert post is not None
    (master,) = post.media
    # not a 3040x4056 master: 2048 px, from the DCT scale 1/2 (1520x2028) enlarged 1%
    assert (master.width, master.height) == (1535, 2048)
    assert master.bytes <= 1_000_000
    cache = gateway.runner.composer.fitter.cache
    assert cache.renders == 1  # only the small budget is encoded again
    deliver_all(gateway)

    def archived(folder: str) -> Path:
        (record,) = archive_posts(gateway.state_dir, folder)
        (media,) = record["media"]
        return gateway.state_dir / folder / str(media["file"])

    assert archived("big").read_bytes() == master.path.read_bytes()
    assert archived("big_too").read_bytes() == master.path.read_bytes()
    small_file = archived("small")
    assert small_file.stat().st_size <= 150_000
    for path in (master.path, small_file):
        with Image.open(path) as im:
            assert not im.getexif()  # orientation applied, GPS gone
            rgb = im.convert("RGB")
            width, height = rgb.size
            assert height > width  # upright portrait
            # orientation 6: the stored top-left corner is now the top-right one
            assert close_to(rgb.getpixel((width - 5, 5)), (255, 0, 0))
            assert close_to(rgb.getpixel((5, 5)), (90, 90, 90))
            # the caption (white text, dark outline) sits in the bottom band
            band = rgb.crop((0, int(height * 0.85), width, height)).convert("L")
            low, high = band.getextrema()
            assert high > 200
            assert low < 40


def close_to(pixel: object, colour: tuple[int, int, int]) -> bool:
    assert isinstance(pixel, tuple)
    return all(abs(a - b) < 60 for a, b in zip(pixel, colour, strict=False))
