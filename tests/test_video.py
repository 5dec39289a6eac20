"""H.264 MP4 timelapses: real encodes decoded back with PyAV, budgets, posters, rules."""

from __future__ import annotations

import gc
import itertools
import weakref
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import av
import pytest
from PIL import Image, ImageDraw

from gateway.media.captions import Caption
from gateway.media.fitting import MediaFitter
from gateway.media.video import (
    VideoError,
    encode_frames,
    fit_video,
    moov_before_mdat,
    probe,
    write_poster,
)
from gateway.model import Capabilities, MediaItem, Post, VideoLimits
from gateway.outbox.store import Outbox
from tests.gwutil import archive_posts
from tests.mediautil import deliver_all, make_gateway, scene_jpeg  # noqa: F401


def make_frames(folder: Path, count: int, size: tuple[int, int] = (322, 242)) -> list[Path]:
    """A ball crossing a gradient, odd sizes on purpose (the video must be even)."""
    paths = []
    for i in range(count):
        im = Image.linear_gradient("L").resize(size).convert("RGB")
        x = i * size[0] // count
        ImageDraw.Draw(im).ellipse((x, 80, x + 40, 120), fill=(255, 220, 0))
        path = folder / f"frame-{i:03}.jpg"
        im.save(path, quality=90)
        paths.append(path)
    return paths


def decoded(path: Path) -> dict[str, object]:
    """What PyAV reads back from an MP4."""
    with av.open(str(path)) as container:
        video = container.streams.video[0]
        frames = list(container.decode(video))
        return {
            "codec": video.codec_context.name,
            "pix_fmt": video.codec_context.pix_fmt,
            "size": (video.codec_context.width, video.codec_context.height),
            "frames": len(frames),
            "rate": video.average_rate,
            "duration": float(container.duration or 0) / 1_000_000,
            "audio": len(container.streams.audio),
            "pts_steps": {b.pts - a.pts for a, b in itertools.pairwise(frames)},
        }


def test_timelapse_mp4_decodes_back(tmp_path: Path) -> None:
    paths = make_frames(tmp_path, 24)
    out = encode_frames(paths, tmp_path / "lapse.mp4", fps=8, max_side=1280)
    got = decoded(out.path)
    assert got["codec"] == "h264"
    assert got["pix_fmt"] == "yuv420p"
    assert got["size"] == (out.width, out.height) == (322, 242)
    assert got["frames"] == out.frames == 24
    assert got["rate"] == 8
    assert got["duration"] == pytest.approx(3.0, abs=0.01) == out.duration
    assert got["audio"] == 0
    assert len(got["pts_steps"]) == 1  # type: ignore[arg-type]  # constant frame rate
    assert moov_before_mdat(out.path)
    assert out.bytes == out.path.stat().st_size
    assert not list(tmp_path.glob(".*.part"))  # the temporary file was renamed into place


def test_odd_sizes_become_even_and_max_side_applies(tmp_path: Path) -> None:
    paths = make_frames(tmp_path, 3, size=(641, 361))
    out = encode_frames(paths, tmp_path / "a.mp4", fps=2, max_side=321)
    assert (out.width % 2, out.height % 2) == (0, 0)
    assert max(out.width, out.height) <= 321
    assert decoded(out.path)["size"] == (out.width, out.height)


def test_caption_is_drawn_on_every_frame(tmp_path: Path) -> None:
    paths = make_frames(tmp_path, 4)
    plain = encode_frames(paths, tmp_path / "plain.mp4", fps=4)
    text = encode_frames(paths, tmp_path / "text.mp4", fps=4, caption=Caption("WWWWWW", size=0.2))
    with av.open(str(plain.path)) as a, av.open(str(text.path)) as b:
        pairs = zip(a.decode(video=0), b.decode(video=0), strict=True)
        for fa, fb in pairs:
            ia, ib = fa.to_image(), fb.to_image()
            box = (0, ia.height * 3 // 4, ia.width // 2, ia.height)  # bottom-left
            diff = sum(
                abs(x - y)
                for x, y in zip(ia.crop(box).tobytes(), ib.crop(box).tobytes(), strict=False)
            )
            assert diff > 100_000


def test_frames_are_streamed_one_at_a_time(tmp_path: Path) -> None:
    live = 0
    most = 0

    def freed() -> None:
        nonlocal live
        live -= 1

    def frames() -> Iterator[Image.Image]:
        nonlocal live, most
        for i in range(30):
            gc.collect()
            im = Image.new("RGB", (320, 240), (i * 8, 0, 0))
            weakref.finalize(im, freed)
            live += 1
            most = max(most, live)
            yield im
            del im

    out = encode_frames(frames(), tmp_path / "s.mp4", fps=10)
    assert out.frames == 30
    assert most <= 2  # the frame being encoded, and at most the one before it


def test_unreadable_frames_are_skipped_and_too_few_refused(tmp_path: Path) -> None:
    paths = make_frames(tmp_path, 3)
    bad = tmp_path / "bad.jpg"
    bad.write_bytes(b"\xff\xd8 not a jpeg")
    out = encode_frames([paths[0], bad, *paths[1:]], tmp_path / "a.mp4", fps=2)
    assert out.frames == 3
    with pytest.raises(VideoError, match="2 readable frames, got 1"):
        encode_frames([bad, paths[0]], tmp_path / "b.mp4")
    assert not (tmp_path / "b.mp4").exists()
    assert not list(tmp_path.glob(".*.part"))


def test_poster_is_the_first_frame(tmp_path: Path) -> None:
    paths = make_frames(tmp_path, 5)
    out = encode_frames(paths, tmp_path / "a.mp4", fps=5)
    poster = write_poster(out.path, tmp_path / "a.poster.jpg")
    with Image.open(poster) as im:
        assert im.format == "JPEG"
        assert im.size == (out.width, out.height)
        assert im.getpixel((40, 100))[0] > 200  # the ball is at the left in frame 0


def test_fit_video_meets_every_limit(tmp_path: Path) -> None:
    paths = make_frames(tmp_path, 48, size=(640, 360))
    master = encode_frames(paths, tmp_path / "m.mp4", fps=8, crf=18)
    budget = VideoLimits(max_bytes=master.bytes // 2, max_duration=4, max_side=320, max_fps=4)
    out = fit_video(master.path, tmp_path / "f.mp4", budget)
    got = decoded(out.path)
    assert out.bytes <= master.bytes // 2
    assert max(got["size"]) <= 320  # type: ignore[call-overload]
    assert got["rate"] == 4
    assert got["frames"] == 16
    assert got["duration"] == pytest.approx(4.0, abs=0.01)
    assert got["pix_fmt"] == "yuv420p"
    assert moov_before_mdat(out.path)
    # a video within the budget is not re-encoded
    assert fit_video(master.path, tmp_path / "g.mp4", VideoLimits()) == probe(master.path)
    assert not (tmp_path / "g.mp4").exists()


def test_fitter_gives_video_or_the_poster(tmp_path: Path) -> None:
    paths = make_frames(tmp_path, 16, size=(640, 360))
    master = encode_frames(paths, tmp_path / "posts" / "m.mp4", fps=8)
    poster = write_poster(master.path, tmp_path / "posts" / "m.poster.jpg")
    item = MediaItem(
        master.path,
        "video/mp4",
        master.width,
        master.height,
        master.bytes,
        "the pool",
        poster=poster,
        duration=master.duration,
        fps=master.fps,
    )
    fitter = MediaFitter()
    (still,) = fitter.fit((item,), Capabilities())
    assert (still.path, still.mime, still.alt) == (poster, "image/jpeg", "the pool")
    assert fitter.fit((item,), Capabilities(video=VideoLimits())) == (item,)
    small = VideoLimits(max_side=320)
    (copy,) = fitter.fit((item,), Capabilities(video=small))
    assert copy.path != master.path
    assert (copy.width, copy.height) == (320, 180)
    assert copy.poster == poster
    assert copy.duration == pytest.approx(2.0)
    assert fitter.fit((item,), Capabilities(video=small)) == (copy,)  # made once


def test_video_item_round_trips_through_the_outbox(tmp_path: Path) -> None:
    item = MediaItem(
        tmp_path / "a.mp4",
        "video/mp4",
        640,
        360,
        1234,
        "alt",
        poster=tmp_path / "a.poster.jpg",
        duration=6.0,
        fps=8.0,
    )
    outbox = Outbox(tmp_path / "gateway.db")
    try:
        post = Post(id="01TEST", rule="r", created_at=datetime.now(UTC), text="t", media=(item,))
        outbox.add(post, {"archive": "t"})
        delivery = outbox.next_delivery("archive")
        assert delivery is not None
        assert delivery.post.media == (item,)
        assert outbox.media_in_use() == {item.path.resolve(), (tmp_path / "a.poster.jpg").resolve()}
    finally:
        outbox.close()


MP4_RULE = """
[[cameras]]
id = "underwater"
topic = "pool/cam"
max_age = "2h"

[[rules]]
id = "daily"
cron = "0 20 * * *"
text = "Today at the pool"
publish_to = ["archive", "console"]

[rules.timelapse]
camera = "underwater"
window = "24h"
frames = 24
format = "mp4"
fps = 8
caption = "{{ now | date('%d %b') }}"
alt = "The pool over the day"

[[publishers]]
id = "archive"
type = "file"

[[publishers]]
id = "console"
type = "console"
"""


def test_rule_posts_an_mp4_timelapse_to_the_archive(make_gateway) -> None:  # noqa: F811
    gateway = make_gateway(MP4_RULE)
    now = datetime.now(UTC)
    for k in range(48, 0, -1):  # a frame every half hour
        at = now - timedelta(minutes=30 * k)
        gateway.state.set_frame(gateway.frames.store("underwater", scene_jpeg(at, (320, 240)), at))
    post = gateway.fire("daily")
    assert post is not None
    (item,) = post.media
    assert item.mime == "video/mp4"
    assert item.poster is not None
    deliver_all(gateway)
    (record,) = archive_posts(gateway.state_dir)
    (clip,) = record["media"]
    folder = gateway.state_dir / "posts"
    assert clip["mime"] == "video/mp4"
    assert clip["alt"] == "The pool over the day"
    assert clip["duration"] == pytest.approx(3.0)
    got = decoded(folder / clip["file"])
    assert got["frames"] == 24
    assert got["codec"] == "h264"
    assert got["size"] == (320, 240)
    assert moov_before_mdat(folder / clip["file"])
    with Image.open(folder / clip["poster"]) as im:
        assert im.format == "JPEG"
        assert im.size == (320, 240)


def test_jpeg_frames_do_not_all_become_keyframes(tmp_path: Path) -> None:
    # FFmpeg decodes a JPEG as an I picture; passed on as is, libx264 made every frame
    # a keyframe (a 1080p timelapse 40x its size)
    paths = make_frames(tmp_path, 24, size=(640, 360))
    out = encode_frames(paths, tmp_path / "a.mp4", fps=8)
    with av.open(str(out.path)) as container:
        keys = [p.is_keyframe for p in container.demux(video=0) if p.size]
    assert len(keys) == 24
    assert sum(keys) == 1


def test_exif_orientation_is_honoured(tmp_path: Path) -> None:
    # the FFmpeg decoder ignores EXIF: such a JPEG goes through Pillow, turned upright
    im = Image.new("RGB", (320, 160), (0, 0, 255))
    ImageDraw.Draw(im).rectangle((0, 0, 160, 160), fill=(255, 0, 0))
    exif = Image.Exif()
    exif[0x0112] = 6  # rotate 90° clockwise to display
    paths = []
    for n in range(2):
        path = tmp_path / f"{n}.jpg"
        im.save(path, exif=exif.tobytes())
        paths.append(path)
    out = encode_frames(paths, tmp_path / "a.mp4", fps=2)
    assert (out.width, out.height) == (160, 320)
    poster = write_poster(out.path, tmp_path / "p.jpg")
    with Image.open(poster) as shown:
        top = shown.getpixel((80, 40))
        assert top[0] > 200  # red (the left half) is on top once turned upright
        assert top[2] < 80


def test_constant_rate_keeps_real_timing() -> None:
    from gateway.media.video import constant_rate

    start = datetime(2026, 7, 1, 12, tzinfo=UTC)
    frames = [
        (start + timedelta(seconds=0.2), Path("a")),
        (start + timedelta(seconds=0.5), Path("b")),
        (start + timedelta(seconds=2.0), Path("c")),
    ]
    shown = [p.name for p in constant_rate(frames, start, 3, 2)]
    # ticks at 0, 0.5, 1, 1.5, 2, 2.5 s
    assert shown == ["a", "b", "b", "b", "c", "c"]
    assert list(constant_rate([], start, 3, 2)) == []


CLIP_RULE = """
[[cameras]]
id = "bridge"
topic = "river/bridge"
on_missing = "skip_post"

[[rules]]
id = "opening"
every = "1h"
text = "The bridge is opening"
clip = { camera = "bridge", seconds = 4, fps = 5, caption = "bridge", alt = "The bridge opening" }
publish_to = ["archive"]

[[publishers]]
id = "archive"
type = "file"
"""


def test_clip_from_the_frames_that_arrived_in_the_window(make_gateway) -> None:  # noqa: F811
    gateway = make_gateway(CLIP_RULE)
    now = datetime.now(UTC)
    old = now - timedelta(seconds=30)  # before the window: not in the clip
    gateway.frames.store("bridge", scene_jpeg(old, (320, 240)), old)
    for k in range(8):  # two frames a second over the last 4 s
        at = now - timedelta(seconds=4) + timedelta(seconds=0.5 * k)
        gateway.frames.store("bridge", scene_jpeg(at, (320, 240)), at)
    post = gateway.fire("opening")
    assert post is not None
    (item,) = post.media
    assert item.mime == "video/mp4"
    assert item.alt == "The bridge opening"
    got = decoded(item.path)
    assert got["frames"] == 20  # 4 s at 5 fps
    assert got["rate"] == 5
    assert got["duration"] == pytest.approx(4.0, abs=0.01)
    assert moov_before_mdat(item.path)
    deliver_all(gateway)
    (record,) = archive_posts(gateway.state_dir)
    assert record["media"][0]["mime"] == "video/mp4"


def test_clip_without_frames_follows_on_missing(make_gateway) -> None:  # noqa: F811
    gateway = make_gateway(CLIP_RULE)
    assert gateway.fire("opening") is None  # skip_post: no frame arrived in the window
    keeps = make_gateway(CLIP_RULE.replace('on_missing = "skip_post"', ""))
    post = keeps.fire("opening")
    assert post is not None
    assert post.media == ()


def test_too_short_a_video_plays_slower_to_reach_min_duration(tmp_path: Path) -> None:
    # two frames at 8 fps last 0.25 s; X takes 0.5 s at least
    paths = make_frames(tmp_path, 2)
    short = encode_frames(paths, tmp_path / "short.mp4", fps=8)
    assert short.duration == pytest.approx(0.25)
    out = fit_video(short.path, tmp_path / "long.mp4", VideoLimits(min_duration=0.5))
    got = decoded(out.path)
    assert got["frames"] == 2
    assert got["rate"] == 4
    assert out.duration == pytest.approx(0.5)


def delivery_texts(gateway) -> dict[str, str]:  # type: ignore[no-untyped-def]
    import sqlite3

    with sqlite3.connect(gateway.state_dir / "gateway.db") as conn:
        return dict(conn.execute("SELECT publisher, text FROM deliveries").fetchall())


def a_day_of_frames(gateway) -> None:  # type: ignore[no-untyped-def]
    now = datetime.now(UTC)
    for k in range(24, 0, -1):
        at = now - timedelta(minutes=30 * k)
        gateway.state.set_frame(gateway.frames.store("underwater", scene_jpeg(at, (320, 240)), at))


def test_a_publisher_without_video_gets_the_poster_and_the_note(make_gateway) -> None:  # noqa: F811
    rule = MP4_RULE.replace(
        'text = "Today at the pool"',
        'text = "Today at the pool"\nvideo_note = "The timelapse: https://pool.example/day"',
    )
    gateway = make_gateway(rule)
    a_day_of_frames(gateway)
    post = gateway.fire("daily")
    assert post is not None
    assert delivery_texts(gateway) == {
        "archive": "Today at the pool",
        "console": "Today at the pool\n\nThe timelapse: https://pool.example/day",
    }
    deliver_all(gateway)
    (record,) = archive_posts(gateway.state_dir)
    assert record["text"] == "Today at the pool"
    assert record["media"][0]["mime"] == "video/mp4"


def test_video_fallback_skip_leaves_out_publishers_without_video(make_gateway) -> None:  # noqa: F811
    rule = MP4_RULE.replace(
        'text = "Today at the pool"', 'text = "Today at the pool"\nvideo_fallback = "skip"'
    )
    gateway = make_gateway(rule)
    a_day_of_frames(gateway)
    assert gateway.fire("daily") is not None
    assert delivery_texts(gateway) == {"archive": "Today at the pool"}
    # only publishers without video: no post at all
    only_console = rule.replace('publish_to = ["archive", "console"]', 'publish_to = ["console"]')
    lonely = make_gateway(only_console)
    a_day_of_frames(lonely)
    assert lonely.fire("daily") is None
    assert lonely.runner.stats["daily"].last_skip == "no publisher takes the video (video_fallback)"


def test_without_a_note_the_poster_goes_with_the_text_as_is(make_gateway) -> None:  # noqa: F811
    gateway = make_gateway(MP4_RULE)
    a_day_of_frames(gateway)
    assert gateway.fire("daily") is not None
    assert delivery_texts(gateway) == {
        "archive": "Today at the pool",
        "console": "Today at the pool",
    }
