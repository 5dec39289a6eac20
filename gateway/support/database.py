"""The gateway's one SQLite file, ``<state_dir>/gateway.db``, and its schema.

Every table of the file is created here, by numbered migrations: the schema
version is ``PRAGMA user_version``, and a migration, once released, is never
edited (a new one is appended).  The tables and their owners:

- ``posts``, ``deliveries``: the outbox (:mod:`gateway.outbox.store`), committed with
  ``synchronous=FULL`` before anything is sent;
- ``kv``: small durable values (Bluesky sessions, Mastodon limits, thread parts, the
  health row);
- ``readings_minute``: the readings history (:mod:`gateway.state.history`), written
  in batches;
- ``firings``: event firings queued durably (:mod:`gateway.rules.firings`), committed
  before their MQTT message is acknowledged; ``Outbox.add`` marks one done with its post;
- ``mentions``: mentions of the gateway's accounts (:mod:`gateway.conversations.inbox`),
  stored before they are answered; their read cursors live in ``kv``.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

MIGRATIONS: tuple[str, ...] = (
    """
    CREATE TABLE posts (
        id TEXT PRIMARY KEY,
        rule TEXT NOT NULL,
        created_at TEXT NOT NULL,
        text TEXT NOT NULL,
        lang TEXT,
        media TEXT NOT NULL DEFAULT '[]'
    );
    CREATE TABLE deliveries (
        post_id TEXT NOT NULL REFERENCES posts(id) ON DELETE CASCADE,
        publisher TEXT NOT NULL,
        text TEXT NOT NULL,
        status TEXT NOT NULL CHECK (status IN ('pending','sending','sent','failed','dead')),
        attempts INTEGER NOT NULL DEFAULT 0,
        next_attempt_at REAL NOT NULL,
        remote_id TEXT,
        url TEXT,
        last_error TEXT,
        updated_at REAL NOT NULL,
        PRIMARY KEY (post_id, publisher)
    );
    CREATE INDEX deliveries_open ON deliveries (publisher, status, post_id);
    CREATE TABLE kv (key TEXT PRIMARY KEY, value TEXT NOT NULL);
    """,
    # 2: each delivery's own media, fitted to its publisher (NULL: the post's media)
    """
    ALTER TABLE deliveries ADD COLUMN media TEXT;
    """,
    # 3: threads.  `parts` is a JSON list of the numbered posts of a thread (rules with
    # overflow = "thread" whose text did not fit); NULL for a single post.  `text`
    # stays plain text: the first part of a thread, else the whole fitted text.
    """
    ALTER TABLE deliveries ADD COLUMN parts TEXT;
    CREATE INDEX posts_rule ON posts (rule, id);
    """,
    # 4: per-minute readings history, written in batches by gateway.state.history.
    # IF NOT EXISTS keeps it self-contained whatever number it ends up with.
    """
    CREATE TABLE IF NOT EXISTS readings_minute (
        sensor TEXT NOT NULL,
        minute INTEGER NOT NULL,
        count INTEGER NOT NULL,
        sum REAL NOT NULL,
        min REAL NOT NULL,
        max REAL NOT NULL,
        PRIMARY KEY (sensor, minute)
    ) WITHOUT ROWID;
    CREATE INDEX IF NOT EXISTS readings_minute_by_time ON readings_minute (minute);
    """,
    # 5: event firings, queued durably (gateway.rules.firings).  `data` is the event's
    # JSON, `readings` the sensor values at a `when` crossing, `key` a digest of the
    # message (topic and content) to recognise a redelivery.
    """
    CREATE TABLE IF NOT EXISTS firings (
        id INTEGER PRIMARY KEY AUTOINCREMENT,
        rule TEXT NOT NULL,
        topic TEXT,
        data TEXT,
        readings TEXT,
        key TEXT,
        done INTEGER NOT NULL DEFAULT 0,
        created_at REAL NOT NULL
    );
    CREATE INDEX IF NOT EXISTS firings_open ON firings (done, id);
    CREATE INDEX IF NOT EXISTS firings_key ON firings (key);
    """,
    # 6: conversations.  `posts.reply` is the JSON ReplyTarget of a post that answers
    # a mention; `mentions` holds every mention read (gateway.conversations.inbox),
    # stored before anything answers it, keyed by (publisher, remote id); `outcome`
    # is NULL until it is decided ('answered', or 'skipped' with the reason).
    """
    ALTER TABLE posts ADD COLUMN reply TEXT;
    CREATE TABLE IF NOT EXISTS mentions (
        publisher TEXT NOT NULL,
        remote_id TEXT NOT NULL,
        author TEXT NOT NULL,
        author_id TEXT NOT NULL DEFAULT '',
        data TEXT NOT NULL,
        created_at REAL NOT NULL,
        seen_at REAL NOT NULL,
        outcome TEXT,
        reason TEXT,
        post_id TEXT,
        decided_at REAL,
        PRIMARY KEY (publisher, remote_id)
    );
    CREATE INDEX IF NOT EXISTS mentions_open ON mentions (outcome, seen_at);
    CREATE INDEX IF NOT EXISTS mentions_author ON mentions (author, decided_at)
    """,
)


@contextmanager
def write_transaction(conn: sqlite3.Connection) -> Iterator[sqlite3.Connection]:
    """``BEGIN IMMEDIATE`` … ``COMMIT`` on an autocommit connection; rolled back on error."""
    conn.execute("BEGIN IMMEDIATE")
    try:
        yield conn
    except BaseException:
        conn.execute("ROLLBACK")
        raise
    conn.execute("COMMIT")


def apply_migrations(conn: sqlite3.Connection) -> None:
    """Bring the schema up to date; call inside a write transaction (BEGIN IMMEDIATE)."""
    version = conn.execute("PRAGMA user_version").fetchone()[0]
    for number, script in enumerate(MIGRATIONS[version:], start=version + 1):
        for statement in filter(str.strip, script.split(";")):
            conn.execute(statement)
        conn.execute(f"PRAGMA user_version = {number}")


def ensure_schema(path: Path) -> None:
    """Create the database file (and its folder) if needed and apply every migration."""
    path.parent.mkdir(parents=True, exist_ok=True)
    conn = sqlite3.connect(path, timeout=30, isolation_level=None)
    try:
        conn.execute("PRAGMA journal_mode=WAL")
        conn.execute("PRAGMA synchronous=FULL")
        conn.execute("BEGIN IMMEDIATE")
        try:
            apply_migrations(conn)
        except BaseException:
            conn.execute("ROLLBACK")
            raise
        conn.execute("COMMIT")
    finally:
        conn.close()
