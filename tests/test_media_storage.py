"""Media storage: frame thinning for timelapses, retention under load, the archive left alone."""

from __future__ import annotations

import os
from datetime import UTC, datetime, timedelta
from pathlib import Path

from gateway.media.frames import FrameStore, frame_stem, frame_time
from gateway.media.retention import GRACE_SECONDS, RetentionJob
from gateway.model import MediaItem, Post, new_post_id
from gateway.state.store import StateStore
from tests.gwutil import wait_until
from tests.mediautil import make_gateway, scene_jpeg  # noqa: F401

T0 = datetime(2026, 6, 1, 12, 0, tzinfo=UTC)


def folder_bytes(folder: Path) -> int:
    return sum(p.stat().st_size for p in folder.rglob("*") if p.is_file())


def test_frames_are_thinned_to_one_per_interval_beyond_the_recent_ones(tmp_path: Path) -> None:
    store = FrameStore(tmp_path, StateStore(), keep_recent=10, keep_every=timedelta(minutes=5))
    jpeg = scene_jpeg(T0, (64, 48))
    for second in range(0, 30 * 60, 5):  # a frame every 5 seconds for half an hour
        store.save("cam", jpeg, T0 + timedelta(seconds=second), "image/jpeg", 64, 48)
    kept = sorted(frame_time(p) for p in (tmp_path / "cam").iterdir())
    recent, older = kept[-10:], kept[:-10]
    assert recent[-1] == T0 + timedelta(seconds=30 * 60 - 5)
    assert [t.minute for t in older] == [0, 5, 10, 15, 20, 25]  # the first of each 5 minutes
    window = store.archived("cam", T0 + timedelta(minutes=4), T0 + timedelta(minutes=16))
    assert [frame_time(p) for p in window] == older[1:4]


def test_frame_names_round_trip() -> None:
    at = datetime(2026, 6, 1, 13, 0, 5, 250000, tzinfo=UTC)
    assert frame_time(Path(f"{frame_stem(at)}.jpg")) == at
    assert frame_time(Path(".tmp.jpg")) is None
    assert frame_time(Path("notes.txt")) is None


def test_retention_keeps_media_under_budget_while_a_camera_sends_every_second(
    tmp_path: Path,
) -> None:
    media = tmp_path / "media"
    archive = media / "archive"  # an archive folder inside media/ is never touched
    archive.mkdir(parents=True)
    (archive / "posts.jsonl").write_text('{"id": "x"}\n')
    old = T0.timestamp() - 86400
    os.utime(archive / "posts.jsonl", (old, old))
    store = FrameStore(media / "frames", StateStore(), keep_recent=1000, keep_every=None)
    frame = scene_jpeg(T0, (160, 120))
    budget = 40 * len(frame)
    job = RetentionJob(
        media,
        max_age=timedelta(days=7),
        max_bytes=budget,
        interval=timedelta(minutes=1),
        exclude=[archive],
    )
    for second in range(300):  # five minutes, simulated: mtimes follow the frames' times
        at = T0 + timedelta(seconds=second)
        path = store.save("cam", frame, at, "image/jpeg", 160, 120).path
        os.utime(path, (at.timestamp(), at.timestamp()))
        if second % 30 == 29:
            job.run_once(now=at.timestamp())
            # files younger than the grace period are never deleted: they may be posted now
            young = (GRACE_SECONDS + 1) * len(frame)
            assert folder_bytes(media / "frames") <= budget + young
    job.run_once(now=T0.timestamp() + 300 + GRACE_SECONDS + 1)
    assert folder_bytes(media / "frames") <= budget
    names = sorted(p.name for p in (media / "frames" / "cam").iterdir())
    assert names[-1] == f"{frame_stem(T0 + timedelta(seconds=299))}.jpg"  # newest kept
    assert (archive / "posts.jsonl").exists()
    assert job.runs == 11


def test_retention_thread_runs_in_the_gateway(make_gateway) -> None:  # noqa: F811
    gateway = make_gateway(
        '[media]\nmax_age = "1h"\nmax_bytes = "1MB"\nretention_interval = "1h"\n'
    )
    stale = gateway.media_dir / "frames" / "cam" / "20200101T000000_000000.jpg"
    stale.parent.mkdir(parents=True)
    stale.write_bytes(scene_jpeg(T0, (64, 48)))
    os.utime(stale, (T0.timestamp(), T0.timestamp()))
    assert gateway.retention.max_bytes == 1_000_000
    gateway.retention.start()  # the first pass runs at once
    try:
        wait_until(lambda: not stale.exists(), timeout=10)
    finally:
        gateway.retention.stop()
    assert not gateway.retention.is_alive()


def test_gateway_retention_keeps_media_of_posts_waiting_for_delivery(
    make_gateway,  # noqa: F811
) -> None:
    gateway = make_gateway('[media]\nmax_age = "1d"\nmax_bytes = "1MB"\n')
    old = T0.timestamp()  # years beyond max_age
    waiting, stray = (gateway.media_dir / "posts" / p / "photo.jpg" for p in ("p1", "p0"))
    for path in (waiting, stray):
        path.parent.mkdir(parents=True)
        path.write_bytes(scene_jpeg(T0, (64, 48)))
        os.utime(path, (old, old))
    item = MediaItem(waiting, "image/jpeg", 64, 48, waiting.stat().st_size, "the pool")
    post = Post(new_post_id(), "r", T0, "pool", (item,), "en")
    gateway.outbox.add(post, {"somewhere": "pool"})  # not delivered yet
    assert gateway.retention.run_once().deleted_files == 1
    assert waiting.exists()
    assert not stray.exists()
