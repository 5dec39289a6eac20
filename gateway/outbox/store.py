"""The outbox: the durable local log of every post and its deliveries.

One SQLite file in WAL mode.  A post and one delivery row per target publisher
are committed with ``synchronous=FULL`` *before* any publisher is called, so a
crash or power cut at any moment loses nothing: on restart, deliveries left
``sending`` go back to ``pending`` and are retried with the same idempotency key.

Every thread gets its own connection (SQLite connections are not shareable).
"""

from __future__ import annotations

import contextlib
import json
import sqlite3
import threading
import time
from collections.abc import Mapping, Sequence
from contextlib import AbstractContextManager
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any, Literal

from gateway.config.secrets import redact
from gateway.model import MediaItem, Post, Receipt, ReplyTarget
from gateway.support.database import apply_migrations, write_transaction

DeliveryStatus = Literal["pending", "sending", "sent", "failed", "dead"]
OPEN_STATUSES = ("pending", "sending", "failed")


@dataclass(frozen=True, slots=True)
class Delivery:
    """One post's delivery to one publisher."""

    post: Post
    publisher: str
    text: str
    status: DeliveryStatus
    attempts: int
    next_attempt_at: float
    last_error: str | None
    media: tuple[MediaItem, ...] | None = None
    """This publisher's fitted copies of the images; None means the post's own."""
    parts: tuple[str, ...] = ()
    """The posts of a thread, in order (``text`` is the first); empty for a single post."""

    @property
    def media_to_send(self) -> tuple[MediaItem, ...]:
        """The images to publish with this delivery."""
        return self.post.media if self.media is None else self.media


def _media_to_json(media: tuple[MediaItem, ...]) -> str:
    return json.dumps(
        [
            {
                "path": str(m.path),
                "mime": m.mime,
                "width": m.width,
                "height": m.height,
                "bytes": m.bytes,
                "alt": m.alt,
                **({"poster": str(m.poster)} if m.poster is not None else {}),
                **({"duration": m.duration} if m.duration is not None else {}),
                **({"fps": m.fps} if m.fps is not None else {}),
            }
            for m in media
        ],
        ensure_ascii=False,
    )


def _media_from_json(raw: str) -> tuple[MediaItem, ...]:
    return tuple(
        MediaItem(
            Path(m["path"]),
            m["mime"],
            m["width"],
            m["height"],
            m["bytes"],
            m["alt"],
            poster=Path(m["poster"]) if m.get("poster") else None,
            duration=m.get("duration"),
            fps=m.get("fps"),
        )
        for m in json.loads(raw)
    )


def _parts_to_json(parts: Sequence[str] | None) -> str | None:
    return json.dumps(list(parts), ensure_ascii=False) if parts and len(parts) > 1 else None


def _optional_media(media: tuple[MediaItem, ...] | None) -> str | None:
    return None if media is None else _media_to_json(media)


def _reply_from_json(raw: str | None) -> ReplyTarget | None:
    return ReplyTarget.from_json(json.loads(raw)) if raw else None


def _post_from_row(row: sqlite3.Row) -> Post:
    return Post(
        id=row["id"],
        rule=row["rule"],
        created_at=datetime.fromisoformat(row["created_at"]),
        text=row["text"],
        media=_media_from_json(row["media"]),
        lang=row["lang"],
        reply=_reply_from_json(row["reply"]),
    )


class MentionDecidedError(Exception):
    """A reply was added for a mention that was answered or skipped meanwhile."""


class Outbox:
    """Posts and deliveries in SQLite; safe to use from many threads."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self._local = threading.local()
        self._all: list[sqlite3.Connection] = []
        self._lock = threading.Lock()
        path.parent.mkdir(parents=True, exist_ok=True)
        self._migrate()

    def _conn(self) -> sqlite3.Connection:
        conn: sqlite3.Connection | None = getattr(self._local, "conn", None)
        if conn is None:
            # A connection stays with its thread; check_same_thread=False only lets
            # close() run from the thread that shuts the outbox down.
            conn = sqlite3.connect(
                self.path, timeout=30, isolation_level=None, check_same_thread=False
            )
            conn.row_factory = sqlite3.Row
            conn.execute("PRAGMA journal_mode=WAL")
            conn.execute("PRAGMA synchronous=FULL")
            conn.execute("PRAGMA foreign_keys=ON")
            self._local.conn = conn
            with self._lock:
                self._all.append(conn)
        return conn

    def _tx(self) -> AbstractContextManager[sqlite3.Connection]:
        return write_transaction(self._conn())

    def _migrate(self) -> None:
        with self._tx() as conn:
            apply_migrations(conn)

    def close(self) -> None:
        """Close every thread's connection."""
        with self._lock:
            for conn in self._all:
                with contextlib.suppress(sqlite3.ProgrammingError):
                    conn.close()
            self._all.clear()
        self._local = threading.local()

    # -- writing ---------------------------------------------------------

    def add(
        self,
        post: Post,
        texts: Mapping[str, str],
        now: float | None = None,
        *,
        media: Mapping[str, tuple[MediaItem, ...]] | None = None,
        threads: Mapping[str, Sequence[str]] | None = None,
        done_firing: int | None = None,
        done_mention: tuple[str, str] | None = None,
    ) -> None:
        """Commit a post and a ``pending`` delivery per publisher (publisher id → fitted text).

        ``done_firing``: the queued event firing (``firings`` row) this post answers,
        marked done in the same transaction, so a firing never makes two posts;
        ``done_mention`` (publisher, remote id) likewise marks a mention answered.

        ``media`` maps a publisher id to its own fitted images; a publisher it does
        not name gets the post's media.  ``threads`` maps a publisher id to the parts
        of a thread, when the post became one for that publisher.
        """
        now = time.time() if now is None else now
        media = media or {}
        threads = threads or {}
        with self._tx() as conn:
            conn.execute(
                "INSERT INTO posts (id, rule, created_at, text, lang, media, reply)"
                " VALUES (?,?,?,?,?,?,?)",
                (
                    post.id,
                    post.rule,
                    post.created_at.isoformat(),
                    post.text,
                    post.lang,
                    _media_to_json(post.media),
                    json.dumps(post.reply.to_json()) if post.reply else None,
                ),
            )
            conn.executemany(
                "INSERT INTO deliveries (post_id, publisher, text, status,"
                " next_attempt_at, updated_at, media, parts) VALUES (?,?,?,'pending',?,?,?,?)",
                [
                    (
                        post.id,
                        publisher,
                        text,
                        now,
                        now,
                        _optional_media(media.get(publisher)),
                        _parts_to_json(threads.get(publisher)),
                    )
                    for publisher, text in texts.items()
                ],
            )
            if done_firing is not None:
                conn.execute("UPDATE firings SET done=1 WHERE id=?", (done_firing,))
            if done_mention is not None:
                # The reply and its mention's outcome commit together: exactly one reply.
                cur = conn.execute(
                    "UPDATE mentions SET outcome='answered', post_id=?, decided_at=?"
                    " WHERE publisher=? AND remote_id=? AND outcome IS NULL",
                    (post.id, now, *done_mention),
                )
                if cur.rowcount != 1:  # decided meanwhile: no second reply (rolled back)
                    raise MentionDecidedError(f"mention {done_mention[1]} was already decided")

    def recover(self) -> int:
        """After a crash: deliveries left ``sending`` become ``pending``; returns how many."""
        with self._tx() as conn:
            cur = conn.execute(
                "UPDATE deliveries SET status='pending', updated_at=? WHERE status='sending'",
                (time.time(),),
            )
            return cur.rowcount

    def _update(self, post_id: str, publisher: str, **fields: Any) -> None:
        fields["updated_at"] = time.time()
        sets = ", ".join(f"{name}=?" for name in fields)
        with self._tx() as conn:
            conn.execute(
                f"UPDATE deliveries SET {sets} WHERE post_id=? AND publisher=?",  # noqa: S608 - names are ours
                (*fields.values(), post_id, publisher),
            )

    def mark_sending(self, delivery: Delivery) -> None:
        """Record that a publish call is about to be made."""
        self._update(
            delivery.post.id, delivery.publisher, status="sending", attempts=delivery.attempts + 1
        )

    def mark_sent(self, delivery: Delivery, receipt: Receipt) -> None:
        """Record a successful delivery (the receipt masked: a receiver may echo a secret)."""
        self._update(
            delivery.post.id,
            delivery.publisher,
            status="sent",
            remote_id=redact(receipt.remote_id) if receipt.remote_id else receipt.remote_id,
            url=redact(receipt.url) if receipt.url else receipt.url,
            last_error=None,
        )

    def mark_failed(self, delivery: Delivery, error: str, next_attempt_at: float) -> None:
        """Record a failure that will be retried at ``next_attempt_at``."""
        self._update(
            delivery.post.id,
            delivery.publisher,
            status="failed",
            last_error=redact(error),  # shown by `history` and `status`
            next_attempt_at=next_attempt_at,
        )

    def mark_waiting(self, delivery: Delivery, reason: str, next_attempt_at: float) -> None:
        """Hold a delivery back until ``next_attempt_at`` without counting the attempt
        just made (a rate limit, a daily cap, a paused publisher): ``failed`` with the
        reason, so ``outbox`` and ``status`` show why it waits."""
        self._update(
            delivery.post.id,
            delivery.publisher,
            status="failed",
            attempts=delivery.attempts,
            last_error=redact(reason),
            next_attempt_at=next_attempt_at,
        )

    def mark_dead(self, delivery: Delivery, error: str) -> None:
        """Give up on a delivery, keeping the last error."""
        self._update(delivery.post.id, delivery.publisher, status="dead", last_error=redact(error))

    def retry(self, post_id: str, publisher: str) -> bool:
        """Make a failed or dead delivery due now; False if there is none."""
        with self._tx() as conn:
            cur = conn.execute(
                "UPDATE deliveries SET status='pending', next_attempt_at=?, updated_at=?"
                " WHERE post_id=? AND publisher=? AND status IN ('failed','dead','pending')",
                (time.time(), time.time(), post_id, publisher),
            )
            return cur.rowcount > 0

    def drop(self, post_id: str, publisher: str) -> bool:
        """Give up on an open delivery by hand (it becomes ``dead``)."""
        with self._tx() as conn:
            cur = conn.execute(
                "UPDATE deliveries SET status='dead', last_error='dropped by operator',"
                " updated_at=?"
                " WHERE post_id=? AND publisher=? AND status IN ('pending','failed')",
                (time.time(), post_id, publisher),
            )
            return cur.rowcount > 0

    # -- reading ---------------------------------------------------------

    def next_delivery(self, publisher: str) -> Delivery | None:
        """The oldest open delivery of a publisher (due or not): deliveries go out in order."""
        row = (
            self._conn()
            .execute(
                "SELECT d.*, d.media AS delivery_media,"
                " p.id, p.rule, p.created_at, p.text AS post_text, p.lang, p.media AS post_media,"
                " p.reply AS post_reply"
                " FROM deliveries d JOIN posts p ON p.id = d.post_id"
                " WHERE d.publisher=? AND d.status IN (?,?,?)"  # OPEN_STATUSES
                " ORDER BY d.post_id LIMIT 1",
                (publisher, *OPEN_STATUSES),
            )
            .fetchone()
        )
        if row is None:
            return None
        post = Post(
            id=row["id"],
            rule=row["rule"],
            created_at=datetime.fromisoformat(row["created_at"]),
            text=row["post_text"],
            media=_media_from_json(row["post_media"]),
            lang=row["lang"],
            reply=_reply_from_json(row["post_reply"]),
        )
        own = row["delivery_media"]
        return Delivery(
            post,
            publisher,
            row["text"],
            row["status"],
            row["attempts"],
            row["next_attempt_at"],
            row["last_error"],
            media=None if own is None else _media_from_json(own),
            parts=tuple(json.loads(row["parts"])) if row["parts"] else (),
        )

    def media_in_use(self) -> set[Path]:
        """The resolved paths of the media still to be sent: those of every post with a
        delivery ``pending``, ``sending`` or ``failed``, and those deliveries' own fitted
        copies.  Media retention must not delete them (a retry may come days later).

        Read from the database, so it holds after a restart too.  One query; it scans
        the deliveries table (no index starts with ``status``), about 15 ms for 90,000
        rows on a desktop, so once per retention pass is cheap.  Each distinct media
        list is parsed once.
        """
        rows = (
            self._conn()
            .execute(
                "SELECT p.media, d.media FROM deliveries d JOIN posts p ON p.id = d.post_id"
                " WHERE d.status IN (?,?,?)",  # OPEN_STATUSES
                OPEN_STATUSES,
            )
            .fetchall()
        )
        # A post's list repeats once per open delivery; a sent delivery's own copies are
        # left out (done with), and a copy it shares with an open one is listed there too.
        lists = {raw for row in rows for raw in row if raw is not None}
        media = [m for raw in lists for m in _media_from_json(raw)]
        # a video's poster goes with it (a publisher without video posts the poster)
        return {p.resolve() for m in media for p in (m.path, m.poster) if p is not None}

    def history(self, limit: int = 20) -> list[dict[str, Any]]:
        """Newest posts first, each with its deliveries (the ``history --json`` contract)."""
        conn = self._conn()
        posts = conn.execute("SELECT * FROM posts ORDER BY id DESC LIMIT ?", (limit,)).fetchall()
        out = []
        for row in posts:
            deliveries = conn.execute(
                "SELECT * FROM deliveries WHERE post_id=? ORDER BY publisher", (row["id"],)
            ).fetchall()
            out.append(
                {
                    "id": row["id"],
                    "rule": row["rule"],
                    "created_at": row["created_at"],
                    "text": row["text"],
                    "lang": row["lang"],
                    "media": [
                        {
                            "file": m["path"],
                            "mime": m["mime"],
                            "width": m["width"],
                            "height": m["height"],
                            "bytes": m["bytes"],
                            "alt": m["alt"],
                        }
                        for m in json.loads(row["media"])
                    ],
                    "deliveries": {
                        d["publisher"]: {
                            "status": d["status"],
                            "attempts": d["attempts"],
                            "remote_id": d["remote_id"],
                            "url": d["url"],
                            "last_error": d["last_error"],
                        }
                        for d in deliveries
                    },
                }
            )
        return out

    def open_deliveries(self) -> list[dict[str, Any]]:
        """Deliveries not yet sent (pending, sending, failed) and dead ones, oldest first."""
        rows = (
            self._conn()
            .execute(
                "SELECT post_id, publisher, status, attempts, next_attempt_at, last_error"
                " FROM deliveries WHERE status != 'sent' ORDER BY post_id, publisher"
            )
            .fetchall()
        )
        return [dict(r) for r in rows]

    def counts(self) -> dict[str, int]:
        """Number of deliveries per status."""
        rows = self._conn().execute("SELECT status, COUNT(*) FROM deliveries GROUP BY status")
        return {status: n for status, n in rows}

    def last_post(self, rule: str | None = None) -> Post | None:
        """The newest post (of a rule, when given)."""
        where = " WHERE rule=?" if rule else ""
        sql = f"SELECT * FROM posts{where} ORDER BY id DESC LIMIT 1"  # noqa: S608 - constant parts
        row = self._conn().execute(sql, (rule,) if rule else ()).fetchone()
        return _post_from_row(row) if row else None

    def recent_posts(self, rule: str, limit: int) -> list[tuple[datetime, str]]:
        """The newest ``limit`` posts of a rule as (created_at, text), newest first."""
        rows = self._conn().execute(
            "SELECT created_at, text FROM posts WHERE rule=? ORDER BY id DESC LIMIT ?",
            (rule, limit),
        )
        return [(datetime.fromisoformat(at), text) for at, text in rows]

    def sent_since(self, publisher: str, since: float) -> tuple[int, float | None]:
        """How many deliveries of ``publisher`` were sent since ``since`` (epoch seconds),
        and when the last one ever was sent (None if never): the posting budget's count."""
        row = (
            self._conn()
            .execute(
                "SELECT COALESCE(SUM(updated_at >= ?), 0), MAX(updated_at) FROM deliveries"
                " WHERE publisher=? AND status='sent'",
                (since, publisher),
            )
            .fetchone()
        )
        return int(row[0]), (float(row[1]) if row[1] is not None else None)

    # -- key/value store (publisher sessions, cached limits) --------------

    def get(self, key: str) -> str | None:
        """A stored value, or None."""
        row = self._conn().execute("SELECT value FROM kv WHERE key=?", (key,)).fetchone()
        return None if row is None else str(row[0])

    def set(self, key: str, value: str) -> None:
        """Store a value durably."""
        with self._tx() as conn:
            conn.execute(
                "INSERT INTO kv (key, value) VALUES (?, ?)"
                " ON CONFLICT(key) DO UPDATE SET value=excluded.value",
                (key, value),
            )
