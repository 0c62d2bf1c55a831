"""The ``sqlite`` relay backend: the embedded, durable default.

One file, ``<data_dir>/relay.db``. Every statement runs on one dedicated thread with one
connection, so the event loop never blocks on disk and SQLite sees a single writer per
process. Posts use ``AUTOINCREMENT``, so ``seq`` never goes back even after every post
has expired; the epoch is written into the file when it is created, so it survives
restarts and changes only when the file is lost.

Long-polls wake through an in-process :class:`~sdl_core.relay.waiting.ChangeNotifier`;
another process writing the same file is noticed by a short polling fallback.
"""

from __future__ import annotations

import asyncio
import functools
import json
import sqlite3
import time
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any, TypeVar

from sdl_core.errors import RelayUnavailable
from sdl_core.protocols import JSONObject, MailboxMessage, NodeRecord, PullResult
from sdl_core.relay.waiting import (
    MAILBOX_RETENTION_SECONDS,
    ChangeNotifier,
    long_poll,
    new_epoch,
    new_message_id,
    new_post_id,
)
from sdl_core.state import connect, write_transaction

T = TypeVar("T")

#: How often a waiting pull re-reads the file, to see writes of other processes.
CROSS_PROCESS_POLL_SECONDS = 0.5

_SCHEMA = """
CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS posts (
    seq INTEGER PRIMARY KEY AUTOINCREMENT,
    post_id TEXT NOT NULL,
    requester_id TEXT NOT NULL,
    template TEXT NOT NULL,
    expires_at REAL NOT NULL,
    body TEXT NOT NULL
);
CREATE INDEX IF NOT EXISTS posts_expiry ON posts (expires_at);
CREATE TABLE IF NOT EXISTS nodes (
    node_id TEXT PRIMARY KEY,
    url TEXT NOT NULL,
    capabilities TEXT NOT NULL,
    last_seen REAL NOT NULL
);
CREATE TABLE IF NOT EXISTS aliases (alias TEXT PRIMARY KEY, node_id TEXT NOT NULL);
CREATE INDEX IF NOT EXISTS aliases_node ON aliases (node_id);
CREATE TABLE IF NOT EXISTS presence (
    node_id TEXT PRIMARY KEY,
    capabilities TEXT NOT NULL,
    last_seen REAL NOT NULL
);
CREATE TABLE IF NOT EXISTS mailbox (
    position INTEGER PRIMARY KEY AUTOINCREMENT,
    id TEXT NOT NULL UNIQUE,
    node_id TEXT NOT NULL,
    sender TEXT NOT NULL,
    sender_verified INTEGER NOT NULL,
    request_id TEXT NOT NULL,
    payload TEXT NOT NULL,
    created_at REAL NOT NULL
);
CREATE INDEX IF NOT EXISTS mailbox_owner ON mailbox (node_id, position);
CREATE TABLE IF NOT EXISTS onces (key TEXT PRIMARY KEY, expires_at REAL NOT NULL);
"""


def _dumps(value: Any) -> str:
    return json.dumps(value, separators=(",", ":"), ensure_ascii=False)


class SqliteRelayBackend:
    """:class:`sdl_core.RelayBackend` in one SQLite file (WAL, fsync on commit)."""

    name = "sqlite"

    def __init__(self, path: Path) -> None:
        self.path = Path(path)
        self._executor: ThreadPoolExecutor | None = None
        self._conn: sqlite3.Connection | None = None
        self._epoch = ""
        self._posts_changed = ChangeNotifier()
        self._mail_changed = ChangeNotifier()

    # ------------------------------------------------------------------ plumbing

    async def _run(self, fn: Callable[[sqlite3.Connection], T]) -> T:
        if self._executor is None or self._conn is None:
            raise RelayUnavailable("sqlite backend is not started")
        conn = self._conn

        try:
            return await asyncio.get_running_loop().run_in_executor(self._executor, fn, conn)
        except sqlite3.Error as exc:
            raise RelayUnavailable(f"sqlite: {exc}") from exc

    @staticmethod
    def _write(conn: sqlite3.Connection, fn: Callable[[sqlite3.Connection], T]) -> T:
        with write_transaction(conn):  # rolled back whatever ``fn`` raises
            return fn(conn)

    # ----------------------------------------------------------------- lifecycle

    async def start(self) -> None:
        if self._executor is not None:
            return
        self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="relay-sqlite")

        def open_db() -> tuple[sqlite3.Connection, str]:
            # FULL sync (connect's): a power loss must not roll back a seq a listener has
            # already seen. A 10 s busy timeout, then the caller gets a 503.
            conn = connect(self.path, busy_timeout=10.0)
            conn.executescript(_SCHEMA)
            self._write(conn, lambda c: c.execute(
                "INSERT OR IGNORE INTO meta (key, value) VALUES ('epoch', ?)", (new_epoch(),)
            ))
            row = conn.execute("SELECT value FROM meta WHERE key='epoch'").fetchone()
            return conn, str(row[0])

        try:
            self._conn, self._epoch = await asyncio.get_running_loop().run_in_executor(
                self._executor, open_db
            )
        except (sqlite3.Error, OSError) as exc:
            self._executor.shutdown(wait=False)
            self._executor = None
            raise RelayUnavailable(f"sqlite: cannot open {self.path}: {exc}") from exc

    async def close(self) -> None:
        if self._executor is None:
            return
        conn, executor = self._conn, self._executor
        self._conn, self._executor = None, None
        if conn is not None:
            await asyncio.get_running_loop().run_in_executor(executor, conn.close)
        executor.shutdown(wait=True)

    async def epoch(self) -> str:
        return self._epoch

    # ------------------------------------------------------------------ registry

    async def register_node(self, record: NodeRecord, aliases: Sequence[str] = ()) -> NodeRecord:
        caps = _dumps(list(record.capabilities))

        def write(conn: sqlite3.Connection) -> None:
            # ON CONFLICT keeps the rowid, so nodes list in first-registration order.
            conn.execute(
                "INSERT INTO nodes (node_id, url, capabilities, last_seen) VALUES (?, ?, ?, ?) "
                "ON CONFLICT(node_id) DO UPDATE SET url=excluded.url, "
                "capabilities=excluded.capabilities, last_seen=excluded.last_seen",
                (record.node_id, record.url, caps, record.last_seen),
            )
            conn.execute("DELETE FROM aliases WHERE node_id=?", (record.node_id,))
            conn.executemany(
                "INSERT OR REPLACE INTO aliases (alias, node_id) VALUES (?, ?)",
                [(alias, record.node_id) for alias in aliases],
            )
            conn.execute(
                "INSERT OR REPLACE INTO presence (node_id, capabilities, last_seen) "
                "VALUES (?, ?, ?)",
                (record.node_id, caps, record.last_seen),
            )

        await self._run(lambda conn: self._write(conn, write))
        return record

    async def list_nodes(self) -> list[NodeRecord]:
        rows = await self._run(lambda conn: conn.execute(
            "SELECT node_id, url, capabilities, last_seen FROM nodes ORDER BY rowid"
        ).fetchall())
        return [
            NodeRecord(node_id=r[0], url=r[1], capabilities=tuple(json.loads(r[2])),
                       last_seen=float(r[3]))
            for r in rows
        ]

    async def touch_node(self, node_id: str, capabilities: Sequence[str], now: float) -> None:
        caps = _dumps(list(capabilities))
        await self._run(lambda conn: conn.execute(
            "INSERT OR REPLACE INTO presence (node_id, capabilities, last_seen) VALUES (?, ?, ?)",
            (node_id, caps, now),
        ))

    async def live_nodes(self, template: str, since: float, exclude: str) -> int:
        rows = await self._run(lambda conn: conn.execute(
            "SELECT capabilities FROM presence WHERE last_seen >= ? AND node_id != ?",
            (since, exclude),
        ).fetchall())
        return sum(1 for (caps,) in rows if template in json.loads(caps))

    async def resolve_recipient(self, to: str) -> str | None:
        def read(conn: sqlite3.Connection) -> str | None:
            if conn.execute("SELECT 1 FROM nodes WHERE node_id=?", (to,)).fetchone():
                return to
            row = conn.execute("SELECT node_id FROM aliases WHERE alias=?", (to,)).fetchone()
            return str(row[0]) if row else None

        return await self._run(read)

    # --------------------------------------------------------------------- posts

    async def publish(self, post: JSONObject, expires_at: float) -> JSONObject:
        post_id = new_post_id()
        body = dict(post)
        body["expires_at"] = expires_at
        encoded = _dumps(body)

        def write(conn: sqlite3.Connection) -> int:
            cur = conn.execute(
                "INSERT INTO posts (post_id, requester_id, template, expires_at, body) "
                "VALUES (?, ?, ?, ?, ?)",
                (post_id, str(post.get("requester_id", "")), str(post.get("template", "")),
                 expires_at, encoded),
            )
            return int(cur.lastrowid or 0)

        seq = await self._run(lambda conn: self._write(conn, write))
        await self._posts_changed.notify()
        return {"seq": seq, "post_id": post_id, **json.loads(encoded)}

    def _select(
        self, conn: sqlite3.Connection, node_id: str, caps: Sequence[str], cursor: int,
        limit: int, now: float,
    ) -> tuple[int, list[JSONObject]]:
        placeholders = ",".join("?" for _ in caps)
        rows = conn.execute(
            f"SELECT seq, post_id, body FROM posts WHERE seq > ? AND expires_at > ? "
            f"AND requester_id != ? AND template IN ({placeholders}) ORDER BY seq LIMIT ?",
            (cursor, now, node_id, *caps, limit),
        ).fetchall() if caps else []
        posts = [{"seq": int(r[0]), "post_id": r[1], **json.loads(r[2])} for r in rows]
        if len(posts) >= limit:
            # The limit-th match is where the v1 loop stops examining.
            return int(posts[-1]["seq"]), posts
        row = conn.execute(
            "SELECT MAX(seq) FROM posts WHERE seq > ? AND expires_at > ?", (cursor, now)
        ).fetchone()
        highest = int(row[0]) if row and row[0] is not None else cursor
        return max(cursor, highest), posts

    async def pull(
        self,
        node_id: str,
        capabilities: Sequence[str],
        cursor: int,
        limit: int,
        wait: float,
        now: float,
    ) -> PullResult:
        caps = sorted(set(capabilities))

        async def look(elapsed: float) -> PullResult:
            nonlocal cursor
            cursor, posts = await self._run(functools.partial(
                self._select, node_id=node_id, caps=caps, cursor=cursor, limit=limit,
                now=now + elapsed,
            ))
            return PullResult(cursor=cursor, posts=posts, epoch=self._epoch)

        return await long_poll(self._posts_changed, wait, look, lambda r: bool(r.posts),
                               recheck_seconds=CROSS_PROCESS_POLL_SECONDS)

    async def count_posts(self, now: float) -> int:
        row = await self._run(lambda conn: conn.execute(
            "SELECT COUNT(*) FROM posts WHERE expires_at > ?", (now,)
        ).fetchone())
        return int(row[0])

    async def purge_expired(self, now: float) -> int:
        horizon = now - MAILBOX_RETENTION_SECONDS

        def write(conn: sqlite3.Connection) -> int:
            removed = conn.execute("DELETE FROM posts WHERE expires_at <= ?", (now,)).rowcount
            conn.execute("DELETE FROM onces WHERE expires_at <= ?", (now,))
            conn.execute("DELETE FROM mailbox WHERE created_at < ?", (horizon,))
            return int(removed)

        return await self._run(lambda conn: self._write(conn, write))

    # ----------------------------------------------------------------- mailboxes

    async def mailbox_send(
        self, to_node: str, sender: str, sender_verified: bool, request_id: str, payload: str,
        now: float,
    ) -> MailboxMessage:
        message = MailboxMessage(
            id=new_message_id(), to=to_node, sender=sender, sender_verified=sender_verified,
            request_id=request_id, payload=payload, created_at=now,
        )
        await self._run(lambda conn: self._write(conn, lambda c: c.execute(
            "INSERT INTO mailbox (id, node_id, sender, sender_verified, request_id, payload, "
            "created_at) VALUES (?, ?, ?, ?, ?, ?, ?)",
            (message.id, to_node, sender, int(sender_verified), request_id, payload, now),
        )))
        await self._mail_changed.notify()
        return message

    async def mailbox_pull(self, node_id: str, limit: int, wait: float) -> list[MailboxMessage]:
        async def look(elapsed: float) -> list[MailboxMessage]:
            rows = await self._run(lambda conn: conn.execute(
                "SELECT id, sender, sender_verified, request_id, payload, created_at FROM "
                "mailbox WHERE node_id=? ORDER BY position LIMIT ?", (node_id, limit),
            ).fetchall())
            return [
                MailboxMessage(id=r[0], to=node_id, sender=r[1], sender_verified=bool(r[2]),
                               request_id=r[3], payload=r[4], created_at=float(r[5]))
                for r in rows
            ]

        return await long_poll(self._mail_changed, wait, look, bool,
                               recheck_seconds=CROSS_PROCESS_POLL_SECONDS)

    async def mailbox_ack(self, node_id: str, ids: Sequence[str]) -> int:
        unique = sorted(set(ids))
        if not unique:
            return 0

        def write(conn: sqlite3.Connection) -> int:
            removed = 0
            # Chunked: SQLite caps the number of bound parameters per statement.
            for start in range(0, len(unique), 500):
                chunk = unique[start:start + 500]
                marks = ",".join("?" for _ in chunk)
                removed += conn.execute(
                    f"DELETE FROM mailbox WHERE node_id=? AND id IN ({marks})", (node_id, *chunk)
                ).rowcount
            return removed

        return await self._run(lambda conn: self._write(conn, write))

    # ------------------------------------------------------------------- replays

    async def remember_once(self, key: str, ttl: float) -> bool:
        def write(conn: sqlite3.Connection) -> bool:
            now = time.time()
            conn.execute("DELETE FROM onces WHERE key=? AND expires_at <= ?", (key, now))
            cur = conn.execute(
                "INSERT OR IGNORE INTO onces (key, expires_at) VALUES (?, ?)", (key, now + ttl)
            )
            return cur.rowcount == 1

        return await self._run(lambda conn: self._write(conn, write))
