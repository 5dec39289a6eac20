"""The mentions table: every mention stored before anything answers it.

A mention is keyed by (publisher, remote id): reading it twice stores it once.  A
publisher's read cursor (``kv`` key ``mentions:<publisher>:cursor``) is written in
the same transaction as the mentions it covers, so a restart neither misses nor
re-reads into a second answer.  The answer itself commits with the mention's outcome
(``Outbox.add(done_mention=...)``).
"""

from __future__ import annotations

import json
import sqlite3
import threading
import time
from collections.abc import Callable, Sequence
from contextlib import AbstractContextManager
from datetime import datetime
from pathlib import Path
from typing import Any

from gateway.model import Mention
from gateway.support.database import apply_migrations, write_transaction


def _to_json(m: Mention) -> str:
    return json.dumps(
        {
            "author_name": m.author_name,
            "text": m.text,
            "lang": m.lang,
            "visibility": m.visibility,
            "in_reply_to": m.in_reply_to,
            "root_id": m.root_id,
            "bot": m.bot,
            "url": m.url,
            "created_at": m.created_at.isoformat(),
        }
    )


def _from_row(row: sqlite3.Row) -> Mention:
    data = json.loads(row["data"])
    return Mention(
        publisher=row["publisher"],
        remote_id=row["remote_id"],
        author=row["author"],
        author_id=row["author_id"],
        author_name=data.get("author_name", ""),
        text=data.get("text", ""),
        created_at=datetime.fromisoformat(data["created_at"]),
        lang=data.get("lang"),
        visibility=data.get("visibility"),
        in_reply_to=data.get("in_reply_to"),
        root_id=data.get("root_id", ""),
        bot=bool(data.get("bot")),
        url=data.get("url"),
    )


class Inbox:
    """Mentions in the gateway's SQLite file; safe to use from many threads."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.on_new: Callable[[list[Mention]], None] | None = None
        """Called with the mentions a :meth:`store` added, once they are committed
        (``on_mention`` rules)."""
        self._local = threading.local()
        path.parent.mkdir(parents=True, exist_ok=True)
        with self._tx() as conn:
            apply_migrations(conn)

    def _conn(self) -> sqlite3.Connection:
        conn: sqlite3.Connection | None = getattr(self._local, "conn", None)
        if conn is None:
            conn = sqlite3.connect(self.path, timeout=30, isolation_level=None)
            conn.row_factory = sqlite3.Row
            conn.execute("PRAGMA journal_mode=WAL")
            conn.execute("PRAGMA synchronous=FULL")
            self._local.conn = conn
        return conn

    def _tx(self) -> AbstractContextManager[sqlite3.Connection]:
        return write_transaction(self._conn())

    def close(self) -> None:
        """Close this thread's connection."""
        conn = getattr(self._local, "conn", None)
        if conn is not None:
            conn.close()
            self._local.conn = None

    def cursor(self, publisher: str) -> str | None:
        """The newest remote id read from ``publisher`` (``None``: nothing read yet)."""
        row = (
            self._conn()
            .execute("SELECT value FROM kv WHERE key=?", (f"mentions:{publisher}:cursor",))
            .fetchone()
        )
        return None if row is None else str(row[0])

    def store(
        self,
        mentions: Sequence[Mention],
        publisher: str,
        cursor: str | None,
        now: float | None = None,
    ) -> int:
        """Store new mentions and then the cursor that covers them, in one transaction.

        Returns how many were new (a mention read again is not stored twice).
        """
        now = time.time() if now is None else now
        added = 0
        new: list[Mention] = []
        with self._tx() as conn:
            for m in mentions:
                cur = conn.execute(
                    "INSERT OR IGNORE INTO mentions (publisher, remote_id, author, author_id,"
                    " data, created_at, seen_at) VALUES (?,?,?,?,?,?,?)",
                    (
                        m.publisher,
                        m.remote_id,
                        m.author.lower(),
                        m.author_id,
                        _to_json(m),
                        m.created_at.timestamp(),
                        now,
                    ),
                )
                added += cur.rowcount
                if cur.rowcount:
                    new.append(m)
            if cursor is not None:
                conn.execute(
                    "INSERT INTO kv (key, value) VALUES (?, ?)"
                    " ON CONFLICT(key) DO UPDATE SET value=excluded.value",
                    (f"mentions:{publisher}:cursor", cursor),
                )
        if new and self.on_new is not None:
            self.on_new(new)
        return added

    def undecided(self, limit: int = 100) -> list[Mention]:
        """Mentions stored but neither answered nor skipped yet, oldest first."""
        rows = self._conn().execute(
            "SELECT * FROM mentions WHERE outcome IS NULL ORDER BY seen_at, created_at LIMIT ?",
            (limit,),
        )
        return [_from_row(r) for r in rows]

    def skip(self, mention: Mention, reason: str, now: float | None = None) -> None:
        """Record that a mention gets no answer, and why."""
        now = time.time() if now is None else now
        with self._tx() as conn:
            conn.execute(
                "UPDATE mentions SET outcome='skipped', reason=?, decided_at=?"
                " WHERE publisher=? AND remote_id=? AND outcome IS NULL",
                (reason, now, mention.publisher, mention.remote_id),
            )

    def answered_since(self, since: float, author: str | None = None) -> list[float]:
        """When answers went out since ``since`` (of one author, or all), newest first."""
        sql = "SELECT decided_at FROM mentions WHERE outcome='answered' AND decided_at >= ?"
        args: list[Any] = [since]
        if author is not None:
            sql += " AND author=?"
            args.append(author.lower())
        rows = self._conn().execute(sql + " ORDER BY decided_at DESC", args)
        return [float(r[0]) for r in rows]

    def recent(self, limit: int = 20) -> list[dict[str, Any]]:
        """The newest mentions and what became of each (for ``things-gateway mentions``)."""
        rows = self._conn().execute(
            "SELECT m.*, d.url AS reply_url FROM mentions m"
            " LEFT JOIN deliveries d ON d.post_id = m.post_id AND d.publisher = m.publisher"
            " ORDER BY m.seen_at DESC, m.created_at DESC LIMIT ?",
            (limit,),
        )
        out = []
        for r in rows:
            m = _from_row(r)
            out.append(
                {
                    "publisher": m.publisher,
                    "id": m.remote_id,
                    "author": m.author,
                    "text": m.text,
                    "created_at": m.created_at.isoformat(),
                    "outcome": r["outcome"] or "pending",
                    "reason": r["reason"],
                    "reply_url": r["reply_url"],
                }
            )
        return out

    def counts(self, since: float = 0.0) -> dict[str, int]:
        """Mentions seen, answered and skipped since ``since`` (for status and templates)."""
        row = (
            self._conn()
            .execute(
                "SELECT COUNT(*), COALESCE(SUM(outcome='answered'),0),"
                " COALESCE(SUM(outcome='skipped'),0)"
                " FROM mentions WHERE seen_at >= ?",
                (since,),
            )
            .fetchone()
        )
        return {"seen": int(row[0]), "answered": int(row[1]), "skipped": int(row[2])}


def read_counts(path: Path, since: float) -> dict[str, int] | None:
    """:meth:`Inbox.counts` from a read-only connection (for ``status``, while the
    daemon writes); None when the database has no mentions table yet."""
    try:
        conn = sqlite3.connect(f"file:{path}?mode=ro", uri=True, timeout=5)
    except sqlite3.Error:
        return None
    try:
        row = conn.execute(
            "SELECT COUNT(*), COALESCE(SUM(outcome='answered'),0),"
            " COALESCE(SUM(outcome='skipped'),0) FROM mentions WHERE seen_at >= ?",
            (since,),
        ).fetchone()
    except sqlite3.Error:
        return None
    finally:
        conn.close()
    return {"seen": int(row[0]), "answered": int(row[1]), "skipped": int(row[2])}
