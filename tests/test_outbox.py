"""The outbox is the local log: committed before sending, recovered after a crash."""

from __future__ import annotations

import os
import sqlite3
import threading
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from PIL import Image

from gateway.media.retention import RetentionJob
from gateway.model import (
    MediaItem,
    PermanentError,
    Post,
    Receipt,
    RetryableError,
    _IdState,
    new_post_id,
)
from gateway.outbox.delivery import DeliveryWorker, RetryPolicy
from gateway.outbox.store import Outbox
from gateway.publishers.base import Capabilities
from gateway.publishers.file import FilePublisher, read_archive
from gateway.support.database import MIGRATIONS


def make_post(text: str = "hello", media: tuple[MediaItem, ...] = ()) -> Post:
    return Post(new_post_id(), "rule1", datetime.now(UTC), text, media, "en")


class Recorder:
    """A publisher that records calls and fails as scripted."""

    capabilities = Capabilities()

    def __init__(self, publisher_id: str, failures: list[Exception] | None = None) -> None:
        self.id = publisher_id
        self.calls: list[tuple[str, str, str]] = []
        self.failures = list(failures or [])
        self.gate: threading.Event | None = None

    def publish(
        self, post: Post, text: str, media: tuple[MediaItem, ...], idempotency_key: str
    ) -> Receipt:
        if self.gate is not None:
            self.gate.wait(10)
        self.calls.append((post.id, text, idempotency_key))
        if self.failures:
            raise self.failures.pop(0)
        return Receipt(remote_id=f"r-{post.id}", url=f"https://example.test/{post.id}")

    def close(self) -> None:
        pass


def test_post_and_deliveries_committed_before_publishing(tmp_path: Path) -> None:
    outbox = Outbox(tmp_path / "gateway.db")
    post = make_post()
    outbox.add(post, {"a": "text for a", "b": "text for b"})
    # Another connection (another process, after a power cut) sees it all.
    conn = sqlite3.connect(tmp_path / "gateway.db")
    rows = conn.execute(
        "SELECT publisher, status, text FROM deliveries ORDER BY publisher"
    ).fetchall()
    assert rows == [("a", "pending", "text for a"), ("b", "pending", "text for b")]
    assert conn.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
    assert conn.execute("PRAGMA user_version").fetchone()[0] == len(MIGRATIONS)


def test_worker_sends_in_order_and_records_receipts(tmp_path: Path) -> None:
    outbox = Outbox(tmp_path / "gateway.db")
    posts = [make_post(f"post {i}") for i in range(3)]
    for post in posts:
        outbox.add(post, {"a": post.text})
    publisher = Recorder("a")
    worker = DeliveryWorker(outbox, publisher)
    while worker.step() == 0:
        pass
    assert [c[1] for c in publisher.calls] == ["post 0", "post 1", "post 2"]
    assert publisher.calls[0][2] == f"{posts[0].id}-a"
    entry = outbox.history(10)[-1]
    assert entry["deliveries"]["a"] == {
        "status": "sent",
        "attempts": 1,
        "remote_id": f"r-{posts[0].id}",
        "url": f"https://example.test/{posts[0].id}",
        "last_error": None,
    }


def test_retryable_then_sent_and_retry_after_respected(tmp_path: Path) -> None:
    now = [1_000_000.0]
    outbox = Outbox(tmp_path / "gateway.db")
    post = make_post()
    outbox.add(post, {"a": "x"}, now=now[0])
    publisher = Recorder("a", [RetryableError("503 busy", retry_after=120)])
    worker = DeliveryWorker(outbox, publisher, clock=lambda: now[0])
    assert worker.step() == 0
    (row,) = outbox.open_deliveries()
    assert (row["status"], row["attempts"], row["last_error"]) == ("failed", 1, "503 busy")
    assert row["next_attempt_at"] == pytest.approx(now[0] + 120)
    assert worker.step() == pytest.approx(120)  # not due yet: the worker sleeps, sends nothing
    assert len(publisher.calls) == 1
    now[0] += 121
    assert worker.step() == 0
    assert outbox.history(1)[0]["deliveries"]["a"]["status"] == "sent"
    assert outbox.history(1)[0]["deliveries"]["a"]["attempts"] == 2
    # The same idempotency key on every attempt of the same post.
    assert publisher.calls[0][2] == publisher.calls[1][2]


def test_permanent_error_and_giving_up_make_dead(tmp_path: Path) -> None:
    outbox = Outbox(tmp_path / "gateway.db")
    first, second = make_post("one"), make_post("two")
    outbox.add(first, {"a": "one"})
    outbox.add(second, {"a": "two"})
    policy = RetryPolicy(base_delay=0, max_attempts=2, jitter=0)
    publisher = Recorder(
        "a", [PermanentError("401 bad token"), RetryableError("e1"), RetryableError("e2")]
    )
    worker = DeliveryWorker(outbox, publisher, policy)
    for _ in range(5):
        worker.step()
    deliveries = {e["text"]: e["deliveries"]["a"] for e in outbox.history(10)}
    assert deliveries["one"]["status"] == "dead"
    assert deliveries["one"]["last_error"] == "permanent: 401 bad token"
    assert deliveries["two"]["status"] == "dead"
    assert deliveries["two"]["last_error"] == "gave up after 2 attempts: e2"
    # An operator can bring a dead delivery back.
    assert outbox.retry(second.id, "a")
    worker.step()
    assert outbox.history(1)[0]["deliveries"]["a"]["status"] == "sent"


def test_crash_while_sending_is_retried_after_restart(tmp_path: Path) -> None:
    outbox = Outbox(tmp_path / "gateway.db")
    post = make_post()
    outbox.add(post, {"a": "x"})
    delivery = outbox.next_delivery("a")
    assert delivery is not None
    outbox.mark_sending(delivery)
    outbox.close()  # the process dies here, mid-publish

    reopened = Outbox(tmp_path / "gateway.db")
    assert reopened.recover() == 1
    publisher = Recorder("a")
    DeliveryWorker(reopened, publisher).step()
    assert publisher.calls == [(post.id, "x", f"{post.id}-a")]
    assert reopened.history(1)[0]["deliveries"]["a"]["attempts"] == 2


def test_failing_publisher_never_blocks_another(tmp_path: Path) -> None:
    outbox = Outbox(tmp_path / "gateway.db")
    stuck, fine = Recorder("stuck"), Recorder("fine")
    stuck.gate = threading.Event()  # hangs until released
    workers = [DeliveryWorker(outbox, stuck), DeliveryWorker(outbox, fine)]
    for worker in workers:
        worker.start()
    try:
        posts = [make_post(f"p{i}") for i in range(3)]
        for post in posts:
            outbox.add(post, {"stuck": post.text, "fine": post.text})
            for worker in workers:
                worker.wake()
        deadline = threading.Event()
        for _ in range(100):
            if len(fine.calls) == 3:
                break
            deadline.wait(0.05)
        assert [c[1] for c in fine.calls] == ["p0", "p1", "p2"]
        assert stuck.calls == []
    finally:
        stuck.gate.set()
        for worker in workers:
            worker.stop()
    assert len(stuck.calls) >= 1


def test_file_publisher_is_idempotent_and_survives_torn_lines(tmp_path: Path) -> None:
    image = tmp_path / "img.jpg"
    image.write_bytes(b"\xff\xd8\xff fake jpeg bytes")
    post = make_post(
        "hi", (MediaItem(image, "image/jpeg", 4, 3, image.stat().st_size, "alt text"),)
    )
    archive = FilePublisher("archive", tmp_path / "posts")
    archive.publish(post, "hi", post.media, "k")
    # A power cut tore a second record in half.
    with open(archive.archive, "ab") as fh:
        fh.write(b'{"id": "torn", "te')
    again = FilePublisher("archive", tmp_path / "posts")  # a restarted gateway
    again.publish(post, "hi", post.media, "k")  # retried after the crash: no second line
    other = make_post("second")
    again.publish(other, "second", (), "k2")
    records = read_archive(archive.archive)
    assert [r["id"] for r in records] == [post.id, other.id]
    assert records[0]["media"] == [
        {
            "file": f"media/{post.id}-0.jpg",
            "mime": "image/jpeg",
            "width": 4,
            "height": 3,
            "bytes": image.stat().st_size,
            "alt": "alt text",
        }
    ]
    assert (tmp_path / "posts" / records[0]["media"][0]["file"]).read_bytes() == image.read_bytes()
    assert records[0]["created_at"].endswith("+00:00")


def test_post_ids_are_unique_and_time_ordered(monkeypatch: pytest.MonkeyPatch) -> None:
    ids = [new_post_id() for _ in range(2000)]
    assert len(set(ids)) == len(ids)
    assert ids == sorted(ids)
    assert all(len(i) == 26 for i in ids)
    # An id from 2033 would pin every later id of this process to that millisecond
    # (ids never go backwards); keep the process-wide id state out of other tests.
    monkeypatch.setattr("gateway.model._ID_STATE", _IdState())
    assert new_post_id(now_ms=1_000) < new_post_id(now_ms=2_000_000_000_000)


def test_many_posts_in_one_millisecond_keep_bluesky_keys_ordered_and_unique() -> None:
    from gateway.publishers.bluesky import record_key

    for _ in range(50):  # each round starts a fresh millisecond with a fresh random part
        ids = [new_post_id(now_ms=4_000_000_000_000) for _ in range(300)]
        keys = [record_key(i) for i in ids]
        assert keys == sorted(keys)
        assert len(set(keys)) == len(keys)
        _reset_ids()


def _reset_ids() -> None:
    from gateway import model

    model._ID_STATE.last_ms = 0


def test_delivery_errors_are_stored_without_credentials(tmp_path: Path) -> None:
    """`history` and `status` show last_error; an error quoting a URL must not leak it."""
    outbox = Outbox(tmp_path / "gateway.db")
    first, second = make_post("one"), make_post("two")
    outbox.add(first, {"a": "one"})
    outbox.add(second, {"a": "two"})
    publisher = Recorder(
        "a",
        [
            PermanentError("POST https://bot:hunter2@hooks.example/x: 403"),
            RetryableError("GET https://api.example/v1?access_token=hunter2: 503"),
        ],
    )
    worker = DeliveryWorker(outbox, publisher, RetryPolicy(base_delay=60, jitter=0))
    worker.step()
    worker.step()
    deliveries = {e["text"]: e["deliveries"]["a"] for e in outbox.history(10)}
    assert deliveries["one"]["last_error"] == "permanent: POST https://***@hooks.example/x: 403"
    assert deliveries["two"]["status"] == "failed"
    assert deliveries["two"]["last_error"].endswith("?access_token=*** 503")
    raw = sqlite3.connect(tmp_path / "gateway.db").execute("SELECT last_error FROM deliveries")
    assert all("hunter2" not in row[0] for row in raw)


# -- media still needed by deliveries (media retention keeps them) -------------


def photo(path: Path, color: tuple[int, int, int] = (200, 40, 40)) -> MediaItem:
    """A real JPEG at ``path`` and its media item."""
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.new("RGB", (32, 24), color).save(path, "JPEG")
    return MediaItem(path, "image/jpeg", 32, 24, path.stat().st_size, "a photo")


def test_media_of_a_post_with_an_open_delivery_are_in_use(tmp_path: Path) -> None:
    media = tmp_path / "media" / "posts"
    own, fitted_a, fitted_b = (photo(media / n) for n in ("p.jpg", "fit-a.jpg", "fit-b.jpg"))
    post = make_post("with photo", (own,))
    outbox = Outbox(tmp_path / "gateway.db")
    outbox.add(post, {"a": "x", "b": "x", "c": "x"}, media={"a": (fitted_a,), "b": (fitted_b,)})
    in_use = {own.path.resolve(), fitted_a.path.resolve(), fitted_b.path.resolve()}
    assert outbox.media_in_use() == in_use  # all pending

    policy = RetryPolicy(base_delay=0, jitter=0)
    DeliveryWorker(outbox, Recorder("a", [RetryableError("503")]), policy).step()
    DeliveryWorker(outbox, Recorder("b"), policy).step()
    DeliveryWorker(outbox, Recorder("c"), policy).step()
    assert {d["publisher"]: d["status"] for d in outbox.open_deliveries()} == {"a": "failed"}
    # a will retry with its fitted copy; b's copy went out already
    assert outbox.media_in_use() == {own.path.resolve(), fitted_a.path.resolve()}
    outbox.close()

    reopened = Outbox(tmp_path / "gateway.db")  # after a restart, from the database alone
    assert reopened.media_in_use() == {own.path.resolve(), fitted_a.path.resolve()}
    DeliveryWorker(reopened, Recorder("a"), policy).step()
    assert reopened.media_in_use() == set()


def test_media_of_dead_deliveries_are_not_in_use(tmp_path: Path) -> None:
    item = photo(tmp_path / "media" / "posts" / "p.jpg")
    outbox = Outbox(tmp_path / "gateway.db")
    outbox.add(make_post("given up", (item,)), {"a": "x", "b": "x"})
    DeliveryWorker(outbox, Recorder("a", [PermanentError("401")])).step()
    assert outbox.media_in_use() == {item.path.resolve()}  # b is still pending
    DeliveryWorker(outbox, Recorder("b")).step()
    assert outbox.media_in_use() == set()


def test_relative_media_paths_are_resolved(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    item = photo(Path("var/media/posts/p.jpg"))  # state_dir = "var", the default
    outbox = Outbox(Path("var/gateway.db"))
    outbox.add(make_post("relative", (item,)), {"a": "x"})
    assert outbox.media_in_use() == {(tmp_path / "var/media/posts/p.jpg").resolve()}


def test_retention_keeps_media_until_their_delivery_is_sent(tmp_path: Path) -> None:
    media = tmp_path / "media"
    needed = photo(media / "posts" / "p1" / "photo.jpg")
    stray = photo(media / "posts" / "p0" / "photo.jpg", (0, 90, 0))
    week_ago = time.time() - 7 * 86400  # far beyond max_age
    for path in (needed.path, stray.path):
        os.utime(path, (week_ago, week_ago))
    outbox = Outbox(tmp_path / "gateway.db")
    outbox.add(make_post("outage", (needed,)), {"a": "x"})
    policy = RetryPolicy(base_delay=0, jitter=0)
    DeliveryWorker(outbox, Recorder("a", [RetryableError("timeout")]), policy).step()
    job = RetentionJob(
        media,
        max_age=timedelta(days=1),
        max_bytes=None,
        interval=timedelta(hours=1),
        keep=outbox.media_in_use,
    )
    assert job.run_once().deleted_files == 1
    assert needed.path.exists()
    assert not stray.path.exists()

    publisher = Recorder("a")
    DeliveryWorker(outbox, publisher, policy).step()  # the retry finds its photo
    assert len(publisher.calls) == 1
    assert job.run_once().deleted_files == 1
    assert not needed.path.exists()


def test_retention_deletes_nothing_when_the_outbox_cannot_be_read(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    old = photo(tmp_path / "media" / "posts" / "p.jpg")
    os.utime(old.path, (time.time() - 7 * 86400,) * 2)
    outbox = Outbox(tmp_path / "gateway.db")
    with sqlite3.connect(tmp_path / "gateway.db") as other:  # a damaged database
        other.execute("DROP TABLE deliveries")
    job = RetentionJob(
        tmp_path / "media",
        max_age=timedelta(days=1),
        max_bytes=0,
        interval=timedelta(hours=1),
        keep=outbox.media_in_use,
    )
    assert job.run_once().deleted_files == 0
    assert old.path.exists()
    assert job.runs == 1
    assert "retention of" in caplog.text
    assert "skipped" in caplog.text


def test_a_full_disk_under_the_outbox_logs_one_line_and_the_delivery_goes_once_freed(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """The worker's database writes fail on a full disk (a real tmpfs): one log line a
    minute and no traceback, and the delivery is sent once space returns."""
    from tests.gwutil import fill, tmpfs

    with tmpfs(tmp_path / "disk", "size=2m") as disk:
        outbox = Outbox(disk / "gateway.db")
        post = make_post()
        outbox.add(post, {"a": "x"})
        filler = fill(disk)
        publisher = Recorder("a")
        worker = DeliveryWorker(outbox, publisher)
        with caplog.at_level("ERROR", logger="gateway.outbox.delivery"):
            worker.start()
            try:
                deadline = time.monotonic() + 10
                while "database error" not in caplog.text and time.monotonic() < deadline:
                    time.sleep(0.05)
                filler.unlink()
                (disk / "filler2").unlink(missing_ok=True)
                worker.wake()
                deadline = time.monotonic() + 15
                while outbox.open_deliveries() and time.monotonic() < deadline:
                    time.sleep(0.05)
            finally:
                worker.request_stop()
                worker.stop(5)
        assert caplog.text.count("database error (retrying)") == 1
        assert "Traceback" not in caplog.text
        assert "unexpected error" not in caplog.text
        assert not outbox.open_deliveries()
        assert len(publisher.calls) >= 1
